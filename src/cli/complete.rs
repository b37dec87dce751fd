//! `nade complete`: keep part of test images and let a checkpoint draw the rest.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use nade::data::source::{load_split, SplitRead};
use nade::device::{self, DeviceChoice};
use nade::keep::{self, KeepSpec};
use nade::report::{CompletedImage, CompletionReport};
use nade::sample::{self, WalkOrder};
use nade::tile_shape::TileShape;
use nade::{checkpoint, image_grid, io, memory};

use super::{positive, DataArgs};

#[derive(Args)]
pub struct CompleteArgs {
    /// A safetensors checkpoint.
    checkpoint: PathBuf,
    /// Rows of each test image kept as given, from the top (28 pixels each for MNIST; rows of
    /// the --shape layout): the same as --keep top:R.
    #[arg(long, conflicts_with = "keep", required_unless_present = "keep")]
    rows: Option<usize>,
    /// The pixels kept as given: first:K or last:K (the first or last K values), random:P
    /// (each value with probability P, seeded by --seed), mask:PATH (a text file of 0/1
    /// values, 1 = kept, whitespace-separated like .amat: one row of n for every image, or
    /// --count rows, one per image), or rows and columns of the --shape layout: top:R,
    /// bottom:R, left:C, right:C, box:R0,C0,R1,C1 (rows R0..R1-1, columns C0..C1-1),
    /// hole:R0,C0,R1,C1 (all but that box). Models with a fixed pixel order (fvsbn, mlp, nade)
    /// condition only on a prefix of it: first:K or top:R.
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
    /// Draw each vector as H rows of W pixels (H x W must be the model's n), the rows and
    /// columns that --rows and --keep top, bottom, left, right, box and hole name; default:
    /// the most nearly square layout (28x28 for n = 784, 12x15 for 180, one row for a prime n).
    #[arg(long, value_name = "HxW")]
    shape: Option<TileShape>,
    #[command(flatten)]
    data: DataArgs,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Images completed together.
    #[arg(long, default_value_t = 100, value_parser = positive)]
    batch: usize,
    #[command(flatten)]
    threads: super::ThreadsArg,
}

pub fn run(args: CompleteArgs) -> Result<()> {
    args.threads.apply()?;
    image_grid::check_png_name("--out", &args.out)?;
    io::check_folder_exists("--out", &args.out)?;
    if let Some(path) = &args.amat {
        io::check_folder_exists("--amat", path)?;
    }
    let device = device::select(args.device)?;
    let loaded = checkpoint::load(&args.checkpoint, &device, None)?;
    let model = loaded.model.as_ref();
    let n = model.config().n();
    let shape = TileShape::for_model(args.shape, n)?;
    let spec = match (args.keep, args.rows) {
        (Some(spec), _) => spec,
        (None, Some(rows)) => {
            sample::kept_values(shape, rows)?;
            KeepSpec::Top(rows)
        }
        (None, None) => anyhow::bail!("complete: give --rows R or --keep SPEC ({})", keep::GRAMMAR),
    };
    let (width, height) = image_grid::check_size(
        sample::completions_grid_extent(args.count, args.samples, shape, args.scale),
        &format!(
            "--count {} --samples {} --scale {}",
            args.count, args.samples, args.scale
        ),
    )?;
    let source = args.data.source_for(loaded.trained_dataset());
    let read = SplitRead::of(&source, None)?;
    let test = load_split(&source, read.split())?;
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
    let masks = spec.masks(shape, given.len(), args.seed)?;
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
        &sample::completions_image(&given, &masks, &completions, shape, args.scale)?,
    )?;
    if let Some(path) = &args.amat {
        nade::data::amat::write_amat(path, &completions)?;
    }
    // log p(x_kept) costs an evaluation of the kept parts: only where it is printed.
    let kept = match args.json {
        true => model.kept_log_prob(
            &given.tensor_range(0, given.len(), &device)?,
            &masks.tensor_range(0, masks.len(), &device)?,
        )?,
        false => None,
    };
    let images = (0..given.len())
        .map(|i| CompletedImage {
            index: args.index + i * args.stride,
            kept_pixels: masks.row(i).iter().filter(|&&v| v != 0).count(),
            log_p_kept_first: kept.as_ref().map(|k| k.first[i]),
            log_p_kept: kept.as_ref().map(|k| k.model[i]),
        })
        .collect();
    let report = CompletionReport {
        model: model.config().kind().into(),
        checkpoint: args.checkpoint.display().to_string(),
        keep: spec.to_string(),
        order: order.to_string(),
        orders: kept.as_ref().map(|k| k.components),
        samples: args.samples,
        seed: args.seed,
        out: args.out.display().to_string(),
        images,
        read: read.images(),
        index: args.index,
        stride: args.stride,
        completions: completions.len(),
    };
    super::emit(&report, args.json)
}
