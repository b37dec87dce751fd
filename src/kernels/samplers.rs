//! One-launch sequential samplers of FVSBN and the per-pixel MLP on CUDA (kernels in
//! cuda/samplers.cu): all n steps of an image in one thread block instead of several tensor
//! ops per pixel. Elsewhere (the CPU, Metal) they answer None and the model steps its
//! `SamplerState`, which on the CPU is already fast.
//!
//! Plain tensors in and out, like every kernel: the batch to complete is `evidence` =
//! [kept, observed, uniforms], each (B, n) f32, and a draw returns [values, probs], (B, n).

use candle_core::{Result, Tensor};

/// [kept, observed, uniforms]: the values kept where observed is 1, and one uniform per
/// dimension that decides a drawn one (x_i = 1 exactly when u_i < p_i).
pub type Evidence<'a> = [&'a Tensor; 3];

/// FVSBN: `w_masked_t` = (W * strictly-lower mask)^T (n, n), `b` (n).
pub fn fvsbn_sample(
    w_masked_t: &Tensor,
    b: &Tensor,
    evidence: Evidence,
) -> Result<Option<[Tensor; 2]>> {
    if !b.device().is_cuda() {
        return Ok(None);
    }
    #[cfg(feature = "cuda")]
    {
        let n = b.dim(0)?;
        let shared = (n * 4) as u32;
        return cuda::launch("fvsbn_sample", &[w_masked_t, b], evidence, &[n], shared).map(Some);
    }
    #[allow(unreachable_code)]
    {
        let _ = (w_masked_t, evidence);
        Ok(None)
    }
}

/// The per-pixel MLP: `a` (n, d, n), `c` (n, d), `alpha` (n, d), `b` (n).
pub fn mlp_sample(
    a: &Tensor,
    c: &Tensor,
    alpha: &Tensor,
    b: &Tensor,
    evidence: Evidence,
) -> Result<Option<[Tensor; 2]>> {
    if !b.device().is_cuda() {
        return Ok(None);
    }
    #[cfg(feature = "cuda")]
    {
        let (n, d) = alpha.dims2()?;
        let shared = ((n + d) * 4) as u32;
        return cuda::launch("mlp_sample", &[a, c, alpha, b], evidence, &[n, d], shared).map(Some);
    }
    #[allow(unreachable_code)]
    {
        let _ = (a, c, alpha, evidence);
        Ok(None)
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::op::BackpropOp;
    use candle_core::{Result, Storage, Tensor};

    use super::Evidence;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/samplers.ptx"));
    const MODULE: &str = "nade_samplers";

    /// Launches `name` with one block per image: the parameters (contiguous f32, in the
    /// kernel's order), then kept, observed, uniforms, values, probs, then `ints`.
    pub(super) fn launch(
        name: &str,
        params: &[&Tensor],
        evidence: Evidence,
        ints: &[usize],
        shared_bytes: u32,
    ) -> Result<[Tensor; 2]> {
        let (batch, n) = evidence[2].dims2()?;
        let inputs: Vec<Tensor> = params
            .iter()
            .copied()
            .chain(evidence)
            .map(|t| t.detach().contiguous())
            .collect::<Result<_>>()?;
        for t in &inputs[params.len()..] {
            if t.dims() != [batch, n] {
                candle_core::bail!(
                    "sampler: evidence of shape {:?}, expected ({batch}, {n})",
                    t.dims()
                );
            }
        }
        let guards: Vec<_> = inputs.iter().map(|t| t.storage_and_layout()).collect();
        let mut views = Vec::with_capacity(guards.len());
        for (storage, layout) in &guards {
            let Storage::Cuda(s) = &**storage else {
                candle_core::bail!("sampler: every tensor must be on the CUDA device");
            };
            let (start, end) = layout
                .contiguous_offsets()
                .ok_or_else(|| candle_core::Error::Msg("sampler: not contiguous".into()))?;
            views.push(s.as_cuda_slice::<f32>()?.slice(start..end));
        }
        let Storage::Cuda(first) = &*guards[0].0 else {
            unreachable!("checked above")
        };
        let dev = first.device.clone();
        let mut values = dev.alloc_zeros::<f32>(batch * n)?;
        let mut probs = dev.alloc_zeros::<f32>(batch * n)?;
        let ints: Vec<i32> = ints
            .iter()
            .map(|&v| {
                i32::try_from(v)
                    .map_err(|_| candle_core::Error::Msg(format!("sampler: {v} too large")))
            })
            .collect::<Result<_>>()?;
        if batch > 0 {
            let f = dev
                .get_or_load_custom_func(name, MODULE, PTX)?
                .into_cuda_function();
            let stream = dev.cuda_stream();
            let mut builder = stream.launch_builder(&f);
            for v in &views {
                builder.arg(v);
            }
            builder.arg(&mut values);
            builder.arg(&mut probs);
            for v in &ints {
                builder.arg(v);
            }
            let config = LaunchConfig {
                grid_dim: (batch as u32, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: shared_bytes,
            };
            // SAFETY: the arguments match the kernel's signature (parameters, kept, observed,
            // uniforms, values, probs, then the sizes); every index stays below them.
            unsafe { builder.launch(config) }.w()?;
        }
        let wrap = |slice| {
            Tensor::from_storage(
                Storage::Cuda(candle_core::CudaStorage::wrap_cuda_slice(
                    slice,
                    dev.clone(),
                )),
                (batch, n),
                BackpropOp::none(),
                false,
            )
        };
        Ok([wrap(values), wrap(probs)])
    }
}
