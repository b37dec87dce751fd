//! The autoregressive models p(x) = prod_i p(x_i | x_<i) over x in {0,1}^n, and what they
//! share. [`ModelConfig`] is the one place that lists the models: each variant holds the
//! serde config that lives beside its model (`Config` + `Model::new(cfg, vb)`, as in
//! candle-transformers). A new model is its file here and one variant below.

pub mod deepnade;
pub mod fvsbn;
pub mod likelihood;
pub mod made;
pub(crate) mod masks;
pub mod mlp;
pub mod nade;
pub mod params;
pub mod sampler;
pub mod stack;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

pub use likelihood::{
    bernoulli_log_prob, log_mean_exp, mean_nll, softplus, weighted_bernoulli_log_prob,
};
pub use nade::NadeKernel;
pub use params::{init_params, Init, ParamRole, ParamSpec, Trainable};
pub use sampler::{Evidence, Orders, SampledBatch, SamplerState};

/// A model's structure: which model, and its hyperparameters (the weights come from
/// elsewhere). The `[model]` table of a run file and the `config` JSON of a checkpoint
/// deserialize straight into it, tagged by `kind`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ModelConfig {
    /// Fully visible sigmoid belief net: logistic regression per dimension.
    Fvsbn(fvsbn::FvsbnConfig),
    /// One hidden layer of its own per dimension.
    Mlp(mlp::MlpConfig),
    /// Neural autoregressive density estimator: one weight matrix shared by all dimensions.
    Nade(nade::NadeConfig),
    /// Masked autoencoder (MADE): every conditional from one masked MLP, K-mask ensembles.
    Made(made::MadeConfig),
    /// Order-agnostic deep NADE: one deep network for every ordering, K-ordering ensembles.
    DeepNade(deepnade::DeepNadeConfig),
}

impl ModelConfig {
    /// The `kind` names, for messages.
    pub const KINDS: [&'static str; 5] = ["fvsbn", "mlp", "nade", "made", "deepnade"];

    /// The kinds that condition on any set of observed dimensions ([`Orders::Any`]).
    pub const ANY_ORDER_KINDS: [&'static str; 1] = ["deepnade"];

    pub fn kind(&self) -> &'static str {
        match self {
            ModelConfig::Fvsbn(_) => "fvsbn",
            ModelConfig::Mlp(_) => "mlp",
            ModelConfig::Nade(_) => "nade",
            ModelConfig::Made(_) => "made",
            ModelConfig::DeepNade(_) => "deepnade",
        }
    }

    /// Number of binary dimensions (784 for MNIST); 0 in a run file means "from the data".
    pub fn n(&self) -> usize {
        match self {
            ModelConfig::Fvsbn(c) => c.n,
            ModelConfig::Mlp(c) => c.n,
            ModelConfig::Nade(c) => c.n,
            ModelConfig::Made(c) => c.n,
            ModelConfig::DeepNade(c) => c.n,
        }
    }

    pub fn set_n(&mut self, n: usize) {
        match self {
            ModelConfig::Fvsbn(c) => c.n = n,
            ModelConfig::Mlp(c) => c.n = n,
            ModelConfig::Nade(c) => c.n = n,
            ModelConfig::Made(c) => c.n = n,
            ModelConfig::DeepNade(c) => c.n = n,
        }
    }

    /// The hidden size of the one-hidden-layer models (the checkpoint's `hidden` metadata).
    /// MADE and deep NADE have a list of layers and no `hidden` key: their tensors say the sizes.
    pub fn hidden(&self) -> Option<usize> {
        match self {
            ModelConfig::Fvsbn(_) | ModelConfig::Made(_) | ModelConfig::DeepNade(_) => None,
            ModelConfig::Mlp(c) => Some(c.hidden),
            ModelConfig::Nade(c) => Some(c.hidden),
        }
    }

    /// The batch `nade eval` uses when none is given. Deep NADE's exact evaluation walks
    /// every row of a batch through one matmul per step, which wants many rows: on the CPU
    /// (2 threads, one ordering) 2,048 images are 2.3x as fast per image as 100. The other
    /// models' activations grow with the batch (NADE's plain path: (B, n, d)), so they keep 100.
    pub fn eval_batch(&self) -> usize {
        match self {
            ModelConfig::DeepNade(_) => deepnade::WALK_ROWS,
            _ => 100,
        }
    }

    /// The width of the first hidden layer, for tables (`nade bench`); None for FVSBN.
    pub fn width(&self) -> Option<usize> {
        self.layers().first().copied()
    }

    /// The sizes of the hidden layers, first to last (none for FVSBN).
    pub fn layers(&self) -> Vec<usize> {
        match self {
            ModelConfig::Made(c) => c.hidden.clone(),
            ModelConfig::DeepNade(c) => c.hidden.clone(),
            other => other.hidden().into_iter().collect(),
        }
    }

    /// Checks the hyperparameters, naming the key (`model.hidden`); `n` may still be 0.
    pub fn validate(&self) -> std::result::Result<(), String> {
        match self {
            ModelConfig::Fvsbn(_) => Ok(()),
            ModelConfig::Mlp(c) => c.validate(),
            ModelConfig::Nade(c) => c.validate(),
            ModelConfig::Made(c) => c.validate(),
            ModelConfig::DeepNade(c) => c.validate(),
        }
    }

    /// The config of a checkpoint written by another tool (or by nade before configs were
    /// stored), from its `model`, `n` and `hidden` metadata.
    pub fn from_legacy(
        kind: &str,
        n: usize,
        hidden: Option<usize>,
    ) -> std::result::Result<Self, String> {
        let need = || hidden.ok_or_else(|| format!("a {kind} model needs `hidden`"));
        Ok(match kind {
            "fvsbn" => ModelConfig::Fvsbn(fvsbn::FvsbnConfig { n }),
            "mlp" => ModelConfig::Mlp(mlp::MlpConfig { n, hidden: need()? }),
            "nade" => ModelConfig::Nade(nade::NadeConfig {
                n,
                hidden: need()?,
                kernel: NadeKernel::default(),
            }),
            // Layers of `hidden` (bench, tests), or none yet: a file's tensors say them
            // ([`ModelConfig::complete_from_file`]).
            "made" => ModelConfig::Made(made::MadeConfig::with_hidden(
                n,
                hidden.into_iter().collect(),
            )),
            "deepnade" => ModelConfig::DeepNade(deepnade::DeepNadeConfig::with_hidden(
                n,
                hidden.into_iter().collect(),
            )),
            other => {
                return Err(format!(
                    "unknown model kind {other:?} (expected {})",
                    Self::KINDS.join(", ")
                ))
            }
        })
    }

    /// A model of `kind` with hidden layers of the given sizes (`nade bench --hidden`): one
    /// layer for the MLP and NADE (FVSBN has none and ignores it), any number for MADE and
    /// deep NADE.
    pub fn with_layers(
        kind: &str,
        n: usize,
        layers: &[usize],
    ) -> std::result::Result<Self, String> {
        match (kind, layers) {
            ("made", _) => Ok(ModelConfig::Made(made::MadeConfig::with_hidden(
                n,
                layers.to_vec(),
            ))),
            ("deepnade", _) => Ok(ModelConfig::DeepNade(
                deepnade::DeepNadeConfig::with_hidden(n, layers.to_vec()),
            )),
            (_, [h]) => Self::from_legacy(kind, n, Some(*h)),
            _ => Err(format!(
                "a {kind} model has one hidden layer: give one size, not {}",
                layers.len()
            )),
        }
    }

    /// The same model computed with another kernel (`--kernel`): a choice of how, not of
    /// what, so it is not checked against a checkpoint. Models with one way take "auto" only.
    pub fn with_kernel(&self, kernel: &str) -> std::result::Result<Self, String> {
        let mut cfg = self.clone();
        match &mut cfg {
            ModelConfig::Nade(c) => {
                c.kernel = kernel.parse().map_err(|e| format!("--kernel {kernel}: {e}"))?
            }
            other if kernel == "auto" => {
                let _ = other;
            }
            other => {
                return Err(format!(
                    "--kernel {kernel}: a {} model has one way to compute (auto); only nade has kernels",
                    other.kind()
                ))
            }
        }
        Ok(cfg)
    }

    /// The same model evaluated (and sampled) with its first `k` masks (`--masks`): a
    /// run-time choice like the kernel. Only MADE is a mixture of masks.
    pub fn with_masks(&self, k: usize) -> std::result::Result<Self, String> {
        match self {
            ModelConfig::Made(c) => {
                let cfg = made::MadeConfig {
                    eval_masks: Some(k),
                    ..c.clone()
                };
                cfg.validate().map_err(|_| {
                    format!(
                        "--masks {k}: the model has {} mask(s), so 1..={}",
                        c.masks, c.masks
                    )
                })?;
                Ok(ModelConfig::Made(cfg))
            }
            other => Err(format!(
                "--masks {k}: a {} model is not a mixture of masks (only made is)",
                other.kind()
            )),
        }
    }

    /// The same model evaluated with its first `k` orderings (`--orders`): a run-time choice
    /// like the kernel. Only deep NADE is an ensemble of orderings.
    pub fn with_orders(&self, k: usize) -> std::result::Result<Self, String> {
        match self {
            ModelConfig::DeepNade(c) => {
                let cfg = deepnade::DeepNadeConfig {
                    eval_orders: Some(k),
                    ..c.clone()
                };
                cfg.validate().map_err(|_| {
                    format!(
                        "--orders {k}: the model has {} ordering(s), so 1..={}",
                        c.orders, c.orders
                    )
                })?;
                Ok(ModelConfig::DeepNade(cfg))
            }
            other => Err(format!(
                "--orders {k}: a {} model is not an ensemble of orderings (only deepnade is)",
                other.kind()
            )),
        }
    }

    /// The orderings density uses (None for models that are not ensembles of orderings).
    pub fn orders_used(&self) -> Option<usize> {
        match self {
            ModelConfig::DeepNade(c) => Some(c.used_orders()),
            _ => None,
        }
    }

    /// The same structure with an ensemble of `k` masks, in random orders when k > 1
    /// (`nade bench --masks`); only MADE has masks, other models take k = 1.
    pub fn with_mask_count(&self, k: usize) -> std::result::Result<Self, String> {
        match self {
            ModelConfig::Made(c) => Ok(ModelConfig::Made(made::MadeConfig {
                masks: k,
                order: if k > 1 {
                    made::OrderChoice::Random
                } else {
                    c.order
                },
                ..c.clone()
            })),
            _ if k == 1 => Ok(self.clone()),
            other => Err(format!(
                "--masks {k}: a {} model has no masks (only made has)",
                other.kind()
            )),
        }
    }

    /// The masks density and sampling use (None for models without masks).
    pub fn masks_used(&self) -> Option<usize> {
        match self {
            ModelConfig::Made(c) => Some(c.used_masks()),
            _ => None,
        }
    }

    /// Metadata keys of the model's own beside `model`, `n`, `hidden` and `config`: what a
    /// reader without the config JSON needs (MADE: `activation`).
    pub fn extra_metadata(&self) -> Vec<(&'static str, String)> {
        match self {
            ModelConfig::Made(c) => vec![("activation", c.activation.to_string())],
            ModelConfig::DeepNade(c) => vec![("activation", c.activation.to_string())],
            _ => Vec::new(),
        }
    }

    /// Fills in, for a file without the config JSON, what its `model`, `n` (and `hidden`)
    /// metadata leave out, from its other metadata and its tensors' shapes.
    pub fn complete_from_file(
        &mut self,
        metadata: &std::collections::BTreeMap<String, String>,
        shapes: &std::collections::BTreeMap<String, Vec<usize>>,
    ) -> std::result::Result<(), String> {
        match self {
            ModelConfig::Made(c) => c.complete_from_file(metadata, shapes),
            ModelConfig::DeepNade(c) => c.complete_from_file(metadata, shapes),
            _ => Ok(()),
        }
    }

    /// The kernel a model computes with, for messages and JSON (None where there is no choice).
    pub fn kernel_name(&self) -> Option<String> {
        match self {
            ModelConfig::Nade(c) => Some(c.kernel.to_string()),
            _ => None,
        }
    }

    /// The same structure with the run-time choices (the kernel) at their defaults: what a
    /// resumed run compares.
    pub fn structure(&self) -> Self {
        match self {
            ModelConfig::Nade(c) => ModelConfig::Nade(nade::NadeConfig {
                kernel: NadeKernel::default(),
                ..c.clone()
            }),
            ModelConfig::Made(c) => ModelConfig::Made(made::MadeConfig {
                eval_masks: None,
                ..c.clone()
            }),
            ModelConfig::DeepNade(c) => ModelConfig::DeepNade(deepnade::DeepNadeConfig {
                eval_orders: None,
                ..c.clone()
            }),
            other => other.clone(),
        }
    }

    /// A short description for messages: `nade (n = 784, hidden = 500)`.
    pub fn describe(&self) -> String {
        if let ModelConfig::Made(c) = self {
            return format!(
                "made (n = {}, hidden = {:?}, masks = {}{})",
                c.n,
                c.hidden,
                c.masks,
                if c.direct { ", direct" } else { "" }
            );
        }
        if let ModelConfig::DeepNade(c) = self {
            let used = match c.eval_orders {
                Some(k) => format!(", {k} of {} orderings", c.orders),
                None => format!(", {} ordering(s)", c.orders),
            };
            return format!(
                "deepnade (n = {}, hidden = {:?}, {}{used})",
                c.n, c.hidden, c.activation
            );
        }
        match self.hidden() {
            Some(h) => format!("{} (n = {}, hidden = {h})", self.kind(), self.n()),
            None => format!("{} (n = {})", self.kind(), self.n()),
        }
    }

    /// The tensors a checkpoint of this model holds, in schema order.
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        match self {
            ModelConfig::Fvsbn(c) => c.param_specs(),
            ModelConfig::Mlp(c) => c.param_specs(),
            ModelConfig::Nade(c) => c.param_specs(),
            ModelConfig::Made(c) => c.param_specs(),
            ModelConfig::DeepNade(c) => c.param_specs(),
        }
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

    /// Floats one batch of `batch` images holds at its peak on `device`, beyond the parameters
    /// themselves (and, in training, their gradients and the optimizer's moments): the
    /// activations the model's kernel materializes, and their gradients in training. An
    /// estimate for the memory check before large allocations (src/memory.rs).
    pub fn working_floats(&self, batch: usize, pass: Pass, device: &Device) -> f64 {
        match self {
            ModelConfig::Fvsbn(c) => c.working_floats(batch, pass),
            ModelConfig::Mlp(c) => c.working_floats(batch, pass),
            ModelConfig::Nade(c) => c.working_floats(batch, pass, device),
            ModelConfig::Made(c) => c.working_floats(batch, pass),
            ModelConfig::DeepNade(c) => c.working_floats(batch, pass),
        }
    }

    /// Builds the model from the tensors in `vb` (a checkpoint or a VarMap).
    pub fn build(&self, vb: VarBuilder) -> Result<Box<dyn Autoregressive>> {
        Ok(match self {
            ModelConfig::Fvsbn(c) => Box::new(fvsbn::Fvsbn::new(c, vb)?),
            ModelConfig::Mlp(c) => Box::new(mlp::Mlp::new(c, vb)?),
            ModelConfig::Nade(c) => Box::new(nade::Nade::new(c, vb)?),
            ModelConfig::Made(c) => Box::new(made::Made::new(c, vb)?),
            ModelConfig::DeepNade(c) => Box::new(deepnade::DeepNade::new(c, vb)?),
        })
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
/// choice: [`ModelConfig::with_masks`]), not trainable.
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
