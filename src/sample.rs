//! Sequential sampling and completion (inpainting) with a model's [`SamplerState`].
//!
//! x_1 ~ Bern(sigmoid(l_1)), then x_2 | x_1, ...: n steps per batch, each costing one
//! conditional (NADE: O(B d)), in the model's [`Autoregressive::sample_batch`] (NADE's fused
//! sampler runs all n steps in one pass or one CUDA launch). The randomness is a seeded ChaCha8 stream drawn on the host,
//! `n` uniforms per image in image order, uploaded once per batch; x_i = 1 exactly when
//! u_i < sigmoid(l_i), compared on the device. Image r therefore always uses the same
//! uniforms whatever the batch size, and a seed gives the same images run to run on a given
//! device (other devices round the logits differently, which can flip a pixel whose u_i lies
//! within rounding of its p_i).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor};
use image::GrayImage;
use rand::seq::SliceRandom;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::BinaryDataset;
use crate::image_grid::{self, binary_tile, kept_tile, prob_tile};
use crate::keep::prefix_masks;
use crate::models::{self, Autoregressive, Evidence, Orders};
use crate::progress::Progress;
use crate::tile_shape::TileShape;

/// Images a batch holds when the caller does not say ([`write_sample_grid`]).
pub const DEFAULT_BATCH: usize = 100;
/// Upscaling of the grids written during training.
pub const DEFAULT_SCALE: u32 = 2;

/// Sampled images with the Bernoulli means they were drawn from.
#[derive(Clone, Debug)]
pub struct Samples {
    /// `count` binary vectors of length n.
    pub images: BinaryDataset,
    /// p(x_i = 1 | x_<i) of each image at each i, row-major (count, n).
    pub probs: Vec<f32>,
    /// Wall-clock seconds of the sampling (upload, n steps per batch, download).
    pub seconds: f64,
}

impl Samples {
    pub fn count(&self) -> usize {
        self.images.len()
    }

    pub fn per_second(&self) -> f64 {
        self.count() as f64 / self.seconds.max(1e-9)
    }

    /// The Bernoulli means of image `i`.
    pub fn probs_of(&self, i: usize) -> &[f32] {
        let n = self.images.n();
        &self.probs[i * n..(i + 1) * n]
    }
}

/// The order a sample or completion walks the pixels in (`--order`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkOrder {
    /// The model's own: its fixed order, a MADE mask's, or a stored ordering of a deep NADE
    /// (per image: uniform for a sample, by its posterior given the kept pixels for a
    /// completion).
    Stored,
    /// 0..n-1, row by row from the top left (order-agnostic models, or a model whose own
    /// order it is).
    Raster,
    /// A fresh uniformly random ordering per image (order-agnostic models only): row r's is
    /// a shuffle of 0..n from stream 2^62 + r of ChaCha8(seed) (stream 0 holds the uniforms,
    /// streams 1.. the masks of `--keep random:P`).
    Random,
}

impl std::str::FromStr for WalkOrder {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "stored" => Ok(WalkOrder::Stored),
            "raster" => Ok(WalkOrder::Raster),
            "random" => Ok(WalkOrder::Random),
            _ => Err(format!(
                "unknown order {s:?} (expected stored, raster or random)"
            )),
        }
    }
}

impl std::fmt::Display for WalkOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WalkOrder::Stored => "stored",
            WalkOrder::Raster => "raster",
            WalkOrder::Random => "random",
        })
    }
}

impl WalkOrder {
    /// What a model that conditions on any set ([`Orders::Any`]) completes in by default (a
    /// random ordering of the hidden pixels), and every other model (its own order).
    pub fn completion_default(model: &dyn Autoregressive) -> Self {
        match model.orders() {
            Orders::Any => WalkOrder::Random,
            _ => WalkOrder::Stored,
        }
    }

    /// An error unless `model` can walk in this order.
    fn check(self, model: &dyn Autoregressive) -> Result<()> {
        if self == WalkOrder::Random && model.orders() != Orders::Any {
            bail!(
                "--order random: a {} model samples in its own order only; order-agnostic models sample in any: {}",
                model.config().kind(),
                models::ModelConfig::any_order_kinds().join(", ")
            );
        }
        Ok(())
    }

    /// The per-row orders of rows [first, end) (Random), or None.
    fn row_orders(self, seed: u64, first: usize, end: usize, n: usize) -> Option<Vec<Vec<usize>>> {
        (self == WalkOrder::Random).then(|| {
            (first..end)
                .map(|r| {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed);
                    rng.set_stream((1u64 << 62) + r as u64);
                    let mut order: Vec<usize> = (0..n).collect();
                    order.shuffle(&mut rng);
                    order
                })
                .collect()
        })
    }
}

/// `count` images from `model` (whose tensors live on `device`), `batch` at a time.
pub fn sample(
    model: &dyn Autoregressive,
    count: usize,
    batch: usize,
    seed: u64,
    device: &Device,
) -> Result<Samples> {
    sample_with_progress(model, count, batch, seed, device, &Progress::Hidden)
}

/// [`sample`], advancing `progress` by the images of each finished batch.
pub fn sample_with_progress(
    model: &dyn Autoregressive,
    count: usize,
    batch: usize,
    seed: u64,
    device: &Device,
    progress: &Progress,
) -> Result<Samples> {
    sample_in_order(
        model,
        count,
        batch,
        seed,
        WalkOrder::Stored,
        device,
        progress,
    )
}

/// [`sample_with_progress`] walking the pixels in `order`.
pub fn sample_in_order(
    model: &dyn Autoregressive,
    count: usize,
    batch: usize,
    seed: u64,
    order: WalkOrder,
    device: &Device,
    progress: &Progress,
) -> Result<Samples> {
    order.check(model)?;
    let n = model.config().n();
    let raster: Vec<usize> = (0..n).collect();
    let start = Instant::now();
    let batches = batched(count, batch, device, progress, |first, end| {
        let none = Tensor::zeros((end - first, n), models::DTYPE, device)?;
        let u = Tensor::from_vec(uniforms(seed, first, end, n), (end - first, n), device)?;
        let row_orders = order.row_orders(seed, first, end, n);
        let drawn = model.sample_batch(&Evidence {
            kept: &none,
            observed: &none,
            uniforms: &u,
            order: (order == WalkOrder::Raster).then_some(&raster[..]),
            row_orders: row_orders.as_deref(),
        })?;
        Ok((
            to_binary(&drawn.values)?,
            drawn.probs.flatten_all()?.to_vec1::<f32>()?,
        ))
    })?;
    progress.finish();
    let mut pixels = Vec::with_capacity(count * n);
    let mut probs = Vec::with_capacity(count * n);
    for (x, p) in batches {
        pixels.extend(x);
        probs.extend(p);
    }
    Ok(Samples {
        images: BinaryDataset::new(n, pixels)?,
        probs,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Completions of every row of `given` that keep its first `keep` values: [`complete_with`]
/// with prefix masks.
pub fn complete(
    model: &dyn Autoregressive,
    given: &BinaryDataset,
    keep: usize,
    samples_per_image: usize,
    batch: usize,
    seed: u64,
    device: &Device,
) -> Result<BinaryDataset> {
    let masks = prefix_masks(given.n(), keep, given.len())?;
    complete_with(model, given, &masks, samples_per_image, batch, seed, device)
}

/// Completions of every row of `given`: where row r of `masks` is 1 the value is copied
/// (never sampled), the rest is drawn `samples_per_image` times given the kept values. Rows
/// come out image by image: the `samples_per_image` completions of row 0 first, then those of
/// row 1, ... A model with an order of its own conditions exactly only on prefixes of it;
/// any other kept set is an error that says so.
pub fn complete_with(
    model: &dyn Autoregressive,
    given: &BinaryDataset,
    masks: &BinaryDataset,
    samples_per_image: usize,
    batch: usize,
    seed: u64,
    device: &Device,
) -> Result<BinaryDataset> {
    let order = WalkOrder::Stored;
    complete_in_order(
        model,
        given,
        masks,
        samples_per_image,
        batch,
        seed,
        order,
        device,
    )
}

/// [`complete_with`] walking the hidden pixels in `order` (the kept ones are observed first).
#[allow(clippy::too_many_arguments)]
pub fn complete_in_order(
    model: &dyn Autoregressive,
    given: &BinaryDataset,
    masks: &BinaryDataset,
    samples_per_image: usize,
    batch: usize,
    seed: u64,
    order: WalkOrder,
    device: &Device,
) -> Result<BinaryDataset> {
    order.check(model)?;
    let n = model.config().n();
    let raster: Vec<usize> = (0..n).collect();
    if given.n() != n {
        bail!(
            "the data has {} dimensions per vector but the model has n = {n}",
            given.n()
        );
    }
    ensure!(
        masks.n() == n && masks.len() == given.len(),
        "{} masks of length {} for {} images of length {n}",
        masks.len(),
        masks.n(),
        given.len()
    );
    check_conditioning(model, masks)?;
    let total = given.len() * samples_per_image;
    let batches = batched(total, batch, device, &Progress::Hidden, |first, end| {
        let rows: Vec<usize> = (first..end).map(|r| r / samples_per_image).collect();
        let kept = given.tensor_rows(&rows, device)?;
        let observed = masks.tensor_rows(&rows, device)?;
        let u = Tensor::from_vec(uniforms(seed, first, end, n), (end - first, n), device)?;
        let row_orders = order.row_orders(seed, first, end, n);
        let drawn = model.sample_batch(&Evidence {
            kept: &kept,
            observed: &observed,
            uniforms: &u,
            order: (order == WalkOrder::Raster).then_some(&raster[..]),
            row_orders: row_orders.as_deref(),
        })?;
        to_binary(&drawn.values)
    })?;
    BinaryDataset::new(n, batches.concat())
}

/// Whether `model` can condition exactly on every kept set of `masks` (and so give
/// log p(x_kept) exactly); an error naming the first image whose kept set it cannot.
pub fn check_conditioning(model: &dyn Autoregressive, masks: &BinaryDataset) -> Result<()> {
    let own = model.orders();
    let orders = match &own {
        Orders::Fixed(order) => vec![order.clone()],
        Orders::Mixture(orders) => orders.clone(),
        Orders::Any => return Ok(()),
    };
    let natural = orders.len() == 1 && orders[0].iter().enumerate().all(|(t, &i)| t == i);
    for (r, mask) in masks.rows().enumerate() {
        let observed: Vec<bool> = mask.iter().map(|&v| v != 0).collect();
        if !own.conditions_on(&observed) {
            let order_name = if orders.len() > 1 {
                format!(
                    "the pixel order of every one of its {} components (masks, models)",
                    orders.len()
                )
            } else if natural {
                "its pixel order 0..n-1 (--keep first:K, or whole rows from the top: --keep top:R or --rows R)"
                    .to_string()
            } else {
                "its own pixel order".to_string()
            };
            let others = if models::ModelConfig::any_order_kinds().is_empty() {
                "no model of this build is (all of them have a fixed order)".to_string()
            } else {
                models::ModelConfig::any_order_kinds().join(", ")
            };
            bail!(
                "a {} model conditions exactly only on a prefix of {order_name}, and the kept pixels of image {r} are not one; other kept sets need an order-agnostic model: {others}",
                model.config().kind()
            );
        }
    }
    Ok(())
}

/// Threads that sample `batches` batches on `device` at once ([`batched`]).
pub fn workers(device: &Device, batches: usize) -> usize {
    if device.is_cpu() {
        // rayon's pool size: all cores, or `--threads`.
        crate::threads::current().min(batches)
    } else {
        1
    }
}

/// Runs `job(first, end)` for the batches [first, end) of `total` rows, in order of `first`
/// in the result, advancing `progress` by each finished batch's rows. On the CPU the batches
/// are spread over the cores (candle's element-wise CPU kernels, the sigmoid among them, run
/// on one thread); elsewhere they run one by one.
fn batched<T: Send>(
    total: usize,
    batch: usize,
    device: &Device,
    progress: &Progress,
    job: impl Fn(usize, usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    ensure!(batch > 0, "batch size must be positive");
    let starts: Vec<usize> = (0..total).step_by(batch).collect();
    let run = |first: usize| {
        let end = (first + batch).min(total);
        let result = job(first, end);
        if result.is_ok() {
            progress.inc(end - first);
        }
        result
    };
    let workers = workers(device, starts.len());
    if workers <= 1 {
        return starts.into_iter().map(run).collect();
    }
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Result<T>>>> = starts.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&first) = starts.get(k) else { break };
                let result = run(first);
                let failed = result.is_err();
                *slots[k].lock().expect("no panics while holding the lock") = Some(result);
                if failed {
                    // Let the other workers stop early too.
                    next.store(starts.len(), Ordering::Relaxed);
                }
            });
        }
    });
    let mut out = Vec::with_capacity(starts.len());
    for slot in slots {
        match slot.into_inner().expect("no panics while holding the lock") {
            Some(result) => out.push(result?),
            None => bail!("sampling stopped after an earlier batch failed"),
        }
    }
    Ok(out)
}

/// Uniforms on [0, 1) for rows [first, end) of the seed's stream, (end - first) * n
/// row-major. Value j of row r is the 32-bit word r n + j of ChaCha8(seed), top 24 bits,
/// so any batch can be drawn on its own and a row's numbers never depend on the batching.
fn uniforms(seed: u64, first: usize, end: usize, n: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_word_pos((first as u128) * (n as u128));
    (0..(end - first) * n)
        .map(|_| (rng.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32))
        .collect()
}

fn to_binary(x: &Tensor) -> Result<Vec<u8>> {
    Ok(x.flatten_all()?
        .to_vec1::<f32>()?
        .into_iter()
        .map(|v| u8::from(v > 0.5))
        .collect())
}

/// Values to keep for `--rows rows` of images laid out as `shape`.
pub fn kept_values(shape: TileShape, rows: usize) -> Result<usize> {
    let TileShape { height, width } = shape;
    if rows > height {
        bail!(
            "--rows {rows}: the images have only {height} rows of {width} pixels (n = {})",
            shape.pixels()
        );
    }
    Ok(rows * width)
}

/// Rows index, index + stride, ... (count of them) of the test split, with errors naming
/// the flags.
pub fn select_rows(
    data: &BinaryDataset,
    index: usize,
    count: usize,
    stride: usize,
) -> Result<BinaryDataset> {
    let len = data.len();
    ensure!(stride > 0, "--stride must be positive");
    if index >= len {
        bail!(
            "--index {index}: the test split has {len} images (indices 0..={})",
            len.saturating_sub(1)
        );
    }
    let last = index + (count - 1) * stride;
    if count == 0 || last >= len {
        bail!(
            "--index {index} --count {count} --stride {stride}: the test split has only {len} images, so at most {} from index {index}",
            (len - index).div_ceil(stride)
        );
    }
    let n = data.n();
    let rows = (0..count).flat_map(|k| data.row(index + k * stride).iter().copied());
    BinaryDataset::new(n, rows.collect())
}

/// Width and height in pixels of the grid of `count` sampled images drawn as `shape`
/// ([`samples_image`]), in u64: what [`image_grid::check_size`] judges before any sampling.
pub fn samples_grid_extent(count: usize, shape: TileShape, scale: u32) -> (u64, u64) {
    let columns = image_grid::near_square_columns(count);
    let rows = count.div_ceil(columns).max(1);
    image_grid::grid_extent(rows, columns, shape, scale)
}

/// Width and height in pixels of the grid of `images` completed images with `per_image`
/// completions each ([`completions_image`]).
pub fn completions_grid_extent(
    images: usize,
    per_image: usize,
    shape: TileShape,
    scale: u32,
) -> (u64, u64) {
    image_grid::grid_extent(images.max(1), per_image + 2, shape, scale)
}

/// The grid of sampled images, each drawn as `shape`: binary pixels, or with `probs` their
/// Bernoulli means.
pub fn samples_image(
    samples: &Samples,
    probs: bool,
    shape: TileShape,
    scale: u32,
) -> Result<GrayImage> {
    let tiles: Vec<Vec<u8>> = if probs {
        (0..samples.count())
            .map(|i| prob_tile(samples.probs_of(i)))
            .collect()
    } else {
        samples.images.rows().map(binary_tile).collect()
    };
    image_grid::render(
        &tiles,
        shape,
        image_grid::near_square_columns(tiles.len()),
        scale,
    )
}

/// One grid row per given image: the original, the kept part (the rest [`image_grid::HIDDEN`]),
/// then its completions (`completions` as [`complete_with`] returns them for `masks`), each
/// drawn as `shape`.
pub fn completions_image(
    given: &BinaryDataset,
    masks: &BinaryDataset,
    completions: &BinaryDataset,
    shape: TileShape,
    scale: u32,
) -> Result<GrayImage> {
    ensure!(
        !given.is_empty() && completions.len().is_multiple_of(given.len()),
        "{} completions do not split evenly over {} images",
        completions.len(),
        given.len()
    );
    let per_image = completions.len() / given.len();
    let mut tiles = Vec::with_capacity(given.len() * (per_image + 2));
    for (d, original) in given.rows().enumerate() {
        tiles.push(binary_tile(original));
        tiles.push(kept_tile(original, masks.row(d)));
        for k in 0..per_image {
            tiles.push(binary_tile(completions.row(d * per_image + k)));
        }
    }
    image_grid::render(&tiles, shape, per_image + 2, scale)
}

/// Samples `count` images with `seed` and writes them as a PNG grid to `path` (binary pixels,
/// upscaled [`DEFAULT_SCALE`] times, in the default layout [`TileShape::near_square`]): what
/// training writes every few epochs.
pub fn write_sample_grid(
    model: &dyn Autoregressive,
    count: usize,
    seed: u64,
    device: &Device,
    path: &Path,
) -> Result<()> {
    let samples = sample(model, count, count.clamp(1, DEFAULT_BATCH), seed, device)
        .with_context(|| format!("{}: cannot sample", path.display()))?;
    let shape = TileShape::near_square(model.config().n());
    let img = samples_image(&samples, false, shape, DEFAULT_SCALE)?;
    image_grid::write_png(path, &img)
}
