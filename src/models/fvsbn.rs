//! FVSBN: l_i = b_i + sum_{j<i} W[i, j] x_j, a logistic regression per dimension.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::{masks, Autoregressive, Init, ModelConfig, ParamSpec};

pub fn param_specs(cfg: &ModelConfig) -> Vec<ParamSpec> {
    let n = cfg.n;
    vec![
        // Only the strict lower triangle is used; the rest stays in the file for a simple schema.
        ParamSpec::new("W", &[n, n], Init::Uniform(1.0 / (n as f32).sqrt())),
        ParamSpec::new("b", &[n], Init::Zeros),
    ]
}

pub struct Fvsbn {
    cfg: ModelConfig,
    w: Tensor,
    b: Tensor,
    mask: Tensor,
}

impl Fvsbn {
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let n = cfg.n;
        Ok(Self {
            cfg: cfg.clone(),
            w: vb.get((n, n), "W")?,
            b: vb.get(n, "b")?,
            mask: masks::strictly_lower(n, vb.device())?,
        })
    }
}

impl Autoregressive for Fvsbn {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let w = (&self.w * &self.mask)?;
        x.matmul(&w.t()?)?.broadcast_add(&self.b)
    }

    fn named_tensors(&self) -> Vec<(&'static str, Tensor)> {
        vec![("W", self.w.clone()), ("b", self.b.clone())]
    }
}
