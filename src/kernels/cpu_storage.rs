//! Borrowing candle CPU storage as plain f32 slices inside custom ops (the fused NADE kernels,
//! the in-place Adam step). `what` names the operand in the error.

use candle_core::{CpuStorage, Layout, Result};

pub fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(data), Some((start, end))) => Ok(&data[start..end]),
        (CpuStorage::F32(_), None) => candle_core::bail!("{what} must be contiguous"),
        _ => candle_core::bail!("{what} must be f32"),
    }
}

pub fn f32_slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout, what: &str) -> Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(data), Some((start, end))) => Ok(&mut data[start..end]),
        (CpuStorage::F32(_), None) => candle_core::bail!("{what} must be contiguous"),
        _ => candle_core::bail!("{what} must be f32"),
    }
}

/// `f` applied to a contiguous f32 CPU tensor's values (an error for other tensors).
pub fn with_f32_values<T>(
    t: &candle_core::Tensor,
    what: &str,
    f: impl FnOnce(&[f32]) -> T,
) -> Result<T> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("{what} must be on the CPU");
    };
    Ok(f(f32_slice(cpu, layout, what)?))
}
