//! `nade eval`: the exact NLL of a checkpoint on a data set, of its kept parts, or a
//! mixture's curve over components.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use nade::data::source::{load_split, SplitRead};
use nade::data::Split;
use nade::device::{self, DeviceChoice};
use nade::keep::KeepSpec;
use nade::models::RunChoices;
use nade::report::{EvalReport, Evaluated, KeptReport};
use nade::tile_shape::TileShape;
use nade::{checkpoint, eval, memory, threads};

use super::{positive, DataArgs, ThreadsArg};

#[derive(Args)]
pub struct EvalArgs {
    /// A safetensors checkpoint.
    checkpoint: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// The split of the data folder [default: test]; not with --data naming one file, which
    /// is evaluated whole.
    #[arg(long, value_enum)]
    split: Option<Split>,
    /// Evaluate only the first N images of the split.
    #[arg(long, value_name = "N", value_parser = positive)]
    limit: Option<usize>,
    /// Images evaluated together [default: 100; deepnade: 2048, its walk wants many rows per
    /// matmul].
    #[arg(long, value_parser = positive)]
    batch: Option<usize>,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// How the model computes (NADE: auto, fused, blocked[:K] or plain; `--path` is its
    /// older name). Other models have one way (auto).
    #[arg(long, alias = "path", default_value = "auto")]
    kernel: String,
    /// A mixture of masks (made): evaluate its first K masks only (default: all of them).
    #[arg(long, value_name = "K", value_parser = positive)]
    masks: Option<usize>,
    /// An ensemble of orderings (deepnade): evaluate its first K stored orderings only
    /// (default: all of them). Each ordering costs n network passes per image.
    #[arg(long, value_name = "K", value_parser = positive)]
    orders: Option<usize>,
    /// Score only the kept part of every image, -log p(x_kept), exactly: any kept set for
    /// an order-agnostic model (deepnade), a prefix of the order (top:R) for the others; the
    /// --keep SPEC of `nade complete`; random:P is seeded by --seed.
    #[arg(long, value_name = "SPEC")]
    keep: Option<KeepSpec>,
    /// The layout (H rows of W values, H x W = the model's n) whose rows and columns --keep
    /// top, bottom, left, right, box and hole name; default: the most nearly square, as in
    /// `nade complete`.
    #[arg(long, value_name = "HxW", requires = "keep")]
    shape: Option<TileShape>,
    /// Seed of --keep random:P.
    #[arg(long, default_value_t = 0, requires = "keep")]
    seed: u64,
    /// A mixture (made, deepnade): also the NLL of its first 1, 2, 4, ... components, from
    /// the same pass (the JSON's `curve`).
    #[arg(long, conflicts_with = "keep")]
    curve: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    threads: ThreadsArg,
}

pub fn run(args: EvalArgs) -> Result<()> {
    args.threads.apply()?;
    let device = device::select(args.device)?;
    let choices = RunChoices {
        kernel: Some(args.kernel.clone()),
        masks: args.masks,
        orders: args.orders,
    };
    let loaded = checkpoint::load_with(&args.checkpoint, &device, &choices)?;
    let model = loaded.model.as_ref();
    let cfg = model.config();
    let source = args.data.source_for(loaded.trained_dataset());
    let read = SplitRead::of(&source, args.split)?;
    let mut data = load_split(&source, read.split())?;
    read.check_width(data.n(), &args.checkpoint, cfg.n())?;
    if let Some(limit) = args.limit {
        data.truncate(limit);
    }
    let batch = args.batch.unwrap_or_else(|| cfg.eval_batch());
    memory::check(&memory::evaluation(cfg, batch, data.len(), &device))?;
    // Plain progress lines off a terminal too where an evaluation takes minutes.
    let progress = (!args.json && std::io::stderr().is_terminal()) || cfg.orders_used().is_some();
    let evaluated = Evaluated {
        model: cfg.kind().into(),
        checkpoint: args.checkpoint.display().to_string(),
        n: cfg.n(),
        config: cfg.structure(),
        orders: cfg.orders_used(),
        split: read.split.map(|s| s.to_string()),
        data: read.file.display().to_string(),
        device: device::name(&device).into(),
        threads: threads::current(),
        describe: cfg.describe(),
        images: read.images(),
    };
    if let Some(spec) = args.keep {
        let shape = TileShape::for_model(args.shape, data.n())?;
        let masks = spec.masks(shape, data.len(), args.seed)?;
        let kept = eval::kept_nll(model, &data, &masks, batch, &device, progress)
            .map_err(|e| anyhow::anyhow!("--keep {spec}: {e}"))?;
        let report = KeptReport::new(evaluated, spec.to_string(), args.seed, &kept);
        return super::emit(&report, args.json);
    }
    let curve = match args.curve {
        true => Some(eval::mixture_curve(model, &data, batch, &device, progress)?),
        false => None,
    };
    let summary = match curve.as_ref().and_then(|c| c.points.last()) {
        // The last point of the curve is the whole mixture.
        Some((_, whole)) => whole.clone(),
        None => eval::nll(model, &data, batch, &device, progress)?,
    };
    let report = EvalReport::new(evaluated, cfg, &summary, curve.as_ref());
    super::emit(&report, args.json)
}
