//! Sequential sampling state, the batched sampler entry and what a model can condition on.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::ops::sigmoid;

use super::Autoregressive;

/// Sequential sampling (or completion) of a batch of B vectors, one dimension at a time, in
/// the model's own order.
///
/// The state sits at a position t, starting at 0: [`SamplerState::logits`] gives the logits of
/// p(x_i = 1 | the values fed so far) for the dimension i at position t,
/// [`SamplerState::observe`] feeds the chosen x_i and moves to t + 1. Every tensor lives on the
/// model's device; parameters are detached, so sampling from a model under training builds no
/// autograd graph.
pub trait SamplerState {
    /// How many values have been fed; n once every dimension has been.
    fn position(&self) -> usize;

    /// Logits at the current position, shape (B, 1).
    fn logits(&mut self) -> Result<Tensor>;

    /// Feeds the value at the current position, (B, 1) f32 in {0, 1}, and moves on.
    fn observe(&mut self, x_i: &Tensor) -> Result<()>;

    /// Feeds the next k values at once, (B, k): the kept pixels of a completion. The default
    /// feeds them one column at a time; models override it with one matmul.
    fn observe_many(&mut self, xs: &Tensor) -> Result<()> {
        for j in 0..xs.dim(1)? {
            self.observe(&xs.narrow(1, j, 1)?.contiguous()?)?;
        }
        Ok(())
    }
}

/// The error of a sampler asked for a step past the last dimension (or fed too many values).
pub(crate) fn check_step(position: usize, k: usize, n: usize) -> Result<()> {
    if position + k > n {
        candle_core::bail!(
            "sampler: cannot feed {k} value(s) at position {position} of a model with n = {n}"
        );
    }
    Ok(())
}

/// What a model can condition on exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Orders {
    /// One order of its own (a permutation of 0..n): it conditions on prefixes of it.
    Fixed(Vec<usize>),
    /// A mixture of components with an order each (MADE's masks): it conditions on sets that
    /// are a prefix of every one of them.
    Mixture(Vec<Vec<usize>>),
    /// Any order: any set of observed dimensions (order-agnostic models).
    Any,
}

impl Orders {
    /// Whether a model with these orders conditions exactly on the set where `observed` is
    /// true: a prefix of its order (of every order of a mixture), or any set.
    pub fn conditions_on(&self, observed: &[bool]) -> bool {
        let kept = observed.iter().filter(|&&o| o).count();
        let prefix = |order: &[usize]| order[..kept].iter().all(|&i| observed[i]);
        match self {
            Orders::Fixed(order) => prefix(order),
            Orders::Mixture(orders) => orders.iter().all(|order| prefix(order)),
            Orders::Any => true,
        }
    }
}

/// A batch to sample or complete, (B, n) f32 tensors on the model's device: where
/// `observed` is 1 the dimension keeps its value in `kept`, elsewhere it is drawn with the
/// uniform of the same place, walking the dimensions in `order` (None: the model's own).
pub struct Evidence<'a> {
    pub kept: &'a Tensor,
    pub observed: &'a Tensor,
    pub uniforms: &'a Tensor,
    /// The order to sample in: a permutation of 0..n the model supports ([`Orders`]).
    pub order: Option<&'a [usize]>,
    /// An order per row, for order-agnostic models ([`Orders::Any`]); overrides `order`.
    /// Models with orders of their own are never given one (src/sample.rs refuses it).
    pub row_orders: Option<&'a [Vec<usize>]>,
}

impl<'a> Evidence<'a> {
    /// [kept, observed, uniforms], as the fused samplers of src/kernels take them.
    pub fn tensors(&self) -> [&'a Tensor; 3] {
        [self.kept, self.observed, self.uniforms]
    }

    /// An error unless the order asked for is `own` (or none was asked for): what a model with
    /// a fixed order answers.
    pub fn check_fixed_order(&self, own: &[usize], kind: &str) -> Result<()> {
        match self.order {
            Some(order) if order != own => candle_core::bail!(
                "a {kind} model samples in its own order only (0..n-1 for fvsbn, mlp and nade); order-agnostic models sample in any"
            ),
            _ => Ok(()),
        }
    }
}

/// What [`Autoregressive::sample_batch`] returns, (B, n) f32 each: the values (observed ones
/// included) and p(x_i = 1 | x_<i) at every i under the model's order.
pub struct SampledBatch {
    pub values: Tensor,
    pub probs: Tensor,
}

/// The sequential default of [`Autoregressive::sample_batch`] for a model whose order is
/// 0..n: the leading dimensions observed in every row are fed in one `observe_many`, then
/// one step per dimension. The probabilities of the fed prefix come from one parallel
/// `logits` pass (exact: they depend on observed values only).
pub fn sample_sequentially<M: Autoregressive + ?Sized>(
    model: &M,
    evidence: &Evidence,
) -> Result<SampledBatch> {
    let Evidence {
        kept,
        observed,
        uniforms,
        ..
    } = *evidence;
    let (batch, n) = uniforms.dims2()?;
    let natural: Vec<usize> = (0..n).collect();
    evidence.check_fixed_order(&natural, model.config().kind())?;
    let observed_host = observed.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let prefix = (0..n)
        .take_while(|&i| observed_host.iter().all(|row| row[i] != 0.0))
        .count();
    let mut state = model.sampler(batch)?;
    let mut values = Vec::with_capacity(n - prefix + 1);
    let mut probs = Vec::with_capacity(n - prefix + 1);
    if prefix > 0 {
        let fed = kept.narrow(1, 0, prefix)?.contiguous()?;
        state.observe_many(&fed)?;
        let logits = model.logits(&kept.contiguous()?)?.narrow(1, 0, prefix)?;
        values.push(fed);
        probs.push(sigmoid(&logits.detach())?);
    }
    for i in prefix..n {
        let p = sigmoid(&state.logits()?)?; // (B, 1)
        let drawn = uniforms.narrow(1, i, 1)?.lt(&p)?.to_dtype(DType::F32)?;
        // Each step is a few kernel launches on a GPU: mix in kept values only where some row
        // observes dimension i.
        let x = if observed_host.iter().any(|row| row[i] != 0.0) {
            // x = seen ? kept : drawn, with seen in {0, 1}.
            let seen = observed.narrow(1, i, 1)?;
            (&drawn + seen.mul(&(kept.narrow(1, i, 1)? - &drawn)?)?)?
        } else {
            drawn
        };
        state.observe(&x)?;
        values.push(x);
        probs.push(p);
    }
    Ok(SampledBatch {
        values: Tensor::cat(&values, 1)?,
        probs: Tensor::cat(&probs, 1)?,
    })
}

/// The component of one image (a mask, an ordering, a model of a mixture) by inverse CDF of
/// the weights softmax(log_w) at u, and u rescaled within the chosen interval (uniform on
/// [0, 1) again, independent of the choice).
pub(crate) fn pick(log_w: &[f64], u: f64) -> (usize, f64) {
    let top = log_w.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = log_w.iter().map(|l| (l - top).exp()).collect();
    let total: f64 = w.iter().sum();
    let mut below = 0.0;
    for (k, &wk) in w.iter().enumerate() {
        let p = wk / total;
        if u < below + p || k + 1 == w.len() {
            let rescaled = if p > 0.0 { (u - below) / p } else { 0.0 };
            return (k, rescaled.clamp(0.0, 1.0 - f64::EPSILON));
        }
        below += p;
    }
    unreachable!("the loop returns at the last component")
}

/// Each row's component ([`pick`] with the row's unnormalised log-weights `log_w[row]` at its
/// uniform of dimension 0) and the uniforms to walk with, that uniform rescaled: one seeded
/// uniform per pixel suffices, and a one-component model draws what a plain sampler draws.
pub(crate) fn choose_components(
    log_w: &[Vec<f64>],
    uniforms: &Tensor,
) -> Result<(Vec<usize>, Tensor)> {
    let mut u = uniforms.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let mut choice = Vec::with_capacity(u.len());
    for (row, log_w) in u.iter_mut().zip(log_w) {
        let (k, rescaled) = pick(log_w, row[0] as f64);
        choice.push(k);
        row[0] = rescaled as f32;
    }
    Ok((choice, Tensor::new(u, uniforms.device())?))
}

/// A U32 index tensor of `ids` on `device`, for `index_select` / `index_add`.
pub(crate) fn index_tensor(ids: &[usize], device: &Device) -> Result<Tensor> {
    let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
    let len = ids.len();
    Tensor::from_vec(ids, len, device)
}

/// Samples the rows that chose each component together: `sample_group(k, rows, ids)` gets
/// component k's rows (as indices and as an index tensor) and returns their (rows, n) values
/// and probabilities, which go back to their places among all `choice.len()` rows.
pub(crate) fn sample_by_component(
    choice: &[usize],
    components: usize,
    n: usize,
    device: &Device,
    mut sample_group: impl FnMut(usize, &[usize], &Tensor) -> Result<SampledBatch>,
) -> Result<SampledBatch> {
    let batch = choice.len();
    let mut values = Tensor::zeros((batch, n), super::DTYPE, device)?;
    let mut probs = values.clone();
    for k in 0..components {
        let rows: Vec<usize> = (0..batch).filter(|&r| choice[r] == k).collect();
        if rows.is_empty() {
            continue;
        }
        let ids = index_tensor(&rows, device)?;
        let group = sample_group(k, &rows, &ids)?;
        if rows.len() == batch {
            return Ok(group);
        }
        values = values.index_add(&ids, &group.values, 0)?;
        probs = probs.index_add(&ids, &group.probs, 0)?;
    }
    Ok(SampledBatch { values, probs })
}
