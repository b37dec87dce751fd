//! Grayscale images in the IDX format of MNIST and Fashion-MNIST, and their binarization.
//!
//! An IDX image file is a 16-byte big-endian header (magic 0x00000803 = unsigned bytes,
//! 3 dimensions; then count, rows, cols) followed by count * rows * cols pixels, 0..=255.
//! The files usually ship gzip-compressed; that is detected from the content, not the name,
//! because downloads and package managers rename files freely.

use std::fmt;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use anyhow::{anyhow, bail, ensure, Result};
use flate2::read::MultiGzDecoder;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::BinaryDataset;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
const HEADER_LEN: usize = 16;

/// `count` grayscale images of `rows` x `cols` pixels, row-major, one byte (0..=255) each.
#[derive(Clone, PartialEq, Eq)]
pub struct GrayImages {
    rows: usize,
    cols: usize,
    count: usize,
    values: Vec<u8>,
}

/// Reads an IDX image file, plain or gzip-compressed.
pub fn read_idx_images(path: &Path) -> Result<GrayImages> {
    let origin = path.display().to_string();
    let raw = fs::read(path).map_err(|e| anyhow!("{origin}: cannot read: {e}"))?;
    if raw.starts_with(&GZIP_MAGIC) {
        let mut bytes = Vec::new();
        MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut bytes)
            .map_err(|e| anyhow!("{origin}: corrupt gzip data: {e}"))?;
        // Byte offsets in messages then refer to the decompressed stream; say so.
        parse_idx_images(&bytes, &format!("{origin} (decompressed)"))
    } else {
        parse_idx_images(&raw, &origin)
    }
}

/// Parses an uncompressed IDX image file; `origin` starts every error message.
pub fn parse_idx_images(bytes: &[u8], origin: &str) -> Result<GrayImages> {
    ensure!(
        bytes.len() >= HEADER_LEN,
        "{origin}: {} bytes is too short for the {HEADER_LEN}-byte IDX header",
        bytes.len()
    );
    let word = |offset: usize| {
        u32::from_be_bytes([
            bytes[offset],
            bytes[offset + 1],
            bytes[offset + 2],
            bytes[offset + 3],
        ])
    };

    let magic = word(0);
    if magic != IDX_IMAGES_MAGIC {
        // 0x00000801 is the matching labels file, a common mix-up worth naming.
        let hint = if magic == 0x0000_0801 {
            " (that is an IDX labels file)"
        } else {
            ""
        };
        bail!(
            "{origin}: byte 0: IDX magic 0x{magic:08x}, expected 0x{IDX_IMAGES_MAGIC:08x} \
             (unsigned bytes, 3 dimensions){hint}"
        );
    }

    let (count, rows, cols) = (word(4) as usize, word(8) as usize, word(12) as usize);
    for (size, offset, what) in [
        (count, 4, "image count"),
        (rows, 8, "rows"),
        (cols, 12, "columns"),
    ] {
        ensure!(size > 0, "{origin}: byte {offset}: {what} is 0");
    }

    let expected = count
        .checked_mul(rows)
        .and_then(|v| v.checked_mul(cols))
        .ok_or_else(|| anyhow!("{origin}: header sizes {count} x {rows} x {cols} overflow"))?;
    let found = bytes.len() - HEADER_LEN;
    ensure!(
        found >= expected,
        "{origin}: truncated: header promises {expected} bytes of pixels \
         ({count} x {rows} x {cols}) after byte {HEADER_LEN}, found {found}"
    );
    ensure!(
        found == expected,
        "{origin}: byte {}: {} trailing bytes after the {expected} bytes of pixels \
         ({count} x {rows} x {cols})",
        HEADER_LEN + expected,
        found - expected
    );

    Ok(GrayImages {
        rows,
        cols,
        count,
        values: bytes[HEADER_LEN..].to_vec(),
    })
}

impl GrayImages {
    /// Wraps `values` as `count` images of `rows` x `cols` pixels.
    pub fn new(rows: usize, cols: usize, values: Vec<u8>) -> Result<Self> {
        let n = rows
            .checked_mul(cols)
            .filter(|&n| n > 0)
            .ok_or_else(|| anyhow!("gray images: {rows} x {cols} is not a valid image size"))?;
        ensure!(
            values.len().is_multiple_of(n),
            "gray images: {} values is not a whole number of {rows} x {cols} images",
            values.len()
        );
        Ok(Self {
            rows,
            cols,
            count: values.len() / n,
            values,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Number of images.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Pixels per image.
    pub fn n(&self) -> usize {
        self.rows * self.cols
    }

    /// All pixels, image after image, each image row-major.
    pub fn values(&self) -> &[u8] {
        &self.values
    }

    /// Image `i`; panics when `i >= count()`, like slice indexing.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.values[i * self.n()..(i + 1) * self.n()]
    }

    /// Binarizes every pixel; `epoch` only matters for [`Binarization::Dynamic`].
    pub fn binarize(&self, how: &Binarization, epoch: u64) -> BinaryDataset {
        let bits = match *how {
            Binarization::Threshold(t) => self
                .values
                .iter()
                .map(|&p| u8::from(f32::from(p) / 255.0 > t))
                .collect(),
            Binarization::Bernoulli { seed } => {
                bernoulli(&self.values, ChaCha8Rng::seed_from_u64(seed))
            }
            Binarization::Dynamic { seed } => {
                // One ChaCha stream per epoch under the same key: epochs are independent
                // draws, and any epoch can be redrawn without replaying the ones before it.
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(epoch);
                bernoulli(&self.values, rng)
            }
        };
        BinaryDataset {
            n: self.n(),
            pixels: bits,
        }
    }
}

/// One draw per pixel, in order: 1 with probability pixel / 255.
///
/// The comparison u < p with u = r / 2^32 is done in integers as r * 255 < p * 2^32, so the
/// result depends only on ChaCha8's documented output stream, not on how some version of
/// `rand` turns random bits into floats: a seed gives the same data set forever.
/// Pixel 0 never gives 1, pixel 255 always does.
fn bernoulli(pixels: &[u8], mut rng: ChaCha8Rng) -> Vec<u8> {
    pixels
        .iter()
        .map(|&p| {
            let r = u64::from(rng.next_u32());
            u8::from(r * 255 < u64::from(p) << 32)
        })
        .collect()
}

impl fmt::Debug for GrayImages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrayImages")
            .field("count", &self.count)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish()
    }
}

/// How grayscale pixels become 0/1 values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Binarization {
    /// 1 where pixel / 255 > t.
    Threshold(f32),
    /// One fixed draw, 1 with probability pixel / 255, from a ChaCha8 generator seeded
    /// with `seed`: the same binary data set every epoch and every run.
    Bernoulli { seed: u64 },
    /// A fresh draw every epoch (a known regularizer for binarized MNIST); epoch `e` of
    /// seed `s` is always the same draw, so runs are reproducible.
    /// (Epoch 0 is the same draw as `Bernoulli` with that seed.)
    Dynamic { seed: u64 },
}

impl Binarization {
    /// Whether each epoch needs its own call to [`GrayImages::binarize`].
    pub fn is_dynamic(&self) -> bool {
        matches!(self, Binarization::Dynamic { .. })
    }
}

/// Same spelling as [`FromStr`] accepts, so a binarization can be logged and parsed back.
impl fmt::Display for Binarization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Binarization::Threshold(t) => write!(f, "threshold:{t}"),
            Binarization::Bernoulli { seed } => write!(f, "bernoulli:{seed}"),
            Binarization::Dynamic { seed } => write!(f, "dynamic:{seed}"),
        }
    }
}

impl FromStr for Binarization {
    type Err = anyhow::Error;

    /// `threshold:T` (0 <= T <= 1), `bernoulli:SEED` or `dynamic:SEED` (SEED a u64).
    fn from_str(s: &str) -> Result<Self> {
        const FORMS: &str = "expected threshold:T (0 <= T <= 1), bernoulli:SEED or dynamic:SEED";
        let (kind, arg) = s
            .split_once(':')
            .ok_or_else(|| anyhow!("binarization {s:?}: {FORMS}"))?;
        let seed = || {
            arg.parse::<u64>().map_err(|_| {
                anyhow!("binarization {s:?}: seed {arg:?} is not an unsigned 64-bit integer")
            })
        };
        match kind {
            "threshold" => {
                let t: f32 = arg.parse().map_err(|_| {
                    anyhow!("binarization {s:?}: threshold {arg:?} is not a number")
                })?;
                ensure!(
                    (0.0..=1.0).contains(&t),
                    "binarization {s:?}: threshold {t} is outside [0, 1]"
                );
                Ok(Binarization::Threshold(t))
            }
            "bernoulli" => Ok(Binarization::Bernoulli { seed: seed()? }),
            "dynamic" => Ok(Binarization::Dynamic { seed: seed()? }),
            _ => bail!("binarization {s:?}: unknown kind {kind:?}; {FORMS}"),
        }
    }
}
