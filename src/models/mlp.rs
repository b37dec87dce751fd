//! One hidden layer per dimension: h_i = sigmoid(A_i x_<i + c_i), l_i = alpha_i . h_i + b_i.
//! All n hidden layers come out of one masked matmul (B, n) x (n, n*d).

use candle_core::{Result, Tensor};
use candle_nn::{ops::sigmoid, VarBuilder};

use super::{masks, readout, Autoregressive, Init, ModelConfig, ParamSpec};

pub fn param_specs(cfg: &ModelConfig) -> Vec<ParamSpec> {
    let (n, d) = (cfg.n, cfg.hidden);
    vec![
        // A[i, :, j] is used only for j < i.
        ParamSpec::new("A", &[n, d, n], Init::Uniform(1.0 / (n as f32).sqrt())),
        ParamSpec::new("c", &[n, d], Init::Zeros),
        ParamSpec::new("alpha", &[n, d], Init::Uniform(1.0 / (d as f32).sqrt())),
        ParamSpec::new("b", &[n], Init::Zeros),
    ]
}

pub struct Mlp {
    cfg: ModelConfig,
    a: Tensor,
    c: Tensor,
    alpha: Tensor,
    b: Tensor,
    /// (n, 1, n): broadcasts the strictly-lower mask over the d hidden units of each row.
    mask: Tensor,
}

impl Mlp {
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let (n, d) = (cfg.n, cfg.hidden);
        Ok(Self {
            cfg: cfg.clone(),
            a: vb.get((n, d, n), "A")?,
            c: vb.get((n, d), "c")?,
            alpha: vb.get((n, d), "alpha")?,
            b: vb.get(n, "b")?,
            mask: masks::strictly_lower(n, vb.device())?.reshape((n, 1, n))?,
        })
    }
}

impl Autoregressive for Mlp {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let (batch, n) = x.dims2()?;
        let d = self.cfg.hidden;
        let a = self.a.broadcast_mul(&self.mask)?.reshape((n * d, n))?;
        let pre = x.matmul(&a.t()?)?.reshape((batch, n, d))?;
        let h = sigmoid(&pre.broadcast_add(&self.c)?)?;
        readout(&h, &self.alpha)?.broadcast_add(&self.b)
    }

    fn named_tensors(&self) -> Vec<(&'static str, Tensor)> {
        vec![
            ("A", self.a.clone()),
            ("c", self.c.clone()),
            ("alpha", self.alpha.clone()),
            ("b", self.b.clone()),
        ]
    }
}
