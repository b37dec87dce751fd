//! Binary data sets: parsing (`.amat` text, IDX images), binarization, download and lookup.
//!
//! Everything the models see is a [`BinaryDataset`]: N vectors of n values, each 0 or 1,
//! stored as one byte per value. Bytes rather than floats because the full binarized MNIST
//! training set is 39 MB that way (157 MB as f32), and minibatches are converted to f32
//! tensors only when they are handed to a device.

pub mod amat;
pub mod download;
pub mod idx;
pub mod source;

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, ensure, Result};
use candle_core::{Device, Tensor};
use sha2::{Digest, Sha256};

/// N binary vectors of length n, row-major, one byte (0 or 1) per value.
#[derive(Clone, PartialEq, Eq)]
pub struct BinaryDataset {
    n: usize,
    pixels: Vec<u8>,
}

impl BinaryDataset {
    /// Wraps `pixels` as rows of `n` values; every value must be 0 or 1.
    ///
    /// Zero rows is allowed (a `--limit 0` or an empty split), a zero width is not.
    pub fn new(n: usize, pixels: Vec<u8>) -> Result<Self> {
        ensure!(n > 0, "binary dataset: vector length n must be positive");
        ensure!(
            pixels.len().is_multiple_of(n),
            "binary dataset: {} values is not a whole number of rows of n = {n}",
            pixels.len()
        );
        if let Some(pos) = pixels.iter().position(|&v| v > 1) {
            bail!(
                "binary dataset: value {} at row {}, column {} is not 0 or 1",
                pixels[pos],
                pos / n,
                pos % n
            );
        }
        Ok(Self { n, pixels })
    }

    /// Length of each vector (784 for binarized MNIST).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.pixels.len() / self.n
    }

    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    /// Row `i`; panics when `i >= len()`, like slice indexing.
    pub fn row(&self, i: usize) -> &[u8] {
        &self.pixels[i * self.n..(i + 1) * self.n]
    }

    /// All rows in order.
    pub fn rows(&self) -> std::slice::ChunksExact<'_, u8> {
        self.pixels.chunks_exact(self.n)
    }

    /// All values, row-major.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// Keeps the first `rows` vectors (all of them if there are fewer); used by `--limit`.
    pub fn truncate(&mut self, rows: usize) {
        self.pixels.truncate(rows.saturating_mul(self.n));
    }

    /// Fraction of ones over all values; NaN for an empty data set.
    pub fn mean(&self) -> f64 {
        let ones: u64 = self.pixels.iter().map(|&v| u64::from(v)).sum();
        ones as f64 / self.pixels.len() as f64
    }

    /// Per pixel, the logit of its smoothed mean (k + 1) / (N + 2) over the N rows (k ones):
    /// the output bias of the best model that ignores x_<i, where training starts (543 nats
    /// on MNIST at the start versus ~206 with b = 0).
    pub fn smoothed_logits(&self) -> Vec<f32> {
        let mut ones = vec![0u64; self.n];
        for row in self.rows() {
            for (count, &v) in ones.iter_mut().zip(row) {
                *count += u64::from(v);
            }
        }
        let total = self.len() as f64;
        ones.iter()
            .map(|&k| ((k as f64 + 1.0) / (total - k as f64 + 1.0)).ln() as f32)
            .collect()
    }

    /// SHA-256 of the row-major 0/1 bytes, lowercase hex: the "content" checksum of the data
    /// READMEs, which does not depend on how the text file spaces or ends its lines.
    pub fn sha256_hex(&self) -> String {
        Sha256::digest(&self.pixels)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// (end - start, n) f32 tensor of rows `[start, end)`.
    pub fn tensor_range(
        &self,
        start: usize,
        end: usize,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        if start > end || end > self.len() {
            candle_core::bail!(
                "row range {start}..{end} out of bounds for a data set of {} rows",
                self.len()
            );
        }
        // Converted on the host: a u8 -> f32 cast kernel is not available on every backend,
        // and a minibatch is small enough that the 4x larger upload does not matter.
        let values: Vec<f32> = self.pixels[start * self.n..end * self.n]
            .iter()
            .map(|&v| f32::from(v))
            .collect();
        Tensor::from_vec(values, (end - start, self.n), device)
    }

    /// (rows.len(), n) f32 tensor of the given rows, in the given order (shuffled minibatches).
    pub fn tensor_rows(&self, rows: &[usize], device: &Device) -> candle_core::Result<Tensor> {
        let mut values = Vec::with_capacity(rows.len() * self.n);
        for &i in rows {
            if i >= self.len() {
                candle_core::bail!(
                    "row {i} out of bounds for a data set of {} rows",
                    self.len()
                );
            }
            values.extend(self.row(i).iter().map(|&v| f32::from(v)));
        }
        Tensor::from_vec(values, (rows.len(), self.n), device)
    }
}

// Printing a data set prints its shape, never 39 MB of pixels.
impl fmt::Debug for BinaryDataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BinaryDataset")
            .field("len", &self.len())
            .field("n", &self.n)
            .finish()
    }
}

/// One of the three standard splits.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Valid,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Valid, Split::Test];

    /// The name used in file names and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Split::ALL
            .into_iter()
            .find(|split| split.as_str() == s)
            .ok_or_else(|| anyhow::anyhow!("unknown split {s:?}: expected train, valid or test"))
    }
}
