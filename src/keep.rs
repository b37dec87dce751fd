//! Which pixels a completion keeps: `nade complete --keep SPEC` (and `--rows R` = `top:R`).
//!
//! A spec names values by index (the first or last K, a random subset, a 0/1 mask file), or
//! a region of the picture (rows and columns of the [`TileShape`] the vectors are drawn in);
//! [`KeepSpec::masks`] turns it into one 0/1 mask per image, 1 = kept. Whether a model can
//! condition on that set is the model's question ([`crate::models::Orders`]), asked by
//! [`crate::sample::complete_with`].

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::amat::parse_amat_bytes;
use crate::data::BinaryDataset;
use crate::tile_shape::TileShape;

/// A set of kept pixels.
#[derive(Clone, Debug, PartialEq)]
pub enum KeepSpec {
    /// Values 0..K-1: the prefix of the natural order, which every model conditions on.
    First(usize),
    /// Values n-K..n-1.
    Last(usize),
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
    /// A text file of 0/1 values in the .amat format: one row of n (the same kept set for
    /// every image) or one row per image.
    Mask(PathBuf),
}

/// The grammar, for messages and `--help`.
pub const GRAMMAR: &str =
    "first:K, last:K (the first or last K values), random:P, mask:PATH (a text file of 0/1 values, 1 = kept: one row of n, or one row per image), or rows and columns of the picture: top:R, bottom:R, left:C, right:C, box:R0,C0,R1,C1 (rows R0..R1-1, columns C0..C1-1 kept), hole:R0,C0,R1,C1 (all but that box kept)";

impl FromStr for KeepSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        // clap puts the flag and the value before these messages: they do not repeat them.
        let bad = || format!("expected {GRAMMAR}");
        let (name, arg) = s.split_once(':').ok_or_else(bad)?;
        let count = || arg.trim().parse::<usize>().map_err(|_| bad());
        Ok(match name.trim() {
            "first" => KeepSpec::First(count()?),
            "last" => KeepSpec::Last(count()?),
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
            // The path as given, spaces included: it is a file name, not a number.
            "mask" if !arg.is_empty() => KeepSpec::Mask(PathBuf::from(arg)),
            "mask" => return Err("mask:PATH needs the name of a file of 0/1 values".to_string()),
            _ => return Err(bad()),
        })
    }
}

impl fmt::Display for KeepSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepSpec::First(k) => write!(f, "first:{k}"),
            KeepSpec::Last(k) => write!(f, "last:{k}"),
            KeepSpec::Top(r) => write!(f, "top:{r}"),
            KeepSpec::Bottom(r) => write!(f, "bottom:{r}"),
            KeepSpec::Left(c) => write!(f, "left:{c}"),
            KeepSpec::Right(c) => write!(f, "right:{c}"),
            KeepSpec::Box { r0, c0, r1, c1 } => write!(f, "box:{r0},{c0},{r1},{c1}"),
            KeepSpec::Hole { r0, c0, r1, c1 } => write!(f, "hole:{r0},{c0},{r1},{c1}"),
            KeepSpec::Random(p) => write!(f, "random:{p}"),
            KeepSpec::Mask(path) => write!(f, "mask:{}", path.display()),
        }
    }
}

impl KeepSpec {
    /// One mask per image (`count` of them) over vectors of `shape.pixels()` values laid out
    /// as `shape` (which the image forms' rows and columns refer to), 1 = kept. A random
    /// spec draws image k's mask from stream k + 1 of ChaCha8(seed) (stream 0 is the
    /// completions' own uniforms), so a mask does not depend on the other images.
    pub fn masks(&self, shape: TileShape, count: usize, seed: u64) -> Result<BinaryDataset> {
        let n = shape.pixels();
        let (height, width) = (shape.height, shape.width);
        let check = |what: &str, value: usize, limit: usize| -> Result<()> {
            if value > limit {
                bail!(
                    "--keep {self}: {what} {value} is past the image's {limit} (the images are {height} rows of {width} pixels, n = {n}; --shape HxW lays them out otherwise)"
                );
            }
            Ok(())
        };
        let same_for_all = |mask: Vec<u8>| BinaryDataset::new(n, mask.repeat(count));
        match self {
            KeepSpec::Random(p) => {
                let mut pixels = Vec::with_capacity(n * count);
                for image in 0..count {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed);
                    rng.set_stream(image as u64 + 1);
                    pixels.extend((0..n).map(|_| u8::from(rng.random_bool(*p))));
                }
                return BinaryDataset::new(n, pixels);
            }
            KeepSpec::Mask(path) => return self.read_masks(path, n, count),
            KeepSpec::First(k) | KeepSpec::Last(k) => {
                if *k > n {
                    bail!("--keep {self}: K = {k} is more than the n = {n} values of each vector");
                }
                let first_kept = match self {
                    KeepSpec::First(_) => 0,
                    _ => n - k,
                };
                let mask = (0..n)
                    .map(|i| u8::from((first_kept..first_kept + k).contains(&i)))
                    .collect();
                return same_for_all(mask);
            }
            KeepSpec::Top(r) | KeepSpec::Bottom(r) => check("rows", *r, height)?,
            KeepSpec::Left(c) | KeepSpec::Right(c) => check("columns", *c, width)?,
            KeepSpec::Box { r1, c1, .. } | KeepSpec::Hole { r1, c1, .. } => {
                check("row", *r1, height)?;
                check("column", *c1, width)?;
            }
        }
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
                _ => unreachable!("the forms by index returned above"),
            }
        };
        same_for_all(
            (0..n)
                .map(|i| u8::from(region(i / width, i % width)))
                .collect(),
        )
    }

    /// The masks of `mask:PATH`: one row of n values repeated for every image, or exactly
    /// `count` rows, image k's in row k. Errors start with `--keep mask:PATH` (and the line
    /// where one applies), as the .amat reader words them.
    fn read_masks(&self, path: &std::path::Path, n: usize, count: usize) -> Result<BinaryDataset> {
        let origin = self.to_string();
        let bytes = std::fs::read(path).with_context(|| format!("--keep {origin}: cannot read"))?;
        let rows = parse_amat_bytes(&bytes, &format!("--keep {origin}"))?;
        if rows.n() != n {
            // Every row has the first row's width (the reader checks), so line 1 is wrong.
            bail!(
                "--keep {origin}:1: expected n = {n} values (one per dimension of the model), found {}",
                rows.n()
            );
        }
        match rows.len() {
            1 => BinaryDataset::new(n, rows.row(0).repeat(count)),
            len if len == count => Ok(rows),
            len => bail!(
                "--keep {origin}: {len} rows for {count} images: give 1 row (the same kept set for every image) or {count} (one per image, in order)"
            ),
        }
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
