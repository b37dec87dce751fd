//! Which pixels a completion keeps: `nade complete --keep SPEC` (and `--rows R` = `top:R`).
//!
//! A spec names a region of the image (rows and columns as [`tile_shape`] lays the n values
//! out) or a random subset; [`KeepSpec::masks`] turns it into one 0/1 mask per image, 1 =
//! kept. Whether a model can condition on that set is the model's question
//! ([`crate::models::Orders`]), asked by [`crate::sample::complete_with`].

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::BinaryDataset;
use crate::image_grid::tile_shape;

/// A set of kept pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KeepSpec {
    /// The top R rows.
    Top(usize),
    /// The bottom R rows.
    Bottom(usize),
    /// The left C columns.
    Left(usize),
    /// The right C columns.
    Right(usize),
    /// Rows r0..r1 and columns c0..c1 (end exclusive).
    Box {
        r0: usize,
        c0: usize,
        r1: usize,
        c1: usize,
    },
    /// Everything but rows r0..r1 and columns c0..c1: the box is the hole to fill (inpainting).
    Hole {
        r0: usize,
        c0: usize,
        r1: usize,
        c1: usize,
    },
    /// Each pixel kept with probability P, independently per image (seeded).
    Random(f64),
}

/// The grammar, for messages and `--help`.
pub const GRAMMAR: &str =
    "top:R, bottom:R, left:C, right:C, box:R0,C0,R1,C1 (rows R0..R1-1, columns C0..C1-1 kept), hole:R0,C0,R1,C1 (all but that box kept) or random:P";

impl FromStr for KeepSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        // clap puts the flag and the value before these messages: they do not repeat them.
        let bad = || format!("expected {GRAMMAR}");
        let (name, arg) = s.split_once(':').ok_or_else(bad)?;
        let count = || arg.trim().parse::<usize>().map_err(|_| bad());
        Ok(match name.trim() {
            "top" => KeepSpec::Top(count()?),
            "bottom" => KeepSpec::Bottom(count()?),
            "left" => KeepSpec::Left(count()?),
            "right" => KeepSpec::Right(count()?),
            "box" | "hole" => {
                let v: Vec<usize> = arg
                    .split(',')
                    .map(|p| p.trim().parse::<usize>())
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|_| bad())?;
                let [r0, c0, r1, c1] = v[..] else {
                    return Err(bad());
                };
                if r0 > r1 || c0 > c1 {
                    return Err("the box needs R0 <= R1 and C0 <= C1".to_string());
                }
                if name.trim() == "box" {
                    KeepSpec::Box { r0, c0, r1, c1 }
                } else {
                    KeepSpec::Hole { r0, c0, r1, c1 }
                }
            }
            "random" => match arg.trim().parse::<f64>() {
                Ok(p) if (0.0..=1.0).contains(&p) => KeepSpec::Random(p),
                _ => return Err("P must be a probability in [0, 1]".to_string()),
            },
            _ => return Err(bad()),
        })
    }
}

impl fmt::Display for KeepSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepSpec::Top(r) => write!(f, "top:{r}"),
            KeepSpec::Bottom(r) => write!(f, "bottom:{r}"),
            KeepSpec::Left(c) => write!(f, "left:{c}"),
            KeepSpec::Right(c) => write!(f, "right:{c}"),
            KeepSpec::Box { r0, c0, r1, c1 } => write!(f, "box:{r0},{c0},{r1},{c1}"),
            KeepSpec::Hole { r0, c0, r1, c1 } => write!(f, "hole:{r0},{c0},{r1},{c1}"),
            KeepSpec::Random(p) => write!(f, "random:{p}"),
        }
    }
}

impl KeepSpec {
    /// One mask per image (`count` of them) over vectors of n values, 1 = kept. A random
    /// spec draws image k's mask from stream k + 1 of ChaCha8(seed) (stream 0 is the
    /// completions' own uniforms), so a mask does not depend on the other images.
    pub fn masks(&self, n: usize, count: usize, seed: u64) -> Result<BinaryDataset> {
        let (height, width) = tile_shape(n);
        let check = |what: &str, value: usize, limit: usize| -> Result<()> {
            if value > limit {
                bail!(
                    "--keep {self}: {what} {value} is past the image's {limit} (the images are {height} rows of {width} pixels, n = {n})"
                );
            }
            Ok(())
        };
        let region = |row: usize, col: usize| -> bool {
            match *self {
                KeepSpec::Top(r) => row < r,
                KeepSpec::Bottom(r) => row + r >= height,
                KeepSpec::Left(c) => col < c,
                KeepSpec::Right(c) => col + c >= width,
                KeepSpec::Box { r0, c0, r1, c1 } => {
                    (r0..r1).contains(&row) && (c0..c1).contains(&col)
                }
                KeepSpec::Hole { r0, c0, r1, c1 } => {
                    !((r0..r1).contains(&row) && (c0..c1).contains(&col))
                }
                KeepSpec::Random(_) => unreachable!("drawn below"),
            }
        };
        let mut pixels = Vec::with_capacity(n * count);
        if let KeepSpec::Random(p) = *self {
            for image in 0..count {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(image as u64 + 1);
                pixels.extend((0..n).map(|_| u8::from(rng.random_bool(p))));
            }
            return BinaryDataset::new(n, pixels);
        }
        match *self {
            KeepSpec::Top(r) | KeepSpec::Bottom(r) => check("rows", r, height)?,
            KeepSpec::Left(c) | KeepSpec::Right(c) => check("columns", c, width)?,
            KeepSpec::Box { r1, c1, .. } | KeepSpec::Hole { r1, c1, .. } => {
                check("row", r1, height)?;
                check("column", c1, width)?;
            }
            KeepSpec::Random(_) => unreachable!("drawn above"),
        }
        let mask: Vec<u8> = (0..n)
            .map(|i| u8::from(region(i / width, i % width)))
            .collect();
        for _ in 0..count {
            pixels.extend_from_slice(&mask);
        }
        BinaryDataset::new(n, pixels)
    }
}

/// Masks that keep the first `keep` values of each of `count` vectors of length n.
pub fn prefix_masks(n: usize, keep: usize, count: usize) -> Result<BinaryDataset> {
    if keep > n {
        bail!("cannot keep {keep} values of vectors of length {n}");
    }
    let mask: Vec<u8> = (0..n).map(|i| u8::from(i < keep)).collect();
    BinaryDataset::new(n, mask.repeat(count))
}
