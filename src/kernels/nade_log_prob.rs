//! log p(x) of NADE and its gradient in one pass, for training (`NadeLogProbWithGrad`).
//!
//! The two-pass backward of `nade_logits` has to recompute every hidden unit, because the
//! gradient of W[:, j] needs the suffix sum sum_{i > j} da_i. Here the pass that computes the
//! likelihood also computes the gradient: d log p / d l_i = x_i - sigmoid(l_i) is known at
//! step i, so dV_i, db_i and da_i are too, and with the prefix sum P_j = sum_{i <= j} da_i,
//!   dW[:, j] = x_j (P_n - P_j)
//! is -P_j added at step j plus P_n added at the end to the ~13% of rows with x_j = 1.
//! Each hidden unit is computed once per training step instead of twice.
//!
//! The forward stores the gradient of sum_b log p(x_b) (per-image weight 1). The mean NLL
//! sends the same upstream gradient g to every image, so its backward is g times the stored
//! sum; any other upstream gradient reruns the pass with those weights. On CUDA the op runs the
//! kernels of `nade_cuda` (a logits pass, then the gradient pass) and stores likewise.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, Device, Layout, Result, Shape, Tensor};

use super::cpu_storage::f32_slice;
use super::nade_packed::{dims, shared_h_run, sum_over_images, Hidden, Params};
use super::poisoned;
use super::simd;
use crate::dispatch_isa;

/// log p(x) per image, (B,), from x (B, n), the packed parameters [W^T; c; V] and b (n), for
/// training: the forward computes the gradient too. (Evaluation takes the logits op, which
/// does half the work.)
pub fn log_prob_with_grad(x: &Tensor, packed: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.apply_op3(
        packed,
        b,
        NadeLogProbWithGrad {
            stored: Mutex::new(None),
        },
    )
}

/// log p(x) per image, (B,), for evaluation: one fused pass, no gradient (`NadeLogProb`). The
/// CPU walk is the training pass's with the gradient left out; on CUDA, the logits kernel and
/// the per-image likelihood kernel.
pub fn log_prob(x: &Tensor, packed: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.apply_op3_no_bwd(packed, b, &NadeLogProb)
}

struct NadeLogProb;

impl CustomOp3 for NadeLogProb {
    fn name(&self) -> &'static str {
        "nade-log-prob"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        use rayon::prelude::*;
        let (batch, n, d) = dims(xl, pl)?;
        let (x, p, b) = (
            f32_slice(xs, xl, "x")?,
            f32_slice(ps, pl, "parameters")?,
            f32_slice(bs, bl, "b")?,
        );
        let params = Params::new(p, n, d);
        let mut log_p = vec![0f32; batch];
        log_p.par_iter_mut().enumerate().for_each_init(
            || Hidden::new(d),
            |hidden, (r, out)| *out = image_log_prob(&params, b, &x[r * n..(r + 1) * n], hidden),
        );
        Ok((CpuStorage::F32(log_p), Shape::from(batch)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ps: &candle_core::CudaStorage,
        pl: &Layout,
        bs: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        dims(xl, pl)?;
        super::nade_cuda::log_prob(xs, xl, ps, pl, bs, bl)
    }
}

dispatch_isa! {
    /// log p(x) of one image by the recurrence, summed in f64 as the training pass does.
    fn image_log_prob(params: &Params, b: &[f32], x: &[f32], hidden: &mut Hidden) -> f32 {
        image_log_prob_inline::<FMA>(params, b, x, hidden)
    }
}

#[inline(always)]
fn image_log_prob_inline<const FMA: bool>(
    params: &Params,
    b: &[f32],
    x: &[f32],
    hidden: &mut Hidden,
) -> f32 {
    hidden.start::<FMA>(params);
    let mut log_p = 0f64;
    for (i, &x_i) in x.iter().enumerate() {
        let l = b[i] + hidden.logit::<FMA>(params, i);
        log_p += (x_i * l - l.max(0.0)) as f64 - simd::ln_1p_exp_neg_abs::<FMA>(l) as f64;
        if x_i != 0.0 {
            hidden.add_one::<FMA>(params, i);
        }
    }
    log_p as f32
}

/// (d packed, d b), on the device of the op's inputs.
type Grads = (Tensor, Tensor);

struct NadeLogProbWithGrad {
    /// Gradient of sum_b log p(x_b), from the forward.
    stored: Mutex<Option<Grads>>,
}

/// Runs the CPU pass over every image: log p of each and the gradient of
/// sum_b weights[b] log p(x_b) as (d packed, d b).
fn run(
    x: &[f32],
    p: &[f32],
    b: &[f32],
    n: usize,
    d: usize,
    weights: &[f32],
) -> (Vec<f32>, (Vec<f32>, Vec<f32>)) {
    let len = (2 * n + 1) * d;
    let params = Params::new(p, n, d);
    let (log_p, mut sums) = sum_over_images(
        weights.len(),
        len + n,
        || Scratch::new(n, d),
        |r, sums, scratch| {
            image(
                &params,
                b,
                &x[r * n..(r + 1) * n],
                weights[r],
                sums,
                scratch,
            )
        },
    );
    let d_b = sums.split_off(len);
    (log_p, (sums, d_b))
}

impl NadeLogProbWithGrad {
    fn store(&self, grads: Grads) -> Result<()> {
        *self
            .stored
            .lock()
            .map_err(poisoned("nade-log-prob-with-grad"))? = Some(grads);
        Ok(())
    }
}

impl CustomOp3 for NadeLogProbWithGrad {
    fn name(&self) -> &'static str {
        "nade-log-prob-with-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (batch, n, d) = dims(xl, pl)?;
        let (x, p, b) = (
            f32_slice(xs, xl, "x")?,
            f32_slice(ps, pl, "parameters")?,
            f32_slice(bs, bl, "b")?,
        );
        let (log_p, (d_packed, d_b)) = run(x, p, b, n, d, &vec![1f32; batch]);
        self.store((
            Tensor::from_vec(d_packed, (2 * n + 1, d), &Device::Cpu)?,
            Tensor::from_vec(d_b, n, &Device::Cpu)?,
        ))?;
        Ok((CpuStorage::F32(log_p), Shape::from(batch)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ps: &candle_core::CudaStorage,
        pl: &Layout,
        bs: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::{op::BackpropOp, Storage};
        let (batch, n, d) = dims(xl, pl)?;
        let (log_p, d_packed, d_b) = super::nade_cuda::log_prob_grad(xs, xl, ps, pl, bs, bl, None)?;
        let tensor = |s, shape: Shape| {
            Tensor::from_storage(Storage::Cuda(s), shape, BackpropOp::none(), false)
        };
        self.store((
            tensor(d_packed, Shape::from((2 * n + 1, d))),
            tensor(d_b, Shape::from(n)),
        ))?;
        Ok((log_p, Shape::from(batch)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        packed: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = grad.to_vec1::<f32>()?;
        let stored = self
            .stored
            .lock()
            .map_err(poisoned("nade-log-prob-with-grad"))?
            .take();
        let uniform = g.iter().all(|&v| v == g[0]);
        let (d_packed, d_b) = match stored {
            Some((dp, db)) if uniform => {
                let scale = g.first().copied().unwrap_or(0.0) as f64;
                ((dp * scale)?, (db * scale)?)
            }
            _ => {
                // Another upstream gradient: rerun the pass on the host with those weights.
                let n = x.dim(1)?;
                let d = packed.dim(1)?;
                let host = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
                let (_, (dp, db)) = run(&host(x)?, &host(packed)?, &host(b)?, n, d, &g);
                let device = packed.device();
                (
                    Tensor::from_vec(dp, packed.dims(), device)?,
                    Tensor::from_vec(db, b.dims(), device)?,
                )
            }
        };
        Ok((None, Some(d_packed), Some(d_b)))
    }
}

struct Scratch {
    hidden: Hidden,
    /// P = sum_{i <= j} da_i.
    prefix: Vec<f32>,
    /// Pixels with x_j = 1, whose W^T rows get P_n at the end.
    ones: Vec<usize>,
    /// The logits' hidden parts and the gradients d log p / d l of a run of pixels.
    logits: Vec<f32>,
    gs: Vec<f32>,
}

impl Scratch {
    fn new(n: usize, d: usize) -> Self {
        Self {
            hidden: Hidden::new(d),
            prefix: vec![0f32; d],
            ones: Vec::with_capacity(n),
            logits: vec![0f32; n],
            gs: vec![0f32; n],
        }
    }
}

dispatch_isa! {
    /// log p(x) of one image; adds w * d log p / d(params) to `sums` ([d packed | d b]).
    fn image(params: &Params, b: &[f32], x: &[f32], w: f32, sums: &mut [f32], s: &mut Scratch) -> f32 {
        image_inline::<FMA>(params, b, x, w, sums, s)
    }
}

#[inline(always)]
fn image_inline<const FMA: bool>(
    params: &Params,
    b: &[f32],
    x: &[f32],
    w: f32,
    sums: &mut [f32],
    s: &mut Scratch,
) -> f32 {
    let (n, d) = (params.n, params.d);
    s.hidden.start::<FMA>(params);
    s.prefix.fill(0.0);
    s.ones.clear();
    let (dwt, rest) = sums.split_at_mut(n * d);
    let (dc, rest) = rest.split_at_mut(d);
    let (dv, d_b) = rest.split_at_mut(n * d);
    // The image's log-likelihood is a sum of n terms of either sign: f64 keeps it exact to
    // f32 precision whatever n is.
    let mut log_p = 0f64;
    // Pixel by pixel, a chain of dependent steps: the logit's dot product, then exp and ln,
    // then the gradient passes over d. Over a run of pixels that share h the logits do not
    // depend on the gradients, so the run's logits and scalar terms come first (their chains
    // overlap), then its gradient passes; every sum is taken in the same order as pixel by
    // pixel, so the values are the same to the bit.
    let mut start = 0;
    while start < n {
        let run = shared_h_run(x, start);
        let (logits, gs) = (&mut s.logits[..run.len()], &mut s.gs[..run.len()]);
        s.hidden.logits_into::<FMA>(params, run.start, logits);
        for ((i, &l_h), g) in run.clone().zip(logits.iter()).zip(gs.iter_mut()) {
            let (l, x_i) = (b[i] + l_h, x[i]);
            // x l - softplus(l), softplus(l) = max(l, 0) + ln(1 + e^-|l|).
            let (ln_1p, sigmoid) = simd::ln_1p_exp_neg_abs_and_sigmoid::<FMA>(l);
            log_p += (x_i * l - l.max(0.0)) as f64 - ln_1p as f64;
            *g = w * (x_i - sigmoid);
            d_b[i] += *g;
        }
        let mut i = run.start;
        let mut fours = gs.chunks_exact(4);
        for g in &mut fours {
            let rows = [i, i + 1, i + 2, i + 3].map(|j| params.v_row(j));
            let g = [g[0], g[1], g[2], g[3]];
            let dv_rows = &mut dv[i * d..(i + 4) * d];
            simd::hidden_grads4::<FMA>(g, &s.hidden.h, rows, dv_rows, &mut s.prefix);
            i += 4;
        }
        for &g in fours.remainder() {
            simd::hidden_grads::<FMA>(
                g,
                &s.hidden.h,
                params.v_row(i),
                &mut dv[i * d..(i + 1) * d],
                &mut s.prefix,
            );
            i += 1;
        }
        let last = run.end - 1;
        if x[last] != 0.0 {
            // dW[:, i] = P_n - P_i: the -P_i part now, P_n below.
            simd::axpy::<FMA>(&mut dwt[last * d..(last + 1) * d], -1.0, &s.prefix);
            s.ones.push(last);
            s.hidden.add_one::<FMA>(params, last);
        }
        start = run.end;
    }
    for &j in &s.ones {
        simd::add_assign(&mut dwt[j * d..(j + 1) * d], &s.prefix);
    }
    simd::add_assign(dc, &s.prefix);
    log_p as f32
}
