//! What the fused NADE ops share: the packed parameter layout and the per-image loop.
//!
//! The parameters travel packed as P = [W^T; c; V], a (2n + 1, d) tensor made by `Tensor::cat`,
//! so that candle's autograd splits the packed gradient back onto W, c and V, and so that the
//! column W[:, i] the recurrence adds is a contiguous row of W^T. The output bias b stays
//! outside the pack.

use candle_core::{Layout, Result, Tensor};
use rayon::prelude::*;

use super::simd;
use super::transpose::transposed;

/// Packs the parameters for the fused ops: [W^T (n, d); c (1, d); V (n, d)].
pub fn pack(w: &Tensor, c: &Tensor, v: &Tensor) -> Result<Tensor> {
    Tensor::cat(&[&transposed(w)?, &c.unsqueeze(0)?, v], 0)
}

/// The three parts of a packed (2n + 1, d) parameter slice.
#[derive(Clone, Copy)]
pub(crate) struct Params<'a> {
    pub(crate) n: usize,
    pub(crate) d: usize,
    wt: &'a [f32],
    pub(crate) c: &'a [f32],
    v: &'a [f32],
}

impl<'a> Params<'a> {
    pub(crate) fn new(p: &'a [f32], n: usize, d: usize) -> Self {
        Self {
            n,
            d,
            wt: &p[..n * d],
            c: &p[n * d..(n + 1) * d],
            v: &p[(n + 1) * d..],
        }
    }

    pub(crate) fn w_col(&self, i: usize) -> &'a [f32] {
        &self.wt[i * self.d..(i + 1) * self.d]
    }

    pub(crate) fn v_row(&self, i: usize) -> &'a [f32] {
        &self.v[i * self.d..(i + 1) * self.d]
    }
}

/// One image's hidden layer along the recurrence: a = c + the columns W[:, j] of the pixels
/// j < i with x_j = 1, and h = sigmoid(a). h changes only when a does, after a pixel that is
/// 1 (13% of MNIST's), so it is recomputed then and read as it is at the other steps: the
/// d sigmoids per step were most of the work of every fused CPU pass, and a conditional's
/// logit is now a plain dot product with the same values to the bit (the sigmoid works
/// lane by lane, and `simd::dot` sums in `simd::dot_sigmoid`'s order).
pub(crate) struct Hidden {
    pub(crate) a: Vec<f32>,
    pub(crate) h: Vec<f32>,
}

impl Hidden {
    pub(crate) fn new(d: usize) -> Self {
        Self {
            a: vec![0f32; d],
            h: vec![0f32; d],
        }
    }

    /// Nothing observed: a = c.
    #[inline(always)]
    pub(crate) fn start<const FMA: bool>(&mut self, params: &Params) {
        self.a.copy_from_slice(params.c);
        simd::sigmoid_into::<FMA>(&self.a, &mut self.h);
    }

    /// Pixel i is 1: a += W[:, i].
    #[inline(always)]
    pub(crate) fn add_one<const FMA: bool>(&mut self, params: &Params, i: usize) {
        simd::add_assign(&mut self.a, params.w_col(i));
        simd::sigmoid_into::<FMA>(&self.a, &mut self.h);
    }

    /// The part of pixel i's logit that comes from the hidden layer: V[i] . h.
    #[inline(always)]
    pub(crate) fn logit<const FMA: bool>(&self, params: &Params, i: usize) -> f32 {
        simd::dot::<FMA>(params.v_row(i), &self.h)
    }

    /// [`Hidden::logit`] of the pixels `first..first + out.len()` into `out`, with h as it is
    /// now: for a run of pixels that share h ([`shared_h_run`]). Four dots at a time overlap
    /// their chains of dependent FMAs; each value is the one `logit` gives, to the bit.
    #[inline(always)]
    pub(crate) fn logits_into<const FMA: bool>(
        &self,
        params: &Params,
        first: usize,
        out: &mut [f32],
    ) {
        let mut fours = out.chunks_exact_mut(4);
        let mut i = first;
        for four in &mut fours {
            let rows = [i, i + 1, i + 2, i + 3].map(|j| params.v_row(j));
            four.copy_from_slice(&simd::dot4::<FMA>(rows, &self.h));
            i += 4;
        }
        for one in fours.into_remainder() {
            *one = self.logit::<FMA>(params, i);
            i += 1;
        }
    }
}

/// The pixels from `start` up to and including the next one with x_i = 1 (or to the end): h
/// is the same at all of them, and changes after the last. When x is known (evaluation,
/// training) their logits are independent dot products with one h, computed together.
#[inline(always)]
pub(crate) fn shared_h_run(x: &[f32], start: usize) -> std::ops::Range<usize> {
    let end = x[start..]
        .iter()
        .position(|&x_i| x_i != 0.0)
        .map_or(x.len(), |k| start + k + 1);
    start..end
}

/// Runs `per_image(r, sums, scratch)` for every image r < batch, one chunk of images per
/// thread, each chunk with its own zeroed `sums` of `len` values and its own scratch, then adds
/// the chunks' sums in chunk order: for a given thread count the result is the same to the bit
/// every time. Returns what `per_image` returned for each image, and the sums.
pub(crate) fn sum_over_images<S>(
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

/// (B, n) and (2n + 1, d) shapes, checked: (B, n, d).
pub(crate) fn dims(x: &Layout, p: &Layout) -> Result<(usize, usize, usize)> {
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
