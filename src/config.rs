//! Training configuration: TOML -> typed, validated structs. Unknown keys are rejected by
//! serde (the message names the key); bad values by [`Config::validate`], naming `section.key`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Deserializer, Serialize};

use crate::data::source::{DataSource, PathOrigin};
use crate::device::DeviceChoice;
use crate::models::ModelConfig;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The `[model]` table: `kind` and that model's own keys (see each model's `Config`).
    #[serde(deserialize_with = "model_table")]
    pub model: ModelConfig,
    #[serde(default)]
    pub data: DataSection,
    #[serde(default)]
    pub train: TrainSection,
    pub output: OutputSection,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Folder of `{dataset}_{split}.amat`; default $NADE_DATA_DIR, then data/binarized_mnist.
    pub dir: Option<PathBuf>,
    /// File prefix; default binarized_mnist.
    pub dataset: Option<String>,
    /// Who set `dir`: this config, or `nade train --data` (for the error when it is missing).
    #[serde(skip)]
    pub dir_origin: PathOrigin,
}

impl DataSection {
    pub fn source(&self) -> DataSource {
        let mut source = DataSource {
            path: self.dir.clone(),
            path_origin: self.dir_origin,
            ..DataSource::default()
        };
        if let Some(name) = &self.dataset {
            source.dataset = name.clone();
        }
        source
    }
}

/// How the learning rate moves over epochs.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    #[default]
    Constant,
    /// lr * lr_decay^epoch.
    Exponential,
    /// From lr down to lr_min over `epochs` along a half cosine (see `cosine_horizons`).
    Cosine,
    /// Multiply by lr_decay after `plateau_patience` epochs without a new best validation NLL.
    Plateau,
    /// From lr down to lr_min over `epochs` along a straight line (the EoNADE code's schedule,
    /// with momentum SGD).
    Linear,
}

/// The update rule of a training step.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Adam with the `adam_*` constants; `weight_decay` is decoupled (AdamW).
    #[default]
    Adam,
    /// Stochastic gradient descent with heavy-ball momentum (`momentum`): v = momentum v + g,
    /// w = w - lr v, as torch.optim.SGD; `weight_decay` is decoupled here too.
    Sgd,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub lr_schedule: Schedule,
    pub lr_decay: f64,
    pub lr_min: f64,
    pub plateau_patience: usize,
    /// Cosine only: earlier ends of the cosine, ascending and below `epochs`. Epoch e follows
    /// the half cosine from lr to lr_min that ends at the first horizon above e, or at `epochs`
    /// past the last one: what a finished cosine run does when `--resume` gives it more epochs
    /// (its lr jumps up to the longer cosine's value and decays along it). Such a resume
    /// records the old `epochs` here, so the run's stored config retrains it from scratch.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cosine_horizons: Vec<usize>,
    pub optimizer: Method,
    /// SGD only: the velocity's decay per step.
    pub momentum: f64,
    /// Decoupled weight decay: each step multiplies the weights by 1 - lr * weight_decay.
    pub weight_decay: f64,
    /// Penalties in the loss per training image, on weights only:
    /// l1 * sum |w| + l2 / 2 * sum w^2.
    pub l1: f64,
    pub l2: f64,
    /// Clip the global gradient norm to this value; 0 = off.
    pub clip_norm: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
    pub seed: u64,
    /// Stop after this many epochs without a new best validation NLL.
    pub patience: usize,
    /// Validate after every k-th epoch (and after the last one). The exact validation NLL of
    /// deep NADE costs several training epochs; patience and plateau_patience still count
    /// epochs (a validation that finds no new best adds the epochs since the one before).
    pub valid_every: usize,
    /// Batch size for the validation / test passes (no gradients, so it can be larger).
    pub eval_batch_size: usize,
    /// Write samples.png every k epochs; 0 = never.
    pub sample_every: usize,
    /// Start the output biases at the logits of the training data's pixel means.
    pub init_bias_from_data: bool,
    pub device: DeviceChoice,
    /// CPU threads; 0 = all cores (`--threads` overrides it).
    pub threads: usize,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            epochs: 100,
            batch_size: 100,
            lr: 1e-3,
            lr_schedule: Schedule::Constant,
            lr_decay: 0.5,
            lr_min: 0.0,
            plateau_patience: 10,
            cosine_horizons: Vec::new(),
            optimizer: Method::Adam,
            momentum: 0.9,
            weight_decay: 0.0,
            l1: 0.0,
            l2: 0.0,
            clip_norm: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-8,
            seed: 1234,
            patience: 30,
            valid_every: 1,
            eval_batch_size: 500,
            sample_every: 10,
            init_bias_from_data: true,
            device: DeviceChoice::Auto,
            threads: 0,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    /// best.safetensors, last.safetensors, metrics.jsonl, curve.png, samples.png.
    pub dir: PathBuf,
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read config", path.display()))?;
        Self::from_toml(&text).with_context(|| path.display().to_string())
    }

    pub fn from_toml(text: &str) -> Result<Self> {
        // toml's message spans several lines (it quotes the offending line); keep it to one.
        let config: Config = toml::from_str(text).map_err(|e| {
            let message = e.message().trim().to_string();
            // Errors inside [model] come back spanning the whole table: point at the key's
            // own line where the message names it (`model.hidden: ...`).
            let named = message
                .strip_prefix("model.")
                .and_then(|rest| rest.split_once(':'))
                .map(|(key, _)| key)
                .or_else(|| {
                    let rest = message.strip_prefix("model: unknown field `")?;
                    rest.split_once('`').map(|(key, _)| key)
                });
            let key_at = named.and_then(|key| model_key_line(text, key));
            match key_at.or(e.span().map(|span| span.start)) {
                Some(byte) => {
                    let (number, line) = line_at(text, byte);
                    anyhow::anyhow!("line {number} ({line}): {message}")
                }
                None => anyhow::anyhow!("{message}"),
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a validated config serializes")
    }

    /// Checks every value a run cannot start with, naming the key.
    pub fn validate(&self) -> Result<()> {
        let t = &self.train;
        let positive_f = |key: &str, v: f64| -> Result<()> {
            if !(v.is_finite() && v > 0.0) {
                bail!("train.{key} = {v}: must be a positive number");
            }
            Ok(())
        };
        let positive_u = |key: &str, v: usize| -> Result<()> {
            if v == 0 {
                bail!("train.{key} = 0: must be at least 1");
            }
            Ok(())
        };
        if let crate::models::ModelConfig::Mixture(_) = self.model {
            bail!("model.kind = \"mixture\": a mixture is made from trained checkpoints by `nade mix`, not trained; train its components");
        }
        self.model.validate()?;
        positive_u("epochs", t.epochs)?;
        positive_u("batch_size", t.batch_size)?;
        positive_u("eval_batch_size", t.eval_batch_size)?;
        positive_u("patience", t.patience)?;
        positive_u("valid_every", t.valid_every)?;
        positive_f("lr", t.lr)?;
        crate::threads::validate(t.threads, "train.threads")?;
        positive_f("adam_eps", t.adam_eps)?;
        for (key, v) in [
            ("adam_beta1", t.adam_beta1),
            ("adam_beta2", t.adam_beta2),
            ("momentum", t.momentum),
        ] {
            if !(0.0..1.0).contains(&v) {
                bail!("train.{key} = {v}: must be in [0, 1)");
            }
        }
        for (key, v) in [
            ("weight_decay", t.weight_decay),
            ("l1", t.l1),
            ("l2", t.l2),
            ("clip_norm", t.clip_norm),
            ("lr_min", t.lr_min),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                bail!("train.{key} = {v}: must be a number >= 0");
            }
        }
        if matches!(t.lr_schedule, Schedule::Exponential | Schedule::Plateau)
            && !(t.lr_decay > 0.0 && t.lr_decay <= 1.0)
        {
            bail!("train.lr_decay = {}: must be in (0, 1]", t.lr_decay);
        }
        if t.lr_schedule == Schedule::Plateau {
            positive_u("plateau_patience", t.plateau_patience)?;
        }
        if matches!(t.lr_schedule, Schedule::Cosine | Schedule::Linear) && t.lr_min > t.lr {
            bail!(
                "train.lr_min = {}: must not exceed train.lr = {}",
                t.lr_min,
                t.lr
            );
        }
        if !t.cosine_horizons.is_empty() {
            if t.lr_schedule != Schedule::Cosine {
                bail!("train.cosine_horizons: only for lr_schedule = \"cosine\"");
            }
            let mut below = 0;
            for &h in &t.cosine_horizons {
                if h <= below || h >= t.epochs {
                    bail!(
                        "train.cosine_horizons = {:?}: must rise strictly, from 1, and stay below train.epochs = {}",
                        t.cosine_horizons,
                        t.epochs
                    );
                }
                below = h;
            }
        }
        Ok(())
    }

    /// The model structure for data of `n` dimensions (`model.n`, if given, must agree).
    pub fn model_config(&self, n: usize) -> Result<ModelConfig> {
        let mut cfg = self.model.clone();
        match cfg.n() {
            0 => cfg.set_n(n),
            given if given != n => {
                bail!("model.n = {given}, but the data has {n} dimensions per vector")
            }
            _ => {}
        }
        Ok(cfg)
    }
}

/// The `[model]` table, deserialized straight into the models' config enum after dropping
/// the keys nade wrote for every model before each model had a config of its own
/// (`path = "auto"` for FVSBN and MLP, `hidden = 0` for FVSBN): old run files, and the run
/// TOML inside old training checkpoints (`--resume`), still load. Errors about the kernel name
/// the key the file used (`kernel`, or its older name `path`).
fn model_table<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<ModelConfig, D::Error> {
    use serde::de::Error;
    let mut table = toml::Table::deserialize(d)?;
    let kind = table
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or_default()
        .to_string();
    if kind != "nade" && table.get("path").and_then(|v| v.as_str()) == Some("auto") {
        table.remove("path");
    }
    if kind == "fvsbn" && table.get("hidden").and_then(|v| v.as_integer()) == Some(0) {
        table.remove("hidden");
    }
    let kernel_key = ["kernel", "path"]
        .into_iter()
        .find(|key| table.contains_key(*key));
    let parse = |table: toml::Table| ModelConfig::deserialize(toml::Value::Table(table));
    parse(table.clone()).map_err(|e| {
        let message = e.to_string();
        match kernel_key {
            Some(key) if message.contains("kernel") => {
                D::Error::custom(format!("model.{key}: {message}"))
            }
            _ => match culprit(&table, &message, parse) {
                Some(key) => D::Error::custom(format!("model.{key}: {message}")),
                None => D::Error::custom(format!("model: {message}")),
            },
        }
    })
}

/// The key of `table` that `message` (an error of `parse(table)`) is about, for the errors
/// serde does not name a key in (a value of the wrong type: `hidden = -3`): the config is a
/// tagged enum, which serde reads through a buffer that forgets keys. The culprit is the one
/// key whose removal changes the error (any other still meets the same error first; a missing
/// required key is reported only after every present key is read). None when the message
/// names its key anyway, or no single key changes it.
fn culprit<E: std::fmt::Display>(
    table: &toml::Table,
    message: &str,
    parse: impl Fn(toml::Table) -> std::result::Result<ModelConfig, E>,
) -> Option<String> {
    if message.starts_with("unknown field") || message.starts_with("missing field") {
        return None;
    }
    let changes = |key: &String| {
        let mut without = table.clone();
        without.remove(key);
        match parse(without) {
            Ok(_) => true,
            Err(e) => e.to_string() != message,
        }
    };
    let keys: Vec<&String> = table
        .keys()
        .filter(|k| *k != "kind")
        .filter(|k| changes(k))
        .collect();
    match keys[..] {
        [key] => Some(key.clone()),
        _ => None,
    }
}

/// The line of key `key` of the `[model]` table in `text`, if the text parses that far.
fn model_key_line(text: &str, key: &str) -> Option<usize> {
    #[derive(Deserialize)]
    struct Spans {
        model: std::collections::BTreeMap<String, toml::Spanned<toml::Value>>,
    }
    let spans: Spans = toml::from_str(text).ok()?;
    let value = spans.model.get(key)?;
    Some(value.span().start)
}

/// The 1-based number and the trimmed text of the line holding byte `byte`.
fn line_at(text: &str, byte: usize) -> (usize, &str) {
    let byte = byte.min(text.len());
    let number = text[..byte].matches('\n').count() + 1;
    (number, text.lines().nth(number - 1).unwrap_or("").trim())
}
