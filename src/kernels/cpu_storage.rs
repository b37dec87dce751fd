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
