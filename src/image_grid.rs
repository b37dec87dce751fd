//! Pictures of binary vectors: each vector is a gray tile of H x W pixels (a [`TileShape`]:
//! 28 x 28 for MNIST), tiles are laid out in a grid with white gutters and scaled up by an
//! integer factor, and the grid is written as an 8-bit grayscale PNG.
//!
//! Gray levels: a 1 is white ink, a 0 black background (the MNIST convention), a Bernoulli
//! mean p is the gray round(255 p), and a pixel that is not shown (the part of a digit a
//! completion had to fill in) is [`HIDDEN`] mid-gray, so the cut is visible.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use image::{codecs::png::PngEncoder, ExtendedColorType, GrayImage, ImageEncoder, Luma};

use crate::io::write_atomically;
use crate::tile_shape::TileShape;

/// Gray of a pixel that is 1.
pub const INK: u8 = 255;
/// Gray of a pixel that is 0.
pub const BACKGROUND: u8 = 0;
/// Gray of a pixel that is not shown.
pub const HIDDEN: u8 = 128;
/// Gray of the gutters between tiles and around the grid.
pub const GUTTER_GRAY: u8 = 255;
/// Gutter width in output pixels (not scaled), also the outer border.
pub const GUTTER: u32 = 2;

/// Columns of a near-square grid of `count` tiles: ceil(sqrt(count)).
pub fn near_square_columns(count: usize) -> usize {
    (1..=count.max(1)).find(|c| c * c >= count).unwrap_or(1)
}

/// Gray tile of a 0/1 vector.
pub fn binary_tile(values: &[u8]) -> Vec<u8> {
    values
        .iter()
        .map(|&v| if v != 0 { INK } else { BACKGROUND })
        .collect()
}

/// Gray tile of Bernoulli means in [0, 1].
pub fn prob_tile(probs: &[f32]) -> Vec<u8> {
    probs
        .iter()
        .map(|&p| (p.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect()
}

/// Gray tile of a 0/1 vector of which only the values where `mask` is 1 are shown.
pub fn kept_tile(values: &[u8], mask: &[u8]) -> Vec<u8> {
    let mut tile = binary_tile(values);
    for (v, &kept) in tile.iter_mut().zip(mask) {
        if kept == 0 {
            *v = HIDDEN;
        }
    }
    tile
}

/// The most pixels a grid may have: 16384 x 16384, 256 MiB at one byte per pixel. A grid is
/// held whole in memory while it is encoded, so a larger one is refused before anything is
/// sampled ([`check_size`]).
pub const MAX_PIXELS: u64 = 16384 * 16384;

/// Width and height in pixels of a grid of `rows` x `columns` tiles of `shape` scaled by
/// `scale`: columns * (w * scale) + (columns + 1) * GUTTER wide, likewise high. In u64, so
/// that no count overflows it.
pub fn grid_extent(rows: usize, columns: usize, shape: TileShape, scale: u32) -> (u64, u64) {
    let scale = scale as u64;
    let (th, tw) = (shape.height as u64 * scale, shape.width as u64 * scale);
    let (rows, columns) = (rows as u64, columns as u64);
    let gutter = GUTTER as u64;
    (
        columns * tw + (columns + 1) * gutter,
        rows * th + (rows + 1) * gutter,
    )
}

/// [`grid_extent`] of a grid within [`MAX_PIXELS`] (larger ones wrap: check first).
pub fn grid_size(rows: usize, columns: usize, shape: TileShape, scale: u32) -> (u32, u32) {
    let (width, height) = grid_extent(rows, columns, shape, scale);
    (width as u32, height as u32)
}

/// `extent` (width, height) if the grid fits [`MAX_PIXELS`], else an error naming `flags`, the
/// command-line flags that set its size ("--count 40000 --scale 32").
pub fn check_size(extent: (u64, u64), flags: &str) -> Result<(u64, u64)> {
    let (width, height) = extent;
    let pixels = width.saturating_mul(height);
    if pixels > MAX_PIXELS {
        let names: Vec<&str> = flags
            .split_whitespace()
            .filter(|word| word.starts_with("--"))
            .collect();
        anyhow::bail!(
            "{flags}: the PNG grid would be {width} x {height} pixels ({}), over the limit of {MAX_PIXELS} pixels (16384 x 16384){}",
            crate::memory::human_bytes(pixels as f64),
            if names.is_empty() {
                String::new()
            } else {
                format!("; lower {}", names.join(" or "))
            }
        );
    }
    Ok(extent)
}

/// An error unless `path` names a PNG file (`.png`, any case): the grids are PNG, and a
/// `.jpg` name holding PNG bytes would mislead every viewer. `flag` names the option.
pub fn check_png_name(flag: &str, path: &Path) -> Result<()> {
    let png = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !png {
        anyhow::bail!(
            "{flag} {}: the grid is written as PNG; give a file name ending in .png",
            path.display()
        );
    }
    Ok(())
}

/// Lays `tiles` (each `shape.pixels()` grays, row-major) out row by row, `columns` per
/// grid row; cells past the last tile stay gutter-colored.
pub fn render(
    tiles: &[Vec<u8>],
    shape: TileShape,
    columns: usize,
    scale: u32,
) -> Result<GrayImage> {
    ensure!(columns > 0, "image grid: columns must be positive");
    ensure!(scale > 0, "image grid: scale must be positive");
    let (th, tw) = (shape.height, shape.width);
    if let Some((i, t)) = tiles.iter().enumerate().find(|(_, t)| t.len() != th * tw) {
        anyhow::bail!(
            "image grid: tile {i} has {} values, expected {th} x {tw}",
            t.len()
        );
    }
    let rows = tiles.len().div_ceil(columns).max(1);
    let (width, height) = check_size(
        grid_extent(rows, columns, shape, scale),
        &format!("image grid of {} tiles at scale {scale}", tiles.len()),
    )?;
    let (width, height) = (width as u32, height as u32);
    let mut img = GrayImage::from_pixel(width, height, Luma([GUTTER_GRAY]));
    let s = scale as usize;
    for (index, tile) in tiles.iter().enumerate() {
        let x0 = GUTTER as usize + (index % columns) * (tw * s + GUTTER as usize);
        let y0 = GUTTER as usize + (index / columns) * (th * s + GUTTER as usize);
        for (k, &gray) in tile.iter().enumerate() {
            let (r, c) = (k / tw, k % tw);
            for dy in 0..s {
                for dx in 0..s {
                    img.put_pixel(
                        (x0 + c * s + dx) as u32,
                        (y0 + r * s + dy) as u32,
                        Luma([gray]),
                    );
                }
            }
        }
    }
    Ok(img)
}

/// PNG bytes of a grayscale image (deterministic: same pixels, same bytes).
pub fn encode_png(img: &GrayImage) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    PngEncoder::new(&mut bytes)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            ExtendedColorType::L8,
        )
        .context("cannot encode PNG")?;
    Ok(bytes)
}

/// Encodes `img` and writes it to `path` atomically (temporary file + rename).
pub fn write_png(path: &Path, img: &GrayImage) -> Result<()> {
    let bytes = encode_png(img).with_context(|| path.display().to_string())?;
    write_atomically(path, &bytes)
}
