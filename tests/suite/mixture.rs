//! A mixture of trained models (`models::mixture`, `nade mix`): its density is the weighted
//! sum of its components' and sums to 1, its samples and completions follow it, its
//! checkpoint reads back, and `nade mix` fits weights that `nade eval` reproduces.

use std::path::Path;

use candle_core::{Device, Tensor};
use nade::data::BinaryDataset;
use nade::models::deepnade::DeepNadeConfig;
use nade::models::made::{Activation, MadeConfig, OrderChoice};
use nade::models::mixture::{Component, Mixture, MixtureConfig};
use nade::models::{Autoregressive, ModelConfig, ModelSpec, NadeKernel, Pass};
use nade::sample::{complete, sample};

use crate::common;
use crate::common::bin::{error_message, eval_json, json, nade, ok};
use crate::common::*;

/// Component configs over n: with `all_kinds`, FVSBN, NADE, MADE in the natural order, a
/// deep NADE and a MADE ensemble of random orders; else the three natural-order models,
/// whose mixture's p(x_kept) of a kept prefix is the marginal of its p(x) exactly (a deep
/// NADE scores a kept set under orderings that start with it, which is its own model of
/// x_kept, not the marginal of its p(x)).
fn component_configs(n: usize, all_kinds: bool) -> Vec<ModelConfig> {
    let mut configs = vec![
        config("fvsbn", n, 0, NadeKernel::default()),
        config("nade", n, 4, NadeKernel::Fused),
        ModelConfig::Made(made_config(n, &[6], true, Activation::Relu)),
    ];
    if all_kinds {
        configs.push(ModelConfig::DeepNade(DeepNadeConfig {
            orders: 2,
            seed: 3,
            ..DeepNadeConfig::with_hidden(n, vec![5])
        }));
        configs.push(ModelConfig::Made(MadeConfig {
            masks: 3,
            order: OrderChoice::Random,
            seed: 9,
            ..made_config(n, &[6], false, Activation::Tanh)
        }));
    }
    configs
}

/// The components with random parameters (seeded by `seed`), and their mixture under
/// `weights`.
fn mixture_of(
    configs: &[ModelConfig],
    weights: &[f64],
    seed: u64,
    device: &Device,
) -> (Mixture, Vec<Box<dyn Autoregressive>>) {
    let build = |k: u64| -> Vec<Box<dyn Autoregressive>> {
        configs
            .iter()
            .enumerate()
            .map(|(j, cfg)| model(cfg, &random_params(cfg, k + j as u64, 1.5), device))
            .collect()
    };
    let cfg = MixtureConfig {
        n: configs[0].n(),
        components: configs
            .iter()
            .zip(weights)
            .map(|(model, &weight)| Component {
                weight,
                model: model.clone(),
            })
            .collect(),
    };
    cfg.validate().unwrap();
    (Mixture::new(cfg, build(seed), device).unwrap(), build(seed))
}

fn log_probs(model: &dyn Autoregressive, x: &Tensor) -> Vec<f64> {
    model
        .log_prob(x, Pass::Eval)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

const ALL: bool = true;
const NATURAL: bool = false;

const WEIGHTS: [f64; 5] = [0.1, 0.2, 0.3, 0.25, 0.15];

/// log p(x) = log sum_j w_j p_j(x) of the components alone, for every x of {0,1}^7; the
/// probabilities sum to 1; the prepared evaluator gives the same values.
#[test]
fn the_density_is_the_weighted_sum_of_the_components_and_is_normalized() {
    let n = 7;
    for device in nade::device::available() {
        let (mixture, alone) = mixture_of(&component_configs(n, ALL), &WEIGHTS, 40, &device);
        let x = Tensor::from_vec(all_binary_vectors(n), (1 << n, n), &device).unwrap();
        let got = log_probs(&mixture, &x);
        let each: Vec<Vec<f64>> = alone.iter().map(|m| log_probs(m.as_ref(), &x)).collect();
        for (r, &lp) in got.iter().enumerate() {
            let want: f64 = WEIGHTS
                .iter()
                .zip(&each)
                .map(|(w, e)| w * e[r].exp())
                .sum::<f64>()
                .ln();
            assert!((lp - want).abs() < 1e-4, "x {r}: {lp} vs {want}");
        }
        let total: f64 = exact_probs(&mixture, n, &device).iter().sum();
        assert!((total - 1.0).abs() < 1e-4, "sum {total}");
        let evaluator = nade::models::evaluator(&mixture).unwrap();
        let prepared: Vec<f64> = evaluator
            .log_prob(&x)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect();
        assert!(max_abs_diff_f64(&prepared, &got) < 1e-5);
    }
}

fn max_abs_diff_f64(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// 20,000 samples follow the mixture's p(x) (chi-square at p = 0.001) and not the same
/// components under other weights (the test can tell).
#[test]
fn samples_follow_the_mixture() {
    let (n, draws) = (6, 20_000);
    let configs = component_configs(n, ALL);
    for device in nade::device::available() {
        let (mixture, _) = mixture_of(&configs, &WEIGHTS, 50, &device);
        let samples = sample(&mixture, draws, 4096, 42, &device).unwrap();
        let mut counts = vec![0u64; 1 << n];
        for row in samples.images.rows() {
            counts[index_of(row)] += 1;
        }
        let expected = expected_counts(&mixture, n, &device, draws);
        let (stat, df) = chi_square(&counts, &expected);
        assert!(
            stat < chi2_999(df),
            "{device:?}: chi2 = {stat:.1} (df {df})"
        );
        let (other, _) = mixture_of(&configs, &[0.6, 0.1, 0.1, 0.1, 0.1], 50, &device);
        let wrong = expected_counts(&other, n, &device, draws);
        let (stat, df) = chi_square(&counts, &wrong);
        assert!(
            stat > chi2_999(df),
            "the test cannot tell the weights apart"
        );
    }
}

/// Completions of a kept prefix follow p(x_rest | x_kept) of the mixture (whose component
/// posterior moves with the kept values), and log p(x_kept) is the marginal by enumeration.
#[test]
fn completions_follow_the_mixtures_conditional() {
    let (n, keep, draws) = (6, 2, 20_000);
    let weights = [0.5, 0.2, 0.3];
    let given = BinaryDataset::new(n, vec![1, 0, 0, 0, 0, 0]).unwrap();
    for device in nade::device::available() {
        let (mixture, _) = mixture_of(&component_configs(n, NATURAL), &weights, 60, &device);
        let out = complete(&mixture, &given, keep, draws, 4096, 8, &device).unwrap();
        let mut counts = vec![0u64; 1 << n];
        for row in out.rows() {
            assert_eq!(&row[..keep], &given.row(0)[..keep]);
            counts[index_of(row)] += 1;
        }
        let prefix = index_of(&given.row(0)[..keep]);
        let joint: Vec<f64> = exact_probs(&mixture, n, &device)
            .into_iter()
            .enumerate()
            .map(|(x, p)| if x % (1 << keep) == prefix { p } else { 0.0 })
            .collect();
        let marginal: f64 = joint.iter().sum();
        let (obs, exp): (Vec<u64>, Vec<f64>) = joint
            .iter()
            .zip(&counts)
            .filter(|(p, _)| **p > 0.0)
            .map(|(p, &o)| (o, p / marginal * draws as f64))
            .unzip();
        let (stat, df) = chi_square(&obs, &exp);
        assert!(
            stat < chi2_999(df),
            "{device:?}: chi2 = {stat:.1} (df {df})"
        );

        let kept = Tensor::from_vec(vec![1f32, 0., 0., 0., 0., 0.], (1, n), &device).unwrap();
        let observed = Tensor::from_vec(vec![1f32, 1., 0., 0., 0., 0.], (1, n), &device).unwrap();
        let scored = mixture.kept_log_prob(&kept, &observed).unwrap().unwrap();
        assert!((scored.model[0] - marginal.ln()).abs() < 1e-4);
        assert_eq!(scored.components, 3);
    }
}

/// A mixture has no single set of conditionals and is not trained; its config refuses bad
/// weights and components of another n, naming the key.
#[test]
fn what_a_mixture_refuses() {
    let n = 5;
    let (mixture, _) = mixture_of(
        &component_configs(n, NATURAL),
        &[0.25, 0.25, 0.5],
        1,
        &Device::Cpu,
    );
    let x = Tensor::zeros((2, n), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(mixture
        .logits(&x)
        .unwrap_err()
        .to_string()
        .contains("no single set of conditionals"));
    assert!(mixture
        .log_prob(&x, Pass::Train { step: 0 })
        .unwrap_err()
        .to_string()
        .contains("not trained as a whole"));
    let component = |weight, n| Component {
        weight,
        model: config("fvsbn", n, 0, NadeKernel::default()),
    };
    for (components, message) in [
        (vec![], "at least one component"),
        (
            vec![component(0.5, n), component(0.6, n)],
            "the weights sum to 1.1",
        ),
        (
            vec![component(1.5, n), component(-0.5, n)],
            "model.components[1].weight = -0.5",
        ),
        (
            vec![component(0.5, n), component(0.5, n + 1)],
            "model.components[1]: n = 6",
        ),
    ] {
        let err = MixtureConfig { n, components }
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains(message), "{err}");
    }
}

/// Two checkpoints trained a few epochs on a Markov chain.
fn trained(dir: &Path, data: &Path, kind: &str, hidden: &str) -> String {
    let out = dir.join(kind);
    let config = dir.join(format!("{kind}.toml"));
    std::fs::write(
        &config,
        format!(
            "[model]\nkind = \"{kind}\"\n{hidden}\n[data]\ndataset = \"toy\"\ndir = \"{}\"\n[train]\nepochs = 3\nbatch_size = 50\nsample_every = 0\n[output]\ndir = \"{}\"\n",
            data.display(),
            out.display()
        ),
    )
    .unwrap();
    ok(&nade(&[
        "train",
        config.to_str().unwrap(),
        "--threads",
        "1",
        "--no-test",
    ]));
    out.join("best.safetensors").display().to_string()
}

/// `nade mix` fits weights on the validation split, reports each component's NLL there and
/// the mixture's, and writes a checkpoint whose `nade eval` gives that NLL and whose
/// components evaluate as the files they came from; `info`, `sample` and `complete` read it.
#[test]
fn cli_mix_fits_writes_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let data = markov_splits(
        dir.path(),
        10,
        0.8,
        [("train", 400, 1), ("valid", 200, 2), ("test", 200, 3)],
    );
    let fvsbn = trained(dir.path(), &data, "fvsbn", "");
    let nade_ckpt = trained(dir.path(), &data, "nade", "hidden = 8");
    let out = dir.path().join("mix.safetensors");
    let out_s = out.to_str().unwrap();
    let report = json(&nade(&[
        "mix",
        &fvsbn,
        &nade_ckpt,
        "--out",
        out_s,
        "--data",
        data.to_str().unwrap(),
        "--json",
        "--threads",
        "1",
    ]));
    assert_eq!(report["split"], "valid");
    assert_eq!(report["images"], 200);
    let weights: Vec<f64> = report["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["weight"].as_f64().unwrap())
        .collect();
    assert!((weights.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    let mixed = report["nll_nats"].as_f64().unwrap();
    for c in report["components"].as_array().unwrap() {
        let alone = eval_json(
            Path::new(c["checkpoint"].as_str().unwrap()),
            &data,
            &["--split", "valid"],
        );
        assert!(
            (alone["nll_nats"].as_f64().unwrap() - c["nll_nats"].as_f64().unwrap()).abs() < 1e-4
        );
        // EM never does worse than the better component alone.
        assert!(mixed <= alone["nll_nats"].as_f64().unwrap() + 1e-9);
    }
    let evaluated = eval_json(&out, &data, &["--split", "valid"]);
    assert_eq!(evaluated["model"], "mixture");
    assert!((evaluated["nll_nats"].as_f64().unwrap() - mixed).abs() < 1e-4);
    // The data set a bare `nade eval` reads is the one the weights were fit on.
    assert_eq!(
        nade::checkpoint::load(&out, &Device::Cpu, None)
            .unwrap()
            .trained_dataset()
            .as_deref(),
        Some("toy")
    );
    let info = ok(&nade(&["info", out_s]));
    assert!(info.contains("component1.W"), "{info}");
    let png = dir.path().join("s.png");
    ok(&nade(&[
        "sample",
        out_s,
        "--count",
        "8",
        "--out",
        png.to_str().unwrap(),
        "--threads",
        "1",
    ]));
    ok(&nade(&[
        "complete",
        out_s,
        "--count",
        "2",
        "--keep",
        "first:4",
        "--data",
        data.to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
        "--threads",
        "1",
    ]));
    let uniform = json(&nade(&[
        "mix",
        &fvsbn,
        &nade_ckpt,
        "--out",
        out_s,
        "--data",
        data.to_str().unwrap(),
        "--json",
        "--weights",
        "uniform",
        "--threads",
        "1",
    ]));
    assert_eq!(uniform["components"][0]["weight"], 0.5);
    assert!(uniform["nll_nats"].as_f64().unwrap() >= mixed - 1e-9);
}

/// Bad input to `nade mix`: one line naming the file or flag, and no file written.
#[test]
fn cli_mix_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let data = markov_splits(
        dir.path(),
        6,
        0.8,
        [("train", 20, 1), ("valid", 20, 2), ("test", 20, 3)],
    );
    let a = dir.path().join("a.safetensors");
    let b = dir.path().join("b.safetensors");
    common::bin::write_checkpoint(&a, "fvsbn", 6, 0);
    common::bin::write_checkpoint(&b, "nade", 7, 3);
    let out = dir.path().join("mix.safetensors");
    let run = |extra: &[&str]| {
        let base = [
            "mix",
            a.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--data",
        ];
        nade(
            &[
                &base[..],
                &[data.to_str().unwrap(), "--dataset", "toy"],
                extra,
            ]
            .concat(),
        )
    };
    let err = error_message(&run(&[b.to_str().unwrap()]));
    assert!(
        err.contains("b.safetensors: a model of n = 7") && err.contains("share n"),
        "{err}"
    );
    let err = error_message(&run(&[a.to_str().unwrap(), "--weights", "1,2,3"]));
    assert!(err.contains("3 weights for 2 checkpoints"), "{err}");
    // clap's own refusals of a flag's value (its usage lines follow).
    for (flag, value) in [("--weights", "heavy"), ("--min-weight", "1")] {
        let refused = run(&[flag, value]);
        let err = String::from_utf8_lossy(&refused.stderr).to_string();
        assert!(!refused.status.success());
        assert!(
            err.starts_with(&format!("error: invalid value '{value}' for '{flag}")),
            "{err}"
        );
    }
    assert!(!out.exists());
    // A run file cannot train a mixture.
    let config = dir.path().join("mix.toml");
    std::fs::write(
        &config,
        format!(
            "[model]\nkind = \"mixture\"\nn = 6\ncomponents = []\n[output]\ndir = \"{}\"\n",
            dir.path().join("run").display()
        ),
    )
    .unwrap();
    let err = error_message(&nade(&["train", config.to_str().unwrap()]));
    assert!(err.contains("nade mix"), "{err}");
}
