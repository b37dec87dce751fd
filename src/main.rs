//! The `nade` command line: parse, dispatch, print errors. The work lives in the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use nade::bench;
use nade::checkpoint;
use nade::config::Config;
use nade::data::source::{load_split, DataSource, PathOrigin};
use nade::data::Split;
use nade::device::{self, DeviceChoice};
use nade::eval;
use nade::image_grid;
use nade::info;
use nade::interrupt::{self, Interrupted};
use nade::keep::{self, KeepSpec};
use nade::memory;
use nade::models::ModelConfig;
use nade::progress::Progress;
use nade::sample::{self, WalkOrder};
use nade::threads;
use nade::train;

#[derive(Parser)]
#[command(
    name = "nade",
    version,
    about = "Autoregressive density models of binary data (FVSBN, MLP, NADE, MADE, order-agnostic deep NADE)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model by maximum likelihood as a TOML config says.
    Train(TrainArgs),
    /// Exact average negative log-likelihood of a checkpoint on a data split.
    Eval(EvalArgs),
    /// Draw images from a checkpoint, one pixel at a time, as a PNG grid.
    Sample(SampleArgs),
    /// Keep part of test images (top rows, or --keep SPEC) and let a checkpoint draw the rest.
    Complete(CompleteArgs),
    /// Throughput of eval, training and sampling (images/s) and peak memory.
    Bench(BenchArgs),
    /// What a checkpoint holds: model, config, parameters, tensors, metadata, epoch and NLLs.
    Info(InfoArgs),
    /// The models this build knows: kind, summary, what they condition on, bench's layers.
    Kinds(KindsArgs),
}

#[derive(Args)]
struct KindsArgs {
    /// Print one JSON array instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct InfoArgs {
    /// A safetensors checkpoint.
    checkpoint: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// A count-like flag: a whole number of at least 1 (clap names the flag, this says why).
fn positive(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(value) => Ok(value),
        Err(e) => Err(format!("not a whole number ({e})")),
    }
}

/// A duration in seconds: a finite number above 0.
fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() && value > 0.0 => Ok(value),
        Ok(_) => Err("must be a number of seconds above 0".into()),
        Err(e) => Err(format!("not a number ({e})")),
    }
}

#[derive(Args)]
struct BenchArgs {
    #[arg(long, default_value = "nade", value_parser = clap::builder::PossibleValuesParser::new(ModelConfig::kinds()))]
    model: String,
    /// Hidden layer sizes, comma-separated for MADE and deep NADE [default: 500; deepnade:
    /// 500,500, the shipped model's].
    #[arg(long, value_delimiter = ',', value_parser = positive)]
    hidden: Vec<usize>,
    /// MADE: K, the masks of the ensemble (eval and sample use all K, train one per step).
    #[arg(long, default_value_t = 1, value_parser = positive)]
    masks: usize,
    #[arg(long, default_value_t = 100, value_parser = positive)]
    batch: usize,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Kernels, comma-separated (NADE: auto, fused, blocked[:K], plain; `--path` is its
    /// older name).
    #[arg(long, alias = "path", value_delimiter = ',', default_value = "auto")]
    kernel: Vec<String>,
    /// Phases, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "eval,train,sample"
    )]
    phase: Vec<bench::Phase>,
    /// Timed seconds per (path, phase) after the warm-up.
    #[arg(long, default_value_t = 10.0, value_parser = positive_seconds)]
    seconds: f64,
    /// Data folder for real binarized MNIST batches (synthetic ones if it lacks the training
    /// file; no download). A folder named here or by NADE_DATA_DIR must exist.
    #[arg(long)]
    data: Option<PathBuf>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    threads: ThreadsArg,
}

/// `--threads N`, on every command that computes.
#[derive(Args)]
struct ThreadsArg {
    /// CPU threads (0 = all cores).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = threads_parser())]
    threads: u64,
}

fn threads_parser() -> clap::builder::RangedU64ValueParser {
    clap::value_parser!(u64).range(0..=threads::MAX as u64)
}

impl ThreadsArg {
    /// Sizes the CPU thread pools; before any computation.
    fn apply(&self) -> Result<()> {
        threads::set(self.threads as usize, "--threads")
    }
}

#[derive(Args)]
struct TrainArgs {
    /// The run's TOML config (optional with --resume: the interrupted run's is used).
    config: Option<PathBuf>,
    /// Continue the run in DIR from DIR/last.safetensors.
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    /// Override train.epochs.
    #[arg(long, value_parser = positive)]
    epochs: Option<usize>,
    /// Override train.seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Override train.valid_every: validate after every N-th epoch (and the last).
    #[arg(long, value_name = "N", value_parser = positive)]
    valid_every: Option<usize>,
    /// Override train.device.
    #[arg(long, value_enum)]
    device: Option<DeviceChoice>,
    /// Override output.dir.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Override data.dir: the folder of {dataset}_{train,valid,test}.amat.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Override data.dataset: binarized_mnist, dna, mushrooms, nips, or a name of your own.
    #[arg(long, value_name = "NAME")]
    dataset: Option<String>,
    /// Override train.threads: CPU threads (0 = all cores).
    #[arg(long, value_name = "N", value_parser = threads_parser())]
    threads: Option<u64>,
    /// Do not evaluate the selected model on the test set (for hyperparameter sweeps).
    #[arg(long)]
    no_test: bool,
    /// Start a new run in an output folder that already holds one (its best.safetensors and
    /// last.safetensors are kept under new names, never deleted).
    #[arg(long, conflicts_with = "resume")]
    force: bool,
}

#[derive(Args)]
struct DataArgs {
    /// Data folder (or one .amat file); default: $NADE_DATA_DIR, else data/binarized_mnist.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Data set name: files are {dataset}_{split}.amat in the data folder.
    #[arg(long, default_value = "binarized_mnist")]
    dataset: String,
}

#[derive(Args)]
struct EvalArgs {
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

fn main() -> ExitCode {
    // candle attaches a backtrace to its errors whenever RUST_BACKTRACE is set (common in
    // developers' shells), and prints it inside the message: a one-line error would become
    // a hundred. RUST_LIB_BACKTRACE=0 turns those captures off and leaves panics' backtraces
    // to RUST_BACKTRACE; set RUST_LIB_BACKTRACE=1 to see them when debugging candle.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(stop) = e.downcast_ref::<Interrupted>() {
                // A clean stop on Ctrl-C: what is saved and how to go on, not an error.
                eprintln!("{stop}");
                return ExitCode::from(interrupt::EXIT_STATUS);
            }
            // One line: the context chain joined, most general first.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(args) => run_train(args),
        Command::Eval(args) => run_eval(args),
        Command::Sample(args) => run_sample(args),
        Command::Complete(args) => run_complete(args),
        Command::Bench(args) => run_bench(args),
        Command::Info(args) => run_info(args),
        Command::Kinds(args) => run_kinds(args),
    }
}

fn run_kinds(args: KindsArgs) -> Result<()> {
    let registry = nade::models::REGISTRY;
    if args.json {
        println!("{}", serde_json::to_string(registry)?);
        return Ok(());
    }
    for kind in registry {
        let conditions = match kind.any_order {
            true => "any kept set",
            false => "prefixes of its order",
        };
        println!(
            "{:9} {} (conditions on {conditions}; bench: hidden {})",
            kind.name,
            kind.summary,
            layers_text(kind.bench_layers)
        );
    }
    Ok(())
}

fn run_info(args: InfoArgs) -> Result<()> {
    let info = info::inspect(&args.checkpoint)?;
    if args.json {
        println!("{}", serde_json::to_string(&info)?);
    } else {
        print!("{}", info.text());
    }
    Ok(())
}

fn run_bench(args: BenchArgs) -> Result<()> {
    args.threads.apply()?;
    let device = device::select(args.device)?;
    let hidden = match args.hidden.is_empty() {
        false => args.hidden,
        // Each kind's own default (deep NADE: the shipped 2 x 500).
        true => ModelConfig::kind_named(&args.model)
            .map_err(anyhow::Error::msg)?
            .bench_layers
            .to_vec(),
    };
    let spec = bench::BenchSpec {
        kind: args.model,
        hidden,
        masks: args.masks,
        batch: args.batch,
        kernels: args.kernel,
        phases: args.phase,
        seconds: args.seconds,
        data: args.data,
    };
    bench::run(&spec, &device, |r| {
        if args.json {
            println!("{}", serde_json::to_string(r).expect("plain struct"));
        } else {
            println!(
                "{:5} {:10} {:6} hidden {:7} batch {:4} on {} ({} data): {:9.0} images/s, peak RSS {:.0} MB",
                r.model, r.kernel, r.phase, layers_text(&r.layers), r.batch, r.device, r.data, r.images_per_s, r.peak_rss_mb
            );
        }
    })
}

/// Hidden layer sizes as "500x500" ("0" for none).
fn layers_text(layers: &[usize]) -> String {
    match layers {
        [] => "0".into(),
        _ => layers
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("x"),
    }
}

fn run_train(args: TrainArgs) -> Result<()> {
    let mut config = match (&args.config, &args.resume) {
        (Some(path), _) => Config::from_file(path)?,
        (None, Some(dir)) => train::config_of_run(dir)?,
        (None, None) => anyhow::bail!("train: give a CONFIG file, or --resume DIR"),
    };
    if let Some(dir) = &args.resume {
        config.output.dir = dir.clone();
    }
    if let Some(epochs) = args.epochs {
        config.train.epochs = epochs;
    }
    if let Some(seed) = args.seed {
        config.train.seed = seed;
    }
    if let Some(k) = args.valid_every {
        config.train.valid_every = k;
    }
    if let Some(device) = args.device {
        config.train.device = device;
    }
    if let Some(out) = args.out {
        config.output.dir = out;
    }
    if let Some(data) = args.data {
        config.data.dir = Some(data);
        config.data.dir_origin = PathOrigin::Flag;
    }
    if let Some(dataset) = args.dataset {
        config.data.dataset = Some(dataset);
    }
    if let Some(threads) = args.threads {
        config.train.threads = threads as usize;
    }
    if let Some(dir) = &args.resume {
        train::record_cosine_extension(&mut config, dir);
        train::refuse_linear_extension(&config, dir)?;
    }
    config.validate()?;
    threads::set(config.train.threads, "train.threads")?;
    interrupt::install()?;
    let opts = train::Options {
        resume: args.resume.is_some(),
        test: !args.no_test,
        force: args.force,
        ..Default::default()
    };
    let s = train::run(&config, &opts)?;
    let selected = format!(
        "{} (epoch {} of {}, valid {:.4})",
        s.best_checkpoint.display(),
        s.best_epoch,
        s.epochs_run,
        s.valid_nll
    );
    match (s.test_nll, s.test_nll_std_err, s.test_bits_per_dim) {
        (Some(nll), Some(err), Some(bpd)) => {
            println!("test NLL {nll:.4} ± {err:.4} nats, {bpd:.5} bits/dim: {selected}")
        }
        _ => println!("selected {selected}; test set not evaluated (--no-test)"),
    }
    Ok(())
}

fn run_eval(args: EvalArgs) -> Result<()> {
    args.threads.apply()?;
    let device = device::select(args.device)?;
    let loaded = checkpoint::load(&args.checkpoint, &device, Some(&args.kernel))?;
    let source = DataSource {
        path: args.data.data.clone(),
        path_origin: PathOrigin::Flag,
        dataset: args.data.dataset.clone(),
    };
    let read = DataRead::of(&source, args.split)?;
    let mut data = load_split(&source, read.split.unwrap_or(Split::Test))?;
    read.check_width(data.n(), &args.checkpoint, loaded.model.config().n())?;
    if let Some(limit) = args.limit {
        data.truncate(limit);
    }
    let model = match args.masks {
        Some(k) => {
            let cfg = loaded
                .model
                .config()
                .with_masks(k)
                .map_err(anyhow::Error::msg)?;
            nade::models::rebuilt(loaded.model.as_ref(), &cfg, &device)?
        }
        None => loaded.model,
    };
    let model = match args.orders {
        Some(k) => {
            let cfg = model.config().with_orders(k).map_err(anyhow::Error::msg)?;
            nade::models::rebuilt(model.as_ref(), &cfg, &device)?
        }
        None => model,
    };
    let model = model.as_ref();
    let batch = args.batch.unwrap_or_else(|| model.config().eval_batch());
    memory::check(&memory::evaluation(
        model.config(),
        batch,
        data.len(),
        &device,
    ))?;
    // Plain progress lines off a terminal too where an evaluation takes minutes.
    let progress =
        (!args.json && std::io::stderr().is_terminal()) || model.config().orders_used().is_some();
    if let Some(spec) = args.keep {
        return eval_kept(&args, &read, spec, model, &data, batch, &device, progress);
    }
    let curve = if args.curve {
        Some(eval::mixture_curve(model, &data, batch, &device, progress)?)
    } else {
        None
    };
    let summary = match curve.as_ref().and_then(|c| c.points.last()) {
        // The last point of the curve is the whole mixture.
        Some((_, whole)) => whole.clone(),
        None => eval::nll(model, &data, batch, &device, progress)?,
    };
    let cfg = model.config();
    if args.json {
        let mut json = serde_json::json!({
            "model": cfg.kind(),
            "checkpoint": args.checkpoint.display().to_string(),
            "n": cfg.n(),
            "hidden": cfg.hidden().unwrap_or(0),
            "config": cfg.structure(),
            "masks": cfg.masks_used(),
            "orders": cfg.orders_used(),
            "split": read.split.map(|s| s.to_string()),
            "data": read.file.display().to_string(),
            "count": summary.count,
            "nll_nats": summary.nll_nats,
            "nll_std_err": summary.std_err,
            "bits_per_dim": summary.bits_per_dim,
            "device": device::name(&device),
            "threads": threads::current(),
            "kernel": cfg.kernel_name(),
            "path": cfg.kernel_name(),
            "seconds": summary.seconds,
            "images_per_s": summary.images_per_s(),
        });
        if let Some(curve) = &curve {
            json["curve"] = curve
                .points
                .iter()
                .map(|(k, s)| {
                    serde_json::json!({
                        "components": k,
                        "nll_nats": s.nll_nats,
                        "nll_std_err": s.std_err,
                        "bits_per_dim": s.bits_per_dim,
                    })
                })
                .collect();
            let (mean, std_err) = curve.mean_of_each();
            json["each_component"] = serde_json::json!({
                "components": curve.each.len(),
                "nll_nats": curve.each,
                "mean_nll_nats": mean,
                "mean_std_err": std_err,
            });
        }
        println!("{json}");
    } else if let Some(curve) = &curve {
        for (k, s) in &curve.points {
            println!(
                "first {k} components: NLL {:.4} ± {:.4} nats",
                s.nll_nats, s.std_err
            );
        }
        let (mean, std_err) = curve.mean_of_each();
        let (lo, hi) = curve
            .each
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        println!(
            "each of the {} components alone: mean NLL {mean:.4} ± {std_err:.4} nats over components (from {lo:.4} to {hi:.4})",
            curve.each.len()
        );
    }
    if !args.json {
        println!(
            "{} on {} {}: NLL {:.4} ± {:.4} nats, {:.5} bits/dim ({:.1} s, {} images/s)",
            cfg.describe(),
            summary.count,
            read.images(),
            summary.nll_nats,
            summary.std_err,
            summary.bits_per_dim,
            summary.seconds,
            nade::progress::rate_text(summary.images_per_s())
        );
    }
    Ok(())
}

/// What an evaluation reads: a split of the data folder, or the one file `--data` names.
struct DataRead {
    /// None for one file named by `--data`: it is no split, whatever its content.
    split: Option<Split>,
    file: PathBuf,
}

impl DataRead {
    /// `split` as given (None: the default, test); refused for a single file, which is read
    /// whole and would otherwise be labelled a split it may not be.
    fn of(source: &DataSource, split: Option<Split>) -> Result<Self> {
        match (source.single_file(), split) {
            (Some(file), Some(split)) => anyhow::bail!(
                "--split {split}: --data names one file ({}), which is evaluated whole; drop --split, or point --data at the folder of {}_{{train,valid,test}}.amat",
                file.display(),
                source.dataset
            ),
            (Some(file), None) => Ok(Self { split: None, file }),
            (None, split) => {
                let split = split.unwrap_or(Split::Test);
                Ok(Self {
                    split: Some(split),
                    file: source.file_of(split),
                })
            }
        }
    }

    /// An error naming the file and the checkpoint unless the images read have the model's
    /// `n` values.
    fn check_width(&self, width: usize, checkpoint: &std::path::Path, n: usize) -> Result<()> {
        if width != n {
            anyhow::bail!(
                "{}: images of {width} values, but {} models n = {n}",
                self.file.display(),
                checkpoint.display()
            );
        }
        Ok(())
    }

    /// "test images", or "images of FILE".
    fn images(&self) -> String {
        match self.split {
            Some(split) => format!("{split} images"),
            None => format!("images of {}", self.file.display()),
        }
    }
}

/// `nade eval --keep SPEC`: the mean -log p(x_kept) under the model and its first component.
#[allow(clippy::too_many_arguments)]
fn eval_kept(
    args: &EvalArgs,
    read: &DataRead,
    spec: KeepSpec,
    model: &dyn nade::models::Autoregressive,
    data: &nade::data::BinaryDataset,
    batch: usize,
    device: &candle_core::Device,
    progress: bool,
) -> Result<()> {
    let masks = spec.masks(data.n(), data.len(), args.seed)?;
    let kept = eval::kept_nll(model, data, &masks, batch, device, progress)
        .map_err(|e| anyhow::anyhow!("--keep {spec}: {e}"))?;
    let (whole, first) = (&kept.whole, &kept.first);
    let cfg = model.config();
    if args.json {
        let json = serde_json::json!({
            "model": cfg.kind(),
            "checkpoint": args.checkpoint.display().to_string(),
            "n": cfg.n(),
            "config": cfg.structure(),
            "orders": cfg.orders_used(),
            "split": read.split.map(|s| s.to_string()),
            "data": read.file.display().to_string(),
            "keep": spec.to_string(),
            "seed": args.seed,
            "count": whole.count,
            "kept_nll_nats": whole.nll_nats,
            "kept_nll_std_err": whole.std_err,
            "kept_pixels": kept.kept_pixels,
            "kept_bits_per_dim": kept.bits_per_kept_pixel(),
            "kept_nll_first_nats": first.nll_nats,
            "kept_nll_first_std_err": first.std_err,
            "device": device::name(device),
            "threads": threads::current(),
            "seconds": whole.seconds,
        });
        println!("{json}");
    } else {
        let per_pixel = match kept.bits_per_kept_pixel() {
            Some(bits) => format!("{bits:.5} bits per kept pixel"),
            None => "no pixel kept".to_string(),
        };
        println!(
            "{} on {} {} keeping {spec}: -log p(x_kept) {:.4} ± {:.4} nats ({per_pixel}; first component alone {:.4} ± {:.4}) ({:.1} s)",
            cfg.describe(),
            whole.count,
            read.images(),
            whole.nll_nats,
            whole.std_err,
            first.nll_nats,
            first.std_err,
            whole.seconds
        );
    }
    Ok(())
}

#[derive(Args)]
struct SampleArgs {
    /// A safetensors checkpoint.
    checkpoint: PathBuf,
    /// Number of images.
    #[arg(long, value_parser = positive)]
    count: usize,
    /// Seed of the Bernoulli draws: the same seed gives the same images.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The PNG grid to write (a name ending in .png).
    #[arg(long, default_value = "samples.png")]
    out: PathBuf,
    /// Also write the images as .amat text (one 0/1 vector per line).
    #[arg(long)]
    amat: Option<PathBuf>,
    /// Show the Bernoulli means p(x_i = 1 | x_<i) as gray levels instead of the binary pixels.
    #[arg(long)]
    probs: bool,
    /// The pixel order: stored (the model's own; deepnade: one of its stored orderings per
    /// image, drawn uniformly, an exact draw from the ensemble), random (a fresh random
    /// ordering per image; order-agnostic models only) or raster (0..n-1).
    #[arg(long, default_value = "stored")]
    order: WalkOrder,
    /// Upscale every pixel to K x K.
    #[arg(long, value_name = "K", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=32))]
    scale: u32,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Images sampled together.
    #[arg(long, default_value_t = 100, value_parser = positive)]
    batch: usize,
    #[command(flatten)]
    threads: ThreadsArg,
}

#[derive(Args)]
struct CompleteArgs {
    /// A safetensors checkpoint.
    checkpoint: PathBuf,
    /// Rows of each test image kept as given, from the top (28 pixels each for MNIST): the
    /// same as --keep top:R.
    #[arg(long, conflicts_with = "keep", required_unless_present = "keep")]
    rows: Option<usize>,
    /// The pixels kept as given: top:R, bottom:R, left:C, right:C, box:R0,C0,R1,C1 (rows
    /// R0..R1-1, columns C0..C1-1), hole:R0,C0,R1,C1 (all but that box) or random:P (each pixel with probability P, seeded by
    /// --seed). Models with a fixed pixel order (fvsbn, mlp, nade) condition only on a prefix
    /// of it: top:R.
    #[arg(long, value_name = "SPEC")]
    keep: Option<KeepSpec>,
    /// Number of test images, from --index on.
    #[arg(long, value_parser = positive)]
    count: usize,
    /// First test image.
    #[arg(long, default_value_t = 0)]
    index: usize,
    /// Take every S-th test image from --index on (the split is roughly sorted by digit, so
    /// 1000 spreads the images over the classes).
    #[arg(long, value_name = "S", default_value_t = 1, value_parser = positive)]
    stride: usize,
    /// Completions per image.
    #[arg(long, value_name = "K", default_value_t = 5, value_parser = positive)]
    samples: usize,
    /// The order the hidden pixels are drawn in, after the kept ones: random (a fresh random
    /// ordering per completion; the default of order-agnostic models), raster (0..n-1) or
    /// stored (the model's own; deepnade: a stored ordering per completion drawn from its
    /// posterior given the kept pixels; the default of the other models).
    #[arg(long)]
    order: Option<WalkOrder>,
    /// Print one JSON object: per image log p(x_kept) in nats, exactly (deepnade: under the
    /// first ordering restricted to the kept set, and as the ensemble; models with a fixed
    /// order: under it, the kept set being a prefix of it).
    #[arg(long)]
    json: bool,
    /// Seed of the Bernoulli draws: the same seed gives the same completions.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The PNG grid to write (a name ending in .png): per image the original, the kept
    /// part, the completions.
    #[arg(long, default_value = "completions.png")]
    out: PathBuf,
    /// Also write the completions as .amat text, image by image (the K of --index first).
    #[arg(long)]
    amat: Option<PathBuf>,
    /// Upscale every pixel to K x K.
    #[arg(long, value_name = "K", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=32))]
    scale: u32,
    #[command(flatten)]
    data: DataArgs,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Images completed together.
    #[arg(long, default_value_t = 100, value_parser = positive)]
    batch: usize,
    #[command(flatten)]
    threads: ThreadsArg,
}

fn run_sample(args: SampleArgs) -> Result<()> {
    args.threads.apply()?;
    image_grid::check_png_name("--out", &args.out)?;
    nade::io::check_folder_exists("--out", &args.out)?;
    if let Some(path) = &args.amat {
        nade::io::check_folder_exists("--amat", path)?;
    }
    let device = device::select(args.device)?;
    let loaded = checkpoint::load(&args.checkpoint, &device, None)?;
    let model = loaded.model.as_ref();
    let cfg = model.config();
    let (width, height) = image_grid::check_size(
        sample::samples_grid_extent(args.count, cfg.n(), args.scale),
        &format!("--count {} --scale {}", args.count, args.scale),
    )?;
    memory::check(&memory::sampling(&memory::SamplingJob {
        cfg,
        count: args.count,
        batch: args.batch,
        workers: sample::workers(&device, args.count.div_ceil(args.batch)),
        grid_pixels: width * height,
        amat: args.amat.is_some(),
        count_flag: format!("--count {}", args.count),
    }))?;
    // A bar on a terminal, plain lines otherwise; short runs need neither.
    let progress = if args.count >= LONG_SAMPLING {
        Progress::to_stderr("sampled", "images", args.count)
    } else {
        Progress::Hidden
    };
    let samples = sample::sample_in_order(
        model, args.count, args.batch, args.seed, args.order, &device, &progress,
    )?;
    image_grid::write_png(
        &args.out,
        &sample::samples_image(&samples, args.probs, args.scale)?,
    )?;
    if let Some(path) = &args.amat {
        nade::data::amat::write_amat(path, &samples.images)?;
    }
    println!(
        "{} samples in {:.2} s ({:.0} samples/s on {}): {}",
        samples.count(),
        samples.seconds,
        samples.per_second(),
        device::name(&device),
        args.out.display()
    );
    Ok(())
}

/// Images from which `nade sample` reports its progress (about a second of NADE-500 on 2 cores).
const LONG_SAMPLING: usize = 10_000;

fn run_complete(args: CompleteArgs) -> Result<()> {
    args.threads.apply()?;
    image_grid::check_png_name("--out", &args.out)?;
    nade::io::check_folder_exists("--out", &args.out)?;
    if let Some(path) = &args.amat {
        nade::io::check_folder_exists("--amat", path)?;
    }
    let device = device::select(args.device)?;
    let loaded = checkpoint::load(&args.checkpoint, &device, None)?;
    let model = loaded.model.as_ref();
    let n = model.config().n();
    let spec = match (args.keep, args.rows) {
        (Some(spec), _) => spec,
        (None, Some(rows)) => {
            sample::kept_values(n, rows)?;
            KeepSpec::Top(rows)
        }
        (None, None) => anyhow::bail!("complete: give --rows R or --keep SPEC ({})", keep::GRAMMAR),
    };
    let source = DataSource {
        path: args.data.data,
        path_origin: PathOrigin::Flag,
        dataset: args.data.dataset,
    };
    let (width, height) = image_grid::check_size(
        sample::completions_grid_extent(args.count, args.samples, n, args.scale),
        &format!(
            "--count {} --samples {} --scale {}",
            args.count, args.samples, args.scale
        ),
    )?;
    let read = DataRead::of(&source, None)?;
    let test = load_split(&source, Split::Test)?;
    read.check_width(test.n(), &args.checkpoint, n)?;
    let given = sample::select_rows(&test, args.index, args.count, args.stride)?;
    let total = given.len() * args.samples;
    memory::check(&memory::sampling(&memory::SamplingJob {
        cfg: model.config(),
        count: total,
        batch: args.batch,
        workers: sample::workers(&device, total.div_ceil(args.batch)),
        grid_pixels: width * height,
        amat: args.amat.is_some(),
        count_flag: format!("--count {} --samples {}", args.count, args.samples),
    }))?;
    let masks = spec.masks(n, given.len(), args.seed)?;
    let order = args
        .order
        .unwrap_or_else(|| WalkOrder::completion_default(model));
    let completions = sample::complete_in_order(
        model,
        &given,
        &masks,
        args.samples,
        args.batch,
        args.seed,
        order,
        &device,
    )
    .map_err(|e| anyhow::anyhow!("--keep {spec}: {e}"))?;
    image_grid::write_png(
        &args.out,
        &sample::completions_image(&given, &masks, &completions, args.scale)?,
    )?;
    if let Some(path) = &args.amat {
        nade::data::amat::write_amat(path, &completions)?;
    }
    if args.json {
        let kept = model.kept_log_prob(
            &given.tensor_range(0, given.len(), &device)?,
            &masks.tensor_range(0, masks.len(), &device)?,
        )?;
        let images: Vec<serde_json::Value> = (0..given.len())
            .map(|i| {
                serde_json::json!({
                    "index": args.index + i * args.stride,
                    "kept_pixels": masks.row(i).iter().filter(|&&v| v != 0).count(),
                    "log_p_kept_first": kept.as_ref().map(|k| k.first[i]),
                    "log_p_kept": kept.as_ref().map(|k| k.model[i]),
                })
            })
            .collect();
        let json = serde_json::json!({
            "model": model.config().kind(),
            "checkpoint": args.checkpoint.display().to_string(),
            "keep": spec.to_string(),
            "order": order.to_string(),
            "orders": kept.as_ref().map(|k| k.components),
            "samples": args.samples,
            "seed": args.seed,
            "out": args.out.display().to_string(),
            "images": images,
        });
        println!("{json}");
        return Ok(());
    }
    println!(
        "{} completions of {} {} from index {} (stride {}) keeping {spec}: {}",
        completions.len(),
        given.len(),
        read.images(),
        args.index,
        args.stride,
        args.out.display()
    );
    Ok(())
}

// Density evaluation allocates and frees (B, n, d) activations of ~150 MB per batch; glibc
// hands such blocks back to the kernel every time, and the page faults of re-mapping them cost
// a third of the run. mimalloc keeps and reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
