//! Sequential sampling and completion (inpainting) with a model's [`SamplerState`].
//!
//! x_1 ~ Bern(sigmoid(l_1)), then x_2 | x_1, ...: n steps per batch, each costing one
//! conditional (NADE: O(B d)). The randomness is a seeded ChaCha8 stream drawn on the host,
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
use candle_core::{DType, Device, Tensor};
use candle_nn::ops::sigmoid;
use image::GrayImage;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::checkpoint::write_atomically;
use crate::data::BinaryDataset;
use crate::image_grid::{self, binary_tile, kept_tile, prob_tile, tile_shape};
use crate::models::Autoregressive;

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

/// `count` images from `model` (whose tensors live on `device`), `batch` at a time.
pub fn sample(
    model: &dyn Autoregressive,
    count: usize,
    batch: usize,
    seed: u64,
    device: &Device,
) -> Result<Samples> {
    let n = model.config().n;
    let start = Instant::now();
    let batches = batched(count, batch, device, |first, end| {
        let u = uniforms(seed, first, end, n);
        if let Some(fused) = model.sample_fused(&[], 0, &u) {
            let fused = fused?;
            return Ok((fused.values, fused.probs));
        }
        let u = Tensor::from_vec(u, (end - first, n), device)?;
        let (x, p) = run_batch(model, None, &u)?;
        Ok((to_binary(&x)?, p.flatten_all()?.to_vec1::<f32>()?))
    })?;
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

/// Completions of every row of `given`: its first `keep` values are copied (never sampled),
/// the rest drawn `samples_per_image` times. Rows come out digit by digit: the
/// `samples_per_image` completions of row 0 first, then those of row 1, ...
pub fn complete(
    model: &dyn Autoregressive,
    given: &BinaryDataset,
    keep: usize,
    samples_per_image: usize,
    batch: usize,
    seed: u64,
    device: &Device,
) -> Result<BinaryDataset> {
    let n = model.config().n;
    if given.n() != n {
        bail!(
            "the data has {} dimensions per vector but the model has n = {n}",
            given.n()
        );
    }
    ensure!(
        keep <= n,
        "cannot keep {keep} values of vectors of length {n}"
    );
    let total = given.len() * samples_per_image;
    let batches = batched(total, batch, device, |first, end| {
        let rows: Vec<usize> = (first..end).map(|r| r / samples_per_image).collect();
        let sampled = if keep < n {
            let u = uniforms(seed, first, end, n);
            let kept: Vec<u8> = rows
                .iter()
                .flat_map(|&r| &given.row(r)[..keep])
                .copied()
                .collect();
            match model.sample_fused(&kept, keep, &u) {
                Some(fused) => fused?.values,
                None => {
                    let u = Tensor::from_vec(u, (end - first, n), device)?;
                    let kept = given.tensor_rows(&rows, device)?.narrow(1, 0, keep)?;
                    let (x, _) = run_batch(model, Some(&kept), &u)?;
                    to_binary(&x)?
                }
            }
        } else {
            Vec::new()
        };
        let width = n - keep;
        let mut pixels = Vec::with_capacity(rows.len() * n);
        for (j, &r) in rows.iter().enumerate() {
            pixels.extend_from_slice(&given.row(r)[..keep]);
            pixels.extend_from_slice(&sampled[j * width..(j + 1) * width]);
        }
        Ok(pixels)
    })?;
    BinaryDataset::new(n, batches.concat())
}

/// Runs `job(first, end)` for the batches [first, end) of `total` rows, in order of `first`
/// in the result. On the CPU the batches are spread over the cores (candle's element-wise
/// CPU kernels, the sigmoid among them, run on one thread); elsewhere they run one by one.
fn batched<T: Send>(
    total: usize,
    batch: usize,
    device: &Device,
    job: impl Fn(usize, usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    ensure!(batch > 0, "batch size must be positive");
    let starts: Vec<usize> = (0..total).step_by(batch).collect();
    let run = |first: usize| job(first, (first + batch).min(total));
    let workers = if device.is_cpu() {
        std::thread::available_parallelism()
            .map_or(1, |p| p.get())
            .min(starts.len())
    } else {
        1
    };
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

/// One batch: feeds `kept` (B, k) if any, then samples dimensions k..n with the uniforms
/// `u` (B, n) (columns < k unused). Returns the sampled columns (B, n - k) and their
/// Bernoulli means, both f32 on the device.
fn run_batch(
    model: &dyn Autoregressive,
    kept: Option<&Tensor>,
    u: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (rows, n) = u.dims2()?;
    let mut state = model.sampler(rows)?;
    if let Some(kept) = kept.filter(|k| k.dims()[1] > 0) {
        state.observe_many(kept)?;
    }
    let start = state.position();
    let mut xs = Vec::with_capacity(n - start);
    let mut ps = Vec::with_capacity(n - start);
    for i in start..n {
        let p = sigmoid(&state.logits()?)?; // (B, 1)
        let x = u.narrow(1, i, 1)?.lt(&p)?.to_dtype(DType::F32)?;
        state.observe(&x)?;
        xs.push(x);
        ps.push(p);
    }
    Ok((Tensor::cat(&xs, 1)?, Tensor::cat(&ps, 1)?))
}

fn to_binary(x: &Tensor) -> Result<Vec<u8>> {
    Ok(x.flatten_all()?
        .to_vec1::<f32>()?
        .into_iter()
        .map(|v| u8::from(v > 0.5))
        .collect())
}

/// Values to keep for `--rows rows` of an n-dimensional image ([`tile_shape`] rows).
pub fn kept_values(n: usize, rows: usize) -> Result<usize> {
    let (height, width) = tile_shape(n);
    if rows > height {
        bail!("--rows {rows}: the images have only {height} rows of {width} pixels (n = {n})");
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

/// The grid of sampled images: binary pixels, or with `probs` their Bernoulli means.
pub fn samples_image(samples: &Samples, probs: bool, scale: u32) -> Result<GrayImage> {
    let shape = tile_shape(samples.images.n());
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
/// then its completions (`completions` as [`complete`] returns them).
pub fn completions_image(
    given: &BinaryDataset,
    keep: usize,
    completions: &BinaryDataset,
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
        tiles.push(kept_tile(original, keep));
        for k in 0..per_image {
            tiles.push(binary_tile(completions.row(d * per_image + k)));
        }
    }
    image_grid::render(&tiles, tile_shape(given.n()), per_image + 2, scale)
}

/// `.amat` text: one vector per line, values 0 or 1 separated by single spaces.
pub fn amat_text(data: &BinaryDataset) -> String {
    let mut text = String::with_capacity(data.pixels().len() * 2);
    for row in data.rows() {
        for (j, v) in row.iter().enumerate() {
            if j > 0 {
                text.push(' ');
            }
            text.push(if *v != 0 { '1' } else { '0' });
        }
        text.push('\n');
    }
    text
}

/// Writes `data` as `.amat` text to `path` atomically.
pub fn write_amat(path: &Path, data: &BinaryDataset) -> Result<()> {
    write_atomically(path, amat_text(data).as_bytes())
}

/// Samples `count` images with `seed` and writes them as a PNG grid to `path` (binary pixels,
/// upscaled [`DEFAULT_SCALE`] times): what training writes every few epochs.
pub fn write_sample_grid(
    model: &dyn Autoregressive,
    count: usize,
    seed: u64,
    device: &Device,
    path: &Path,
) -> Result<()> {
    let samples = sample(model, count, count.clamp(1, DEFAULT_BATCH), seed, device)
        .with_context(|| format!("{}: cannot sample", path.display()))?;
    let img = samples_image(&samples, false, DEFAULT_SCALE)?;
    image_grid::write_png(path, &img)
}
