//! What each command reports: one `#[derive(Serialize)]` struct per command, printed by the CLI
//! as JSON (`--json`: the struct as it is) or as text ([`Report::text`]). The JSON field names
//! are the program's interface (docs/cli.md lists them); the text is for people.

use serde::Serialize;

use crate::bench::BenchResult;
use crate::eval::{KeptNll, MixtureCurve, NllSummary};
use crate::info::Info;
use crate::models::{Kind, ModelConfig};
use crate::progress::rate_text;
use crate::train::Summary;

/// A command's result, as JSON or as text.
pub trait Report: Serialize {
    /// The lines a person reads, each ending in a newline.
    fn text(&self) -> String;
}

/// What an evaluation scored: the model, the data and where it ran (the fields `nade eval`
/// reports in every mode).
#[derive(Clone, Debug, Serialize)]
pub struct Evaluated {
    pub model: String,
    pub checkpoint: String,
    pub n: usize,
    pub config: ModelConfig,
    pub orders: Option<usize>,
    /// The split read, or None for one file named by `--data` (`data` names it).
    pub split: Option<String>,
    /// The file read.
    pub data: String,
    pub device: String,
    /// CPU threads (rayon's pool; `--threads`).
    pub threads: usize,
    /// "nade (n = 784, hidden = 500)", for the text.
    #[serde(skip)]
    pub describe: String,
    /// What was read, for the text: "test images", "images of FILE".
    #[serde(skip)]
    pub images: String,
}

/// `nade eval`: the exact NLL of a checkpoint on a data set.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    #[serde(flatten)]
    pub evaluated: Evaluated,
    /// The one-hidden-layer models' width (0 for the others: `config` says their layers).
    pub hidden: usize,
    pub masks: Option<usize>,
    pub kernel: Option<String>,
    pub count: usize,
    pub nll_nats: f64,
    pub nll_std_err: f64,
    pub bits_per_dim: f64,
    pub seconds: f64,
    pub images_per_s: f64,
    /// With `--curve`: the mixture of the first 1, 2, 4, ... components.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub curve: Option<Vec<CurvePoint>>,
    /// With `--curve`: each component alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub each_component: Option<EachComponent>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CurvePoint {
    pub components: usize,
    pub nll_nats: f64,
    pub nll_std_err: f64,
    pub bits_per_dim: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct EachComponent {
    pub components: usize,
    /// Per component, in storage order.
    pub nll_nats: Vec<f64>,
    /// Their mean and its standard error over components (deep NADE: the "one ordering"
    /// figure of Uria et al.).
    pub mean_nll_nats: f64,
    pub mean_std_err: f64,
}

impl EvalReport {
    /// The report of `model` on `evaluated`'s data: the whole model's summary, and with a
    /// curve the curve and each component's NLL.
    pub fn new(
        evaluated: Evaluated,
        model: &ModelConfig,
        summary: &NllSummary,
        curve: Option<&MixtureCurve>,
    ) -> Self {
        Self {
            evaluated,
            hidden: model.hidden().unwrap_or(0),
            masks: model.masks_used(),
            kernel: model.kernel_name(),
            count: summary.count,
            nll_nats: summary.nll_nats,
            nll_std_err: summary.std_err,
            bits_per_dim: summary.bits_per_dim,
            seconds: summary.seconds,
            images_per_s: summary.images_per_s(),
            curve: curve.map(|c| {
                c.points
                    .iter()
                    .map(|(k, s)| CurvePoint {
                        components: *k,
                        nll_nats: s.nll_nats,
                        nll_std_err: s.std_err,
                        bits_per_dim: s.bits_per_dim,
                    })
                    .collect()
            }),
            each_component: curve.map(|c| {
                let (mean, std_err) = c.mean_of_each();
                EachComponent {
                    components: c.each.len(),
                    nll_nats: c.each.clone(),
                    mean_nll_nats: mean,
                    mean_std_err: std_err,
                }
            }),
        }
    }
}

impl Report for EvalReport {
    fn text(&self) -> String {
        let mut out = String::new();
        if let (Some(curve), Some(each)) = (&self.curve, &self.each_component) {
            for p in curve {
                out += &format!(
                    "first {} components: NLL {:.4} ± {:.4} nats\n",
                    p.components, p.nll_nats, p.nll_std_err
                );
            }
            let (lo, hi) = each
                .nll_nats
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                });
            out += &format!(
                "each of the {} components alone: mean NLL {:.4} ± {:.4} nats over components (from {lo:.4} to {hi:.4})\n",
                each.components, each.mean_nll_nats, each.mean_std_err
            );
        }
        out += &format!(
            "{} on {} {}: NLL {:.4} ± {:.4} nats, {:.5} bits/dim ({:.1} s, {} images/s)\n",
            self.evaluated.describe,
            self.count,
            self.evaluated.images,
            self.nll_nats,
            self.nll_std_err,
            self.bits_per_dim,
            self.seconds,
            rate_text(self.images_per_s)
        );
        out
    }
}

/// `nade eval --keep SPEC`: -log p(x_kept) under the model and its first component.
#[derive(Clone, Debug, Serialize)]
pub struct KeptReport {
    #[serde(flatten)]
    pub evaluated: Evaluated,
    pub keep: String,
    pub seed: u64,
    pub count: usize,
    pub kept_nll_nats: f64,
    pub kept_nll_std_err: f64,
    pub kept_pixels: usize,
    /// Per kept pixel; None when nothing is kept (0 / 0).
    pub kept_bits_per_dim: Option<f64>,
    pub kept_nll_first_nats: f64,
    pub kept_nll_first_std_err: f64,
    pub seconds: f64,
}

impl KeptReport {
    pub fn new(evaluated: Evaluated, keep: String, seed: u64, kept: &KeptNll) -> Self {
        Self {
            evaluated,
            keep,
            seed,
            count: kept.whole.count,
            kept_nll_nats: kept.whole.nll_nats,
            kept_nll_std_err: kept.whole.std_err,
            kept_pixels: kept.kept_pixels,
            kept_bits_per_dim: kept.bits_per_kept_pixel(),
            kept_nll_first_nats: kept.first.nll_nats,
            kept_nll_first_std_err: kept.first.std_err,
            seconds: kept.whole.seconds,
        }
    }
}

impl Report for KeptReport {
    fn text(&self) -> String {
        let per_pixel = match self.kept_bits_per_dim {
            Some(bits) => format!("{bits:.5} bits per kept pixel"),
            None => "no pixel kept".to_string(),
        };
        format!(
            "{} on {} {} keeping {}: -log p(x_kept) {:.4} ± {:.4} nats ({per_pixel}; first component alone {:.4} ± {:.4}) ({:.1} s)\n",
            self.evaluated.describe,
            self.count,
            self.evaluated.images,
            self.keep,
            self.kept_nll_nats,
            self.kept_nll_std_err,
            self.kept_nll_first_nats,
            self.kept_nll_first_std_err,
            self.seconds
        )
    }
}

/// `nade sample`: how many images, how fast, where the grid went.
#[derive(Clone, Debug, Serialize)]
pub struct SampleReport {
    pub model: String,
    pub checkpoint: String,
    pub count: usize,
    pub seed: u64,
    pub order: String,
    pub seconds: f64,
    pub samples_per_s: f64,
    pub device: String,
    pub out: String,
    pub amat: Option<String>,
}

impl Report for SampleReport {
    fn text(&self) -> String {
        format!(
            "{} samples in {:.2} s ({:.0} samples/s on {}): {}\n",
            self.count, self.seconds, self.samples_per_s, self.device, self.out
        )
    }
}

/// `nade complete`: the completions and, per image, log p(x_kept) where the model gives it.
#[derive(Clone, Debug, Serialize)]
pub struct CompletionReport {
    pub model: String,
    pub checkpoint: String,
    pub keep: String,
    pub order: String,
    /// The components log p(x_kept) mixes (deep NADE's orderings, MADE's masks).
    pub orders: Option<usize>,
    pub samples: usize,
    pub seed: u64,
    pub out: String,
    pub images: Vec<CompletedImage>,
    /// What was completed: "test images", "images of FILE".
    #[serde(skip)]
    pub read: String,
    #[serde(skip)]
    pub index: usize,
    #[serde(skip)]
    pub stride: usize,
    #[serde(skip)]
    pub completions: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct CompletedImage {
    pub index: usize,
    pub kept_pixels: usize,
    /// Under the first component (deep NADE: the first ordering restricted to the kept set).
    pub log_p_kept_first: Option<f64>,
    pub log_p_kept: Option<f64>,
}

impl Report for CompletionReport {
    fn text(&self) -> String {
        format!(
            "{} completions of {} {} from index {} (stride {}) keeping {}: {}\n",
            self.completions,
            self.images.len(),
            self.read,
            self.index,
            self.stride,
            self.keep,
            self.out
        )
    }
}

/// `nade kinds`: the registry.
#[derive(Clone, Debug, Serialize)]
#[serde(transparent)]
pub struct KindsReport(pub Vec<&'static Kind>);

impl Report for KindsReport {
    fn text(&self) -> String {
        self.0
            .iter()
            .map(|kind| {
                let conditions = match kind.any_order {
                    true => "any kept set",
                    false => "prefixes of its order",
                };
                format!(
                    "{:9} {} (conditions on {conditions}; bench: hidden {})\n",
                    kind.name,
                    kind.summary,
                    layers_text(kind.bench_layers)
                )
            })
            .collect()
    }
}

impl Report for Summary {
    fn text(&self) -> String {
        let selected = format!(
            "{} (epoch {} of {}, valid {:.4})",
            self.best_checkpoint.display(),
            self.best_epoch,
            self.epochs_run,
            self.valid_nll
        );
        match (self.test_nll, self.test_nll_std_err, self.test_bits_per_dim) {
            (Some(nll), Some(err), Some(bpd)) => {
                format!("test NLL {nll:.4} ± {err:.4} nats, {bpd:.5} bits/dim: {selected}\n")
            }
            _ => format!("selected {selected}; test set not evaluated (--no-test)\n"),
        }
    }
}

impl Report for BenchResult {
    fn text(&self) -> String {
        format!(
            "{:5} {:10} {:6} hidden {:7} batch {:4} on {} ({} data): {:9.0} images/s, peak RSS {:.0} MB\n",
            self.model,
            self.kernel,
            self.phase,
            layers_text(&self.layers),
            self.batch,
            self.device,
            self.data,
            self.images_per_s,
            self.peak_rss_mb
        )
    }
}

impl Report for Info {
    fn text(&self) -> String {
        Info::text(self)
    }
}

/// Hidden layer sizes as "500x500" ("0" for none).
pub fn layers_text(layers: &[usize]) -> String {
    match layers {
        [] => "0".into(),
        _ => layers
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("x"),
    }
}

/// `nade mix`: the components, their NLL on the split the weights were chosen on, the
/// weights, and the mixture's NLL there.
#[derive(Clone, Debug, Serialize)]
pub struct MixReport {
    pub out: String,
    /// How the weights were chosen: fit (EM), uniform or given.
    pub weights: String,
    pub split: Option<String>,
    pub data: String,
    pub images: usize,
    pub components: Vec<MixedComponent>,
    /// EM's iterations (0 where nothing was fit).
    pub em_iterations: usize,
    /// Mean -log p(x) of the mixture on the split, in f64 from the components' values.
    pub nll_nats: f64,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct MixedComponent {
    pub checkpoint: String,
    pub model: String,
    /// Its own mean -log p(x) on the split.
    pub nll_nats: f64,
    /// Its weight in the mixture; None where EM dropped it.
    pub weight: Option<f64>,
}

impl Report for MixReport {
    fn text(&self) -> String {
        let split = self.split.as_deref().unwrap_or("file");
        let mut out = format!(
            "{} images of {} ({split}), weights {}:\n",
            self.images, self.data, self.weights
        );
        for c in &self.components {
            let weight = match c.weight {
                Some(w) => format!("weight {w:.4}"),
                None => "dropped (weight below --min-weight)".into(),
            };
            out += &format!(
                "  NLL {:.4}  {weight}  {} ({})\n",
                c.nll_nats, c.checkpoint, c.model
            );
        }
        out += &format!(
            "mixture NLL {:.4} on {split} ({} EM iterations, {:.1} s): {}\n",
            self.nll_nats, self.em_iterations, self.seconds, self.out
        );
        out
    }
}
