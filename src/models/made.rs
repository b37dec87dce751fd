//! MADE (Germain, Gregor, Murray & Larochelle 2015): a masked autoencoder whose every
//! conditional comes out of one pass of an MLP, and exact ensembles of K masks.
//!
//! Layers l = 1..L: h_l = g(b_l + (W_l * M_l) h_{l-1}), h_0 = x; logits = c + (V * M_V) h_L
//! (+ (A * M_A) x with the direct connection). Mask k is an ordering `order[k]` (order[k, t] =
//! the dimension predicted t-th) and the hidden degrees `degrees_l[k]`; the input degree of d
//! is m0(d) = 1 + its position in order[k], and M_l[u, u'] = deg_l[u] >= deg_{l-1}[u'] (deg_0 =
//! m0), M_V[d, u] = m0(d) > deg_L[u], M_A[d, d'] = m0(d) > m0(d'). The masks multiply the
//! weights in the forward pass; the stored weights are never changed by a mask, and a masked
//! weight gets a zero gradient.
//!
//! The K masks are buffers of the checkpoint (`order` [K, n], `degreesL` [K, h_l], I64),
//! drawn from ChaCha8(`model.seed`) stream 0: for k = 0..K the order (0..n, or a shuffle of it
//! with `order = "random"`), then each layer's degrees uniform on [min of the layer below,
//! n - 1] (1 for the layer above the inputs). The masks are part of the model's structure,
//! so their seed is `model.seed`, not `train.seed`: the same config gives the same masks
//! whatever seed the weights start from.
//!
//! Density: log p(x) = logsumexp_k log p_k(x) - log K, an exact, normalized mixture
//! (`eval_masks` = K' uses the first K' masks only: `nade eval --masks`). `logits` and
//! `sampler` are mask 0's. Training is connectivity-agnostic: the trainer announces each
//! minibatch's optimizer step ([`Pass::Train`]) and the training likelihood uses that
//! step's mask alone: mask step mod K (`resample = "cycle"`), or a fresh mask drawn from
//! ChaCha8(`model.seed`) stream step + 1 (`resample = "fresh"`; evaluation still uses the
//! stored K). The step is the optimizer's step count, kept in the run state, so a resumed run
//! uses the masks an uninterrupted one would have.
//!
//! Sampling draws a mask per image from the mixture weights (uniform; for a completion the
//! posterior p(k | x_kept) ∝ p_k(x_kept), exact because the kept set is a prefix of every
//! mask's order, so p_k(x_kept) is the product of mask k's first conditionals), then walks
//! that mask's order one dimension at a time, the images grouped by mask. The choice is read
//! off the image's uniform of dimension 0 by inverse CDF over the weights, and that uniform
//! is rescaled within the chosen interval: it stays uniform and independent of the choice, so
//! one seeded uniform per pixel suffices, and a one-mask model draws exactly what a plain
//! sequential sampler draws.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{ops::sigmoid, VarBuilder};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::masks::read_orderings;
use super::sampler::{check_step, choose_components, index_tensor, sample_by_component};
pub use super::stack::Activation;
use super::stack::{dense_stack_specs, read_stack, validate_ensemble, validate_hidden};
use super::{
    bernoulli_log_prob, log_mean_exp, Autoregressive, BatchEvaluator, Evidence, KeptLogProb, Kind, ModelConfig,
    ModelSpec, Orders, ParamSpec, Pass, SampledBatch, SamplerState,
};
use crate::kernels::bias_add::bias_add;
use crate::kernels::masked_linear::{masked_linear, DegreeMask, MaskedWeights};

/// `[model] kind = "made"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MadeConfig {
    /// Binary dimensions; 0 in a run file = from the data.
    #[serde(default)]
    pub n: usize,
    /// Units of each hidden layer, from the input up: [500] is one layer of 500.
    #[serde(default)]
    pub hidden: Vec<usize>,
    /// K, the masks of the ensemble (1 = plain MADE).
    #[serde(default = "one")]
    pub masks: usize,
    /// The direct input -> output connection A.
    #[serde(default)]
    pub direct: bool,
    #[serde(default)]
    pub activation: Activation,
    /// The orders of the masks: natural (0..n-1 for every mask) or random.
    #[serde(default)]
    pub order: OrderChoice,
    /// Which mask a training minibatch uses: cycle through the K, or a fresh one every step.
    #[serde(default)]
    pub resample: Resample,
    /// Seed of the masks (not of the weights, which come from train.seed) and of dropout.
    #[serde(default)]
    pub seed: u64,
    /// Dropout of the hidden units in training: each unit of each hidden layer is zeroed with
    /// this probability, per row and step, and the kept ones scaled by 1 / (1 - p) (inverted
    /// dropout, so evaluation uses the weights as they are). 0 = none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropout: f64,
    /// Evaluate (and sample) with the first K' masks only (`nade eval --masks`); a run-time
    /// choice, not part of the stored structure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_masks: Option<usize>,
}

fn one() -> usize {
    1
}

fn is_zero(p: &f64) -> bool {
    *p == 0.0
}

impl MadeConfig {
    /// One hidden layer of `hidden` units, one natural-order mask, the defaults otherwise.
    pub fn with_hidden(n: usize, hidden: Vec<usize>) -> Self {
        Self {
            n,
            hidden,
            masks: 1,
            direct: false,
            activation: Activation::default(),
            order: OrderChoice::default(),
            resample: Resample::default(),
            seed: 0,
            dropout: 0.0,
            eval_masks: None,
        }
    }

    /// The masks density and sampling use.
    pub fn used_masks(&self) -> usize {
        self.eval_masks.unwrap_or(self.masks)
    }

    /// The K stored masks: stream 0 of ChaCha8(seed).
    pub fn draw_masks(&self) -> Vec<Connectivity> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        (0..self.masks)
            .map(|_| Connectivity::draw(&mut rng, self.n, &self.hidden, self.order))
            .collect()
    }

    /// The fresh training mask of optimizer step `step` (`resample = "fresh"`).
    pub fn fresh_mask(&self, step: u64) -> Connectivity {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(step + 1);
        Connectivity::draw(&mut rng, self.n, &self.hidden, self.order)
    }

    /// The dropout keep-masks of optimizer step `step`, one (batch, h) 0 / (1 - p)^-1 matrix per
    /// hidden layer: ChaCha8(seed) with the stream's high bit set, apart from the masks' streams.
    pub fn dropout_masks(&self, step: u64, batch: usize, device: &Device) -> Result<Vec<Tensor>> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream((1 << 63) | step);
        let scale = (1.0 / (1.0 - self.dropout)) as f32;
        self.hidden
            .iter()
            .map(|&h| {
                let keep: Vec<f32> = (0..batch * h)
                    .map(|_| {
                        if rng.random::<f64>() < self.dropout {
                            0.0
                        } else {
                            scale
                        }
                    })
                    .collect();
                Tensor::from_vec(keep, (batch, h), device)
            })
            .collect()
    }
}

/// The registry entry of MADE.
pub static KIND: Kind = Kind {
    name: "made",
    summary: "masked autoencoder: every conditional from one masked MLP, K-mask ensembles",
    any_order: false,
    bench_layers: &[500],
    // Layers as given, or none yet: a file's tensors say them (`complete_from_file`).
    with_layers: |n, layers| Ok(MadeConfig::with_hidden(n, layers.to_vec()).into()),
};

impl ModelSpec for MadeConfig {
    fn n(&self) -> usize {
        self.n
    }

    fn set_n(&mut self, n: usize) {
        self.n = n;
    }

    fn layers(&self) -> Vec<usize> {
        self.hidden.clone()
    }

    fn build(&self, vb: VarBuilder) -> Result<Box<dyn Autoregressive>> {
        Ok(Box::new(Made::new(self, vb)?))
    }

    fn describe(&self) -> String {
        format!(
            "made (n = {}, hidden = {:?}, masks = {}{}{})",
            self.n,
            self.hidden,
            self.masks,
            if self.direct { ", direct" } else { "" },
            if self.dropout > 0.0 {
                format!(", dropout {}", self.dropout)
            } else {
                String::new()
            }
        )
    }

    fn extra_metadata(&self) -> Vec<(&'static str, String)> {
        vec![("activation", self.activation.to_string())]
    }

    fn with_seed(&self, seed: u64) -> anyhow::Result<ModelConfig> {
        Ok(ModelConfig::Made(Self {
            seed,
            ..self.clone()
        }))
    }

    fn with_masks(&self, k: usize) -> anyhow::Result<ModelConfig> {
        let cfg = MadeConfig {
            eval_masks: Some(k),
            ..self.clone()
        };
        cfg.validate().map_err(|_| {
            anyhow::anyhow!(
                "--masks {k}: the model has {} mask(s), so 1..={}",
                self.masks, self.masks
            )
        })?;
        Ok(cfg.into())
    }

    fn masks_used(&self) -> Option<usize> {
        Some(self.used_masks())
    }

    fn with_mask_count(&self, k: usize) -> anyhow::Result<ModelConfig> {
        Ok(MadeConfig {
            masks: k,
            order: if k > 1 { OrderChoice::Random } else { self.order },
            ..self.clone()
        }
        .into())
    }

    /// `--masks` is a choice of what to evaluate, not of the stored structure.
    fn structure(&self) -> ModelConfig {
        MadeConfig {
            eval_masks: None,
            ..self.clone()
        }
        .into()
    }

    fn validate(&self) -> anyhow::Result<()> {
        validate_hidden("made", &self.hidden)?;
        if !(0.0..1.0).contains(&self.dropout) {
            anyhow::bail!("model.dropout = {}: must be in [0, 1)", self.dropout);
        }
        validate_ensemble("made", "masks", self.masks, self.eval_masks)
    }

    /// Floats beyond the parameters one batch holds at its peak (for src/memory.rs): the cached
    /// masks (at most [`mask_cache_limit`] entries), one masked copy of every weight, and per
    /// mask the activations of each layer and the output (their gradients too in training,
    /// where one mask is used).
    fn working_floats(&self, batch: usize, pass: Pass, device: &Device) -> f64 {
        let n = self.n as f64;
        let b = batch as f64;
        let mut below = n;
        let mut weights = 0.0;
        let mut units = 0.0;
        for &h in &self.hidden {
            weights += h as f64 * below;
            units += h as f64;
            below = h as f64;
        }
        weights += n * below + if self.direct { n * n } else { 0.0 };
        let masks = (self.masks as f64 * weights).min(mask_cache_limit(device) as f64);
        let per_mask = b * (units + 3.0 * n);
        match pass {
            Pass::Eval => masks + weights + self.used_masks() as f64 * per_mask,
            Pass::Train { .. } => masks + 3.0 * weights + 3.0 * per_mask,
        }
    }

    fn param_specs(&self) -> Vec<ParamSpec> {
        let n = self.n;
        let mut specs = dense_stack_specs(n, &self.hidden, n);
        if self.direct {
            specs.push(ParamSpec::weight(
                "A",
                &[n, n],
                1.0 / (n.max(1) as f32).sqrt(),
            ));
        }
        let drawn = self.draw_masks();
        if self.resample == Resample::Cycle {
            // Only the K stored masks ever train or read the weights: an entry no mask connects
            // is not a parameter of the model (the README's "parameters (used)").
            for spec in &mut specs {
                if let Some(used) = connected_entries(&drawn, &spec.name) {
                    spec.used = used;
                }
            }
        }
        let k = self.masks;
        specs.push(ParamSpec::buffer(
            "order",
            &[k, n],
            drawn
                .iter()
                .flat_map(|m| m.order.iter().map(|&d| d as i64))
                .collect(),
        ));
        for (l, &h) in self.hidden.iter().enumerate() {
            specs.push(ParamSpec::buffer(
                format!("degrees{}", l + 1),
                &[k, h],
                drawn
                    .iter()
                    .flat_map(|m| m.degrees[l].iter().map(|&d| d as i64))
                    .collect(),
            ));
        }
        specs
    }

    /// What a file with only `model`, `n` and `activation` metadata leaves out, from its
    /// tensors: the layer sizes (W1, W2, ...), K (the rows of `order`) and the direct
    /// connection (whether `A` is there).
    fn complete_from_file(
        &mut self,
        metadata: &std::collections::BTreeMap<String, String>,
        shapes: &std::collections::BTreeMap<String, Vec<usize>>,
    ) -> anyhow::Result<()> {
        (self.activation, self.hidden, self.masks) = read_stack("made", metadata, shapes)?;
        self.direct = shapes.contains_key("A");
        Ok(())
    }
}

/// The orders of the masks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderChoice {
    /// 0..n-1 for every mask (the masks differ in their hidden degrees only).
    #[default]
    Natural,
    /// A uniformly random permutation per mask.
    Random,
}

/// Which mask a training minibatch uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resample {
    /// Mask step mod K.
    #[default]
    Cycle,
    /// A fresh mask every step, from stream step + 1 of the mask seed.
    Fresh,
}

/// One mask: the order and the hidden degrees, on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connectivity {
    /// order[t] = the dimension predicted t-th.
    pub order: Vec<usize>,
    /// degrees[l][u] in 1..=n-1, layer l (0-based) above the inputs.
    pub degrees: Vec<Vec<usize>>,
}

impl Connectivity {
    /// The paper's draw: the order, then each layer's degrees uniform on [min below, n - 1].
    pub fn draw(rng: &mut ChaCha8Rng, n: usize, hidden: &[usize], order: OrderChoice) -> Self {
        let mut perm: Vec<usize> = (0..n).collect();
        if order == OrderChoice::Random {
            perm.shuffle(rng);
        }
        // n = 1 has no degree below n: its one conditional sees nothing whatever the degree.
        let top = n.saturating_sub(1).max(1);
        let mut low = 1;
        let degrees = hidden
            .iter()
            .map(|&h| {
                let layer: Vec<usize> = (0..h).map(|_| rng.random_range(low..=top)).collect();
                low = layer.iter().copied().min().unwrap_or(low);
                layer
            })
            .collect();
        Self {
            order: perm,
            degrees,
        }
    }

    /// m0(d) = 1 + the position of d in the order.
    pub fn input_degrees(&self) -> Vec<usize> {
        let mut m0 = vec![0; self.order.len()];
        for (t, &d) in self.order.iter().enumerate() {
            m0[d] = t + 1;
        }
        m0
    }

    /// The mask matrices on `device`.
    fn masks(&self, direct: bool, device: &Device) -> Result<MaskSet> {
        let m0 = self.input_degrees();
        let mut layers = Vec::with_capacity(self.degrees.len());
        let mut below = &m0;
        for degrees in &self.degrees {
            layers.push(DegreeMask::new(degrees, below, false, device)?);
            below = degrees;
        }
        Ok(MaskSet {
            layers,
            v: DegreeMask::new(&m0, below, true, device)?,
            a: if direct {
                Some(DegreeMask::new(&m0, &m0, true, device)?)
            } else {
                None
            },
        })
    }
}

/// Entries of `name` (`W1`.., `b1`.., `V`, `A`) that can move the density under at least one
/// of `masks`: on a path from the input to an output. A hidden unit whose connections upwards
/// are all cut (no unit above, or no output, has a degree to receive it) is dead, with its
/// weights and bias. None for the other tensors.
fn connected_entries(masks: &[Connectivity], name: &str) -> Option<usize> {
    let layers = masks.first()?.degrees.len();
    let (bias, layer) = match name {
        "V" => (false, layers),
        "A" => (false, layers + 1),
        w => {
            let (bias, index) = match w.strip_prefix('W') {
                Some(index) => (false, index),
                None => (true, w.strip_prefix('b')?),
            };
            (bias, index.parse::<usize>().ok()?.checked_sub(1)?)
        }
    };
    let mut union: Vec<bool> = Vec::new();
    for m in masks {
        let m0 = m.input_degrees();
        // live[l][u]: hidden unit u of layer l reaches an output (from the top down).
        let mut live: Vec<Vec<bool>> = vec![Vec::new(); layers];
        for l in (0..layers).rev() {
            live[l] = m.degrees[l]
                .iter()
                .map(|&du| match l + 1 < layers {
                    true => m.degrees[l + 1]
                        .iter()
                        .zip(&live[l + 1])
                        .any(|(&da, &alive)| alive && da >= du),
                    false => m0.iter().any(|&d| d > du),
                })
                .collect();
        }
        // (degrees of the rows, degrees of the columns, strict, the rows' liveness): the rule
        // of `masks` above.
        let all_live = vec![true; m0.len()];
        let (rows, cols, strict, alive) = match layer {
            l if l < layers => {
                let below = if l == 0 { &m0 } else { &m.degrees[l - 1] };
                (&m.degrees[l], below, false, &live[l])
            }
            l if l == layers => (&m0, m.degrees.last().unwrap_or(&m0), true, &all_live),
            _ => (&m0, &m0, true, &all_live),
        };
        if bias {
            union.resize(rows.len(), false);
            for (u, &a) in alive.iter().enumerate() {
                union[u] |= a;
            }
            continue;
        }
        union.resize(rows.len() * cols.len(), false);
        for (r, &dr) in rows.iter().enumerate() {
            for (c, &dc) in cols.iter().enumerate() {
                let connected = if strict { dr > dc } else { dr >= dc };
                // V's and A's rows are outputs: every one counts.
                let live_row = layer >= layers || alive[r];
                union[r * cols.len() + c] |= connected && live_row;
            }
        }
    }
    Some(union.iter().filter(|&&on| on).count())
}

/// One mask's matrices, f32 0/1, with their degrees: M_1..M_L, M_V and M_A.
struct MaskSet {
    layers: Vec<DegreeMask>,
    v: DegreeMask,
    a: Option<DegreeMask>,
}

/// The weights, as stored (never multiplied in place).
#[derive(Clone)]
struct Weights {
    /// (W_l [h_l, h_{l-1}], b_l [h_l]).
    layers: Vec<(Tensor, Tensor)>,
    v: Tensor,
    c: Tensor,
    a: Option<Tensor>,
}

impl Weights {
    fn detached(&self) -> Self {
        Self {
            layers: self
                .layers
                .iter()
                .map(|(w, b)| (w.detach(), b.detach()))
                .collect(),
            v: self.v.detach(),
            c: self.c.detach(),
            a: self.a.as_ref().map(Tensor::detach),
        }
    }
}

/// Above this many prepared weights (f32) over all used masks, an evaluation prepares
/// nothing and runs batch by batch as the model does (K = 32 at 784-1000-1000-784: 82M,
/// 330 MB; the paper's 2 x 8,000 units would need 9.8 GB).
const PREPARED_LIMIT: usize = 96 << 20;

/// Above this many mask entries (f32) over all K masks, the masks are rebuilt when used
/// instead of kept on the device: 64M on the CPU (K = 32 at 784-500-784 with A: 45M, 180 MB),
/// 256M (1 GB) on a GPU, where K = 32 masks of 784-1000-1000-784 (82M, 330 MB) stay, as a
/// PyTorch user keeps them, instead of being made again for every training step.
fn mask_cache_limit(device: &Device) -> usize {
    match device.is_cpu() {
        true => 64 << 20,
        false => 256 << 20,
    }
}

pub struct Made {
    cfg: ModelConfig,
    made: MadeConfig,
    weights: Weights,
    /// The K stored masks (host) and their tensors as read (I64), for the checkpoint.
    connectivity: Vec<Connectivity>,
    order_tensor: Tensor,
    degree_tensors: Vec<Tensor>,
    /// The masks' matrices when they fit [`mask_cache_limit`].
    cached: Option<Vec<MaskSet>>,
    device: Device,
}

impl Made {
    pub fn new(cfg: &MadeConfig, vb: VarBuilder) -> Result<Self> {
        let n = cfg.n;
        let device = vb.device().clone();
        let mut layers = Vec::with_capacity(cfg.hidden.len());
        let mut below = n;
        for (l, &h) in cfg.hidden.iter().enumerate() {
            layers.push((
                vb.get((h, below), &format!("W{}", l + 1))?,
                vb.get(h, &format!("b{}", l + 1))?,
            ));
            below = h;
        }
        let weights = Weights {
            layers,
            v: vb.get((n, below), "V")?,
            c: vb.get(n, "c")?,
            a: if cfg.direct {
                Some(vb.get((n, n), "A")?)
            } else {
                None
            },
        };
        let k = cfg.masks;
        let buffer = |shape: (usize, usize), name: &str| -> Result<Tensor> {
            vb.get_with_hints_dtype(shape, name, Default::default(), DType::I64)?
                .to_dtype(DType::I64)
        };
        let order_tensor = buffer((k, n), "order")?;
        let degree_tensors = cfg
            .hidden
            .iter()
            .enumerate()
            .map(|(l, &h)| buffer((k, h), &format!("degrees{}", l + 1)))
            .collect::<Result<Vec<_>>>()?;
        let connectivity = read_connectivity(cfg, &order_tensor, &degree_tensors)?;
        let entries: usize = {
            let sizes: Vec<usize> = std::iter::once(n)
                .chain(cfg.hidden.iter().copied())
                .collect();
            let hidden: usize = sizes.windows(2).map(|w| w[0] * w[1]).sum();
            k * (hidden + n * below + if cfg.direct { n * n } else { 0 })
        };
        let cached = if entries <= mask_cache_limit(&device) {
            Some(
                connectivity
                    .iter()
                    .map(|m| m.masks(cfg.direct, &device))
                    .collect::<Result<Vec<_>>>()?,
            )
        } else {
            None
        };
        Ok(Self {
            cfg: ModelConfig::Made(cfg.clone()),
            made: cfg.clone(),
            weights,
            connectivity,
            order_tensor,
            degree_tensors,
            cached,
            device,
        })
    }

    /// The masks of the ensemble (the first K' with `eval_masks`).
    pub fn connectivity(&self) -> &[Connectivity] {
        &self.connectivity[..self.made.used_masks()]
    }

    /// Runs `f` with the matrices of stored mask k.
    fn with_mask<T>(&self, k: usize, f: impl FnOnce(&MaskSet) -> Result<T>) -> Result<T> {
        match &self.cached {
            Some(all) => f(&all[k]),
            None => f(&self.connectivity[k].masks(self.made.direct, &self.device)?),
        }
    }

    /// The logits of x under one mask's matrices.
    fn forward(&self, w: &Weights, m: &MaskSet, x: &Tensor) -> Result<Tensor> {
        self.forward_dropped(w, m, x, &[])
    }

    /// [`Made::forward`] with each hidden layer's activations multiplied by its keep-mask
    /// (training with dropout; none: every unit kept).
    fn forward_dropped(&self, w: &Weights, m: &MaskSet, x: &Tensor, keep: &[Tensor]) -> Result<Tensor> {
        let x = x.to_dtype(super::DTYPE)?.contiguous()?;
        let out = self.through_hidden(w, m, &x, keep)?;
        match self.direct_term(w, m, &x)? {
            Some(direct) => out + direct,
            None => Ok(out),
        }
    }

    /// c + (V * M_V) h_L of f32 contiguous x: the logits without the direct connection.
    fn through_hidden(&self, w: &Weights, m: &MaskSet, x: &Tensor, keep: &[Tensor]) -> Result<Tensor> {
        let mut h = x.clone();
        // The data takes no gradient; every layer above it does.
        let mut input_grad = false;
        for (l, ((weight, bias), mask)) in w.layers.iter().zip(&m.layers).enumerate() {
            h = self
                .made
                .activation
                .apply(&bias_add(
                    &masked_linear(&h, weight, mask, input_grad)?,
                    bias,
                )?)?;
            if let Some(keep) = keep.get(l) {
                h = (h * keep)?;
            }
            h = h.contiguous()?;
            input_grad = true;
        }
        bias_add(&masked_linear(&h, &w.v, &m.v, input_grad)?, &w.c)
    }

    /// (A * M_A) x of f32 contiguous x, with the direct connection.
    fn direct_term(&self, w: &Weights, m: &MaskSet, x: &Tensor) -> Result<Option<Tensor>> {
        match (&w.a, &m.a) {
            (Some(a), Some(ma)) => Ok(Some(masked_linear(x, a, ma, false)?)),
            _ => Ok(None),
        }
    }

    /// Logits of x under stored mask k, without an autograd graph.
    pub fn mask_logits(&self, k: usize, x: &Tensor) -> Result<Tensor> {
        let w = self.weights.detached();
        self.with_mask(k, |m| self.forward(&w, m, x))
    }

    /// log p_k(x) per row, (B,), for each used mask k, without an autograd graph. M_A depends
    /// on the order alone, so when the masks share one the direct term (A * M_A) x, the
    /// largest product of a 500-unit MADE, is computed once for all of them (the same bits).
    fn per_mask_log_probs(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let w = self.weights.detached();
        let x32 = x.to_dtype(super::DTYPE)?.contiguous()?;
        let shared = match self.common_order() {
            Some(_) => self.with_mask(0, |m| self.direct_term(&w, m, &x32))?,
            None => None,
        };
        (0..self.made.used_masks())
            .map(|k| {
                let logits = self.with_mask(k, |m| match &shared {
                    Some(direct) => self.through_hidden(&w, m, &x32, &[])? + direct,
                    None => self.forward(&w, m, &x32),
                })?;
                bernoulli_log_prob(&logits, x)
            })
            .collect()
    }

    /// The one order of the used masks, if they share one.
    fn common_order(&self) -> Option<&[usize]> {
        let used = self.connectivity();
        let first = &used[0].order;
        used.iter()
            .all(|m| &m.order == first)
            .then_some(first.as_slice())
    }

    /// log p_k(x_kept) of every row under each used mask: the sum of mask k's conditionals
    /// over the leading positions of its order that the row observes (all of the kept set
    /// when it is a prefix of every order, as `complete_with` ensures).
    fn prefix_log_likelihoods(
        &self,
        kept: &Tensor,
        observed: &[Vec<f32>],
    ) -> Result<Vec<Vec<f64>>> {
        let rows = observed.len();
        let kept_host = kept.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let mut out = vec![Vec::with_capacity(self.connectivity().len()); rows];
        for (k, mask) in self.connectivity().iter().enumerate() {
            let logits = self.mask_logits(k, kept)?.to_vec2::<f32>()?;
            for r in 0..rows {
                let mut sum = 0f64;
                for &d in mask.order.iter().take_while(|&&d| observed[r][d] != 0.0) {
                    let l = logits[r][d] as f64;
                    let x = kept_host[r][d] as f64;
                    // x l - softplus(l), stable for any l.
                    sum += x * l - (l.max(0.0) + (-l.abs()).exp().ln_1p());
                }
                out[r].push(sum);
            }
        }
        Ok(out)
    }

    /// Samples rows of one mask k, walking its order: (values, probs) in dimension layout.
    fn sample_mask(
        &self,
        k: usize,
        kept: &Tensor,
        observed: &Tensor,
        observed_host: &[Vec<f32>],
        uniforms: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let order = &self.connectivity[k].order;
        let n = order.len();
        let batch = observed_host.len();
        let prefix = order
            .iter()
            .take_while(|&&d| observed_host.iter().all(|row| row[d] != 0.0))
            .count();
        let mut state = self.sampler_of(k, batch)?;
        let mut values = Vec::with_capacity(n - prefix + 1);
        let mut probs = Vec::with_capacity(n - prefix + 1);
        if prefix > 0 {
            let ids = index_tensor(&order[..prefix], &self.device)?;
            let fed = kept.index_select(&ids, 1)?.contiguous()?;
            state.observe_many(&fed)?;
            // The prefix's conditionals depend on kept values only: one parallel pass.
            let logits = self.mask_logits(k, kept)?.index_select(&ids, 1)?;
            values.push(fed);
            probs.push(sigmoid(&logits)?);
        }
        for &d in &order[prefix..] {
            let p = sigmoid(&state.logits()?)?; // (B, 1)
            let drawn = uniforms.narrow(1, d, 1)?.lt(&p)?.to_dtype(super::DTYPE)?;
            let x = if observed_host.iter().any(|row| row[d] != 0.0) {
                let seen = observed.narrow(1, d, 1)?;
                (&drawn + seen.mul(&(kept.narrow(1, d, 1)? - &drawn)?)?)?
            } else {
                drawn
            };
            state.observe(&x)?;
            values.push(x);
            probs.push(p);
        }
        // Columns come in the order's positions; position of d = m0(d) - 1.
        let positions: Vec<usize> = self.connectivity[k]
            .input_degrees()
            .iter()
            .map(|m| m - 1)
            .collect();
        let back = index_tensor(&positions, &self.device)?;
        Ok((
            Tensor::cat(&values, 1)?.index_select(&back, 1)?,
            Tensor::cat(&probs, 1)?.index_select(&back, 1)?,
        ))
    }

    /// A sequential sampler walking stored mask k's order.
    fn sampler_of(&self, k: usize, batch: usize) -> Result<MadeSampler> {
        let w = self.weights.detached();
        self.with_mask(k, |m| {
            let first_t = (&w.layers[0].0 * &m.layers[0].matrix)?.t()?.contiguous()?; // (n, h1)
            let h1 = first_t.dim(1)?;
            let a1 = w.layers[0]
                .1
                .reshape((1, h1))?
                .broadcast_as((batch, h1))?
                .contiguous()?;
            let deeper = w.layers[1..]
                .iter()
                .zip(&m.layers[1..])
                .map(|((weight, bias), mask)| {
                    Ok(((weight * &mask.matrix)?.t()?.contiguous()?, bias.clone()))
                })
                .collect::<Result<Vec<_>>>()?;
            let n = w.c.dim(0)?;
            let direct_t = match (&w.a, &m.a) {
                (Some(a), Some(ma)) => Some((a * &ma.matrix)?.t()?.contiguous()?),
                _ => None,
            };
            let out =
                w.c.reshape((1, n))?
                    .broadcast_as((batch, n))?
                    .contiguous()?;
            Ok(MadeSampler {
                order: self.connectivity[k].order.clone(),
                activation: self.made.activation,
                first_t,
                deeper,
                v: (&w.v * &m.v.matrix)?,
                direct_t,
                a1,
                out,
                t: 0,
            })
        })
    }
}

/// The K masks of the checkpoint's buffers, checked: each order a permutation of 0..n, each
/// degree in 1..=max(n - 1, 1).
fn read_connectivity(
    cfg: &MadeConfig,
    order: &Tensor,
    degrees: &[Tensor],
) -> Result<Vec<Connectivity>> {
    let n = cfg.n;
    let orders = read_orderings(n, order)?;
    let layers = degrees
        .iter()
        .map(|t| t.to_device(&Device::Cpu)?.to_vec2::<i64>())
        .collect::<Result<Vec<_>>>()?;
    let top = n.saturating_sub(1).max(1) as i64;
    orders
        .into_iter()
        .take(cfg.masks)
        .enumerate()
        .map(|(k, order)| {
            let degrees = layers
                .iter()
                .enumerate()
                .map(|(l, layer)| {
                    layer[k]
                        .iter()
                        .map(|&m| {
                            if !(1..=top).contains(&m) {
                                // Error::Msg, not bail!: no backtrace in a message users read.
                                return Err(candle_core::Error::Msg(format!(
                                    "tensor `degrees{}`: row {k} holds {m}, outside 1..={top}",
                                    l + 1
                                )));
                            }
                            Ok(m as usize)
                        })
                        .collect::<Result<Vec<_>>>()
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Connectivity { order, degrees })
        })
        .collect()
}

/// log (1/K) sum_k p_k(x) per row from each used mask's log p_k(x), in a stable log-sum-exp.
fn mixture(per_mask: Vec<Tensor>) -> Result<Tensor> {
    let used = per_mask.len();
    if used == 1 {
        return Ok(per_mask.into_iter().next().expect("one mask"));
    }
    Tensor::stack(&per_mask, 1)?.log_sum_exp(1)? - (used as f64).ln()
}

/// Each used mask's log p_k(x) as [row][k].
fn components(per_mask: Vec<Tensor>) -> Result<Option<Vec<Vec<f64>>>> {
    let rows = Tensor::stack(&per_mask, 1)?.to_vec2::<f32>()?;
    Ok(Some(
        rows.into_iter()
            .map(|r| r.into_iter().map(f64::from).collect())
            .collect(),
    ))
}

/// Each used mask's masked weights, made once for an evaluation ([`super::evaluator`]):
/// per batch, only the products remain (the same values as [`Made::per_mask_log_probs`]).
struct PreparedMasks<'a> {
    made: &'a Made,
    masks: Vec<PreparedMask>,
    /// A * M_A when the used masks share their order, and so M_A.
    shared_direct: Option<MaskedWeights>,
}

struct PreparedMask {
    layers: Vec<MaskedWeights>,
    v: MaskedWeights,
    direct: Option<MaskedWeights>,
}

impl<'a> PreparedMasks<'a> {
    /// None where the used masks' weights exceed [`PREPARED_LIMIT`].
    fn new(made: &'a Made) -> Result<Option<Self>> {
        let w = &made.weights;
        let used = made.made.used_masks();
        let shared = made.common_order().is_some();
        let per_mask: usize = w.layers.iter().map(|(l, _)| l.elem_count()).sum::<usize>()
            + w.v.elem_count();
        let direct = w.a.as_ref().map_or(0, Tensor::elem_count);
        let total = used * per_mask + if shared { direct } else { used * direct };
        if total > PREPARED_LIMIT {
            return Ok(None);
        }
        let mut shared_direct = None;
        let mut masks = Vec::with_capacity(used);
        for k in 0..used {
            masks.push(made.with_mask(k, |m| {
                let mut direct = match (&w.a, &m.a) {
                    (Some(a), Some(ma)) if !shared || k == 0 => Some(MaskedWeights::new(a, ma)?),
                    _ => None,
                };
                if shared {
                    shared_direct = shared_direct.take().or(direct.take());
                }
                Ok(PreparedMask {
                    layers: w
                        .layers
                        .iter()
                        .zip(&m.layers)
                        .map(|((weight, _), mask)| MaskedWeights::new(weight, mask))
                        .collect::<Result<_>>()?,
                    v: MaskedWeights::new(&w.v, &m.v)?,
                    direct,
                })
            })?);
        }
        Ok(Some(Self {
            made,
            masks,
            shared_direct,
        }))
    }

    /// log p_k(x) per row for each used mask k.
    fn per_mask_log_probs(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let w = &self.made.weights;
        let x32 = x.to_dtype(super::DTYPE)?.contiguous()?;
        let shared = match &self.shared_direct {
            Some(a) => Some(a.apply(&x32)?),
            None => None,
        };
        self.masks
            .iter()
            .map(|m| {
                let mut h = x32.clone();
                for (prepared, (_, bias)) in m.layers.iter().zip(&w.layers) {
                    h = self
                        .made
                        .made
                        .activation
                        .apply(&bias_add(&prepared.apply(&h)?, &bias.detach())?)?
                        .contiguous()?;
                }
                let mut logits = bias_add(&m.v.apply(&h)?, &w.c.detach())?;
                if let Some(direct) = &shared {
                    logits = (logits + direct)?;
                }
                if let Some(a) = &m.direct {
                    logits = (logits + a.apply(&x32)?)?;
                }
                bernoulli_log_prob(&logits, x)
            })
            .collect()
    }
}

impl BatchEvaluator for PreparedMasks<'_> {
    fn log_prob(&self, x: &Tensor) -> Result<Tensor> {
        mixture(self.per_mask_log_probs(x)?)
    }

    fn component_log_probs(&self, x: &Tensor) -> Result<Option<Vec<Vec<f64>>>> {
        components(self.per_mask_log_probs(x)?)
    }
}

impl Autoregressive for Made {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Mask 0's logits.
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        self.with_mask(0, |m| self.forward(&self.weights, m, x))
    }

    fn log_prob(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        match pass {
            Pass::Train { step } => {
                let keep = if self.made.dropout > 0.0 {
                    self.made.dropout_masks(step, x.dim(0)?, &self.device)?
                } else {
                    Vec::new()
                };
                let logits = match self.made.resample {
                    Resample::Cycle => {
                        let k = (step % self.made.masks as u64) as usize;
                        self.with_mask(k, |m| self.forward_dropped(&self.weights, m, x, &keep))?
                    }
                    Resample::Fresh => {
                        let m = self
                            .made
                            .fresh_mask(step)
                            .masks(self.made.direct, &self.device)?;
                        self.forward_dropped(&self.weights, &m, x, &keep)?
                    }
                };
                bernoulli_log_prob(&logits, x)
            }
            Pass::Eval => mixture(self.per_mask_log_probs(x)?),
        }
    }

    fn component_log_probs(&self, x: &Tensor) -> Result<Option<Vec<Vec<f64>>>> {
        components(self.per_mask_log_probs(x)?)
    }

    fn prepared_evaluator(&self) -> Result<Option<Box<dyn BatchEvaluator + '_>>> {
        Ok(PreparedMasks::new(self)?.map(|p| Box::new(p) as Box<dyn BatchEvaluator + '_>))
    }

    /// Where every row's kept set is a prefix of every used mask's order: the mixture of the
    /// masks' prefix likelihoods.
    fn kept_log_prob(&self, kept: &Tensor, observed: &Tensor) -> Result<Option<KeptLogProb>> {
        let observed_host = observed.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let orders = self.orders();
        let prefixes = observed_host.iter().all(|row| {
            let row: Vec<bool> = row.iter().map(|&v| v != 0.0).collect();
            orders.conditions_on(&row)
        });
        if !prefixes {
            return Ok(None);
        }
        let per_mask = self.prefix_log_likelihoods(kept, &observed_host)?;
        Ok(Some(KeptLogProb {
            first: per_mask.iter().map(|lp| lp[0]).collect(),
            model: per_mask.iter().map(|lp| log_mean_exp(lp)).collect(),
            components: self.made.used_masks(),
        }))
    }

    fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let w = &self.weights;
        let mut out = Vec::new();
        for (l, (weight, bias)) in w.layers.iter().enumerate() {
            out.push((format!("W{}", l + 1), weight.clone()));
            out.push((format!("b{}", l + 1), bias.clone()));
        }
        out.push(("V".into(), w.v.clone()));
        out.push(("c".into(), w.c.clone()));
        if let Some(a) = &w.a {
            out.push(("A".into(), a.clone()));
        }
        out.push(("order".into(), self.order_tensor.clone()));
        for (l, t) in self.degree_tensors.iter().enumerate() {
            out.push((format!("degrees{}", l + 1), t.clone()));
        }
        out
    }

    fn orders(&self) -> Orders {
        match self.common_order() {
            Some(order) => Orders::Fixed(order.to_vec()),
            None => Orders::Mixture(
                self.connectivity()
                    .iter()
                    .map(|m| m.order.clone())
                    .collect(),
            ),
        }
    }

    fn sampler(&self, batch: usize) -> Result<Box<dyn SamplerState + '_>> {
        Ok(Box::new(self.sampler_of(0, batch)?))
    }

    fn sample_batch(&self, evidence: &Evidence) -> Result<SampledBatch> {
        let used = self.made.used_masks();
        if let Some(order) = evidence.order {
            match self.common_order() {
                Some(own) => evidence.check_fixed_order(own, "made")?,
                None => candle_core::bail!(
                    "a made model with masks of different orders samples each image in its mask's order; it takes no order ({order:?} was asked)"
                ),
            }
        }
        let (batch, _) = evidence.uniforms.dims2()?;
        let observed_host = evidence.observed.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let (choice, uniforms) = if used > 1 {
            let log_w = self.prefix_log_likelihoods(evidence.kept, &observed_host)?;
            choose_components(&log_w, evidence.uniforms)?
        } else {
            (vec![0; batch], evidence.uniforms.clone())
        };
        sample_by_component(&choice, used, self.made.n, &self.device, |k, rows, ids| {
            let pick_rows = |t: &Tensor| t.index_select(ids, 0)?.contiguous();
            let group_observed: Vec<Vec<f32>> =
                rows.iter().map(|&r| observed_host[r].clone()).collect();
            let (values, probs) = self.sample_mask(
                k,
                &pick_rows(evidence.kept)?,
                &pick_rows(evidence.observed)?,
                &group_observed,
                &pick_rows(&uniforms)?,
            )?;
            Ok(SampledBatch { values, probs })
        })
    }
}

/// Walks one mask's order: a1 = b1 + (W1 * M1)[:, fed] x_fed grows by one column per value
/// fed (O(B h1)), the layers above are recomputed from it (O(B h_l h_{l+1})), and only the
/// output row of the dimension asked for is read out; with the direct connection the running
/// c + (A * M_A) x_fed grows the same way.
struct MadeSampler {
    order: Vec<usize>,
    activation: Activation,
    /// (W1 * M1)^T, (n, h1): row d is what x_d adds to a1.
    first_t: Tensor,
    /// ((W_l * M_l)^T, b_l) for l >= 2.
    deeper: Vec<(Tensor, Tensor)>,
    /// V * M_V, (n, h_L).
    v: Tensor,
    /// (A * M_A)^T, (n, n).
    direct_t: Option<Tensor>,
    /// (B, h1) pre-activations of the first layer.
    a1: Tensor,
    /// (B, n) output pre-activations from c and the direct connection.
    out: Tensor,
    t: usize,
}

impl SamplerState for MadeSampler {
    fn position(&self) -> usize {
        self.t
    }

    fn logits(&mut self) -> Result<Tensor> {
        check_step(self.t, 1, self.order.len())?;
        let d = self.order[self.t];
        let mut h = self.activation.apply(&self.a1)?;
        for (w_t, b) in &self.deeper {
            h = self.activation.apply(&h.matmul(w_t)?.broadcast_add(b)?)?;
        }
        h.matmul(&self.v.narrow(0, d, 1)?.t()?)?
            .broadcast_add(&self.out.narrow(1, d, 1)?)
    }

    fn observe(&mut self, x_i: &Tensor) -> Result<()> {
        self.observe_many(x_i)
    }

    fn observe_many(&mut self, xs: &Tensor) -> Result<()> {
        let k = xs.dim(1)?;
        check_step(self.t, k, self.order.len())?;
        if k == 0 {
            return Ok(());
        }
        let ids = index_tensor(&self.order[self.t..self.t + k], xs.device())?;
        let xs = xs.to_dtype(super::DTYPE)?.contiguous()?;
        self.a1 = (&self.a1 + xs.matmul(&self.first_t.index_select(&ids, 0)?)?)?;
        if let Some(direct_t) = &self.direct_t {
            self.out = (&self.out + xs.matmul(&direct_t.index_select(&ids, 0)?)?)?;
        }
        self.t += k;
        Ok(())
    }
}
