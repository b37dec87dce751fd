//! The math of every model: normalization, the autoregressive property, the blocked NADE path
//! against the plain one, and the parallel logits against a naive per-dimension loop
//! (tests/common/naive.rs).

use candle_core::{Device, Tensor};
use nade::device;
use nade::models::deepnade::DeepNadeConfig;
use nade::models::{self, bernoulli_log_prob, ModelConfig, NadeKernel, Pass};

use crate::common;
use crate::common::*;

fn logits_of(model: &dyn models::Autoregressive, x: &[f32], n: usize, device: &Device) -> Vec<f32> {
    let x = Tensor::from_vec(x.to_vec(), (x.len() / n, n), device).unwrap();
    model
        .logits(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

#[test]
fn every_model_sums_to_one_over_all_vectors() {
    for device in device::available() {
        for n in [1, 2, 7, 10, 12] {
            for cfg in all_configs(n) {
                let model = model(&cfg, &random_params(&cfg, 7, 1.5), &device);
                let x = Tensor::from_vec(all_binary_vectors(n), (1 << n, n), &device).unwrap();
                let log_p = model
                    .log_prob(&x, Pass::Eval)
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                let total: f64 = log_p.iter().map(|&lp| (lp as f64).exp()).sum();
                assert!(
                    (total - 1.0).abs() < 1e-4,
                    "{cfg:?} on {device:?}: sum p(x) = {total}"
                );
            }
        }
    }
}

#[test]
fn logit_i_never_depends_on_x_j_for_j_at_or_after_i() {
    let n = 11;
    for device in device::available() {
        for cfg in all_configs(n) {
            let model = model(&cfg, &random_params(&cfg, 3, 1.0), &device);
            let base = random_binary(1, n, 0.5, 11);
            let before = logits_of(model.as_ref(), &base, n, &device);
            for j in 0..n {
                let mut flipped = base.clone();
                flipped[j] = 1.0 - flipped[j];
                let after = logits_of(model.as_ref(), &flipped, n, &device);
                for i in 0..=j {
                    assert_eq!(
                        before[i], after[i],
                        "{cfg:?}: flipping x_{j} changed logit {i}"
                    );
                }
                // And the model is not trivially constant: some later logit must move.
                if j + 1 < n {
                    let moved = (j + 1..n).any(|i| (before[i] - after[i]).abs() > 1e-6);
                    assert!(moved, "{cfg:?}: flipping x_{j} changed no later logit");
                }
            }
        }
    }
}

#[test]
fn parallel_logits_equal_a_naive_loop_over_dimensions() {
    let (n, rows) = (30, 6);
    for device in device::available() {
        let mut cfgs = all_configs(n);
        cfgs.push(config("nade", n, 5, NadeKernel::Blocked(28)));
        // Deep NADE's logits walk its first stored ordering, here a random one.
        cfgs.push(ModelConfig::DeepNade(DeepNadeConfig {
            orders: 3,
            seed: 4,
            ..DeepNadeConfig::with_hidden(n, vec![7, 5])
        }));
        for cfg in cfgs {
            let params = random_params(&cfg, 5, 1.0);
            let model = model(&cfg, &params, &device);
            let x = random_binary(rows, n, 0.3, 9);
            let got = logits_of(model.as_ref(), &x, n, &device);
            for r in 0..rows {
                let want = naive_logits(&cfg, &params, &x[r * n..(r + 1) * n]);
                for i in 0..n {
                    let err = (got[r * n + i] as f64 - want[i]).abs();
                    assert!(
                        err < 1e-4 * (1.0 + want[i].abs()),
                        "{cfg:?}: row {r} logit {i}: {} vs {}",
                        got[r * n + i],
                        want[i]
                    );
                }
            }
        }
    }
}

#[test]
fn blocked_and_fused_nade_equal_plain_nade_in_values_and_gradients() {
    // n = 784, d = 16: the MNIST shape, with blocks that divide n (28), do not (50), and k = 1.
    let (n, d, rows) = (784, 16, 8);
    for device in device::available() {
        let plain_cfg = config("nade", n, d, NadeKernel::Plain);
        let params = random_params(&plain_cfg, 21, 0.2);
        let x = Tensor::from_vec(random_binary(rows, n, 0.13, 2), (rows, n), &device).unwrap();
        let (plain, plain_vars) = model_with_vars(&plain_cfg, &params, &device);
        let plain_loss = models::mean_nll(plain.as_ref(), &x, 0).unwrap();
        let plain_grads = plain_loss.backward().unwrap();
        let plain_logits = plain
            .logits(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mut paths = vec![
            NadeKernel::Blocked(28),
            NadeKernel::Blocked(50),
            NadeKernel::Blocked(1),
        ];
        if NadeKernel::fused_runs_on(&device) {
            paths.push(NadeKernel::Fused);
        }
        for path in paths {
            let k = path;
            let cfg = config("nade", n, d, path);
            let (blocked, vars) = model_with_vars(&cfg, &params, &device);
            let logits = blocked
                .logits(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            // Both sum the same f32 terms in different orders (and fused uses its own exp,
            // within 3 ulp): a few ulps of |l| ~ 10.
            let diff = max_abs_diff(&plain_logits, &logits);
            assert!(diff < 1e-4, "{k}: logits differ by {diff}");
            let loss = models::mean_nll(blocked.as_ref(), &x, 0).unwrap();
            let grads = loss.backward().unwrap();
            for spec in cfg.param_specs() {
                let g_plain = plain_grads
                    .get(plain_vars.data().lock().unwrap()[&spec.name].as_tensor())
                    .unwrap();
                let g_blocked = grads
                    .get(vars.data().lock().unwrap()[&spec.name].as_tensor())
                    .unwrap();
                let a = g_plain.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let b = g_blocked.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
                let diff = max_abs_diff(&a, &b);
                assert!(scale > 0.0, "gradient of {} is zero", spec.name);
                assert!(
                    diff <= 1e-4 * scale.max(1.0),
                    "{k}: grad {} differs by {diff} (scale {scale})",
                    spec.name
                );
            }
        }
    }
}

#[test]
fn log_likelihood_is_finite_and_exact_for_huge_logits() {
    let device = Device::Cpu;
    let logits = Tensor::new(&[[1e4f32, -1e4, 1e4, -1e4, 0.0, 30.0]], &device).unwrap();
    let x = Tensor::new(&[[1f32, 0., 0., 1., 1., 0.]], &device).unwrap();
    let lp = bernoulli_log_prob(&logits, &x)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()[0];
    // Terms: 0, 0, -1e4, -1e4, -ln 2, -30 - ln(1 + e^-30).
    let want = -2e4 - std::f64::consts::LN_2 - 30.0;
    assert!(lp.is_finite());
    assert!(((lp as f64) - want).abs() < 1e-2, "{lp} vs {want}");
}

#[test]
fn nade_path_names_round_trip() {
    for path in [
        NadeKernel::Auto,
        NadeKernel::Fused,
        NadeKernel::Plain,
        NadeKernel::Blocked(28),
        NadeKernel::Blocked(7),
    ] {
        assert_eq!(path.to_string().parse::<NadeKernel>().unwrap(), path);
    }
    assert_eq!(
        "blocked".parse::<NadeKernel>().unwrap(),
        NadeKernel::Blocked(28)
    );
    for bad in ["fast", "blocked:0", "blocked:x", ""] {
        assert!(bad.parse::<NadeKernel>().is_err(), "{bad:?} parsed");
    }
}

#[test]
fn seeded_init_is_reproducible_and_seed_dependent() {
    let cfg = common::new_config("nade", 20, 4);
    let get = |seed| {
        models::init_params(&cfg, seed, &Device::Cpu)
            .unwrap()
            .into_iter()
            .map(|(_, t)| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(get(1), get(1));
    assert_ne!(get(1), get(2));
}

/// The fused NADE ops have three ways to a gradient: the one-pass log-likelihood with a
/// uniform upstream gradient (the mean NLL of training), the same op with per-image weights
/// (its fallback), and the logits op with its own two-pass backward. All must equal the plain
/// masked matmul's gradients, on every device with a fused kernel.
#[test]
fn fused_nade_gradients_equal_plain_through_every_entry_point() {
    for device in device::available() {
        if NadeKernel::fused_runs_on(&device) {
            fused_gradients_equal_plain_on(&device);
        }
    }
}

fn fused_gradients_equal_plain_on(device: &Device) {
    let device = device.clone();
    let (n, d, rows) = (50, 9, 6);
    let plain_cfg = config("nade", n, d, NadeKernel::Plain);
    let fused_cfg = config("nade", n, d, NadeKernel::Fused);
    let params = random_params(&plain_cfg, 8, 0.8);
    let x = Tensor::from_vec(random_binary(rows, n, 0.3, 4), (rows, n), &device).unwrap();
    let weights = Tensor::new(&[0.5f32, -1.0, 2.0, 0.0, 1.5, -0.25], &device).unwrap();
    type Loss = fn(&dyn models::Autoregressive, &Tensor, &Tensor) -> Tensor;
    let losses: [(&str, Loss); 3] = [
        ("mean NLL", |m, x, _| models::mean_nll(m, x, 0).unwrap()),
        ("weighted log p", |m, x, w| {
            (m.log_prob(x, Pass::Train { step: 0 }).unwrap() * w)
                .unwrap()
                .sum_all()
                .unwrap()
        }),
        ("through logits", |m, x, w| {
            let lp = bernoulli_log_prob(&m.logits(x).unwrap(), x).unwrap();
            (lp * w).unwrap().sum_all().unwrap()
        }),
    ];
    for (what, loss) in losses {
        let grads_of = |cfg: &ModelConfig| {
            let (m, vars) = model_with_vars(cfg, &params, &device);
            let grads = loss(m.as_ref(), &x, &weights).backward().unwrap();
            let vars = vars.data().lock().unwrap();
            cfg.param_specs()
                .iter()
                .map(|s| {
                    grads
                        .get(vars[&s.name].as_tensor())
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()
                })
                .collect::<Vec<_>>()
        };
        for (spec, (a, b)) in plain_cfg
            .param_specs()
            .iter()
            .zip(grads_of(&plain_cfg).iter().zip(&grads_of(&fused_cfg)))
        {
            let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = max_abs_diff(a, b);
            assert!(scale > 0.0, "{what}: gradient of {} is zero", spec.name);
            assert!(
                diff <= 1e-4 * scale.max(1.0),
                "{what}: grad {} differs by {diff} (scale {scale})",
                spec.name
            );
        }
    }
}

/// The fused evaluation op (log p without a gradient: what `nade eval` runs on CUDA) equals
/// the plain masked matmul's log p, on every device with a fused kernel.
#[test]
fn fused_evaluation_log_prob_equals_plain() {
    let (n, d, rows) = (784, 30, 9);
    for device in device::available() {
        if !NadeKernel::fused_runs_on(&device) {
            continue;
        }
        let plain_cfg = config("nade", n, d, NadeKernel::Plain);
        let params = random_params(&plain_cfg, 31, 0.2);
        let plain = model(&plain_cfg, &params, &device);
        let fused = model(&config("nade", n, d, NadeKernel::Fused), &params, &device);
        let x = Tensor::from_vec(random_binary(rows, n, 0.13, 5), (rows, n), &device).unwrap();
        let want = plain
            .log_prob(&x, Pass::Eval)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let packed = nade::kernels::nade_packed::pack(
            &Tensor::from_vec(params["W"].clone(), (d, n), &device).unwrap(),
            &Tensor::from_vec(params["c"].clone(), d, &device).unwrap(),
            &Tensor::from_vec(params["V"].clone(), (n, d), &device).unwrap(),
        )
        .unwrap();
        let b = Tensor::from_vec(params["b"].clone(), n, &device).unwrap();
        let got = nade::kernels::nade_log_prob::log_prob(&x, &packed, &b)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // log p ~ -500 here: f32 sums of 784 terms agree to a few 1e-5 relative.
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(
            max_abs_diff(&want, &got) < 1e-5 * scale,
            "{device:?}: {want:?} vs {got:?}"
        );
        let through_model = fused
            .log_prob(&x, Pass::Eval)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(max_abs_diff(&want, &through_model) < 1e-5 * scale);
    }
}

/// `len` values spread over about (-0.4, 1): distinct enough that every gradient entry of the
/// layer tests below is exercised.
fn spread_values(len: usize, seed: u64) -> Vec<f32> {
    random_binary(len, 1, 0.5, seed)
        .iter()
        .enumerate()
        .map(|(i, &b)| b - 0.37 * ((i * 7919 % 97) as f32 / 97.0))
        .collect()
}

/// Deep NADE's dense layer: values and all three gradients equal candle's matmul plus bias
/// (to float rounding: on the CPU the products are tiled, and W's gradient comes from
/// grad^T x, not from the transpose of x^T grad); an input without a graph gets no gradient, one with a graph gets
/// candle's.
#[test]
fn linear_equals_matmul_plus_bias_in_values_and_gradients() {
    use candle_core::Var;
    use nade::kernels::bias_add::bias_add;
    use nade::kernels::linear::linear;
    for device in device::available() {
        for (rows, k, n) in [
            (1usize, 1usize, 1usize),
            (7, 13, 5),
            (100, 300, 40),
            (300, 20, 70),
        ] {
            let w = Var::from_vec(spread_values(n * k, 2), (n, k), &device).unwrap();
            let b = Var::from_vec(spread_values(n, 3), n, &device).unwrap();
            // Weighs every output differently, so each gradient entry is tested.
            let r = Tensor::from_vec(spread_values(rows * n, 4), (rows, n), &device).unwrap();
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let grads = |y: &Tensor| (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let plain = |x: &Tensor| {
                bias_add(
                    &x.matmul(&w.as_tensor().t().unwrap()).unwrap(),
                    b.as_tensor(),
                )
                .unwrap()
            };
            let close = |what: &str, got: &[f32], want: &[f32]| {
                let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
                let diff = max_abs_diff(got, want);
                assert!(
                    diff <= 1e-5 * scale,
                    "{device:?} {what}, {rows} x {k} -> {n}: differ by {diff}"
                );
            };

            // An input with a graph (a layer above the first).
            let x = Var::from_vec(spread_values(rows * k, 1), (rows, k), &device).unwrap();
            let (fused, want) = (
                linear(x.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap(),
                plain(x.as_tensor()),
            );
            close("values", &flat(&fused), &flat(&want));
            let (gf, gp) = (grads(&fused), grads(&want));
            for (what, t) in [
                ("d x", x.as_tensor()),
                ("d W", w.as_tensor()),
                ("d b", b.as_tensor()),
            ] {
                close(what, &flat(gf.get(t).unwrap()), &flat(gp.get(t).unwrap()));
            }

            // An input without one (the first layer's [x * m ; m]): no gradient computed.
            let x = Tensor::from_vec(spread_values(rows * k, 5), (rows, k), &device).unwrap();
            let fused = linear(&x, w.as_tensor(), b.as_tensor()).unwrap();
            let (gf, gp) = (grads(&fused), grads(&plain(&x)));
            assert!(
                gf.get(&x).is_none(),
                "an input without a graph got a gradient"
            );
            close(
                "d W",
                &flat(gf.get(&w).unwrap()),
                &flat(gp.get(&w).unwrap()),
            );
        }
    }
}

/// The bias op of FVSBN, MADE and deep NADE is candle's broadcast addition with a faster
/// backward: values and both gradients equal candle's bit for bit on the CPU (the same sums in
/// the same order), and to float precision on the other devices.
#[test]
fn bias_add_equals_broadcast_add_in_values_and_gradients() {
    use candle_core::Var;
    use nade::kernels::bias_add::bias_add;
    for device in device::available() {
        for (rows, n) in [(1usize, 1usize), (7, 13), (100, 300)] {
            let a = Var::from_vec(spread_values(rows * n, 1), (rows, n), &device).unwrap();
            let b = Var::from_vec(spread_values(n, 2), n, &device).unwrap();
            // Weighs every output differently, so each gradient entry is tested.
            let r = Tensor::from_vec(spread_values(rows * n, 3), (rows, n), &device).unwrap();
            let fused = bias_add(a.as_tensor(), b.as_tensor()).unwrap();
            let plain = a.as_tensor().broadcast_add(b.as_tensor()).unwrap();
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let grads = |y: &Tensor| (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let (gf, gp) = (grads(&fused), grads(&plain));
            let pairs = [
                (flat(&fused), flat(&plain)),
                (flat(gf.get(&a).unwrap()), flat(gp.get(&a).unwrap())),
                (flat(gf.get(&b).unwrap()), flat(gp.get(&b).unwrap())),
            ];
            for (what, (got, want)) in ["values", "d a", "d b"].iter().zip(pairs) {
                if device.is_cpu() {
                    assert_eq!(got, want, "{what}, {rows} x {n}");
                } else {
                    let diff = max_abs_diff(&got, &want);
                    assert!(diff < 1e-4, "{device:?} {what}: differ by {diff}");
                }
            }
        }
    }
}
