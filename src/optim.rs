//! The training step: Adam or momentum SGD, with decoupled weight decay, L1 / L2 penalties in
//! the loss, global-norm gradient clipping, and the learning-rate schedules. Our own rather
//! than candle-nn's because resuming needs the optimizer's state, which candle-nn keeps
//! private, in the checkpoint.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::config::{Method, Schedule, TrainSection};
use crate::kernels::adam::{AdamStep, Update};
use crate::kernels::sgd::SgdStep;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimConfig {
    pub method: Method,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// SGD only.
    pub momentum: f64,
    pub weight_decay: f64,
    /// The loss per training image gets l1 * sum |w| + l2 / 2 * sum w^2 over the weights
    /// (not the biases). Unlike `weight_decay`, their gradients pass through Adam's scaling.
    pub l1: f64,
    pub l2: f64,
    /// Rescale the gradients so their global L2 norm is at most this; 0 = off.
    pub clip_norm: f64,
}

/// Adam with its usual constants (0.9, 0.999, 1e-8) and no regularization: what `nade bench`
/// and the tests step with.
impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            method: Method::Adam,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            momentum: 0.9,
            weight_decay: 0.0,
            l1: 0.0,
            l2: 0.0,
            clip_norm: 0.0,
        }
    }
}

impl OptimConfig {
    pub fn from_train(t: &TrainSection) -> Self {
        Self {
            method: t.optimizer,
            beta1: t.adam_beta1,
            beta2: t.adam_beta2,
            eps: t.adam_eps,
            momentum: t.momentum,
            weight_decay: t.weight_decay,
            l1: t.l1,
            l2: t.l2,
            clip_norm: t.clip_norm,
        }
    }

    /// The names of the per-weight state rows, as stored under `optim.ROW.NAME`.
    fn state_rows(&self) -> &'static [&'static str] {
        match self.method {
            Method::Adam => &["m", "v"],
            Method::Sgd => &["velocity"],
        }
    }
}

pub struct Optimizer {
    cfg: OptimConfig,
    params: Vec<(String, Var)>,
    /// Per parameter, whether the L1 / L2 penalties apply (false for biases).
    penalized: Vec<bool>,
    /// Per parameter, its state rows stacked as (rows, numel): for Adam row 0 the first moment
    /// (m) and row 1 the second (v); for SGD the one row of velocity.
    state: Vec<Tensor>,
    step: u64,
}

/// Prefix of the optimizer tensors in a training checkpoint (`optim.m.W`, `optim.v.W`, or
/// `optim.velocity.W`).
pub const STATE_PREFIX: &str = "optim.";

impl Optimizer {
    /// `biases` names the parameters the L1 / L2 penalties leave alone.
    pub fn new(params: Vec<(String, Var)>, biases: &[&str], cfg: OptimConfig) -> Result<Self> {
        let penalized = params
            .iter()
            .map(|(name, _)| !biases.contains(&name.as_str()))
            .collect();
        let rows = cfg.state_rows().len();
        let state = params
            .iter()
            .map(|(_, p)| Tensor::zeros((rows, p.elem_count()), p.dtype(), p.device()))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            cfg,
            params,
            penalized,
            state,
            step: 0,
        })
    }

    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// One update with learning rate `lr`; returns the gradient norm before clipping.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<f64> {
        let mut grad_list = Vec::with_capacity(self.params.len());
        let mut sums = Vec::with_capacity(self.params.len());
        for (name, p) in &self.params {
            let g = grads
                .get(p.as_tensor())
                .ok_or_else(|| anyhow!("no gradient for `{name}`"))?;
            // Detached: a gradient that reaches a variable straight from a custom op (MADE's
            // masked layer: g^T h with h a tracked activation) carries that step's forward
            // graph, and SGD's velocity, built from it, would chain every step's graph
            // (MADE with SGD grew to 24 GB within an epoch).
            let g = g.detach().flatten_all()?.contiguous()?;
            sums.push(g.sqr()?.sum_all()?);
            grad_list.push(g);
        }
        // One read of all the per-parameter sums (one device sync on a GPU), added in f64.
        let sum_sq: f64 = if sums.is_empty() {
            0.0
        } else {
            Tensor::stack(&sums, 0)?
                .to_dtype(candle_core::DType::F64)?
                .to_vec1::<f64>()?
                .iter()
                .sum()
        };
        let norm = sum_sq.sqrt();
        let scale = if self.cfg.clip_norm > 0.0 && norm > self.cfg.clip_norm {
            self.cfg.clip_norm / norm
        } else {
            1.0
        };

        self.step += 1;
        let update = Update {
            beta1: self.cfg.beta1 as f32,
            beta2: self.cfg.beta2 as f32,
            grad_scale: scale as f32,
            lr: lr as f32,
            decay: (1.0 - lr * self.cfg.weight_decay) as f32,
            correction1: (1.0 - self.cfg.beta1.powi(self.step as i32)) as f32,
            correction2: (1.0 - self.cfg.beta2.powi(self.step as i32)) as f32,
            eps: self.cfg.eps as f32,
        };
        let penalty = self.cfg.l1 > 0.0 || self.cfg.l2 > 0.0;
        for (((_, p), &penalized), (g, state)) in self
            .params
            .iter()
            .zip(&self.penalized)
            .zip(grad_list.iter().zip(self.state.iter_mut()))
        {
            // The penalty's gradient joins after clipping, as in torch's Adam(weight_decay).
            let (g, update) = if penalty && penalized {
                let w = p.as_tensor().flatten_all()?;
                let mut g = (g * scale)?;
                if self.cfg.l2 > 0.0 {
                    g = (g + (&w * self.cfg.l2)?)?;
                }
                if self.cfg.l1 > 0.0 {
                    g = (g + (w.sign()? * self.cfg.l1)?)?;
                }
                (
                    g,
                    Update {
                        grad_scale: 1.0,
                        ..update
                    },
                )
            } else {
                (g.clone(), update)
            };
            match self.cfg.method {
                Method::Adam => update.apply(p, &g, state)?,
                Method::Sgd => SgdStep {
                    momentum: self.cfg.momentum as f32,
                    grad_scale: update.grad_scale,
                    lr: update.lr,
                    decay: update.decay,
                }
                .apply(p, &g, state)?,
            }
        }
        Ok(norm)
    }

    /// The optimizer's state under `optim.ROW.NAME` (see [`STATE_PREFIX`]).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for ((name, p), state) in self.params.iter().zip(&self.state) {
            for (row, row_name) in self.cfg.state_rows().iter().enumerate() {
                // A fresh copy: the state changes in place at the next step.
                let t = state
                    .get(row)
                    .and_then(|t| t.reshape(p.dims()))
                    .and_then(|t| t.copy());
                if let Ok(t) = t {
                    out.push((format!("{STATE_PREFIX}{row_name}.{name}"), t));
                }
            }
        }
        out
    }

    /// Restores what [`Optimizer::state_tensors`] saved, after `step` updates.
    pub fn restore(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        for ((name, p), state) in self.params.iter().zip(self.state.iter_mut()) {
            let mut rows = Vec::with_capacity(2);
            for row_name in self.cfg.state_rows() {
                let key = format!("{STATE_PREFIX}{row_name}.{name}");
                let t = tensors
                    .get(&key)
                    .ok_or_else(|| anyhow!("optimizer state `{key}` is missing"))?;
                if t.dims() != p.dims() {
                    bail!(
                        "optimizer state `{key}` has shape {:?}, expected {:?}",
                        t.dims(),
                        p.dims()
                    );
                }
                rows.push(t.flatten_all()?.to_device(p.device())?);
            }
            *state = Tensor::stack(&rows, 0)?.contiguous()?;
        }
        self.step = step;
        Ok(())
    }
}

/// The learning rate of an epoch (0-based) and the state a plateau schedule keeps.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LrSchedule {
    pub lr: f64,
    /// Epochs since the plateau schedule last saw a new best or cut the rate.
    pub stalled: usize,
}

impl LrSchedule {
    pub fn new(t: &TrainSection) -> Self {
        Self {
            lr: t.lr,
            stalled: 0,
        }
    }

    /// Learning rate for epoch `epoch` (0-based).
    pub fn lr_for(&self, t: &TrainSection, epoch: usize) -> f64 {
        match t.lr_schedule {
            Schedule::Constant => t.lr,
            Schedule::Exponential => t.lr * t.lr_decay.powi(epoch as i32),
            Schedule::Cosine => {
                let horizon = t
                    .cosine_horizons
                    .iter()
                    .copied()
                    .find(|&h| epoch < h)
                    .unwrap_or(t.epochs);
                let progress = epoch as f64 / horizon.max(1) as f64;
                t.lr_min + (t.lr - t.lr_min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            Schedule::Linear => {
                let progress = epoch as f64 / t.epochs.max(1) as f64;
                t.lr + (t.lr_min - t.lr) * progress
            }
            Schedule::Plateau => self.lr,
        }
    }

    /// Called after each validation with whether it set a new best and the epochs since the
    /// validation before (1 unless `train.valid_every` skips some).
    pub fn observe(&mut self, t: &TrainSection, improved: bool, epochs_since: usize) {
        if t.lr_schedule != Schedule::Plateau {
            return;
        }
        if improved {
            self.stalled = 0;
        } else {
            self.stalled += epochs_since;
            if self.stalled >= t.plateau_patience {
                self.lr = (self.lr * t.lr_decay).max(t.lr_min);
                self.stalled = 0;
            }
        }
    }
}
