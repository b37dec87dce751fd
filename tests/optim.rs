//! The optimizer's L1 / L2 penalties are the gradients of the penalties they name.

use candle_core::{Device, Tensor, Var};
use nade::optim::{Adam, AdamConfig};

const L1: f64 = 0.3;
const L2: f64 = 1.0;

fn config(l1: f64, l2: f64) -> AdamConfig {
    AdamConfig {
        l1,
        l2,
        ..AdamConfig::default()
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
    let mut adam = Adam::new(with_option.clone(), &["b"], config(L1, L2)).unwrap();
    let in_loss = params();
    let mut plain = Adam::new(in_loss.clone(), &["b"], config(0.0, 0.0)).unwrap();
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
    let mut free = Adam::new(unpenalized.clone(), &["b"], config(0.0, 0.0)).unwrap();
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
