//! `nade info`: what a checkpoint holds.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct InfoArgs {
    /// A safetensors checkpoint.
    checkpoint: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: InfoArgs) -> Result<()> {
    super::emit(&nade::info::inspect(&args.checkpoint)?, args.json)
}
