//! The incremental walk of deep NADE's exact evaluation and sampling on the CPU
//! (src/models/deepnade.rs): rows of images walked one dimension per step, each row its own
//! dimension. The first layer's pre-activations a1 live in host memory; a step applies g to
//! them, runs the layers above, and reads the one output unit of each row out in a fused
//! pass (bias, activation, dot with V[d]); observing a dimension adds one row of a table to
//! a1. The layers above run as tasks of a few rows, each through every layer on one thread
//! with the products of kernels/zero_skipping_matmul.rs: one fork-join per call instead of
//! one per layer and element-wise pass, and layers that stay in the core's cache. A block of
//! steps (the evaluation, where every step's pixel is known in advance) puts one row's
//! consecutive steps next to each other, where a ReLU's zeros mostly coincide.

use rayon::prelude::*;

use super::simd;
use super::zero_skipping_matmul::{self, Panels};

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
fn act_then_add_inline<const FMA: bool, const G: u8>(a: &mut [f32], add: &[f32], out: &mut [f32]) {
    for ((o, x), &d) in out.iter_mut().zip(a.iter_mut()).zip(add) {
        *o = act::<FMA, G>(*x);
        *x += d;
    }
}

#[inline(always)]
fn act_bias_in_place_inline<const FMA: bool, const G: u8>(z: &mut [f32], bias: &[f32]) {
    for (x, &b) in z.iter_mut().zip(bias) {
        *x = act::<FMA, G>(*x + b);
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
    /// out[k] = g(a[k]), then a[k] += add[k]: one step of a walk's first layer.
    fn act_then_add(g: Act, a: &mut [f32], add: &[f32], out: &mut [f32]) {
        match g.code() {
            RELU => act_then_add_inline::<FMA, RELU>(a, add, out),
            SIGMOID => act_then_add_inline::<FMA, SIGMOID>(a, add, out),
            _ => act_then_add_inline::<FMA, TANH>(a, add, out),
        }
    }
}

crate::dispatch_isa! {
    /// z[k] = g(z[k] + bias[k]).
    fn act_bias_in_place(g: Act, z: &mut [f32], bias: &[f32]) {
        match g.code() {
            RELU => act_bias_in_place_inline::<FMA, RELU>(z, bias),
            SIGMOID => act_bias_in_place_inline::<FMA, SIGMOID>(z, bias),
            _ => act_bias_in_place_inline::<FMA, TANH>(z, bias),
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
/// dimension adds to a1; `deeper` the layers above (W_l^T packed for
/// kernels/zero_skipping_matmul.rs, and b_l); `v` (n x hL) and `c` the output units.
pub struct HostNet {
    act: Act,
    h1: usize,
    table: Vec<f32>,
    deeper: Vec<(Panels, Vec<f32>)>,
    v: Vec<f32>,
    top: usize,
    c: Vec<f32>,
}

/// Rows one task of [`HostNet::logits`] takes through every layer: 13 tasks for two threads
/// at a batch of 100, one block of the register tile. (Rows of different walks share almost
/// no zeros, ~0.3% of the columns in 8 rows; a one-row tile that skips each row's own zeros
/// is bound by the loads of W from L2: 313-382 images/s sampling against 537-614 with
/// blocks of 8 rows.)
const ROWS_PER_STEP_TASK: usize = 8;

/// Rows (walks) one task of [`HostNet::block_logits`] takes through every layer: 4 x 16
/// steps of 500 units are 128 kB per layer, within the core's cache, and 25 tasks for two
/// threads at a batch of 100.
const ROWS_PER_TASK: usize = 4;

impl HostNet {
    /// `deeper`: (W_l^T row-major, b_l) for the layers above the first.
    pub fn new(
        act: Act,
        table: Vec<f32>,
        h1: usize,
        deeper: Vec<(Vec<f32>, Vec<f32>)>,
        v: Vec<f32>,
        c: Vec<f32>,
    ) -> Self {
        let mut width = h1;
        let mut packed = Vec::with_capacity(deeper.len());
        for (w_t, b) in deeper {
            let next = b.len();
            packed.push((Panels::new(&w_t, width, next), b));
            width = next;
        }
        Self {
            act,
            h1,
            table,
            deeper: packed,
            v,
            top: width,
            c,
        }
    }

    /// The logit of dimension dims[r] for every row r of `a1` (rows x h1, row-major): one
    /// step of many walks, tasks of a few rows through every layer.
    pub fn logits(&self, a1: &[f32], dims: &[u32]) -> Vec<f32> {
        let h1 = self.h1;
        let per_task: Vec<Vec<f32>> = a1
            .par_chunks((ROWS_PER_STEP_TASK * h1).max(1))
            .zip(dims.par_chunks(ROWS_PER_STEP_TASK))
            .map(|(a1, dims)| {
                let mut h = vec![0f32; a1.len()];
                for (out, a) in h.chunks_mut(h1.max(1)).zip(a1.chunks(h1.max(1))) {
                    act_into(self.act, a, out);
                }
                self.top(h, dims)
            })
            .collect();
        per_task.concat()
    }

    /// `dims.len()` steps of every row at once: step s of row r reads the logit of dimension
    /// dims[s][r], then observes table entry entries[s][r]; `a1` ends with all of them
    /// observed. The same numbers as [`logits`](Self::logits) and [`observe`](Self::observe)
    /// step by step (to the products' rounding). A task takes a few rows through every
    /// layer on one thread, one row's steps as consecutive rows of its products: one
    /// fork-join per block instead of four per step, layers that stay in the cache, and
    /// blocks of rows whose ReLU zeros mostly coincide (the zero-skipping product).
    pub fn block_logits(
        &self,
        a1: &mut [f32],
        dims: &[Vec<u32>],
        entries: &[Vec<u32>],
    ) -> Vec<Vec<f32>> {
        let (h1, steps) = (self.h1, dims.len());
        let rows = a1.len() / h1;
        let per_task: Vec<Vec<f32>> = a1
            .par_chunks_mut(ROWS_PER_TASK * h1)
            .enumerate()
            .map(|(t, a1)| {
                let first = t * ROWS_PER_TASK;
                // Row r * steps + s of h holds g(a1) of row first + r before its step s.
                let mut h = vec![0f32; a1.len() * steps];
                for (r, (h_r, a)) in h.chunks_mut(steps * h1).zip(a1.chunks_mut(h1)).enumerate() {
                    for (s, h_rs) in h_r.chunks_mut(h1).enumerate() {
                        let e = entries[s][first + r] as usize;
                        act_then_add(self.act, a, &self.table[e * h1..(e + 1) * h1], h_rs);
                    }
                }
                let task_rows = a1.len() / h1;
                let flat_dims: Vec<u32> = (0..task_rows * steps)
                    .map(|i| dims[i % steps][first + i / steps])
                    .collect();
                self.top(h, &flat_dims)
            })
            .collect();
        let mut out = vec![vec![0f32; rows]; steps];
        for (t, flat) in per_task.into_iter().enumerate() {
            for (i, l) in flat.into_iter().enumerate() {
                out[i % steps][t * ROWS_PER_TASK + i / steps] = l;
            }
        }
        out
    }

    /// The logit of dimension dims[r] for every row r of h = g(a1) (rows x h1, row-major),
    /// on the calling thread.
    fn top(&self, mut h: Vec<f32>, dims: &[u32]) -> Vec<f32> {
        let rows = dims.len();
        let mut width = self.h1;
        for (l, (panels, bias)) in self.deeper.iter().enumerate() {
            let next = bias.len();
            let mut z = vec![0f32; rows * next];
            zero_skipping_matmul::product(&h, rows, panels, &mut z);
            if l + 1 < self.deeper.len() {
                // z becomes g(z + b) in place: the next layer's input.
                for zr in z.chunks_exact_mut(next.max(1)) {
                    act_bias_in_place(self.act, zr, bias);
                }
            }
            h = z;
            width = next;
        }
        let Some((_, bias)) = self.deeper.last() else {
            // One hidden layer: h holds g(a1), a dot product with V[d] is left.
            return h
                .chunks_exact(width.max(1))
                .zip(dims)
                .map(|(hr, &d)| simd_dot(hr, self.v_row(d)) + self.c[d as usize])
                .collect();
        };
        h.chunks_exact(width.max(1))
            .zip(dims)
            .map(|(zr, &d)| act_dot(self.act, zr, bias, self.v_row(d)) + self.c[d as usize])
            .collect()
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
