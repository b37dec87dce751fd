//! Helpers shared by the integration tests: seeded random models and data; running the
//! binary (`bin`); a local HTTP server (`http`).
#![allow(dead_code)]

pub mod bin;
pub mod http;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use nade::models::made::{Activation, MadeConfig};
use nade::models::{Autoregressive, Init, ModelConfig, NadeKernel, Trainable};

pub mod deepnade_reference;
pub mod made_reference;
pub mod naive;
pub mod stats;
#[allow(unused_imports)]
pub use naive::naive_logits;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
#[allow(unused_imports)]
pub use stats::*;

/// Parameters uniform on [-scale, scale]: large enough that a wrong mask or an off-by-one
/// changes every number the tests look at (the training init is far smaller). Integer
/// buffers (MADE's orders and degrees) keep the values the config draws.
pub fn random_params(cfg: &ModelConfig, seed: u64, scale: f32) -> HashMap<String, Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    cfg.param_specs()
        .into_iter()
        .map(|spec| {
            let len = spec.shape.iter().product::<usize>();
            let values = match &spec.init {
                Init::Values(v) => v.iter().map(|&i| i as f32).collect(),
                _ => (0..len).map(|_| rng.random_range(-scale..=scale)).collect(),
            };
            (spec.name, values)
        })
        .collect()
}

/// The f64 reference of a MADE config holding `params`.
pub fn made_reference(
    cfg: &MadeConfig,
    params: &HashMap<String, Vec<f32>>,
) -> made_reference::MadeReference {
    made_reference::MadeReference {
        n: cfg.n,
        hidden: cfg.hidden.clone(),
        masks: cfg.masks,
        activation: cfg.activation.to_string(),
        p: params.clone(),
    }
}

/// A MADE config with one mask in the natural order unless changed.
pub fn made_config(n: usize, hidden: &[usize], direct: bool, activation: Activation) -> MadeConfig {
    MadeConfig {
        direct,
        activation,
        ..MadeConfig::with_hidden(n, hidden.to_vec())
    }
}

/// A model config from the kind, n and hidden size (ignored by FVSBN).
pub fn new_config(kind: &str, n: usize, hidden: usize) -> ModelConfig {
    ModelConfig::from_legacy(kind, n, Some(hidden)).unwrap()
}

pub fn config(kind: &str, n: usize, hidden: usize, kernel: NadeKernel) -> ModelConfig {
    let cfg = new_config(kind, n, hidden);
    if kind == "nade" {
        cfg.with_kernel(&kernel.to_string()).unwrap()
    } else {
        cfg
    }
}

/// A model whose parameters are trainable Vars (for gradient tests), plus the VarMap.
pub fn model_with_vars(
    cfg: &ModelConfig,
    params: &HashMap<String, Vec<f32>>,
    device: &Device,
) -> (Box<dyn Autoregressive>, VarMap) {
    let tensors = cfg
        .param_specs()
        .into_iter()
        .map(|spec| {
            let t =
                Tensor::from_vec(params[&spec.name].clone(), spec.shape.clone(), device).unwrap();
            (spec.name, t)
        })
        .collect();
    let trainable = Trainable::new(cfg, tensors, device).unwrap();
    (trainable.model, trainable.varmap)
}

pub fn model(
    cfg: &ModelConfig,
    params: &HashMap<String, Vec<f32>>,
    device: &Device,
) -> Box<dyn Autoregressive> {
    model_with_vars(cfg, params, device).0
}

/// Random binary rows with P(1) = p.
pub fn random_binary(rows: usize, n: usize, p: f64, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..rows * n)
        .map(|_| if rng.random_bool(p) { 1.0 } else { 0.0 })
        .collect()
}

/// Every vector of {0,1}^n, bit j of row r = (r >> j) & 1.
pub fn all_binary_vectors(n: usize) -> Vec<f32> {
    (0..1usize << n)
        .flat_map(|r| (0..n).map(move |j| ((r >> j) & 1) as f32))
        .collect()
}

/// The model configurations every math test runs over. Block sizes that do not divide n
/// exercise the padding of the blocked NADE path.
pub fn all_configs(n: usize) -> Vec<ModelConfig> {
    vec![
        config("fvsbn", n, 0, NadeKernel::default()),
        config("mlp", n, 3, NadeKernel::default()),
        config("nade", n, 5, NadeKernel::Plain),
        config("nade", n, 5, NadeKernel::Blocked(3)),
        config("nade", n, 5, NadeKernel::Blocked(4)),
        config("nade", n, 5, NadeKernel::Blocked(n)),
        config("nade", n, 5, NadeKernel::Blocked(1)),
        config("nade", n, 5, NadeKernel::Fused),
        config("nade", n, 17, NadeKernel::Fused),
        // One natural-order mask (what the fixed-order tests expect); the direct connection
        // makes every later logit depend on each earlier pixel.
        ModelConfig::Made(made_config(n, &[6], true, Activation::Relu)),
        ModelConfig::Made(made_config(n, &[5, 4], true, Activation::Tanh)),
    ]
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// `count` rows of a binary Markov chain over n dimensions as .amat text: x_0 = 1 with
/// probability `p_first`, then each x_i repeats x_{i-1} with probability `p_stay` (its entropy is
/// known, so a trained model's NLL has a target).
pub fn markov_rows(count: usize, n: usize, p_first: f64, p_stay: f64, seed: u64) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut text = String::new();
    for _ in 0..count {
        let mut x = rng.random_bool(p_first);
        let row: Vec<&str> = (0..n)
            .map(|i| {
                if i > 0 && !rng.random_bool(p_stay) {
                    x = !x;
                }
                if x {
                    "1"
                } else {
                    "0"
                }
            })
            .collect();
        text.push_str(&row.join(" "));
        text.push('\n');
    }
    text
}

/// `dir`/data with toy_{train,valid,test}.amat of [`markov_rows`] (counts and seeds per split).
pub fn markov_splits(
    dir: &Path,
    n: usize,
    p_stay: f64,
    splits: [(&str, usize, u64); 3],
) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for (split, count, seed) in splits {
        std::fs::write(
            data.join(format!("toy_{split}.amat")),
            markov_rows(count, n, 0.7, p_stay, seed),
        )
        .unwrap();
    }
    data
}

/// Every tensor of a checkpoint (integer buffers as f32), then its optimizer moments sorted by
/// name: what a bit-identical resume must reproduce.
pub fn checkpoint_snapshot(path: &Path) -> Vec<(String, Vec<f32>)> {
    let loaded = nade::checkpoint::load(path, &Device::Cpu, None).unwrap();
    let host = |t: &Tensor| {
        t.to_dtype(candle_core::DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let mut out: Vec<(String, Vec<f32>)> = loaded
        .model
        .named_tensors()
        .into_iter()
        .map(|(n, t)| (n, host(&t)))
        .collect();
    let mut state: Vec<_> = loaded
        .optimizer_state
        .into_iter()
        .map(|(n, t)| (n, host(&t)))
        .collect();
    state.sort_by(|a, b| a.0.cmp(&b.0));
    out.extend(state);
    out
}
