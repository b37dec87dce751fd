//! The optimizer's L1 / L2 penalties are the gradients of the penalties they name; Adam's
//! in-place step is its tensor-op step; momentum SGD is the heavy-ball recurrence, and its
//! state survives a save and restore; the linear schedule's rates.

use candle_core::{Device, Tensor, Var};
use nade::config::{Method, Schedule, TrainSection};
use nade::optim::{LrSchedule, OptimConfig, Optimizer};

const L1: f64 = 0.3;
const L2: f64 = 1.0;

fn config(l1: f64, l2: f64) -> OptimConfig {
    OptimConfig {
        l1,
        l2,
        ..OptimConfig::default()
    }
}

/// A weight matrix and a bias, away from zero so |w| is differentiable.
fn params() -> Vec<(String, Var)> {
    let w: Vec<f32> = (0..12).map(|k| (k as f32 - 5.5) * 0.13).collect();
    let b: Vec<f32> = (0..4).map(|k| 0.4 - 0.3 * k as f32).collect();
    vec![
        (
            "W".to_string(),
            Var::from_tensor(&Tensor::from_vec(w, (3, 4), &Device::Cpu).unwrap()).unwrap(),
        ),
        (
            "b".to_string(),
            Var::from_tensor(&Tensor::from_vec(b, 4, &Device::Cpu).unwrap()).unwrap(),
        ),
    ]
}

/// A smooth data loss of both parameters: sum softplus(x W + b) - y (x W + b).
fn data_loss(p: &[(String, Var)]) -> Tensor {
    let x = Tensor::new(&[[1f32, 0., 1.], [0., 1., 1.]], &Device::Cpu).unwrap();
    let y = Tensor::new(&[[1f32, 0., 0., 1.], [0., 1., 1., 1.]], &Device::Cpu).unwrap();
    let logits = x
        .matmul(p[0].1.as_tensor())
        .unwrap()
        .broadcast_add(p[1].1.as_tensor())
        .unwrap();
    let softplus = (logits.exp().unwrap() + 1.0).unwrap().log().unwrap();
    (softplus - (logits * y).unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
}

fn values(p: &[(String, Var)]) -> Vec<f32> {
    p.iter()
        .flat_map(|(_, v)| v.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .collect()
}

#[test]
fn penalties_equal_their_terms_added_to_the_loss() {
    // One run lets Adam add the penalties; the other puts them into the loss and differentiates.
    let with_option = params();
    let mut adam = Optimizer::new(with_option.clone(), &["b"], config(L1, L2)).unwrap();
    let in_loss = params();
    let mut plain = Optimizer::new(in_loss.clone(), &["b"], config(0.0, 0.0)).unwrap();
    for _ in 0..20 {
        let grads = data_loss(&with_option).backward().unwrap();
        adam.step(&grads, 0.01).unwrap();

        let w = in_loss[0].1.as_tensor();
        let penalty = ((w.abs().unwrap().sum_all().unwrap() * L1).unwrap()
            + (w.sqr().unwrap().sum_all().unwrap() * (L2 / 2.0)).unwrap())
        .unwrap();
        let grads = (data_loss(&in_loss) + penalty).unwrap().backward().unwrap();
        plain.step(&grads, 0.01).unwrap();
    }
    let (a, b) = (values(&with_option), values(&in_loss));
    for (k, (a, b)) in a.iter().zip(&b).enumerate() {
        assert!((a - b).abs() < 1e-6, "parameter {k}: {a} vs {b}");
    }
    // The penalties moved the weights: without them the run ends elsewhere.
    let unpenalized = params();
    let mut free = Optimizer::new(unpenalized.clone(), &["b"], config(0.0, 0.0)).unwrap();
    for _ in 0..20 {
        free.step(&data_loss(&unpenalized).backward().unwrap(), 0.01)
            .unwrap();
    }
    let c = values(&unpenalized);
    assert!(a.iter().zip(&c).any(|(a, c)| (a - c).abs() > 1e-3));
}

/// The in-place Adam step of every device (CPU loop, CUDA kernel) equals the same step
/// written with tensor ops, over several steps with decay and clipping, within f32 rounding
/// (the CUDA compiler may fuse a multiply and an add).
#[test]
fn the_in_place_step_equals_the_tensor_op_step_on_every_device() {
    use nade::kernels::adam::{AdamStep, Update};
    for device in nade::device::available() {
        let numel = 1000;
        let start: Vec<f32> = (0..numel)
            .map(|k| ((k * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let grads: Vec<Vec<f32>> = (0..4)
            .map(|s| {
                (0..numel)
                    .map(|k| (((k + 13 * s) * 53) % 97) as f32 / 40.0 - 1.2)
                    .collect()
            })
            .collect();
        let run = |in_place: bool| -> Vec<f32> {
            let p = Var::from_tensor(&Tensor::from_vec(start.clone(), numel, &device).unwrap())
                .unwrap();
            let mut moments = Tensor::zeros((2, numel), candle_core::DType::F32, &device).unwrap();
            for (s, g) in grads.iter().enumerate() {
                let step = s as i32 + 1;
                let u = Update {
                    beta1: 0.9,
                    beta2: 0.999,
                    grad_scale: 0.7,
                    lr: 1e-2,
                    decay: 1.0 - 1e-2 * 0.02,
                    correction1: 1.0 - 0.9f32.powi(step),
                    correction2: 1.0 - 0.999f32.powi(step),
                    eps: 1e-8,
                };
                let g = Tensor::from_vec(g.clone(), numel, &device).unwrap();
                if in_place {
                    u.apply(&p, &g, &mut moments).unwrap();
                } else {
                    u.with_tensors(&p, &g, &mut moments).unwrap();
                }
            }
            p.as_tensor().to_vec1::<f32>().unwrap()
        };
        let (a, b) = (run(true), run(false));
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            diff < 1e-6,
            "{device:?}: in-place and tensor-op steps differ by {diff}"
        );
        assert!(a.iter().zip(&start).any(|(x, y)| x != y), "nothing moved");
    }
}

/// The in-place momentum-SGD step (the CPU loops) equals the tensor-op step bit for bit, over
/// several steps with decay, clipping and a zero gradient (the sign of a zero included): a run
/// resumed from either's checkpoint goes on identically. On the other devices `apply` is the
/// tensor-op step itself.
#[test]
fn the_in_place_sgd_step_equals_the_tensor_op_step_bit_for_bit() {
    use nade::kernels::sgd::SgdStep;
    for device in nade::device::available() {
        let numel = 50_000; // several chunks of the parallel loop
        let start: Vec<f32> = (0..numel)
            .map(|k| ((k * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let grads: Vec<Vec<f32>> = (0..4)
            .map(|s| {
                (0..numel)
                    .map(|k| match (k + s) % 7 {
                        0 => 0.0,
                        1 => -0.0,
                        _ => (((k + 13 * s) * 53) % 97) as f32 / 40.0 - 1.2,
                    })
                    .collect()
            })
            .collect();
        let run = |in_place: bool| -> (Vec<u32>, Vec<u32>) {
            let p = Var::from_tensor(&Tensor::from_vec(start.clone(), numel, &device).unwrap())
                .unwrap();
            let mut velocity = Tensor::zeros((1, numel), candle_core::DType::F32, &device).unwrap();
            for (s, g) in grads.iter().enumerate() {
                let step = SgdStep {
                    momentum: 0.9,
                    grad_scale: if s == 2 { 0.7 } else { 1.0 },
                    lr: 1e-2 / (s + 1) as f32,
                    decay: 1.0 - 1e-2 * 0.02,
                };
                let g = Tensor::from_vec(g.clone(), numel, &device).unwrap();
                if in_place {
                    step.apply(&p, &g, &mut velocity).unwrap();
                } else {
                    step.with_tensors(&p, &g, &mut velocity).unwrap();
                }
            }
            let bits = |t: &Tensor| -> Vec<u32> {
                t.flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect()
            };
            (bits(p.as_tensor()), bits(&velocity))
        };
        let (a, b) = (run(true), run(false));
        assert!(a.0 == b.0, "{device:?}: the weights differ");
        assert!(a.1 == b.1, "{device:?}: the velocities differ");
        assert!(
            a.0.iter().zip(&start).any(|(x, y)| *x != y.to_bits()),
            "nothing moved"
        );
    }
}

const TARGET: [f32; 6] = [0.5, -1.0, 2.0, 0.0, -0.25, 1.5];

/// The loss 1/2 sum (w - t)^2 of a weight vector w on `device`: its gradient is w - t.
fn quadratic(w: &Var) -> Tensor {
    let t = Tensor::new(&TARGET, w.device()).unwrap();
    ((w.as_tensor() - t)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        * 0.5)
        .unwrap()
}

fn sgd(momentum: f64, weight_decay: f64, clip_norm: f64) -> OptimConfig {
    OptimConfig {
        method: Method::Sgd,
        momentum,
        weight_decay,
        clip_norm,
        ..OptimConfig::default()
    }
}

/// Momentum SGD, on every device, follows v = momentum v + g (g clipped to the global norm),
/// w = (1 - lr wd) w - lr v, computed here in f64 from the same gradients.
#[test]
fn momentum_sgd_is_the_heavy_ball_recurrence_on_every_device() {
    let (lr, momentum, wd, clip) = (0.1, 0.9, 0.05, 2.0);
    for device in nade::device::available() {
        let start = [1.0f32, 1.0, -1.0, 3.0, 0.5, -2.0];
        let w = Var::from_tensor(&Tensor::new(&start, &device).unwrap()).unwrap();
        let mut opt =
            Optimizer::new(vec![("w".into(), w.clone())], &[], sgd(momentum, wd, clip)).unwrap();
        let mut expected: Vec<f64> = start.iter().map(|&x| x as f64).collect();
        let mut velocity = vec![0f64; start.len()];
        let mut clipped = false;
        for step in 0..12 {
            let g: Vec<f64> = expected
                .iter()
                .zip(TARGET)
                .map(|(w, t)| w - t as f64)
                .collect();
            let norm = g.iter().map(|g| g * g).sum::<f64>().sqrt();
            let scale = if norm > clip { clip / norm } else { 1.0 };
            clipped |= scale < 1.0;
            for k in 0..g.len() {
                velocity[k] = momentum * velocity[k] + scale * g[k];
                expected[k] = (1.0 - lr * wd) * expected[k] - lr * velocity[k];
            }
            let reported = opt.step(&quadratic(&w).backward().unwrap(), lr).unwrap();
            assert!(
                (reported - norm).abs() < 1e-4 * norm.max(1.0),
                "step {step}"
            );
            let got = w.as_tensor().to_vec1::<f32>().unwrap();
            for (k, (a, b)) in got.iter().zip(&expected).enumerate() {
                assert!(
                    (*a as f64 - b).abs() < 1e-5,
                    "{device:?} step {step}, weight {k}: {a} vs {b}"
                );
            }
        }
        assert!(clipped, "the test never exercised clipping");
        assert_eq!(opt.steps_taken(), 12);
    }
}

/// A gradient that carries a graph (what reaches a variable straight from a custom op, as
/// MADE's masked layer g^T h with h a tracked activation) leaves none in the optimizer's state:
/// SGD's velocity built from it would hold every step's forward graph alive.
#[test]
fn the_state_holds_no_graph_of_a_tracked_gradient() {
    for method in [Method::Adam, Method::Sgd] {
        let w = Var::from_tensor(
            &Tensor::new(&[1.0f32, -2.0, 0.5, 3.0, 0.0, -1.0], &Device::Cpu).unwrap(),
        )
        .unwrap();
        let other = Var::from_tensor(
            &Tensor::new(&[0.3f32, 0.1, -0.2, 0.4, -0.5, 0.6], &Device::Cpu).unwrap(),
        )
        .unwrap();
        let cfg = OptimConfig {
            method,
            ..OptimConfig::default()
        };
        let mut opt = Optimizer::new(vec![("w".into(), w.clone())], &[], cfg).unwrap();
        for _ in 0..3 {
            let mut grads = quadratic(&w).backward().unwrap();
            let g = grads.remove(w.as_tensor()).unwrap();
            let tracked = (g + (other.as_tensor() * 0.5).unwrap()).unwrap();
            assert!(tracked.track_op(), "the gradient given carries no graph");
            grads.insert(w.as_tensor(), tracked);
            opt.step(&grads, 0.1).unwrap();
        }
        for (name, t) in opt.state_tensors() {
            assert!(!t.track_op(), "{method:?}: `{name}` holds a graph");
        }
    }
}

/// SGD's velocity is its state: saved as optim.velocity.NAME and restored, the run goes on as
/// if never stopped; a fresh optimizer without it (zero velocity) goes elsewhere.
#[test]
fn sgd_velocity_round_trips_through_the_saved_state() {
    let w0 = [1.0f32, 1.0, -1.0, 3.0, 0.5, -2.0];
    let run = |steps: usize, w: &Var, opt: &mut Optimizer| {
        for _ in 0..steps {
            opt.step(&quadratic(w).backward().unwrap(), 0.05).unwrap();
        }
    };
    let fresh = |w: &Var| Optimizer::new(vec![("w".into(), w.clone())], &[], sgd(0.9, 0.0, 0.0));
    let whole = Var::new(&w0, &Device::Cpu).unwrap();
    let mut opt = fresh(&whole).unwrap();
    run(10, &whole, &mut opt);

    let split = Var::new(&w0, &Device::Cpu).unwrap();
    let mut first = fresh(&split).unwrap();
    run(4, &split, &mut first);
    let saved: std::collections::HashMap<String, Tensor> =
        first.state_tensors().into_iter().collect();
    let names: Vec<&String> = saved.keys().collect();
    assert_eq!(names, ["optim.velocity.w"]);
    let resumed_w = Var::from_tensor(split.as_tensor()).unwrap();
    let mut resumed = fresh(&resumed_w).unwrap();
    resumed.restore(&saved, first.steps_taken()).unwrap();
    run(6, &resumed_w, &mut resumed);
    assert_eq!(
        whole.as_tensor().to_vec1::<f32>().unwrap(),
        resumed_w.as_tensor().to_vec1::<f32>().unwrap()
    );

    let forgetful_w = Var::from_tensor(split.as_tensor()).unwrap();
    let mut forgetful = fresh(&forgetful_w).unwrap();
    run(6, &forgetful_w, &mut forgetful);
    let (a, b) = (
        whole.as_tensor().to_vec1::<f32>().unwrap(),
        forgetful_w.as_tensor().to_vec1::<f32>().unwrap(),
    );
    assert!(a.iter().zip(&b).any(|(a, b)| (a - b).abs() > 1e-4));
    // An Adam checkpoint's state is not SGD's: restoring it names what is missing.
    let adam_w = Var::new(&w0, &Device::Cpu).unwrap();
    let adam = Optimizer::new(vec![("w".into(), adam_w)], &[], OptimConfig::default()).unwrap();
    let adam_state = adam.state_tensors().into_iter().collect();
    let e = fresh(&forgetful_w)
        .unwrap()
        .restore(&adam_state, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("optim.velocity.w"), "{e}");
}

/// The linear schedule goes from lr at epoch 0 to lr_min at `epochs` in equal steps.
#[test]
fn the_linear_schedule_falls_in_equal_steps_to_lr_min() {
    let t = TrainSection {
        epochs: 10,
        lr: 1e-2,
        lr_min: 1e-3,
        lr_schedule: Schedule::Linear,
        ..TrainSection::default()
    };
    let s = LrSchedule::new(&t);
    let rates: Vec<f64> = (0..=10).map(|e| s.lr_for(&t, e)).collect();
    for (e, rate) in rates.iter().enumerate() {
        let expected = 1e-2 - 9e-4 * e as f64;
        assert!((rate - expected).abs() < 1e-12, "epoch {e}: {rate}");
    }
}
