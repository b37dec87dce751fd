//! One hidden layer per dimension: h_i = sigmoid(A_i x_<i + c_i), l_i = alpha_i . h_i + b_i.
//! All n hidden layers come out of one masked matmul (B, n) x (n, n*d).

use candle_core::{Result, Tensor};
use candle_nn::{ops::sigmoid, VarBuilder};
use serde::{Deserialize, Serialize};

use super::sampler::{check_step, sample_sequentially};
use super::{
    masks, readout, Autoregressive, Evidence, Kind, ModelConfig, ModelSpec, ParamSpec, Pass,
    SampledBatch, SamplerState,
};
use crate::kernels::samplers::mlp_sample;

/// `[model] kind = "mlp"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    /// Binary dimensions; 0 in a run file = from the data.
    #[serde(default)]
    pub n: usize,
    /// Hidden units of each dimension's own layer.
    #[serde(default)]
    pub hidden: usize,
}

/// The registry entry of the per-pixel MLP.
pub static KIND: Kind = Kind {
    name: "mlp",
    summary: "one hidden layer of its own per dimension",
    any_order: false,
    bench_layers: &[500],
    with_layers: |n, layers| {
        let hidden = Kind::one_layer("mlp", layers)?;
        Ok(ModelConfig::Mlp(MlpConfig { n, hidden }))
    },
};

impl ModelSpec for MlpConfig {
    fn n(&self) -> usize {
        self.n
    }

    fn set_n(&mut self, n: usize) {
        self.n = n;
    }

    fn layers(&self) -> Vec<usize> {
        vec![self.hidden]
    }

    fn hidden(&self) -> Option<usize> {
        Some(self.hidden)
    }

    fn build(&self, vb: VarBuilder) -> Result<Box<dyn Autoregressive>> {
        Ok(Box::new(Mlp::new(self, vb)?))
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.hidden == 0 {
            return Err(anyhow::anyhow!("model.hidden: a mlp model needs hidden >= 1"));
        }
        Ok(())
    }

    fn param_specs(&self) -> Vec<ParamSpec> {
        let (n, d) = (self.n, self.hidden);
        vec![
            // A[i, :, j] is used only for j < i.
            ParamSpec::weight("A", &[n, d, n], 1.0 / (n as f32).sqrt()).strictly_lower(),
            ParamSpec::bias("c", &[n, d]),
            ParamSpec::weight("alpha", &[n, d], 1.0 / (d as f32).sqrt()),
            ParamSpec::output_bias("b", &[n]),
        ]
    }

    /// Floats a batch of `batch` images holds at its peak besides the parameters: the masked
    /// copy of A (n d n: the model's size, whatever the batch), the (B, n, d) pre-activations,
    /// hidden layers and read-out products, and in training their gradients and that of the
    /// masked copy ([`ModelSpec::working_floats`]).
    fn working_floats(&self, batch: usize, pass: Pass, _device: &candle_core::Device) -> f64 {
        let (b, n, d) = (batch as f64, self.n as f64, self.hidden as f64);
        match pass {
            Pass::Eval => n * d * n + 3.0 * b * n * d + 6.0 * b * n,
            Pass::Train { .. } => 2.0 * n * d * n + 8.0 * b * n * d + 12.0 * b * n,
        }
    }
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
    pub fn new(cfg: &MlpConfig, vb: VarBuilder) -> Result<Self> {
        let (n, d) = (cfg.n, cfg.hidden);
        Ok(Self {
            cfg: ModelConfig::Mlp(cfg.clone()),
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
        let d = self.alpha.dim(1)?;
        let a = self.a.broadcast_mul(&self.mask)?.reshape((n * d, n))?;
        let pre = x.matmul(&a.t()?)?.reshape((batch, n, d))?;
        let h = sigmoid(&pre.broadcast_add(&self.c)?)?;
        readout(&h, &self.alpha)?.broadcast_add(&self.b)
    }

    fn named_tensors(&self) -> Vec<(String, Tensor)> {
        vec![
            ("A".into(), self.a.clone()),
            ("c".into(), self.c.clone()),
            ("alpha".into(), self.alpha.clone()),
            ("b".into(), self.b.clone()),
        ]
    }

    fn sample_batch(&self, evidence: &Evidence) -> Result<SampledBatch> {
        let natural: Vec<usize> = (0..self.cfg.n()).collect();
        evidence.check_fixed_order(&natural, "mlp")?;
        let [a, c, alpha, b] = [&self.a, &self.c, &self.alpha, &self.b].map(Tensor::detach);
        match mlp_sample(&a, &c, &alpha, &b, evidence.tensors())? {
            Some([values, probs]) => Ok(SampledBatch { values, probs }),
            None => sample_sequentially(self, evidence),
        }
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
                prefix
                    .matmul(&a_i.t()?.contiguous()?)?
                    .broadcast_add(&c_i)?
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
            Some(prefix) => Tensor::cat(&[prefix, xs], 1)?.contiguous()?,
        });
        Ok(())
    }
}
