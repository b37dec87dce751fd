//! `nade mix`: a weighted mixture of trained checkpoints over the same n, written as one
//! checkpoint that `eval`, `sample`, `complete` and `info` read like any other.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

use nade::data::source::{load_split, SplitRead};
use nade::data::Split;
use nade::device::{self, DeviceChoice};
use nade::mix::{self, Weights};
use nade::models::mixture::Mixture;
use nade::models::Autoregressive;
use nade::report::{MixReport, MixedComponent};
use nade::{checkpoint, eval, memory};

use super::{DataArgs, ThreadsArg};

#[derive(Args)]
pub struct MixArgs {
    /// Trained checkpoints of the same n (any kinds; a mixture too).
    #[arg(required = true, num_args = 1..)]
    checkpoints: Vec<PathBuf>,
    /// The mixture checkpoint to write.
    #[arg(long)]
    out: PathBuf,
    /// fit: EM on --split (the validation split: a choice of model); uniform; or one
    /// positive weight per checkpoint (0.5,0.3,0.2; normalized).
    #[arg(long, default_value = "fit")]
    weights: Weights,
    /// With `fit`: drop the components whose weight ends below this, then refit the rest.
    #[arg(long, default_value_t = 1e-3, value_parser = weight_bar)]
    min_weight: f64,
    /// The split the weights are fit on and the NLLs are reported for [default: valid]; not
    /// with --data naming one file, which is read whole.
    #[arg(long, value_enum)]
    split: Option<Split>,
    #[command(flatten)]
    data: DataArgs,
    /// Images evaluated together [default: the largest of the components' own].
    #[arg(long, value_parser = super::positive)]
    batch: Option<usize>,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    threads: ThreadsArg,
}

fn weight_bar(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.0..1.0).contains(&v) => Ok(v),
        Ok(_) => Err("must be in [0, 1)".into()),
        Err(e) => Err(format!("not a number ({e})")),
    }
}

pub fn run(args: MixArgs) -> Result<()> {
    args.threads.apply()?;
    let start = Instant::now();
    let device = device::select(args.device)?;
    let mut loaded = Vec::with_capacity(args.checkpoints.len());
    for path in &args.checkpoints {
        loaded.push(checkpoint::load(path, &device, None)?);
    }
    let n = loaded[0].model.config().n();
    for (path, l) in args.checkpoints.iter().zip(&loaded) {
        if l.model.config().n() != n {
            bail!(
                "{}: a model of n = {}, but {} has n = {n}: a mixture's components share n",
                path.display(),
                l.model.config().n(),
                args.checkpoints[0].display()
            );
        }
    }
    // The data set the components trained on, where they say and agree.
    let trained: Vec<Option<String>> = loaded.iter().map(|l| l.trained_dataset()).collect();
    if args.data.dataset.is_none() {
        if let Some(j) = (1..trained.len()).find(|&j| trained[j] != trained[0]) {
            bail!(
                "{} trained on {:?} but {} on {:?}: name the data with --dataset",
                args.checkpoints[0].display(),
                trained[0],
                args.checkpoints[j].display(),
                trained[j]
            );
        }
    }
    let source = args.data.source_for(trained[0].clone());
    let split = match (source.single_file(), args.split) {
        (None, None) => Some(Split::Valid),
        (_, split) => split,
    };
    let read = SplitRead::of(&source, split)?;
    let data = load_split(&source, read.split())?;
    let mut log_p = Vec::with_capacity(loaded.len());
    for (path, l) in args.checkpoints.iter().zip(&loaded) {
        let cfg = l.model.config();
        read.check_width(data.n(), path, n)?;
        let batch = args.batch.unwrap_or_else(|| cfg.eval_batch());
        memory::check(&memory::evaluation(cfg, batch, data.len(), &device))?;
        let values = eval::log_probs(l.model.as_ref(), &data, batch, &device, |_, _| {})
            .with_context(|| path.display().to_string())?;
        log_p.push(values.into_iter().map(f64::from).collect::<Vec<f64>>());
    }
    let (weights, kept, em_iterations) =
        mix::choose_weights(&log_p, &args.weights, args.min_weight)?;
    let kept_log_p: Vec<Vec<f64>> = kept.iter().map(|&j| log_p[j].clone()).collect();
    let nll_nats = mix::mixture_nll(&kept_log_p, &weights);
    let components: Vec<MixedComponent> = args
        .checkpoints
        .iter()
        .zip(&loaded)
        .zip(&log_p)
        .enumerate()
        .map(|(j, ((path, l), lp))| MixedComponent {
            checkpoint: path.display().to_string(),
            model: l.model.config().describe(),
            nll_nats: -lp.iter().sum::<f64>() / lp.len() as f64,
            weight: kept.iter().position(|&k| k == j).map(|at| weights[at]),
        })
        .collect();
    let mut models: Vec<Option<Box<dyn Autoregressive>>> =
        loaded.into_iter().map(|l| Some(l.model)).collect();
    let kept_models: Vec<Box<dyn Autoregressive>> = kept
        .iter()
        .map(|&j| models[j].take().expect("each component once"))
        .collect();
    let refs: Vec<&dyn Autoregressive> = kept_models.iter().map(|m| m.as_ref()).collect();
    let cfg = mix::mixture_config(&refs, &weights)?;
    let mixture = Mixture::new(cfg, kept_models, &device)?;
    let sources: Vec<String> = kept
        .iter()
        .map(|&j| args.checkpoints[j].display().to_string())
        .collect();
    let mut metadata = std::collections::BTreeMap::from([
        (checkpoint::DATASET_KEY.to_string(), source.dataset.clone()),
        (
            "mixture_sources".to_string(),
            serde_json::to_string(&sources)?,
        ),
        ("mixture_weights".to_string(), args.weights.to_string()),
    ]);
    if let Some(split) = read.split {
        metadata.insert(format!("{split}_nll"), nll_nats.to_string());
    }
    checkpoint::save(&args.out, &mixture, &metadata)?;
    let report = MixReport {
        out: args.out.display().to_string(),
        weights: args.weights.to_string(),
        split: read.split.map(|s| s.to_string()),
        data: read.file.display().to_string(),
        images: data.len(),
        components,
        em_iterations,
        nll_nats,
        seconds: start.elapsed().as_secs_f64(),
    };
    super::emit(&report, args.json)
}
