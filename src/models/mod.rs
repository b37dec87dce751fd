//! The autoregressive models and what they share: the trait, the parameter schema, the
//! numerically stable Bernoulli log-likelihood and seeded initialisation.

pub mod fvsbn;
mod masks;
pub mod mlp;
pub mod nade;
pub mod nade_fused;
pub mod nade_fused_loss;

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::VarBuilder;
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use nade::NadePath;

/// Which family of conditionals p(x_i | x_<i) a model uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Fully visible sigmoid belief net: logistic regression per dimension.
    Fvsbn,
    /// One hidden layer of its own per dimension.
    Mlp,
    /// Neural autoregressive density estimator: one weight matrix shared by all dimensions.
    Nade,
}

impl ModelKind {
    pub const ALL: [ModelKind; 3] = [ModelKind::Fvsbn, ModelKind::Mlp, ModelKind::Nade];

    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Fvsbn => "fvsbn",
            ModelKind::Mlp => "mlp",
            ModelKind::Nade => "nade",
        }
    }

    /// FVSBN has no hidden layer; the others need a hidden size.
    pub fn has_hidden(self) -> bool {
        self != ModelKind::Fvsbn
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ModelKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        ModelKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown model kind {s:?} (expected fvsbn, mlp or nade)"))
    }
}

/// Everything needed to rebuild a model's structure (the weights come from elsewhere).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub kind: ModelKind,
    /// Number of binary dimensions (784 for MNIST).
    pub n: usize,
    /// Hidden units (per dimension for MLP, shared for NADE); 0 for FVSBN.
    pub hidden: usize,
    /// How NADE computes its parallel logits; ignored by the other models.
    pub nade_path: NadePath,
}

impl ModelConfig {
    pub fn new(kind: ModelKind, n: usize, hidden: usize) -> Self {
        let hidden = if kind.has_hidden() { hidden } else { 0 };
        Self {
            kind,
            n,
            hidden,
            nade_path: NadePath::default(),
        }
    }

    /// The tensors a checkpoint of this model holds, in schema order.
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        match self.kind {
            ModelKind::Fvsbn => fvsbn::param_specs(self),
            ModelKind::Mlp => mlp::param_specs(self),
            ModelKind::Nade => nade::param_specs(self),
        }
    }

    pub fn num_params(&self) -> usize {
        self.param_specs()
            .iter()
            .map(|p| p.shape.iter().product::<usize>())
            .sum()
    }
}

/// How a parameter starts before training.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    Zeros,
    /// Uniform on [-a, a].
    Uniform(f32),
}

/// One named tensor of the checkpoint schema.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: &'static str,
    pub shape: Vec<usize>,
    pub init: Init,
    /// Biases start at zero and are left alone by the L1 / L2 penalties.
    pub is_bias: bool,
}

impl ParamSpec {
    /// A weight, started uniform on [-a, a].
    pub fn weight(name: &'static str, shape: &[usize], a: f32) -> Self {
        Self {
            name,
            shape: shape.to_vec(),
            init: Init::Uniform(a),
            is_bias: false,
        }
    }

    /// A bias, started at zero.
    pub fn bias(name: &'static str, shape: &[usize]) -> Self {
        Self {
            name,
            shape: shape.to_vec(),
            init: Init::Zeros,
            is_bias: true,
        }
    }
}

/// A model of p(x) = prod_i p(x_i | x_<i) over x in {0,1}^n.
pub trait Autoregressive: Send + Sync {
    fn config(&self) -> &ModelConfig;

    /// logits[b, i] = logit of p(x_i = 1 | x_<i) for every i at once; x is (B, n) f32 in {0,1}.
    fn logits(&self, x: &Tensor) -> Result<Tensor>;

    /// The parameters under their checkpoint names, in schema order.
    fn named_tensors(&self) -> Vec<(&'static str, Tensor)>;

    /// A fresh sequential sampling state for `batch` vectors at position 0 (nothing fed yet),
    /// on the model's device. Each step costs one conditional, not a whole `logits(x)`.
    fn sampler(&self, batch: usize) -> Result<Box<dyn SamplerState + '_>>;

    /// Samples a whole batch in one fused host pass, for a model that has one on its device
    /// (NADE on the CPU); `None` means: use [`Autoregressive::sampler`]. `kept` holds the first
    /// `k` values of each of the B rows (B * k, row-major), `uniforms` B * n draws on [0, 1);
    /// x_i = 1 exactly when u_i < p(x_i = 1 | x_<i). Returns the sampled values of dimensions
    /// k..n and their Bernoulli means, each B * (n - k) row-major.
    fn sample_fused(
        &self,
        _kept: &[u8],
        _k: usize,
        _uniforms: &[f32],
    ) -> Option<Result<FusedSamples>> {
        None
    }

    /// log p(x) per row, (B,).
    fn log_prob(&self, x: &Tensor) -> Result<Tensor> {
        bernoulli_log_prob(&self.logits(x)?, x)
    }

    /// log p(x) for evaluation: no gradient will be asked for, so a model may skip the work
    /// it does for one (NADE's fused pass computes the gradient along with log p when its
    /// parameters are being trained).
    fn log_prob_inference(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.log_prob(x)?.detach())
    }
}

/// What [`Autoregressive::sample_fused`] returns: sampled values and their Bernoulli means.
pub struct FusedSamples {
    pub values: Vec<u8>,
    pub probs: Vec<f32>,
}

/// Sequential sampling (or completion) of a batch of B vectors, one dimension at a time.
///
/// The state sits at a position i, starting at 0: [`SamplerState::logits`] gives the logits of
/// p(x_i = 1 | x_<i) for the x_<i fed so far, [`SamplerState::observe`] feeds the chosen x_i
/// and moves to i + 1. Every tensor lives on the model's device; parameters are detached, so
/// sampling from a model under training builds no autograd graph.
pub trait SamplerState {
    /// The dimension the next `logits` call is about; n once every dimension has been fed.
    fn position(&self) -> usize;

    /// Logits of p(x_i = 1 | x_<i) at the current position i, shape (B, 1).
    fn logits(&mut self) -> Result<Tensor>;

    /// Feeds x_i, (B, 1) f32 in {0, 1}, and moves to i + 1.
    fn observe(&mut self, x_i: &Tensor) -> Result<()>;

    /// Feeds the next k values at once, (B, k): the kept pixels of a completion. The default
    /// feeds them one column at a time; models override it with one matmul.
    fn observe_many(&mut self, xs: &Tensor) -> Result<()> {
        for j in 0..xs.dim(1)? {
            self.observe(&xs.narrow(1, j, 1)?)?;
        }
        Ok(())
    }
}

/// The error of a sampler asked for a step past the last dimension (or fed too many values).
pub(crate) fn check_step(position: usize, k: usize, n: usize) -> Result<()> {
    if position + k > n {
        candle_core::bail!(
            "sampler: cannot feed {k} value(s) at position {position} of a model with n = {n}"
        );
    }
    Ok(())
}

/// Builds the model described by `cfg` from the tensors in `vb` (a checkpoint or a VarMap).
pub fn build(cfg: &ModelConfig, vb: VarBuilder) -> Result<Box<dyn Autoregressive>> {
    Ok(match cfg.kind {
        ModelKind::Fvsbn => Box::new(fvsbn::Fvsbn::new(cfg, vb)?),
        ModelKind::Mlp => Box::new(mlp::Mlp::new(cfg, vb)?),
        ModelKind::Nade => Box::new(nade::Nade::new(cfg, vb)?),
    })
}

/// Fresh parameters drawn from a seeded ChaCha8 stream, so a seed always gives the same
/// model (candle's own CPU RNG cannot be seeded).
pub fn init_params(cfg: &ModelConfig, seed: u64, device: &Device) -> Result<Vec<(String, Tensor)>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    cfg.param_specs()
        .into_iter()
        .map(|spec| {
            let len = spec.shape.iter().product::<usize>();
            let values: Vec<f32> = match spec.init {
                Init::Zeros => vec![0.0; len],
                Init::Uniform(a) => (0..len).map(|_| rng.random_range(-a..=a)).collect(),
            };
            Ok((
                spec.name.to_string(),
                Tensor::from_vec(values, spec.shape, device)?,
            ))
        })
        .collect()
}

/// softplus(l) = ln(1 + e^l) in the form max(l, 0) + ln(1 + e^-|l|), finite for any finite l.
pub fn softplus(l: &Tensor) -> Result<Tensor> {
    let tail = (l.abs()?.neg()?.exp()? + 1.0)?.log()?;
    l.relu()? + tail
}

/// log p(x) = sum_i [x_i l_i - softplus(l_i)] per row: the Bernoulli log-likelihood written
/// so that it stays finite for |l| up to f32's range (candle's BCE takes log(sigmoid) naively).
pub fn bernoulli_log_prob(logits: &Tensor, x: &Tensor) -> Result<Tensor> {
    let x = x.to_dtype(logits.dtype())?;
    ((x * logits)? - softplus(logits)?)?.sum(D::Minus1)
}

/// Mean negative log-likelihood of a batch in nats: the training loss.
pub fn mean_nll(model: &dyn Autoregressive, x: &Tensor) -> Result<Tensor> {
    model.log_prob(x)?.mean_all()?.neg()
}

/// `h . v` along the last axis: the read-out of a hidden layer, l_i = v_i . h_i.
pub(crate) fn readout(h: &Tensor, v: &Tensor) -> Result<Tensor> {
    h.broadcast_mul(v)?.sum(D::Minus1)
}

/// The dtype every model computes in.
pub const DTYPE: DType = DType::F32;
