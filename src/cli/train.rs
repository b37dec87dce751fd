//! `nade train`: a run file, the flags that override it, and the run.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use nade::config::Config;
use nade::device::DeviceChoice;
use nade::train_overrides::{ConfigSource, TrainOverrides};
use nade::{interrupt, threads, train};

use super::{positive, threads_parser};

#[derive(Args)]
pub struct TrainArgs {
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
    /// Override model.seed: the seed of MADE's masks and deep NADE's orderings (an
    /// independently drawn copy of the model, e.g. for `nade mix`).
    #[arg(long, value_name = "SEED", conflicts_with = "resume")]
    model_seed: Option<u64>,
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

impl TrainArgs {
    /// The run's config: the file's (or the interrupted run's), with the flags applied.
    fn config(&self) -> Result<Config> {
        TrainOverrides {
            config: self.config.clone().map(ConfigSource::File),
            resume: self.resume.clone(),
            epochs: self.epochs,
            seed: self.seed,
            model_seed: self.model_seed,
            valid_every: self.valid_every,
            device: self.device,
            out: self.out.clone(),
            data: self.data.clone(),
            dataset: self.dataset.clone(),
            threads: self.threads.map(|t| t as usize),
        }
        .resolve()
    }
}

pub fn run(args: TrainArgs) -> Result<()> {
    let config = args.config()?;
    threads::set(config.train.threads, "train.threads")?;
    interrupt::install()?;
    let opts = train::Options {
        resume: args.resume.is_some(),
        test: !args.no_test,
        force: args.force,
        ..Default::default()
    };
    // The banner and the epochs are printed as the run goes; the summary line last.
    super::emit(&train::run(&config, &opts)?, false)
}
