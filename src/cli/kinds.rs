//! `nade kinds`: the models this build knows (the registry).

use anyhow::Result;
use clap::Args;

use nade::models::REGISTRY;
use nade::report::KindsReport;

#[derive(Args)]
pub struct KindsArgs {
    /// Print one JSON array instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: KindsArgs) -> Result<()> {
    super::emit(&KindsReport(REGISTRY.to_vec()), args.json)
}
