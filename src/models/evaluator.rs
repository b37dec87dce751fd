//! Evaluation of many batches under parameters that stay as they are while it runs
//! (`nade eval`, a validation pass, the eval phase of `nade bench`): a model may prepare what
//! depends on its parameters alone once, instead of once per batch (MADE: each mask's W * M).
//! Made explicitly, by the caller who knows the parameters will not move: a cache inside the
//! model could not tell when an optimizer step has changed its weights in place.

use candle_core::{Result, Tensor};

use super::{Autoregressive, Pass};

/// log p(x) batch after batch, the same values as the model's own [`Pass::Eval`] calls.
pub trait BatchEvaluator {
    /// log p(x) per row, (B,), as [`Autoregressive::log_prob`] with [`Pass::Eval`].
    fn log_prob(&self, x: &Tensor) -> Result<Tensor>;

    /// As [`Autoregressive::component_log_probs`].
    fn component_log_probs(&self, x: &Tensor) -> Result<Option<Vec<Vec<f64>>>>;
}

/// The evaluator of `model` with its parameters as they are now: its own
/// ([`Autoregressive::prepared_evaluator`]) where it prepares anything, else its plain calls.
/// Drop it before the parameters change.
pub fn evaluator(model: &dyn Autoregressive) -> Result<Box<dyn BatchEvaluator + '_>> {
    Ok(match model.prepared_evaluator()? {
        Some(prepared) => prepared,
        None => Box::new(Unprepared(model)),
    })
}

/// A model with nothing to prepare.
struct Unprepared<'a>(&'a dyn Autoregressive);

impl BatchEvaluator for Unprepared<'_> {
    fn log_prob(&self, x: &Tensor) -> Result<Tensor> {
        self.0.log_prob(x, Pass::Eval)
    }

    fn component_log_probs(&self, x: &Tensor) -> Result<Option<Vec<Vec<f64>>>> {
        self.0.component_log_probs(x)
    }
}
