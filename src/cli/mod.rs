//! The subcommands, one file each: its clap `Args` and `run`, which parses what the library
//! needs, calls it, and prints the library's report ([`emit`]). Flags shared by several
//! commands live here.

pub mod bench;
pub mod complete;
pub mod eval;
pub mod info;
pub mod kinds;
pub mod mix;
pub mod sample;
pub mod train;

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use nade::data::source::{DataSource, PathOrigin, DEFAULT_DATASET};
use nade::report::Report;
use nade::threads;

/// Prints a command's report: one JSON object (or array) with `--json`, else its text.
pub fn emit(report: &impl Report, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

/// A count-like flag: a whole number of at least 1 (clap names the flag, this says why).
pub fn positive(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(value) => Ok(value),
        Err(e) => Err(format!("not a whole number ({e})")),
    }
}

/// A duration in seconds: a finite number above 0.
pub fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() && value > 0.0 => Ok(value),
        Ok(_) => Err("must be a number of seconds above 0".into()),
        Err(e) => Err(format!("not a number ({e})")),
    }
}

pub fn threads_parser() -> clap::builder::RangedU64ValueParser {
    clap::value_parser!(u64).range(0..=threads::MAX as u64)
}

/// `--threads N`, on every command that computes.
#[derive(Args)]
pub struct ThreadsArg {
    /// CPU threads (0 = all cores).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = threads_parser())]
    pub threads: u64,
}

impl ThreadsArg {
    /// Sizes the CPU thread pools; before any computation.
    pub fn apply(&self) -> Result<()> {
        threads::set(self.threads as usize, "--threads")
    }
}

/// `--data` and `--dataset` of the commands that read images.
#[derive(Args)]
pub struct DataArgs {
    /// Data folder (or one .amat file); default: $NADE_DATA_DIR, else data/binarized_mnist
    /// (data/uci_binary for dna, mushrooms, nips).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Data set name: files are {dataset}_{split}.amat in the data folder [default: the one
    /// the checkpoint's training run read (its `[data] dataset`), else binarized_mnist].
    #[arg(long)]
    pub dataset: Option<String>,
}

impl DataArgs {
    /// The data named by the flags, the data set defaulting to `trained_on` (the checkpoint's
    /// own, [`nade::checkpoint::Loaded::trained_dataset`]), then to binarized MNIST.
    pub fn source_for(&self, trained_on: Option<String>) -> DataSource {
        DataSource {
            path: self.data.clone(),
            path_origin: PathOrigin::Flag,
            dataset: self
                .dataset
                .clone()
                .or(trained_on)
                .unwrap_or_else(|| DEFAULT_DATASET.to_owned()),
        }
    }
}
