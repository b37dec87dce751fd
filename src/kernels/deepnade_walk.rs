//! The incremental walk of deep NADE's exact evaluation on the CPU (src/models/deepnade.rs):
//! rows of images walked one dimension per step, each row its own dimension. The first
//! layer's pre-activations a1 live in host memory; a step applies g to them, runs the layers
//! above through the tiled matmul (kernels/tiled_matmul.rs, both cores at any batch), and reads the one output unit of each row out in a fused
//! pass (bias, activation, dot with V[d]); observing a dimension adds one row of a table to
//! a1. Every element-wise pass runs on rayon's pool: with candle's single-threaded element-
//! wise ops these passes cost more than the matmul they surround.

use candle_core::Result;
use rayon::prelude::*;

use super::simd;
use super::tiled_matmul::{product, View};

/// The hidden nonlinearity, as the kernel sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    Relu,
    Sigmoid,
    Tanh,
}

/// Lanes of the partial sums (as in simd.rs): LLVM vectorizes a reduction only when the code
/// spells out the lanes.
const LANES: usize = 16;

const RELU: u8 = 0;
const SIGMOID: u8 = 1;
const TANH: u8 = 2;

impl Act {
    fn code(self) -> u8 {
        match self {
            Act::Relu => RELU,
            Act::Sigmoid => SIGMOID,
            Act::Tanh => TANH,
        }
    }
}

/// g(x), with g fixed at compile time so the loops around it vectorize.
#[inline(always)]
fn act<const FMA: bool, const G: u8>(x: f32) -> f32 {
    match G {
        RELU => x.max(0.0),
        SIGMOID => simd::sigmoid::<FMA>(x),
        // tanh(x) = 2 sigmoid(2x) - 1, branch-free and vectorizable like the sigmoid.
        _ => 2.0 * simd::sigmoid::<FMA>(2.0 * x) - 1.0,
    }
}

#[inline(always)]
fn act_into_inline<const FMA: bool, const G: u8>(a: &[f32], out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(a) {
        *o = act::<FMA, G>(x);
    }
}

#[inline(always)]
fn act_bias_into_inline<const FMA: bool, const G: u8>(a: &[f32], bias: &[f32], out: &mut [f32]) {
    for ((o, &x), &b) in out.iter_mut().zip(a).zip(bias) {
        *o = act::<FMA, G>(x + b);
    }
}

#[inline(always)]
fn act_dot_inline<const FMA: bool, const G: u8>(z: &[f32], bias: &[f32], v: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (z_chunks, b_chunks, v_chunks) = (
        z.chunks_exact(LANES),
        bias.chunks_exact(LANES),
        v.chunks_exact(LANES),
    );
    let mut tail = 0f32;
    for ((&x, &b), &vk) in z_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .zip(v_chunks.remainder())
    {
        tail += vk * act::<FMA, G>(x + b);
    }
    for ((zc, bc), vc) in z_chunks.zip(b_chunks).zip(v_chunks) {
        for (k, slot) in acc.iter_mut().enumerate() {
            *slot += vc[k] * act::<FMA, G>(zc[k] + bc[k]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

crate::dispatch_isa! {
    /// out[k] = g(a[k]).
    fn act_into(g: Act, a: &[f32], out: &mut [f32]) {
        match g.code() {
            RELU => act_into_inline::<FMA, RELU>(a, out),
            SIGMOID => act_into_inline::<FMA, SIGMOID>(a, out),
            _ => act_into_inline::<FMA, TANH>(a, out),
        }
    }
}

crate::dispatch_isa! {
    /// out[k] = g(a[k] + bias[k]).
    fn act_bias_into(g: Act, a: &[f32], bias: &[f32], out: &mut [f32]) {
        match g.code() {
            RELU => act_bias_into_inline::<FMA, RELU>(a, bias, out),
            SIGMOID => act_bias_into_inline::<FMA, SIGMOID>(a, bias, out),
            _ => act_bias_into_inline::<FMA, TANH>(a, bias, out),
        }
    }
}

crate::dispatch_isa! {
    /// sum_k v[k] g(z[k] + bias[k]): one output unit of the top layer without storing it.
    fn act_dot(g: Act, z: &[f32], bias: &[f32], v: &[f32]) -> f32 {
        match g.code() {
            RELU => act_dot_inline::<FMA, RELU>(z, bias, v),
            SIGMOID => act_dot_inline::<FMA, SIGMOID>(z, bias, v),
            _ => act_dot_inline::<FMA, TANH>(z, bias, v),
        }
    }
}

/// The weights of the walk: `table` ((2n + 1) x h1, row-major) holds what observing a
/// dimension adds to a1; `deeper` the layers above (W_l^T as CPU tensors, b_l); `v` (n x hL)
/// and `c` the output units.
pub struct HostNet {
    pub act: Act,
    pub h1: usize,
    pub table: Vec<f32>,
    pub deeper: Vec<(Vec<f32>, Vec<f32>)>,
    pub v: Vec<f32>,
    pub top: usize,
    pub c: Vec<f32>,
}

impl HostNet {
    /// The logit of dimension dims[r] for every row r of `a1` (rows x h1, row-major).
    pub fn logits(&self, a1: &[f32], dims: &[u32]) -> Result<Vec<f32>> {
        let mut h = vec![0f32; a1.len()];
        h.par_chunks_mut(self.h1)
            .zip(a1.par_chunks(self.h1))
            .for_each(|(out, a)| act_into(self.act, a, out));
        self.top(h, dims)
    }

    /// `dims.len()` steps of every row at once: step s of row r reads the logit of dimension
    /// dims[s][r], then observes table entry entries[s][r]; `a1` ends with all of them
    /// observed. The same numbers as [`logits`](Self::logits) and [`observe`](Self::observe)
    /// step by step (to the products' rounding), but the layers above the first see rows x
    /// steps rows in one product: one fork-join per block instead of four per step, and
    /// products tall enough for the cores' full speed.
    pub fn block_logits(
        &self,
        a1: &mut [f32],
        dims: &[Vec<u32>],
        entries: &[Vec<u32>],
    ) -> Result<Vec<Vec<f32>>> {
        let (h1, steps) = (self.h1, dims.len());
        let rows = a1.len() / h1;
        // Row r * steps + s of h holds g(a1) of row r before its step s.
        let mut h = vec![0f32; rows * steps * h1];
        h.par_chunks_mut((steps * h1).max(1))
            .zip(a1.par_chunks_mut(h1))
            .enumerate()
            .for_each(|(r, (h_r, a))| {
                for (s, h_rs) in h_r.chunks_mut(h1).enumerate() {
                    act_into(self.act, a, h_rs);
                    let e = entries[s][r] as usize;
                    simd::add_assign(a, &self.table[e * h1..(e + 1) * h1]);
                }
            });
        let flat_dims: Vec<u32> = (0..rows * steps)
            .map(|i| dims[i % steps][i / steps])
            .collect();
        let flat = self.top(h, &flat_dims)?;
        Ok((0..steps)
            .map(|s| (0..rows).map(|r| flat[r * steps + s]).collect())
            .collect())
    }

    /// The logit of dimension dims[r] for every row r of h = g(a1) (rows x h1, row-major).
    fn top(&self, mut h: Vec<f32>, dims: &[u32]) -> Result<Vec<f32>> {
        let rows = h.len() / self.h1;
        let Some(last) = self.deeper.len().checked_sub(1) else {
            // One hidden layer: h holds g(a1), a dot product with V[d] is left.
            return Ok(h
                .par_chunks(self.h1)
                .zip(dims.par_iter())
                .map(|(hr, &d)| simd_dot(hr, self.v_row(d)) + self.c[d as usize])
                .collect());
        };
        let mut width = self.h1;
        for (l, (w_t, bias)) in self.deeper.iter().enumerate() {
            let next = bias.len();
            let z = product(View::new(&h, rows, width), View::new(w_t, width, next));
            width = next;
            if l == last {
                return Ok(z
                    .par_chunks(width)
                    .zip(dims.par_iter())
                    .map(|(zr, &d)| act_dot(self.act, zr, bias, self.v_row(d)) + self.c[d as usize])
                    .collect());
            }
            let mut next = vec![0f32; z.len()];
            next.par_chunks_mut(width)
                .zip(z.par_chunks(width))
                .for_each(|(out, zr)| act_bias_into(self.act, zr, bias, out));
            h = next;
        }
        unreachable!("the last layer returns")
    }

    /// Row r of `a1` adds row entries[r] of the table.
    pub fn observe(&self, a1: &mut [f32], entries: &[u32]) {
        a1.par_chunks_mut(self.h1)
            .zip(entries.par_iter())
            .for_each(|(a, &e)| {
                let e = e as usize;
                simd::add_assign(a, &self.table[e * self.h1..(e + 1) * self.h1]);
            });
    }

    fn v_row(&self, d: u32) -> &[f32] {
        let d = d as usize;
        &self.v[d * self.top..(d + 1) * self.top]
    }
}

crate::dispatch_isa! {
    fn simd_dot(u: &[f32], v: &[f32]) -> f32 {
        simd::dot::<FMA>(u, v)
    }
}
