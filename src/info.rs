//! `nade info CKPT`: what a checkpoint holds, read and checked by the same loader as `eval`
//! (so a malformed file gives the same one-line error): the model and its config, parameter
//! counts, every tensor as stored, the metadata keys, and for a training checkpoint the epoch
//! and the NLLs recorded in it.

use std::fmt::Write;
use std::path::Path;

use anyhow::{anyhow, Result};
use candle_core::Device;
use serde::Serialize;

use crate::checkpoint::{self, StoredTensor};
use crate::models::ModelConfig;

/// What `nade info` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Info {
    pub checkpoint: String,
    pub model: String,
    /// The model config (run-time choices such as the kernel at their defaults).
    pub config: ModelConfig,
    /// Parameters the model reads: the README's "parameters (used)" (FVSBN's W and MLP's A
    /// enter the model by their strict lower triangles only).
    pub parameters_used: usize,
    /// Entries of the model's tensors as stored (optimizer tensors not counted).
    pub parameters_stored: usize,
    pub tensors: Vec<StoredTensor>,
    pub metadata_keys: Vec<String>,
    /// The training epoch the file was written after, and the NLLs (nats per image) recorded
    /// with it, where the file has them.
    pub epoch: Option<usize>,
    pub valid_nll: Option<f64>,
    pub test_nll: Option<f64>,
    /// Whether the file carries the optimizer's state (a run's last.safetensors: `nade train
    /// --resume` continues from it).
    pub optimizer_state: bool,
}

/// Reads and checks `path` as `nade eval` does, on the CPU.
pub fn inspect(path: &Path) -> Result<Info> {
    let loaded = checkpoint::load(path, &Device::Cpu, None)?;
    let origin = path.display().to_string();
    let cfg = loaded.model.config().structure();
    let number = |key: &str| -> Result<Option<f64>> {
        loaded
            .metadata
            .get(key)
            .map(|raw| {
                raw.trim().parse::<f64>().map_err(|_| {
                    anyhow!("{origin}: __metadata__ `{key}` = {raw:?} is not a number")
                })
            })
            .transpose()
    };
    let epoch = loaded
        .metadata
        .get("epoch")
        .map(|raw| {
            raw.trim().parse::<usize>().map_err(|_| {
                anyhow!("{origin}: __metadata__ `epoch` = {raw:?} is not a whole number")
            })
        })
        .transpose()?;
    Ok(Info {
        checkpoint: origin.clone(),
        model: cfg.kind().to_string(),
        parameters_used: cfg.num_used_params(),
        parameters_stored: cfg.num_params(),
        tensors: loaded.stored.clone(),
        metadata_keys: loaded.metadata.keys().cloned().collect(),
        epoch,
        valid_nll: number("valid_nll")?,
        test_nll: number("test_nll")?,
        optimizer_state: !loaded.optimizer_state.is_empty(),
        config: cfg,
    })
}

impl Info {
    /// The text `nade info` prints: one fact per line, the tensors as a table.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let config = serde_json::to_string(&self.config).expect("a model config serializes");
        let _ = writeln!(out, "checkpoint   {}", self.checkpoint);
        let _ = writeln!(out, "model        {}", self.config.describe());
        let _ = writeln!(out, "config       {config}");
        let _ = writeln!(
            out,
            "parameters   {} used, {} stored",
            thousands(self.parameters_used),
            thousands(self.parameters_stored)
        );
        let mut training = Vec::new();
        if let Some(epoch) = self.epoch {
            training.push(format!("epoch {epoch}"));
        }
        if let Some(nll) = self.valid_nll {
            training.push(format!("valid NLL {nll:.4}"));
        }
        if let Some(nll) = self.test_nll {
            training.push(format!("test NLL {nll:.4}"));
        }
        if !training.is_empty() {
            let _ = writeln!(out, "training     {}", training.join(", "));
        }
        if self.optimizer_state {
            let _ = writeln!(
                out,
                "optimizer    its state stored (`nade train --resume DIR` continues from this file)"
            );
        }
        let _ = writeln!(out, "metadata     {}", self.metadata_keys.join(", "));
        let _ = writeln!(out, "tensors      {}", self.tensors.len());
        let width = self.tensors.iter().map(|t| t.name.len()).max().unwrap_or(0);
        for t in &self.tensors {
            let _ = writeln!(out, "  {:width$}  {:4} {:?}", t.name, t.dtype, t.shape);
        }
        out
    }
}

/// 785284 -> "785,284".
fn thousands(value: usize) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
