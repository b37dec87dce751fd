//! The Bernoulli log-likelihood in a form that stays finite for any logit.

use candle_core::{Result, Tensor, D};

use super::{Autoregressive, Pass};

/// softplus(l) = ln(1 + e^l) in the form max(l, 0) + ln(1 + e^-|l|), finite for any finite l.
pub fn softplus(l: &Tensor) -> Result<Tensor> {
    let tail = (l.abs()?.neg()?.exp()? + 1.0)?.log()?;
    l.relu()? + tail
}

/// log p(x) = sum_i [x_i l_i - softplus(l_i)] per row: the Bernoulli log-likelihood written
/// so that it stays finite for |l| up to f32's range (candle's BCE takes log(sigmoid) naively).
pub fn bernoulli_log_prob(logits: &Tensor, x: &Tensor) -> Result<Tensor> {
    let x = x.to_dtype(logits.dtype())?;
    ((x * logits)? - softplus(logits)?)?.sum(D::Minus1)
}

/// Mean negative log-likelihood of a batch in nats: the training loss.
pub fn mean_nll(model: &dyn Autoregressive, x: &Tensor) -> Result<Tensor> {
    model.log_prob(x, Pass::Train)?.mean_all()?.neg()
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
