//! What a training run takes besides its run file: the run file itself (a path or its TOML
//! text), the run to resume, and the values that override the file's. `nade train`'s flags
//! and Python's `nade.train(...)` keyword arguments both fill one [`TrainOverrides`], so the
//! two resolve a run's config the same way.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::config::Config;
use crate::data::source::PathOrigin;
use crate::device::DeviceChoice;
use crate::train;

/// Where the run file comes from.
#[derive(Clone, Debug)]
pub enum ConfigSource {
    File(PathBuf),
    /// A run file's text (Python's `nade.train` takes a dict or a string).
    Toml(String),
}

/// A run file and the overrides of `nade train`; `None` keeps the file's value.
#[derive(Clone, Debug, Default)]
pub struct TrainOverrides {
    /// Optional with `resume`: the interrupted run's stored config is used.
    pub config: Option<ConfigSource>,
    /// Continue the run in this folder from its last.safetensors.
    pub resume: Option<PathBuf>,
    pub epochs: Option<usize>,
    pub seed: Option<u64>,
    /// model.seed: what MADE's masks and deep NADE's orderings are drawn from.
    pub model_seed: Option<u64>,
    pub valid_every: Option<usize>,
    pub device: Option<DeviceChoice>,
    pub out: Option<PathBuf>,
    /// data.dir; counts as named on the command line (a missing folder is an error, never
    /// a download target).
    pub data: Option<PathBuf>,
    pub dataset: Option<String>,
    pub threads: Option<usize>,
}

impl TrainOverrides {
    /// The run's config: the file's (or the interrupted run's), with the overrides applied,
    /// validated.
    pub fn resolve(&self) -> Result<Config> {
        let mut config = match (&self.config, &self.resume) {
            (Some(ConfigSource::File(path)), _) => Config::from_file(path)?,
            (Some(ConfigSource::Toml(text)), _) => Config::from_toml(text)?,
            (None, Some(dir)) => train::config_of_run(dir)?,
            (None, None) => bail!("train: give a CONFIG file, or --resume DIR"),
        };
        if let Some(dir) = &self.resume {
            config.output.dir = dir.clone();
        }
        if let Some(epochs) = self.epochs {
            config.train.epochs = epochs;
        }
        if let Some(seed) = self.seed {
            config.train.seed = seed;
        }
        if let Some(seed) = self.model_seed {
            config.model = config.model.with_seed(seed)?;
        }
        if let Some(k) = self.valid_every {
            config.train.valid_every = k;
        }
        if let Some(device) = self.device {
            config.train.device = device;
        }
        if let Some(out) = &self.out {
            config.output.dir = out.clone();
        }
        if let Some(data) = &self.data {
            config.data.dir = Some(data.clone());
            config.data.dir_origin = PathOrigin::Flag;
        }
        if let Some(dataset) = &self.dataset {
            config.data.dataset = Some(dataset.clone());
        }
        if let Some(threads) = self.threads {
            config.train.threads = threads;
        }
        if let Some(dir) = &self.resume {
            train::record_cosine_extension(&mut config, dir);
            train::refuse_linear_extension(&config, dir)?;
        }
        config.validate()?;
        Ok(config)
    }
}
