//! How a vector of n values is laid out as a picture: H rows of W values, row-major, H x W = n.
//!
//! The same layout draws each vector's tile in the PNG grids ([`crate::image_grid`]) and gives
//! the rows and columns that the image forms of `--keep` (top, bottom, left, right, box, hole)
//! name ([`crate::keep`]), so a kept region is where the picture shows it. `--shape HxW` picks
//! it; the default is [`TileShape::near_square`].

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};

/// H rows of W values: value i of a vector sits at row i / W, column i % W.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileShape {
    pub height: usize,
    pub width: usize,
}

impl TileShape {
    /// The most nearly square H x W = n with H <= W: 28 x 28 for n = 784, 12 x 15 for 180,
    /// 20 x 25 for 500, and a single row 1 x n when n is prime.
    pub fn near_square(n: usize) -> Self {
        let height = (1..=n)
            .take_while(|h| h * h <= n)
            .filter(|h| n.is_multiple_of(*h))
            .last()
            .unwrap_or(1);
        TileShape {
            height,
            width: n / height,
        }
    }

    /// H x W, the length of the vectors this layout draws.
    pub fn pixels(self) -> usize {
        self.height * self.width
    }

    /// The layout of a model's vectors of length n: `--shape` when given (an error unless it
    /// has exactly n pixels: a tile that cut or padded the vector would misplace every value
    /// after the cut), else [`TileShape::near_square`].
    pub fn for_model(given: Option<TileShape>, n: usize) -> Result<Self> {
        match given {
            None => Ok(TileShape::near_square(n)),
            Some(shape) if shape.pixels() == n => Ok(shape),
            Some(shape) => bail!(
                "--shape {shape} has {} pixels but the model has n = {n}",
                shape.pixels()
            ),
        }
    }
}

/// The grammar, for messages and `--help`.
pub const GRAMMAR: &str = "HxW (H rows of W values, each at least 1; H x W = the model's n)";

impl FromStr for TileShape {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        // clap puts the flag and the value before these messages: they do not repeat them.
        let bad = || format!("expected {GRAMMAR}");
        let (h, w) = s.split_once(['x', 'X']).ok_or_else(bad)?;
        let side = |t: &str| t.trim().parse::<usize>().map_err(|_| bad());
        let (height, width) = (side(h)?, side(w)?);
        if height == 0 || width == 0 {
            return Err(bad());
        }
        // Held as a product everywhere (tile sizes, grid extents): refuse one that overflows.
        if height.checked_mul(width).is_none() {
            return Err(format!(
                "{height} x {width} pixels is more than any vector has"
            ));
        }
        Ok(TileShape { height, width })
    }
}

impl fmt::Display for TileShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.height, self.width)
    }
}
