//! One hidden layer per dimension: h_i = sigmoid(A_i x_<i + c_i), l_i = alpha_i . h_i + b_i.
//! All n hidden layers come out of one masked matmul (B, n) x (n, n*d).

use candle_core::{Result, Tensor};
use candle_nn::{ops::sigmoid, VarBuilder};

use super::{check_step, masks, readout, Autoregressive, ModelConfig, ParamSpec, SamplerState};

pub fn param_specs(cfg: &ModelConfig) -> Vec<ParamSpec> {
    let (n, d) = (cfg.n, cfg.hidden);
    vec![
        // A[i, :, j] is used only for j < i.
        ParamSpec::weight("A", &[n, d, n], 1.0 / (n as f32).sqrt()),
        ParamSpec::bias("c", &[n, d]),
        ParamSpec::weight("alpha", &[n, d], 1.0 / (d as f32).sqrt()),
        ParamSpec::bias("b", &[n]),
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

    fn sampler(&self, batch: usize) -> Result<Box<dyn SamplerState + '_>> {
        Ok(Box::new(MlpSampler {
            a: self.a.detach(),
            c: self.c.detach(),
            alpha: self.alpha.detach(),
            b: self.b.detach(),
            batch,
            prefix: None,
        }))
    }
}

/// Step i computes h_i = sigmoid(A[i, :, :i] x_<i + c_i) from the values fed so far: the
/// hidden layers share nothing, so there is no running sum to keep (O(i d) per step).
struct MlpSampler {
    a: Tensor,
    c: Tensor,
    alpha: Tensor,
    b: Tensor,
    batch: usize,
    /// (B, i): x_<i; None at position 0.
    prefix: Option<Tensor>,
}

impl MlpSampler {
    fn n(&self) -> Result<usize> {
        self.b.dim(0)
    }
}

impl SamplerState for MlpSampler {
    fn position(&self) -> usize {
        self.prefix.as_ref().map_or(0, |p| p.dims()[1])
    }

    fn logits(&mut self) -> Result<Tensor> {
        let i = self.position();
        check_step(i, 1, self.n()?)?;
        let c_i = self.c.narrow(0, i, 1)?; // (1, d)
        let pre = match &self.prefix {
            None => c_i.broadcast_as((self.batch, c_i.dim(1)?))?.contiguous()?,
            Some(prefix) => {
                // A[i, :, :i] is the unmasked part of row i: (d, i), copied contiguous so
                // its transpose is a plain matmul operand on every backend.
                let a_i = self.a.get(i)?.narrow(1, 0, i)?.contiguous()?;
                prefix.matmul(&a_i.t()?)?.broadcast_add(&c_i)?
            }
        };
        let alpha_i = self.alpha.narrow(0, i, 1)?; // (1, d)
        sigmoid(&pre)?
            .matmul(&alpha_i.t()?)?
            .broadcast_add(&self.b.narrow(0, i, 1)?)
    }

    fn observe(&mut self, x_i: &Tensor) -> Result<()> {
        self.observe_many(x_i)
    }

    fn observe_many(&mut self, xs: &Tensor) -> Result<()> {
        let k = xs.dim(1)?;
        check_step(self.position(), k, self.n()?)?;
        if xs.dim(0)? != self.batch {
            candle_core::bail!(
                "sampler: fed {} rows to a sampler of batch {}",
                xs.dim(0)?,
                self.batch
            );
        }
        if k == 0 {
            return Ok(());
        }
        self.prefix = Some(match &self.prefix {
            None => xs.contiguous()?,
            Some(prefix) => Tensor::cat(&[prefix, xs], 1)?,
        });
        Ok(())
    }
}
