//! NADE's parallel logits by the O(nd) recurrence itself (Larochelle & Murray 2011), forward
//! and backward, as one candle op: `NadeLogits` (forward; `bwd` runs `NadeLogitsGrad`). Neither
//! pass materialises the (B, n, d) activations: each image walks its n pixels with one (d)
//! activation vector, a_{i+1} = a_i + W[:, i] x_i, added only where x_i = 1 (~13% of MNIST
//! pixels). The op picks the device: the CPU kernel below, or the CUDA kernels of
//! `nade_cuda` (feature `cuda`).
//!
//! Backward, per image with g_i = dL/dl_i (h_i = sigmoid(a_i), l_i = V_i . h_i):
//!   dV_i += g_i h_i,   da_i = g_i V_i * h_i * (1 - h_i),
//!   dW[:, j] += x_j * sum_{i > j} da_i  (a running sum s, walked from i = n - 1 down),
//!   dc += sum_i da_i.
//! On the CPU the h_i are recomputed block by block from activations saved every BLOCK pixels,
//! so the memory is O(threads * n * d) for the gradient accumulators, never O(B * n * d).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_storage::f32_slice;
use super::nade_packed::{dims, sum_over_images, Hidden, Params};
use super::simd;
use crate::dispatch_isa;

/// logits without the output bias: (B, n) from x (B, n) and the packed parameters.
pub fn logits(x: &Tensor, packed: &Tensor) -> Result<Tensor> {
    x.apply_op2(packed, NadeLogits)
}

struct NadeLogits;

impl CustomOp2 for NadeLogits {
    fn name(&self) -> &'static str {
        "nade-logits"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (batch, n, d) = dims(xl, pl)?;
        let (x, p) = (f32_slice(xs, xl, "x")?, f32_slice(ps, pl, "parameters")?);
        let mut out = vec![0f32; batch * n];
        out.par_chunks_mut(n).zip(x.par_chunks(n)).for_each_init(
            || Hidden::new(d),
            |hidden, (logits, row)| forward_image(p, n, d, row, logits, hidden),
        );
        Ok((CpuStorage::F32(out), Shape::from((batch, n))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ps: &candle_core::CudaStorage,
        pl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        dims(xl, pl)?;
        super::nade_cuda::logits(xs, xl, ps, pl)
    }

    fn bwd(
        &self,
        x: &Tensor,
        packed: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // x is data: no gradient.
        let grad = grad.contiguous()?;
        Ok((
            None,
            Some(x.apply_op3_no_bwd(packed, &grad, &NadeLogitsGrad)?),
        ))
    }
}

dispatch_isa! {
    fn forward_image(p: &[f32], n: usize, d: usize, x: &[f32], logits: &mut [f32], hidden: &mut Hidden) {
        forward_image_inline::<FMA>(p, n, d, x, logits, hidden)
    }
}

#[inline(always)]
fn forward_image_inline<const FMA: bool>(
    p: &[f32],
    n: usize,
    d: usize,
    x: &[f32],
    logits: &mut [f32],
    hidden: &mut Hidden,
) {
    let p = Params::new(p, n, d);
    hidden.start::<FMA>(&p);
    for i in 0..n {
        logits[i] = hidden.logit::<FMA>(&p, i);
        if x[i] != 0.0 {
            hidden.add_one::<FMA>(&p, i);
        }
    }
}

/// d(loss)/d(packed parameters) from x, the packed parameters and d(loss)/d(logits).
struct NadeLogitsGrad;

/// Pixels per block of the backward walk: the hidden units of one block are recomputed from
/// the activation saved at its start, so the scratch is BLOCK x d (56 KB at d = 500, in L2)
/// instead of n x d.
const BLOCK: usize = 28;

/// Per-thread scratch of the backward walk.
struct Scratch {
    /// a at the start of every block, (n / BLOCK, d).
    checkpoints: Vec<f32>,
    /// h of the pixels of the current block, (BLOCK, d).
    hidden: Vec<f32>,
    /// The activation while recomputing, then s = sum_{k > i} da_k.
    running: Vec<f32>,
    a: Vec<f32>,
}

impl Scratch {
    fn new(n: usize, d: usize) -> Self {
        Self {
            checkpoints: vec![0f32; n.div_ceil(BLOCK) * d],
            hidden: vec![0f32; BLOCK * d],
            running: vec![0f32; d],
            a: vec![0f32; d],
        }
    }
}

impl CustomOp3 for NadeLogitsGrad {
    fn name(&self) -> &'static str {
        "nade-logits-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (batch, n, d) = dims(xl, pl)?;
        let (x, p, g) = (
            f32_slice(xs, xl, "x")?,
            f32_slice(ps, pl, "parameters")?,
            f32_slice(gs, gl, "grad")?,
        );
        let (_, total) = sum_over_images(
            batch,
            (2 * n + 1) * d,
            || Scratch::new(n, d),
            |r, grad, scratch| {
                let (x, g) = (&x[r * n..(r + 1) * n], &g[r * n..(r + 1) * n]);
                backward_image(p, n, d, x, g, grad, scratch);
                0.0
            },
        );
        Ok((CpuStorage::F32(total), Shape::from((2 * n + 1, d))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ps: &candle_core::CudaStorage,
        pl: &Layout,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        dims(xl, pl)?;
        super::nade_cuda::logits_grad(xs, xl, ps, pl, gs, gl)
    }
}

dispatch_isa! {
    fn backward_image(p: &[f32], n: usize, d: usize, x: &[f32], g: &[f32], grad: &mut [f32], scratch: &mut Scratch) {
        backward_image_inline::<FMA>(p, n, d, x, g, grad, scratch)
    }
}

#[inline(always)]
fn backward_image_inline<const FMA: bool>(
    p: &[f32],
    n: usize,
    d: usize,
    x: &[f32],
    g: &[f32],
    grad: &mut [f32],
    acc: &mut Scratch,
) {
    let p = Params::new(p, n, d);
    // Forward walk without sigmoids: remember a at the start of each block.
    let a = &mut acc.a;
    a.copy_from_slice(p.c);
    for (i, &x_i) in x.iter().enumerate() {
        if i % BLOCK == 0 {
            acc.checkpoints[(i / BLOCK) * d..(i / BLOCK + 1) * d].copy_from_slice(a);
        }
        if x_i != 0.0 {
            simd::add_assign(a, p.w_col(i));
        }
    }
    // Backward walk, block by block from the end; s = sum_{k > i} da_k.
    let s = &mut acc.running;
    s.fill(0.0);
    let (dwt, rest) = grad.split_at_mut(n * d);
    let (dc, dv) = rest.split_at_mut(d);
    for block in (0..n.div_ceil(BLOCK)).rev() {
        let pixels = block * BLOCK..((block + 1) * BLOCK).min(n);
        a.copy_from_slice(&acc.checkpoints[block * d..(block + 1) * d]);
        for (i, hidden) in pixels.clone().zip(acc.hidden.chunks_exact_mut(d)) {
            simd::sigmoid_into::<FMA>(a, hidden);
            if x[i] != 0.0 {
                simd::add_assign(a, p.w_col(i));
            }
        }
        for i in pixels.clone().rev() {
            if x[i] != 0.0 {
                simd::add_assign(&mut dwt[i * d..(i + 1) * d], s);
            }
            let gi = g[i];
            if gi == 0.0 {
                continue;
            }
            let h = &acc.hidden[(i - pixels.start) * d..(i - pixels.start + 1) * d];
            simd::hidden_grads::<FMA>(gi, h, p.v_row(i), &mut dv[i * d..(i + 1) * d], s);
        }
    }
    simd::add_assign(dc, s);
}
