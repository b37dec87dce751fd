//! MADE (issue 14): normalization of single masks and of the K-mask mixture, the
//! autoregressive property under each mask's own order, the parallel logits against an f64
//! reference written from the issue's text, the ensemble as the log-mean-exp of its masks,
//! gradients of masked weights, sampler and completion calibration, `nade eval --masks`,
//! `nade bench --model made`, and a bit-identical resume with K > 1.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use nade::checkpoint;
use nade::config::Config;
use nade::data::BinaryDataset;
use nade::models::made::{Activation, Made, MadeConfig, OrderChoice, Resample};
use nade::models::{self, bernoulli_log_prob, Autoregressive, ModelConfig, Pass, Trainable};
use nade::optim::{OptimConfig, Optimizer};
use nade::sample::{complete_with, sample};
use nade::train::{self, Options};

use crate::common;
use crate::common::*;

const ACTIVATIONS: [Activation; 3] = [Activation::Relu, Activation::Sigmoid, Activation::Tanh];

fn made(n: usize, hidden: &[usize], masks: usize, direct: bool, act: Activation) -> MadeConfig {
    MadeConfig {
        masks,
        order: OrderChoice::Random,
        seed: 3,
        ..made_config(n, hidden, direct, act)
    }
}

/// The concrete model (for its per-mask logits) on `params`.
fn build(cfg: &MadeConfig, params: &HashMap<String, Vec<f32>>) -> Made {
    let tensors = ModelConfig::Made(cfg.clone())
        .param_specs()
        .into_iter()
        .map(|s| {
            let t = Tensor::from_vec(params[&s.name].clone(), s.shape.clone(), &Device::Cpu);
            (s.name, t.unwrap())
        })
        .collect();
    Made::new(
        cfg,
        VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu),
    )
    .unwrap()
}

fn host(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn rows(x: &[f32], n: usize) -> Tensor {
    Tensor::from_vec(x.to_vec(), (x.len() / n, n), &Device::Cpu).unwrap()
}

/// Single masks with and without the direct connection, every activation, one and two
/// hidden layers, and K-mask ensembles: sum over {0,1}^n of p(x) = 1, for the mixture and
/// for each of its masks.
#[test]
fn every_mask_and_the_ensemble_sum_to_one() {
    let n = 9;
    let x = rows(&all_binary_vectors(n), n);
    for act in ACTIVATIONS {
        for direct in [false, true] {
            for (hidden, masks) in [(vec![7], 1), (vec![6, 5], 1), (vec![7], 4), (vec![5, 6], 3)] {
                let cfg = made(n, &hidden, masks, direct, act);
                let m = build(
                    &cfg,
                    &random_params(&ModelConfig::Made(cfg.clone()), 11, 1.5),
                );
                let mixture: f64 = host(&m.log_prob(&x, Pass::Eval).unwrap())
                    .iter()
                    .map(|&lp| (lp as f64).exp())
                    .sum();
                assert!(
                    (mixture - 1.0).abs() < 1e-4,
                    "{cfg:?}: mixture sums to {mixture}"
                );
                for k in 0..masks {
                    let lp = bernoulli_log_prob(&m.mask_logits(k, &x).unwrap(), &x).unwrap();
                    let total: f64 = host(&lp).iter().map(|&v| (v as f64).exp()).sum();
                    assert!((total - 1.0).abs() < 1e-4, "{cfg:?} mask {k}: {total}");
                }
            }
        }
    }
}

/// Under mask k the logit of the dimension at position t depends on the dimensions at
/// positions < t only: flipping the pixel at position s moves no logit at positions <= s,
/// and (with the direct connection) moves a later one.
#[test]
fn each_mask_is_autoregressive_in_its_own_order() {
    let n = 10;
    for direct in [false, true] {
        let cfg = made(n, &[8, 7], 4, direct, Activation::Tanh);
        let m = build(
            &cfg,
            &random_params(&ModelConfig::Made(cfg.clone()), 5, 1.0),
        );
        let orders: Vec<Vec<usize>> = m.connectivity().iter().map(|c| c.order.clone()).collect();
        assert!(
            orders.windows(2).any(|w| w[0] != w[1]),
            "random orders differ"
        );
        let base = random_binary(1, n, 0.5, 2);
        for (k, order) in orders.iter().enumerate() {
            let before = host(&m.mask_logits(k, &rows(&base, n)).unwrap());
            for s in 0..n {
                let mut flipped = base.clone();
                flipped[order[s]] = 1.0 - flipped[order[s]];
                let after = host(&m.mask_logits(k, &rows(&flipped, n)).unwrap());
                for &d in &order[..=s] {
                    assert_eq!(
                        before[d], after[d],
                        "mask {k}: x_{} moved logit {d}",
                        order[s]
                    );
                }
                if direct && s + 1 < n {
                    let moved = order[s + 1..]
                        .iter()
                        .any(|&d| (before[d] - after[d]).abs() > 1e-6);
                    assert!(moved, "mask {k}: flipping position {s} moved nothing later");
                }
            }
        }
    }
}

/// The parallel logits of every mask, and the mixture's log p(x), equal the float64
/// reference written from the issue's formulas (one logit at a time).
#[test]
fn parallel_logits_and_mixture_equal_the_f64_reference() {
    let (n, count) = (12, 7);
    for act in ACTIVATIONS {
        for direct in [false, true] {
            let cfg = made(n, &[9, 6], 3, direct, act);
            let params = random_params(&ModelConfig::Made(cfg.clone()), 8, 1.0);
            let m = build(&cfg, &params);
            let reference = made_reference(&cfg, &params);
            let x = random_binary(count, n, 0.4, 1);
            let log_p = host(&m.log_prob(&rows(&x, n), Pass::Eval).unwrap());
            for k in 0..3 {
                let got = host(&m.mask_logits(k, &rows(&x, n)).unwrap());
                for r in 0..count {
                    let row: Vec<f64> = x[r * n..(r + 1) * n].iter().map(|&v| v as f64).collect();
                    let want = reference.logits(k, &row);
                    for d in 0..n {
                        let err = (got[r * n + d] as f64 - want[d]).abs();
                        assert!(
                            err < 1e-4 * (1.0 + want[d].abs()),
                            "{cfg:?} mask {k} row {r} logit {d}"
                        );
                    }
                    if k == 0 {
                        let want = reference.log_prob(&row, 3);
                        let err = (log_p[r] as f64 - want).abs();
                        assert!(
                            err < 1e-4 * (1.0 + want.abs()),
                            "{cfg:?} row {r}: {} vs {want}",
                            log_p[r]
                        );
                    }
                }
            }
        }
    }
}

/// Dropout in training (`model.dropout`): the training pass of step s is the f64 reference
/// with every hidden unit multiplied by step s's keep-mask (0, or 1 / (1 - p) for about a
/// fraction 1 - p of them, drawn anew per step and the same for the same step), under the
/// mask that step cycles to; evaluation keeps every unit; p outside [0, 1) is refused.
#[test]
fn dropout_trains_the_reference_with_the_steps_keep_masks() {
    let (n, count, p) = (10, 6, 0.5);
    let cfg = MadeConfig {
        dropout: p,
        ..made(n, &[40, 30], 3, true, Activation::Relu)
    };
    let params = random_params(&ModelConfig::Made(cfg.clone()), 4, 1.0);
    let m = build(&cfg, &params);
    let reference = made_reference(&cfg, &params);
    let x = random_binary(count, n, 0.4, 2);
    let mut dropped = 0;
    for step in 0..4u64 {
        let keep = cfg.dropout_masks(step, count, &Device::Cpu).unwrap();
        let again = cfg.dropout_masks(step, count, &Device::Cpu).unwrap();
        let keep: Vec<Vec<f32>> = keep.iter().map(host).collect();
        assert_eq!(
            keep,
            again.iter().map(host).collect::<Vec<_>>(),
            "step {step}"
        );
        let next = cfg.dropout_masks(step + 1, count, &Device::Cpu).unwrap();
        assert_ne!(
            keep[0],
            host(&next[0]),
            "step {step}: the same mask as the next step"
        );
        for layer in &keep {
            assert!(layer.iter().all(|&v| v == 0.0 || v == 2.0), "{layer:?}");
            dropped += layer.iter().filter(|&&v| v == 0.0).count();
        }
        let got = host(&m.log_prob(&rows(&x, n), Pass::Train { step }).unwrap());
        for (r, &got) in got.iter().enumerate() {
            let row: Vec<f64> = x[r * n..(r + 1) * n].iter().map(|&v| v as f64).collect();
            let keep_r: Vec<Vec<f64>> = keep
                .iter()
                .zip(&cfg.hidden)
                .map(|(layer, &h)| {
                    layer[r * h..(r + 1) * h]
                        .iter()
                        .map(|&v| v as f64)
                        .collect()
                })
                .collect();
            let logits = reference.logits_with_dropout((step % 3) as usize, &row, &keep_r);
            let want: f64 = logits
                .iter()
                .zip(&row)
                .map(|(&l, &v)| v * l - (l.max(0.0) + (-l.abs()).exp().ln_1p()))
                .sum();
            let err = (got as f64 - want).abs();
            assert!(
                err < 1e-4 * (1.0 + want.abs()),
                "step {step} row {r}: {got} vs {want}"
            );
        }
    }
    // 4 steps of 6 rows of 70 units, each dropped with probability 1/2: 840 +- 5 sd (20.5).
    let units = 4 * count * 70;
    assert!(
        dropped.abs_diff(units / 2) < 103,
        "{dropped} of {units} dropped"
    );
    // Evaluation keeps every unit: the plain mixture.
    let eval = host(&m.log_prob(&rows(&x, n), Pass::Eval).unwrap());
    for (r, &got) in eval.iter().enumerate() {
        let row: Vec<f64> = x[r * n..(r + 1) * n].iter().map(|&v| v as f64).collect();
        let want = reference.log_prob(&row, 3);
        assert!(
            (got as f64 - want).abs() < 1e-4 * (1.0 + want.abs()),
            "row {r}"
        );
    }
    for bad in [1.0, -0.1, f64::NAN] {
        let e = ModelConfig::Made(MadeConfig {
            dropout: bad,
            ..cfg.clone()
        })
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("model.dropout"), "{e}");
    }
}

/// The K-mask model's density is log mean_k p_k(x), where p_k is a one-mask model holding
/// the same weights and row k of the orders and degrees; --masks K' takes the first K'.
#[test]
fn the_ensemble_is_the_log_mean_exp_of_its_single_masks() {
    let (n, k_all) = (10, 5);
    let cfg = made(n, &[8], k_all, true, Activation::Relu);
    let params = random_params(&ModelConfig::Made(cfg.clone()), 4, 1.0);
    let ensemble = build(&cfg, &params);
    let x = rows(&random_binary(9, n, 0.5, 3), n);
    let singles: Vec<Vec<f64>> = (0..k_all)
        .map(|k| {
            let one = MadeConfig {
                masks: 1,
                ..cfg.clone()
            };
            let mut p = params.clone();
            p.insert("order".into(), params["order"][k * n..(k + 1) * n].to_vec());
            p.insert(
                "degrees1".into(),
                params["degrees1"][k * 8..(k + 1) * 8].to_vec(),
            );
            let single = build(&one, &p);
            host(&single.log_prob(&x, Pass::Eval).unwrap())
                .iter()
                .map(|&v| v as f64)
                .collect()
        })
        .collect();
    for used in [1, 3, k_all] {
        let model_cfg = ModelConfig::Made(cfg.clone()).with_masks(used).unwrap();
        let model = models::rebuilt(&ensemble, &model_cfg, &Device::Cpu).unwrap();
        let got = host(&model.log_prob(&x, Pass::Eval).unwrap());
        for r in 0..9 {
            let mean: f64 = singles[..used].iter().map(|s| s[r].exp()).sum::<f64>() / used as f64;
            assert!(
                (got[r] as f64 - mean.ln()).abs() < 1e-4,
                "K' = {used}, row {r}"
            );
        }
        assert_eq!(model.config().masks_used(), Some(used));
    }
    assert!(ModelConfig::Made(cfg.clone())
        .with_masks(k_all + 1)
        .is_err());
    assert!(ModelConfig::Made(cfg).with_masks(0).is_err());
}

/// The evaluator that `nade eval` uses (each mask's W * M made once, `models::evaluator`)
/// gives what the model's own evaluation gives, mixture and components: bit for bit on the
/// CPU (the same staircase products), to f32 rounding elsewhere. Random orders with the
/// direct connection per mask, a shared natural order (one A * M_A for all masks), one mask
/// without it; two hidden layers wider than the CPU path's bands of 16 units.
#[test]
fn the_prepared_evaluator_equals_the_models_own_evaluation() {
    let cases = [
        (
            made(20, &[24, 18], 5, true, Activation::Relu),
            "random orders",
        ),
        (
            MadeConfig {
                order: OrderChoice::Natural,
                ..made(20, &[24, 18], 4, true, Activation::Tanh)
            },
            "shared order",
        ),
        (made(20, &[33], 1, false, Activation::Sigmoid), "one mask"),
    ];
    for device in nade::device::available() {
        for (cfg, what) in &cases {
            let cfg = ModelConfig::Made(cfg.clone());
            let tensors = random_params(&cfg, 8, 1.0);
            let tensors = cfg
                .param_specs()
                .into_iter()
                .map(|s| {
                    let values = tensors[&s.name].clone();
                    (s.name, Tensor::from_vec(values, s.shape, &device).unwrap())
                })
                .collect();
            let model = models::build_frozen(&cfg, tensors, &device).unwrap();
            let evaluator = models::evaluator(model.as_ref()).unwrap();
            let x = Tensor::from_vec(random_binary(37, 20, 0.4, 9), (37, 20), &device).unwrap();
            let want = host(&model.log_prob(&x, Pass::Eval).unwrap());
            let got = host(&evaluator.log_prob(&x).unwrap());
            let want_parts = model.component_log_probs(&x).unwrap().unwrap();
            let got_parts = evaluator.component_log_probs(&x).unwrap().unwrap();
            if device.is_cpu() {
                assert_eq!(got, want, "{what}: mixture");
                assert_eq!(got_parts, want_parts, "{what}: components");
            } else {
                let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
                let diff = max_abs_diff(&got, &want);
                assert!(diff < 1e-5 * scale, "{device:?} {what}: differs by {diff}");
                for (g, w) in got_parts.iter().flatten().zip(want_parts.iter().flatten()) {
                    assert!((g - w).abs() < 1e-5 * scale as f64, "{device:?} {what}");
                }
            }
        }
    }
}

/// Training with mask k = step mod K: the entries that mask k cuts get an exactly zero
/// gradient, others do not; an Adam step leaves the stored weights unmasked (cut entries keep
/// their nonzero values, and the first step, with no momentum yet, does not move them).
#[test]
fn masked_weights_get_zero_gradient_and_are_never_overwritten() {
    let n = 8;
    let cfg = MadeConfig {
        resample: Resample::Cycle,
        ..made(n, &[6, 5], 3, true, Activation::Tanh)
    };
    let model_cfg = ModelConfig::Made(cfg.clone());
    let params = random_params(&model_cfg, 2, 1.0);
    let reference = build(&cfg, &params);
    let tensors = model_cfg
        .param_specs()
        .into_iter()
        .map(|s| {
            let t = Tensor::from_vec(params[&s.name].clone(), s.shape.clone(), &Device::Cpu);
            (s.name, t.unwrap())
        })
        .collect();
    let trainable = Trainable::new(&model_cfg, tensors, &Device::Cpu).unwrap();
    let mut adam = Optimizer::new(trainable.named_vars(), &[], OptimConfig::default()).unwrap();
    let x = rows(&random_binary(16, n, 0.5, 6), n);
    let value = |name: &str| {
        let data = trainable.varmap.data().lock().unwrap();
        host(data[name].as_tensor())
    };
    for step in 0..6u64 {
        let k = (step % 3) as usize;
        let conn = &reference.connectivity()[k];
        let m0 = conn.input_degrees();
        // (name, rows' degrees, columns' degrees, strict) of every masked matrix.
        let masked = [
            ("W1", conn.degrees[0].clone(), m0.clone(), false),
            (
                "W2",
                conn.degrees[1].clone(),
                conn.degrees[0].clone(),
                false,
            ),
            ("V", m0.clone(), conn.degrees[1].clone(), true),
            ("A", m0.clone(), m0.clone(), true),
        ];
        let loss = models::mean_nll(trainable.model.as_ref(), &x, adam.steps_taken()).unwrap();
        let grads = loss.backward().unwrap();
        let before: Vec<Vec<f32>> = masked.iter().map(|(name, ..)| value(name)).collect();
        for (name, rows_deg, cols_deg, strict) in &masked {
            let var = trainable.varmap.data().lock().unwrap()[*name].clone();
            let g = host(grads.get(var.as_tensor()).unwrap());
            let mut live = false;
            for (i, &r) in rows_deg.iter().enumerate() {
                for (j, &c) in cols_deg.iter().enumerate() {
                    let allowed = r > c || (!strict && r == c);
                    let gij = g[i * cols_deg.len() + j];
                    if !allowed {
                        assert_eq!(
                            gij, 0.0,
                            "step {step}: {name}[{i}, {j}] is cut but has gradient {gij}"
                        );
                    } else if gij != 0.0 {
                        live = true;
                    }
                }
            }
            assert!(live, "step {step}: {name} has no gradient at all");
        }
        adam.step(&grads, 1e-2).unwrap();
        for ((name, rows_deg, cols_deg, strict), old) in masked.iter().zip(&before) {
            let new = value(name);
            for (i, &r) in rows_deg.iter().enumerate() {
                for (j, &c) in cols_deg.iter().enumerate() {
                    let at = i * cols_deg.len() + j;
                    if !(r > c || (!strict && r == c)) {
                        assert_ne!(new[at], 0.0, "step {step}: {name}[{i}, {j}] was zeroed");
                        if step == 0 {
                            assert_eq!(new[at], old[at], "{name}[{i}, {j}] moved at step 0");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn the_masked_linear_op_equals_the_plain_graph_in_values_and_gradients() {
    for device in nade::device::available() {
        masked_linear_equals_plain_on(&device);
    }
}

fn masked_linear_equals_plain_on(device: &Device) {
    // Small, and past the CPU path's bands of 16 units (a staircase of several steps).
    for (batch, k, out) in [(7, 11, 5), (37, 70, 45)] {
        masked_linear_of_size_equals_plain_on(device, batch, k, out);
    }
}

fn masked_linear_of_size_equals_plain_on(device: &Device, batch: usize, k: usize, out: usize) {
    use candle_core::Var;
    use nade::kernels::masked_linear::{masked_linear, DegreeMask, MaskedWeights};
    let tensor = |v: Vec<f32>, shape: (usize, usize)| Tensor::from_vec(v, shape, device).unwrap();
    let uniform = |len: usize, seed: u64| -> Vec<f32> {
        random_binary(len, 1, 0.5, seed)
            .iter()
            .zip(random_binary(len, 1, 0.3, seed + 100))
            .map(|(a, b)| a - 0.7 * b + 0.1)
            .collect()
    };
    // Degrees with ties, so strict and non-strict masks differ.
    let span = 9.max(k / 3);
    let rows: Vec<usize> = (0..out).map(|u| 1 + (u * 7 + 3) % span).collect();
    let cols: Vec<usize> = (0..k).map(|d| 1 + (d * 5 + 1) % span).collect();
    let weights = tensor(uniform(out * k, 4), (out, k));
    let input = tensor(uniform(batch * k, 5), (batch, k));
    // A loss that weighs every output differently, so each gradient entry is tested.
    let r = tensor(uniform(batch * out, 6), (batch, out));
    for (strict, input_grad) in [(false, false), (false, true), (true, false), (true, true)] {
        let mask = DegreeMask::new(&rows, &cols, strict, device).unwrap();
        let m = host(&mask.matrix);
        for (at, &v) in m.iter().enumerate() {
            let (rd, cd) = (rows[at / k], cols[at % k]);
            assert_eq!(
                v == 1.0,
                rd > cd || (!strict && rd == cd),
                "mask entry {at}"
            );
        }
        let (w, x) = (
            Var::from_tensor(&weights).unwrap(),
            Var::from_tensor(&input).unwrap(),
        );
        let fused = masked_linear(x.as_tensor(), w.as_tensor(), &mask, input_grad).unwrap();
        // W * M made once (an evaluation's): the same values as the op's forward.
        let prepared = MaskedWeights::new(w.as_tensor(), &mask).unwrap();
        let once = host(&prepared.apply(x.as_tensor()).unwrap());
        match device.is_cpu() {
            true => assert_eq!(once, host(&fused), "prepared weights"),
            false => assert!(max_abs_diff(&once, &host(&fused)) < 1e-5, "{device:?}"),
        }
        let plain = x
            .as_tensor()
            .matmul(&(w.as_tensor() * &mask.matrix).unwrap().t().unwrap())
            .unwrap();
        // Sums of up to k terms in another order: a tolerance relative to their size.
        let tolerance = |want: &[f32]| 1e-5 * want.iter().fold(1f32, |m, v| m.max(v.abs()));
        let want = host(&plain);
        let diff = max_abs_diff(&host(&fused), &want);
        assert!(
            diff < tolerance(&want),
            "{device:?}: values differ by {diff}"
        );
        let grads_of = |y: &Tensor| (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let (gf, gp) = (grads_of(&fused), grads_of(&plain));
        let dw = host(gf.get(w.as_tensor()).unwrap());
        let want = host(gp.get(w.as_tensor()).unwrap());
        let diff = max_abs_diff(&dw, &want);
        assert!(diff < tolerance(&want), "{device:?}: dW differs by {diff}");
        // Cut weights get exactly zero.
        for (g, m) in dw.iter().zip(&m) {
            assert!(
                *m == 1.0 || *g == 0.0,
                "{device:?}: a cut weight has gradient {g}"
            );
        }
        match gf.get(x.as_tensor()) {
            Some(dx) if input_grad => {
                let want = host(gp.get(x.as_tensor()).unwrap());
                let diff = max_abs_diff(&host(dx), &want);
                assert!(diff < tolerance(&want), "{device:?}: dx differs by {diff}");
            }
            None if !input_grad => {}
            other => panic!(
                "{device:?}: input_grad {input_grad} but dx is {}",
                if other.is_some() { "there" } else { "missing" }
            ),
        }
    }
}

/// 20,000 samples of a one-mask model in its random order and of mixtures of 3 and 4 masks
/// (random orders; natural order with the direct connection): the frequencies match the
/// exact p(x) of the mixture by a chi-square test at p = 0.001, and are rejected against
/// another model (the test has power).
#[test]
fn sample_frequencies_match_the_mixture() {
    let (n, draws) = (8, 20_000);
    let natural = MadeConfig {
        order: OrderChoice::Natural,
        ..made(n, &[7], 4, true, Activation::Sigmoid)
    };
    for (c, cfg) in [
        made(n, &[7], 1, true, Activation::Relu),
        made(n, &[6, 5], 3, false, Activation::Tanh),
        natural,
    ]
    .into_iter()
    .enumerate()
    {
        let model_cfg = ModelConfig::Made(cfg.clone());
        let m = model(
            &model_cfg,
            &random_params(&model_cfg, 40 + c as u64, 1.5),
            &Device::Cpu,
        );
        let samples = sample(m.as_ref(), draws, 5000, 42, &Device::Cpu).unwrap();
        let mut counts = vec![0u64; 1 << n];
        for row in samples.images.rows() {
            counts[index_of(row)] += 1;
        }
        let expected = expected_counts(m.as_ref(), n, &Device::Cpu, draws);
        let (stat, df) = chi_square(&counts, &expected);
        assert!(stat < chi2_999(df), "{cfg:?}: chi2 = {stat:.1} (df {df})");
        let other = model(
            &model_cfg,
            &random_params(&model_cfg, 999, 1.5),
            &Device::Cpu,
        );
        let wrong = expected_counts(other.as_ref(), n, &Device::Cpu, draws);
        let (stat, df) = chi_square(&counts, &wrong);
        assert!(
            stat > chi2_999(df),
            "{cfg:?}: the test cannot tell models apart"
        );
    }
}

/// Completion under a mixture whose 3 masks order the kept pixels {0, 1, 2} differently
/// (the kept set is a prefix of every order): the completions follow the exact p(x_rest |
/// x_kept) of the mixture, which weighs mask k by p_k(x_kept); drawing the mask uniformly
/// instead is rejected by the same test. A kept set that is not such a prefix is refused.
#[test]
fn completions_follow_the_mixture_posterior() {
    let (n, draws) = (7, 20_000);
    let cfg = made(n, &[8], 3, true, Activation::Tanh);
    let model_cfg = ModelConfig::Made(cfg.clone());
    let mut params = random_params(&model_cfg, 12, 2.0);
    let orders: [[usize; 7]; 3] = [
        [0, 1, 2, 3, 4, 5, 6],
        [2, 0, 1, 6, 5, 4, 3],
        [1, 2, 0, 4, 6, 3, 5],
    ];
    params.insert(
        "order".into(),
        orders.iter().flatten().map(|&d| d as f32).collect(),
    );
    let m = model(&model_cfg, &params, &Device::Cpu);
    let given = BinaryDataset::new(n, vec![1, 0, 1, 0, 0, 0, 0]).unwrap();
    let kept = BinaryDataset::new(n, vec![1, 1, 1, 0, 0, 0, 0]).unwrap();
    let out = complete_with(m.as_ref(), &given, &kept, draws, 4096, 8, &Device::Cpu).unwrap();
    let mut counts = vec![0u64; 1 << n];
    for row in out.rows() {
        assert_eq!(&row[..3], &given.row(0)[..3]);
        counts[index_of(row)] += 1;
    }
    let prefix = index_of(&given.row(0)[..3]);
    let conditional = |model: &dyn Autoregressive| -> Vec<f64> {
        let joint: Vec<f64> = exact_probs(model, n, &Device::Cpu)
            .into_iter()
            .enumerate()
            .map(|(x, p)| if x % 8 == prefix { p } else { 0.0 })
            .collect();
        let total: f64 = joint.iter().sum();
        joint.iter().map(|p| p / total).collect()
    };
    let test = |probs: &[f64]| {
        let (obs, exp): (Vec<u64>, Vec<f64>) = probs
            .iter()
            .zip(&counts)
            .filter(|(p, _)| **p > 0.0)
            .map(|(p, &o)| (o, p * draws as f64))
            .unzip();
        let (stat, df) = chi_square(&obs, &exp);
        (stat, chi2_999(df))
    };
    let (stat, limit) = test(&conditional(m.as_ref()));
    assert!(stat < limit, "chi2 = {stat:.1} >= {limit:.1}");
    // The same masks drawn uniformly: the mean of the per-mask conditionals.
    let mut uniform = vec![0.0; 1 << n];
    for k in 0..3 {
        let one = MadeConfig {
            masks: 1,
            ..cfg.clone()
        };
        let mut p = params.clone();
        p.insert(
            "order".into(),
            orders[k].iter().map(|&d| d as f32).collect(),
        );
        p.insert(
            "degrees1".into(),
            params["degrees1"][k * 8..(k + 1) * 8].to_vec(),
        );
        let single = model(&ModelConfig::Made(one), &p, &Device::Cpu);
        for (u, q) in uniform.iter_mut().zip(conditional(single.as_ref())) {
            *u += q / 3.0;
        }
    }
    let (stat, limit) = test(&uniform);
    assert!(
        stat > limit,
        "a uniform mask choice passes too: the test has no power"
    );

    let not_prefix = BinaryDataset::new(n, vec![1, 1, 0, 0, 0, 0, 0]).unwrap();
    let e = complete_with(m.as_ref(), &given, &not_prefix, 2, 2, 1, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("every one of its 3 components") && e.contains("image 0"),
        "{e}"
    );
}

/// `nade eval --masks K'` evaluates the first K' masks and says so in the JSON; a K' the
/// model does not have, or --masks on a model without masks, is a one-line error.
#[test]
fn the_curve_over_masks_equals_evaluating_the_first_k_masks() {
    let dir = tempfile::tempdir().unwrap();
    let n = 6;
    let data = dir.path().join("toy.amat");
    std::fs::write(
        &data,
        "0 1 1 0 1 0\n1 1 0 0 0 1\n0 0 0 0 1 1\n1 1 1 0 0 0\n0 1 0 1 0 1\n",
    )
    .unwrap();
    let cfg = ModelConfig::Made(made(n, &[5], 5, true, Activation::Relu));
    let m = model(&cfg, &random_params(&cfg, 3, 1.0), &Device::Cpu);
    let ckpt = dir.path().join("made.safetensors");
    checkpoint::save(&ckpt, m.as_ref(), &Default::default()).unwrap();
    let rows_data = nade::data::amat::read_amat(&data).unwrap();
    let out = common::bin::nade(&[
        "eval",
        ckpt.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--curve",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let curve = json["curve"].as_array().unwrap();
    let ks: Vec<u64> = curve
        .iter()
        .map(|p| p["components"].as_u64().unwrap())
        .collect();
    assert_eq!(ks, [1, 2, 4, 5]);
    for point in curve {
        let k = point["components"].as_u64().unwrap() as usize;
        let first_k =
            models::rebuilt(m.as_ref(), &cfg.with_masks(k).unwrap(), &Device::Cpu).unwrap();
        let want = nade::eval::nll(first_k.as_ref(), &rows_data, 2, &Device::Cpu, false).unwrap();
        let got = point["nll_nats"].as_f64().unwrap();
        assert!(
            (got - want.nll_nats).abs() < 1e-5 * want.nll_nats,
            "k = {k}: {got} vs {}",
            want.nll_nats
        );
    }
    // The whole mixture is the last point, and the curve's k differ (the test has power).
    assert_eq!(json["nll_nats"], curve[3]["nll_nats"]);
    assert_ne!(curve[0]["nll_nats"], curve[3]["nll_nats"]);
    // Each mask alone: the mean over images of its own log p, and the mean over masks.
    let each = &json["each_component"];
    assert_eq!(each["components"], 5);
    let x = rows_data
        .tensor_range(0, rows_data.len(), &Device::Cpu)
        .unwrap();
    let per_row = m.component_log_probs(&x).unwrap().unwrap();
    let mut means = Vec::new();
    for k in 0..5 {
        let want = -per_row.iter().map(|r| r[k]).sum::<f64>() / per_row.len() as f64;
        let got = each["nll_nats"][k].as_f64().unwrap();
        assert!(
            (got - want).abs() < 1e-9 * want,
            "mask {k}: {got} vs {want}"
        );
        means.push(want);
    }
    let got = each["mean_nll_nats"].as_f64().unwrap();
    assert!((got - means.iter().sum::<f64>() / 5.0).abs() < 1e-9 * got);
    assert!(each["mean_std_err"].as_f64().unwrap() > 0.0);
    let first = curve[0]["nll_nats"].as_f64().unwrap();
    assert!((each["nll_nats"][0].as_f64().unwrap() - first).abs() < 1e-5 * first);

    let nade_cfg = new_config("nade", n, 3);
    let plain = model(&nade_cfg, &random_params(&nade_cfg, 1, 1.0), &Device::Cpu);
    let nade_ckpt = dir.path().join("nade.safetensors");
    checkpoint::save(&nade_ckpt, plain.as_ref(), &Default::default()).unwrap();
    let out = common::bin::nade(&[
        "eval",
        nade_ckpt.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--curve",
    ]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success()
            && err.trim_end().lines().count() == 1
            && err.contains("a nade model is neither"),
        "{err}"
    );
}

#[test]
fn eval_masks_flag_uses_the_first_masks_and_reports_them() {
    let dir = tempfile::tempdir().unwrap();
    let n = 6;
    let data = dir.path().join("toy.amat");
    std::fs::write(&data, "0 1 1 0 1 0\n1 1 0 0 0 1\n0 0 0 0 1 1\n").unwrap();
    let cfg = ModelConfig::Made(made(n, &[5], 4, false, Activation::Relu));
    let m = model(&cfg, &random_params(&cfg, 1, 1.0), &Device::Cpu);
    let ckpt = dir.path().join("made.safetensors");
    checkpoint::save(&ckpt, m.as_ref(), &Default::default()).unwrap();
    let rows_data = nade::data::amat::read_amat(&data).unwrap();
    for used in [None, Some(2)] {
        let mut args = vec![
            "eval",
            ckpt.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--json",
            "--device",
            "cpu",
        ];
        let k = used.map(|k: usize| k.to_string());
        if let Some(k) = &k {
            args.extend(["--masks", k.as_str()]);
        }
        let out = common::bin::nade(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["masks"], used.unwrap_or(4));
        let lib_cfg = cfg.with_masks(used.unwrap_or(4)).unwrap();
        let lib = models::rebuilt(m.as_ref(), &lib_cfg, &Device::Cpu).unwrap();
        let want = nade::eval::nll(lib.as_ref(), &rows_data, 2, &Device::Cpu, false).unwrap();
        assert!((json["nll_nats"].as_f64().unwrap() - want.nll_nats).abs() < 1e-9);
    }
    let one = common::bin::nade(&[
        "eval",
        ckpt.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--masks",
        "1",
        "--json",
    ]);
    let all = common::bin::nade(&[
        "eval",
        ckpt.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--json",
    ]);
    assert_ne!(one.stdout, all.stdout, "--masks 1 changed nothing");
    let out = common::bin::nade(&[
        "eval",
        ckpt.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--masks",
        "5",
    ]);
    let err = common::bin::refused(&out);
    assert!(
        err.starts_with("error: --masks 5") && err.contains("4 mask"),
        "{err}"
    );
}

/// `nade bench --model made` runs its three phases.
#[test]
fn bench_runs_made() {
    let out = common::bin::nade(&[
        "bench",
        "--model",
        "made",
        "--hidden",
        "8",
        "--batch",
        "10",
        "--seconds",
        "0.01",
        "--device",
        "cpu",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let phases: Vec<&str> = lines.iter().map(|l| l["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, ["eval", "train", "sample"]);
    assert!(lines
        .iter()
        .all(|l| l["model"] == "made" && l["images_per_s"].as_f64().unwrap() > 0.0));
}

fn markov_data(dir: &Path) -> String {
    markov_splits(
        dir,
        10,
        0.9,
        [("train", 600, 1), ("valid", 200, 2), ("test", 200, 3)],
    )
    .display()
    .to_string()
}

fn run_config(dir: &Path, resample: &str, epochs: usize) -> Config {
    let text = format!(
        r#"
[model]
kind = "made"
hidden = [12]
masks = 3
order = "random"
resample = "{resample}"
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

/// With K = 3 masks (cycled, or a fresh one each step), 2 epochs + 2 resumed epochs end
/// bit for bit where 4 straight epochs do; and the mask really changes per minibatch (the
/// two resample modes train to different weights).
#[test]
fn resumed_made_run_with_k_masks_is_bit_identical() {
    let quiet = Options {
        resume: false,
        progress: nade::train::Progress::Off,
        test: false,
        force: false,
    };
    let mut lasts = Vec::new();
    for resample in ["cycle", "fresh"] {
        let whole = tempfile::tempdir().unwrap();
        train::run(&run_config(whole.path(), resample, 4), &quiet).unwrap();
        let split = tempfile::tempdir().unwrap();
        let mut cfg = run_config(split.path(), resample, 2);
        train::run(&cfg, &quiet).unwrap();
        cfg.train.epochs = 4;
        train::run(
            &cfg,
            &Options {
                resume: true,
                ..quiet
            },
        )
        .unwrap();
        let (a, b) = (whole.path().join("out"), split.path().join("out"));
        let last = checkpoint_snapshot(&a.join("last.safetensors"));
        assert_eq!(
            last,
            checkpoint_snapshot(&b.join("last.safetensors")),
            "{resample}"
        );
        assert_eq!(
            checkpoint_snapshot(&a.join("best.safetensors")),
            checkpoint_snapshot(&b.join("best.safetensors")),
            "{resample}"
        );
        lasts.push(last);
    }
    assert_ne!(
        lasts[0], lasts[1],
        "cycle and fresh trained the same weights"
    );
}

/// The used-parameter count (`nade info`, the README's table) is the number of entries that
/// receive a gradient under at least one of the K stored masks: random tanh weights and 64
/// random images give every entry on an input-output path a non-zero gradient, and the others
/// (cut by a mask, or into a dead unit that reaches no output) none.
#[test]
fn used_parameters_are_the_entries_some_mask_connects() {
    let n = 9;
    let cfg = MadeConfig {
        resample: Resample::Cycle,
        order: OrderChoice::Random,
        ..made(n, &[7, 6], 3, true, Activation::Tanh)
    };
    let model_cfg = ModelConfig::Made(cfg.clone());
    let params = random_params(&model_cfg, 4, 1.0);
    let (model, varmap) = model_with_vars(&model_cfg, &params, &Device::Cpu);
    let x = rows(&random_binary(64, n, 0.5, 9), n);
    let mut touched: HashMap<String, Vec<bool>> = HashMap::new();
    for step in 0..3u64 {
        let grads = models::mean_nll(model.as_ref(), &x, step)
            .unwrap()
            .backward()
            .unwrap();
        for name in ["W1", "b1", "W2", "b2", "V", "A"] {
            let var = varmap.data().lock().unwrap()[name].clone();
            let g = host(grads.get(var.as_tensor()).unwrap());
            let seen = touched
                .entry(name.to_string())
                .or_insert_with(|| vec![false; g.len()]);
            for (s, v) in seen.iter_mut().zip(&g) {
                *s |= *v != 0.0;
            }
        }
    }
    let specs = model_cfg.param_specs();
    for name in ["W1", "b1", "W2", "b2", "V", "A"] {
        let spec = specs.iter().find(|s| s.name == name).unwrap();
        let live = touched[name].iter().filter(|&&t| t).count();
        assert_eq!(
            spec.used, live,
            "{name}: used {} vs {live} with a gradient",
            spec.used
        );
        if name.starts_with(['W', 'V', 'A']) {
            assert!(live < spec.len(), "{name}: some entries must be cut");
        }
    }
}
