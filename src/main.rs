//! The `nade` command line: parse, dispatch, print errors. Each subcommand is a file in
//! src/cli/; the work lives in the library.

mod cli;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use nade::interrupt::{self, Interrupted};

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
    Train(cli::train::TrainArgs),
    /// Exact average negative log-likelihood of a checkpoint on a data split.
    Eval(cli::eval::EvalArgs),
    /// Draw images from a checkpoint, one pixel at a time, as a PNG grid.
    Sample(cli::sample::SampleArgs),
    /// Keep part of test images (top rows, or --keep SPEC) and let a checkpoint draw the rest.
    Complete(cli::complete::CompleteArgs),
    /// Throughput of eval, training and sampling (images/s) and peak memory.
    Bench(cli::bench::BenchArgs),
    /// What a checkpoint holds: model, config, parameters, tensors, metadata, epoch and NLLs.
    Info(cli::info::InfoArgs),
    /// The models this build knows: kind, summary, what they condition on, bench's layers.
    Kinds(cli::kinds::KindsArgs),
    /// Mix trained checkpoints of the same n into one: weights fit by EM on the validation split.
    Mix(cli::mix::MixArgs),
}

fn main() -> ExitCode {
    // candle attaches a backtrace to its errors whenever RUST_BACKTRACE is set (common in
    // developers' shells), and prints it inside the message: a one-line error would become
    // a hundred. RUST_LIB_BACKTRACE=0 turns those captures off and leaves panics' backtraces
    // to RUST_BACKTRACE; set RUST_LIB_BACKTRACE=1 to see them when debugging candle.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    nade::threads::quiet_candle_pool();
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
        Command::Train(args) => cli::train::run(args),
        Command::Eval(args) => cli::eval::run(args),
        Command::Sample(args) => cli::sample::run(args),
        Command::Complete(args) => cli::complete::run(args),
        Command::Bench(args) => cli::bench::run(args),
        Command::Info(args) => cli::info::run(args),
        Command::Kinds(args) => cli::kinds::run(args),
        Command::Mix(args) => cli::mix::run(args),
    }
}

// Density evaluation allocates and frees (B, n, d) activations of ~150 MB per batch; glibc
// hands such blocks back to the kernel every time, and the page faults of re-mapping them cost
// a third of the run. mimalloc keeps and reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
