//! The `nade` command line: parse, dispatch, print errors. The work lives in the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use nade::checkpoint;
use nade::data::source::{load_split, DataSource};
use nade::data::Split;
use nade::device::{self, DeviceChoice};
use nade::eval;
use nade::models::NadePath;

#[derive(Parser)]
#[command(
    name = "nade",
    version,
    about = "Autoregressive density models of binary data (FVSBN, MLP, NADE)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Exact average negative log-likelihood of a checkpoint on a data split.
    Eval(EvalArgs),
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
    #[arg(long, value_enum, default_value_t = Split::Test)]
    split: Split,
    /// Evaluate only the first N images of the split.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// How NADE computes its parallel logits: plain, blocked or blocked:K.
    #[arg(long, default_value_t = NadePath::default())]
    path: NadePath,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the context chain joined, most general first.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Eval(args) => run_eval(args),
    }
}

fn run_eval(args: EvalArgs) -> Result<()> {
    let device = device::select(args.device)?;
    let loaded = checkpoint::load(&args.checkpoint, &device, args.path)?;
    let source = DataSource {
        path: args.data.data,
        dataset: args.data.dataset,
    };
    let mut data = load_split(&source, args.split)?;
    if let Some(limit) = args.limit {
        data.truncate(limit);
    }
    let model = loaded.model.as_ref();
    let progress = !args.json && std::io::stderr().is_terminal();
    let summary = eval::nll(model, &data, args.batch as usize, &device, progress)?;
    let cfg = model.config();
    if args.json {
        let json = serde_json::json!({
            "model": cfg.kind.name(),
            "checkpoint": args.checkpoint.display().to_string(),
            "n": cfg.n,
            "hidden": cfg.hidden,
            "split": args.split.to_string(),
            "count": summary.count,
            "nll_nats": summary.nll_nats,
            "nll_std_err": summary.std_err,
            "bits_per_dim": summary.bits_per_dim,
            "device": device::name(&device),
            "path": if cfg.kind == nade::models::ModelKind::Nade { Some(args.path.to_string()) } else { None },
            "seconds": summary.seconds,
            "images_per_s": summary.images_per_s(),
        });
        println!("{json}");
    } else {
        println!(
            "{} (n = {}, hidden = {}) on {} {} images: NLL {:.4} ± {:.4} nats, {:.5} bits/dim ({:.1} s, {:.0} images/s)",
            cfg.kind,
            cfg.n,
            cfg.hidden,
            summary.count,
            args.split,
            summary.nll_nats,
            summary.std_err,
            summary.bits_per_dim,
            summary.seconds,
            summary.images_per_s()
        );
    }
    Ok(())
}

// Density evaluation allocates and frees (B, n, d) activations of ~150 MB per batch; glibc
// hands such blocks back to the kernel every time, and the page faults of re-mapping them cost
// a third of the run. mimalloc keeps and reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
