//! Order-agnostic deep NADE (issue 15): normalization by enumeration (one ordering, the K
//! ensemble), the incremental first layer against one full pass with the mask, log
//! p(x_kept) as the sum over completions, the training loss as an unbiased estimate of the
//! order-averaged NLL, sampler and completion calibration (kept pixels bit for bit), the
//! checkpoint round trip and a file with only model / n / activation, a bit-identical
//! resume, and the CLI (`eval --orders`, `complete --json`, `sample --order`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use nade::checkpoint;
use nade::config::Config;
use nade::data::BinaryDataset;
use nade::models::deepnade::{DeepNade, DeepNadeConfig};
use nade::models::made::Activation;
use nade::models::{Autoregressive, ModelConfig, Pass};
use nade::sample::{complete_in_order, sample_in_order, WalkOrder};
use nade::train::{self, Options};

use crate::common;
use crate::common::bin::{json, nade, ok, refused};
use crate::common::*;

fn deepnade(n: usize, hidden: &[usize], orders: usize, activation: Activation) -> DeepNadeConfig {
    DeepNadeConfig {
        activation,
        orders,
        seed: 5,
        ..DeepNadeConfig::with_hidden(n, hidden.to_vec())
    }
}

/// The concrete model on `params` (f32; the `order` buffer as I64) on the CPU.
fn build(cfg: &DeepNadeConfig, params: &HashMap<String, Vec<f32>>) -> DeepNade {
    build_on(cfg, params, &Device::Cpu)
}

/// The same on `device`: off the CPU, the model takes the device walk.
fn build_on(cfg: &DeepNadeConfig, params: &HashMap<String, Vec<f32>>, device: &Device) -> DeepNade {
    let tensors = ModelConfig::DeepNade(cfg.clone())
        .param_specs()
        .into_iter()
        .map(|s| {
            let t = Tensor::from_vec(params[&s.name].clone(), s.shape.clone(), device);
            (s.name, t.unwrap())
        })
        .collect();
    DeepNade::new(cfg, VarBuilder::from_tensors(tensors, DType::F32, device)).unwrap()
}

fn random_model(cfg: &DeepNadeConfig, seed: u64, scale: f32) -> DeepNade {
    random_model_on(cfg, seed, scale, &Device::Cpu)
}

fn random_model_on(cfg: &DeepNadeConfig, seed: u64, scale: f32, device: &Device) -> DeepNade {
    build_on(
        cfg,
        &random_params(&ModelConfig::DeepNade(cfg.clone()), seed, scale),
        device,
    )
}

/// The same random model on the CPU's host walk, on the CPU's device walk, and on every other
/// device available (CUDA when built with it and present), with a name for messages.
fn on_every_walk(cfg: &DeepNadeConfig, seed: u64, scale: f32) -> Vec<(String, DeepNade)> {
    let mut out = vec![
        ("CPU kernel".to_string(), random_model(cfg, seed, scale)),
        (
            "CPU device walk".to_string(),
            random_model(cfg, seed, scale).with_device_walk(),
        ),
    ];
    for device in nade::device::available() {
        if !device.is_cpu() {
            out.push((
                format!("{device:?}"),
                random_model_on(cfg, seed, scale, &device),
            ));
        }
    }
    out
}

fn rows(x: &[f32], n: usize) -> Tensor {
    rows_on(x, n, &Device::Cpu)
}

fn rows_on(x: &[f32], n: usize, device: &Device) -> Tensor {
    Tensor::from_vec(x.to_vec(), (x.len() / n, n), device).unwrap()
}

/// Every permutation of 0..n (Heap's algorithm).
fn permutations(n: usize) -> Vec<Vec<usize>> {
    fn heap(k: usize, a: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if k <= 1 {
            out.push(a.clone());
            return;
        }
        for i in 0..k {
            heap(k - 1, a, out);
            let j = if k.is_multiple_of(2) { i } else { 0 };
            a.swap(j, k - 1);
        }
    }
    let mut out = Vec::new();
    heap(n, &mut (0..n).collect(), &mut out);
    out
}

/// The ordering restricted to a kept set: kept dimensions in its order, then the others.
fn kept_first(order: &[usize], kept: &[u8]) -> Vec<usize> {
    let (a, b): (Vec<usize>, Vec<usize>) = order.iter().partition(|&&d| kept[d] != 0);
    a.into_iter().chain(b).collect()
}

/// p(x) of every x in {0,1}^n with every row walked in `order`.
fn probs_in_order(model: &DeepNade, n: usize, order: &[usize]) -> Vec<f64> {
    let x = rows(&all_binary_vectors(n), n);
    let orders = vec![order.to_vec(); 1 << n];
    model
        .log_prob_in_orders(&x, &orders)
        .unwrap()
        .iter()
        .map(|lp| lp.exp())
        .collect()
}

/// Each stored ordering alone, the first K' = 2, and the K ensemble sum to one over {0,1}^n,
/// for each activation and one or two hidden layers; the ensemble is the mean of the
/// orderings' probabilities (so they are really mixed, and differ). On every device.
#[test]
fn each_ordering_and_the_ensemble_sum_to_one() {
    for device in nade::device::available() {
        ensemble_sums_to_one_on(&device);
    }
}

fn ensemble_sums_to_one_on(device: &Device) {
    let n = 8;
    for (c, (hidden, act)) in [
        (vec![7], Activation::Relu),
        (vec![6, 5], Activation::Tanh),
        (vec![5, 4, 3], Activation::Sigmoid),
    ]
    .into_iter()
    .enumerate()
    {
        let cfg = deepnade(n, &hidden, 3, act);
        let params = random_params(&ModelConfig::DeepNade(cfg.clone()), 10 + c as u64, 1.5);
        let whole = build_on(&cfg, &params, device);
        let per_order: Vec<Vec<f64>> = whole
            .orderings()
            .iter()
            .map(|o| probs_in_order(&whole, n, o))
            .collect();
        for p in &per_order {
            let total: f64 = p.iter().sum();
            assert!(
                (total - 1.0).abs() < 1e-4,
                "{cfg:?}: one ordering sums to {total}"
            );
        }
        assert_ne!(whole.orderings()[0], whole.orderings()[1]);
        assert!(
            per_order[0]
                .iter()
                .zip(&per_order[1])
                .any(|(a, b)| (a - b).abs() > 1e-3),
            "{cfg:?}: two orderings give the same distribution"
        );
        for k in [1, 2, 3] {
            let used = DeepNadeConfig {
                eval_orders: Some(k),
                ..cfg.clone()
            };
            let model = build_on(&used, &params, device);
            let p = exact_probs(&model, n, device);
            let total: f64 = p.iter().sum();
            assert!(
                (total - 1.0).abs() < 1e-4,
                "{cfg:?} K' = {k}: sums to {total}"
            );
            for (x, px) in p.iter().enumerate() {
                let mean = per_order[..k].iter().map(|q| q[x]).sum::<f64>() / k as f64;
                assert!(
                    (px - mean).abs() < 1e-5 * mean.max(1e-3),
                    "K' = {k}, x = {x}"
                );
            }
        }
    }
}

/// For a fixed ordering, the conditional of every step of the exact evaluation (the first
/// layer updated one column at a time) equals the logit of one full pass with m = 1 on the
/// dimensions before it in that ordering: for the CPU kernel, the device walk (the blocks
/// of kernels/deepnade_steps.rs) on the CPU and on every other device, one to three layers,
/// each activation.
#[test]
fn incremental_conditionals_equal_one_full_pass_with_the_mask() {
    // Past 64 steps: the CPU walk takes up to 16 steps per block (five blocks here), the
    // device walk up to 64 (two).
    let n = 70;
    for (hidden, act) in [
        (vec![8], Activation::Relu),
        (vec![7, 6], Activation::Tanh),
        (vec![20, 6, 17], Activation::Sigmoid),
    ] {
        let cfg = deepnade(n, &hidden, 2, act);
        for (walk, model) in on_every_walk(&cfg, 3, 1.5) {
            conditionals_equal_the_full_pass(&cfg, &walk, &model);
        }
    }
}

fn conditionals_equal_the_full_pass(cfg: &DeepNadeConfig, walk: &str, model: &DeepNade) {
    let n = cfg.n;
    let device = model.named_tensors()[0].1.device().clone();
    {
        let x = rows_on(&random_binary(6, n, 0.5, 4), n, &device);
        let order = model.orderings()[1].clone();
        let walked = model.logits_in_orders(&x, &vec![order.clone(); 6]).unwrap();
        for t in 0..n {
            let mask: Vec<f32> = (0..n)
                .map(|d| if order[..t].contains(&d) { 1.0 } else { 0.0 })
                .collect();
            let m = rows_on(&mask.repeat(6), n, &device);
            let full = model
                .masked_logits(&x, &m)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let d = order[t];
            for r in 0..6 {
                assert!(
                    (walked[r][d] - full[r][d]).abs() < 1e-4,
                    "{walk}, {cfg:?} step {t} row {r}: walked {} vs full {}",
                    walked[r][d],
                    full[r][d]
                );
            }
        }
        // The trait's logits are the first ordering's walk.
        let first = model.logits(&x).unwrap().to_vec2::<f32>().unwrap();
        let again = model
            .logits_in_orders(&x, &vec![model.orderings()[0].clone(); 6])
            .unwrap();
        assert_eq!(first, again);
    }
}

/// `log_prob` (one ordering, two, all three) equals a float64 implementation written from the
/// issue's text (tests/common/deepnade_reference.rs: one full pass per conditional, the tensors
/// read by name) to 1e-4 relative: the checkpoint schema holds.
#[test]
fn eval_equals_a_float64_reference_from_the_issue_text() {
    let n = 10;
    for (hidden, act) in [(vec![9, 7], Activation::Relu), (vec![6], Activation::Tanh)] {
        let cfg = deepnade(n, &hidden, 3, act);
        let model_cfg = ModelConfig::DeepNade(cfg.clone());
        let params = random_params(&model_cfg, 17, 1.0);
        let reference = common::deepnade_reference::DeepNadeReference {
            n,
            hidden: hidden.clone(),
            activation: act.to_string(),
            p: params.clone(),
        };
        let x = random_binary(5, n, 0.4, 9);
        for k in [1, 2, 3] {
            let m = build(
                &DeepNadeConfig {
                    eval_orders: Some(k),
                    ..cfg.clone()
                },
                &params,
            );
            let got = m
                .log_prob(&rows(&x, n), Pass::Eval)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for (r, &lp) in got.iter().enumerate() {
                let row: Vec<f64> = x[r * n..(r + 1) * n].iter().map(|&v| v as f64).collect();
                let want = reference.log_prob(&row, k);
                assert!(
                    ((lp as f64) - want).abs() < 1e-4 * want.abs(),
                    "{cfg:?} K' = {k} row {r}: {lp} vs {want}"
                );
            }
        }
    }
}

/// The curve's mixture of the first k orderings equals evaluating the model cut to k orderings,
/// and its NLL of each ordering alone equals evaluating that ordering by itself.
#[test]
fn the_curve_over_orderings_equals_evaluating_the_first_k_orderings() {
    let n = 7;
    let cfg = deepnade(n, &[6, 5], 6, Activation::Tanh);
    let model = random_model(&cfg, 5, 1.0);
    let pixels = random_binary(9, n, 0.4, 2)
        .iter()
        .map(|&v| v as u8)
        .collect();
    let data = BinaryDataset::new(n, pixels).unwrap();
    let curve = nade::eval::mixture_curve(&model, &data, 4, &Device::Cpu, false).unwrap();
    let ks: Vec<usize> = curve.points.iter().map(|(k, _)| *k).collect();
    assert_eq!(ks, [1, 2, 4, 6]);
    for (k, point) in &curve.points {
        let first_k = nade::models::rebuilt(
            &model,
            &ModelConfig::DeepNade(cfg.clone()).with_orders(*k).unwrap(),
            &Device::Cpu,
        )
        .unwrap();
        let want = nade::eval::nll(first_k.as_ref(), &data, 4, &Device::Cpu, false).unwrap();
        assert!(
            (point.nll_nats - want.nll_nats).abs() < 1e-5 * want.nll_nats,
            "k = {k}: {} vs {}",
            point.nll_nats,
            want.nll_nats
        );
    }
    assert_ne!(curve.points[0].1.nll_nats, curve.points[3].1.nll_nats);

    let x = data.tensor_range(0, data.len(), &Device::Cpu).unwrap();
    assert_eq!(curve.each.len(), 6);
    for (k, order) in model.orderings().iter().enumerate() {
        let log_p = model
            .log_prob_in_orders(&x, &vec![order.clone(); data.len()])
            .unwrap();
        let want = -log_p.iter().sum::<f64>() / data.len() as f64;
        assert!(
            (curve.each[k] - want).abs() < 1e-5 * want,
            "ordering {k} alone: {} vs {want}",
            curve.each[k]
        );
    }
    assert_eq!(curve.each[0], curve.points[0].1.nll_nats);
    let (mean, std_err) = curve.mean_of_each();
    let want_mean = curve.each.iter().sum::<f64>() / 6.0;
    assert!((mean - want_mean).abs() < 1e-12);
    let spread = curve
        .each
        .iter()
        .map(|v| (v - want_mean).powi(2))
        .sum::<f64>()
        / 5.0;
    assert!((std_err - (spread / 6.0).sqrt()).abs() < 1e-12 && std_err > 0.0);
}

/// log p(x_kept) (first ordering restricted to the kept set, and the ensemble) equals the
/// log of the sum over all completions of p(x) under those restricted orderings, for kept
/// sets that are no prefix of anything, the empty set and the full one; the device walk (on
/// the CPU and every other device) gives the same numbers as the CPU kernel.
#[test]
fn kept_log_prob_is_the_sum_over_completions() {
    let n = 8;
    let cfg = deepnade(n, &[7, 5], 3, Activation::Relu);
    let model = random_model(&cfg, 21, 1.5);
    let given: Vec<u8> = vec![1, 0, 1, 1, 0, 0, 1, 0];
    let kept_sets: [[u8; 8]; 4] = [
        [0, 1, 0, 0, 1, 0, 0, 1],
        [1, 0, 0, 1, 0, 1, 1, 0],
        [0; 8],
        [1; 8],
    ];
    let x: Vec<f32> = given.iter().map(|&v| v as f32).collect();
    let kept_t = rows(&x.repeat(4), n);
    let mask_t = rows(
        &kept_sets
            .iter()
            .flatten()
            .map(|&v| v as f32)
            .collect::<Vec<_>>(),
        n,
    );
    let got = model.kept_log_prob(&kept_t, &mask_t).unwrap().unwrap();
    assert_eq!(got.components, 3);
    for (walk, other) in on_every_walk(&cfg, 21, 1.5).into_iter().skip(1) {
        let device = other.named_tensors()[0].1.device().clone();
        let on = |t: &Tensor| t.to_device(&device).unwrap();
        let theirs = other
            .kept_log_prob(&on(&kept_t), &on(&mask_t))
            .unwrap()
            .unwrap();
        for (a, b) in got.model.iter().zip(&theirs.model) {
            assert!((a - b).abs() < 1e-4, "CPU kernel {a} vs {walk} {b}");
        }
        for (a, b) in got.first.iter().zip(&theirs.first) {
            assert!((a - b).abs() < 1e-4, "CPU kernel {a} vs {walk} {b}");
        }
    }
    for (r, kept) in kept_sets.iter().enumerate() {
        // Sum over the x in {0,1}^n agreeing with `given` on the kept set.
        let agree: Vec<bool> = (0..1usize << n)
            .map(|v| (0..n).all(|d| kept[d] == 0 || ((v >> d) & 1) as u8 == given[d]))
            .collect();
        let marginal = |order: &[usize]| -> f64 {
            probs_in_order(&model, n, &kept_first(order, kept))
                .iter()
                .zip(&agree)
                .filter(|(_, &a)| a)
                .map(|(p, _)| p)
                .sum()
        };
        let first = marginal(&model.orderings()[0]);
        let ensemble = model.orderings().iter().map(|o| marginal(o)).sum::<f64>() / 3.0;
        assert!(
            (got.first[r] - first.ln()).abs() < 1e-4,
            "set {r}: {} vs {}",
            got.first[r],
            first.ln()
        );
        assert!(
            (got.model[r] - ensemble.ln()).abs() < 1e-4,
            "set {r}: {} vs {}",
            got.model[r],
            ensemble.ln()
        );
    }
    assert_eq!(got.first[2], 0.0, "nothing kept: log p = 0");
}

/// The training loss is unbiased: on a model with n = 5, over many seeded draws of (d, the
/// observed subset), minus the training log_prob averages to the mean over all 120
/// orderings of the exact NLL, within 4 standard errors, for each of three images; and the
/// draws really change with the step.
#[test]
fn training_loss_is_an_unbiased_estimate_of_the_order_averaged_nll() {
    for device in nade::device::available() {
        training_loss_is_unbiased_on(&device);
    }
}

fn training_loss_is_unbiased_on(device: &Device) {
    let n = 5;
    let cfg = deepnade(n, &[6], 1, Activation::Tanh);
    let model = random_model_on(&cfg, 8, 1.5, device);
    let images: [[f32; 5]; 3] = [
        [1., 0., 1., 1., 0.],
        [0., 0., 0., 1., 0.],
        [1., 1., 1., 1., 1.],
    ];
    let all = permutations(n);
    assert_eq!(all.len(), 120);
    let repeats = 400;
    // Image-major: rows i * repeats .. (i + 1) * repeats all hold image i.
    let batch: Vec<f32> = images.iter().flat_map(|x| x.repeat(repeats)).collect();
    let x = rows_on(&batch, n, device);
    let mut draws = vec![Vec::new(); 3];
    let mut previous: Option<Vec<f32>> = None;
    for step in 0..25 {
        let est = model
            .log_prob(&x, Pass::Train { step })
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        if let Some(p) = &previous {
            assert_ne!(p, &est, "step {step} drew what the step before drew");
        }
        for (r, v) in est.iter().enumerate() {
            draws[r / repeats].push(-(*v as f64));
        }
        previous = Some(est);
    }
    for (i, image) in images.iter().enumerate() {
        let xi = rows(&image.repeat(all.len()), n);
        let exact = model.log_prob_in_orders(&xi, &all).unwrap();
        let target = -exact.iter().sum::<f64>() / all.len() as f64;
        let d = &draws[i];
        let mean = d.iter().sum::<f64>() / d.len() as f64;
        let var = d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (d.len() - 1) as f64;
        let se = (var / d.len() as f64).sqrt();
        assert!(
            (mean - target).abs() < 4.0 * se,
            "{device:?}, image {i}: estimate {mean:.4} ± {se:.4}, order-averaged NLL {target:.4}"
        );
        assert!(
            se < 0.02 * target,
            "image {i}: too few draws to tell ({se})"
        );
    }
}

/// The device walk (on the CPU and every other device; one step at a time when sampling)
/// draws the same images as the CPU kernel for the same seed, in stored and random
/// orderings, with the same probabilities to f32 rounding: two layers of sigmoid units.
#[test]
fn the_device_walk_samples_what_the_host_walk_samples() {
    let n = 80;
    let cfg = deepnade(n, &[9, 7], 3, Activation::Sigmoid);
    let walks = on_every_walk(&cfg, 8, 1.5);
    for order in [WalkOrder::Stored, WalkOrder::Random] {
        let draw = |model: &DeepNade| {
            let device = model.named_tensors()[0].1.device().clone();
            sample_in_order(
                model,
                40,
                16,
                5,
                order,
                &device,
                &nade::progress::Progress::Hidden,
            )
            .unwrap()
        };
        let host = draw(&walks[0].1);
        let want: Vec<_> = host.images.rows().collect();
        for (walk, model) in &walks[1..] {
            let got = draw(model);
            let rows: Vec<_> = got.images.rows().collect();
            assert_eq!(rows, want, "{walk}, {order}: different images");
            for (p, q) in host.probs.iter().zip(&got.probs) {
                assert!((p - q).abs() < 1e-5, "{walk}, {order}: p {p} vs {q}");
            }
        }
    }
}

/// 20,000 samples: in the stored orderings (uniform choice per image) they follow the
/// K-ordering ensemble; with `--order random` the mean over all 720 orderings; with
/// `--order raster` the raster ordering; each by chi-square at p = 0.001, and each rejected
/// against another of the three (the test has power).
#[test]
fn samples_follow_the_ensemble_random_and_raster_orderings() {
    for device in nade::device::available() {
        samples_follow_on(&device);
    }
}

fn samples_follow_on(device: &Device) {
    let (n, draws) = (6, 20_000);
    let cfg = deepnade(n, &[6, 5], 3, Activation::Tanh);
    let model = random_model_on(&cfg, 30, 3.0, device);
    let ensemble = exact_probs(&model, n, device);
    let mut over_all = vec![0.0; 1 << n];
    let all = permutations(n);
    for o in &all {
        for (a, p) in over_all.iter_mut().zip(probs_in_order(&model, n, o)) {
            *a += p / all.len() as f64;
        }
    }
    let raster = probs_in_order(&model, n, &(0..n).collect::<Vec<_>>());
    let expected = [&ensemble, &over_all, &raster];
    for (w, order) in [WalkOrder::Stored, WalkOrder::Random, WalkOrder::Raster]
        .into_iter()
        .enumerate()
    {
        let s = sample_in_order(
            &model,
            draws,
            4096,
            42,
            order,
            device,
            &nade::progress::Progress::Hidden,
        )
        .unwrap();
        let mut counts = vec![0u64; 1 << n];
        for row in s.images.rows() {
            counts[index_of(row)] += 1;
        }
        let test = |p: &[f64]| {
            let e: Vec<f64> = p.iter().map(|q| q * draws as f64).collect();
            let (stat, df) = chi_square(&counts, &e);
            (stat, chi2_999(df))
        };
        let (stat, limit) = test(expected[w]);
        assert!(
            stat < limit,
            "{device:?}, {order}: chi2 = {stat:.1} >= {limit:.1}"
        );
        let (stat, limit) = test(expected[(w + 1) % 3]);
        assert!(
            stat > limit,
            "{device:?}, {order}: cannot tell it from another order"
        );
    }
}

/// Completions of a kept set that is no prefix of any ordering keep the kept pixels bit for
/// bit, and follow p(x_hidden | x_kept): with `--order random` the mean over all orderings of
/// the hidden pixels, with `raster` the raster one, with `stored` the restricted ensemble's
/// conditional (orderings weighed by their posterior given the kept pixels).
#[test]
fn completions_keep_the_kept_pixels_and_follow_the_conditional() {
    let (n, draws) = (7, 20_000);
    let cfg = deepnade(n, &[8], 3, Activation::Tanh);
    let model = random_model(&cfg, 12, 2.0);
    let given_row: Vec<u8> = vec![1, 0, 1, 1, 0, 1, 0];
    let kept_row: Vec<u8> = vec![0, 1, 0, 0, 1, 1, 0];
    let given = BinaryDataset::new(n, given_row.clone()).unwrap();
    let kept = BinaryDataset::new(n, kept_row.clone()).unwrap();
    let agree: Vec<bool> = (0..1usize << n)
        .map(|v| (0..n).all(|d| kept_row[d] == 0 || ((v >> d) & 1) as u8 == given_row[d]))
        .collect();
    // p_{o'}(x) restricted to the completions of `given`, for o' = o with the kept first.
    let joint = |order: &[usize]| -> Vec<f64> {
        probs_in_order(&model, n, &kept_first(order, &kept_row))
            .into_iter()
            .zip(&agree)
            .map(|(p, &a)| if a { p } else { 0.0 })
            .collect()
    };
    let normalized = |p: Vec<f64>| -> Vec<f64> {
        let total: f64 = p.iter().sum();
        p.iter().map(|q| q / total).collect()
    };
    let hidden: Vec<usize> = (0..n).filter(|&d| kept_row[d] == 0).collect();
    let kept_dims: Vec<usize> = (0..n).filter(|&d| kept_row[d] != 0).collect();
    let mut random = vec![0.0; 1 << n];
    let orders_of_hidden = permutations(hidden.len());
    for p in &orders_of_hidden {
        let order: Vec<usize> = kept_dims
            .iter()
            .copied()
            .chain(p.iter().map(|&j| hidden[j]))
            .collect();
        for (a, q) in random.iter_mut().zip(normalized(joint(&order))) {
            *a += q / orders_of_hidden.len() as f64;
        }
    }
    let raster = normalized(joint(&(0..n).collect::<Vec<_>>()));
    let mut mixture = vec![0.0; 1 << n];
    for o in model.orderings() {
        for (a, q) in mixture.iter_mut().zip(joint(o)) {
            *a += q;
        }
    }
    let stored = normalized(mixture);
    let expected = [&random, &raster, &stored];
    for (w, order) in [WalkOrder::Random, WalkOrder::Raster, WalkOrder::Stored]
        .into_iter()
        .enumerate()
    {
        let out =
            complete_in_order(&model, &given, &kept, draws, 4096, 8, order, &Device::Cpu).unwrap();
        let mut counts = vec![0u64; 1 << n];
        for row in out.rows() {
            for &d in &kept_dims {
                assert_eq!(row[d], given_row[d], "{order}: kept pixel {d} changed");
            }
            counts[index_of(row)] += 1;
        }
        let test = |p: &[f64]| {
            let (obs, exp): (Vec<u64>, Vec<f64>) = p
                .iter()
                .zip(&counts)
                .filter(|(q, _)| **q > 0.0)
                .map(|(q, &o)| (o, q * draws as f64))
                .unzip();
            let (stat, df) = chi_square(&obs, &exp);
            (stat, chi2_999(df))
        };
        let (stat, limit) = test(expected[w]);
        assert!(stat < limit, "{order}: chi2 = {stat:.1} >= {limit:.1}");
        let (stat, limit) = test(expected[(w + 1) % 3]);
        assert!(stat > limit, "{order}: cannot tell it from another order");
    }
}

/// Writes a safetensors file by hand as another tool would: f32 tensors, `order` as I64.
fn write_by_hand(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)], meta: &[(&str, &str)]) {
    use safetensors::tensor::{Dtype, TensorView};
    let bytes: Vec<(String, Vec<usize>, Dtype, Vec<u8>)> = tensors
        .iter()
        .map(|(name, shape, v)| {
            if name == "order" {
                let b = v.iter().flat_map(|&x| (x as i64).to_le_bytes()).collect();
                (name.clone(), shape.clone(), Dtype::I64, b)
            } else {
                let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                (name.clone(), shape.clone(), Dtype::F32, b)
            }
        })
        .collect();
    let views: Vec<(&str, TensorView)> = bytes
        .iter()
        .map(|(name, shape, dtype, data)| {
            (
                name.as_str(),
                TensorView::new(*dtype, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    let meta: HashMap<String, String> = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
}

/// A checkpoint round trip keeps the config (but not the run-time eval_orders), the
/// tensors (order as I64, in the issue's shapes) and log p; a file with only `model`, `n`
/// and `activation` metadata loads with its layer sizes and K from the tensors and computes
/// the same; without `activation`, or with an order that is no permutation, it is refused.
#[test]
fn checkpoint_round_trip_and_a_file_with_three_keys() {
    let dir = tempfile::tempdir().unwrap();
    let n = 6;
    let cfg = DeepNadeConfig {
        eval_orders: Some(2),
        ..deepnade(n, &[5, 4], 3, Activation::Sigmoid)
    };
    let model_cfg = ModelConfig::DeepNade(cfg.clone());
    let params = random_params(&model_cfg, 2, 1.0);
    let model = build(&cfg, &params);
    let specs: Vec<(String, Vec<usize>)> = model_cfg
        .param_specs()
        .into_iter()
        .map(|s| (s.name, s.shape))
        .collect();
    let want: Vec<(String, Vec<usize>)> = [
        ("W1", vec![5, 12]),
        ("b1", vec![5]),
        ("W2", vec![4, 5]),
        ("b2", vec![4]),
        ("V", vec![6, 4]),
        ("c", vec![6]),
        ("order", vec![3, 6]),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b))
    .collect();
    assert_eq!(specs, want);
    let path = dir.path().join("dn.safetensors");
    checkpoint::save(&path, &model, &BTreeMap::new()).unwrap();
    let loaded = checkpoint::load(&path, &Device::Cpu, None).unwrap();
    assert_eq!(
        loaded.model.config(),
        &ModelConfig::DeepNade(DeepNadeConfig {
            eval_orders: None,
            ..cfg.clone()
        })
    );
    assert_eq!(loaded.metadata["model"], "deepnade");
    assert_eq!(loaded.metadata["activation"], "sigmoid");
    let order = loaded.stored.iter().find(|t| t.name == "order").unwrap();
    assert_eq!(
        (order.dtype.as_str(), order.shape.clone()),
        ("I64", vec![3, 6])
    );
    let x = rows(&random_binary(4, n, 0.5, 3), n);
    let lp = |m: &dyn Autoregressive| {
        m.log_prob(&x, Pass::Eval)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let all_three = build(
        &DeepNadeConfig {
            eval_orders: None,
            ..cfg.clone()
        },
        &params,
    );
    assert_eq!(lp(loaded.model.as_ref()), lp(&all_three));

    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = want
        .iter()
        .map(|(name, shape)| (name.clone(), shape.clone(), params[name].clone()))
        .collect();
    let legacy = dir.path().join("legacy.safetensors");
    write_by_hand(
        &legacy,
        &tensors,
        &[("model", "deepnade"), ("n", "6"), ("activation", "sigmoid")],
    );
    let loaded = checkpoint::load(&legacy, &Device::Cpu, None).unwrap();
    let ModelConfig::DeepNade(got) = loaded.model.config().clone() else {
        panic!("not a deepnade model")
    };
    assert_eq!(
        (got.hidden.clone(), got.orders, got.activation),
        (vec![5, 4], 3, Activation::Sigmoid)
    );
    assert_eq!(lp(loaded.model.as_ref()), lp(&all_three));

    write_by_hand(&legacy, &tensors, &[("model", "deepnade"), ("n", "6")]);
    let e = format!(
        "{:#}",
        checkpoint::load(&legacy, &Device::Cpu, None).err().unwrap()
    );
    assert!(e.contains("`activation`"), "{e}");
    let mut broken = tensors.clone();
    let order = broken.iter_mut().find(|(n, ..)| n == "order").unwrap();
    order.2[1] = order.2[0];
    write_by_hand(
        &legacy,
        &broken,
        &[("model", "deepnade"), ("n", "6"), ("activation", "sigmoid")],
    );
    let e = format!(
        "{:#}",
        checkpoint::load(&legacy, &Device::Cpu, None).err().unwrap()
    );
    assert!(e.contains("`order`") && e.contains("permutation"), "{e}");
}

fn markov_data(dir: &Path) -> String {
    markov_splits(
        dir,
        12,
        0.85,
        [("train", 400, 1), ("valid", 100, 2), ("test", 100, 3)],
    )
    .display()
    .to_string()
}

fn run_config(dir: &Path, seed: u64, epochs: usize) -> Config {
    let text = format!(
        r#"
[model]
kind = "deepnade"
hidden = [10, 8]
orders = 4
seed = {seed}
eval_orders = 2
[data]
dir = "{}"
dataset = "toy"
[train]
epochs = {epochs}
batch_size = 50
lr = 1e-2
seed = 7
patience = 100
sample_every = 0
device = "cpu"
[output]
dir = "{}"
"#,
        markov_data(dir),
        dir.join("out").display()
    );
    Config::from_toml(&text).unwrap()
}

const QUIET: Options = Options {
    resume: false,
    progress: train::Progress::Off,
    test: true,
    force: false,
};

/// 2 epochs + 2 resumed epochs end bit for bit where 4 straight epochs do (the subsets of
/// each step come from (model.seed, step)); another model.seed trains other weights (the
/// subsets really depend on it); the test NLL is under eval_orders = 2 orderings and says so.
#[test]
fn resumed_deepnade_run_is_bit_identical() {
    let whole = tempfile::tempdir().unwrap();
    let summary = train::run(&run_config(whole.path(), 0, 4), &QUIET).unwrap();
    let split = tempfile::tempdir().unwrap();
    let mut cfg = run_config(split.path(), 0, 2);
    train::run(&cfg, &QUIET).unwrap();
    cfg.train.epochs = 4;
    train::run(
        &cfg,
        &Options {
            resume: true,
            ..QUIET
        },
    )
    .unwrap();
    let (a, b) = (whole.path().join("out"), split.path().join("out"));
    let last = checkpoint_snapshot(&a.join("last.safetensors"));
    assert_eq!(last, checkpoint_snapshot(&b.join("last.safetensors")));
    assert_eq!(
        checkpoint_snapshot(&a.join("best.safetensors")),
        checkpoint_snapshot(&b.join("best.safetensors"))
    );
    let other = tempfile::tempdir().unwrap();
    train::run(&run_config(other.path(), 1, 4), &QUIET).unwrap();
    let other_last = checkpoint_snapshot(&other.path().join("out/last.safetensors"));
    let weights = |t: &[(String, Vec<f32>)]| t.iter().find(|(n, _)| n == "W1").unwrap().1.clone();
    assert_ne!(weights(&last), weights(&other_last));

    let best = checkpoint::load(&a.join("best.safetensors"), &Device::Cpu, None).unwrap();
    assert_eq!(best.metadata["test_orders"], "2");
    let test_nll: f64 = best.metadata["test_nll"].parse().unwrap();
    assert_eq!(Some(test_nll), summary.test_nll);
    let ModelConfig::DeepNade(stored) = best.model.config().clone() else {
        panic!("not a deepnade model")
    };
    assert_eq!((stored.orders, stored.eval_orders), (4, None));
}

/// The CLI on a trained toy model: `eval --orders K'` uses and reports K' (1 differs from 4),
/// the same with the default batch and with batches of 3,
/// an ordering count the model lacks is a one-line error; `eval --keep` scores the kept part
/// (all kept = plain eval, none kept = 0); `complete --keep random:0.5
/// --json` keeps the kept pixels in every completion and reports log p(x_kept) for each
/// image (0 when nothing is kept, below 0 otherwise, the ensemble and the first ordering);
/// `sample --order random` works, and is refused for a fixed-order model.
#[test]
fn cli_eval_orders_complete_json_and_sample_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = run_config(dir.path(), 0, 2);
    cfg.train.sample_every = 0;
    train::run(&cfg, &QUIET).unwrap();
    let ckpt = dir.path().join("out/best.safetensors");
    let ckpt = ckpt.to_str().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let eval_batch = |k: &str, batch: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "eval",
            ckpt,
            "--data",
            data,
            "--dataset",
            "toy",
            "--orders",
            k,
            "--json",
        ];
        args.extend(batch);
        serde_json::from_str(ok(&nade(&args)).trim()).unwrap()
    };
    let eval = |k: &str| eval_batch(k, &[]);
    let (one, four) = (eval("1"), eval("4"));
    assert_eq!(
        (one["orders"].as_u64(), four["orders"].as_u64()),
        (Some(1), Some(4))
    );
    assert_ne!(one["nll_nats"], four["nll_nats"]);
    // The default batch (deep NADE's: one walk of WALK_ROWS rows) and batches of 3 give the
    // same numbers.
    let small = eval_batch("4", &["--batch", "3"]);
    let (a, b) = (
        small["nll_nats"].as_f64().unwrap(),
        four["nll_nats"].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-6 * b, "batch 3: {a}, default batch: {b}");
    let bad = nade(&[
        "eval",
        ckpt,
        "--data",
        data,
        "--dataset",
        "toy",
        "--orders",
        "5",
    ]);
    assert!(!bad.status.success());
    let e = String::from_utf8_lossy(&bad.stderr);
    assert!(e.contains("--orders 5") && e.lines().count() == 1, "{e}");

    // `eval --keep`: every pixel kept scores what plain eval scores, none kept scores 0, and
    // a fixed-order model is refused.
    let kept = |spec: &str| -> serde_json::Value {
        let out = ok(&nade(&[
            "eval",
            ckpt,
            "--data",
            data,
            "--dataset",
            "toy",
            "--orders",
            "4",
            "--keep",
            spec,
            "--json",
        ]));
        serde_json::from_str(out.trim()).unwrap()
    };
    let all = kept("random:1");
    let (a, b) = (
        all["kept_nll_nats"].as_f64().unwrap(),
        four["nll_nats"].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-4 * b, "all kept {a} vs eval {b}");
    // Nothing kept: log p = 0 exactly (+0, not -0) and no bits per kept pixel (0 / 0).
    let none = kept("random:0");
    let nats = none["kept_nll_nats"].as_f64().unwrap();
    assert!(nats == 0.0 && nats.is_sign_positive(), "{none}");
    assert!(none["kept_bits_per_dim"].is_null(), "{none}");
    assert_eq!(none["kept_pixels"].as_u64(), Some(0));
    let text = ok(&nade(&[
        "eval",
        ckpt,
        "--data",
        data,
        "--dataset",
        "toy",
        "--orders",
        "2",
        "--keep",
        "random:0",
    ]));
    assert!(
        text.contains("-log p(x_kept) 0.0000 ± 0.0000 nats (no pixel kept;"),
        "{text}"
    );
    let half = kept("left:2");
    assert!(half["kept_nll_nats"].as_f64().unwrap() < a);
    assert!(half["kept_nll_first_nats"].as_f64().unwrap() > 0.0);

    let png = dir.path().join("c.png");
    let amat = dir.path().join("c.amat");
    let out = ok(&nade(&[
        "complete",
        ckpt,
        "--keep",
        "random:0.5",
        "--count",
        "3",
        "--samples",
        "4",
        "--seed",
        "3",
        "--out",
        png.to_str().unwrap(),
        "--amat",
        amat.to_str().unwrap(),
        "--data",
        data,
        "--dataset",
        "toy",
        "--json",
    ]));
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(json["order"], "random");
    assert_eq!(json["orders"].as_u64(), Some(4));
    let masks = nade::keep::KeepSpec::Random(0.5)
        .masks(nade::tile_shape::TileShape::near_square(12), 3, 3)
        .unwrap();
    let test = nade::data::amat::read_amat(&dir.path().join("data/toy_test.amat")).unwrap();
    let completions = nade::data::amat::read_amat(&amat).unwrap();
    assert_eq!(completions.len(), 12);
    for (r, row) in completions.rows().enumerate() {
        let (image, mask) = (test.row(r / 4), masks.row(r / 4));
        for d in 0..12 {
            if mask[d] != 0 {
                assert_eq!(row[d], image[d], "completion {r}, kept pixel {d}");
            }
        }
    }
    for (i, entry) in json["images"].as_array().unwrap().iter().enumerate() {
        let kept = masks.row(i).iter().filter(|&&v| v != 0).count();
        assert_eq!(entry["kept_pixels"].as_u64(), Some(kept as u64));
        let (first, all) = (
            entry["log_p_kept_first"].as_f64().unwrap(),
            entry["log_p_kept"].as_f64().unwrap(),
        );
        if kept == 0 {
            assert_eq!((first, all), (0.0, 0.0));
        } else {
            assert!(first < 0.0 && all < 0.0, "image {i}: {first} {all}");
        }
    }

    let samples = dir.path().join("s.png");
    ok(&nade(&[
        "sample",
        ckpt,
        "--count",
        "4",
        "--order",
        "random",
        "--out",
        samples.to_str().unwrap(),
    ]));
    let fixed = dir.path().join("nade.safetensors");
    common::bin::write_checkpoint(&fixed, "nade", 12, 3);
    let refused = nade(&[
        "sample",
        fixed.to_str().unwrap(),
        "--count",
        "4",
        "--order",
        "random",
        "--out",
        samples.to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    let e = String::from_utf8_lossy(&refused.stderr);
    assert!(
        e.contains("--order random") && e.contains("deepnade"),
        "{e}"
    );
}

/// `nade bench --model deepnade` times the model it names: the layers of `--hidden` (2 x 500,
/// the shipped model's, without it), reported in the JSON; a one-layer model given two sizes
/// is an error that names `--hidden`.
#[test]
fn bench_times_the_layers_it_is_given() {
    let bench = |model: &str, hidden: Option<&str>| {
        let mut args = vec![
            "bench",
            "--model",
            model,
            "--batch",
            "10",
            "--seconds",
            "0.01",
            "--device",
            "cpu",
            "--phase",
            "train",
            "--json",
        ];
        if let Some(h) = hidden {
            args.extend(["--hidden", h]);
        }
        nade(&args)
    };
    let given = json(&bench("deepnade", Some("8,6")));
    assert_eq!(given["layers"], serde_json::json!([8, 6]), "{given}");
    assert_eq!(given["hidden"], 8, "{given}");
    let default = json(&bench("deepnade", None));
    assert_eq!(
        default["layers"],
        serde_json::json!([500, 500]),
        "{default}"
    );
    let nade_default = json(&bench("nade", None));
    assert_eq!(
        nade_default["layers"],
        serde_json::json!([500]),
        "{nade_default}"
    );

    let err = refused(&bench("nade", Some("8,6")));
    assert!(
        err.starts_with("error: --hidden") && err.contains("one hidden layer"),
        "{err}"
    );
}
