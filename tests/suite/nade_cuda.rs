//! The CUDA kernels (src/kernels/nade_cuda.rs) against the CPU fused ops, on a GPU:
//!
//!   cargo test --release --features cuda --test suite nade_cuda::             # correctness
//!   cargo test --release --features cuda --test suite nade_cuda:: -- --ignored --nocapture  # speed
//!
//! Compiled only with the `cuda` feature; every test fails (does not skip) without a GPU.
#![cfg(feature = "cuda")]

use std::time::Instant;

use candle_core::{CudaStorage, Device, Layout, Storage, Tensor, Var};
use nade::kernels::nade_cuda;
use nade::kernels::{nade_log_prob, nade_logits, nade_sample};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn gpu() -> Device {
    Device::new_cuda(0).expect("these tests need a CUDA device")
}

fn cuda(s: &Storage) -> &CudaStorage {
    match s {
        Storage::Cuda(c) => c,
        _ => panic!("expected a CUDA tensor"),
    }
}

/// The first `len` values of a result (buffers hold at least one value).
fn host(s: &CudaStorage, len: usize) -> Vec<f32> {
    let all = s
        .device
        .clone_dtoh(s.as_cuda_slice::<f32>().unwrap())
        .unwrap();
    all[..len].to_vec()
}

fn vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// A NADE problem: packed [W^T; c; V], b, x with about 13% ones, an upstream gradient, weights.
struct Problem {
    batch: usize,
    n: usize,
    d: usize,
    packed: Vec<f32>,
    b: Vec<f32>,
    x: Vec<f32>,
    g: Vec<f32>,
    w: Vec<f32>,
}

impl Problem {
    fn new(batch: usize, n: usize, d: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut u = |len: usize, a: f32| -> Vec<f32> {
            (0..len).map(|_| rng.random_range(-a..a)).collect()
        };
        // Larger than the model's initialisation, so that the sigmoids are spread out.
        let wt = u(n * d, 4.0 / (n as f32).sqrt());
        let c = u(d, 1.0);
        let v = u(n * d, 4.0 / (d as f32).sqrt());
        let packed = [wt, c, v].concat();
        let b = u(n, 1.0);
        let g = u(batch * n, 1.0);
        let w: Vec<f32> = u(batch, 1.0).iter().map(|v| v + 1.0).collect();
        let x = u(batch * n, 1.0)
            .iter()
            .map(|&v| if v < -0.74 { 1.0 } else { 0.0 })
            .collect();
        Self {
            batch,
            n,
            d,
            packed,
            b,
            x,
            g,
            w,
        }
    }

    fn tensors(&self, dev: &Device) -> (Tensor, Tensor, Tensor, Tensor, Tensor) {
        let (bt, n, d) = (self.batch, self.n, self.d);
        (
            Tensor::from_vec(self.x.clone(), (bt, n), dev).unwrap(),
            Tensor::from_vec(self.packed.clone(), (2 * n + 1, d), dev).unwrap(),
            Tensor::from_vec(self.b.clone(), n, dev).unwrap(),
            Tensor::from_vec(self.g.clone(), (bt, n), dev).unwrap(),
            Tensor::from_vec(self.w.clone(), bt, dev).unwrap(),
        )
    }
}

/// |got - want| <= tol (max |want| + |want|) elementwise.
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (e, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (scale + w.abs()),
            "{what}[{e}]: got {g}, want {w} (scale {scale})"
        );
    }
}

fn gpu_logits(x: &Tensor, p: &Tensor) -> Vec<f32> {
    let (xs, xl) = x.storage_and_layout();
    let (ps, pl) = p.storage_and_layout();
    let (out, shape) = nade_cuda::logits(cuda(&xs), xl, cuda(&ps), pl).unwrap();
    assert_eq!(shape.dims(), &[xl.shape().dims()[0], xl.shape().dims()[1]]);
    host(&out, shape.elem_count())
}

fn gpu_grad(x: &Tensor, p: &Tensor, g: &Tensor) -> Vec<f32> {
    let (xs, xl) = x.storage_and_layout();
    let (ps, pl) = p.storage_and_layout();
    let (gs, gl) = g.storage_and_layout();
    let (out, shape) = nade_cuda::logits_grad(cuda(&xs), xl, cuda(&ps), pl, cuda(&gs), gl).unwrap();
    assert_eq!(shape.dims(), pl.shape().dims());
    host(&out, shape.elem_count())
}

fn gpu_log_prob_grad(
    x: &Tensor,
    p: &Tensor,
    b: &Tensor,
    w: Option<&Tensor>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (xs, xl) = x.storage_and_layout();
    let (ps, pl) = p.storage_and_layout();
    let (bs, bl) = b.storage_and_layout();
    let ws = w.map(|w| w.storage_and_layout());
    let weights = ws.as_ref().map(|(s, l)| (cuda(s), *l as &Layout));
    let (lp, dp, db) =
        nade_cuda::log_prob_grad(cuda(&xs), xl, cuda(&ps), pl, cuda(&bs), bl, weights).unwrap();
    (
        host(&lp, xl.shape().dims()[0]),
        host(&dp, pl.shape().elem_count()),
        host(&db, bl.shape().elem_count()),
    )
}

fn gpu_sample(
    p: &Tensor,
    b: &Tensor,
    kept: &Tensor,
    observed: &Tensor,
    u: &Tensor,
) -> (Vec<f32>, Vec<f32>) {
    let (ps, pl) = p.storage_and_layout();
    let (bs, bl) = b.storage_and_layout();
    let (ks, kl) = kept.storage_and_layout();
    let (os, ol) = observed.storage_and_layout();
    let (us, ul) = u.storage_and_layout();
    let (values, probs) = nade_cuda::sample(
        cuda(&ps),
        pl,
        cuda(&bs),
        bl,
        cuda(&ks),
        kl,
        cuda(&os),
        ol,
        cuda(&us),
        ul,
    )
    .unwrap();
    let len = ul.shape().elem_count();
    (host(&values, len), host(&probs, len))
}

/// Shapes: tiny; n and d off the tile sizes; d > 256 (two logits groups); B > 8 * 32 (the
/// gradient's slice loop, one image per thread); the gradient kernel with 2 and 4 images per
/// thread (nade_cuda.rs picks them at these sizes); MNIST (8 images per thread).
const SHAPES: [(usize, usize, usize); 7] = [
    (5, 3, 7),
    (37, 45, 70),
    (70, 50, 300),
    (1100, 20, 9),
    (300, 60, 600),
    (500, 50, 500),
    (1000, 784, 500),
];

#[test]
fn logits_and_their_gradient_match_the_cpu_ops() {
    let dev = gpu();
    for (seed, &(batch, n, d)) in SHAPES.iter().enumerate() {
        let pr = Problem::new(batch, n, d, seed as u64);
        let (x, p, _, g, _) = pr.tensors(&Device::Cpu);
        let (xg, pg, _, gg, _) = pr.tensors(&dev);
        let what = format!("B={batch} n={n} d={d}");

        let want = vec(&nade_logits::logits(&x, &p).unwrap());
        let got = gpu_logits(&xg, &pg);
        assert_close(&format!("logits {what}"), &got, &want, 1e-5);
        assert_eq!(
            got,
            gpu_logits(&xg, &pg),
            "logits {what}: not deterministic"
        );

        let pv = Var::from_tensor(&p).unwrap();
        let loss = (nade_logits::logits(&x, pv.as_tensor()).unwrap() * &g)
            .unwrap()
            .sum_all()
            .unwrap();
        let want = vec(loss.backward().unwrap().get(pv.as_tensor()).unwrap());
        let got = gpu_grad(&xg, &pg, &gg);
        assert_close(&format!("grad {what}"), &got, &want, 1e-4);
        assert_eq!(
            got,
            gpu_grad(&xg, &pg, &gg),
            "grad {what}: not deterministic"
        );
    }
}

#[test]
fn log_prob_and_its_gradient_match_the_cpu_op() {
    let dev = gpu();
    for (seed, &(batch, n, d)) in SHAPES.iter().enumerate() {
        let pr = Problem::new(batch, n, d, 10 + seed as u64);
        let (x, p, b, _, w) = pr.tensors(&Device::Cpu);
        let (xg, pg, bg, _, wg) = pr.tensors(&dev);
        for weighted in [false, true] {
            let what = format!("B={batch} n={n} d={d} weighted={weighted}");
            let (pv, bv) = (Var::from_tensor(&p).unwrap(), Var::from_tensor(&b).unwrap());
            let lp = nade_log_prob::log_prob_with_grad(&x, pv.as_tensor(), bv.as_tensor()).unwrap();
            let loss = if weighted {
                (&lp * &w).unwrap()
            } else {
                lp.clone()
            };
            let grads = loss.sum_all().unwrap().backward().unwrap();
            let (want_dp, want_db) = (
                vec(grads.get(pv.as_tensor()).unwrap()),
                vec(grads.get(bv.as_tensor()).unwrap()),
            );

            let wopt = weighted.then_some(&wg);
            let (got_lp, got_dp, got_db) = gpu_log_prob_grad(&xg, &pg, &bg, wopt);
            assert_close(&format!("log p {what}"), &got_lp, &vec(&lp), 1e-5);
            assert_close(&format!("d packed {what}"), &got_dp, &want_dp, 1e-4);
            assert_close(&format!("d b {what}"), &got_db, &want_db, 1e-4);
            let again = gpu_log_prob_grad(&xg, &pg, &bg, wopt);
            assert_eq!((got_lp, got_dp, got_db), again, "{what}: not deterministic");
        }
    }
}

#[test]
fn sampling_matches_the_cpu_sampler() {
    let dev = gpu();
    for (seed, &(batch, n, d)) in SHAPES.iter().enumerate() {
        let batch = batch.min(200);
        let pr = Problem::new(batch, n, d, 20 + seed as u64);
        let mut rng = ChaCha8Rng::seed_from_u64(30 + seed as u64);
        let uniforms: Vec<f32> = (0..batch * n).map(|_| rng.random::<f32>()).collect();
        // Completion of the first k pixels, as the CPU sampler does it.
        let k = n / 3;
        let observed: Vec<f32> = (0..batch * n)
            .map(|e| if e % n < k { 1.0 } else { 0.0 })
            .collect();
        let on_cpu = |v: &[f32], shape: (usize, usize)| {
            Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
        };
        let (cpu_values, cpu_probs) = nade_sample::sample(
            &on_cpu(&pr.packed, (2 * n + 1, d)),
            &Tensor::from_vec(pr.b.clone(), n, &Device::Cpu).unwrap(),
            &on_cpu(&pr.x, (batch, n)),
            &on_cpu(&observed, (batch, n)),
            &on_cpu(&uniforms, (batch, n)),
        )
        .unwrap();
        let (cpu_values, cpu_probs) = (vec(&cpu_values), vec(&cpu_probs));

        let t = |v: &[f32], shape: (usize, usize)| Tensor::from_vec(v.to_vec(), shape, &dev);
        let (_, pg, bg, _, _) = pr.tensors(&dev);
        let kept = t(&pr.x, (batch, n)).unwrap();
        let obs = t(&observed, (batch, n)).unwrap();
        let u = t(&uniforms, (batch, n)).unwrap();
        let (values, probs) = gpu_sample(&pg, &bg, &kept, &obs, &u);
        assert_eq!(
            (values.clone(), probs.clone()),
            gpu_sample(&pg, &bg, &kept, &obs, &u),
            "sample B={batch} n={n} d={d}: not deterministic"
        );

        let mut diverged = 0;
        for r in 0..batch {
            for i in 0..n {
                let e = r * n + i;
                if i < k {
                    assert_eq!(values[e], pr.x[e], "observed value changed at {r}, {i}");
                    continue;
                }
                let (cv, cp) = (cpu_values[e], cpu_probs[e]);
                assert!(
                    (probs[e] - cp).abs() <= 1e-5,
                    "sample B={batch} n={n} d={d}: p at image {r} pixel {i}: {} vs cpu {cp}",
                    probs[e]
                );
                assert_eq!(values[e], if uniforms[e] < probs[e] { 1.0 } else { 0.0 });
                if values[e] != cv {
                    // Only a uniform within rounding of p may go the other way; the rest of
                    // the image then follows another path.
                    assert!((uniforms[e] - cp).abs() <= 1e-5, "image {r} pixel {i}");
                    diverged += 1;
                    break;
                }
            }
        }
        assert!(
            diverged * 100 <= batch,
            "{diverged} of {batch} images diverged"
        );
    }
}

#[test]
fn offset_inputs_work_and_strided_ones_are_refused() {
    let dev = gpu();
    let pr = Problem::new(9, 30, 40, 40);
    let (xg, pg, _, _, _) = pr.tensors(&dev);
    let rows = xg.narrow(0, 2, 5).unwrap();
    assert_eq!(
        gpu_logits(&rows, &pg),
        gpu_logits(&rows.copy().unwrap(), &pg)
    );
    let cols = Tensor::cat(&[&xg, &xg], 1)
        .unwrap()
        .narrow(1, 0, 30)
        .unwrap();
    let (xs, xl) = cols.storage_and_layout();
    let (ps, pl) = pg.storage_and_layout();
    let err = nade_cuda::logits(cuda(&xs), xl, cuda(&ps), pl)
        .err()
        .unwrap();
    assert!(err.to_string().contains("contiguous"), "{err}");
}

/// Throughput at MNIST sizes (n = 784, d = 500); the targets are for an H200.
#[test]
#[ignore = "timing; run with --ignored --nocapture on a GPU"]
fn throughput() {
    let dev = gpu();
    let time = |what: &str, batch: usize, target: f64, f: &mut dyn FnMut()| {
        f();
        dev.synchronize().unwrap();
        let (start, mut reps) = (Instant::now(), 0);
        while start.elapsed().as_secs_f64() < 1.0 {
            f();
            reps += 1;
        }
        dev.synchronize().unwrap();
        let rate = (reps * batch) as f64 / start.elapsed().as_secs_f64();
        println!("{what:12} B={batch:5}: {rate:10.0} images/s (H200 target {target:.0})");
    };
    for (batch, eval_target, train_target) in [(100, 420e3, 0.0), (1000, 860e3, 300e3)] {
        let pr = Problem::new(batch, 784, 500, 50);
        let (x, p, b, _, _) = pr.tensors(&dev);
        time("logits", batch, eval_target, &mut || {
            let (xs, xl) = x.storage_and_layout();
            let (ps, pl) = p.storage_and_layout();
            nade_cuda::logits(cuda(&xs), xl, cuda(&ps), pl).unwrap();
        });
        time("log_prob_grad", batch, train_target, &mut || {
            let (xs, xl) = x.storage_and_layout();
            let (ps, pl) = p.storage_and_layout();
            let (bs, bl) = b.storage_and_layout();
            nade_cuda::log_prob_grad(cuda(&xs), xl, cuda(&ps), pl, cuda(&bs), bl, None).unwrap();
        });
        if batch == 100 {
            let zeros = Tensor::zeros((batch, 784), candle_core::DType::F32, &dev).unwrap();
            let u = Tensor::rand(0f32, 1f32, (batch, 784), &dev).unwrap();
            time("sample", batch, 10e3, &mut || {
                let (ps, pl) = p.storage_and_layout();
                let (bs, bl) = b.storage_and_layout();
                let (zs, zl) = zeros.storage_and_layout();
                let (us, ul) = u.storage_and_layout();
                let (z, u) = (cuda(&zs), cuda(&us));
                nade_cuda::sample(cuda(&ps), pl, cuda(&bs), bl, z, zl, z, zl, u, ul).unwrap();
            });
        }
    }
}
