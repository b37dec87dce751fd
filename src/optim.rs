//! Adam with decoupled weight decay (AdamW), global-norm gradient clipping and learning-rate
//! schedules. Our own rather than candle-nn's because resuming needs the moment estimates,
//! which candle-nn keeps private, in the checkpoint.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::config::{Schedule, TrainSection};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Rescale the gradients so their global L2 norm is at most this; 0 = off.
    pub clip_norm: f64,
}

impl AdamConfig {
    pub fn from_train(t: &TrainSection) -> Self {
        Self {
            beta1: t.adam_beta1,
            beta2: t.adam_beta2,
            eps: t.adam_eps,
            weight_decay: t.weight_decay,
            clip_norm: t.clip_norm,
        }
    }
}

pub struct Adam {
    cfg: AdamConfig,
    params: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: u64,
}

/// Prefix of the optimizer tensors in a training checkpoint (`optim.m.W`, `optim.v.W`).
pub const STATE_PREFIX: &str = "optim.";

impl Adam {
    pub fn new(params: Vec<(String, Var)>, cfg: AdamConfig) -> Result<Self> {
        let m = params
            .iter()
            .map(|(_, p)| p.zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let v = m.clone();
        Ok(Self {
            cfg,
            params,
            m,
            v,
            step: 0,
        })
    }

    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// One update with learning rate `lr`; returns the gradient norm before clipping.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<f64> {
        let mut grad_list = Vec::with_capacity(self.params.len());
        let mut sum_sq = 0f64;
        for (name, p) in &self.params {
            let g = grads
                .get(p.as_tensor())
                .ok_or_else(|| anyhow!("no gradient for `{name}`"))?
                .clone();
            sum_sq += g
                .sqr()?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
            grad_list.push(g);
        }
        let norm = sum_sq.sqrt();
        let scale = if self.cfg.clip_norm > 0.0 && norm > self.cfg.clip_norm {
            self.cfg.clip_norm / norm
        } else {
            1.0
        };

        self.step += 1;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let correction1 = 1.0 - b1.powi(self.step as i32);
        let correction2 = 1.0 - b2.powi(self.step as i32);
        for (k, g) in grad_list.into_iter().enumerate() {
            let g = if scale != 1.0 { (g * scale)? } else { g };
            self.m[k] = ((&self.m[k] * b1)? + (&g * (1.0 - b1))?)?;
            self.v[k] = ((&self.v[k] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let m_hat = (&self.m[k] / correction1)?;
            let v_hat = (&self.v[k] / correction2)?;
            let update = (m_hat / (v_hat.sqrt()? + self.cfg.eps)?)?;
            let p = &self.params[k].1;
            let decayed = if self.cfg.weight_decay > 0.0 {
                (p.as_tensor() * (1.0 - lr * self.cfg.weight_decay))?
            } else {
                p.as_tensor().clone()
            };
            p.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(norm)
    }

    /// The moment estimates under `optim.m.NAME` / `optim.v.NAME`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (k, (name, _)) in self.params.iter().enumerate() {
            out.push((format!("{STATE_PREFIX}m.{name}"), self.m[k].clone()));
            out.push((format!("{STATE_PREFIX}v.{name}"), self.v[k].clone()));
        }
        out
    }

    /// Restores what [`Adam::state_tensors`] saved, after `step` updates.
    pub fn restore(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        for (k, (name, p)) in self.params.iter().enumerate() {
            for (moment, slot) in [("m", &mut self.m[k]), ("v", &mut self.v[k])] {
                let key = format!("{STATE_PREFIX}{moment}.{name}");
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
                *slot = t.to_device(p.device())?;
            }
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
                let progress = epoch as f64 / t.epochs.max(1) as f64;
                t.lr_min + (t.lr - t.lr_min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            Schedule::Plateau => self.lr,
        }
    }

    /// Called after each epoch's validation with whether it set a new best.
    pub fn observe(&mut self, t: &TrainSection, improved: bool) {
        if t.lr_schedule != Schedule::Plateau {
            return;
        }
        if improved {
            self.stalled = 0;
        } else {
            self.stalled += 1;
            if self.stalled >= t.plateau_patience {
                self.lr = (self.lr * t.lr_decay).max(t.lr_min);
                self.stalled = 0;
            }
        }
    }
}
