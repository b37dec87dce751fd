//! Exact average negative log-likelihood of a model over a data set.

use std::io::IsTerminal;
use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};

use crate::data::BinaryDataset;
use crate::models::Autoregressive;
use crate::progress::Progress;

/// NLL statistics over every image of a data set.
#[derive(Clone, Debug, PartialEq)]
pub struct NllSummary {
    pub count: usize,
    /// Mean -log p(x) in nats per image.
    pub nll_nats: f64,
    /// Standard error of that mean (sample standard deviation / sqrt(count)).
    pub std_err: f64,
    /// nll_nats / (n ln 2).
    pub bits_per_dim: f64,
    pub seconds: f64,
}

impl NllSummary {
    pub fn images_per_s(&self) -> f64 {
        self.count as f64 / self.seconds.max(1e-9)
    }
}

/// What every evaluation needs: a positive batch, data of the model's width, some data.
fn check_inputs(model: &dyn Autoregressive, data: &BinaryDataset, batch: usize) -> Result<()> {
    if batch == 0 {
        bail!("batch size must be positive");
    }
    if data.n() != model.config().n() {
        bail!(
            "the data has {} dimensions per vector but the model has n = {}",
            data.n(),
            model.config().n()
        );
    }
    if data.is_empty() {
        bail!("the data set is empty");
    }
    Ok(())
}

/// Per-image log p(x) of every row, accumulated batch by batch; sums run in f64 on the host so
/// the mean over 10,000 images loses nothing to f32 rounding. With `progress`, a bar on a
/// terminal and plain lines on stderr otherwise (a deep NADE ensemble takes minutes).
pub fn nll(
    model: &dyn Autoregressive,
    data: &BinaryDataset,
    batch: usize,
    device: &Device,
    progress: bool,
) -> Result<NllSummary> {
    check_inputs(model, data, batch)?;
    let terminal = std::io::stderr().is_terminal();
    let lines = if progress && !terminal {
        Progress::lines("evaluated", "images", data.len())
    } else {
        Progress::Hidden
    };
    let bar = if progress && terminal {
        ProgressBar::new(data.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "eval {bar:40} {pos}/{len} images [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("static template"),
    );
    let start = Instant::now();
    let (mut sum, mut sum_sq) = (0.0f64, 0.0f64);
    let mut not_finite = None;
    log_probs(model, data, batch, device, |first, log_p| {
        for (offset, &lp) in log_p.iter().enumerate() {
            let v = -(lp as f64);
            if !v.is_finite() {
                not_finite.get_or_insert(first + offset);
            }
            sum += v;
            sum_sq += v * v;
        }
        let last = first + log_p.len();
        bar.set_position(last as u64);
        lines.inc(log_p.len());
        bar.set_message(format!("NLL {:.3}", sum / last as f64));
    })?;
    if let Some(image) = not_finite {
        bail!("log p(x) is not finite for image {image} of the data set");
    }
    bar.finish_and_clear();
    let count = data.len() as f64;
    let mean = sum / count;
    let variance = if data.len() > 1 {
        (sum_sq - count * mean * mean).max(0.0) / (count - 1.0)
    } else {
        0.0
    };
    Ok(NllSummary {
        count: data.len(),
        nll_nats: mean,
        std_err: (variance / count).sqrt(),
        bits_per_dim: mean / (data.n() as f64 * std::f64::consts::LN_2),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// log p(x) of every image of `data`, in order, `batch` images at a time through the model's
/// evaluator (f32 per image, as every evaluation reports it); `batch_done` hears each batch's
/// first row and values as they come. [`nll`] and the Python package's `Model.log_prob`.
pub fn log_probs(
    model: &dyn Autoregressive,
    data: &BinaryDataset,
    batch: usize,
    device: &Device,
    mut batch_done: impl FnMut(usize, &[f32]),
) -> Result<Vec<f32>> {
    check_inputs(model, data, batch)?;
    let evaluator = crate::models::evaluator(model)?;
    let mut out = Vec::with_capacity(data.len());
    for first in (0..data.len()).step_by(batch) {
        let last = (first + batch).min(data.len());
        let x = data.tensor_range(first, last, device)?;
        let log_p = evaluator.log_prob(&x)?.to_dtype(candle_core::DType::F32)?;
        let log_p = log_p.to_vec1::<f32>()?;
        batch_done(first, &log_p);
        out.extend(log_p);
    }
    Ok(out)
}

/// -log p(x_kept) over a data set ([`kept_nll`]).
#[derive(Clone, Debug, PartialEq)]
pub struct KeptNll {
    /// Under the whole model (deep NADE: the ensemble of its orderings).
    pub whole: NllSummary,
    /// Under its first component alone (deep NADE: the first ordering, restricted).
    pub first: NllSummary,
    /// The kept pixels of all images together; `bits_per_dim` divides by them (by 1 when
    /// there are none: then it means nothing, see [`KeptNll::bits_per_kept_pixel`]).
    pub kept_pixels: usize,
}

impl KeptNll {
    /// Bits per kept pixel under the whole model; None when nothing is kept (0 / 0).
    pub fn bits_per_kept_pixel(&self) -> Option<f64> {
        (self.kept_pixels > 0).then_some(self.whole.bits_per_dim)
    }
}

/// -log p(x_kept) per image over a data set, `masks` row r (1 = kept) for image r: under the
/// whole model and under its first component (deep NADE: the ensemble, and the first
/// ordering restricted to the kept set), exactly ([`Autoregressive::kept_log_prob`]): any
/// kept set for an order-agnostic model, a prefix of its order for the others. An error for
/// a kept set the model cannot score exactly.
pub fn kept_nll(
    model: &dyn Autoregressive,
    data: &BinaryDataset,
    masks: &BinaryDataset,
    batch: usize,
    device: &Device,
    progress: bool,
) -> Result<KeptNll> {
    check_inputs(model, data, batch)?;
    if masks.n() != data.n() || masks.len() != data.len() {
        bail!(
            "{} masks of length {} for {} images of length {} (the model has n = {})",
            masks.len(),
            masks.n(),
            data.len(),
            data.n(),
            model.config().n()
        );
    }
    crate::sample::check_conditioning(model, masks)?;
    let lines = if progress {
        Progress::to_stderr("evaluated", "images", data.len())
    } else {
        Progress::Hidden
    };
    let start = Instant::now();
    let (mut whole, mut first) = (Vec::new(), Vec::new());
    for begin in (0..data.len()).step_by(batch) {
        let end = (begin + batch).min(data.len());
        let x = data.tensor_range(begin, end, device)?;
        let m = masks.tensor_range(begin, end, device)?;
        let Some(kept) = model.kept_log_prob(&x, &m)? else {
            bail!(
                "a {} model cannot give log p(x_kept) exactly for these kept sets (order-agnostic models can: {})",
                model.config().kind(),
                crate::models::ModelConfig::any_order_kinds().join(", ")
            );
        };
        // 0 - lp: nothing kept scores 0 nats, not -0.
        whole.extend(kept.model.iter().map(|lp| 0.0 - lp));
        first.extend(kept.first.iter().map(|lp| 0.0 - lp));
        lines.inc(end - begin);
    }
    lines.finish();
    let kept_pixels: usize = masks
        .rows()
        .map(|row| row.iter().filter(|&&v| v != 0).count())
        .sum();
    let seconds = start.elapsed().as_secs_f64();
    let summary = |values: &[f64]| summary_of(values, kept_pixels.max(1), seconds);
    Ok(KeptNll {
        whole: summary(&whole),
        first: summary(&first),
        kept_pixels,
    })
}

/// The statistics of per-image NLLs; bits per dimension divide their sum by `dimensions`
/// (all the images' scored dimensions together) and ln 2.
/// The mean of `values` and its standard error (sample standard deviation / sqrt(count); 0 for
/// one value).
fn mean_and_std_err(values: &[f64]) -> (f64, f64) {
    let count = values.len() as f64;
    let mean = values.iter().sum::<f64>() / count;
    let variance = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (count - 1.0)
    } else {
        0.0
    };
    (mean, (variance / count).sqrt())
}

fn summary_of(values: &[f64], dimensions: usize, seconds: f64) -> NllSummary {
    let count = values.len() as f64;
    let (mean, std_err) = mean_and_std_err(values);
    NllSummary {
        count: values.len(),
        nll_nats: mean,
        std_err,
        bits_per_dim: mean * count / (dimensions as f64 * std::f64::consts::LN_2),
        seconds,
    }
}

/// The component counts of a curve over K components: 1, 2, 4, ... below K, then K.
pub fn curve_points(components: usize) -> Vec<usize> {
    let mut ks: Vec<usize> = std::iter::successors(Some(1usize), |k| k.checked_mul(2))
        .take_while(|&k| k < components)
        .collect();
    ks.push(components);
    ks
}

/// What one pass over the data says about a mixture (made: masks, deepnade: orderings).
#[derive(Clone, Debug, PartialEq)]
pub struct MixtureCurve {
    /// The NLL of the mixture of the first k components for every k of [`curve_points`];
    /// the last point is the whole model.
    pub points: Vec<(usize, NllSummary)>,
    /// Mean NLL over the images of each component alone (deep NADE: under each stored ordering
    /// by itself), in storage order.
    pub each: Vec<f64>,
}

impl MixtureCurve {
    /// The mean over components of their NLLs alone, and its standard error over components
    /// (sample standard deviation / sqrt(K); 0 for one component): the "one ordering" figure of
    /// Uria et al., who report the mean of single orderings' test NLLs with its standard error.
    pub fn mean_of_each(&self) -> (f64, f64) {
        mean_and_std_err(&self.each)
    }
}

/// The NLL of the mixture of a model's first k components for every k of [`curve_points`], and
/// of each component alone, from one pass over the data
/// ([`Autoregressive::component_log_probs`]: a 128-ordering deep NADE costs what its one
/// ensemble evaluation costs, not twice that). An error for a model that is not a mixture.
pub fn mixture_curve(
    model: &dyn Autoregressive,
    data: &BinaryDataset,
    batch: usize,
    device: &Device,
    progress: bool,
) -> Result<MixtureCurve> {
    check_inputs(model, data, batch)?;
    let lines = if progress {
        Progress::to_stderr("evaluated", "images", data.len())
    } else {
        Progress::Hidden
    };
    let start = Instant::now();
    let mut per_k: Vec<(usize, Vec<f64>)> = Vec::new();
    // Sum over images of -log p_k(x) for each component k, in f64.
    let mut each: Vec<f64> = Vec::new();
    let evaluator = crate::models::evaluator(model)?;
    for first in (0..data.len()).step_by(batch) {
        let last = (first + batch).min(data.len());
        let x = data.tensor_range(first, last, device)?;
        let Some(rows) = evaluator.component_log_probs(&x)? else {
            bail!(
                "the curve over components is for made (masks) and deepnade (orderings), uniform mixtures: a {} model is neither",
                model.config().kind()
            );
        };
        for (offset, components) in rows.iter().enumerate() {
            if per_k.is_empty() {
                per_k = curve_points(components.len())
                    .into_iter()
                    .map(|k| (k, Vec::with_capacity(data.len())))
                    .collect();
                each = vec![0.0; components.len()];
            }
            for (k, values) in per_k.iter_mut() {
                let v = -crate::models::log_mean_exp(&components[..*k]);
                if !v.is_finite() {
                    bail!(
                        "log p(x) is not finite for image {} of the data set",
                        first + offset
                    );
                }
                values.push(v);
            }
            for (sum, log_p) in each.iter_mut().zip(components) {
                *sum -= log_p;
            }
        }
        lines.inc(last - first);
    }
    lines.finish();
    let seconds = start.elapsed().as_secs_f64();
    let images = data.len() as f64;
    Ok(MixtureCurve {
        points: per_k
            .iter()
            .map(|(k, values)| (*k, summary_of(values, values.len() * data.n(), seconds)))
            .collect(),
        each: each.iter().map(|sum| sum / images).collect(),
    })
}
