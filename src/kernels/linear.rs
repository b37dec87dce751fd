//! A dense layer x W^T + b (x (B, k), W (n, k), b (n)) as one op, for deep NADE's stack. Off
//! the CPU its forward is the backend's own matmul and broadcast addition; on the CPU the
//! products are src/kernels/tiled_matmul.rs's, which use both cores at a batch of 100 where
//! candle's matmul used one. The backward differs from the ops it replaces:
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

use rayon::prelude::*;

use super::bias_add::column_sums;
use super::cpu_storage::{f32_slice, with_f32_values};
use super::tiled_matmul::{product, View};

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
        let (Ok(x_values), Ok(w_values), Ok(b_values)) = (
            f32_slice(x, xl, "linear input"),
            f32_slice(w, wl, "linear weights"),
            f32_slice(b, bl, "linear bias"),
        ) else {
            // Another dtype or a strided operand: candle's own ops.
            return forward(x, xl, w, wl, b, bl);
        };
        let (rows, k) = xl.shape().dims2()?;
        let n = b_values.len();
        if wl.shape().dims() != [n, k] {
            candle_core::bail!("linear: weights {:?} for {rows} x {k} inputs", wl.shape());
        }
        let mut y = product(View::new(x_values, rows, k), View::new(w_values, n, k).t());
        y.par_chunks_mut(n.max(1))
            .for_each(|row| row.iter_mut().zip(b_values).for_each(|(v, b)| *v += b));
        Ok((CpuStorage::F32(y), Shape::from((rows, n))))
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
        if grad.device().is_cpu() && grad.dtype() == DType::F32 {
            return cpu_bwd(x, w, &grad);
        }
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

/// The backward on the CPU: dx = g W (only where x carries a graph), dW = g^T x, db the
/// column sums of g, with g, x and W contiguous f32.
fn cpu_bwd(
    x: &Tensor,
    w: &Tensor,
    grad: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let (rows, n) = grad.dims2()?;
    let (w, x) = (w.contiguous()?, x.contiguous()?);
    let k = w.dim(1)?;
    let device = grad.device();
    with_f32_values(grad, "linear gradient", |g| -> Result<_> {
        let g = View::new(g, rows, n);
        let grad_x = if x.track_op() {
            let dx = with_f32_values(&w, "linear weights", |w| product(g, View::new(w, n, k)))?;
            Some(Tensor::from_vec(dx, (rows, k), device)?)
        } else {
            None
        };
        let dw = with_f32_values(&x, "linear input", |x| {
            product(g.t(), View::new(x, rows, k))
        })?;
        Ok((
            grad_x,
            Some(Tensor::from_vec(dw, (n, k), device)?),
            Some(column_sums(grad)?),
        ))
    })?
}
