//! MADE's masked layer, y = x (W * M)^T, as one candle op whose backward computes only what
//! training needs. candle's generic backward of `x.matmul(&(w * m).t())` differentiates every
//! operand: it forms the gradient of the constant mask (one more product and a zero-filled
//! accumulator of W's size), and of the data x in the first layer and the direct connection
//! (a whole extra matmul per step, thrown away). Here the mask is an operand without a gradient
//! and the input's gradient is computed only when the caller says the input is trained
//! (a hidden layer's output), so a training step does the five matmuls PyTorch does, not six.
//!
//! The backward is
//!   dW = (g^T x) * M,   dx = g (W * M)   (only with `input_grad`).
//!
//! Off the CPU, forward and backward are the backend's own ops (W * M, then its matmul).
//! On the CPU the op works in the mask's staircase order (units sorted by degree, see
//! [`Staircase`]), where M keeps a prefix of each row: the three products read only the
//! entries M keeps, about half of W's, in tiles that both cores share
//! (src/kernels/tiled_matmul.rs); the mask comes from the degrees, never read as a matrix
//! (a K-mask mixture's K matrices, 100 MB for 32 masks of a 784-500-784 MADE, would stream
//! from memory for every batch). The measured effect is in docs/performance.md.

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_storage::{f32_slice, with_f32_values};
use super::poisoned;
use super::tiled_matmul::{product_in_bands, Band, View};

/// A degree mask, M[u, d] = 1 where rows[u] > cols[d] (`strict`) or rows[u] >= cols[d]: the
/// 0/1 matrix (the forward's and backward's off the CPU) and, for the CPU, its staircase.
#[derive(Clone)]
pub struct DegreeMask {
    pub matrix: Tensor,
    staircase: Arc<Staircase>,
}

impl DegreeMask {
    pub fn new(rows: &[usize], cols: &[usize], strict: bool, device: &Device) -> Result<Self> {
        let degree = |d: &[usize]| -> Vec<u32> { d.iter().map(|&v| v as u32).collect() };
        Ok(Self {
            matrix: degree_mask(rows, cols, strict, device)?,
            staircase: Arc::new(Staircase::new(&degree(rows), &degree(cols), strict)),
        })
    }
}

/// The connectivity mask of a MADE layer from the degrees of its units: entry (i, j) is 1 when
/// unit i of the layer may see unit j of the layer below, i.e. rows[i] >= cols[j] between
/// hidden layers, rows[i] > cols[j] (`strict`) into the outputs (Germain et al. 2015, eq. 12-13).
/// Made on the device from the two degree vectors (one comparison, one conversion), so that
/// a GPU receives the degrees, not the (rows, cols) matrix: a 1,000 x 1,000 layer's mask is
/// 4 MB to upload for every fresh mask of a training step. Degrees are exact in f32 (< 2^24).
fn degree_mask(rows: &[usize], cols: &[usize], strict: bool, device: &Device) -> Result<Tensor> {
    let column = |d: &[usize], shape: (usize, usize)| {
        Tensor::from_vec(
            d.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            shape,
            device,
        )
    };
    let (r, c) = (
        column(rows, (rows.len(), 1))?,
        column(cols, (1, cols.len()))?,
    );
    let keep = if strict {
        r.broadcast_gt(&c)?
    } else {
        r.broadcast_ge(&c)?
    };
    keep.to_dtype(DType::F32)?.contiguous()
}

/// x (B, k) times (w * mask)^T with w, mask (out, k): (B, out). `input_grad`: x is trained
/// (the output of a layer below), so its gradient is needed; false for the data.
pub fn masked_linear(
    x: &Tensor,
    w: &Tensor,
    mask: &DegreeMask,
    input_grad: bool,
) -> Result<Tensor> {
    // The CPU path reads x row by row.
    x.contiguous()?.apply_op3(
        w,
        &mask.matrix,
        MaskedLinear {
            input_grad,
            mask: mask.clone(),
            sorted_weights: Mutex::new(None),
            #[cfg(feature = "cuda")]
            masked_weights: Mutex::new(None),
        },
    )
}

/// W * M made once for many products while W stays as it is (an evaluation over a data set,
/// where a K-mask MADE would otherwise gather or multiply each mask's weights again for every
/// batch: a fifth of a batch-100 evaluation on the CPU, plus the page faults of the fresh
/// rows). No gradient flows through it.
pub struct MaskedWeights {
    prepared: Prepared,
    /// (out, k).
    shape: (usize, usize),
}

enum Prepared {
    /// The CPU's: W * M in the staircase's order, with the staircase.
    Sorted {
        staircase: Arc<Staircase>,
        weights: Vec<f32>,
    },
    /// Elsewhere: (W * M)^T, contiguous (k, out), the right-hand operand of a matmul as
    /// candle's CUDA matmul wants it.
    Transposed(Tensor),
}

impl MaskedWeights {
    /// W (out, k) under `mask`.
    pub fn new(w: &Tensor, mask: &DegreeMask) -> Result<Self> {
        let shape = w.dims2()?;
        if mask.matrix.dims2()? != shape {
            candle_core::bail!(
                "masked weights: w {:?} and mask {:?} differ",
                w.shape(),
                mask.matrix.shape()
            );
        }
        let prepared = if w.device().is_cpu() && w.dtype() == DType::F32 {
            let staircase = mask.staircase.clone();
            let weights = with_f32_values(&w.contiguous()?, "masked weights", |w| {
                staircase.sorted_weights(w)
            })?;
            Prepared::Sorted { staircase, weights }
        } else {
            Prepared::Transposed((w.detach() * &mask.matrix)?.t()?.contiguous()?)
        };
        Ok(Self { prepared, shape })
    }

    /// x (B, k) (W * M)^T: (B, out), without an autograd graph; the same values as
    /// [`masked_linear`]'s forward.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let (batch, k) = x.dims2()?;
        let (out, k_w) = self.shape;
        if k != k_w {
            candle_core::bail!("masked weights: x {:?} times ({out}, {k_w})^T", x.shape());
        }
        match &self.prepared {
            Prepared::Sorted { staircase, weights } => {
                let y = with_f32_values(&x.contiguous()?, "masked-linear input", |x| {
                    staircase.product(x, batch, weights)
                })?;
                Tensor::from_vec(y, (batch, out), x.device())
            }
            Prepared::Transposed(wt) => x.detach().contiguous()?.matmul(wt),
        }
    }
}

struct MaskedLinear {
    input_grad: bool,
    mask: DegreeMask,
    /// W * M in the staircase's order from the CPU forward, kept for the input's gradient
    /// g (W * M) when there is one.
    sorted_weights: Mutex<Option<Vec<f32>>>,
    /// W * M (out, k) from the CUDA forward, kept for the input's gradient when there is one:
    /// a training step multiplies each layer's weights by its mask once, not twice.
    #[cfg(feature = "cuda")]
    masked_weights: Mutex<Option<candle_core::CudaStorage>>,
}

type Grads = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

impl MaskedLinear {
    /// W * M as the forward made it (CUDA), else made again.
    fn stored_masked_weights(&self, w: &Tensor, mask: &Tensor) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        {
            let stored = self
                .masked_weights
                .lock()
                .map_err(poisoned("masked-linear"))?
                .take();
            if let Some(storage) = stored {
                return Ok(Tensor::from_storage(
                    candle_core::Storage::Cuda(storage),
                    w.shape().clone(),
                    candle_core::op::BackpropOp::none(),
                    false,
                ));
            }
        }
        w * mask
    }
}

impl MaskedLinear {
    /// The backward on the CPU, in the staircase's order: with g and x sorted like the
    /// forward's output and input,
    ///   dW = g^T x on the entries M keeps (a band of inputs needs the units that read them),
    ///   dx = g (W * M) (a band of inputs sums over the units that read them).
    fn cpu_bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
        sorted_w: Option<Vec<f32>>,
    ) -> Result<Grads> {
        let stairs = &*self.mask.staircase;
        let (batch, out) = grad.dims2()?;
        let k = stairs.cols.len();
        let sorted_g = with_f32_values(grad, "masked-linear gradient", |g| {
            permute_columns(g, &stairs.rows, stairs.rows_in_order).into_owned()
        })?;
        let sorted_x = with_f32_values(&x.contiguous()?, "masked-linear input", |x| {
            permute_columns(x, &stairs.cols, stairs.cols_in_order).into_owned()
        })?;
        let g = View::new(&sorted_g, batch, out);
        let readers = |inputs: Range<usize>| stairs.first_reader(inputs.start)..out;
        let sorted_dw =
            product_in_bands(g.t(), View::new(&sorted_x, batch, k), BAND, |inputs| Band {
                rows: readers(inputs),
                depth: 0..batch,
            });
        let dw = Tensor::from_vec(stairs.unsorted_weights(&sorted_dw), (out, k), x.device())?;
        if !self.input_grad {
            return Ok((None, Some(dw), None));
        }
        let sorted_w = match sorted_w {
            Some(sorted) => sorted,
            None => with_f32_values(&w.contiguous()?, "masked-linear weights", |w| {
                stairs.sorted_weights(w)
            })?,
        };
        let sorted_dx = product_in_bands(g, View::new(&sorted_w, out, k), BAND, |inputs| Band {
            rows: 0..batch,
            depth: readers(inputs),
        });
        let dx = permute_columns(&sorted_dx, &stairs.col_rank, stairs.cols_in_order).into_owned();
        Ok((
            Some(Tensor::from_vec(dx, (batch, k), x.device())?),
            Some(dw),
            None,
        ))
    }
}

/// The mask with both unit sets sorted by degree, where it is a staircase: sorted output unit
/// i reads the first `depth[i]` sorted inputs, and `depth` never falls. The CPU path computes
/// in this order (inputs gathered into it, outputs gathered back), so that a band of output
/// units multiplies only the inputs it reads: about half of W for degrees drawn as MADE draws
/// them.
struct Staircase {
    /// Sorted output unit i is unit `rows[i]`; unit u is sorted unit `row_rank[u]`.
    rows: Vec<u32>,
    row_rank: Vec<u32>,
    /// Sorted input j is input `cols[j]`; input d is sorted input `col_rank[d]`.
    cols: Vec<u32>,
    col_rank: Vec<u32>,
    depth: Vec<usize>,
    /// The orders that are 0, 1, 2, ... (the inputs of a natural-order first layer), where a
    /// permutation is a copy or nothing.
    rows_in_order: bool,
    cols_in_order: bool,
}

/// Output units per band of the CPU products: the fastest of 16 to 128 on MADE's shapes.
const BAND: usize = 16;

/// The units by degree (ties by index), and each unit's place in that order.
fn by_degree(degrees: &[u32]) -> (Vec<u32>, Vec<u32>) {
    let mut order: Vec<u32> = (0..degrees.len() as u32).collect();
    order.sort_by_key(|&u| degrees[u as usize]);
    let mut rank = vec![0u32; order.len()];
    for (place, &u) in order.iter().enumerate() {
        rank[u as usize] = place as u32;
    }
    (order, rank)
}

impl Staircase {
    fn new(rows: &[u32], cols: &[u32], strict: bool) -> Self {
        let (row_order, row_rank) = by_degree(rows);
        let (col_order, col_rank) = by_degree(cols);
        let sorted: Vec<u32> = col_order.iter().map(|&d| cols[d as usize]).collect();
        // Unit u reads the inputs of degree below its limit: rows[u] > cols[d] (strict) or
        // >=; a prefix of the sorted inputs, longer for a higher degree.
        let depth = row_order
            .iter()
            .map(|&u| {
                let limit = rows[u as usize] + u32::from(!strict);
                sorted.partition_point(|&c| c < limit)
            })
            .collect();
        let in_order = |order: &[u32]| order.iter().enumerate().all(|(i, &u)| i == u as usize);
        Self {
            rows_in_order: in_order(&row_order),
            cols_in_order: in_order(&col_order),
            rows: row_order,
            row_rank,
            cols: col_order,
            col_rank,
            depth,
        }
    }

    /// The first sorted unit that reads sorted input j (all after it do too).
    fn first_reader(&self, j: usize) -> usize {
        self.depth.partition_point(|&d| d <= j)
    }

    /// The band of a product whose columns are output units: the depth its last unit reads.
    fn band_of_units(&self, batch: usize, units: Range<usize>) -> Band {
        Band {
            rows: 0..batch,
            depth: 0..units.end.checked_sub(1).map_or(0, |last| self.depth[last]),
        }
    }

    /// x (W * M)^T, (batch x out) in the units' own order, from x (batch x k) and W * M in
    /// sorted order ([`Staircase::sorted_weights`]).
    fn product(&self, x: &[f32], batch: usize, sorted_w: &[f32]) -> Vec<f32> {
        let (out, k) = (self.rows.len(), self.cols.len());
        let sorted_x = permute_columns(x, &self.cols, self.cols_in_order);
        let sorted_y = product_in_bands(
            View::new(&sorted_x, batch, k),
            View::new(sorted_w, out, k).t(),
            BAND,
            |units| self.band_of_units(batch, units),
        );
        permute_columns(&sorted_y, &self.row_rank, self.rows_in_order).into_owned()
    }

    /// W * M in sorted order (out x k): the sorted rows' prefixes, zeros after them.
    fn sorted_weights(&self, w: &[f32]) -> Vec<f32> {
        let k = self.cols.len();
        rows_written_by(self.rows.len(), k, |i, out| {
            let (u, depth) = (self.rows[i] as usize, self.depth[i]);
            let w_row = &w[u * k..(u + 1) * k];
            let (prefix, rest) = out.split_at_mut(depth);
            // SAFETY: cols is a permutation of 0..k, and w_row is k long.
            unsafe { gather(prefix, w_row, &self.cols, u32::MAX, self.cols_in_order) };
            rest.fill(MaybeUninit::new(0.0));
        })
    }

    /// Sorted (out x k) weight gradients back in W's order, zero where M is.
    fn unsorted_weights(&self, sorted: &[f32]) -> Vec<f32> {
        let k = self.cols.len();
        rows_written_by(self.rows.len(), k, |u, out| {
            let i = self.row_rank[u] as usize;
            let row = &sorted[i * k..(i + 1) * k];
            let depth = self.depth[i] as u32;
            // SAFETY: col_rank is a permutation of 0..k, and row is k long.
            unsafe { gather(out, row, &self.col_rank, depth, self.cols_in_order) };
        })
    }
}

/// `rows` x `width` floats, row r written by `write(r, row)` on rayon's threads, which must
/// write every entry: without a zero-fill first, which was 15% of a 32-mask evaluation.
fn rows_written_by(
    rows: usize,
    width: usize,
    write: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    let mut out: Vec<MaybeUninit<f32>> = Vec::with_capacity(rows * width);
    out.resize_with(rows * width, MaybeUninit::uninit);
    if width > 0 {
        out.par_chunks_mut(width)
            .enumerate()
            .for_each(|(r, row)| write(r, row));
    }
    let mut out = std::mem::ManuallyDrop::new(out);
    let (ptr, len, capacity) = (out.as_mut_ptr(), out.len(), out.capacity());
    // SAFETY: every entry was written (write's contract), MaybeUninit<f32> has f32's layout,
    // and the allocation moves from `out`, which is not dropped.
    unsafe { Vec::from_raw_parts(ptr as *mut f32, len, capacity) }
}

/// out[j] = row[at[j]] where at[j] < limit, else 0 (`limit` u32::MAX: every j), for every j
/// of out (at is at least as long); a run of indices 0, 1, 2, ... (the natural order's
/// inputs) is a copy. With AVX-512, 16 entries per gather instruction: the scalar loop was a
/// fifth of a MADE evaluation.
///
/// # Safety
/// Every index of `at` (below out.len()) is below row.len(): the staircase's orders and ranks
/// are permutations of 0..k, and their rows are k long.
unsafe fn gather(
    out: &mut [MaybeUninit<f32>],
    row: &[f32],
    at: &[u32],
    limit: u32,
    identity: bool,
) {
    let len = out.len();
    let at = &at[..len];
    debug_assert!(at.iter().all(|&a| (a as usize) < row.len()));
    if identity {
        // Index j is j: the first `limit` entries of the row, then zeros.
        let kept = len.min(limit as usize);
        for (o, &v) in out[..kept].iter_mut().zip(&row[..kept]) {
            o.write(v);
        }
        out[kept..].fill(MaybeUninit::new(0.0));
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if let crate::kernels::simd::Isa::Avx512 = crate::kernels::simd::isa() {
        // SAFETY: the CPU has AVX-512F (isa); the indices are the caller's promise.
        unsafe { gather_avx512(out, row, at, limit) };
        return;
    }
    for (o, &a) in out.iter_mut().zip(at) {
        o.write(if a < limit { row[a as usize] } else { 0.0 });
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gather_avx512(out: &mut [MaybeUninit<f32>], row: &[f32], at: &[u32], limit: u32) {
    use std::arch::x86_64::*;
    let limit_v = _mm512_set1_epi32(limit as i32);
    let chunks = out.len() / 16;
    let out_ptr = out.as_mut_ptr() as *mut f32;
    for c in 0..chunks {
        let idx = _mm512_loadu_si512(at.as_ptr().add(c * 16) as *const _);
        // Unsigned compare: the indices and the limit are u32.
        let keep = _mm512_cmplt_epu32_mask(idx, limit_v);
        let v = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), keep, idx, row.as_ptr());
        _mm512_storeu_ps(out_ptr.add(c * 16), v);
    }
    for j in chunks * 16..out.len() {
        let a = *at.get_unchecked(j);
        out.get_unchecked_mut(j).write(if a < limit {
            *row.get_unchecked(a as usize)
        } else {
            0.0
        });
    }
}

/// Row by row, out[r][j] = x[r][at[j]], `at` a permutation of 0..width (its rows' width):
/// into the staircase's order with `at` its order, back with `at` the ranks. `x` itself where
/// `at` is 0, 1, 2, ...
fn permute_columns<'a>(x: &'a [f32], at: &[u32], in_order: bool) -> Cow<'a, [f32]> {
    if in_order {
        return Cow::Borrowed(x);
    }
    let width = at.len();
    Cow::Owned(rows_written_by(x.len() / width.max(1), width, |r, out| {
        let row = &x[r * width..(r + 1) * width];
        // SAFETY: `at` is a permutation of 0..width (the staircase's), rows are width long.
        unsafe { gather(out, row, at, u32::MAX, false) }
    }))
}

/// (B, out, k), after checking the shapes agree.
fn dims(xl: &Layout, wl: &Layout, ml: &Layout) -> Result<(usize, usize, usize)> {
    let (batch, k) = xl.shape().dims2()?;
    let (out, k_w) = wl.shape().dims2()?;
    if k_w != k || ml.shape() != wl.shape() {
        candle_core::bail!(
            "masked-linear: x {:?}, w {:?} and mask {:?} do not fit x (w * mask)^T",
            xl.shape(),
            wl.shape(),
            ml.shape()
        );
    }
    Ok((batch, out, k))
}

/// The forward on a GPU backend: (w * mask), contiguous (out, k), read as its (k, out)
/// transpose. Returns y and w * mask.
#[cfg(any(feature = "cuda", feature = "metal"))]
fn forward<S: candle_core::backend::BackendStorage>(
    x: &S,
    xl: &Layout,
    w: &S,
    wl: &Layout,
    m: &S,
    ml: &Layout,
) -> Result<(S, Shape, S)> {
    let (batch, out, k) = dims(xl, wl, ml)?;
    let masked = w.binary_impl::<candle_core::op::Mul>(m, wl, ml)?;
    let masked_t = Layout::contiguous((out, k)).transpose(0, 1)?;
    let y = x.matmul(&masked, (1, batch, out, k), xl, &masked_t)?;
    Ok((y, Shape::from((batch, out)), masked))
}

impl CustomOp3 for MaskedLinear {
    fn name(&self) -> &'static str {
        "masked-linear"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        _m: &CpuStorage,
        ml: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (batch, out, k) = dims(xl, wl, ml)?;
        let stairs = &*self.mask.staircase;
        if stairs.rows.len() != out || stairs.cols.len() != k {
            candle_core::bail!("masked-linear: degrees do not fit w {:?}", wl.shape());
        }
        let sorted_w = stairs.sorted_weights(f32_slice(w, wl, "masked-linear weights")?);
        let y = stairs.product(f32_slice(x, xl, "masked-linear input")?, batch, &sorted_w);
        if self.input_grad {
            *self
                .sorted_weights
                .lock()
                .map_err(poisoned("masked-linear"))? = Some(sorted_w);
        }
        Ok((CpuStorage::F32(y), Shape::from((batch, out))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &Layout,
        w: &candle_core::CudaStorage,
        wl: &Layout,
        m: &candle_core::CudaStorage,
        ml: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (y, shape, masked) = forward(x, xl, w, wl, m, ml)?;
        if self.input_grad {
            *self
                .masked_weights
                .lock()
                .map_err(poisoned("masked-linear"))? = Some(masked);
        }
        Ok((y, shape))
    }

    #[cfg(feature = "metal")]
    fn metal_fwd(
        &self,
        x: &candle_core::MetalStorage,
        xl: &Layout,
        w: &candle_core::MetalStorage,
        wl: &Layout,
        m: &candle_core::MetalStorage,
        ml: &Layout,
    ) -> Result<(candle_core::MetalStorage, Shape)> {
        let (y, shape, _) = forward(x, xl, w, wl, m, ml)?;
        Ok((y, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        mask: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<Grads> {
        let grad = grad.contiguous()?;
        if grad.device().is_cpu() && grad.dtype() == DType::F32 {
            let stored = self
                .sorted_weights
                .lock()
                .map_err(poisoned("masked-linear"))?
                .take();
            return self.cpu_bwd(x, w, &grad, stored);
        }
        // Contiguous operands: candle's CUDA matmul wants them.
        let grad_w = (grad.t()?.contiguous()?.matmul(&x.contiguous()?)? * mask)?;
        let grad_x = if self.input_grad {
            Some(grad.matmul(&self.stored_masked_weights(w, mask)?)?)
        } else {
            None
        };
        Ok((grad_x, Some(grad_w), None))
    }
}
