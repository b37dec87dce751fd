//! The autoregressive models p(x) = prod_i p(x_i | x_<i) over x in {0,1}^n, and what they
//! share. The `models!` list below is the one place that names the models: each entry is a
//! file here holding the serde config (`<Name>Config`, which implements [`ModelSpec`]), its
//! registry entry `KIND` and the model (`<Name>::new(cfg, vb)`, which implements
//! [`Autoregressive`]), as in candle-transformers. A new model is its file and one line of
//! that list.

pub mod evaluator;
pub mod likelihood;
pub(crate) mod masks;
pub mod params;
pub mod sampler;
pub mod spec;
pub mod stack;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

pub use self::nade::NadeKernel;
pub use evaluator::{evaluator, BatchEvaluator};
pub use likelihood::{
    bernoulli_log_prob, log_mean_exp, mean_nll, softplus, weighted_bernoulli_log_prob,
};
pub use params::{init_params, set_output_bias, Init, ParamRole, ParamSpec, Trainable};
pub use sampler::{Evidence, Orders, SampledBatch, SamplerState};
pub use spec::{Identity, Kind, ModelSpec};

/// Declares the models: the `pub mod` of each, the [`ModelConfig`] enum (one variant per
/// model, tagged by `kind` in run files and checkpoints), its one dispatch to the models'
/// [`ModelSpec`], and [`REGISTRY`] of the trained ones (the models made of trained models,
/// after `made_of_models:`, are not in it). A new model is one line here.
macro_rules! models {
    (
        $( $(#[$doc:meta])* $variant:ident => $module:ident::$config:ident ),* $(,)?
        ; made_of_models:
        $( $(#[$cdoc:meta])* $cvariant:ident => $cmodule:ident::$cconfig:ident ),* $(,)?
    ) => {
        $( pub mod $module; )*
        $( pub mod $cmodule; )*

        /// A model's structure: which model, and its hyperparameters (the weights come from
        /// elsewhere). The `[model]` table of a run file and the `config` JSON of a
        /// checkpoint deserialize straight into it, tagged by `kind`.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "kind", rename_all = "lowercase")]
        pub enum ModelConfig {
            $( $(#[$doc])* $variant($module::$config), )*
            $( $(#[$cdoc])* $cvariant($cmodule::$cconfig), )*
        }

        impl ModelConfig {
            /// The model's own answers about its structure.
            pub fn spec(&self) -> &dyn ModelSpec {
                match self {
                    $( ModelConfig::$variant(c) => c, )*
                    $( ModelConfig::$cvariant(c) => c, )*
                }
            }

            pub fn spec_mut(&mut self) -> &mut dyn ModelSpec {
                match self {
                    $( ModelConfig::$variant(c) => c, )*
                    $( ModelConfig::$cvariant(c) => c, )*
                }
            }
        }

        $(
            impl From<$cmodule::$cconfig> for ModelConfig {
                fn from(c: $cmodule::$cconfig) -> Self {
                    ModelConfig::$cvariant(c)
                }
            }

            impl spec::Identity for $cmodule::$cconfig {
                fn kind(&self) -> &'static Kind {
                    &$cmodule::KIND
                }

                fn to_config(&self) -> ModelConfig {
                    ModelConfig::$cvariant(self.clone())
                }
            }
        )*

        $(
            impl From<$module::$config> for ModelConfig {
                fn from(c: $module::$config) -> Self {
                    ModelConfig::$variant(c)
                }
            }

            impl spec::Identity for $module::$config {
                fn kind(&self) -> &'static Kind {
                    &$module::KIND
                }

                fn to_config(&self) -> ModelConfig {
                    ModelConfig::$variant(self.clone())
                }
            }
        )*

        /// Every model, in the order of the README's results table: what the CLI, `nade
        /// bench`, `nade kinds` and the tests list.
        pub static REGISTRY: &[&Kind] = &[ $( &$module::KIND, )* ];
    };
}

models! {
    /// Fully visible sigmoid belief net: logistic regression per dimension.
    Fvsbn => fvsbn::FvsbnConfig,
    /// One hidden layer of its own per dimension.
    Mlp => mlp::MlpConfig,
    /// Neural autoregressive density estimator: one weight matrix shared by all dimensions.
    Nade => nade::NadeConfig,
    /// Masked autoencoder (MADE): every conditional from one masked MLP, K-mask ensembles.
    Made => made::MadeConfig,
    /// Order-agnostic deep NADE: one deep network for every ordering, K-ordering ensembles.
    DeepNade => deepnade::DeepNadeConfig,
    ;
    // Models made of trained models, not trained themselves: in the config enum (checkpoints
    // hold them), not in REGISTRY (nothing trains or benches them).
    made_of_models:
    /// A weighted mixture of trained models of any kinds (`nade mix`).
    Mixture => mixture::MixtureConfig,
}

impl ModelConfig {
    /// The `kind` names, for messages and `--model`.
    pub fn kinds() -> Vec<&'static str> {
        REGISTRY.iter().map(|k| k.name).collect()
    }

    /// The kinds that condition on any set of observed dimensions ([`Orders::Any`]).
    pub fn any_order_kinds() -> Vec<&'static str> {
        REGISTRY
            .iter()
            .filter(|k| k.any_order)
            .map(|k| k.name)
            .collect()
    }

    /// The registry entry named `kind`, or an error listing the kinds.
    pub fn kind_named(kind: &str) -> anyhow::Result<&'static Kind> {
        REGISTRY
            .iter()
            .copied()
            .find(|k| k.name == kind)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown model kind {kind:?} (expected {})",
                    Self::kinds().join(", ")
                )
            })
    }

    pub fn kind(&self) -> &'static str {
        self.spec().kind().name
    }

    /// Number of binary dimensions (784 for MNIST); 0 in a run file means "from the data".
    pub fn n(&self) -> usize {
        self.spec().n()
    }

    pub fn set_n(&mut self, n: usize) {
        self.spec_mut().set_n(n)
    }

    /// The hidden size of the one-hidden-layer models (the checkpoint's `hidden` metadata).
    /// MADE and deep NADE have a list of layers and no `hidden` key: their tensors say the sizes.
    pub fn hidden(&self) -> Option<usize> {
        self.spec().hidden()
    }

    /// The batch `nade eval` uses when none is given.
    pub fn eval_batch(&self) -> usize {
        self.spec().eval_batch()
    }

    /// The width of the first hidden layer, for tables (`nade bench`); None for FVSBN.
    pub fn width(&self) -> Option<usize> {
        self.layers().first().copied()
    }

    /// The sizes of the hidden layers, first to last (none for FVSBN).
    pub fn layers(&self) -> Vec<usize> {
        self.spec().layers()
    }

    /// Checks the hyperparameters, naming the key (`model.hidden`); `n` may still be 0.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.spec().validate()
    }

    /// The config of a checkpoint written by another tool (or by nade before configs were
    /// stored), from its `model`, `n` and `hidden` metadata.
    pub fn from_legacy(kind: &str, n: usize, hidden: Option<usize>) -> anyhow::Result<Self> {
        let layers: Vec<usize> = hidden.into_iter().collect();
        (Self::kind_named(kind)?.with_layers)(n, &layers)
    }

    /// A model of `kind` with hidden layers of the given sizes (`nade bench --hidden`): one
    /// layer for the MLP and NADE (FVSBN has none and ignores it), any number for MADE and
    /// deep NADE.
    pub fn with_layers(kind: &str, n: usize, layers: &[usize]) -> anyhow::Result<Self> {
        (Self::kind_named(kind)?.with_layers)(n, layers)
    }

    /// The same model computed with another kernel (`--kernel`): a choice of how, not of
    /// what, so it is not checked against a checkpoint. Models with one way take "auto" only.
    pub fn with_kernel(&self, kernel: &str) -> anyhow::Result<Self> {
        self.spec().with_kernel(kernel)
    }

    /// The same model evaluated (and sampled) with its first `k` masks (`--masks`): a
    /// run-time choice like the kernel. Only MADE is a mixture of masks.
    pub fn with_masks(&self, k: usize) -> anyhow::Result<Self> {
        self.spec().with_masks(k)
    }

    /// The same model evaluated with its first `k` orderings (`--orders`): a run-time choice
    /// like the kernel. Only deep NADE is an ensemble of orderings.
    pub fn with_orders(&self, k: usize) -> anyhow::Result<Self> {
        self.spec().with_orders(k)
    }

    /// The same structure drawing its masks / orderings from `seed` (`--model-seed`).
    pub fn with_seed(&self, seed: u64) -> anyhow::Result<Self> {
        self.spec().with_seed(seed)
    }

    /// The orderings density uses (None for models that are not ensembles of orderings).
    pub fn orders_used(&self) -> Option<usize> {
        self.spec().orders_used()
    }

    /// The same structure with an ensemble of `k` masks, in random orders when k > 1
    /// (`nade bench --masks`); only MADE has masks, other models take k = 1.
    pub fn with_mask_count(&self, k: usize) -> anyhow::Result<Self> {
        self.spec().with_mask_count(k)
    }

    /// The masks density and sampling use (None for models without masks).
    pub fn masks_used(&self) -> Option<usize> {
        self.spec().masks_used()
    }

    /// Metadata keys of the model's own beside `model`, `n`, `hidden` and `config`: what a
    /// reader without the config JSON needs (MADE: `activation`).
    pub fn extra_metadata(&self) -> Vec<(&'static str, String)> {
        self.spec().extra_metadata()
    }

    /// Fills in, for a file without the config JSON, what its `model`, `n` (and `hidden`)
    /// metadata leave out, from its other metadata and its tensors' shapes.
    pub fn complete_from_file(
        &mut self,
        metadata: &std::collections::BTreeMap<String, String>,
        shapes: &std::collections::BTreeMap<String, Vec<usize>>,
    ) -> anyhow::Result<()> {
        self.spec_mut().complete_from_file(metadata, shapes)
    }

    /// The kernel a model computes with, for messages and JSON (None where there is no choice).
    pub fn kernel_name(&self) -> Option<String> {
        self.spec().kernel_name()
    }

    /// The same structure with the run-time choices (the kernel) at their defaults: what a
    /// resumed run compares.
    pub fn structure(&self) -> Self {
        self.spec().structure()
    }

    /// A short description for messages: `nade (n = 784, hidden = 500)`.
    pub fn describe(&self) -> String {
        self.spec().describe()
    }

    /// The tensors a checkpoint of this model holds, in schema order.
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        self.spec().param_specs()
    }

    /// Entries of all the checkpoint's tensors, as stored.
    pub fn num_params(&self) -> usize {
        self.param_specs().iter().map(ParamSpec::len).sum()
    }

    /// Parameters the model reads (FVSBN's W and MLP's A are stored whole but only their
    /// strict lower triangles enter the model): the README's "parameters (used)".
    pub fn num_used_params(&self) -> usize {
        self.param_specs().iter().map(|s| s.used).sum()
    }

    /// Floats one batch of `batch` images holds at its peak on `device` ([`ModelSpec::working_floats`]).
    pub fn working_floats(&self, batch: usize, pass: Pass, device: &Device) -> f64 {
        self.spec().working_floats(batch, pass, device)
    }

    /// Builds the model from the tensors in `vb` (a checkpoint or a VarMap).
    pub fn build(&self, vb: VarBuilder) -> Result<Box<dyn Autoregressive>> {
        self.spec().build(vb)
    }
}

/// How a stored model is used at run time: choices that are not part of its structure, so
/// not checked against a checkpoint (`--kernel`, `--masks`, `--orders`; a run's own choice of
/// evaluation orderings for its test pass).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunChoices {
    /// None: auto.
    pub kernel: Option<String>,
    pub masks: Option<usize>,
    pub orders: Option<usize>,
}

impl ModelConfig {
    /// The same structure with `choices` applied; an error naming the flag for a choice the
    /// model does not support.
    pub fn with_choices(&self, choices: &RunChoices) -> anyhow::Result<Self> {
        let mut cfg = self.with_kernel(choices.kernel.as_deref().unwrap_or("auto"))?;
        if let Some(k) = choices.masks {
            cfg = cfg.with_masks(k)?;
        }
        if let Some(k) = choices.orders {
            cfg = cfg.with_orders(k)?;
        }
        Ok(cfg)
    }
}

/// Why log p(x) is asked for. Training needs the gradient (a model may compute it in the same
/// pass, as NADE's fused kernel does) and says which optimizer step it is: models whose
/// training pass changes with the step (MADE's mask, deep NADE's orderings) read it here, and
/// a resumed run, which restores the step, goes on with the same choices. Evaluation needs no
/// gradient, so no graph is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    Train { step: u64 },
    Eval,
}

/// A model of p(x) = prod_i p(x_i | x_<i) over x in {0,1}^n.
pub trait Autoregressive: Send + Sync {
    fn config(&self) -> &ModelConfig;

    /// logits[b, i] = logit of p(x_i = 1 | x_<i) for every i at once; x is (B, n) f32 in {0,1}.
    fn logits(&self, x: &Tensor) -> Result<Tensor>;

    /// log p(x) per row, (B,). With [`Pass::Eval`] the result carries no autograd graph.
    fn log_prob(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        let log_p = bernoulli_log_prob(&self.logits(x)?, x)?;
        Ok(match pass {
            Pass::Train { .. } => log_p,
            Pass::Eval => log_p.detach(),
        })
    }

    /// log p_k(x) of each row of x under each component k of a uniform mixture (deep NADE's
    /// used orderings, MADE's used masks), [row][k] in nats, so that log p(x) is their
    /// log-mean-exp; None for a model that is not a mixture (the default).
    fn component_log_probs(&self, x: &Tensor) -> Result<Option<Vec<Vec<f64>>>> {
        let _ = x;
        Ok(None)
    }

    /// What the model prepares from its parameters for an evaluation of many batches
    /// ([`evaluator`], the way to call it); None (the default) where it prepares nothing.
    fn prepared_evaluator(&self) -> Result<Option<Box<dyn BatchEvaluator + '_>>> {
        Ok(None)
    }

    /// log p(x_kept) of each row of `kept` ((B, n)) over the dimensions where `observed` is 1,
    /// exactly; None where the model cannot say it exactly. The default serves a model of one
    /// component with a fixed order: where every row's kept set is a prefix of the order, the
    /// sum of the prefix's conditionals, which depend on kept values only.
    fn kept_log_prob(&self, kept: &Tensor, observed: &Tensor) -> Result<Option<KeptLogProb>> {
        let orders = self.orders();
        let one_component = matches!(orders, Orders::Fixed(_))
            && self.config().masks_used().unwrap_or(1) == 1
            && self.config().orders_used().unwrap_or(1) == 1;
        if !one_component {
            return Ok(None);
        }
        let observed_host = observed.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let prefixes = observed_host.iter().all(|row| {
            let row: Vec<bool> = row.iter().map(|&v| v != 0.0).collect();
            orders.conditions_on(&row)
        });
        if !prefixes {
            return Ok(None);
        }
        let logits = self.logits(&kept.contiguous()?)?;
        let weight = observed.to_dtype(logits.dtype())?;
        let log_p = weighted_bernoulli_log_prob(&logits, kept, &weight)?;
        let log_p = log_p.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        Ok(Some(KeptLogProb {
            first: log_p.clone(),
            model: log_p,
            components: 1,
        }))
    }

    /// The parameters under their checkpoint names, in schema order.
    fn named_tensors(&self) -> Vec<(String, Tensor)>;

    /// The orders the model samples in, and so what it can condition on exactly.
    fn orders(&self) -> Orders {
        Orders::Fixed((0..self.config().n()).collect())
    }

    /// A fresh sequential sampling state for `batch` vectors at the start of the model's own
    /// order (nothing fed yet), on the model's device. Each step costs one conditional.
    fn sampler(&self, batch: usize) -> Result<Box<dyn SamplerState + '_>>;

    /// Samples (or completes) a batch in the model's own order: observed dimensions keep
    /// their values, the others are drawn, x_i = 1 exactly when u_i < p(x_i = 1 | x_<i).
    /// The default steps [`Autoregressive::sampler`]; models with a fused sampler override it.
    fn sample_batch(&self, evidence: &Evidence) -> Result<SampledBatch> {
        sampler::sample_sequentially(self, evidence)
    }
}

/// What [`Autoregressive::kept_log_prob`] returns, per row, in nats.
#[derive(Clone, Debug, PartialEq)]
pub struct KeptLogProb {
    /// Under the model's first component alone (deep NADE: the first ordering, restricted
    /// to the kept set).
    pub first: Vec<f64>,
    /// Under the whole model (deep NADE: the ensemble of its used orderings).
    pub model: Vec<f64>,
    /// How many components `model` mixes.
    pub components: usize,
}

/// The dtype every model computes in.
pub const DTYPE: DType = DType::F32;

/// A model on `device` holding `params` (a checkpoint's tensors), not trainable.
pub fn build_frozen(
    cfg: &ModelConfig,
    params: std::collections::HashMap<String, Tensor>,
    device: &Device,
) -> Result<Box<dyn Autoregressive>> {
    cfg.build(VarBuilder::from_tensors(params, DTYPE, device))
}

/// The same tensors as `model` under another config of the same structure (a run-time
/// choice: [`ModelConfig::with_choices`]), not trainable.
pub fn rebuilt(
    model: &dyn Autoregressive,
    cfg: &ModelConfig,
    device: &Device,
) -> Result<Box<dyn Autoregressive>> {
    let params = model
        .named_tensors()
        .into_iter()
        .map(|(name, t)| (name, t.detach()))
        .collect();
    build_frozen(cfg, params, device)
}

/// `h . v` along the last axis: the read-out of a hidden layer, l_i = v_i . h_i.
pub(crate) fn readout(h: &Tensor, v: &Tensor) -> Result<Tensor> {
    h.broadcast_mul(v)?.sum(candle_core::D::Minus1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each registry entry builds configs of its own kind, under the `kind` tag serde writes
    /// and reads, and the enum has no model the registry lacks.
    #[test]
    fn the_registry_and_the_config_enum_name_the_same_models() {
        for kind in REGISTRY {
            let cfg = (kind.with_layers)(6, &[3]).unwrap();
            assert_eq!(cfg.kind(), kind.name);
            assert!(std::ptr::eq(cfg.spec().kind(), *kind));
            let json = serde_json::to_value(&cfg).unwrap();
            assert_eq!(json["kind"], kind.name);
            let back: ModelConfig = serde_json::from_value(json).unwrap();
            assert_eq!(back, cfg);
        }
        let mut names = ModelConfig::kinds();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), REGISTRY.len(), "a kind named twice");
        assert_eq!(ModelConfig::any_order_kinds(), ["deepnade"]);
        assert!(ModelConfig::kind_named("rbm")
            .unwrap_err()
            .to_string()
            .contains("fvsbn, mlp"));
    }
}
