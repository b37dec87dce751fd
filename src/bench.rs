//! `nade bench`: throughput of density evaluation, training steps and sampling, in images per
//! second after a warm-up, with the process's peak resident memory per phase.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::data::source::{resolve_dir, split_file, PathOrigin};
use crate::data::{amat, BinaryDataset};
use crate::device;
use crate::models::{self, ModelConfig, Trainable};
use crate::optim::{OptimConfig, Optimizer};
use crate::sample;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    Eval,
    Train,
    Sample,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Eval => "eval",
            Phase::Train => "train",
            Phase::Sample => "sample",
        }
    }
}

pub struct BenchSpec {
    /// A model kind (the `name` of an entry of [`crate::models::REGISTRY`]).
    pub kind: String,
    /// Hidden layer sizes (one for the MLP and NADE; FVSBN ignores them).
    pub hidden: Vec<usize>,
    /// MADE's K (1 for the other models).
    pub masks: usize,
    pub batch: usize,
    /// Kernels to compare (NADE: auto, fused, blocked[:K], plain; other models: auto).
    pub kernels: Vec<String>,
    pub phases: Vec<Phase>,
    /// Timed seconds per (path, phase), after the warm-up.
    pub seconds: f64,
    pub data: Option<PathBuf>,
}

/// One line of output.
#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub model: String,
    /// The kernel ("-" for models with one way to compute); `path` in output before
    /// 2026-12-05 (docs/records/ keep it).
    pub kernel: String,
    pub phase: String,
    /// The first hidden layer's width (0 for FVSBN).
    pub hidden: usize,
    /// Every hidden layer's width, first to last.
    pub layers: Vec<usize>,
    /// MADE's K (1 for the other models).
    pub masks: usize,
    pub batch: usize,
    pub device: String,
    /// CPU threads (rayon's pool; `--threads`).
    pub threads: usize,
    pub data: String,
    pub iterations: usize,
    pub images_per_s: f64,
    pub peak_rss_mb: f64,
}

/// Runs every (path, phase) of `spec`, calling `report` after each.
pub fn run(spec: &BenchSpec, device: &Device, mut report: impl FnMut(&BenchResult)) -> Result<()> {
    if spec.batch == 0 {
        bail!("--batch must be positive");
    }
    let (data, data_name) = bench_data(spec.data.clone(), spec.batch * 20)?;
    let base = ModelConfig::with_layers(&spec.kind, data.n(), &spec.hidden)
        .context("--hidden")?
        .with_mask_count(spec.masks)?;
    for kernel in &spec.kernels {
        let cfg = base.with_kernel(kernel)?;
        cfg.validate()?;
        for &phase in &spec.phases {
            reset_peak_rss();
            // The model `nade train` starts from: b at the data's logits. Sampling's speed
            // depends on it: the fused NADE walk and deep NADE's first layer do work after each
            // pixel that is 1, and b = 0 would draw half of the pixels 1 where a model of this
            // data (trained or at its start) draws about the data's 13%.
            let mut params = models::init_params(&cfg, 1, device)?;
            models::set_output_bias(&cfg, &mut params, &data.smoothed_logits(), device)?;
            let trainable = Trainable::new(&cfg, params, device)?;
            // Eval and sample time the model as `nade eval` and `nade sample` hold it: loaded
            // from a checkpoint, plain tensors that nothing trains (NADE packs its fused
            // kernel's parameters once then, not on every call); training, the trainable one.
            let frozen = match phase {
                Phase::Train => None,
                Phase::Eval | Phase::Sample => {
                    Some(models::rebuilt(trainable.model.as_ref(), &cfg, device)?)
                }
            };
            let model = frozen.as_ref().unwrap_or(&trainable.model);
            let batches = data.len() / spec.batch;
            // The batches live on the device before the clock starts, as in
            // scripts/bench/bench_torch.py: the time is the model's, not the upload's.
            let on_device = data.tensor_range(0, batches * spec.batch, device)?;
            let mut adam = Optimizer::new(trainable.named_vars(), &[], OptimConfig::default())?;
            // Prepared once, as `nade eval` prepares it for its whole data set.
            let evaluator = match phase {
                Phase::Eval => Some(models::evaluator(model.as_ref())?),
                _ => None,
            };
            let mut step = |k: usize| -> Result<()> {
                let first = (k % batches) * spec.batch;
                match phase {
                    Phase::Eval => {
                        let x = on_device.narrow(0, first, spec.batch)?;
                        let Some(evaluator) = &evaluator else {
                            bail!("bench: no evaluator for the eval phase");
                        };
                        evaluator.log_prob(&x)?.to_vec1::<f32>()?;
                    }
                    Phase::Train => {
                        let x = on_device.narrow(0, first, spec.batch)?;
                        let loss = models::mean_nll(model.as_ref(), &x, k as u64)?;
                        adam.step(&loss.backward()?, 1e-4)?;
                    }
                    Phase::Sample => {
                        sample::sample(model.as_ref(), spec.batch, spec.batch, k as u64, device)?;
                    }
                }
                Ok(())
            };
            // Warm-up: caches, allocator pools, lazily compiled GPU kernels.
            let warm = Instant::now();
            let mut k = 0;
            while k < 2 || warm.elapsed().as_secs_f64() < (spec.seconds * 0.1).min(2.0) {
                step(k)?;
                k += 1;
            }
            device.synchronize()?;
            let start = Instant::now();
            let mut iterations = 0;
            while iterations < 3 || start.elapsed().as_secs_f64() < spec.seconds {
                step(k + iterations)?;
                iterations += 1;
            }
            device.synchronize()?;
            let elapsed = start.elapsed().as_secs_f64();
            report(&BenchResult {
                model: cfg.kind().to_string(),
                kernel: cfg.kernel_name().unwrap_or_else(|| "-".into()),
                phase: phase.name().into(),
                hidden: cfg.width().unwrap_or(0),
                layers: cfg.layers(),
                masks: cfg.masks_used().unwrap_or(1),
                batch: spec.batch,
                device: device::name(device).into(),
                threads: crate::threads::current(),
                data: data_name.clone(),
                iterations,
                images_per_s: (iterations * spec.batch) as f64 / elapsed,
                peak_rss_mb: peak_rss_mb(),
            });
        }
    }
    Ok(())
}

/// Real binarized MNIST training images when the data folder has them (no download), else
/// synthetic images with MNIST's pixel mean (0.13): the fused kernel's speed depends on it.
/// A folder named by `--data` or `$NADE_DATA_DIR` must exist (a typo is not "no data").
fn bench_data(dir: Option<PathBuf>, rows: usize) -> Result<(BinaryDataset, String)> {
    let data_path = resolve_dir(dir.as_deref(), PathOrigin::Flag, "binarized_mnist");
    if data_path.origin != PathOrigin::DefaultDir && !data_path.exists()? {
        return Err(data_path.missing());
    }
    let file = split_file(
        &data_path.path,
        "binarized_mnist",
        crate::data::Split::Train,
    );
    if file.is_file() {
        let mut data = amat::read_amat(&file)?;
        data.truncate(rows);
        if data.len() == rows {
            return Ok((data, "binarized_mnist".into()));
        }
    }
    let n = 784;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let pixels = (0..rows * n)
        .map(|_| u8::from(rng.random_bool(0.13)))
        .collect();
    Ok((BinaryDataset::new(n, pixels)?, "synthetic".into()))
}

/// Peak resident set (VmHWM) of this process in MB; 0 where /proc is missing.
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Resets VmHWM to the current RSS (Linux >= 4.0), so each phase reports its own peak.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
