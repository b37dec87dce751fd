//! The dense hidden stack that MADE and deep NADE share: its nonlinearity, its tensors
//! (`W1`, `b1`, ..., `V`, `c`), the checks of its `[model]` keys, and reading its shape back from
//! a file that has only `model`, `n` and `activation` metadata.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use candle_core::{Result, Tensor};
use candle_nn::ops::sigmoid;
use serde::{Deserialize, Serialize};

use super::ParamSpec;

/// The hidden nonlinearity g.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Activation {
    #[default]
    Relu,
    Sigmoid,
    Tanh,
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Activation::Relu => "relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
        })
    }
}

impl FromStr for Activation {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "relu" => Ok(Activation::Relu),
            "sigmoid" => Ok(Activation::Sigmoid),
            "tanh" => Ok(Activation::Tanh),
            _ => Err(format!(
                "unknown activation {s:?} (expected relu, sigmoid or tanh)"
            )),
        }
    }
}

impl TryFrom<String> for Activation {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl From<Activation> for String {
    fn from(a: Activation) -> String {
        a.to_string()
    }
}

impl Activation {
    pub(crate) fn apply(self, t: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Relu => t.relu(),
            Activation::Sigmoid => sigmoid(t),
            Activation::Tanh => t.tanh(),
        }
    }
}

/// The hidden stack of MADE and deep NADE: `W1` [h1, inputs], `b1` [h1], ..., `WL`, `bL`, then
/// the read-out `V` [n, hL] and its output bias `c` [n]; weights uniform on +-1/sqrt(fan-in).
pub fn dense_stack_specs(inputs: usize, hidden: &[usize], n: usize) -> Vec<ParamSpec> {
    let fan_in = |k: usize| 1.0 / (k.max(1) as f32).sqrt();
    let mut specs = Vec::new();
    let mut below = inputs;
    for (l, &h) in hidden.iter().enumerate() {
        specs.push(ParamSpec::weight(
            format!("W{}", l + 1),
            &[h, below],
            fan_in(below),
        ));
        specs.push(ParamSpec::bias(format!("b{}", l + 1), &[h]));
        below = h;
    }
    specs.push(ParamSpec::weight("V", &[n, below], fan_in(below)));
    specs.push(ParamSpec::output_bias("c", &[n]));
    specs
}

/// `model.hidden` of a stacked model: at least one layer, none empty.
pub fn validate_hidden(kind: &str, hidden: &[usize]) -> anyhow::Result<()> {
    if hidden.is_empty() || hidden.contains(&0) {
        return Err(anyhow::anyhow!(
            "model.hidden: a {kind} model needs at least one hidden layer, each of >= 1 units (got {hidden:?})"
        ));
    }
    Ok(())
}

/// An ensemble of `k` members (`model.{key}`) evaluated with its first `used` (`eval_{key}`):
/// 1 <= used <= k.
pub fn validate_ensemble(
    kind: &str,
    key: &str,
    k: usize,
    used: Option<usize>,
) -> anyhow::Result<()> {
    if k == 0 {
        return Err(anyhow::anyhow!(
            "model.{key}: a {kind} model needs {key} >= 1"
        ));
    }
    match used {
        Some(u) if u == 0 || u > k => Err(anyhow::anyhow!(
            "model.eval_{key} = {u}: the model has {k} of them, so 1..={k}"
        )),
        _ => Ok(()),
    }
}

/// (activation, layer sizes, ensemble size K) of a `kind` file from its metadata and tensor
/// shapes: `activation` from the metadata, the sizes from the rows of `W1`, `W2`, ..., K from the
/// rows of `order`.
pub fn read_stack(
    kind: &str,
    metadata: &BTreeMap<String, String>,
    shapes: &BTreeMap<String, Vec<usize>>,
) -> anyhow::Result<(Activation, Vec<usize>, usize)> {
    let raw = metadata.get("activation").ok_or_else(|| {
        anyhow::anyhow!(
            "__metadata__ has no `activation` (a {kind} file needs model, n and activation)"
        )
    })?;
    let activation = raw
        .parse()
        .map_err(|e| anyhow::anyhow!("__metadata__ `activation`: {e}"))?;
    let hidden: Vec<usize> = (1..)
        .map_while(|l| shapes.get(&format!("W{l}")))
        .map(|shape| shape.first().copied().unwrap_or(0))
        .collect();
    if hidden.is_empty() {
        return Err(anyhow::anyhow!(
            "a {kind} file needs tensors W1, b1, ..., V, c, order: there is no `W1`"
        ));
    }
    let k = shapes
        .get("order")
        .and_then(|shape| shape.first().copied())
        .ok_or_else(|| {
            anyhow::anyhow!("a {kind} file needs the tensor `order` [K, n]: it is missing")
        })?;
    Ok((activation, hidden, k))
}
