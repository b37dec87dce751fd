//! The Bernoulli log-likelihood in a form that stays finite for any logit.

use candle_core::{Result, Tensor, D};

use crate::kernels::bernoulli_log_prob;

use super::{Autoregressive, Pass};

/// softplus(l) = ln(1 + e^l) in the form max(l, 0) + ln(1 + e^-|l|), finite for any finite l.
pub fn softplus(l: &Tensor) -> Result<Tensor> {
    let tail = (l.abs()?.neg()?.exp()? + 1.0)?.log()?;
    l.relu()? + tail
}

/// log p(x) = sum_i [x_i l_i - softplus(l_i)] per row: the Bernoulli log-likelihood written
/// so that it stays finite for |l| up to f32's range (candle's BCE takes log(sigmoid) naively).
pub fn bernoulli_log_prob(logits: &Tensor, x: &Tensor) -> Result<Tensor> {
    log_prob_terms(logits, x, None)
}

/// sum_i w_i [x_i l_i - softplus(l_i)] per row: the log-likelihood of a subset of the
/// dimensions (w = 0 elsewhere), scaled (deep NADE's order-agnostic estimate).
pub fn weighted_bernoulli_log_prob(logits: &Tensor, x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    log_prob_terms(logits, x, Some(weight))
}

fn log_prob_terms(logits: &Tensor, x: &Tensor, weight: Option<&Tensor>) -> Result<Tensor> {
    if fused(logits) {
        return bernoulli_log_prob::log_prob(logits, x, weight);
    }
    let x = x.to_dtype(logits.dtype())?;
    let terms = ((x * logits)? - softplus(logits)?)?;
    match weight {
        Some(w) => (terms * w)?.sum(D::Minus1),
        None => terms.sum(D::Minus1),
    }
}

/// The fused pass (value and gradient at once, kernels::bernoulli_log_prob) serves f32 on the
/// CPU and CUDA; elsewhere candle's element-wise ops do, which every backend has.
fn fused(logits: &Tensor) -> bool {
    bernoulli_log_prob::serves(logits)
}

/// Mean negative log-likelihood of a batch in nats: the training loss.
pub fn mean_nll(model: &dyn Autoregressive, x: &Tensor, step: u64) -> Result<Tensor> {
    model.log_prob(x, Pass::Train { step })?.mean_all()?.neg()
}

/// log((1/K) sum_k e^{v_k}) in f64, stable: the log-density of a uniform mixture from its
/// components' log-densities (-inf when every component gives 0).
pub fn log_mean_exp(values: &[f64]) -> f64 {
    let top = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !top.is_finite() {
        return top;
    }
    let sum: f64 = values.iter().map(|v| (v - top).exp()).sum();
    top + sum.ln() - (values.len() as f64).ln()
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Var};

    use super::*;

    /// The plain graph of candle's element-wise ops, as off the CPU.
    fn graph(logits: &Tensor, x: &Tensor, weight: &Tensor) -> Result<Tensor> {
        (((x * logits)? - softplus(logits)?)? * weight)?.sum(D::Minus1)
    }

    /// The CPU, and CUDA when built with it and a GPU is present (the fused pass has a kernel
    /// on each).
    fn devices() -> Vec<Device> {
        let mut out = vec![Device::Cpu];
        if let Ok(cuda) = Device::cuda_if_available(0) {
            if cuda.is_cuda() {
                out.push(cuda);
            }
        }
        out
    }

    #[test]
    fn the_fused_bernoulli_log_likelihood_equals_the_plain_graph_and_f64_in_values_and_gradients(
    ) -> Result<()> {
        for dev in devices() {
            fused_equals_the_plain_graph_on(&dev)?;
        }
        Ok(())
    }

    fn fused_equals_the_plain_graph_on(dev: &Device) -> Result<()> {
        let dev = dev.clone();
        // Rows of odd lengths (the lanes' tails), logits from -120 to 120 including 0.
        for (rows, n) in [(3usize, 1usize), (4, 17), (5, 100)] {
            let l: Vec<f32> = (0..rows * n)
                .map(|k| ((k * 7919 % 241) as f32 - 120.0) * if k % 3 == 0 { 1.0 } else { 0.05 })
                .collect();
            let x: Vec<f32> = (0..rows * n)
                .map(|k| ((k * 31 + 7) % 5 < 2) as u8 as f32)
                .collect();
            let w: Vec<f32> = (0..rows * n).map(|k| (k % 4) as f32 * 0.75).collect();
            let logits = Var::from_vec(l.clone(), (rows, n), &dev)?;
            let xt = Tensor::from_vec(x.clone(), (rows, n), &dev)?;
            let weight = Tensor::from_vec(w.clone(), (rows, n), &dev)?;
            let ones = Tensor::ones((rows, n), DType::F32, &dev)?;
            // A non-uniform upstream gradient: the backward must scale per row.
            let upstream = Tensor::arange(1f32, rows as f32 + 1.0, &dev)?;
            for weighted in [false, true] {
                let w_at = |k: usize| if weighted { w[k] as f64 } else { 1.0 };
                let fused = if weighted {
                    weighted_bernoulli_log_prob(logits.as_tensor(), &xt, &weight)?
                } else {
                    bernoulli_log_prob(logits.as_tensor(), &xt)?
                };
                let plain = graph(
                    logits.as_tensor(),
                    &xt,
                    if weighted { &weight } else { &ones },
                )?;
                let grad_of = |t: &Tensor| -> Result<Vec<f32>> {
                    let grads = (t * &upstream)?.sum_all()?.backward()?;
                    grads
                        .get(&logits)
                        .expect("a gradient")
                        .flatten_all()?
                        .to_vec1::<f32>()
                };
                let (fused_v, plain_v) = (fused.to_vec1::<f32>()?, plain.to_vec1::<f32>()?);
                let (fused_g, plain_g) = (grad_of(&fused)?, grad_of(&plain)?);
                for r in 0..rows {
                    let mut want = 0f64;
                    for k in r * n..(r + 1) * n {
                        let (l, x) = (l[k] as f64, x[k] as f64);
                        want += w_at(k) * (x * l - (l.max(0.0) + (-l.abs()).exp().ln_1p()));
                        // d/dl = g_r w (x - sigmoid(l)): to f32 precision of g_r w.
                        let scale = (r + 1) as f64 * w_at(k);
                        let want_g = scale * (x - 1.0 / (1.0 + (-l).exp()));
                        let got = fused_g[k] as f64;
                        assert!(
                            (got - want_g).abs() <= 3e-7 * scale.max(1.0),
                            "{n}: {got} vs {want_g}"
                        );
                        let plain = plain_g[k] as f64;
                        assert!(
                            (got - plain).abs() <= 3e-6 * scale.max(1.0),
                            "{n}: {got} vs {plain}"
                        );
                    }
                    let got = fused_v[r] as f64;
                    assert!(
                        (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                        "{n}: {got} vs {want}"
                    );
                    let plain = plain_v[r] as f64;
                    assert!(
                        (got - plain).abs() <= 1e-5 * want.abs().max(1.0),
                        "{n}: {got} vs {plain}"
                    );
                }
                // Without a graph the same values come from the pass that skips the gradient.
                let detached = logits.as_tensor().detach();
                let again = if weighted {
                    weighted_bernoulli_log_prob(&detached, &xt, &weight)?
                } else {
                    bernoulli_log_prob(&detached, &xt)?
                };
                assert_eq!(again.to_vec1::<f32>()?, fused_v);
            }
        }
        Ok(())
    }
}
