//! `nade bench`: throughput of eval, training and sampling, and peak memory.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use nade::bench;
use nade::device::{self, DeviceChoice};
use nade::models::ModelConfig;

use super::{positive, positive_seconds, ThreadsArg};

#[derive(Args)]
pub struct BenchArgs {
    #[arg(long, default_value = "nade", value_parser = clap::builder::PossibleValuesParser::new(ModelConfig::kinds()))]
    model: String,
    /// Hidden layer sizes, comma-separated for MADE and deep NADE [default: the kind's own,
    /// `nade kinds`: 500; deepnade: 500,500, the shipped model's].
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

pub fn run(args: BenchArgs) -> Result<()> {
    args.threads.apply()?;
    let device = device::select(args.device)?;
    let hidden = match args.hidden.is_empty() {
        false => args.hidden,
        true => ModelConfig::kind_named(&args.model)?.bench_layers.to_vec(),
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
    let json = args.json;
    let mut printed = Ok(());
    bench::run(&spec, &device, |result| {
        if printed.is_ok() {
            printed = super::emit(result, json);
        }
    })?;
    printed
}
