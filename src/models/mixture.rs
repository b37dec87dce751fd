//! A weighted mixture of trained models over the same n: p(x) = sum_j w_j p_j(x), the
//! components of any kinds (an FVSBN beside a MADE ensemble beside a deep NADE), each with its
//! own order. Made from trained checkpoints by `nade mix` (src/mix.rs: the weights fit by EM on
//! a validation split), never trained as a whole: the components are trained on their own.
//!
//! A mixture of models with different orders has no single set of conditionals, so it has no
//! `logits`; its log p(x) is the log-sum-exp of log w_j + log p_j(x), each component evaluated
//! as it evaluates alone (its own prepared evaluator: MADE's W * M once per evaluation).
//! Sampling draws a component per image from the weights (for a completion from the posterior
//! p(j | x_kept) ∝ w_j p_j(x_kept), exact where every component scores the kept set exactly),
//! read off the image's uniform of dimension 0 and rescaled as MADE's masks are
//! ([`super::sampler::choose_components`]), then samples that image with the chosen component
//! in its own order; the probabilities returned are the chosen component's conditionals.
//!
//! Checkpoint: component j's tensors under `component{j}.` + its own names; the config JSON
//! holds each component's config and weight (docs/checkpoints.md).

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::sampler::{choose_components, sample_by_component};
use super::{
    evaluator, log_mean_exp, Autoregressive, BatchEvaluator, Evidence, KeptLogProb, Kind, ModelConfig,
    ModelSpec, Orders, ParamSpec, Pass, SampledBatch, SamplerState,
};

/// `kind = "mixture"`: the components and their weights. Written by `nade mix`; a run file
/// cannot train one ([`crate::config`] refuses it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixtureConfig {
    /// Binary dimensions, every component's n.
    pub n: usize,
    pub components: Vec<Component>,
}

/// One model of a mixture and its weight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// w_j > 0; the weights of a mixture sum to 1.
    pub weight: f64,
    pub model: ModelConfig,
}

/// The kind entry of a mixture: not in the registry of trainable models
/// ([`super::REGISTRY`]), so `nade kinds`, `bench` and `train` do not offer it.
pub static KIND: Kind = Kind {
    name: "mixture",
    summary: "a weighted mixture of trained models over the same n, made by `nade mix`",
    any_order: false,
    bench_layers: &[],
    with_layers: |_, _| {
        Err(anyhow::anyhow!(
            "a mixture is made from trained checkpoints by `nade mix`, not from layer sizes"
        ))
    },
};

/// The tensor-name prefix of component j.
fn prefix(j: usize) -> String {
    format!("component{j}")
}

impl MixtureConfig {
    /// log w_j of every component.
    pub fn log_weights(&self) -> Vec<f64> {
        self.components.iter().map(|c| c.weight.ln()).collect()
    }
}

impl ModelSpec for MixtureConfig {
    fn n(&self) -> usize {
        self.n
    }

    fn set_n(&mut self, n: usize) {
        self.n = n;
    }

    fn layers(&self) -> Vec<usize> {
        Vec::new()
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.components.is_empty() {
            anyhow::bail!("model.components: a mixture needs at least one component");
        }
        for (j, c) in self.components.iter().enumerate() {
            if !(c.weight.is_finite() && c.weight > 0.0) {
                anyhow::bail!(
                    "model.components[{j}].weight = {}: must be a positive number",
                    c.weight
                );
            }
            if c.model.n() != self.n {
                anyhow::bail!(
                    "model.components[{j}]: n = {} but the mixture has n = {}",
                    c.model.n(),
                    self.n
                );
            }
            c.model
                .validate()
                .map_err(|e| anyhow::anyhow!("model.components[{j}]: {e}"))?;
        }
        let total: f64 = self.components.iter().map(|c| c.weight).sum();
        if (total - 1.0).abs() > 1e-9 {
            anyhow::bail!("model.components: the weights sum to {total}, not 1");
        }
        Ok(())
    }

    fn param_specs(&self) -> Vec<ParamSpec> {
        let mut specs = Vec::new();
        for (j, c) in self.components.iter().enumerate() {
            for mut spec in c.model.param_specs() {
                spec.name = format!("{}.{}", prefix(j), spec.name);
                specs.push(spec);
            }
        }
        specs
    }

    /// The components are evaluated one after another: the largest of theirs, plus the
    /// (B, J) log-likelihoods.
    fn working_floats(&self, batch: usize, pass: Pass, device: &Device) -> f64 {
        let largest = self
            .components
            .iter()
            .map(|c| c.model.working_floats(batch, pass, device))
            .fold(0.0, f64::max);
        largest + 2.0 * (batch * self.components.len()) as f64
    }

    fn build(&self, vb: VarBuilder) -> Result<Box<dyn Autoregressive>> {
        let components = self
            .components
            .iter()
            .enumerate()
            .map(|(j, c)| c.model.build(vb.pp(prefix(j))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Box::new(Mixture::new(self.clone(), components, vb.device())?))
    }

    fn describe(&self) -> String {
        let parts: Vec<String> = self
            .components
            .iter()
            .map(|c| format!("{} {:.3}", c.model.kind(), c.weight))
            .collect();
        format!("mixture (n = {}) of {}", self.n, parts.join(", "))
    }

    /// The largest of the components' (deep NADE's walk wants many rows per matmul).
    fn eval_batch(&self) -> usize {
        self.components
            .iter()
            .map(|c| c.model.eval_batch())
            .max()
            .unwrap_or(100)
    }

    fn with_masks(&self, k: usize) -> anyhow::Result<ModelConfig> {
        anyhow::bail!("--masks {k}: a mixture uses each component as it was mixed; --masks is for one made checkpoint")
    }

    fn with_orders(&self, k: usize) -> anyhow::Result<ModelConfig> {
        anyhow::bail!("--orders {k}: a mixture uses each component as it was mixed; --orders is for one deepnade checkpoint")
    }

    fn structure(&self) -> ModelConfig {
        let mut cfg = self.clone();
        for c in &mut cfg.components {
            c.model = c.model.structure();
        }
        ModelConfig::Mixture(cfg)
    }
}

/// The models of a mixture with their log-weights.
pub struct Mixture {
    cfg: ModelConfig,
    log_weights: Vec<f64>,
    components: Vec<Box<dyn Autoregressive>>,
    device: Device,
}

impl Mixture {
    /// The mixture of `components` (built, on `device`) under `cfg`'s weights; their configs
    /// must be `cfg`'s.
    pub fn new(
        cfg: MixtureConfig,
        components: Vec<Box<dyn Autoregressive>>,
        device: &Device,
    ) -> Result<Self> {
        if components.len() != cfg.components.len() {
            candle_core::bail!(
                "{} models for a mixture of {} components",
                components.len(),
                cfg.components.len()
            );
        }
        for (j, (model, c)) in components.iter().zip(&cfg.components).enumerate() {
            if model.config().structure() != c.model.structure() {
                candle_core::bail!(
                    "component {j} is a {} but the mixture's config describes a {}",
                    model.config().describe(),
                    c.model.describe()
                );
            }
        }
        Ok(Self {
            log_weights: cfg.log_weights(),
            cfg: ModelConfig::Mixture(cfg),
            components,
            device: device.clone(),
        })
    }

    /// The components, in the config's order.
    pub fn components(&self) -> &[Box<dyn Autoregressive>] {
        &self.components
    }

    /// log sum_j w_j p_j(x) per row from each component's log p_j(x), (B,) each.
    fn combine(&self, per_component: Vec<Tensor>) -> Result<Tensor> {
        let stacked = Tensor::stack(&per_component, 1)?.to_dtype(DType::F32)?;
        let log_w = Tensor::new(
            self.log_weights
                .iter()
                .map(|&l| l as f32)
                .collect::<Vec<_>>(),
            &self.device,
        )?
        .unsqueeze(0)?;
        stacked.broadcast_add(&log_w)?.log_sum_exp(1)
    }

    /// The per-row log-weights of the posterior p(j | x_kept) up to a constant: log w_j +
    /// log p_j(x_kept); the prior's where nothing is kept.
    fn posterior_log_weights(&self, evidence: &Evidence) -> Result<Vec<Vec<f64>>> {
        let (rows, _) = evidence.uniforms.dims2()?;
        let mut log_w = vec![self.log_weights.clone(); rows];
        let observed = evidence.observed.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        if !observed.iter().flatten().any(|&v| v != 0.0) || self.components.len() == 1 {
            return Ok(log_w);
        }
        for (j, model) in self.components.iter().enumerate() {
            let Some(kept) = model.kept_log_prob(evidence.kept, evidence.observed)? else {
                candle_core::bail!(
                    "component {j} of the mixture ({}) cannot score this kept set exactly",
                    model.config().describe()
                );
            };
            for (row, lp) in log_w.iter_mut().zip(kept.model) {
                row[j] += lp;
            }
        }
        Ok(log_w)
    }
}

impl Autoregressive for Mixture {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// None: the components have orders of their own, so the mixture has no one set of
    /// conditionals p(x_i | x_<i).
    fn logits(&self, _x: &Tensor) -> Result<Tensor> {
        candle_core::bail!(
            "a mixture of models has no single set of conditionals (its components have orders of their own): score it with log p(x), or a component alone"
        )
    }

    fn log_prob(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        if let Pass::Train { .. } = pass {
            candle_core::bail!(
                "a mixture is not trained as a whole: train its components, then `nade mix` them"
            );
        }
        let per_component = self
            .components
            .iter()
            .map(|m| m.log_prob(x, Pass::Eval))
            .collect::<Result<Vec<_>>>()?;
        self.combine(per_component)
    }

    fn prepared_evaluator(&self) -> Result<Option<Box<dyn BatchEvaluator + '_>>> {
        let components = self
            .components
            .iter()
            .map(|m| evaluator(m.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Box::new(MixtureEvaluator {
            mixture: self,
            components,
        })))
    }

    /// Where every component scores the kept set exactly: log sum_j w_j p_j(x_kept).
    fn kept_log_prob(&self, kept: &Tensor, observed: &Tensor) -> Result<Option<KeptLogProb>> {
        let mut per_component = Vec::with_capacity(self.components.len());
        for model in &self.components {
            match model.kept_log_prob(kept, observed)? {
                Some(k) => per_component.push(k.model),
                None => return Ok(None),
            }
        }
        let rows = per_component[0].len();
        let model = (0..rows)
            .map(|r| {
                let terms: Vec<f64> = per_component
                    .iter()
                    .zip(&self.log_weights)
                    .map(|(lp, lw)| lp[r] + lw)
                    .collect();
                log_mean_exp(&terms) + (terms.len() as f64).ln()
            })
            .collect();
        Ok(Some(KeptLogProb {
            first: per_component[0].clone(),
            model,
            components: self.components.len(),
        }))
    }

    fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (j, model) in self.components.iter().enumerate() {
            for (name, t) in model.named_tensors() {
                out.push((format!("{}.{name}", prefix(j)), t));
            }
        }
        out
    }

    /// The orders of the components that have their own (order-agnostic ones condition on
    /// anything): one where they agree, a mixture of them otherwise.
    fn orders(&self) -> Orders {
        let mut orders: Vec<Vec<usize>> = Vec::new();
        for model in &self.components {
            match model.orders() {
                Orders::Any => {}
                Orders::Fixed(order) => orders.push(order),
                Orders::Mixture(each) => orders.extend(each),
            }
        }
        orders.dedup();
        match orders.len() {
            0 => Orders::Any,
            1 => Orders::Fixed(orders.remove(0)),
            _ => Orders::Mixture(orders),
        }
    }

    fn sampler(&self, _batch: usize) -> Result<Box<dyn SamplerState + '_>> {
        candle_core::bail!(
            "a mixture has no step-by-step sampler of its own: it samples each image with one component (sample_batch)"
        )
    }

    fn sample_batch(&self, evidence: &Evidence) -> Result<SampledBatch> {
        let log_w = self.posterior_log_weights(evidence)?;
        let (choice, uniforms) = choose_components(&log_w, evidence.uniforms)?;
        let n = self.cfg.n();
        sample_by_component(
            &choice,
            self.components.len(),
            n,
            &self.device,
            |j, rows, ids| {
                let pick_rows = |t: &Tensor| t.index_select(ids, 0)?.contiguous();
                let row_orders: Option<Vec<Vec<usize>>> = evidence
                    .row_orders
                    .map(|all| rows.iter().map(|&r| all[r].clone()).collect());
                let (kept, observed) = (pick_rows(evidence.kept)?, pick_rows(evidence.observed)?);
                self.components[j].sample_batch(&Evidence {
                    kept: &kept,
                    observed: &observed,
                    uniforms: &pick_rows(&uniforms)?,
                    order: evidence.order,
                    row_orders: row_orders.as_deref(),
                })
            },
        )
    }
}

/// The components' own evaluators, each prepared once.
struct MixtureEvaluator<'a> {
    mixture: &'a Mixture,
    components: Vec<Box<dyn BatchEvaluator + 'a>>,
}

impl BatchEvaluator for MixtureEvaluator<'_> {
    fn log_prob(&self, x: &Tensor) -> Result<Tensor> {
        let per_component = self
            .components
            .iter()
            .map(|e| e.log_prob(x))
            .collect::<Result<Vec<_>>>()?;
        self.mixture.combine(per_component)
    }

    /// None: the mixture's components are weighted, not the uniform ones of `--curve`.
    fn component_log_probs(&self, _x: &Tensor) -> Result<Option<Vec<Vec<f64>>>> {
        Ok(None)
    }
}
