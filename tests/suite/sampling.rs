//! Sequential sampling and completion: the sampler states against the parallel logits, the
//! sample frequencies against the exact p(x), kept pixels, reproducibility, and the
//! `nade sample` / `nade complete` commands end to end.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use nade::data::amat::read_amat;
use nade::data::BinaryDataset;
use nade::device;
use nade::image_grid::{self, GUTTER};
use nade::models::{self, Autoregressive, NadeKernel};
use nade::sample::{self, complete, sample};
use nade::tile_shape::TileShape;

use crate::common;
use crate::common::*;

fn host(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn tensor_of(data: &BinaryDataset, device: &Device) -> Tensor {
    data.tensor_range(0, data.len(), device).unwrap()
}

/// Feeds the rows of `x` (B, n) through a fresh sampler: the first `prefix` values in one
/// `observe_many`, the rest one step at a time. Returns the (B, n - prefix) logits it gave.
fn replay(model: &dyn Autoregressive, x: &Tensor, prefix: usize) -> Vec<f32> {
    let (b, n) = x.dims2().unwrap();
    let mut state = model.sampler(b).unwrap();
    if prefix > 0 {
        state
            .observe_many(&x.narrow(1, 0, prefix).unwrap())
            .unwrap();
    }
    assert_eq!(state.position(), prefix);
    let mut logits = Vec::new();
    for i in prefix..n {
        logits.push(state.logits().unwrap());
        state.observe(&x.narrow(1, i, 1).unwrap()).unwrap();
    }
    assert_eq!(state.position(), n);
    assert!(state.logits().is_err(), "a step past dimension n must fail");
    if logits.is_empty() {
        return Vec::new();
    }
    host(&Tensor::cat(&logits, 1).unwrap())
}

// Tolerance of "sequential equals parallel": the two paths add the same terms in a different
// order (a running sum against a masked matmul), so they differ by f32 rounding only. Each
// pre-activation sums at most n + 1 terms of size <= scale (1.5 here, or the n^-1/2 init at
// n = 784), so its rounding error is below (n + 1) * 1.5 * 2^-24 ~ 1e-6 for n = 9 and ~4e-5
// for n = 784 (init weights are tiny, so far less there in fact); through sigmoid (slope <= 1/4)
// and a read-out of d <= 20 weights <= 1.5 it stays below ~1e-5. 1e-4 leaves a margin yet
// is 1000x smaller than what a wrong mask or an off-by-one changes (order 0.1 to 1).
const TOL: f32 = 1e-4;

/// Every model and NADE path: the logits of the sampler state, step by step on the sampled
/// x (and after feeding a prefix at once), equal model.logits(x); the Bernoulli means the
/// sampler reports are their sigmoids.
#[test]
fn sampler_logits_equal_parallel_logits() {
    let n = 9;
    for device in device::available() {
        let mut configs = all_configs(n);
        configs.push(config("nade", n, 20, NadeKernel::Blocked(28)));
        for (c, cfg) in configs.into_iter().enumerate() {
            let model = model(&cfg, &random_params(&cfg, 10 + c as u64, 1.5), &device);
            let samples = sample(model.as_ref(), 37, 16, 5, &device).unwrap();
            let x = tensor_of(&samples.images, &device);
            let want = host(&model.logits(&x).unwrap());
            let sigmoid = want.iter().map(|l| 1.0 / (1.0 + (-l).exp()));
            let p_err = sigmoid
                .zip(&samples.probs)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(p_err < TOL, "{cfg:?} on {device:?}: probs off by {p_err}");
            for prefix in [0, 1, 4, n - 1, n] {
                let got = replay(model.as_ref(), &x, prefix);
                let want: Vec<f32> = want
                    .chunks(n)
                    .flat_map(|row| row[prefix..].to_vec())
                    .collect();
                let err = max_abs_diff(&got, &want);
                assert!(
                    err < TOL,
                    "{cfg:?} on {device:?}, prefix {prefix}: max |sequential - parallel| = {err}"
                );
            }
        }
    }
}

/// The same at MNIST size with the training init, where the running sums are 784 long.
#[test]
fn sampler_logits_equal_parallel_logits_at_n_784() {
    let n = 784;
    let configs = [
        config("fvsbn", n, 0, NadeKernel::default()),
        config("mlp", n, 4, NadeKernel::default()),
        config("nade", n, 50, NadeKernel::Plain),
        config("nade", n, 50, NadeKernel::default()),
    ];
    for device in device::available() {
        for cfg in &configs {
            let params = models::init_params(cfg, 3, &device).unwrap();
            let vb = VarBuilder::from_tensors(params.into_iter().collect(), DType::F32, &device);
            let model = cfg.build(vb).unwrap();
            let samples = sample(model.as_ref(), 3, 3, 9, &device).unwrap();
            let x = tensor_of(&samples.images, &device);
            let want = host(&model.logits(&x).unwrap());
            for prefix in [0, 392] {
                let got = replay(model.as_ref(), &x, prefix);
                let want: Vec<f32> = want
                    .chunks(n)
                    .flat_map(|row| row[prefix..].to_vec())
                    .collect();
                let err = max_abs_diff(&got, &want);
                assert!(err < TOL, "{cfg:?} on {device:?}: {err}");
            }
        }
    }
}

/// 20,000 samples of every small model: their frequencies match p(x) by a chi-square test
/// at p = 0.001, and the same counts are rejected against a different model's p(x) (so the
/// test has the power to notice a sampler that draws from the wrong distribution).
#[test]
fn sample_frequencies_match_exact_probabilities() {
    let (n, draws) = (8, 20_000);
    for device in device::available() {
        for (c, cfg) in all_configs(n).into_iter().enumerate() {
            let model = model(&cfg, &random_params(&cfg, 100 + c as u64, 1.5), &device);
            let samples = sample(model.as_ref(), draws, 5000, 42, &device).unwrap();
            let mut counts = vec![0u64; 1 << n];
            for row in samples.images.rows() {
                counts[index_of(row)] += 1;
            }
            let expected = expected_counts(model.as_ref(), n, &device, draws);
            let (stat, df) = chi_square(&counts, &expected);
            let limit = chi2_999(df);
            assert!(
                stat < limit,
                "{cfg:?} on {device:?}: chi2 = {stat:.1} >= {limit:.1} (df {df})"
            );

            let other = common::model(&cfg, &random_params(&cfg, 999, 1.5), &device);
            let wrong = expected_counts(other.as_ref(), n, &device, draws);
            let (stat, df) = chi_square(&counts, &wrong);
            assert!(
                stat > chi2_999(df),
                "{cfg:?}: the test cannot tell models apart"
            );
        }
    }
}

/// Completions of a fixed prefix follow the exact conditional p(x_rest | x_kept).
#[test]
fn completion_frequencies_match_the_exact_conditional() {
    let (n, keep, draws) = (7, 3, 20_000);
    let given = BinaryDataset::new(n, vec![1, 0, 1, 0, 0, 0, 0]).unwrap();
    for device in device::available() {
        for (c, cfg) in all_configs(n).into_iter().enumerate() {
            let model = model(&cfg, &random_params(&cfg, 200 + c as u64, 1.5), &device);
            let out = complete(model.as_ref(), &given, keep, draws, 4096, 8, &device).unwrap();
            let mut counts = vec![0u64; 1 << n];
            for row in out.rows() {
                assert_eq!(&row[..keep], &given.row(0)[..keep]);
                counts[index_of(row)] += 1;
            }
            // p(x | kept) = p(x) / sum of p over the x sharing the kept values.
            let prefix = index_of(&given.row(0)[..keep]);
            let joint: Vec<f64> = exact_probs(model.as_ref(), n, &device)
                .into_iter()
                .enumerate()
                .map(|(x, p)| if x % (1 << keep) == prefix { p } else { 0.0 })
                .collect();
            let total: f64 = joint.iter().sum();
            let (obs, exp): (Vec<u64>, Vec<f64>) = joint
                .iter()
                .zip(&counts)
                .filter(|(p, _)| **p > 0.0)
                .map(|(p, &o)| (o, p / total * draws as f64))
                .unzip();
            let (stat, df) = chi_square(&obs, &exp);
            assert!(
                stat < chi2_999(df),
                "{cfg:?} on {device:?}: chi2 = {stat:.1} (df {df})"
            );
        }
    }
}

/// The kept values of every completion are the given ones, bit for bit, while the rest is
/// sampled (a model with large random weights would redraw the kept part differently).
#[test]
fn completions_keep_the_given_values() {
    let n = 30;
    let given = BinaryDataset::new(
        n,
        random_binary(5, n, 0.5, 4)
            .iter()
            .map(|&v| v as u8)
            .collect(),
    )
    .unwrap();
    for device in device::available() {
        for (c, cfg) in all_configs(n).into_iter().enumerate() {
            let model = model(&cfg, &random_params(&cfg, 300 + c as u64, 1.5), &device);
            for keep in [0, 1, 13, n - 1, n] {
                let out = complete(model.as_ref(), &given, keep, 4, 3, 7, &device).unwrap();
                assert_eq!(out.len(), 20);
                for (r, row) in out.rows().enumerate() {
                    assert_eq!(
                        &row[..keep],
                        &given.row(r / 4)[..keep],
                        "{cfg:?} keep {keep}"
                    );
                }
                if keep < n / 2 {
                    let differs = out
                        .rows()
                        .enumerate()
                        .any(|(r, row)| row[keep..] != given.row(r / 4)[keep..]);
                    assert!(differs, "{cfg:?}: nothing was sampled");
                }
            }
        }
    }
}

fn small_mnist_nade(device: &Device) -> Box<dyn Autoregressive> {
    let cfg = config("nade", 784, 8, NadeKernel::default());
    model(&cfg, &random_params(&cfg, 5, 0.3), device)
}

/// Same seed, same PNG bytes; another seed, other bytes. And the batch size does not change
/// which images a seed gives (row r always uses the same uniforms).
#[test]
fn same_seed_same_png_and_batching_does_not_matter() {
    let dir = tempfile::tempdir().unwrap();
    for device in device::available() {
        let model = small_mnist_nade(&device);
        let png = |seed: u64, name: &str| {
            let path = dir.path().join(name);
            sample::write_sample_grid(model.as_ref(), 12, seed, &device, &path).unwrap();
            std::fs::read(path).unwrap()
        };
        let a = png(1, "a.png");
        assert_eq!(a, png(1, "b.png"), "{device:?}: same seed, different PNG");
        assert_ne!(a, png(2, "c.png"), "{device:?}: different seeds, same PNG");
        let img = image::load_from_memory(&a).unwrap();
        assert_eq!(
            (img.width(), img.height()),
            image_grid::grid_size(3, 4, TileShape::near_square(784), sample::DEFAULT_SCALE)
        );

        let whole = sample(model.as_ref(), 10, 10, 3, &device).unwrap();
        let pieces = sample(model.as_ref(), 10, 3, 3, &device).unwrap();
        assert_eq!(whole.images, pieces.images);
        assert_eq!(whole.probs, pieces.probs);
    }
}

/// Params living in a VarMap (a model under training) build no autograd graph while
/// sampling, and the sampled images are those of the same model with plain tensors.
#[test]
fn sampling_a_model_under_training_detaches_its_parameters() {
    let cfg = config("nade", 20, 6, NadeKernel::default());
    let params = random_params(&cfg, 8, 1.0);
    let (trained, vars) = model_with_vars(&cfg, &params, &Device::Cpu);
    let mut state = trained.sampler(2).unwrap();
    state
        .observe(&Tensor::ones((2, 1), DType::F32, &Device::Cpu).unwrap())
        .unwrap();
    let grads = state
        .logits()
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for var in vars.all_vars() {
        assert!(
            grads.get(var.as_tensor()).is_none(),
            "the sampler tracks gradients"
        );
    }
    // The parallel path of the same model does track them (the check above can fail).
    let x = Tensor::ones((2, 20), DType::F32, &Device::Cpu).unwrap();
    let grads = trained
        .logits(&x)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(vars
        .all_vars()
        .iter()
        .any(|v| grads.get(v.as_tensor()).is_some()));
    let plain: HashMap<String, Tensor> = params
        .iter()
        .map(|(k, v)| {
            let shape = cfg
                .param_specs()
                .into_iter()
                .find(|s| s.name == *k)
                .unwrap()
                .shape;
            (
                k.clone(),
                Tensor::from_vec(v.clone(), shape, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    let fixed = cfg
        .build(VarBuilder::from_tensors(plain, DType::F32, &Device::Cpu))
        .unwrap();
    let a = sample(trained.as_ref(), 8, 4, 1, &Device::Cpu).unwrap();
    let b = sample(fixed.as_ref(), 8, 4, 1, &Device::Cpu).unwrap();
    assert_eq!(a.images, b.images);
}

#[test]
fn tile_shapes_and_grid_sizes() {
    let shape = |height, width| TileShape { height, width };
    assert_eq!(TileShape::near_square(784), shape(28, 28));
    assert_eq!(TileShape::near_square(500), shape(20, 25));
    assert_eq!(TileShape::near_square(180), shape(12, 15));
    assert_eq!(TileShape::near_square(112), shape(8, 14));
    assert_eq!(TileShape::near_square(7), shape(1, 7));
    assert_eq!(TileShape::near_square(1), shape(1, 1));
    assert_eq!(image_grid::near_square_columns(100), 10);
    assert_eq!(image_grid::near_square_columns(101), 11);
    assert_eq!(image_grid::near_square_columns(1), 1);
    assert_eq!(
        image_grid::grid_size(2, 3, shape(28, 28), 2),
        (3 * 56 + 4 * GUTTER, 2 * 56 + 3 * GUTTER)
    );
    // Rows for completion follow the tile shape; past the last row is an error naming --rows.
    assert_eq!(sample::kept_values(shape(28, 28), 14).unwrap(), 392);
    assert_eq!(sample::kept_values(shape(28, 28), 28).unwrap(), 784);
    assert_eq!(sample::kept_values(shape(4, 45), 2).unwrap(), 90);
    let err = sample::kept_values(shape(28, 28), 29)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--rows 29"), "{err}");
}

// ---------------------------------------------------------------- the CLI end to end

fn nade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nade"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A randomly initialised n = 784 NADE checkpoint (the training init, small hidden layer).
fn write_checkpoint(path: &Path) -> Box<dyn Autoregressive> {
    let cfg = common::new_config("nade", 784, 10);
    let params = models::init_params(&cfg, 1, &Device::Cpu).unwrap();
    let vb = VarBuilder::from_tensors(params.into_iter().collect(), DType::F32, &Device::Cpu);
    let model = cfg.build(vb).unwrap();
    nade::checkpoint::save(path, model.as_ref(), &Default::default()).unwrap();
    model
}

fn png_size(path: &Path) -> (u32, u32) {
    let img = image::open(path).unwrap();
    (img.width(), img.height())
}

#[test]
fn cli_sample_writes_the_grid_and_the_amat() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("nade.safetensors");
    let model = write_checkpoint(&ckpt);
    let (png, amat) = (dir.path().join("s.png"), dir.path().join("s.amat"));
    let p = |path: &Path| path.to_str().unwrap().to_string();
    let (ckpt_s, png_s, amat_s) = (p(&ckpt), p(&png), p(&amat));
    let args = [
        "sample", &ckpt_s, "--count", "7", "--seed", "3", "--out", &png_s, "--amat", &amat_s,
        "--scale", "2", "--device", "cpu", "--batch", "4",
    ];
    let stdout = ok(&nade(&args));
    assert!(stdout.contains("7 samples"), "{stdout}");
    // 7 tiles: 3 columns, 3 rows of 56 x 56 with 2 px gutters.
    assert_eq!(png_size(&png), (3 * 56 + 4 * 2, 3 * 56 + 4 * 2));
    let rows = read_amat(&amat).unwrap();
    assert_eq!((rows.len(), rows.n()), (7, 784));
    let want = sample(model.as_ref(), 7, 100, 3, &Device::Cpu).unwrap();
    assert_eq!(rows, want.images, "the CLI draws what the library draws");

    // --probs shows the Bernoulli means: gray levels other than black and white.
    let probs_png = dir.path().join("p.png");
    let args = [
        "sample",
        &ckpt_s,
        "--count",
        "4",
        "--out",
        &p(&probs_png),
        "--probs",
        "--scale",
        "1",
        "--device",
        "cpu",
    ];
    ok(&nade(&args));
    let img = image::open(&probs_png).unwrap().to_luma8();
    assert_eq!(img.dimensions(), (2 * 28 + 3 * 2, 2 * 28 + 3 * 2));
    assert!(img.pixels().any(|p| p.0[0] != 0 && p.0[0] != 255));
    // Without it, only black, white (ink and gutters).
    let img = image::open(&png).unwrap().to_luma8();
    assert!(img.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));

    let err = common::bin::refused(&nade(&["sample", "missing.safetensors", "--count", "2"]));
    assert!(err.contains("missing.safetensors"), "{err}");
}

#[test]
fn cli_complete_errors_name_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("nade.safetensors");
    write_checkpoint(&ckpt);
    let data = dir.path().join("three.amat");
    let rows = BinaryDataset::new(
        784,
        random_binary(3, 784, 0.2, 1)
            .iter()
            .map(|&v| v as u8)
            .collect(),
    )
    .unwrap();
    std::fs::write(&data, nade::data::amat::amat_text(&rows)).unwrap();
    let (ckpt_s, data_s) = (ckpt.to_str().unwrap(), data.to_str().unwrap());
    let out = dir.path().join("c.png");
    let out_s = out.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["complete", ckpt_s, "--data", data_s, "--out", out_s];
        args.extend_from_slice(extra);
        nade(&args)
    };
    let err = common::bin::refused(&run(&["--rows", "29", "--count", "1"]));
    assert!(
        err.contains("--rows 29") && err.contains("28 rows"),
        "{err}"
    );
    let err = common::bin::refused(&run(&["--rows", "3", "--count", "1", "--index", "3"]));
    assert!(
        err.contains("--index 3") && err.contains("3 images"),
        "{err}"
    );
    let err = common::bin::refused(&run(&["--rows", "3", "--count", "3", "--index", "1"]));
    assert!(err.contains("--count 3"), "{err}");
    assert!(!out.exists());
    // The whole file is the test split: 3 images from index 0 work.
    ok(&run(&[
        "--rows",
        "3",
        "--count",
        "3",
        "--samples",
        "2",
        "--device",
        "cpu",
    ]));
    assert_eq!(png_size(&out), (4 * 56 + 5 * 2, 3 * 56 + 4 * 2));
}

/// The fused sampler of NADE (no SamplerState; one pass on the CPU, one launch on CUDA): the Bernoulli means it
/// reports for the images it drew equal sigmoid of the plain masked-matmul logits of those
/// images, for sampling and for completion.
#[test]
fn fused_nade_sampler_probabilities_equal_the_plain_parallel_path() {
    for device in device::available() {
        if NadeKernel::fused_runs_on(&device) {
            fused_sampler_equals_plain_on(&device);
        }
    }
}

fn fused_sampler_equals_plain_on(device: &Device) {
    let device = device.clone();
    for (n, d) in [(11, 7), (784, 20)] {
        let fused_cfg = config("nade", n, d, NadeKernel::Fused);
        let plain_cfg = config("nade", n, d, NadeKernel::Plain);
        let scale = if n > 100 { 0.3 } else { 1.5 };
        let params = random_params(&fused_cfg, 12, scale);
        let fused = model(&fused_cfg, &params, &device);
        let plain = model(&plain_cfg, &params, &device);
        let drawn = sample(fused.as_ref(), 40, 16, 5, &device).unwrap();
        let want: Vec<f32> = host(&plain.logits(&tensor_of(&drawn.images, &device)).unwrap())
            .iter()
            .map(|&l| 1.0 / (1.0 + (-l).exp()))
            .collect();
        let diff = max_abs_diff(&drawn.probs, &want);
        // Probabilities in [0, 1]: the logit tolerance TOL times the sigmoid's slope <= 1/4.
        assert!(diff < TOL, "n = {n}: fused probabilities differ by {diff}");
        // Something was drawn: neither all zeros nor all ones.
        let ones = drawn.images.pixels().iter().filter(|&&v| v == 1).count();
        assert!(
            ones > 0 && ones < drawn.images.pixels().len(),
            "n = {n}: degenerate samples"
        );
    }
}
