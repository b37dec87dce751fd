//! The parameter schema of a model (names, shapes, roles, initialisation), seeded
//! initialisation, and models whose parameters are trainable Vars.

use std::collections::HashMap;

use candle_core::{Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{Autoregressive, ModelConfig, DTYPE};

/// What a tensor of the schema is to training.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamRole {
    /// Trained; the L1 / L2 penalties apply.
    Weight,
    /// Trained, left alone by the penalties.
    Bias,
    /// The bias of the output logits: a [`ParamRole::Bias`] that training may start at the
    /// logits of the data's pixel means.
    OutputBias,
    /// Not trained: an integer tensor the model is defined by (an ordering, mask degrees),
    /// stored as I64.
    Buffer,
}

/// How a parameter starts before training.
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    Zeros,
    /// Uniform on [-a, a].
    Uniform(f32),
    /// Fixed integer values (a buffer drawn from the config's seed).
    Values(Vec<i64>),
}

/// One named tensor of the checkpoint schema.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
    pub role: ParamRole,
    /// Entries the model reads: all of them, or fewer where only a part of the tensor enters
    /// the model ([`ParamSpec::strictly_lower`]). The README's results table counts these.
    pub used: usize,
}

impl ParamSpec {
    /// A weight, started uniform on [-a, a].
    pub fn weight(name: impl Into<String>, shape: &[usize], a: f32) -> Self {
        Self::new(name, shape, Init::Uniform(a), ParamRole::Weight)
    }

    /// A bias, started at zero.
    pub fn bias(name: impl Into<String>, shape: &[usize]) -> Self {
        Self::new(name, shape, Init::Zeros, ParamRole::Bias)
    }

    /// The output bias, started at zero (or at the data's logits, as training chooses).
    pub fn output_bias(name: impl Into<String>, shape: &[usize]) -> Self {
        Self::new(name, shape, Init::Zeros, ParamRole::OutputBias)
    }

    /// An integer buffer with fixed values.
    pub fn buffer(name: impl Into<String>, shape: &[usize], values: Vec<i64>) -> Self {
        Self::new(name, shape, Init::Values(values), ParamRole::Buffer)
    }

    fn new(name: impl Into<String>, shape: &[usize], init: Init, role: ParamRole) -> Self {
        Self {
            name: name.into(),
            shape: shape.to_vec(),
            init,
            role,
            used: shape.iter().product(),
        }
    }

    /// The same tensor of shape [n, ..., n] of which the model reads only the entries
    /// [i, ..., j] with j < i (the strict lower triangle, for every index in between): stored
    /// whole for a simple schema, n (n - 1) / 2 times the middle dimensions used.
    pub fn strictly_lower(mut self) -> Self {
        let (first, last) = (self.shape[0], self.shape[self.shape.len() - 1]);
        debug_assert_eq!(first, last, "{}: not square in its outer axes", self.name);
        let middle: usize = self.shape[1..self.shape.len() - 1].iter().product();
        self.used = first * first.saturating_sub(1) / 2 * middle;
        self
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_trained(&self) -> bool {
        self.role != ParamRole::Buffer
    }

    /// Whether the L1 / L2 penalties apply.
    pub fn is_penalized(&self) -> bool {
        self.role == ParamRole::Weight
    }
}

/// Fresh parameters drawn from a seeded ChaCha8 stream, so a seed always gives the same
/// model (candle's own CPU RNG cannot be seeded). Buffers come out as I64 tensors.
pub fn init_params(cfg: &ModelConfig, seed: u64, device: &Device) -> Result<Vec<(String, Tensor)>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    cfg.param_specs()
        .into_iter()
        .map(|spec| {
            let len = spec.len();
            let tensor = match &spec.init {
                Init::Zeros => Tensor::zeros(spec.shape.clone(), DTYPE, device)?,
                &Init::Uniform(a) => {
                    let values: Vec<f32> = (0..len).map(|_| rng.random_range(-a..=a)).collect();
                    Tensor::from_vec(values, spec.shape.clone(), device)?
                }
                Init::Values(values) => {
                    Tensor::from_vec(values.clone(), spec.shape.clone(), device)?
                }
            };
            Ok((spec.name, tensor))
        })
        .collect()
}

/// Sets the output bias (the [`ParamRole::OutputBias`] parameters) to `logits`, one per pixel:
/// `nade train` (`init_bias_from_data`) and `nade bench`'s model start at the data's
/// smoothed logits (`BinaryDataset::smoothed_logits` in src/data).
pub fn set_output_bias(
    cfg: &ModelConfig,
    params: &mut [(String, Tensor)],
    logits: &[f32],
    device: &Device,
) -> Result<()> {
    let n = logits.len();
    for spec in cfg.param_specs() {
        if spec.role != ParamRole::OutputBias {
            continue;
        }
        if spec.shape != [n] {
            candle_core::bail!(
                "the output bias `{}` has shape {:?}, not ({n}) as the data",
                spec.name,
                spec.shape
            );
        }
        let slot = params
            .iter_mut()
            .find(|(name, _)| *name == spec.name)
            .ok_or_else(|| candle_core::Error::Msg(format!("model has no `{}`", spec.name)))?;
        slot.1 = Tensor::from_slice(logits, n, device)?;
    }
    Ok(())
}

/// A model whose trained parameters are Vars, and those Vars with their specs.
pub struct Trainable {
    pub model: Box<dyn Autoregressive>,
    /// The trained parameters (buffers excluded), in schema order.
    pub vars: Vec<(ParamSpec, Var)>,
    pub varmap: VarMap,
}

impl Trainable {
    /// Builds the model on Vars holding `params` (named as the schema names them).
    pub fn new(cfg: &ModelConfig, params: Vec<(String, Tensor)>, device: &Device) -> Result<Self> {
        let mut params: HashMap<String, Tensor> = params.into_iter().collect();
        let varmap = VarMap::new();
        let mut vars = Vec::new();
        {
            let mut data = varmap
                .data()
                .lock()
                .map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
            for spec in cfg.param_specs() {
                let tensor = params.remove(&spec.name).ok_or_else(|| {
                    candle_core::Error::Msg(format!(
                        "no tensor `{}` for the {} model",
                        spec.name,
                        cfg.kind()
                    ))
                })?;
                let var = Var::from_tensor(&tensor)?;
                data.insert(spec.name.clone(), var.clone());
                if spec.is_trained() {
                    vars.push((spec, var));
                }
            }
        }
        let model = cfg.build(VarBuilder::from_varmap(&varmap, DTYPE, device))?;
        Ok(Self {
            model,
            vars,
            varmap,
        })
    }

    /// The trained Vars under their names (what the optimizer takes).
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        self.vars
            .iter()
            .map(|(s, v)| (s.name.clone(), v.clone()))
            .collect()
    }

    /// Names of the trained parameters the L1 / L2 penalties leave alone.
    pub fn unpenalized(&self) -> Vec<String> {
        self.vars
            .iter()
            .filter(|(s, _)| !s.is_penalized())
            .map(|(s, _)| s.name.clone())
            .collect()
    }
}
