//! Fused ops, one file per op in the manner of candle-nn's `ops.rs`: an op type holds
//! `cpu_fwd`, `cuda_fwd` (feature `cuda`, kernels in `cuda/*.cu`, compiled to PTX by build.rs)
//! and `bwd`, so the op, not the model, picks the device; a model calls one function per op.
//! Beside them: the SIMD helpers of the CPU kernels and views of candle's CPU storage.

pub mod adam;
pub mod bernoulli_log_prob;
pub mod bias_add;
pub mod cpu_storage;
pub mod deepnade_steps;
pub mod deepnade_walk;
pub mod linear;
pub mod masked_linear;
pub mod nade_log_prob;
pub mod nade_logits;
pub mod nade_packed;
pub mod nade_sample;
pub mod samplers;
pub mod sgd;
pub mod simd;
pub mod tiled_matmul;
pub mod transpose;
pub mod zero_skipping_matmul;

#[cfg(feature = "cuda")]
pub mod nade_cuda;

/// The error for a lock poisoned while an op held what its forward stored for the backward.
pub(crate) fn poisoned<T>(op: &'static str) -> impl FnOnce(T) -> candle_core::Error {
    move |_| candle_core::Error::Msg(format!("{op}: a thread panicked holding the stored state"))
}
