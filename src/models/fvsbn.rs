//! FVSBN: l_i = b_i + sum_{j<i} W[i, j] x_j, a logistic regression per dimension.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::sampler::{check_step, sample_sequentially};
use super::{
    masks, Autoregressive, Evidence, Kind, ModelConfig, ModelSpec, ParamSpec, Pass, SampledBatch,
    SamplerState,
};
use crate::kernels::bias_add::bias_add;
use crate::kernels::samplers::fvsbn_sample;

/// `[model] kind = "fvsbn"`: no hyperparameters but the dimension.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FvsbnConfig {
    /// Binary dimensions; 0 in a run file = from the data.
    #[serde(default)]
    pub n: usize,
}

/// The registry entry of FVSBN.
pub static KIND: Kind = Kind {
    name: "fvsbn",
    summary: "fully visible sigmoid belief net: a logistic regression per dimension",
    any_order: false,
    bench_layers: &[],
    // No hidden layer: sizes given (bench's --hidden, a file's `hidden` metadata) are ignored.
    with_layers: |n, _| Ok(ModelConfig::Fvsbn(FvsbnConfig { n })),
};

impl ModelSpec for FvsbnConfig {
    fn n(&self) -> usize {
        self.n
    }

    fn set_n(&mut self, n: usize) {
        self.n = n;
    }

    fn layers(&self) -> Vec<usize> {
        Vec::new()
    }

    fn build(&self, vb: VarBuilder) -> Result<Box<dyn Autoregressive>> {
        Ok(Box::new(Fvsbn::new(self, vb)?))
    }

    fn param_specs(&self) -> Vec<ParamSpec> {
        let n = self.n;
        vec![
            // Only the strict lower triangle is used; the rest stays in the file for a simple schema.
            ParamSpec::weight("W", &[n, n], 1.0 / (n as f32).sqrt()).strictly_lower(),
            ParamSpec::output_bias("b", &[n]),
        ]
    }

    /// Floats a batch of `batch` images holds at its peak besides the parameters: the masked
    /// copy of W and, in training, its gradient and the one through the transpose; the logits
    /// and the likelihood's (B, n) temporaries ([`ModelSpec::working_floats`]).
    fn working_floats(&self, batch: usize, pass: Pass, _device: &candle_core::Device) -> f64 {
        let (b, n) = (batch as f64, self.n as f64);
        match pass {
            Pass::Eval => n * n + 6.0 * b * n,
            Pass::Train { .. } => 3.0 * n * n + 12.0 * b * n,
        }
    }
}

pub struct Fvsbn {
    cfg: ModelConfig,
    w: Tensor,
    b: Tensor,
    mask: Tensor,
}

impl Fvsbn {
    pub fn new(cfg: &FvsbnConfig, vb: VarBuilder) -> Result<Self> {
        let n = cfg.n;
        Ok(Self {
            cfg: ModelConfig::Fvsbn(cfg.clone()),
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
        bias_add(&x.matmul(&w.t()?)?, &self.b)
    }

    fn named_tensors(&self) -> Vec<(String, Tensor)> {
        vec![("W".into(), self.w.clone()), ("b".into(), self.b.clone())]
    }

    fn sample_batch(&self, evidence: &Evidence) -> Result<SampledBatch> {
        let natural: Vec<usize> = (0..self.cfg.n()).collect();
        evidence.check_fixed_order(&natural, "fvsbn")?;
        let w_masked_t = (self.w.detach() * &self.mask)?.t()?.contiguous()?;
        match fvsbn_sample(&w_masked_t, &self.b.detach(), evidence.tensors())? {
            Some([values, probs]) => Ok(SampledBatch { values, probs }),
            None => sample_sequentially(self, evidence),
        }
    }

    fn sampler(&self, batch: usize) -> Result<Box<dyn SamplerState + '_>> {
        let n = self.cfg.n();
        let pre = self
            .b
            .detach()
            .reshape((1, n))?
            .broadcast_as((batch, n))?
            .contiguous()?;
        Ok(Box::new(FvsbnSampler {
            w_masked_t: (self.w.detach() * &self.mask)?.t()?.contiguous()?,
            pre,
            i: 0,
        }))
    }
}

/// Running pre-activations of every dimension, pre = b + sum_{j<i} x_j (masked W)[:, j];
/// column i is read at step i, and x_i adds the masked column i (W[k, i] for k > i only).
/// Columns k <= i are never read again, so the mask does not change any sampled value; it
/// keeps pre[:, k] equal to logit k of the values fed so far (pre = logits(x) after n steps).
struct FvsbnSampler {
    /// (W * mask)^T, (n, n) contiguous: row i is the masked column i.
    w_masked_t: Tensor,
    /// (B, n).
    pre: Tensor,
    i: usize,
}

impl SamplerState for FvsbnSampler {
    fn position(&self) -> usize {
        self.i
    }

    fn logits(&mut self) -> Result<Tensor> {
        check_step(self.i, 1, self.pre.dim(1)?)?;
        self.pre.narrow(1, self.i, 1)?.contiguous()
    }

    fn observe(&mut self, x_i: &Tensor) -> Result<()> {
        check_step(self.i, 1, self.pre.dim(1)?)?;
        let w_i = self.w_masked_t.narrow(0, self.i, 1)?; // (1, n)
        self.pre = (&self.pre + x_i.broadcast_mul(&w_i)?)?;
        self.i += 1;
        Ok(())
    }

    fn observe_many(&mut self, xs: &Tensor) -> Result<()> {
        let k = xs.dim(1)?;
        check_step(self.i, k, self.pre.dim(1)?)?;
        if k > 0 {
            let w = self.w_masked_t.narrow(0, self.i, k)?; // (k, n)
            self.pre = (&self.pre + xs.contiguous()?.matmul(&w)?)?;
            self.i += k;
        }
        Ok(())
    }
}
