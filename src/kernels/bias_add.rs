//! a + b with a (B, n) and a bias b (n) added to every row: a layer's bias, with a backward
//! whose bias gradient is a plain column sum. candle's `broadcast_add` backward reduces the
//! upstream gradient over dimension 0 with its generic strided reduction (a division and a
//! modulo per element, ~10% of a MADE-500 training step on the CPU); here the CPU sums the
//! rows of the contiguous gradient in order, which is the same sum in the same order, so the
//! result is bit for bit candle's. The forward is candle's own broadcast addition on every
//! backend; off the CPU the backward is candle's `sum(0)`.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Result, Shape, Storage, Tensor};

use super::cpu_storage::f32_slice;

/// a (B, n) + b (n), broadcast over the rows.
pub fn bias_add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.apply_op2(b, BiasAdd)
}

struct BiasAdd;

/// a + b broadcast, on any backend: the storage op `broadcast_add` runs.
fn forward<S: BackendStorage>(a: &S, al: &Layout, b: &S, bl: &Layout) -> Result<(S, Shape)> {
    let (_, n) = al.shape().dims2()?;
    if bl.shape().dims() != [n] {
        candle_core::bail!(
            "bias-add: bias {:?} does not fit the rows of {:?}",
            bl.shape(),
            al.shape()
        );
    }
    let b_rows = bl.broadcast_as(al.shape())?;
    Ok((
        a.binary_impl::<candle_core::op::Add>(b, al, &b_rows)?,
        al.shape().clone(),
    ))
}

impl CustomOp2 for BiasAdd {
    fn name(&self) -> &'static str {
        "bias-add"
    }

    fn cpu_fwd(
        &self,
        a: &CpuStorage,
        al: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        forward(a, al, b, bl)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        a: &candle_core::CudaStorage,
        al: &Layout,
        b: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        forward(a, al, b, bl)
    }

    #[cfg(feature = "metal")]
    fn metal_fwd(
        &self,
        a: &candle_core::MetalStorage,
        al: &Layout,
        b: &candle_core::MetalStorage,
        bl: &Layout,
    ) -> Result<(candle_core::MetalStorage, Shape)> {
        forward(a, al, b, bl)
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_b = if grad.device().is_cpu() && grad.dtype() == DType::F32 {
            column_sums(&grad.contiguous()?)?
        } else {
            grad.sum(0)?
        };
        Ok((Some(grad.clone()), Some(grad_b)))
    }
}

/// sum_r g[r, j] of a contiguous f32 (B, n) CPU tensor, row after row.
pub(crate) fn column_sums(g: &Tensor) -> Result<Tensor> {
    let (rows, n) = g.dims2()?;
    let (storage, layout) = g.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("bias-add: the column sums are the CPU's");
    };
    let g = f32_slice(cpu, layout, "the bias gradient")?;
    let mut sums = vec![0f32; n];
    for row in g.chunks_exact(n.max(1)).take(rows) {
        for (s, &v) in sums.iter_mut().zip(row) {
            *s += v;
        }
    }
    Tensor::from_vec(sums, n, &Device::Cpu)
}
