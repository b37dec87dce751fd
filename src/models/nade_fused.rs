//! NADE's O(nd) recurrence fused into one CPU pass (Larochelle & Murray 2011), forward and
//! backward, as candle custom ops. Neither pass materialises the (B, n, d) activations: each
//! image walks its n pixels with one (d) activation vector, a_{i+1} = a_i + W[:, i] x_i, added
//! only where x_i = 1 (~13% of MNIST pixels).
//!
//! The parameters travel packed as P = [W^T; c; V], a (2n + 1, d) tensor made by `Tensor::cat`,
//! so that candle's autograd splits the packed gradient back onto W, c and V, and so that the
//! column W[:, i] the recurrence adds is a contiguous row of W^T. The output bias b is added
//! outside the op.
//!
//! Backward, per image with g_i = dL/dl_i (h_i = sigmoid(a_i), l_i = V_i . h_i):
//!   dV_i += g_i h_i,   da_i = g_i V_i * h_i * (1 - h_i),
//!   dW[:, j] += x_j * sum_{i > j} da_i  (a running sum s, walked from i = n - 1 down),
//!   dc += sum_i da_i.
//! The h_i are recomputed block by block from activations saved every BLOCK pixels, so the
//! memory is O(threads * n * d) for the gradient accumulators, never O(B * n * d).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::FusedSamples;
use crate::cpu_storage::f32_slice;
use crate::dispatch_isa;
use crate::simd;

/// Packs the parameters for the fused ops: [W^T (n, d); c (1, d); V (n, d)].
pub fn pack(w: &Tensor, c: &Tensor, v: &Tensor) -> Result<Tensor> {
    Tensor::cat(&[&w.t()?, &c.unsqueeze(0)?, v], 0)
}

/// logits without the output bias: (B, n) from x (B, n) and the packed parameters.
pub fn logits(x: &Tensor, packed: &Tensor) -> Result<Tensor> {
    x.apply_op2(packed, FusedLogits)
}

struct FusedLogits;

/// The three parts of a packed (2n + 1, d) parameter slice.
#[derive(Clone, Copy)]
pub(super) struct Params<'a> {
    pub(super) n: usize,
    pub(super) d: usize,
    wt: &'a [f32],
    pub(super) c: &'a [f32],
    v: &'a [f32],
}

impl<'a> Params<'a> {
    pub(super) fn new(p: &'a [f32], n: usize, d: usize) -> Self {
        Self {
            n,
            d,
            wt: &p[..n * d],
            c: &p[n * d..(n + 1) * d],
            v: &p[(n + 1) * d..],
        }
    }

    pub(super) fn w_col(&self, i: usize) -> &'a [f32] {
        &self.wt[i * self.d..(i + 1) * self.d]
    }

    pub(super) fn v_row(&self, i: usize) -> &'a [f32] {
        &self.v[i * self.d..(i + 1) * self.d]
    }
}

/// Runs `per_image(r, sums, scratch)` for every image r < batch, one chunk of images per
/// thread, each chunk with its own zeroed `sums` of `len` values and its own scratch, then adds
/// the chunks' sums in chunk order: for a given thread count the result is the same to the bit
/// every time. Returns what `per_image` returned for each image, and the sums.
pub(super) fn sum_over_images<S>(
    batch: usize,
    len: usize,
    scratch: impl Fn() -> S + Sync,
    per_image: impl Fn(usize, &mut [f32], &mut S) -> f32 + Sync,
) -> (Vec<f32>, Vec<f32>) {
    let chunks = rayon::current_num_threads().clamp(1, batch.max(1));
    let per_chunk = batch.div_ceil(chunks).max(1);
    let mut results = vec![0f32; batch];
    let partials: Vec<Vec<f32>> = results
        .par_chunks_mut(per_chunk)
        .enumerate()
        .map(|(chunk, results)| {
            let (mut sums, mut s) = (vec![0f32; len], scratch());
            for (j, result) in results.iter_mut().enumerate() {
                *result = per_image(chunk * per_chunk + j, &mut sums, &mut s);
            }
            sums
        })
        .collect();
    let mut total = vec![0f32; len];
    for partial in &partials {
        simd::add_assign(&mut total, partial);
    }
    (results, total)
}

/// (B, n) and (2n + 1, d) shapes, checked.
pub(super) fn dims(x: &Layout, p: &Layout) -> Result<(usize, usize, usize)> {
    let (batch, n) = x.shape().dims2()?;
    let (rows, d) = p.shape().dims2()?;
    if rows != 2 * n + 1 {
        candle_core::bail!(
            "fused NADE: packed parameters have {rows} rows, expected 2n + 1 = {}",
            2 * n + 1
        );
    }
    Ok((batch, n, d))
}

impl CustomOp2 for FusedLogits {
    fn name(&self) -> &'static str {
        "nade-fused-logits"
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
            || vec![0f32; d],
            |a, (logits, row)| forward_image(p, n, d, row, logits, a),
        );
        Ok((CpuStorage::F32(out), Shape::from((batch, n))))
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
        Ok((None, Some(x.apply_op3_no_bwd(packed, &grad, &FusedGrad)?)))
    }
}

dispatch_isa! {
    fn forward_image(p: &[f32], n: usize, d: usize, x: &[f32], logits: &mut [f32], a: &mut [f32]) {
        forward_image_inline::<FMA>(p, n, d, x, logits, a)
    }
}

#[inline(always)]
fn forward_image_inline<const FMA: bool>(
    p: &[f32],
    n: usize,
    d: usize,
    x: &[f32],
    logits: &mut [f32],
    a: &mut [f32],
) {
    let p = Params::new(p, n, d);
    a.copy_from_slice(p.c);
    for i in 0..n {
        logits[i] = simd::dot_sigmoid::<FMA>(p.v_row(i), a);
        if x[i] != 0.0 {
            simd::add_assign(a, p.w_col(i));
        }
    }
}

/// Samples (or completes) B images on the host: the recurrence with a Bernoulli draw per
/// pixel, O(d) per pixel, no tensors. `packed` as [`pack`] makes it, `kept` B * k values,
/// `uniforms` B * n. Parallel over images; each image's result depends only on its own inputs.
pub fn sample(
    packed: &[f32],
    bias: &[f32],
    kept: &[u8],
    k: usize,
    uniforms: &[f32],
) -> FusedSamples {
    let n = bias.len();
    let d = packed.len() / (2 * n + 1);
    let batch = uniforms.len() / n;
    let width = n - k;
    let mut values = vec![0u8; batch * width];
    let mut probs = vec![0f32; batch * width];
    values
        .par_chunks_mut(width.max(1))
        .zip(probs.par_chunks_mut(width.max(1)))
        .enumerate()
        .for_each_init(
            || vec![0f32; d],
            |a, (r, (x, p))| {
                let kept = &kept[r * k..(r + 1) * k];
                let u = &uniforms[r * n..(r + 1) * n];
                sample_image(packed, bias, kept, u, x, p, a)
            },
        );
    FusedSamples { values, probs }
}

dispatch_isa! {
    fn sample_image(packed: &[f32], bias: &[f32], kept: &[u8], u: &[f32], x: &mut [u8], p: &mut [f32], a: &mut [f32]) {
        sample_image_inline::<FMA>(packed, bias, kept, u, x, p, a)
    }
}

#[inline(always)]
fn sample_image_inline<const FMA: bool>(
    packed: &[f32],
    bias: &[f32],
    kept: &[u8],
    u: &[f32],
    x: &mut [u8],
    p: &mut [f32],
    a: &mut [f32],
) {
    let (n, k) = (bias.len(), kept.len());
    let params = Params::new(packed, n, a.len());
    a.copy_from_slice(params.c);
    for (i, &kept_i) in kept.iter().enumerate() {
        if kept_i != 0 {
            simd::add_assign(a, params.w_col(i));
        }
    }
    for i in k..n {
        let logit = bias[i] + simd::dot_sigmoid::<FMA>(params.v_row(i), a);
        let prob = simd::sigmoid::<FMA>(logit);
        p[i - k] = prob;
        if u[i] < prob {
            x[i - k] = 1;
            simd::add_assign(a, params.w_col(i));
        }
    }
}

/// d(loss)/d(packed parameters) from x, the packed parameters and d(loss)/d(logits).
struct FusedGrad;

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

impl CustomOp3 for FusedGrad {
    fn name(&self) -> &'static str {
        "nade-fused-grad"
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
