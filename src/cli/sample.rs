//! `nade sample`: images drawn from a checkpoint, one pixel at a time, as a PNG grid.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use nade::device::{self, DeviceChoice};
use nade::progress::Progress;
use nade::report::SampleReport;
use nade::sample::{self, WalkOrder};
use nade::tile_shape::TileShape;
use nade::{checkpoint, image_grid, io, memory};

use super::{positive, ThreadsArg};

#[derive(Args)]
pub struct SampleArgs {
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
    /// Draw each vector as H rows of W pixels (H x W must be the model's n); default: the
    /// most nearly square layout (28x28 for n = 784, 12x15 for 180, one row for a prime n).
    #[arg(long, value_name = "HxW")]
    shape: Option<TileShape>,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Images sampled together.
    #[arg(long, default_value_t = 100, value_parser = positive)]
    batch: usize,
    /// Print one JSON object instead of the line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    threads: ThreadsArg,
}

/// Images from which `nade sample` reports its progress (about a second of NADE-500 on 2 cores).
const LONG_SAMPLING: usize = 10_000;

pub fn run(args: SampleArgs) -> Result<()> {
    args.threads.apply()?;
    image_grid::check_png_name("--out", &args.out)?;
    io::check_folder_exists("--out", &args.out)?;
    if let Some(path) = &args.amat {
        io::check_folder_exists("--amat", path)?;
    }
    let device = device::select(args.device)?;
    let loaded = checkpoint::load(&args.checkpoint, &device, None)?;
    let model = loaded.model.as_ref();
    let cfg = model.config();
    let shape = TileShape::for_model(args.shape, cfg.n())?;
    let (width, height) = image_grid::check_size(
        sample::samples_grid_extent(args.count, shape, args.scale),
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
        &sample::samples_image(&samples, args.probs, shape, args.scale)?,
    )?;
    if let Some(path) = &args.amat {
        nade::data::amat::write_amat(path, &samples.images)?;
    }
    let report = SampleReport {
        model: cfg.kind().into(),
        checkpoint: args.checkpoint.display().to_string(),
        count: samples.count(),
        seed: args.seed,
        order: args.order.to_string(),
        seconds: samples.seconds,
        samples_per_s: samples.per_second(),
        device: device::name(&device).into(),
        out: args.out.display().to_string(),
        amat: args.amat.as_ref().map(|p| p.display().to_string()),
    };
    super::emit(&report, args.json)
}
