//! Order-agnostic deep NADE (Uria, Murray & Larochelle 2014; JMLR 2016): one deep network
//! for every ordering of the pixels at once, and exact ensembles of K orderings.
//!
//! The network sees the observed pixels and which they are (the "mask as input"): with m the
//! 0/1 mask of observed dimensions, h_1 = g(W1 [x * m ; m] + b1) (`W1` [h1, 2n]: columns
//! 0..n multiply x * m, columns n..2n multiply m), h_l = g(W_l h_{l-1} + b_l) for l = 2..L,
//! and logits = V h_L + c (`V` [n, hL], `c` [n]); g is relu, sigmoid or tanh. The logit of
//! dimension i is that of p(x_i = 1 | x_obs) for any observed set not holding i.
//!
//! Density under one ordering o (a permutation of 0..n): log p_o(x) = sum_t log p(x_{o_t} |
//! x_{o_<t}), one conditional per step with m = 1 on {o_1..o_{t-1}}. The steps are batched
//! over images, and the first layer is updated incrementally (NADE's trick): when o_t
//! becomes observed, a1 += x_{o_t} W1[:, o_t] + W1[:, n + o_t], so a step costs the layers
//! above the first and one output unit, V[o_t] . h_L + c[o_t]. The ensemble is the mixture
//! of the K stored orderings (`order` [K, n], I64): log p(x) = logsumexp_k log p_{o_k}(x) -
//! log K, normalized. `eval_orders` = K' (`nade eval --orders`) uses the first K' only.
//!
//! The orderings are drawn from ChaCha8(`model.seed`) stream 0 (K shuffles of 0..n): they are
//! part of the model's structure, like MADE's masks, so they take `model.seed` and not
//! `train.seed`, and they are stored so that every evaluation is reproducible.
//!
//! Training is order-agnostic. Per example, d is uniform on 0..n-1 and the observed set a
//! uniformly random subset of d dimensions, drawn from ChaCha8(`model.seed`) stream step + 1
//! (the optimizer step the trainer passes in, [`Pass::Train`]), row by
//! row, so a resumed run draws what an uninterrupted one would. The loss of an example is
//! n / (n - d) * sum over the unobserved i of -log p(x_i | x_obs), an unbiased estimate of
//! the average over orderings of -log p_o(x); in [`Pass::Train`] `log_prob` returns minus
//! that loss, so the trainer's mean NLL of a minibatch is this estimate (one forward pass per
//! example), not an exact likelihood.
//!
//! Any observed set (`Orders::Any`): log p(x_kept) is exact under each ordering restricted to
//! the kept set (o' = the kept dimensions in o's order, then the others), the marginal of the
//! normalized p_{o'}; the ensemble's is logsumexp_k log p_{o'_k}(x_kept) - log K, the marginal
//! of the mixture of the K restricted orderings. Sampling and completion observe the kept
//! pixels at once (one matmul into a1), then walk the hidden ones: in the order asked for
//! (a given order, or one per row), or else in a stored ordering per image, chosen
//! uniformly for a sample (an exact draw from the ensemble) and by the posterior
//! p(k | x_kept) ∝ p_{o'_k}(x_kept) for a completion (an exact draw from the restricted
//! ensemble's conditional). The choice reads the image's uniform of dimension 0 by inverse
//! CDF and rescales it, as MADE does, so it stays uniform and independent of the choice.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::masks::read_orderings;
use super::sampler::{check_step, choose_components};
pub use super::stack::Activation;
use super::stack::{dense_stack_specs, read_stack, validate_ensemble, validate_hidden};
use super::{
    log_mean_exp, weighted_bernoulli_log_prob, Autoregressive, Evidence, KeptLogProb, Kind,
    ModelConfig, ModelSpec, Orders, ParamSpec, Pass, SampledBatch, SamplerState,
};
use crate::kernels::deepnade_steps::{first_layer_steps, log_lik, log_lik_start, output_units};
use crate::kernels::deepnade_walk::{Act, HostNet};
use crate::kernels::linear::linear;

/// `[model] kind = "deepnade"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeepNadeConfig {
    /// Binary dimensions; 0 in a run file = from the data.
    #[serde(default)]
    pub n: usize,
    /// Units of each hidden layer, from the input up: [500, 500] is two layers of 500.
    #[serde(default)]
    pub hidden: Vec<usize>,
    #[serde(default)]
    pub activation: Activation,
    /// K, the stored orderings of the evaluation ensemble.
    #[serde(default = "one")]
    pub orders: usize,
    /// Seed of the orderings and of the training subsets (the weights take train.seed).
    #[serde(default)]
    pub seed: u64,
    /// Evaluate with the first K' orderings only (`nade eval --orders`); a run-time choice,
    /// not part of the stored structure. In a run file it sets what validation and the final
    /// test pass use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_orders: Option<usize>,
}

fn one() -> usize {
    1
}

/// Rows one incremental walk of the CPU carries at most (images times orderings): large
/// enough for efficient matmuls, small enough that the per-row orderings stay a few MB.
pub const WALK_ROWS: usize = 2048;
/// Steps per block of the CPU's walk.
const MAX_BLOCK_STEPS: usize = 16;

/// Rows one walk on a device (CUDA) carries at most: the products of a block want tens of
/// thousands of rows to fill a GPU.
const DEVICE_WALK_ROWS: usize = 16384;
/// The device walk takes up to this many rows x steps in one block: 32,768 rows of 500
/// units are 64 MB per layer.
const DEVICE_BLOCK_ROWS: usize = 32768;
/// At most this many steps per block of the device walk.
const DEVICE_MAX_BLOCK_STEPS: usize = 64;

impl DeepNadeConfig {
    /// `hidden` layers, relu, one ordering, seed 0.
    pub fn with_hidden(n: usize, hidden: Vec<usize>) -> Self {
        Self {
            n,
            hidden,
            activation: Activation::default(),
            orders: 1,
            seed: 0,
            eval_orders: None,
        }
    }

    /// The orderings density uses.
    pub fn used_orders(&self) -> usize {
        self.eval_orders.unwrap_or(self.orders)
    }

    /// The K orderings of a new model: K shuffles of 0..n from stream 0 of ChaCha8(seed).
    pub fn draw_orders(&self) -> Vec<Vec<usize>> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        (0..self.orders)
            .map(|_| {
                let mut order: Vec<usize> = (0..self.n).collect();
                order.shuffle(&mut rng);
                order
            })
            .collect()
    }

    /// The observed sets of optimizer step `step` for a minibatch of `rows` examples: per
    /// row, d uniform on 0..n-1, then d dimensions drawn without replacement (a partial
    /// Fisher-Yates shuffle), from stream step + 1 of ChaCha8(seed). 1 = observed.
    pub fn training_masks(&self, step: u64, rows: usize) -> Vec<Vec<bool>> {
        let n = self.n;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(step + 1);
        (0..rows)
            .map(|_| {
                let d = rng.random_range(0..n);
                let mut dims: Vec<usize> = (0..n).collect();
                let mut observed = vec![false; n];
                for j in 0..d {
                    let pick = rng.random_range(j..n);
                    dims.swap(j, pick);
                    observed[dims[j]] = true;
                }
                observed
            })
            .collect()
    }

}

/// The registry entry of deep NADE.
pub static KIND: Kind = Kind {
    name: "deepnade",
    summary: "order-agnostic deep NADE: one deep network for every ordering, K-ordering ensembles",
    any_order: true,
    // The shipped model's layers.
    bench_layers: &[500, 500],
    // Layers as given, or none yet: a file's tensors say them (`complete_from_file`).
    with_layers: |n, layers| Ok(DeepNadeConfig::with_hidden(n, layers.to_vec()).into()),
};

impl ModelSpec for DeepNadeConfig {
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
        Ok(Box::new(DeepNade::new(self, vb)?))
    }

    fn describe(&self) -> String {
        let used = match self.eval_orders {
            Some(k) => format!(", {k} of {} orderings", self.orders),
            None => format!(", {} ordering(s)", self.orders),
        };
        format!(
            "deepnade (n = {}, hidden = {:?}, {}{used})",
            self.n, self.hidden, self.activation
        )
    }

    fn extra_metadata(&self) -> Vec<(&'static str, String)> {
        vec![("activation", self.activation.to_string())]
    }

    /// The exact evaluation walks every row of a batch through one matmul per step, which
    /// wants many rows: on the CPU (2 threads, one ordering) 2,048 images are 2.3x as fast per
    /// image as 100.
    fn eval_batch(&self) -> usize {
        WALK_ROWS
    }

    fn with_seed(&self, seed: u64) -> anyhow::Result<ModelConfig> {
        Ok(ModelConfig::DeepNade(Self {
            seed,
            ..self.clone()
        }))
    }

    fn with_orders(&self, k: usize) -> anyhow::Result<ModelConfig> {
        let cfg = DeepNadeConfig {
            eval_orders: Some(k),
            ..self.clone()
        };
        cfg.validate().map_err(|_| {
            anyhow::anyhow!(
                "--orders {k}: the model has {} ordering(s), so 1..={}",
                self.orders, self.orders
            )
        })?;
        Ok(cfg.into())
    }

    fn orders_used(&self) -> Option<usize> {
        Some(self.used_orders())
    }

    /// `--orders` is a choice of what to evaluate, not of the stored structure.
    fn structure(&self) -> ModelConfig {
        DeepNadeConfig {
            eval_orders: None,
            ..self.clone()
        }
        .into()
    }

    fn validate(&self) -> anyhow::Result<()> {
        validate_hidden("deepnade", &self.hidden)?;
        validate_ensemble("deepnade", "orders", self.orders, self.eval_orders)
    }

    fn param_specs(&self) -> Vec<ParamSpec> {
        let n = self.n;
        // W1 reads [x * m ; m]: 2n inputs.
        let mut specs = dense_stack_specs(2 * n, &self.hidden, n);
        specs.push(ParamSpec::buffer(
            "order",
            &[self.orders, n],
            self.draw_orders()
                .iter()
                .flatten()
                .map(|&d| d as i64)
                .collect(),
        ));
        specs
    }

    /// What a file with only `model`, `n` and `activation` metadata leaves out, from its
    /// tensors: the layer sizes (the rows of W1, W2, ...) and K (the rows of `order`).
    fn complete_from_file(
        &mut self,
        metadata: &std::collections::BTreeMap<String, String>,
        shapes: &std::collections::BTreeMap<String, Vec<usize>>,
    ) -> anyhow::Result<()> {
        (self.activation, self.hidden, self.orders) = read_stack("deepnade", metadata, shapes)?;
        Ok(())
    }

    /// Floats a batch holds at its peak beyond the parameters (src/memory.rs). Training: one
    /// pass of the network over (B, 2n) inputs, its graph and gradients. Evaluation on the
    /// CPU: a walk of up to max(B, WALK_ROWS) rows, each holding a1 and the layers above, the
    /// gathered first-layer rows and output rows; on a device, a block of up to
    /// DEVICE_BLOCK_ROWS rows through the layers (two of each width at a time) beside the
    /// walk's a1; plus the log-likelihood per image and ordering.
    fn working_floats(&self, batch: usize, pass: Pass, device: &Device) -> f64 {
        let (b, n) = (batch as f64, self.n as f64);
        let units = self.hidden.iter().sum::<usize>() as f64;
        let widest = self.hidden.iter().copied().max().unwrap_or(0) as f64;
        match pass {
            Pass::Train { .. } => 2.0 * (b * (2.0 * n + 3.0 * units) + 6.0 * b * n),
            Pass::Eval if !device.is_cpu() => {
                let walk = batch.max(DEVICE_WALK_ROWS) as f64;
                let h1 = self.hidden.first().copied().unwrap_or(0) as f64;
                DEVICE_BLOCK_ROWS as f64 * (h1 + 2.0 * widest + 2.0) + walk * (2.0 * h1 + n)
                    + b * self.used_orders() as f64 * 2.0
            }
            Pass::Eval => {
                let rows = (batch.max(WALK_ROWS)) as f64;
                rows * (2.0 * units + 3.0 * widest + 2.0 * n) + b * self.used_orders() as f64 * 2.0
            }
        }
    }
}

/// The weights without an autograd graph, laid out for the incremental walk.
struct Frozen {
    n: usize,
    activation: Activation,
    /// (2n + 1, h1): row v n + d is what observing x_d = v adds to a1, W1[:, n + d] + v
    /// W1[:, d]; row 2n is zero (a row that observes nothing at this step).
    table: Tensor,
    b1: Tensor,
    /// (W_l^T [h_{l-1}, h_l], b_l) for l >= 2.
    deeper: Vec<(Tensor, Tensor)>,
    /// (n, hL).
    v: Tensor,
    /// (n), on the model's device (the device walk) and in host memory.
    c_t: Tensor,
    c: Vec<f32>,
    /// W1^T (2n, h1), for observing many dimensions in one matmul.
    first_t: Tensor,
    /// The same weights in host memory for the CPU walk (src/kernels/deepnade_walk.rs);
    /// None: the device walk (kernels/deepnade_steps.rs) on the model's device.
    host: Option<HostNet>,
}

impl Frozen {
    fn new(model: &DeepNade) -> Result<Self> {
        let mut frozen = Self::tensors(model)?;
        if model.host_walk {
            frozen.host = Some(frozen.to_host()?);
        }
        Ok(frozen)
    }

    /// The activation as the kernels name it.
    fn act(&self) -> Act {
        match self.activation {
            Activation::Relu => Act::Relu,
            Activation::Sigmoid => Act::Sigmoid,
            Activation::Tanh => Act::Tanh,
        }
    }

    fn to_host(&self) -> Result<HostNet> {
        let host = |t: &Tensor| t.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>();
        Ok(HostNet::new(
            self.act(),
            host(&self.table)?,
            self.b1.dim(0)?,
            self.deeper
                .iter()
                .map(|(w_t, b)| Ok((host(w_t)?, host(b)?)))
                .collect::<Result<_>>()?,
            host(&self.v)?,
            self.c.clone(),
        ))
    }

    fn tensors(model: &DeepNade) -> Result<Self> {
        let n = model.dn.n;
        let (w1, b1) = &model.layers[0];
        let w1 = w1.detach();
        let h1 = w1.dim(0)?;
        let first_t = w1.t()?.contiguous()?; // (2n, h1)
        let for_x = first_t.narrow(0, 0, n)?;
        let for_m = first_t.narrow(0, n, n)?;
        let table = Tensor::cat(
            &[
                for_m.clone(),
                (&for_m + &for_x)?,
                Tensor::zeros((1, h1), w1.dtype(), w1.device())?,
            ],
            0,
        )?
        .contiguous()?;
        Ok(Self {
            n,
            activation: model.dn.activation,
            table,
            b1: b1.detach(),
            deeper: model.layers[1..]
                .iter()
                .map(|(w, b)| Ok((w.detach().t()?.contiguous()?, b.detach())))
                .collect::<Result<_>>()?,
            v: model.v.detach().contiguous()?,
            c_t: model.c.detach().contiguous()?,
            c: model.c.detach().to_dtype(DType::F32)?.to_vec1::<f32>()?,
            first_t,
            host: None,
        })
    }

    /// Row index in `table` of observing x_d = value.
    fn entry(&self, d: usize, value: f32) -> u32 {
        (if value > 0.5 { self.n + d } else { d }) as u32
    }

    fn nothing(&self) -> u32 {
        (2 * self.n) as u32
    }

    /// The logit of dimension dims[j] for every row j of h = g(a1) (J, h1) on the model's
    /// device: the products of the layers above, then one output unit per row
    /// (kernels/deepnade_steps.rs), (J).
    fn device_top(&self, mut h: Tensor, dims: &Tensor) -> Result<Tensor> {
        let Some(((last_w, last_b), below)) = self.deeper.split_last() else {
            return output_units(&h, None, &self.v, &self.c_t, dims, self.act());
        };
        for (w_t, b) in below {
            h = self.activation.apply(&h.matmul(w_t)?.broadcast_add(b)?)?;
        }
        output_units(&h.matmul(last_w)?, Some(last_b), &self.v, &self.c_t, dims, self.act())
    }
}

/// The first layer's pre-activations of the walks in progress, (R, h1): a tensor on the
/// model's device, or host memory for the CPU walk.
enum A1 {
    Tensor(Tensor),
    Host(Vec<f32>),
}

/// Walks in progress over `net`.
struct Walker<'a> {
    net: &'a Frozen,
    a1: A1,
}

impl<'a> Walker<'a> {
    /// Nothing observed yet, or the observed `x` where `m` is 1 ((R, n) each).
    fn new(net: &'a Frozen, rows: usize, observed: Option<(&Tensor, &Tensor)>) -> Result<Self> {
        let h1 = net.b1.dim(0)?;
        let mut a1 = net.b1.reshape((1, h1))?.broadcast_as((rows, h1))?;
        if let Some((x, m)) = observed {
            let input = Tensor::cat(&[(x * m)?, m.clone()], 1)?;
            a1 = a1.broadcast_add(&input.matmul(&net.first_t)?)?;
        }
        let a1 = match net.host {
            Some(_) => A1::Host(
                a1.to_device(&Device::Cpu)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            ),
            None => A1::Tensor(a1.contiguous()?),
        };
        Ok(Self { net, a1 })
    }

    /// The logit of dimension dims[r] for every row r given what row r observed so far.
    fn logits(&self, dims: &[u32]) -> Result<Vec<f32>> {
        let net = self.net;
        let a1 = match (&self.a1, &net.host) {
            (A1::Host(a1), Some(host)) => return Ok(host.logits(a1, dims)),
            (A1::Tensor(a1), _) => a1,
            (A1::Host(_), None) => candle_core::bail!("deepnade: a host walk without host weights"),
        };
        let ids = Tensor::from_slice(dims, dims.len(), a1.device())?;
        net.device_top(net.activation.apply(a1)?, &ids)?
            .to_vec1::<f32>()
    }

    /// `dims.len()` steps at once on the host walk: the logits of step s (dimension
    /// dims[s][r] of row r), each step followed by observing entries[s] (see
    /// [`observe`](Self::observe)).
    fn block_logits(&mut self, dims: &[Vec<u32>], entries: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        match (&mut self.a1, &self.net.host) {
            (A1::Host(a1), Some(host)) => Ok(host.block_logits(a1, dims, entries)),
            _ => candle_core::bail!("deepnade: a host block on a device walk"),
        }
    }

    /// The same steps on the device walk: the logits (S, R) and the entries (S, R) as
    /// tensors on the device, a1 updated (kernels/deepnade_steps.rs: a few launches a block).
    fn device_block(&mut self, dims: &[Vec<u32>], entries: &[Vec<u32>]) -> Result<(Tensor, Tensor)> {
        let net = self.net;
        let A1::Tensor(a1) = &mut self.a1 else {
            candle_core::bail!("deepnade: a device block on a host walk");
        };
        let (steps, rows) = (dims.len(), a1.dim(0)?);
        let device = a1.device().clone();
        let entries = Tensor::from_vec(entries.concat(), (steps, rows), &device)?;
        let dims = Tensor::from_vec(dims.concat(), steps * rows, &device)?;
        let out = first_layer_steps(a1, &net.table, &entries, net.act())?;
        let h = out.narrow(0, 0, steps * rows)?;
        *a1 = out.narrow(0, steps * rows, rows)?;
        let logits = net.device_top(h, &dims)?.reshape((steps, rows))?;
        Ok((logits, entries))
    }

    /// Row r observes the table entry entries[r] ([`Frozen::entry`] or [`Frozen::nothing`]).
    fn observe(&mut self, entries: &[u32]) -> Result<()> {
        match (&mut self.a1, &self.net.host) {
            (A1::Host(a1), Some(host)) => host.observe(a1, entries),
            (A1::Tensor(a1), _) => {
                let ids = Tensor::from_slice(entries, entries.len(), a1.device())?;
                *a1 = (&*a1 + self.net.table.index_select(&ids, 0)?)?;
            }
            (A1::Host(_), None) => candle_core::bail!("deepnade: a host walk without host weights"),
        }
        Ok(())
    }
}

/// One walk of the exact evaluation: image `image` in `order` for its first `steps` positions.
struct Walk {
    image: usize,
    order: Vec<usize>,
    steps: usize,
}

fn log_sigmoid_term(x: f32, l: f32) -> f64 {
    let (x, l) = (x as f64, l as f64);
    // x l - softplus(l), stable for any l.
    x * l - (l.max(0.0) + (-l.abs()).exp().ln_1p())
}

/// The ordering o restricted to an observed set: its observed dimensions in o's order, then
/// the others in o's order.
fn kept_first(order: &[usize], observed: &[f32]) -> Vec<usize> {
    order
        .iter()
        .copied()
        .filter(|&d| observed[d] != 0.0)
        .chain(order.iter().copied().filter(|&d| observed[d] == 0.0))
        .collect()
}

pub struct DeepNade {
    cfg: ModelConfig,
    dn: DeepNadeConfig,
    /// (W_l, b_l): W1 [h1, 2n], then [h_l, h_{l-1}].
    layers: Vec<(Tensor, Tensor)>,
    v: Tensor,
    c: Tensor,
    /// The K stored orderings (host) and their tensor as read (I64), for the checkpoint.
    orderings: Vec<Vec<usize>>,
    order_tensor: Tensor,
    device: Device,
    /// Walk in host memory with the CPU kernel (on the CPU), or the device walk.
    host_walk: bool,
}

impl DeepNade {
    pub fn new(cfg: &DeepNadeConfig, vb: VarBuilder) -> Result<Self> {
        let n = cfg.n;
        let device = vb.device().clone();
        let mut layers = Vec::with_capacity(cfg.hidden.len());
        let mut below = 2 * n;
        for (l, &h) in cfg.hidden.iter().enumerate() {
            layers.push((
                vb.get((h, below), &format!("W{}", l + 1))?,
                vb.get(h, &format!("b{}", l + 1))?,
            ));
            below = h;
        }
        let order_tensor = vb
            .get_with_hints_dtype((cfg.orders, n), "order", Default::default(), DType::I64)?
            .to_dtype(DType::I64)?;
        let orderings = read_orderings(n, &order_tensor)?;
        Ok(Self {
            cfg: ModelConfig::DeepNade(cfg.clone()),
            dn: cfg.clone(),
            layers,
            v: vb.get((n, below), "V")?,
            c: vb.get(n, "c")?,
            orderings,
            order_tensor,
            host_walk: device.is_cpu(),
            device,
        })
    }

    /// The same model taking the device walk (kernels/deepnade_steps.rs), as it does on CUDA
    /// and Metal: what the tests compare the CPU kernel with.
    pub fn with_device_walk(mut self) -> Self {
        self.host_walk = false;
        self
    }

    /// Rows one walk carries at most: WALK_ROWS on the host walk, more on a device.
    fn walk_rows(&self) -> usize {
        match self.host_walk {
            true => WALK_ROWS,
            false => DEVICE_WALK_ROWS,
        }
    }

    /// All K stored orderings (order[k][t] = the dimension predicted t-th).
    pub fn orderings(&self) -> &[Vec<usize>] {
        &self.orderings
    }

    /// The orderings of the ensemble (the first K' with `eval_orders`).
    pub fn used_orderings(&self) -> &[Vec<usize>] {
        &self.orderings[..self.dn.used_orders()]
    }

    /// The logits of one full pass with observed mask `m` ((B, n) 0/1): logit i is that of
    /// p(x_i = 1 | the x_j with m_j = 1), for i unobserved.
    fn forward(&self, x: &Tensor, m: &Tensor, detached: bool) -> Result<Tensor> {
        let w = |t: &Tensor| if detached { t.detach() } else { t.clone() };
        let x = x.to_dtype(super::DTYPE)?;
        let m = m.to_dtype(super::DTYPE)?;
        let mut h = Tensor::cat(&[(&x * &m)?, m], 1)?;
        for (weight, bias) in &self.layers {
            h = self
                .dn
                .activation
                .apply(&linear(&h, &w(weight), &w(bias))?)?;
        }
        linear(&h, &w(&self.v), &w(&self.c))
    }

    /// [`DeepNade::forward`] without an autograd graph: what the tests compare the
    /// incremental walk with.
    pub fn masked_logits(&self, x: &Tensor, m: &Tensor) -> Result<Tensor> {
        self.forward(x, m, true)
    }

    /// Runs `walks` over the rows of `x` (host, (B, n)) in chunks of at most WALK_ROWS:
    /// per walk, the sum of its log-conditionals and, with `record`, the logit of every
    /// dimension it predicted (dimension layout, 0 elsewhere).
    fn run_walks(
        &self,
        net: &Frozen,
        x: &[Vec<f32>],
        walks: &[Walk],
        record: bool,
    ) -> Result<(Vec<f64>, Vec<Vec<f32>>)> {
        let n = self.dn.n;
        let mut sums = Vec::with_capacity(walks.len());
        let mut logits = Vec::new();
        for chunk in walks.chunks(self.walk_rows()) {
            let mut walker = Walker::new(net, chunk.len(), None)?;
            let mut ll = vec![0f64; chunk.len()];
            // The device walk keeps its log-likelihoods on the device until the walks end.
            let mut device_ll = match net.host {
                Some(_) => None,
                None => Some(log_lik_start(chunk.len(), &self.device)?),
            };
            let mut seen = if record {
                vec![vec![0f32; n]; chunk.len()]
            } else {
                Vec::new()
            };
            let steps = chunk.iter().map(|w| w.steps).max().unwrap_or(0);
            // Steps per block: which pixels the rows observe is known in advance (x and the
            // orderings), so the walker can take several steps in one pass. The host walk
            // holds a bounded group of rows at a time whatever the steps.
            let block = match net.host {
                Some(_) => MAX_BLOCK_STEPS,
                None => {
                    (DEVICE_BLOCK_ROWS / chunk.len().max(1)).clamp(1, DEVICE_MAX_BLOCK_STEPS)
                }
            };
            for first in (0..steps).step_by(block) {
                let block_steps = first..(first + block).min(steps);
                let dims: Vec<Vec<u32>> = block_steps
                    .clone()
                    .map(|t| chunk.iter().map(|w| w.order[t] as u32).collect())
                    .collect();
                let entries: Vec<Vec<u32>> = block_steps
                    .clone()
                    .map(|t| {
                        chunk
                            .iter()
                            .map(|w| match t < w.steps {
                                true => net.entry(w.order[t], x[w.image][w.order[t]]),
                                false => net.nothing(),
                            })
                            .collect()
                    })
                    .collect();
                if let Some(sum) = device_ll.as_mut() {
                    let (block_logits, entries) = walker.device_block(&dims, &entries)?;
                    *sum = log_lik(sum, &block_logits, &entries, n)?;
                    if record {
                        let block_logits = block_logits.to_vec2::<f32>()?;
                        for (t, l) in block_steps.zip(block_logits) {
                            for (r, w) in chunk.iter().enumerate() {
                                if t < w.steps {
                                    seen[r][w.order[t]] = l[r];
                                }
                            }
                        }
                    }
                    continue;
                }
                let block_logits = walker.block_logits(&dims, &entries)?;
                for (t, l) in block_steps.zip(block_logits) {
                    for (r, w) in chunk.iter().enumerate() {
                        if t >= w.steps {
                            continue;
                        }
                        let d = w.order[t];
                        ll[r] += log_sigmoid_term(x[w.image][d], l[r]);
                        if record {
                            seen[r][d] = l[r];
                        }
                    }
                }
            }
            match device_ll {
                Some(sum) => sums.extend(sum.to_vec1::<f64>()?),
                None => sums.extend(ll),
            }
            logits.extend(seen);
        }
        Ok((sums, logits))
    }

    /// log p_{o}(x_r) with row r walked in orders[r] (a permutation of 0..n each).
    pub fn log_prob_in_orders(&self, x: &Tensor, orders: &[Vec<usize>]) -> Result<Vec<f64>> {
        let (walks, host) = self.walks_in(x, orders)?;
        Ok(self.run_walks(&Frozen::new(self)?, &host, &walks, false)?.0)
    }

    /// The logit of every dimension of row r as the exact evaluation computes it when row r
    /// is walked in orders[r]: logit of p(x_i | the dimensions before i in that order).
    pub fn logits_in_orders(&self, x: &Tensor, orders: &[Vec<usize>]) -> Result<Vec<Vec<f32>>> {
        let (walks, host) = self.walks_in(x, orders)?;
        Ok(self.run_walks(&Frozen::new(self)?, &host, &walks, true)?.1)
    }

    fn walks_in(&self, x: &Tensor, orders: &[Vec<usize>]) -> Result<(Vec<Walk>, Vec<Vec<f32>>)> {
        let host = x.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        if orders.len() != host.len() {
            candle_core::bail!("{} orders for {} rows", orders.len(), host.len());
        }
        let walks = orders
            .iter()
            .enumerate()
            .map(|(image, order)| Walk {
                image,
                order: order.clone(),
                steps: self.dn.n,
            })
            .collect();
        Ok((walks, host))
    }

    /// log p_{o'_k}(x_kept) per image and used ordering k, o'_k = o_k restricted to the row's
    /// observed set (all of x when `observed` is None): [image][k].
    fn per_ordering(
        &self,
        net: &Frozen,
        x: &[Vec<f32>],
        observed: Option<&[Vec<f32>]>,
    ) -> Result<Vec<Vec<f64>>> {
        let used = self.used_orderings();
        let images = x.len();
        let group = (self.walk_rows() / images.max(1)).max(1);
        let mut out = vec![Vec::with_capacity(used.len()); images];
        for orders in used.chunks(group) {
            let mut walks = Vec::with_capacity(orders.len() * images);
            for order in orders {
                for image in 0..images {
                    walks.push(match observed {
                        None => Walk {
                            image,
                            order: order.clone(),
                            steps: self.dn.n,
                        },
                        Some(m) => Walk {
                            image,
                            order: kept_first(order, &m[image]),
                            steps: m[image].iter().filter(|&&v| v != 0.0).count(),
                        },
                    });
                }
            }
            let sums = self.run_walks(net, x, &walks, false)?.0;
            for (w, s) in walks.iter().zip(sums) {
                out[w.image].push(s);
            }
        }
        Ok(out)
    }

    /// The order-agnostic training estimate per row (see the module doc): minus the loss.
    fn training_log_prob(&self, x: &Tensor, step: u64) -> Result<Tensor> {
        let (rows, n) = x.dims2()?;
        let masks = self.dn.training_masks(step, rows);
        let mut m = Vec::with_capacity(rows * n);
        let mut weight = Vec::with_capacity(rows * n);
        for observed in &masks {
            let d = observed.iter().filter(|&&o| o).count();
            let scale = n as f32 / (n - d) as f32;
            for &o in observed {
                m.push(if o { 1f32 } else { 0.0 });
                weight.push(if o { 0.0 } else { scale });
            }
        }
        let m = Tensor::from_vec(m, (rows, n), &self.device)?;
        let weight = Tensor::from_vec(weight, (rows, n), &self.device)?;
        let logits = self.forward(x, &m, false)?;
        weighted_bernoulli_log_prob(&logits, x, &weight)
    }

    /// Samples the rows of `evidence`, row r walking its hidden dimensions in walk[r]'s order.
    fn sample_walks(&self, evidence: &Evidence, walk: &[Vec<usize>]) -> Result<SampledBatch> {
        let net = Frozen::new(self)?;
        let n = self.dn.n;
        let observed = evidence.observed.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let kept = evidence.kept.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let u = evidence.uniforms.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let rows = observed.len();
        // Kept dimensions keep their value; their "probability" is that value.
        let mut values: Vec<Vec<f32>> = (0..rows)
            .map(|r| (0..n).map(|d| kept[r][d] * observed[r][d]).collect())
            .collect();
        let mut probs = values.clone();
        let hidden: Vec<Vec<usize>> = walk
            .iter()
            .zip(&observed)
            .map(|(order, m)| order.iter().copied().filter(|&d| m[d] == 0.0).collect())
            .collect();
        let any_kept = observed.iter().flatten().any(|&v| v != 0.0);
        let mut walker = if any_kept {
            let m = evidence.observed.to_dtype(super::DTYPE)?;
            let x = evidence.kept.to_dtype(super::DTYPE)?;
            Walker::new(&net, rows, Some((&x, &m)))?
        } else {
            Walker::new(&net, rows, None)?
        };
        let steps = hidden.iter().map(Vec::len).max().unwrap_or(0);
        for s in 0..steps {
            let dims: Vec<u32> = hidden
                .iter()
                .map(|h| h.get(s).or(h.last()).copied().unwrap_or(0) as u32)
                .collect();
            let l = walker.logits(&dims)?;
            let entries: Vec<u32> = (0..rows)
                .map(|r| {
                    let Some(&d) = hidden[r].get(s) else {
                        return net.nothing();
                    };
                    let p = 1.0 / (1.0 + (-l[r]).exp());
                    let x = if u[r][d] < p { 1.0 } else { 0.0 };
                    values[r][d] = x;
                    probs[r][d] = p;
                    net.entry(d, x)
                })
                .collect();
            if s + 1 < steps {
                walker.observe(&entries)?;
            }
        }
        let flat =
            |rows_of: Vec<Vec<f32>>| Tensor::from_vec(rows_of.concat(), (rows, n), &self.device);
        Ok(SampledBatch {
            values: flat(values)?,
            probs: flat(probs)?,
        })
    }
}

impl Autoregressive for DeepNade {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The conditionals under the first stored ordering: logit i of p(x_i | the dimensions
    /// before i in order[0]), n incremental steps.
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let rows = x.dim(0)?;
        let orders = vec![self.orderings[0].clone(); rows];
        let logits = self.logits_in_orders(x, &orders)?;
        Tensor::from_vec(logits.concat(), (rows, self.dn.n), &self.device)
    }

    fn log_prob(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        match pass {
            Pass::Train { step } => self.training_log_prob(x, step),
            Pass::Eval => {
                let per = self
                    .component_log_probs(x)?
                    .expect("a mixture of orderings");
                let out: Vec<f32> = per.iter().map(|lp| log_mean_exp(lp) as f32).collect();
                let len = out.len();
                Tensor::from_vec(out, len, &self.device)
            }
        }
    }

    fn component_log_probs(&self, x: &Tensor) -> Result<Option<Vec<Vec<f64>>>> {
        let host = x.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        Ok(Some(self.per_ordering(&Frozen::new(self)?, &host, None)?))
    }

    fn kept_log_prob(&self, kept: &Tensor, observed: &Tensor) -> Result<Option<KeptLogProb>> {
        let x = kept.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let m = observed.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let per = self.per_ordering(&Frozen::new(self)?, &x, Some(&m))?;
        Ok(Some(KeptLogProb {
            first: per.iter().map(|lp| lp[0]).collect(),
            model: per.iter().map(|lp| log_mean_exp(lp)).collect(),
            components: self.dn.used_orders(),
        }))
    }

    fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (l, (weight, bias)) in self.layers.iter().enumerate() {
            out.push((format!("W{}", l + 1), weight.clone()));
            out.push((format!("b{}", l + 1), bias.clone()));
        }
        out.push(("V".into(), self.v.clone()));
        out.push(("c".into(), self.c.clone()));
        out.push(("order".into(), self.order_tensor.clone()));
        out
    }

    fn orders(&self) -> Orders {
        Orders::Any
    }

    /// A sequential sampler in the first stored ordering.
    fn sampler(&self, batch: usize) -> Result<Box<dyn SamplerState + '_>> {
        Ok(Box::new(DeepNadeSampler {
            net: Frozen::new(self)?,
            order: self.orderings[0].clone(),
            a1: None,
            batch,
            t: 0,
        }))
    }

    fn sample_batch(&self, evidence: &Evidence) -> Result<SampledBatch> {
        let (rows, n) = evidence.uniforms.dims2()?;
        if let Some(walks) = evidence.row_orders {
            if walks.len() != rows || walks.iter().any(|o| o.len() != n) {
                candle_core::bail!("{} row orders for {rows} rows of n = {n}", walks.len());
            }
            return self.sample_walks(evidence, walks);
        }
        if let Some(order) = evidence.order {
            return self.sample_walks(evidence, &vec![order.to_vec(); rows]);
        }
        // A stored ordering per row: uniform for a sample, by the posterior given the kept
        // pixels for a completion; read off (and rescaling) the row's uniform of dimension 0.
        let used = self.used_orderings();
        let observed = evidence.observed.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let any_kept = observed.iter().flatten().any(|&v| v != 0.0);
        let log_w: Vec<Vec<f64>> = if any_kept && used.len() > 1 {
            let kept = evidence.kept.to_dtype(DType::F32)?.to_vec2::<f32>()?;
            self.per_ordering(&Frozen::new(self)?, &kept, Some(&observed))?
        } else {
            vec![vec![0.0; used.len()]; rows]
        };
        let (choice, uniforms) = choose_components(&log_w, evidence.uniforms)?;
        let walks: Vec<Vec<usize>> = choice.iter().map(|&k| used[k].clone()).collect();
        self.sample_walks(
            &Evidence {
                uniforms: &uniforms,
                ..*evidence
            },
            &walks,
        )
    }
}

/// Walks the first stored ordering one dimension at a time ([`Autoregressive::sampler`]).
struct DeepNadeSampler {
    net: Frozen,
    order: Vec<usize>,
    /// (B, h1), started on the first call.
    a1: Option<A1>,
    batch: usize,
    t: usize,
}

impl DeepNadeSampler {
    fn walker(&mut self) -> Result<Walker<'_>> {
        let a1 = match self.a1.take() {
            Some(a1) => a1,
            None => Walker::new(&self.net, self.batch, None)?.a1,
        };
        Ok(Walker { net: &self.net, a1 })
    }
}

impl SamplerState for DeepNadeSampler {
    fn position(&self) -> usize {
        self.t
    }

    fn logits(&mut self) -> Result<Tensor> {
        check_step(self.t, 1, self.order.len())?;
        let dims = vec![self.order[self.t] as u32; self.batch];
        let walker = self.walker()?;
        let l = walker.logits(&dims)?;
        self.a1 = Some(walker.a1);
        Tensor::from_vec(l, (self.batch, 1), self.net.b1.device())
    }

    fn observe(&mut self, x_i: &Tensor) -> Result<()> {
        check_step(self.t, 1, self.order.len())?;
        let d = self.order[self.t];
        let values = x_i.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let entries: Vec<u32> = values.iter().map(|&v| self.net.entry(d, v)).collect();
        let mut walker = self.walker()?;
        walker.observe(&entries)?;
        self.a1 = Some(walker.a1);
        self.t += 1;
        Ok(())
    }
}
