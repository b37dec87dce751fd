//! NADE (Larochelle & Murray 2011): a_i = c + W[:, <i] x_<i, h_i = sigmoid(a_i),
//! l_i = V_i . h_i + b_i. One W (d x n) is shared by all n conditionals.
//!
//! The parallel density needs A[b, i, :] = c + sum_{j<i} x[b, j] W[:, j] for every i, an
//! exclusive prefix sum over pixels. Two ways to get it with plain tensor ops:
//! * plain: one (B, n, n) strictly-lower masked copy of x times W^T: 2 B n^2 d flops;
//! * blocked: cut the n positions into blocks of k; a (k x k) masked matmul inside each block
//!   plus an exclusive prefix of block totals ((n/k) x (n/k) masked matmul): about
//!   2 B d (n k + n^2 / k^2) flops, 25-45x fewer at n = 784, and still autograd-friendly;
//! * fused: the O(nd) recurrence itself, forward and backward, as ops with CPU and CUDA
//!   kernels (src/kernels: `nade_logits`, `nade_log_prob`, `nade_sample`).
//!
//! `auto` (the default) picks fused on the CPU and CUDA, blocked elsewhere.

use std::fmt;
use std::str::FromStr;

use candle_core::{Result, Tensor};
use candle_nn::{ops::sigmoid, VarBuilder};
use serde::{Deserialize, Serialize};

use super::sampler::check_step;
use super::{
    bernoulli_log_prob, masks, readout, Autoregressive, Evidence, Kind, ModelConfig, ModelSpec,
    ParamSpec, Pass, SampledBatch, SamplerState,
};
use crate::kernels::transpose::transposed;
use crate::kernels::{nade_log_prob, nade_logits, nade_packed, nade_sample};

/// `[model] kind = "nade"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NadeConfig {
    /// Binary dimensions; 0 in a run file = from the data.
    #[serde(default)]
    pub n: usize,
    /// Hidden units, shared by all conditionals.
    #[serde(default)]
    pub hidden: usize,
    /// How the parallel logits are computed (`path` is its older name).
    #[serde(default, alias = "path")]
    pub kernel: NadeKernel,
}

/// The registry entry of NADE.
pub static KIND: Kind = Kind {
    name: "nade",
    summary: "neural autoregressive density estimator: one weight matrix shared by all dimensions",
    any_order: false,
    bench_layers: &[500],
    with_layers: |n, layers| {
        let hidden = Kind::one_layer("nade", layers)?;
        Ok(ModelConfig::Nade(NadeConfig {
            n,
            hidden,
            kernel: NadeKernel::default(),
        }))
    },
};

impl ModelSpec for NadeConfig {
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
        Ok(Box::new(Nade::new(self, vb)?))
    }

    fn with_kernel(&self, kernel: &str) -> anyhow::Result<ModelConfig> {
        let kernel = kernel
            .parse()
            .map_err(|e| anyhow::anyhow!("--kernel {kernel}: {e}"))?;
        Ok(NadeConfig {
            kernel,
            ..self.clone()
        }
        .into())
    }

    fn kernel_name(&self) -> Option<String> {
        Some(self.kernel.to_string())
    }

    /// The kernel is a choice of how, not of what: the structure has the default.
    fn structure(&self) -> ModelConfig {
        NadeConfig {
            kernel: NadeKernel::default(),
            ..self.clone()
        }
        .into()
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.hidden == 0 {
            return Err(anyhow::anyhow!("model.hidden: a nade model needs hidden >= 1"));
        }
        Ok(())
    }

    fn param_specs(&self) -> Vec<ParamSpec> {
        let (n, d) = (self.n, self.hidden);
        vec![
            ParamSpec::weight("W", &[d, n], 1.0 / (n as f32).sqrt()),
            ParamSpec::bias("c", &[d]),
            ParamSpec::weight("V", &[n, d], 1.0 / (d as f32).sqrt()),
            ParamSpec::output_bias("b", &[n]),
        ]
    }

    /// Floats a batch of `batch` images holds at its peak besides the parameters, with the
    /// kernel `auto` resolves to on `device` ([`ModelSpec::working_floats`]):
    /// - fused: nothing of size (B, n, d); the packed copy [W^T; c; V] and, in training, one
    ///   gradient accumulator of that size per thread, their total and its split onto W, c, V;
    /// - plain: the (B, n, n) masked input and the (B, n, d) pre-activations, hidden layers
    ///   and read-out products (in training all kept for the backward pass, and their gradients);
    /// - blocked:K: the same with a (B, n, K) masked input.
    fn working_floats(&self, batch: usize, pass: Pass, device: &candle_core::Device) -> f64 {
        let (b, n, d) = (batch as f64, self.n as f64, self.hidden as f64);
        let packed = (2.0 * n + 1.0) * d;
        let likelihood = 6.0 * b * n;
        let kernel = match self.kernel {
            NadeKernel::Auto => NadeKernel::auto_for(device),
            other => other,
        };
        let masked = match kernel {
            NadeKernel::Fused | NadeKernel::Auto => {
                let threads = rayon::current_num_threads() as f64;
                return match pass {
                    Pass::Eval => packed + threads * d + likelihood,
                    Pass::Train { .. } => (threads + 3.0) * (packed + n) + 2.0 * likelihood,
                };
            }
            NadeKernel::Plain => b * n * n,
            NadeKernel::Blocked(k) => b * n * k.min(self.n) as f64,
        };
        match pass {
            Pass::Eval => masked + 4.0 * b * n * d + likelihood,
            Pass::Train { .. } => 2.0 * (masked + 5.0 * b * n * d + likelihood),
        }
    }
}

/// How NADE computes A = c + (exclusive prefix of x_j W[:, j]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum NadeKernel {
    /// Fused on the CPU and CUDA, blocked:28 elsewhere (Metal).
    #[default]
    Auto,
    /// (B, n, n) masked matmul: the reference.
    Plain,
    /// Blocks of `k` positions: in-block masked matmul + prefix of block totals.
    Blocked(usize),
    /// The O(nd) recurrence as fused ops with hand-written backward passes (src/kernels).
    Fused,
}

impl TryFrom<String> for NadeKernel {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl From<NadeKernel> for String {
    fn from(k: NadeKernel) -> String {
        k.to_string()
    }
}

/// One MNIST row per block.
pub const DEFAULT_BLOCK: usize = 28;

impl fmt::Display for NadeKernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NadeKernel::Auto => f.write_str("auto"),
            NadeKernel::Plain => f.write_str("plain"),
            NadeKernel::Fused => f.write_str("fused"),
            NadeKernel::Blocked(k) => write!(f, "blocked:{k}"),
        }
    }
}

impl FromStr for NadeKernel {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(NadeKernel::Auto),
            "plain" => Ok(NadeKernel::Plain),
            "fused" => Ok(NadeKernel::Fused),
            "blocked" => Ok(NadeKernel::Blocked(DEFAULT_BLOCK)),
            _ => match s.strip_prefix("blocked:").map(str::parse::<usize>) {
                Some(Ok(k)) if k > 0 => Ok(NadeKernel::Blocked(k)),
                _ => Err(format!(
                    "unknown NADE kernel {s:?} (expected auto, fused, plain, blocked or blocked:K with K > 0)"
                )),
            },
        }
    }
}

pub struct Nade {
    cfg: ModelConfig,
    hidden: usize,
    w: Tensor,
    c: Tensor,
    v: Tensor,
    b: Tensor,
    kernel: KernelState,
    /// [W^T; c; V] of the fused kernel, made once where the parameters are plain tensors (a
    /// checkpoint loaded to evaluate or sample: nothing changes them), so that a call does not
    /// repack them (at batch 1, packing was 9 in 10 of the time of an evaluation). None for
    /// trainable parameters, which an optimizer step changes in place.
    frozen_pack: Option<Tensor>,
}

/// The resolved kernel, with the constant masks it needs, made once.
#[derive(Clone)]
enum KernelState {
    Plain {
        mask: Tensor,
    },
    Blocked {
        k: usize,
        in_block: Tensor,
        across: Tensor,
    },
    Fused,
}

impl Nade {
    pub fn new(cfg: &NadeConfig, vb: VarBuilder) -> Result<Self> {
        let (n, d) = (cfg.n, cfg.hidden);
        let device = vb.device().clone();
        let resolved = match cfg.kernel {
            NadeKernel::Auto => NadeKernel::auto_for(&device),
            other => other,
        };
        let kernel = match resolved {
            NadeKernel::Auto => unreachable!("resolved above"),
            NadeKernel::Fused if !NadeKernel::fused_runs_on(&device) => {
                candle_core::bail!(
                    "the fused NADE kernel runs on the CPU and CUDA only; use blocked on this device"
                )
            }
            NadeKernel::Fused => KernelState::Fused,
            NadeKernel::Plain => KernelState::Plain {
                mask: masks::strictly_lower(n, &device)?,
            },
            NadeKernel::Blocked(k) => {
                let k = k.min(n);
                KernelState::Blocked {
                    k,
                    in_block: masks::strictly_lower(k, &device)?,
                    across: masks::strictly_lower(n.div_ceil(k), &device)?,
                }
            }
        };
        let (w, c, v) = (vb.get((d, n), "W")?, vb.get(d, "c")?, vb.get((n, d), "V")?);
        let frozen_pack = match (&kernel, w.is_variable()) {
            (KernelState::Fused, false) => Some(nade_packed::pack(&w, &c, &v)?),
            _ => None,
        };
        Ok(Self {
            cfg: ModelConfig::Nade(cfg.clone()),
            hidden: d,
            w,
            c,
            v,
            b: vb.get(n, "b")?,
            kernel,
            frozen_pack,
        })
    }

    /// (B, n, d) pre-activations by one masked matmul over all (i, j) pairs.
    fn logits_plain(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (batch, n) = x.dims2()?;
        let d = self.hidden;
        // masked[b, i, j] = x[b, j] for j < i, else 0.
        let masked = x.unsqueeze(1)?.broadcast_mul(&mask.unsqueeze(0)?)?;
        let a = masked.reshape((batch * n, n))?.matmul(&self.w.t()?)?;
        let h = sigmoid(&a.reshape((batch, n, d))?.broadcast_add(&self.c)?)?;
        readout(&h, &self.v)?.broadcast_add(&self.b)
    }

    /// Same logits with blocks of k positions; everything is laid out block-major
    /// (nb, B, k, d) so the per-block weights batch the matmuls without copies of W.
    fn logits_blocked(
        &self,
        x: &Tensor,
        k: usize,
        in_block: &Tensor,
        across: &Tensor,
    ) -> Result<Tensor> {
        let (batch, n) = x.dims2()?;
        let d = self.hidden;
        let blocks = n.div_ceil(k);
        let padded = blocks * k;
        // Zero padding past n adds nothing to any prefix and its logits are cut off below.
        let pad = |t: &Tensor| {
            if padded > n {
                t.pad_with_zeros(0, 0, padded - n)
            } else {
                Ok(t.clone())
            }
        };
        let w_blocks = pad(&self.w.t()?)?.reshape((blocks, k, d))?;
        let v_blocks = pad(&self.v)?.reshape((blocks, 1, k, d))?;
        let x = if padded > n {
            x.pad_with_zeros(1, 0, padded - n)?
        } else {
            x.clone()
        };
        let x_blocks = x
            .reshape((batch, blocks, k))?
            .transpose(0, 1)?
            .contiguous()?; // (nb, B, k)

        // Inside each block: masked[blk, b, i, j] = x[b, blk*k + j] for j < i.
        let masked = x_blocks
            .unsqueeze(2)?
            .broadcast_mul(&in_block.reshape((1, 1, k, k))?)?;
        let within = masked.reshape((blocks, batch * k, k))?.matmul(&w_blocks)?;
        // Across blocks: each block starts from the sum of all earlier blocks' totals.
        let totals = x_blocks.matmul(&w_blocks)?; // (nb, B, d)
        let before = across.matmul(&totals.reshape((blocks, batch * d))?)?;

        let a = within
            .reshape((blocks, batch, k, d))?
            .broadcast_add(&before.reshape((blocks, batch, 1, d))?)?
            .broadcast_add(&self.c)?;
        let l = readout(&sigmoid(&a)?, &v_blocks)?; // (nb, B, k)
        l.transpose(0, 1)?
            .reshape((batch, padded))?
            .narrow(1, 0, n)?
            .broadcast_add(&self.b)
    }
}

impl Nade {
    /// The packed parameters of the fused ops, [W^T; c; V].
    fn packed(&self) -> Result<Tensor> {
        match &self.frozen_pack {
            Some(packed) => Ok(packed.clone()),
            None => nade_packed::pack(&self.w, &self.c, &self.v),
        }
    }

    /// The same model on detached parameters: computing with it builds no autograd graph.
    fn detached(&self) -> Self {
        Nade {
            cfg: self.cfg.clone(),
            hidden: self.hidden,
            w: self.w.detach(),
            c: self.c.detach(),
            v: self.v.detach(),
            b: self.b.detach(),
            kernel: self.kernel.clone(),
            frozen_pack: self.frozen_pack.clone(),
        }
    }
}

impl NadeKernel {
    /// What `auto` means on `device`: the fused ops where they have a kernel, else blocked.
    pub fn auto_for(device: &candle_core::Device) -> Self {
        if Self::fused_runs_on(device) {
            NadeKernel::Fused
        } else {
            NadeKernel::Blocked(DEFAULT_BLOCK)
        }
    }

    /// Whether the fused ops (src/kernels) have a kernel for `device`.
    pub fn fused_runs_on(device: &candle_core::Device) -> bool {
        device.is_cpu() || device.is_cuda()
    }
}

impl Autoregressive for Nade {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        match &self.kernel {
            KernelState::Plain { mask } => self.logits_plain(x, mask),
            KernelState::Blocked {
                k,
                in_block,
                across,
            } => self.logits_blocked(x, *k, in_block, across),
            KernelState::Fused => {
                nade_logits::logits(&x.contiguous()?, &self.packed()?)?.broadcast_add(&self.b)
            }
        }
    }

    fn log_prob(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        match (pass, &self.kernel) {
            // The likelihood and its gradient in one pass.
            (Pass::Train { .. }, KernelState::Fused) => {
                nade_log_prob::log_prob_with_grad(&x.contiguous()?, &self.packed()?, &self.b)
            }
            (Pass::Train { .. }, _) => bernoulli_log_prob(&self.logits(x)?, x),
            // On CUDA one likelihood kernel after the logits instead of a dozen tensor ops.
            // (The CPU keeps logits + likelihood, whose numbers the shipped results record.)
            (Pass::Eval, KernelState::Fused) if x.device().is_cuda() => {
                let model = self.detached();
                nade_log_prob::log_prob(&x.contiguous()?, &model.packed()?, &model.b)
            }
            (Pass::Eval, _) => {
                let model = self.detached();
                bernoulli_log_prob(&model.logits(x)?, x)
            }
        }
    }

    fn named_tensors(&self) -> Vec<(String, Tensor)> {
        vec![
            ("W".into(), self.w.clone()),
            ("c".into(), self.c.clone()),
            ("V".into(), self.v.clone()),
            ("b".into(), self.b.clone()),
        ]
    }

    fn sample_batch(&self, evidence: &Evidence) -> Result<SampledBatch> {
        if !matches!(self.kernel, KernelState::Fused) {
            return super::sampler::sample_sequentially(self, evidence);
        }
        let natural: Vec<usize> = (0..self.b.dim(0)?).collect();
        evidence.check_fixed_order(&natural, "nade")?;
        let (values, probs) = nade_sample::sample(
            &self.packed()?,
            &self.b,
            evidence.kept,
            evidence.observed,
            evidence.uniforms,
        )?;
        Ok(SampledBatch { values, probs })
    }

    fn sampler(&self, batch: usize) -> Result<Box<dyn SamplerState + '_>> {
        let d = self.hidden;
        let a = self
            .c
            .detach()
            .reshape((1, d))?
            .broadcast_as((batch, d))?
            .contiguous()?;
        Ok(Box::new(NadeSampler {
            w_t: transposed(&self.w.detach())?,
            v: self.v.detach(),
            b: self.b.detach(),
            a,
            i: 0,
        }))
    }
}

/// The O(d)-per-pixel recurrence: a = c + sum_{j<i} W[:, j] x_j is kept for the batch and
/// grows by W[:, i] x_i after each step (Larochelle & Murray 2011).
struct NadeSampler {
    /// W^T, (n, d) contiguous: row i is the column W[:, i] added after x_i.
    w_t: Tensor,
    v: Tensor,
    b: Tensor,
    /// (B, d) pre-activations of the current position.
    a: Tensor,
    i: usize,
}

impl SamplerState for NadeSampler {
    fn position(&self) -> usize {
        self.i
    }

    fn logits(&mut self) -> Result<Tensor> {
        check_step(self.i, 1, self.b.dim(0)?)?;
        let h = sigmoid(&self.a)?; // (B, d)
        let v_i = self.v.narrow(0, self.i, 1)?; // (1, d)
        h.matmul(&v_i.t()?)?
            .broadcast_add(&self.b.narrow(0, self.i, 1)?)
    }

    fn observe(&mut self, x_i: &Tensor) -> Result<()> {
        check_step(self.i, 1, self.b.dim(0)?)?;
        let w_i = self.w_t.narrow(0, self.i, 1)?; // (1, d)
        self.a = (&self.a + x_i.broadcast_mul(&w_i)?)?;
        self.i += 1;
        Ok(())
    }

    fn observe_many(&mut self, xs: &Tensor) -> Result<()> {
        let k = xs.dim(1)?;
        check_step(self.i, k, self.b.dim(0)?)?;
        if k > 0 {
            let w = self.w_t.narrow(0, self.i, k)?; // (k, d)
            self.a = (&self.a + xs.contiguous()?.matmul(&w)?)?;
            self.i += k;
        }
        Ok(())
    }
}
