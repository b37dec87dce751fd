//! The in-place momentum-SGD step: `Velocity` (v = momentum v + grad_scale g) and `ApplySgd`
//! (w = decay w - lr v), each one parallel pass over CPU memory, and the same step with tensor
//! ops for the other devices. [`crate::optim::Optimizer`] decides what the step is.
//!
//! As tensor ops the step is seven element-wise passes over the weights, each allocating its
//! result, candle's unary maps single-threaded: on deep NADE 2 x 500 (1.5 M weights, batches
//! of 100) they were a third of a CPU training step. The loops here compute the tensor ops'
//! expressions in their order, `+ 0.0` included (candle's `t * s` is the affine map
//! `t * s + 0`), so the weights are bit for bit those of the tensor-op step and a run resumed
//! from a checkpoint of either goes on identically.

use candle_core::{CpuStorage, InplaceOp2, Layout, Tensor, Var};

use rayon::prelude::*;

use super::cpu_storage::{f32_slice, f32_slice_mut};
use crate::dispatch_isa;

/// The numbers of one momentum-SGD step.
#[derive(Clone, Copy, Debug)]
pub struct SgdStep {
    pub momentum: f32,
    /// Gradient clipping factor (1 without clipping).
    pub grad_scale: f32,
    pub lr: f32,
    /// 1 - lr * weight_decay.
    pub decay: f32,
}

impl SgdStep {
    /// Updates `velocity` ((1, numel)) and the weights of `p` with the gradient `g` (flat,
    /// contiguous): in place on the CPU, with tensor ops elsewhere.
    pub fn apply(&self, p: &Var, g: &Tensor, velocity: &mut Tensor) -> candle_core::Result<()> {
        if p.device().is_cpu() && p.is_contiguous() && velocity.is_contiguous() {
            velocity.inplace_op2(g, &Velocity(*self))?;
            p.as_tensor().inplace_op2(velocity, &ApplySgd(*self))
        } else {
            self.with_tensors(p, g, velocity)
        }
    }

    /// The same step with tensor ops, for devices without the in-place loops.
    pub fn with_tensors(
        &self,
        p: &Var,
        g: &Tensor,
        velocity: &mut Tensor,
    ) -> candle_core::Result<()> {
        let v = ((velocity.squeeze(0)? * self.momentum as f64)? + (g * self.grad_scale as f64)?)?;
        let w = ((p.as_tensor().flatten_all()? * self.decay as f64)? - (&v * self.lr as f64)?)?;
        p.set(&w.reshape(p.dims())?)?;
        *velocity = v.unsqueeze(0)?;
        Ok(())
    }
}

/// Elements per task of the CPU loops (as Adam's).
const CHUNK: usize = 1 << 14;

// Compiled for AVX-512 / AVX2 and picked at run time; multiplies and adds only, never fused
// (Rust does not contract them), so every ISA gives the scalar loop's bits.
dispatch_isa! {
    fn velocity_chunk(s: &SgdStep, v: &mut [f32], g: &[f32]) {
        for (v, &g) in v.iter_mut().zip(g) {
            *v = (*v * s.momentum + 0.0) + (g * s.grad_scale + 0.0);
        }
    }
}

dispatch_isa! {
    fn apply_chunk(s: &SgdStep, w: &mut [f32], v: &[f32]) {
        for (w, &v) in w.iter_mut().zip(v) {
            *w = (*w * s.decay + 0.0) - (v * s.lr + 0.0);
        }
    }
}

/// velocity (1, numel) <- momentum velocity + grad_scale g.
struct Velocity(SgdStep);

impl InplaceOp2 for Velocity {
    fn name(&self) -> &'static str {
        "sgd-velocity"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let g = f32_slice(s2, l2, "SGD gradient")?;
        let v = f32_slice_mut(s1, l1, "SGD velocity")?;
        if v.len() != g.len() {
            candle_core::bail!(
                "SGD: velocity of {} values for {} gradients",
                v.len(),
                g.len()
            );
        }
        v.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .for_each(|(v, g)| velocity_chunk(&self.0, v, g));
        Ok(())
    }
}

/// weights <- decay weights - lr velocity.
struct ApplySgd(SgdStep);

impl InplaceOp2 for ApplySgd {
    fn name(&self) -> &'static str {
        "sgd-apply"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let w = f32_slice_mut(s1, l1, "SGD weights")?;
        let v = f32_slice(s2, l2, "SGD velocity")?;
        if v.len() != w.len() {
            candle_core::bail!(
                "SGD: velocity of {} values for {} weights",
                v.len(),
                w.len()
            );
        }
        w.par_chunks_mut(CHUNK)
            .zip(v.par_chunks(CHUNK))
            .for_each(|(w, v)| apply_chunk(&self.0, w, v));
        Ok(())
    }
}
