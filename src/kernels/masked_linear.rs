//! MADE's masked layer, y = x (W * M)^T, as one candle op whose backward computes only what
//! training needs. candle's generic backward of `x.matmul(&(w * m).t())` differentiates every
//! operand: it forms the gradient of the constant mask (one more product and a zero-filled
//! accumulator of W's size), and of the data x in the first layer and the direct connection
//! (a whole extra matmul per step, thrown away). Here the mask is an operand without a gradient
//! and the input's gradient is computed only when the caller says the input is trained
//! (a hidden layer's output), so a training step does the five matmuls PyTorch does, not six.
//!
//! The forward runs on any backend through candle's own storage ops (the elementwise product
//! of W and M, then the backend's matmul with (W * M) read transposed), so CPU, CUDA and
//! Metal share it; on the CPU the mask is applied from its degrees instead of read as a
//! matrix (M[u, d] = 1 where rows[u] > cols[d], or >= for a hidden layer): a K-mask mixture's
//! K matrices (100 MB for 32 masks of a 784-500-784 MADE) would otherwise stream from memory
//! for every batch. The backward is
//!   dW = (g^T x) * M,   dx = g (W * M)   (only with `input_grad`),
//! plain tensor ops off the CPU; on the CPU g^T enters the matmul as a strided operand, M is
//! applied to the fresh product in place from the degrees, and W * M is the forward's.

use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_storage::{f32_slice, f32_slice_mut};
use super::poisoned;
use crate::dispatch_isa;

/// A degree mask, M[u, d] = 1 where rows[u] > cols[d] (`strict`) or rows[u] >= cols[d]: the
/// 0/1 matrix (the backward's, and the forward's off the CPU) and the degrees it came from.
#[derive(Clone)]
pub struct DegreeMask {
    pub matrix: Tensor,
    rows: Arc<[u32]>,
    cols: Arc<[u32]>,
    strict: bool,
}

impl DegreeMask {
    pub fn new(rows: &[usize], cols: &[usize], strict: bool, device: &Device) -> Result<Self> {
        let degree = |d: &[usize]| -> Arc<[u32]> { d.iter().map(|&v| v as u32).collect() };
        Ok(Self {
            matrix: degree_mask(rows, cols, strict, device)?,
            rows: degree(rows),
            cols: degree(cols),
            strict,
        })
    }
}

/// The connectivity mask of a MADE layer from the degrees of its units: entry (i, j) is 1 when
/// unit i of the layer may see unit j of the layer below, i.e. rows[i] >= cols[j] between
/// hidden layers, rows[i] > cols[j] (`strict`) into the outputs (Germain et al. 2015, eq. 12-13).
fn degree_mask(rows: &[usize], cols: &[usize], strict: bool, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> = rows
        .iter()
        .flat_map(|&r| {
            cols.iter().map(move |&c| {
                if r > c || (!strict && r == c) {
                    1.0
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(values, (rows.len(), cols.len()), device)
}

/// x (B, k) times (w * mask)^T with w, mask (out, k): (B, out). `input_grad`: x is trained
/// (the output of a layer below), so its gradient is needed; false for the data.
pub fn masked_linear(
    x: &Tensor,
    w: &Tensor,
    mask: &DegreeMask,
    input_grad: bool,
) -> Result<Tensor> {
    x.apply_op3(
        w,
        &mask.matrix,
        MaskedLinear {
            input_grad,
            mask: mask.clone(),
            masked_weights: Mutex::new(None),
        },
    )
}

struct MaskedLinear {
    input_grad: bool,
    mask: DegreeMask,
    /// W * M from the CPU forward, kept for the input's gradient g (W * M) when there is one.
    masked_weights: Mutex<Option<Tensor>>,
}

dispatch_isa! {
    /// One row of W * M from the degrees: w where cols[d] < limit, else 0.
    fn mask_row(out: &mut [f32], w: &[f32], cols: &[u32], limit: u32) {
        for ((o, &w), &c) in out.iter_mut().zip(w).zip(cols) {
            *o = if c < limit { w } else { 0.0 };
        }
    }
}

dispatch_isa! {
    /// One row of a W-shaped gradient times M, in place: zero where cols[d] >= limit.
    fn mask_row_in_place(row: &mut [f32], cols: &[u32], limit: u32) {
        for (v, &c) in row.iter_mut().zip(cols) {
            *v = if c < limit { *v } else { 0.0 };
        }
    }
}

impl DegreeMask {
    /// Row u keeps the columns d with cols[d] < limit(u): rows[u] > cols[d] (strict) or >=.
    fn limit(&self, row_degree: u32) -> u32 {
        if self.strict {
            row_degree
        } else {
            row_degree + 1
        }
    }
}

/// Multiplies a contiguous (out, k) f32 CPU tensor by the mask in place, from the degrees
/// (the backward's dW = (g^T x) * M without reading M).
struct TimesMask<'a>(&'a DegreeMask);

impl candle_core::InplaceOp1 for TimesMask<'_> {
    fn name(&self) -> &'static str {
        "masked-linear-times-mask"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let mask = self.0;
        let k = mask.cols.len();
        if layout.shape().dims() != [mask.rows.len(), k] {
            candle_core::bail!("masked-linear: degrees do not fit {:?}", layout.shape());
        }
        f32_slice_mut(storage, layout, "masked-linear gradient")?
            .par_chunks_mut(k.max(1))
            .zip(mask.rows.par_iter())
            .for_each(|(row, &r)| mask_row_in_place(row, &mask.cols, mask.limit(r)));
        Ok(())
    }
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

/// The forward on a GPU backend: (w * mask), contiguous (out, k), read as its (k, out) transpose.
#[cfg(any(feature = "cuda", feature = "metal"))]
fn forward<S: BackendStorage>(
    x: &S,
    xl: &Layout,
    w: &S,
    wl: &Layout,
    m: &S,
    ml: &Layout,
) -> Result<(S, Shape)> {
    let (batch, out, k) = dims(xl, wl, ml)?;
    let masked = w.binary_impl::<candle_core::op::Mul>(m, wl, ml)?;
    let masked_t = Layout::contiguous((out, k)).transpose(0, 1)?;
    let y = x.matmul(&masked, (1, batch, out, k), xl, &masked_t)?;
    Ok((y, Shape::from((batch, out))))
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
        let mask = &self.mask;
        if mask.rows.len() != out || mask.cols.len() != k {
            candle_core::bail!("masked-linear: degrees do not fit w {:?}", wl.shape());
        }
        let w = f32_slice(w, wl, "masked-linear weights")?;
        let mut masked = vec![0f32; out * k];
        masked
            .par_chunks_mut(k)
            .zip(w.par_chunks(k))
            .zip(mask.rows.par_iter())
            .for_each(|((row, w_row), &r)| mask_row(row, w_row, &mask.cols, mask.limit(r)));
        let masked = CpuStorage::F32(masked);
        let masked_t = Layout::contiguous((out, k)).transpose(0, 1)?;
        let y = x.matmul(&masked, (1, batch, out, k), xl, &masked_t)?;
        if let (true, CpuStorage::F32(masked)) = (self.input_grad, masked) {
            *self
                .masked_weights
                .lock()
                .map_err(poisoned("masked-linear"))? =
                Some(Tensor::from_vec(masked, (out, k), &Device::Cpu)?);
        }
        Ok((y, Shape::from((batch, out))))
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
        forward(x, xl, w, wl, m, ml)
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
        forward(x, xl, w, wl, m, ml)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        mask: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let grad_w = if grad.device().is_cpu() && grad.dtype() == DType::F32 {
            // candle's CPU matmul reads g^T as a strided operand (no copy), and the product
            // is fresh, so the mask is applied to it in place from the degrees.
            let grad_w = grad.t()?.matmul(x)?;
            grad_w.inplace_op1(&TimesMask(&self.mask))?;
            grad_w
        } else {
            // Contiguous operands: candle's CUDA matmul wants them.
            (grad.t()?.contiguous()?.matmul(&x.contiguous()?)? * mask)?
        };
        let grad_x = if self.input_grad {
            let stored = self
                .masked_weights
                .lock()
                .map_err(poisoned("masked-linear"))?
                .take();
            let masked = match stored {
                Some(masked) => masked,
                None => (w * mask)?,
            };
            Some(grad.matmul(&masked)?)
        } else {
            None
        };
        Ok((grad_x, Some(grad_w), None))
    }
}
