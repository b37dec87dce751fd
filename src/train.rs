//! Maximum-likelihood training by minibatch Adam (or momentum SGD) with validation-based model
//! selection: the exact validation NLL after every epoch, the best model kept, early stopping
//! after `patience` epochs without improvement, and the exact test NLL of the best model at the end.
//!
//! Everything random derives from `train.seed`: the initial weights from stream 0 of a ChaCha8
//! generator, the shuffle of epoch e from stream e + 1. A run resumed from last.safetensors
//! therefore continues with exactly the numbers an uninterrupted run would have used.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use rand::seq::SliceRandom;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::checkpoint;
use crate::config::Config;
use crate::data::source::load_split;
use crate::data::{BinaryDataset, Split};
use crate::device;
use crate::eval::{self, NllSummary};
use crate::interrupt::{self, Interrupted};
use crate::io::{remove_stale_temporaries, write_atomically};
use crate::memory;
use crate::models::{self, Autoregressive, ModelConfig, RunChoices, Trainable};
use crate::optim::{OptimConfig, Optimizer};
use crate::plot;
use crate::run_lock::RunLock;
use crate::sample;
use crate::threads;
pub use crate::train_progress::Progress;
use crate::train_progress::{epoch_line, eta_seconds, EpochProgress};
pub use crate::train_state::{
    config_of_run, record_cosine_extension, refuse_linear_extension, EpochRecord, TrainState, LAST,
    RUN_CONFIG,
};
use crate::train_state::{read_state, restore};

/// What a finished run reports.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub model: String,
    pub n: usize,
    pub hidden: usize,
    pub parameters: usize,
    pub best_checkpoint: PathBuf,
    pub best_epoch: usize,
    pub epochs_run: usize,
    pub stopped_early: bool,
    pub valid_nll: f64,
    /// None when the run was told not to touch the test set (`Options::test`).
    pub test_nll: Option<f64>,
    pub test_nll_std_err: Option<f64>,
    pub test_bits_per_dim: Option<f64>,
    pub train_seconds: f64,
    pub device: String,
}

pub struct Options {
    /// Continue from `output.dir/last.safetensors`.
    pub resume: bool,
    /// Progress within epochs: bars (on a terminal), plain lines, or none.
    pub progress: Progress,
    /// Evaluate the selected model on the test set at the end. Off for hyperparameter sweeps,
    /// so that only the model finally chosen on the validation set ever sees the test set.
    pub test: bool,
    /// Start a new run in an output folder that already holds one; its best and last
    /// checkpoints are kept under new names, never deleted.
    pub force: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            resume: false,
            progress: Progress::for_stderr(),
            test: true,
            force: false,
        }
    }
}

pub const BEST: &str = "best.safetensors";

/// Loads the data, builds or restores the model and trains it as `config` says, holding the
/// output folder's [`RunLock`] throughout.
pub fn run(config: &Config, opts: &Options) -> Result<Summary> {
    let out = &config.output.dir;
    let created = if opts.resume {
        if !out.is_dir() {
            bail!("{}: no such run folder (--resume)", out.display());
        }
        false
    } else {
        let created = !out.exists();
        std::fs::create_dir_all(out)
            .with_context(|| format!("{}: cannot create output folder", out.display()))?;
        created
    };
    // Before anything else: a second run on this folder is refused at once.
    let lock = RunLock::acquire(out)?;
    let result = run_locked(config, opts);
    if result.is_err() && created {
        // A run that failed before writing anything (bad data, too little memory) leaves no
        // folder behind; remove_dir keeps one that holds files.
        let _ = std::fs::remove_file(lock.path());
        let _ = std::fs::remove_dir(out);
    }
    drop(lock);
    result
}

fn run_locked(config: &Config, opts: &Options) -> Result<Summary> {
    let out = &config.output.dir;
    if !opts.resume {
        make_room_for_a_new_run(out, opts.force)?;
    }
    let device = device::select(config.train.device)?;
    let source = config.data.source();
    if let Some(file) = source.single_file() {
        // One file would be the training, validation and test set at once: a "test NLL" that
        // is the validation NLL.
        bail!(
            "{}: a single .amat file ({}), but a run reads its train, valid and test splits from a folder of {}_{{train,valid,test}}.amat: name that folder",
            file.display(),
            source.path_origin_text(),
            source.dataset
        );
    }
    let train = load_split(&source, Split::Train)?;
    let valid = load_split(&source, Split::Valid)?;
    if train.n() != valid.n() {
        bail!(
            "train vectors have {} values but valid vectors {}",
            train.n(),
            valid.n()
        );
    }
    let model_cfg = config.model_config(train.n())?;
    let need = memory::training(&model_cfg, &config.train, train.len(), valid.len(), &device);
    memory::check(&need)?;
    let removed = remove_stale_temporaries(out)?;
    if !removed.is_empty() {
        let names: Vec<_> = removed
            .iter()
            .filter_map(|p| p.file_name())
            .map(|name| name.to_string_lossy())
            .collect();
        eprintln!(
            "{}: removed {} stale temporary file(s) of an interrupted write: {}",
            out.display(),
            removed.len(),
            names.join(", ")
        );
    }

    let (params, optimizer_state, state) = if opts.resume {
        restore(config, &model_cfg, &out.join(LAST), &device)?
    } else {
        let mut params = models::init_params(&model_cfg, config.train.seed, &device)?;
        if config.train.init_bias_from_data {
            models::set_output_bias(&model_cfg, &mut params, &train.smoothed_logits(), &device)?;
        }
        (params, Default::default(), TrainState::fresh(config))
    };
    let trainable = Trainable::new(&model_cfg, params, &device)?;
    let unpenalized = trainable.unpenalized();
    let unpenalized: Vec<&str> = unpenalized.iter().map(String::as_str).collect();
    let mut optimizer = Optimizer::new(
        trainable.named_vars(),
        &unpenalized,
        OptimConfig::from_train(&config.train),
    )?;
    if opts.resume {
        optimizer.restore(&optimizer_state, state.adam_steps)?;
    }
    for line in banner(config, &model_cfg, &device, &train, &valid) {
        println!("{line}");
    }
    if opts.resume {
        println!(
            "resuming {} from epoch {} of {} (the last completed; best so far: epoch {}, valid {:.4})",
            out.display(),
            state.epoch,
            config.train.epochs,
            state.best_epoch,
            state.best_valid
        );
    }
    let mut run = Run {
        config,
        model: trainable.model.as_ref(),
        train: &train,
        valid: &valid,
        device: &device,
        opts,
    };
    {
        // Ctrl-C stops between minibatches only while the epochs run; see crate::interrupt.
        let _armed = interrupt::arm();
        run.fit(&mut optimizer, state)?;
    }

    // The selected model, on the test set, once.
    let best_path = out.join(BEST);
    let test_nll = if opts.test {
        // The file holds the structure; the run's own choice of evaluation orderings
        // (deepnade's model.eval_orders) applies to the test pass as it did to validation.
        let choices = RunChoices {
            kernel: model_cfg.kernel_name(),
            masks: None,
            orders: model_cfg.orders_used(),
        };
        let best = checkpoint::load_with(&best_path, &device, &choices)?;
        let test = load_split(&source, Split::Test)?;
        let test_nll = eval::nll(
            best.model.as_ref(),
            &test,
            config.train.eval_batch_size,
            &device,
            opts.progress == Progress::Bars,
        )?;
        let mut metadata = best.metadata.clone();
        metadata.insert("test_nll".into(), test_nll.nll_nats.to_string());
        if let Some(k) = model_cfg.orders_used() {
            metadata.insert("test_orders".into(), k.to_string());
        }
        // The file keeps the structure: save stores the config without the run-time choices.
        checkpoint::save(&best_path, best.model.as_ref(), &metadata)?;
        Some(test_nll)
    } else {
        None
    };
    let state = read_state(&out.join(LAST))?;
    let summary = Summary {
        model: model_cfg.kind().to_string(),
        n: model_cfg.n(),
        hidden: model_cfg.hidden().unwrap_or(0),
        parameters: model_cfg.num_params(),
        best_checkpoint: best_path,
        best_epoch: state.best_epoch,
        epochs_run: state.epoch,
        stopped_early: state.epoch < config.train.epochs,
        valid_nll: state.best_valid,
        test_nll: test_nll.as_ref().map(|t| t.nll_nats),
        test_nll_std_err: test_nll.as_ref().map(|t| t.std_err),
        test_bits_per_dim: test_nll.as_ref().map(|t| t.bits_per_dim),
        train_seconds: state
            .history
            .iter()
            .map(|r| r.train_seconds + r.valid_seconds)
            .sum(),
        device: device::name(&device).into(),
    };
    let json = serde_json::to_string_pretty(&summary)?;
    write_atomically(&out.join("summary.json"), json.as_bytes())?;
    Ok(summary)
}

/// What the epoch loop works on. The model's parameters are the Vars the optimizer updates.
struct Run<'a> {
    config: &'a Config,
    model: &'a dyn Autoregressive,
    train: &'a BinaryDataset,
    valid: &'a BinaryDataset,
    device: &'a Device,
    opts: &'a Options,
}

/// What one epoch of training measured.
struct EpochTraining {
    /// Mean minibatch NLL.
    nll: f64,
    mean_grad_norm: f64,
    seconds: f64,
    images: usize,
}

impl Run<'_> {
    /// The epoch loop: train, validate, keep the books, until the epochs run out or
    /// validation has not improved for `patience` epochs.
    fn fit(&mut self, optimizer: &mut Optimizer, mut state: TrainState) -> Result<()> {
        let t = &self.config.train;
        while state.epoch < t.epochs && (state.epoch == 0 || state.since_best < t.patience) {
            let epoch = state.epoch; // 0-based here, 1-based for people
            let lr = state.schedule.lr_for(t, epoch);
            let trained = self.train_epoch(optimizer, &state, lr)?;
            let validate = (epoch + 1).is_multiple_of(t.valid_every) || epoch + 1 == t.epochs;
            let valid = if validate {
                Some(
                    eval::nll(
                        self.model,
                        self.valid,
                        t.eval_batch_size,
                        self.device,
                        false,
                    )
                    .with_context(|| format!("epoch {}: validation", epoch + 1))?,
                )
            } else {
                None
            };
            self.after_epoch(optimizer, &mut state, lr, &trained, valid.as_ref())?;
        }
        Ok(())
    }

    /// One pass over the shuffled training set, one optimizer step per minibatch.
    fn train_epoch(
        &self,
        optimizer: &mut Optimizer,
        state: &TrainState,
        lr: f64,
    ) -> Result<EpochTraining> {
        let t = &self.config.train;
        let epoch = state.epoch;
        // Adam moves each weight by about lr per step whatever the gradient, so a far too large
        // rate drives the logits to +-1e9 without ever producing a NaN: the stable softplus
        // keeps the loss finite. A loss 100x that of the uniform model (n ln 2) is divergence too.
        let uniform_nll = self.train.n() as f64 * std::f64::consts::LN_2;
        let diverged_above = 100.0 * uniform_nll;
        let order = epoch_order(self.train.len(), t.seed, epoch);
        let batches = order.len().div_ceil(t.batch_size);
        let mut progress = EpochProgress::new(self.opts.progress, batches, epoch + 1, t.epochs);
        let start = Instant::now();
        let (mut loss_sum, mut grad_norm_sum, mut seen) = (0f64, 0f64, 0usize);
        for (b, rows) in order.chunks(t.batch_size).enumerate() {
            if interrupt::requested() {
                progress.abandon();
                return Err(self.interrupted(state).into());
            }
            let x = self.train.tensor_rows(rows, self.device)?;
            // The step count is restored on --resume, so the model's per-step choices (MADE's
            // mask, deep NADE's orderings) continue as in an uninterrupted run.
            let loss = models::mean_nll(self.model, &x, optimizer.steps_taken())?;
            let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !value.is_finite() || value > diverged_above {
                progress.abandon();
                bail!(
                    "epoch {}, batch {}: the training loss is {value:.4e} nats per image \
                     (non-finite, or over 100x the uniform model's {:.1}): the run diverged and \
                     stopped; {} is intact (epoch {}); try a smaller train.lr or set train.clip_norm",
                    epoch + 1,
                    b + 1,
                    uniform_nll,
                    self.config.output.dir.join(BEST).display(),
                    state.best_epoch
                );
            }
            grad_norm_sum += optimizer.step(&loss.backward()?, lr)?;
            loss_sum += value * rows.len() as f64;
            seen += rows.len();
            progress.batch_done(b + 1, seen, loss_sum);
        }
        progress.finish();
        Ok(EpochTraining {
            nll: loss_sum / seen as f64,
            mean_grad_norm: grad_norm_sum / batches as f64,
            seconds: start.elapsed().as_secs_f64(),
            images: seen,
        })
    }

    /// The books after an epoch: run state and selection, best.safetensors when validation
    /// improved, last.safetensors (with the optimizer), metrics, curve, samples, the line.
    /// `valid` is None on the epochs `train.valid_every` skips: selection, early stopping and
    /// the plateau schedule then wait for the next validation, which counts the epochs since
    /// the one before.
    fn after_epoch(
        &self,
        optimizer: &Optimizer,
        state: &mut TrainState,
        lr: f64,
        trained: &EpochTraining,
        valid: Option<&NllSummary>,
    ) -> Result<()> {
        let t = &self.config.train;
        let out = &self.config.output.dir;
        let epoch = state.epoch + 1;
        let improved = valid.is_some_and(|v| v.nll_nats < state.best_valid);
        if let Some(v) = valid {
            let last_validated = state
                .history
                .iter()
                .rev()
                .find(|r| r.valid_nll.is_some())
                .map_or(0, |r| r.epoch);
            let epochs_since = epoch - last_validated;
            state.schedule.observe(t, improved, epochs_since);
            if improved {
                state.best_valid = v.nll_nats;
                state.best_epoch = epoch;
                state.since_best = 0;
            } else {
                state.since_best += epochs_since;
            }
        }
        state.epoch = epoch;
        state.adam_steps = optimizer.steps_taken();
        state.history.push(EpochRecord {
            epoch,
            train_nll: trained.nll,
            valid_nll: valid.map(|v| v.nll_nats),
            best_valid: state.best_valid,
            best_epoch: state.best_epoch,
            lr,
            mean_grad_norm: trained.mean_grad_norm,
            train_seconds: trained.seconds,
            train_images_per_s: trained.images as f64 / trained.seconds.max(1e-9),
            valid_seconds: valid.map_or(0.0, |v| v.seconds),
        });

        let mut metadata = BTreeMap::from([
            (RUN_CONFIG.to_string(), self.config.to_toml()),
            ("epoch".to_string(), epoch.to_string()),
        ]);
        if let Some(v) = valid {
            metadata.insert("valid_nll".to_string(), v.nll_nats.to_string());
        }
        if improved {
            checkpoint::save(&out.join(BEST), self.model, &metadata)?;
        }
        metadata.insert("train_state".into(), serde_json::to_string(&state)?);
        checkpoint::save_with_state(
            &out.join(LAST),
            self.model,
            &optimizer.state_tensors(),
            &metadata,
        )?;
        write_metrics(out, &state.history, self.model.config().kind())?;
        if t.sample_every > 0 && epoch.is_multiple_of(t.sample_every) {
            // Seeded by the run's seed alone: the grids of successive epochs use the same
            // uniforms, so changes between them are the model's, not the draw's.
            sample::write_sample_grid(
                self.model,
                100,
                t.seed,
                self.device,
                &out.join("samples.png"),
            )?;
        }
        println!(
            "{}",
            epoch_line(
                state.history.last().expect("just pushed"),
                t.epochs,
                eta_seconds(&state.history, t.epochs, t.valid_every)
            )
        );
        Ok(())
    }

    /// What a Ctrl-C during the epoch after `state`'s leaves: the files of the last completed
    /// epoch, and the command that continues from there.
    fn interrupted(&self, state: &TrainState) -> Interrupted {
        let dir = &self.config.output.dir;
        let (out, last, best) = (
            dir.display(),
            dir.join(LAST).display().to_string(),
            dir.join(BEST).display().to_string(),
        );
        let epochs = self.config.train.epochs;
        let now = state.epoch + 1;
        if state.epoch == 0 {
            return Interrupted(format!(
                "interrupted in epoch 1 of {epochs}, before any epoch completed: nothing saved in {out}; run the same command again to start over"
            ));
        }
        Interrupted(format!(
            "interrupted in epoch {now} of {epochs}: saved are {last} (epoch {} of {epochs}, with the optimizer state) and {best} (epoch {}, valid {:.4}); continue with `nade train --resume {out}`, which goes on from epoch {now}",
            state.epoch, state.best_epoch, state.best_valid
        ))
    }
}

/// The start banner: the model, its size, the device, the data and where the run writes.
fn banner(
    config: &Config,
    model_cfg: &ModelConfig,
    device: &Device,
    train: &BinaryDataset,
    valid: &BinaryDataset,
) -> Vec<String> {
    let t = &config.train;
    let on = if device.is_cpu() {
        match threads::current() {
            1 => "cpu (1 thread)".to_string(),
            n => format!("cpu ({n} threads)"),
        }
    } else {
        device::name(device).to_string()
    };
    let model = serde_json::to_string(model_cfg).unwrap_or_else(|_| model_cfg.describe());
    let source = config.data.source();
    vec![
        format!(
            "model {model}: {} parameters, on {on}",
            model_cfg.num_params()
        ),
        format!(
            "data {} ({}): {} train and {} valid images of {} values",
            source.resolve().path.display(),
            source.dataset,
            train.len(),
            valid.len(),
            train.n()
        ),
        format!(
            "output {}: at most {} epochs (early stopping after {} without a better validation NLL)",
            config.output.dir.display(),
            t.epochs,
            t.patience
        ),
    ]
}

/// A new run must not overwrite an earlier one in the same folder: refuse, or with `force`
/// keep the earlier run's checkpoints as `best.replaced-<unix time>.safetensors` (and `last`).
fn make_room_for_a_new_run(out: &Path, force: bool) -> Result<()> {
    let held: Vec<&str> = [BEST, LAST]
        .into_iter()
        .filter(|name| out.join(name).exists())
        .collect();
    if held.is_empty() {
        return Ok(());
    }
    if !force {
        bail!(
            "{}: already holds a run ({}); continue it with `nade train --resume {}`, or start a new one with another --out or with --force (which keeps the old checkpoints under new names)",
            out.display(),
            held.join(", "),
            out.display()
        );
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Runs forced within one second share the stamp: a counter keeps every backup. The run
    // lock keeps other processes out while the names are chosen.
    let kept_name = |name: &str, copy: usize| {
        let stem = name.trim_end_matches(".safetensors");
        match copy {
            0 => format!("{stem}.replaced-{stamp}.safetensors"),
            _ => format!("{stem}.replaced-{stamp}-{copy}.safetensors"),
        }
    };
    let copy = (0..)
        .find(|&copy| {
            [BEST, LAST]
                .iter()
                .all(|name| !out.join(kept_name(name, copy)).exists())
        })
        .expect("a free name");
    for name in held {
        let kept = out.join(kept_name(name, copy));
        std::fs::rename(out.join(name), &kept)
            .with_context(|| format!("{}: cannot keep {name} aside", out.display()))?;
        eprintln!("--force: kept the earlier {name} as {}", kept.display());
    }
    Ok(())
}

/// The permutation of the training rows for `epoch`: stream epoch + 1 of the seed.
pub fn epoch_order(len: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch as u64 + 1);
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut rng);
    order
}

/// metrics.jsonl and curve.png, rewritten whole from the history each epoch so that a resumed
/// run's files hold exactly its completed epochs.
fn write_metrics(out: &Path, history: &[EpochRecord], kind: &str) -> Result<()> {
    let mut lines = String::new();
    for record in history {
        lines.push_str(&serde_json::to_string(record)?);
        lines.push('\n');
    }
    write_atomically(&out.join("metrics.jsonl"), lines.as_bytes())?;
    let points: Vec<_> = history
        .iter()
        .map(|r| (r.epoch, r.train_nll, r.valid_nll))
        .collect();
    plot::write_curve(
        &out.join("curve.png"),
        &points,
        &format!("{kind}: NLL per epoch"),
    )
}
