//! A dense layer x W^T + b (x (B, k), W (n, k), b (n)) as one op, for deep NADE's stack. Its
//! forward is candle's own matmul and broadcast addition on every backend (the values are
//! bit for bit `bias_add(x.matmul(W.t()))`); the backward is where it differs from the ops
//! it replaces:
//!
//! - W's gradient comes out as grad^T x, (n, k) in W's own layout. Through `W.t()` candle
//!   computes x^T grad, (k, n), and adds its transpose into a zero-filled accumulator: a
//!   strided pass over the weights per layer and step.
//! - The input's gradient grad W is computed only when the input carries a graph. candle's
//!   matmul backward computes both operands' gradients unconditionally, so deep NADE's first
//!   layer (input [x * m ; m], no graph) cost a (B, n) x (n, 2n) matmul per step, as large
//!   as the layer's forward, for a gradient nobody reads.
//!
//! On deep NADE 2 x 500 (CPU, batches of 100) the two were ~20% of a training step.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

use super::bias_add::column_sums;

/// x W^T + b with x (B, k), W (n, k) and b (n).
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.apply_op3(w, b, Linear)
}

struct Linear;

/// The matmul and the bias addition as candle's storage ops, on any backend.
fn forward<S: BackendStorage>(
    x: &S,
    xl: &Layout,
    w: &S,
    wl: &Layout,
    b: &S,
    bl: &Layout,
) -> Result<(S, Shape)> {
    let (rows, k) = xl.shape().dims2()?;
    let (n, k_w) = wl.shape().dims2()?;
    if k != k_w || bl.shape().dims() != [n] {
        candle_core::bail!(
            "linear: input {:?}, weights {:?} and bias {:?} do not fit together",
            xl.shape(),
            wl.shape(),
            bl.shape()
        );
    }
    let shape = Shape::from((rows, n));
    let xw = x.matmul(w, (1, rows, n, k), xl, &wl.transpose(0, 1)?)?;
    let b_rows = bl.broadcast_as(shape.clone())?;
    let out = xw.binary_impl::<candle_core::op::Add>(b, &Layout::contiguous(&shape), &b_rows)?;
    Ok((out, shape))
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        forward(x, xl, w, wl, b, bl)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &Layout,
        w: &candle_core::CudaStorage,
        wl: &Layout,
        b: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        forward(x, xl, w, wl, b, bl)
    }

    #[cfg(feature = "metal")]
    fn metal_fwd(
        &self,
        x: &candle_core::MetalStorage,
        xl: &Layout,
        w: &candle_core::MetalStorage,
        wl: &Layout,
        b: &candle_core::MetalStorage,
        bl: &Layout,
    ) -> Result<(candle_core::MetalStorage, Shape)> {
        forward(x, xl, w, wl, b, bl)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let grad_x = if x.track_op() {
            Some(grad.matmul(&w.contiguous()?)?)
        } else {
            None
        };
        let grad_w = grad.t()?.matmul(&x.contiguous()?)?;
        let grad_b = if grad.device().is_cpu() && grad.dtype() == DType::F32 {
            column_sums(&grad)?
        } else {
            grad.sum(0)?
        };
        Ok((grad_x, Some(grad_w), Some(grad_b)))
    }
}
