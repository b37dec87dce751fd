//! The in-place Adam step as ops: `Update` (the moments) and `ApplyAdam` (the weights), each
//! one pass with `cpu_fwd` and `cuda_fwd` (kernels in cuda/adam.cu), and the same step with
//! tensor ops for other devices. [`crate::optim::Optimizer`] decides what the step is.

use candle_core::{CpuStorage, InplaceOp2, Layout, Tensor, Var};

use rayon::prelude::*;

use super::cpu_storage::{f32_slice, f32_slice_mut};
use crate::dispatch_isa;

/// The numbers of one Adam step.
#[derive(Clone, Copy, Debug)]
pub struct Update {
    pub beta1: f32,
    pub beta2: f32,
    /// Gradient clipping factor (1 without clipping).
    pub grad_scale: f32,
    pub lr: f32,
    /// 1 - lr * weight_decay.
    pub decay: f32,
    pub correction1: f32,
    pub correction2: f32,
    pub eps: f32,
}

/// The step of one parameter.
pub trait AdamStep {
    /// Updates `moments` ((2, numel): m and v) and the weights of `p` with the gradient `g`
    /// (flat, contiguous): in place on the CPU and CUDA (one pass over the moments, one over
    /// the weights, no temporaries), with tensor ops elsewhere.
    fn apply(&self, p: &Var, g: &Tensor, moments: &mut Tensor) -> candle_core::Result<()>;
}

impl AdamStep for Update {
    fn apply(&self, p: &Var, g: &Tensor, moments: &mut Tensor) -> candle_core::Result<()> {
        let device = p.device();
        if (device.is_cpu() || device.is_cuda()) && p.is_contiguous() && moments.is_contiguous() {
            moments.inplace_op2(g, self)?;
            p.as_tensor().inplace_op2(moments, &ApplyAdam(*self))
        } else {
            self.with_tensors(p, g, moments)
        }
    }
}

impl Update {
    /// The same step with tensor ops, for devices without the in-place kernels.
    pub fn with_tensors(
        &self,
        p: &Var,
        g: &Tensor,
        moments: &mut Tensor,
    ) -> candle_core::Result<()> {
        let g = (g * self.grad_scale as f64)?;
        let m = ((moments.get(0)? * self.beta1 as f64)? + (&g * (1.0 - self.beta1 as f64))?)?;
        let v = ((moments.get(1)? * self.beta2 as f64)? + (g.sqr()? * (1.0 - self.beta2 as f64))?)?;
        let m_hat = (&m / self.correction1 as f64)?;
        let v_hat = (&v / self.correction2 as f64)?;
        let step = (m_hat / (v_hat.sqrt()? + self.eps as f64)?)?;
        let next =
            ((p.as_tensor().flatten_all()? * self.decay as f64)? - (step * self.lr as f64)?)?;
        p.set(&next.reshape(p.dims())?)?;
        *moments = Tensor::stack(&[m, v], 0)?;
        Ok(())
    }
}

/// moments (2, numel) <- decayed moments plus the (clipped) gradient and its square.
impl InplaceOp2 for Update {
    fn name(&self) -> &'static str {
        "adam-moments"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let g = f32_slice(s2, l2, "Adam operand")?;
        let (m, v) = f32_slice_mut(s1, l1, "Adam state")?.split_at_mut(g.len());
        m.par_chunks_mut(CHUNK)
            .zip(v.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|((m, v), g)| moments_chunk(self, m, v, g));
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &mut candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        cuda::moments(self, s1, l1, s2, l2)
    }
}

/// weights <- decay * weights - lr * m_hat / (sqrt(v_hat) + eps).
/// Weights per task of the CPU loops: a few L1-sized pieces, many per core for the large
/// matrices (MADE's 392,000-weight layers), one for a bias.
const CHUNK: usize = 1 << 14;

// The CPU loops, compiled for AVX-512 / AVX2 and picked at run time (the default target has
// SSE2 only). Plain multiplies, adds, divisions and square roots: IEEE-exact in every ISA, so
// the weights are bit for bit those of the scalar loop, and a resumed run still equals an
// uninterrupted one.
dispatch_isa! {
    fn moments_chunk(u: &Update, m: &mut [f32], v: &mut [f32], g: &[f32]) {
        let (b1, b2) = (u.beta1, u.beta2);
        for ((m, v), &g) in m.iter_mut().zip(v.iter_mut()).zip(g) {
            let g = g * u.grad_scale;
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
        }
    }
}

dispatch_isa! {
    fn apply_chunk(u: &Update, w: &mut [f32], m: &[f32], v: &[f32]) {
        for ((w, &m), &v) in w.iter_mut().zip(m).zip(v) {
            let step = (m / u.correction1) / ((v / u.correction2).sqrt() + u.eps);
            *w = u.decay * *w - u.lr * step;
        }
    }
}

struct ApplyAdam(Update);

impl InplaceOp2 for ApplyAdam {
    fn name(&self) -> &'static str {
        "adam-apply"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let w = f32_slice_mut(s1, l1, "Adam state")?;
        let (m, v) = f32_slice(s2, l2, "Adam operand")?.split_at(w.len());
        w.par_chunks_mut(CHUNK)
            .zip(m.par_chunks(CHUNK))
            .zip(v.par_chunks(CHUNK))
            .for_each(|((w, m), v)| apply_chunk(&self.0, w, m, v));
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &mut candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        cuda::apply(&self.0, s1, l1, s2, l2)
    }
}

/// The CUDA launches of the two ops (kernels in cuda/adam.cu).
#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{CudaStorage, Layout, Result};

    use super::Update;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/adam.ptx"));
    const MODULE: &str = "nade_adam";
    const THREADS: u32 = 256;

    fn offsets(l: &Layout, what: &str) -> Result<(usize, usize)> {
        l.contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg(format!("Adam: {what} must be contiguous")))
    }

    /// The weight count (from the tensor of `numel` values) and the moments' offsets, checked.
    fn sizes(weights: &Layout, moments: &Layout) -> Result<(usize, (usize, usize))> {
        let (w0, w1) = offsets(weights, "the weights and the gradient")?;
        let (m0, m1) = offsets(moments, "the moments")?;
        let numel = w1 - w0;
        if m1 - m0 != 2 * numel {
            candle_core::bail!("Adam: moments hold {} values for {numel} weights", m1 - m0);
        }
        Ok((numel, (m0, m1)))
    }

    fn launch_config(numel: usize) -> LaunchConfig {
        let blocks = numel.div_ceil(THREADS as usize).clamp(1, 65_535) as u32;
        LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    pub(super) fn moments(
        u: &Update,
        s1: &mut CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<()> {
        let (numel, (m0, m1)) = sizes(l2, l1)?;
        let g0 = offsets(l2, "the gradient")?.0;
        let g1 = g0 + numel;
        let dev = s1.device.clone();
        let f = dev
            .get_or_load_custom_func("adam_moments", MODULE, PTX)?
            .into_cuda_function();
        let g = s2.as_cuda_slice::<f32>()?.slice(g0..g1);
        let m = s1.as_cuda_slice_mut::<f32>()?;
        let mut m = m.slice_mut(m0..m1);
        let numel_i = numel as i64;
        let stream = dev.cuda_stream();
        let mut launch = stream.launch_builder(&f);
        launch.arg(&mut m);
        launch.arg(&g);
        launch.arg(&numel_i);
        launch.arg(&u.beta1);
        launch.arg(&u.beta2);
        launch.arg(&u.grad_scale);
        // SAFETY: the arguments match the kernel's signature; indices stay below numel.
        unsafe { launch.launch(launch_config(numel)) }.w()?;
        Ok(())
    }

    pub(super) fn apply(
        u: &Update,
        s1: &mut CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<()> {
        let (numel, (m0, m1)) = sizes(l1, l2)?;
        let w0 = offsets(l1, "the weights")?.0;
        let w1 = w0 + numel;
        let dev = s1.device.clone();
        let f = dev
            .get_or_load_custom_func("adam_apply", MODULE, PTX)?
            .into_cuda_function();
        let m = s2.as_cuda_slice::<f32>()?.slice(m0..m1);
        let w = s1.as_cuda_slice_mut::<f32>()?;
        let mut w = w.slice_mut(w0..w1);
        let numel_i = numel as i64;
        let stream = dev.cuda_stream();
        let mut launch = stream.launch_builder(&f);
        launch.arg(&mut w);
        launch.arg(&m);
        launch.arg(&numel_i);
        launch.arg(&u.lr);
        launch.arg(&u.decay);
        launch.arg(&u.correction1);
        launch.arg(&u.correction2);
        launch.arg(&u.eps);
        // SAFETY: as above.
        unsafe { launch.launch(launch_config(numel)) }.w()?;
        Ok(())
    }
}
