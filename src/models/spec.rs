//! What a model's config says of itself: [`ModelSpec`], the one trait a model's config
//! implements beside the model's [`Autoregressive`], and [`Kind`], its entry in the registry
//! ([`super::REGISTRY`]). Everything generic code asks of a model's structure goes through
//! these two, so a new model is its file, its config, its tests and one line in
//! src/models/mod.rs.
//!
//! The run-time options (`--kernel`, `--masks`, `--orders`) are refused by default with a
//! message that names the kind; a model that supports one overrides its method.

use std::collections::BTreeMap;

use candle_core::{Device, Result};
use candle_nn::VarBuilder;

use super::{Autoregressive, ModelConfig, ParamSpec, Pass};

/// A model kind as the registry lists it: what is known of it before any config exists
/// (`nade kinds --json` prints these fields).
#[derive(Debug, serde::Serialize)]
pub struct Kind {
    /// The `kind` of run files, checkpoints and `--model`.
    pub name: &'static str,
    /// One line for `nade kinds`.
    pub summary: &'static str,
    /// Whether it conditions on any set of observed dimensions ([`super::Orders::Any`]);
    /// the others condition on prefixes of their order.
    pub any_order: bool,
    /// The hidden layer sizes `nade bench` times when `--hidden` gives none.
    pub bench_layers: &'static [usize],
    /// A model of this kind over n dimensions with hidden layers of the given sizes (bench,
    /// tests, and the files of other tools, which give `hidden` or nothing).
    #[serde(skip)]
    pub with_layers: fn(n: usize, layers: &[usize]) -> anyhow::Result<ModelConfig>,
}

impl Kind {
    /// The common `with_layers` of a model with exactly one hidden layer.
    pub fn one_layer(kind: &str, layers: &[usize]) -> anyhow::Result<usize> {
        match layers {
            [hidden] => Ok(*hidden),
            [] => Err(anyhow::anyhow!("a {kind} model needs `hidden`")),
            _ => Err(anyhow::anyhow!(
                "a {kind} model has one hidden layer: give one size, not {}",
                layers.len()
            )),
        }
    }
}

/// Which kind a config is and the enum it goes into: implemented for every config by the
/// `models!` list of src/models/mod.rs, not by hand.
pub trait Identity {
    /// The registry entry of this kind (the model file's `KIND`).
    fn kind(&self) -> &'static Kind;

    /// The config as the enum every generic caller holds.
    fn to_config(&self) -> ModelConfig;
}

/// A model's structure: its hyperparameters, the tensors it holds, how to build it and what
/// it supports at run time. Implemented by each model's `<Name>Config`.
pub trait ModelSpec: Identity {
    /// Number of binary dimensions (784 for MNIST); 0 in a run file means "from the data".
    fn n(&self) -> usize;

    fn set_n(&mut self, n: usize);

    /// The sizes of the hidden layers, first to last (none for FVSBN).
    fn layers(&self) -> Vec<usize>;

    /// The hidden size of a one-hidden-layer model (the checkpoint's `hidden` metadata);
    /// None where the tensors say the sizes (MADE, deep NADE) or there are none (FVSBN).
    fn hidden(&self) -> Option<usize> {
        None
    }

    /// Checks the hyperparameters, naming the key (`model.hidden`); `n` may still be 0.
    fn validate(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// The tensors a checkpoint of this model holds, in schema order.
    fn param_specs(&self) -> Vec<ParamSpec>;

    /// Floats one batch of `batch` images holds at its peak on `device`, beyond the
    /// parameters themselves (and, in training, their gradients and the optimizer's
    /// moments): the activations the model's kernel materializes, and their gradients in
    /// training. An estimate for the memory check before large allocations (src/memory.rs).
    fn working_floats(&self, batch: usize, pass: Pass, device: &Device) -> f64;

    /// Builds the model from the tensors in `vb` (a checkpoint or a VarMap).
    fn build(&self, vb: VarBuilder) -> Result<Box<dyn Autoregressive>>;

    /// A short description for messages: `nade (n = 784, hidden = 500)`.
    fn describe(&self) -> String {
        match self.hidden() {
            Some(h) => format!("{} (n = {}, hidden = {h})", self.kind().name, self.n()),
            None => format!("{} (n = {})", self.kind().name, self.n()),
        }
    }

    /// Metadata keys of the model's own beside `model`, `n`, `hidden` and `config`: what a
    /// reader without the config JSON needs (MADE: `activation`).
    fn extra_metadata(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// Fills in, for a file without the config JSON, what its `model`, `n` (and `hidden`)
    /// metadata leave out, from its other metadata and its tensors' shapes.
    fn complete_from_file(
        &mut self,
        metadata: &BTreeMap<String, String>,
        shapes: &BTreeMap<String, Vec<usize>>,
    ) -> anyhow::Result<()> {
        let _ = (metadata, shapes);
        Ok(())
    }

    /// The batch `nade eval` uses when none is given.
    fn eval_batch(&self) -> usize {
        100
    }

    /// The same structure with the run-time choices at their defaults: what a resumed run
    /// compares and a checkpoint stores.
    fn structure(&self) -> ModelConfig {
        self.to_config()
    }

    /// The same model computed with another kernel (`--kernel`): a choice of how, not of
    /// what. Models with one way take "auto" only.
    fn with_kernel(&self, kernel: &str) -> anyhow::Result<ModelConfig> {
        if kernel == "auto" {
            return Ok(self.to_config());
        }
        Err(anyhow::anyhow!(
            "--kernel {kernel}: a {} model has one way to compute (auto); only nade has kernels",
            self.kind().name
        ))
    }

    /// The kernel the model computes with, for messages and JSON (None where there is no
    /// choice).
    fn kernel_name(&self) -> Option<String> {
        None
    }

    /// The same model evaluated (and sampled) with its first `k` masks (`--masks`).
    fn with_masks(&self, k: usize) -> anyhow::Result<ModelConfig> {
        Err(anyhow::anyhow!(
            "--masks {k}: a {} model is not a mixture of masks (only made is)",
            self.kind().name
        ))
    }

    /// The masks density and sampling use (None for models without masks).
    fn masks_used(&self) -> Option<usize> {
        None
    }

    /// The same structure with an ensemble of `k` masks (`nade bench --masks`); models
    /// without masks take k = 1.
    fn with_mask_count(&self, k: usize) -> anyhow::Result<ModelConfig> {
        if k == 1 {
            return Ok(self.to_config());
        }
        Err(anyhow::anyhow!(
            "--masks {k}: a {} model has no masks (only made has)",
            self.kind().name
        ))
    }

    /// The same structure with `seed` as the seed of what it draws at construction
    /// (`nade train --model-seed`: MADE's masks, deep NADE's orderings); refused by a model
    /// that draws nothing.
    fn with_seed(&self, seed: u64) -> anyhow::Result<ModelConfig> {
        Err(anyhow::anyhow!(
            "--model-seed {seed}: a {} model draws nothing from a seed of its own (made's masks and deepnade's orderings do; --seed seeds the weights)",
            self.kind().name
        ))
    }

    /// The same model evaluated with its first `k` stored orderings (`--orders`).
    fn with_orders(&self, k: usize) -> anyhow::Result<ModelConfig> {
        Err(anyhow::anyhow!(
            "--orders {k}: a {} model is not an ensemble of orderings (only deepnade is)",
            self.kind().name
        ))
    }

    /// The orderings density uses (None for models that are not ensembles of orderings).
    fn orders_used(&self) -> Option<usize> {
        None
    }
}
