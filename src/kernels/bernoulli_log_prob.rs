//! The Bernoulli log-likelihood of a batch, sum_i w_i [x_i l_i - softplus(l_i)] per row, and
//! its gradient in one CPU pass (`BernoulliLogProb`): the loss of every model whose logits
//! come from candle's graph (FVSBN, the MLP, MADE, deep NADE with the weights of its
//! order-agnostic estimate). Written with candle's element-wise ops it is ten passes over the
//! (B, n) logits forward (two of them libm's scalar exp and log) and as many backward, ~15% of
//! a MADE-500 training step; here it is one vectorized pass that also stores the gradient
//! d/dl_i = w_i (x_i - sigmoid(l_i)), which the backward scales by the upstream gradient.
//!
//! The terms are summed in f64 per row (eight lanes), as the fused NADE kernels do; softplus
//! and sigmoid come from `simd::softplus_sigmoid` (a few ulp). On CUDA the same pass is one
//! launch (cuda/bernoulli.cu: a block per row, the sum in f64 in a fixed order) instead of
//! some twenty element-wise launches forward and backward. Elsewhere (Metal) the caller
//! (`models::likelihood`) keeps candle's element-wise ops.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_storage::f32_slice;
use super::poisoned;
use super::simd;
use crate::dispatch_isa;

/// Whether [`log_prob`] serves these logits: f32 on the CPU or CUDA.
pub fn serves(logits: &Tensor) -> bool {
    (logits.device().is_cpu() || logits.device().is_cuda()) && logits.dtype() == DType::F32
}

/// log p per row, (B,), of x (B, n) under logits (B, n), each term weighted by `weight`
/// (B, n) when given. f32 logits on the CPU or CUDA ([`serves`]). The gradient (to the logits
/// only) is computed in the same pass when the logits are part of an autograd graph.
pub fn log_prob(logits: &Tensor, x: &Tensor, weight: Option<&Tensor>) -> Result<Tensor> {
    if !serves(logits) {
        candle_core::bail!(
            "the fused Bernoulli log-likelihood takes f32 logits on the CPU or CUDA"
        );
    }
    let logits = logits.contiguous()?;
    let x = x.to_dtype(DType::F32)?.contiguous()?;
    let weight = weight
        .map(|w| w.to_dtype(DType::F32)?.contiguous())
        .transpose()?;
    let op = BernoulliLogProb {
        gradient: logits.track_op().then(|| Mutex::new(None)),
    };
    match (&weight, op.gradient.is_some()) {
        (None, false) => logits.apply_op2_no_bwd(&x, &op),
        (None, true) => logits.apply_op2(&x, op),
        (Some(w), false) => logits.apply_op3_no_bwd(&x, w, &op),
        (Some(w), true) => logits.apply_op3(&x, w, op),
    }
}

struct BernoulliLogProb {
    /// d sum_b log p(x_b) / d logits, (B, n), stored by the forward when there is a backward.
    gradient: Option<Mutex<Option<Tensor>>>,
}

impl BernoulliLogProb {
    fn forward(
        &self,
        (ls, ll): (&CpuStorage, &Layout),
        (xs, xl): (&CpuStorage, &Layout),
        weight: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, n) = ll.shape().dims2()?;
        let same = |l: &Layout, what: &str| -> Result<()> {
            if l.shape() != ll.shape() {
                candle_core::bail!(
                    "{what} {:?} differs from the logits {:?}",
                    l.shape(),
                    ll.shape()
                )
            }
            Ok(())
        };
        same(xl, "x")?;
        let (l, x) = (f32_slice(ls, ll, "logits")?, f32_slice(xs, xl, "x")?);
        let w = match weight {
            Some((ws, wl)) => {
                same(wl, "the weight")?;
                f32_slice(ws, wl, "the weight")?
            }
            None => &[],
        };
        let mut log_p = vec![0f32; rows];
        let mut grad = vec![0f32; if self.gradient.is_some() { rows * n } else { 0 }];
        let row = |r: usize, out: &mut f32, g: &mut [f32], terms: &mut Vec<f32>| {
            let span = r * n..(r + 1) * n;
            let w = if w.is_empty() { w } else { &w[span.clone()] };
            *out = row_log_prob(&l[span.clone()], &x[span], w, g, terms) as f32;
        };
        if n > 0 && !grad.is_empty() {
            log_p
                .par_iter_mut()
                .zip(grad.par_chunks_mut(n))
                .enumerate()
                .for_each_init(Vec::new, |terms, (r, (out, g))| row(r, out, g, terms));
        } else {
            log_p
                .par_iter_mut()
                .enumerate()
                .for_each_init(Vec::new, |terms, (r, out)| row(r, out, &mut [], terms));
        }
        if let Some(stored) = &self.gradient {
            *stored.lock().map_err(poisoned("bernoulli-log-prob"))? =
                Some(Tensor::from_vec(grad, (rows, n), &Device::Cpu)?);
        }
        Ok((CpuStorage::F32(log_p), Shape::from(rows)))
    }

    /// The same pass on CUDA: one launch of `bernoulli_log_prob` (cuda/bernoulli.cu).
    #[cfg(feature = "cuda")]
    fn cuda_forward(
        &self,
        (ls, ll): (&candle_core::CudaStorage, &Layout),
        (xs, xl): (&candle_core::CudaStorage, &Layout),
        weight: Option<(&candle_core::CudaStorage, &Layout)>,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::cuda_backend::cudarc::driver::{CudaView, LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::WrapErr;
        use candle_core::CudaStorage;

        const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/bernoulli.ptx"));
        let (rows, n) = ll.shape().dims2()?;
        /// The f32 elements of `l` (contiguous, the logits' shape `like`).
        fn view<'a>(
            s: &'a CudaStorage,
            l: &Layout,
            like: &Layout,
            what: &str,
        ) -> Result<CudaView<'a, f32>> {
            if l.shape() != like.shape() {
                candle_core::bail!(
                    "{what} {:?} differs from the logits {:?}",
                    l.shape(),
                    like.shape()
                );
            }
            let Some((start, end)) = l.contiguous_offsets() else {
                candle_core::bail!("Bernoulli log-likelihood: {what} is not contiguous");
            };
            Ok(s.as_cuda_slice::<f32>()?.slice(start..end))
        }
        let (lv, xv) = (view(ls, ll, ll, "the logits")?, view(xs, xl, ll, "x")?);
        let wv = weight
            .map(|(ws, wl)| view(ws, wl, ll, "the weight"))
            .transpose()?;
        let dev = &ls.device;
        let has_grad = self.gradient.is_some();
        let mut log_p = dev.alloc_zeros::<f32>(rows.max(1))?;
        let mut grad = dev.alloc_zeros::<f32>(if has_grad { rows * n } else { 0 }.max(1))?;
        if rows > 0 {
            let n_i = i32::try_from(n).map_err(|_| {
                candle_core::Error::Msg(format!("Bernoulli log-likelihood: n = {n}"))
            })?;
            let (has_w, has_g) = (i32::from(wv.is_some()), i32::from(has_grad));
            let f = dev
                .get_or_load_custom_func("bernoulli_log_prob", "nade_bernoulli", PTX)?
                .into_cuda_function();
            let stream = dev.cuda_stream();
            let mut launch = stream.launch_builder(&f);
            launch.arg(&lv);
            launch.arg(&xv);
            // Without weights the kernel never reads them: x stands in.
            launch.arg(wv.as_ref().unwrap_or(&xv));
            launch.arg(&has_w);
            launch.arg(&mut log_p);
            launch.arg(&mut grad);
            launch.arg(&has_g);
            launch.arg(&n_i);
            let cfg = LaunchConfig {
                grid_dim: (rows as u32, 1, 1),
                block_dim: (256, 1, 1), // BL_THREADS in bernoulli.cu
                shared_mem_bytes: 0,
            };
            // SAFETY: the arguments match the kernel's signature; every index is below rows x n.
            unsafe { launch.launch(cfg) }.w()?;
        }
        if let Some(stored) = &self.gradient {
            *stored.lock().map_err(poisoned("bernoulli-log-prob"))? = Some(Tensor::from_storage(
                candle_core::Storage::Cuda(CudaStorage::wrap_cuda_slice(grad, dev.clone())),
                (rows, n),
                candle_core::op::BackpropOp::none(),
                false,
            ));
        }
        Ok((
            CudaStorage::wrap_cuda_slice(log_p, dev.clone()),
            Shape::from(rows),
        ))
    }

    /// The logits' gradient for the upstream gradient `grad` (B,) of log p.
    fn backward(&self, grad: &Tensor) -> Result<Tensor> {
        let stored = self
            .gradient
            .as_ref()
            .map(|g| g.lock().map_err(poisoned("bernoulli-log-prob")));
        match stored.transpose()?.as_deref() {
            Some(Some(d_logits)) => d_logits.broadcast_mul(&grad.unsqueeze(1)?),
            _ => candle_core::bail!("Bernoulli log-likelihood: the forward stored no gradient"),
        }
    }
}

dispatch_isa! {
    /// One row's sum_i w_i [x_i l_i - softplus(l_i)] (w = 1 when `w` is empty); writes
    /// w_i (x_i - sigmoid(l_i)) to `grad` unless it is empty. `terms` is scratch.
    fn row_log_prob(l: &[f32], x: &[f32], w: &[f32], grad: &mut [f32], terms: &mut Vec<f32>) -> f64 {
        row_log_prob_inline::<FMA>(l, x, w, grad, terms)
    }
}

/// f64 lanes of the row sum: eight fill one AVX-512 register.
const LANES: usize = 8;

#[inline(always)]
fn row_log_prob_inline<const FMA: bool>(
    l: &[f32],
    x: &[f32],
    w: &[f32],
    grad: &mut [f32],
    terms: &mut Vec<f32>,
) -> f64 {
    let n = l.len();
    terms.resize(n, 0.0);
    let (x, terms) = (&x[..n], &mut terms[..n]);
    // Four loops, each branch-free and vectorized, rather than one with the choices inside.
    match (w.is_empty(), grad.is_empty()) {
        (true, true) => {
            for i in 0..n {
                let (softplus, _) = simd::softplus_sigmoid::<FMA>(l[i]);
                terms[i] = x[i] * l[i] - softplus;
            }
        }
        (true, false) => {
            let grad = &mut grad[..n];
            for i in 0..n {
                let (softplus, sigmoid) = simd::softplus_sigmoid::<FMA>(l[i]);
                terms[i] = x[i] * l[i] - softplus;
                grad[i] = x[i] - sigmoid;
            }
        }
        (false, true) => {
            let w = &w[..n];
            for i in 0..n {
                let (softplus, _) = simd::softplus_sigmoid::<FMA>(l[i]);
                terms[i] = w[i] * (x[i] * l[i] - softplus);
            }
        }
        (false, false) => {
            let (w, grad) = (&w[..n], &mut grad[..n]);
            for i in 0..n {
                let (softplus, sigmoid) = simd::softplus_sigmoid::<FMA>(l[i]);
                terms[i] = w[i] * (x[i] * l[i] - softplus);
                grad[i] = w[i] * (x[i] - sigmoid);
            }
        }
    }
    let mut acc = [0f64; LANES];
    let chunks = terms.chunks_exact(LANES);
    let tail: f64 = chunks.remainder().iter().map(|&t| t as f64).sum();
    for chunk in chunks {
        for k in 0..LANES {
            acc[k] += chunk[k] as f64;
        }
    }
    acc.iter().sum::<f64>() + tail
}

impl CustomOp2 for BernoulliLogProb {
    fn name(&self) -> &'static str {
        "bernoulli-log-prob"
    }

    fn cpu_fwd(
        &self,
        ls: &CpuStorage,
        ll: &Layout,
        xs: &CpuStorage,
        xl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward((ls, ll), (xs, xl), None)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        ls: &candle_core::CudaStorage,
        ll: &Layout,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.cuda_forward((ls, ll), (xs, xl), None)
    }

    fn bwd(
        &self,
        _logits: &Tensor,
        _x: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(self.backward(grad)?), None))
    }
}

impl CustomOp3 for BernoulliLogProb {
    fn name(&self) -> &'static str {
        "weighted-bernoulli-log-prob"
    }

    fn cpu_fwd(
        &self,
        ls: &CpuStorage,
        ll: &Layout,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward((ls, ll), (xs, xl), Some((ws, wl)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        ls: &candle_core::CudaStorage,
        ll: &Layout,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.cuda_forward((ls, ll), (xs, xl), Some((ws, wl)))
    }

    fn bwd(
        &self,
        _logits: &Tensor,
        _x: &Tensor,
        _weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        Ok((Some(self.backward(grad)?), None, None))
    }
}
