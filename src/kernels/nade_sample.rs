//! NADE's sampler fused into one pass over the pixels per image (O(d) per pixel, no tensor op
//! per step): the recurrence a_{i+1} = a_i + W[:, i] x_i with a Bernoulli draw at every pixel
//! that is not observed. Completion is the same walk with the observed pixels fed instead of
//! drawn. Sampling needs no gradient, so this is a function that looks at where its tensors
//! live and runs the CPU loop below or the CUDA kernel of `nade_cuda` (one launch for all n
//! steps), not an autograd op.

use candle_core::{Device, Result, Tensor};
use rayon::prelude::*;

use super::nade_packed::{Hidden, Params};
use super::simd;
use crate::dispatch_isa;

/// Walks i = 0..n for every image r: where `observed[r, i]` is nonzero x_i = `kept[r, i]`,
/// else x_i = 1 exactly when `uniforms[r, i]` < p_i = sigmoid(l_i). `packed` as
/// [`super::nade_packed::pack`] makes it, `b` (n); `kept`, `observed`, `uniforms` (B, n) f32.
/// Returns the values (B, n) in {0, 1} and p(x_i = 1 | x_<i) (B, n), for every i, as f32.
pub fn sample(
    packed: &Tensor,
    b: &Tensor,
    kept: &Tensor,
    observed: &Tensor,
    uniforms: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (batch, n) = uniforms.dims2()?;
    for (what, t) in [("kept", kept), ("observed", observed)] {
        if t.dims() != [batch, n] {
            candle_core::bail!(
                "NADE sampler: `{what}` has shape {:?}, expected ({batch}, {n})",
                t.dims()
            );
        }
    }
    let d = packed.dim(1)?;
    if packed.dims() != [2 * n + 1, d] || b.dims() != [n] {
        candle_core::bail!(
            "NADE sampler: parameters of shape {:?} and {:?} do not fit n = {n}",
            packed.dims(),
            b.dims()
        );
    }
    let [packed, b, kept, observed, uniforms] =
        [packed, b, kept, observed, uniforms].map(|t| t.detach().contiguous());
    let (packed, b, kept, observed, uniforms) = (packed?, b?, kept?, observed?, uniforms?);
    match packed.device() {
        Device::Cpu => {
            let host = |t: &Tensor| -> Result<Vec<f32>> { t.flatten_all()?.to_vec1::<f32>() };
            let (values, probs) = sample_on_host(
                &host(&packed)?,
                &host(&b)?,
                &host(&kept)?,
                &host(&observed)?,
                &host(&uniforms)?,
            );
            Ok((
                Tensor::from_vec(values, (batch, n), &Device::Cpu)?,
                Tensor::from_vec(probs, (batch, n), &Device::Cpu)?,
            ))
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => {
            use candle_core::{op::BackpropOp, Storage};
            let (sp, lp) = packed.storage_and_layout();
            let (sb, lb) = b.storage_and_layout();
            let (sk, lk) = kept.storage_and_layout();
            let (so, lo) = observed.storage_and_layout();
            let (su, lu) = uniforms.storage_and_layout();
            let (values, probs) = match (&*sp, &*sb, &*sk, &*so, &*su) {
                (
                    Storage::Cuda(p),
                    Storage::Cuda(b),
                    Storage::Cuda(k),
                    Storage::Cuda(o),
                    Storage::Cuda(u),
                ) => super::nade_cuda::sample(p, lp, b, lb, k, lk, o, lo, u, lu)?,
                _ => candle_core::bail!("NADE sampler: all tensors must be on the same CUDA device"),
            };
            let tensor = |s| Tensor::from_storage(Storage::Cuda(s), (batch, n), BackpropOp::none(), false);
            Ok((tensor(values), tensor(probs)))
        }
        other => candle_core::bail!(
            "the fused NADE sampler runs on the CPU and CUDA, not on {other:?}; use the blocked kernel"
        ),
    }
}

/// The CPU walk, parallel over images; each image's result depends only on its own inputs.
fn sample_on_host(
    packed: &[f32],
    bias: &[f32],
    kept: &[f32],
    observed: &[f32],
    uniforms: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let n = bias.len();
    let d = packed.len() / (2 * n + 1);
    let mut values = vec![0f32; uniforms.len()];
    let mut probs = vec![0f32; uniforms.len()];
    values
        .par_chunks_mut(n.max(1))
        .zip(probs.par_chunks_mut(n.max(1)))
        .enumerate()
        .for_each_init(
            || Hidden::new(d),
            |hidden, (r, (x, p))| {
                let row = r * n..(r + 1) * n;
                let image = Image {
                    kept: &kept[row.clone()],
                    observed: &observed[row.clone()],
                    u: &uniforms[row],
                };
                sample_image(packed, bias, image, x, p, hidden)
            },
        );
    (values, probs)
}

/// One image's inputs to the walk.
#[derive(Clone, Copy)]
struct Image<'a> {
    kept: &'a [f32],
    observed: &'a [f32],
    u: &'a [f32],
}

dispatch_isa! {
    fn sample_image(packed: &[f32], bias: &[f32], image: Image, x: &mut [f32], p: &mut [f32], hidden: &mut Hidden) {
        sample_image_inline::<FMA>(packed, bias, image, x, p, hidden)
    }
}

#[inline(always)]
fn sample_image_inline<const FMA: bool>(
    packed: &[f32],
    bias: &[f32],
    image: Image,
    x: &mut [f32],
    p: &mut [f32],
    hidden: &mut Hidden,
) {
    let n = bias.len();
    let params = Params::new(packed, n, hidden.a.len());
    hidden.start::<FMA>(&params);
    for i in 0..n {
        let logit = bias[i] + hidden.logit::<FMA>(&params, i);
        let prob = simd::sigmoid::<FMA>(logit);
        p[i] = prob;
        let one = if image.observed[i] != 0.0 {
            image.kept[i] != 0.0
        } else {
            image.u[i] < prob
        };
        if one {
            x[i] = 1.0;
            hidden.add_one::<FMA>(&params, i);
        }
    }
}
