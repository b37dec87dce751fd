//! What a training run has done so far, as stored in its last.safetensors, and how an
//! interrupted run is read back for `--resume`.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::config::Config;
use crate::models::ModelConfig;
use crate::optim::LrSchedule;

/// The file of the last completed epoch, with the optimizer state.
pub const LAST: &str = "last.safetensors";

/// The metadata key of the run's TOML config in a training checkpoint (before the model
/// config took `config`, the TOML was stored there; both are read).
pub const RUN_CONFIG: &str = "run_config";

/// One line of metrics.jsonl.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: usize,
    /// Mean minibatch NLL over the epoch (the weights move while it is measured).
    pub train_nll: f64,
    /// Exact NLL of the whole validation set after the epoch; None (null) on the epochs that
    /// `train.valid_every` skips.
    pub valid_nll: Option<f64>,
    /// Infinite (JSON null) until the first validation.
    #[serde(deserialize_with = "infinity_if_null")]
    pub best_valid: f64,
    pub best_epoch: usize,
    pub lr: f64,
    pub mean_grad_norm: f64,
    /// Wall time of the epoch's training passes (validation excluded).
    pub train_seconds: f64,
    pub train_images_per_s: f64,
    /// 0 on the epochs without validation.
    pub valid_seconds: f64,
}

/// serde_json writes a non-finite f64 as null: read it back as the infinity it was (the best
/// validation NLL of a run that has not validated yet, with `train.valid_every` > 1).
fn infinity_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

/// Where a run stands after its last completed epoch; stored in last.safetensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Completed epochs.
    pub epoch: usize,
    /// Infinite (JSON null) until the first validation.
    #[serde(deserialize_with = "infinity_if_null")]
    pub best_valid: f64,
    pub best_epoch: usize,
    pub since_best: usize,
    pub adam_steps: u64,
    pub schedule: LrSchedule,
    pub history: Vec<EpochRecord>,
}

impl TrainState {
    pub fn fresh(config: &Config) -> Self {
        Self {
            epoch: 0,
            best_valid: f64::INFINITY,
            best_epoch: 0,
            since_best: 0,
            adam_steps: 0,
            schedule: LrSchedule::new(&config.train),
            history: Vec::new(),
        }
    }
}

/// The config an interrupted run in `dir` was started with (stored in its last.safetensors).
pub fn config_of_run(dir: &Path) -> Result<Config> {
    let last = dir.join(LAST);
    let raw = run_config_toml(&last)?;
    Config::from_toml(&raw).with_context(|| format!("{}: stored config", last.display()))
}

/// A cosine run in `dir` that finished its `epochs` and is resumed with more: its lr rejoins
/// the longer cosine, so the old end becomes one of `train.cosine_horizons` of the config the
/// run goes on with (and stores), which then retrains it from scratch. Anything else (no
/// cosine, an unfinished run, no stored config in an older file) leaves the config as it is.
pub fn record_cosine_extension(config: &mut Config, dir: &Path) {
    let last = dir.join(LAST);
    let (Ok(stored), Ok(state)) = (config_of_run(dir), read_state(&last)) else {
        return;
    };
    let (old, new) = (&stored.train, &mut config.train);
    let cosine = |t: &crate::config::TrainSection| t.lr_schedule == crate::config::Schedule::Cosine;
    if cosine(old) && cosine(new) && state.epoch >= old.epochs && new.epochs > old.epochs {
        new.cosine_horizons
            .extend(old.cosine_horizons.iter().copied());
        new.cosine_horizons.push(old.epochs);
        new.cosine_horizons.sort_unstable();
        new.cosine_horizons.dedup();
    }
}

/// A linear schedule's rate at every epoch depends on `epochs`: resumed with another count, the
/// epochs already run would have had other rates than the stored config gives them (no
/// horizons here, unlike the cosine), so such a resume is refused rather than silently
/// changing the run.
pub fn refuse_linear_extension(config: &Config, dir: &Path) -> Result<()> {
    let Ok(stored) = config_of_run(dir) else {
        return Ok(());
    };
    let linear = crate::config::Schedule::Linear;
    let (old, new) = (&stored.train, &config.train);
    if old.lr_schedule == linear && new.lr_schedule == linear && old.epochs != new.epochs {
        bail!(
            "{}: train.epochs = {} with lr_schedule = \"linear\": resuming with {} epochs would change the rates of the epochs already run; train a new run instead",
            dir.display(),
            old.epochs,
            new.epochs
        );
    }
    Ok(())
}

/// The run's TOML from a training checkpoint: `run_config`, or `config` in older files.
fn run_config_toml(last: &Path) -> Result<String> {
    metadata_value(last, RUN_CONFIG).or_else(|e| {
        metadata_value(last, "config")
            .ok()
            .filter(|raw| !raw.trim_start().starts_with('{'))
            .ok_or(e)
    })
}

pub fn read_state(last: &Path) -> Result<TrainState> {
    let raw = metadata_value(last, "train_state")?;
    serde_json::from_str(&raw).with_context(|| format!("{}: `train_state`", last.display()))
}

/// One `__metadata__` entry of a training checkpoint.
fn metadata_value(path: &Path, key: &str) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow!("{}: not a safetensors file ({e})", path.display()))?;
    header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(key).cloned())
        .ok_or_else(|| {
            anyhow!(
                "{}: no `{key}` in __metadata__: not a training checkpoint",
                path.display()
            )
        })
}

pub type Restored = (
    Vec<(String, Tensor)>,
    std::collections::HashMap<String, Tensor>,
    TrainState,
);

/// Weights, optimizer moments and progress of an interrupted run.
pub fn restore(
    config: &Config,
    model_cfg: &ModelConfig,
    last: &Path,
    device: &Device,
) -> Result<Restored> {
    if !last.exists() {
        bail!(
            "--resume: {} does not exist (nothing to resume)",
            last.display()
        );
    }
    let loaded = checkpoint::load(last, device, model_cfg.kernel_name().as_deref())?;
    let stored = loaded.model.config();
    if stored.structure() != model_cfg.structure() {
        bail!(
            "--resume: {} holds a {}, but the config asks for a {}{}",
            last.display(),
            stored.describe(),
            model_cfg.describe(),
            if stored.describe() == model_cfg.describe() {
                format!(
                    " (stored config {}, asked {})",
                    serde_json::to_string(&stored.structure())?,
                    serde_json::to_string(&model_cfg.structure())?
                )
            } else {
                String::new()
            }
        );
    }
    let state = read_state(last)?;
    if let Ok(stored_toml) = run_config_toml(last) {
        let stored: Config = toml::from_str(&stored_toml)
            .with_context(|| format!("{}: stored config", last.display()))?;
        if stored.train.seed != config.train.seed
            || stored.train.batch_size != config.train.batch_size
        {
            bail!("--resume: train.seed and train.batch_size must match the interrupted run's ({} and {})", stored.train.seed, stored.train.batch_size);
        }
    }
    let params = loaded.model.named_tensors();
    Ok((params, loaded.optimizer_state, state))
}
