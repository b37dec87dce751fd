//! `--keep SPEC`: the grammar, the masks it makes, completion by a mask, and what a model
//! with a fixed order refuses.

use std::path::Path;

use candle_core::Device;
use nade::data::amat::read_amat;
use nade::data::BinaryDataset;
use nade::keep::{prefix_masks, KeepSpec};
use nade::models::made::{Activation, MadeConfig};
use nade::models::{self, ModelConfig, NadeKernel};
use nade::sample::{complete, complete_with};

use crate::common;
use crate::common::*;

fn ones(mask: &[u8]) -> Vec<usize> {
    (0..mask.len()).filter(|&i| mask[i] == 1).collect()
}

#[test]
fn keep_specs_parse_and_make_the_masks_they_name() {
    let n = 784;
    let spec = |s: &str| s.parse::<KeepSpec>().unwrap();
    let one = |s: &str| spec(s).masks(n, 1, 0).unwrap().row(0).to_vec();
    // Pixel i sits at row i / 28, column i % 28.
    assert_eq!(ones(&one("top:14")), (0..392).collect::<Vec<_>>());
    assert_eq!(ones(&one("bottom:3")), (784 - 84..784).collect::<Vec<_>>());
    let left = one("left:5");
    assert!((0..n).all(|i| (left[i] == 1) == (i % 28 < 5)));
    let right = one("right:5");
    assert!((0..n).all(|i| (right[i] == 1) == (i % 28 >= 23)));
    let boxed = one("box:2,3,5,7");
    assert!((0..n)
        .all(|i| (boxed[i] == 1) == ((2..5).contains(&(i / 28)) && (3..7).contains(&(i % 28)))));
    assert_eq!(ones(&boxed).len(), 12);
    assert_eq!(ones(&one("top:0")), Vec::<usize>::new());
    assert_eq!(ones(&one("top:28")).len(), n);
    assert_eq!(spec("box:1,2,3,4").to_string(), "box:1,2,3,4");
    // hole: the complement of the same box (inpainting).
    let hole = one("hole:2,3,5,7");
    assert!((0..n).all(|i| hole[i] == 1 - boxed[i]));
    assert_eq!(ones(&hole).len(), n - 12);
    assert_eq!(spec("hole:7,7,21,21").to_string(), "hole:7,7,21,21");

    // random:P: about P n pixels, the same for a seed, different per image and per seed.
    let random = spec("random:0.25").masks(n, 3, 9).unwrap();
    for row in random.rows() {
        let kept = ones(row).len() as f64;
        // Binomial(784, 0.25): mean 196, s.d. 12.1; 6 s.d. either way.
        assert!((123.0..270.0).contains(&kept), "{kept} pixels kept");
    }
    assert_ne!(random.row(0), random.row(1));
    assert_eq!(random, spec("random:0.25").masks(n, 3, 9).unwrap());
    assert_ne!(random, spec("random:0.25").masks(n, 3, 10).unwrap());
    assert_eq!(
        random.row(1),
        spec("random:0.25").masks(n, 2, 9).unwrap().row(1)
    );

    for (bad, says) in [
        ("top", "expected top:R"),
        ("top:x", "expected top:R"),
        ("middle:3", "expected top:R"),
        ("box:1,2,3", "expected top:R"),
        ("box:5,0,2,4", "R0 <= R1"),
        ("hole:5,0,2,4", "R0 <= R1"),
        ("random:1.5", "probability"),
    ] {
        // clap prefixes the flag and the value: the message does not repeat them.
        let e = bad.parse::<KeepSpec>().unwrap_err();
        assert!(e.contains(says) && !e.contains("--keep"), "{bad}: {e}");
    }
    for (past, says) in [
        ("top:29", "rows 29"),
        ("left:30", "columns 30"),
        ("box:0,0,29,3", "row 29"),
        ("hole:0,0,3,29", "column 29"),
    ] {
        let e = spec(past).masks(n, 1, 0).unwrap_err().to_string();
        assert!(
            e.contains(says) && e.contains("28 rows of 28"),
            "{past}: {e}"
        );
    }
}

/// Completion by a mask that is a prefix of the order equals completion of that prefix (same
/// images, bit for bit); a mask that is not one is refused by every fixed-order model, with
/// an error that says what it can condition on.
#[test]
fn fixed_order_models_complete_prefixes_and_refuse_other_kept_sets() {
    let n = 12;
    let given = BinaryDataset::new(
        n,
        random_binary(3, n, 0.5, 2)
            .iter()
            .map(|&v| v as u8)
            .collect(),
    )
    .unwrap();
    let device = Device::Cpu;
    for (c, cfg) in all_configs(n).into_iter().enumerate() {
        let model = model(&cfg, &random_params(&cfg, 50 + c as u64, 1.5), &device);
        let by_count = complete(model.as_ref(), &given, 5, 4, 5, 3, &device).unwrap();
        let masks = prefix_masks(n, 5, given.len()).unwrap();
        let by_mask = complete_with(model.as_ref(), &given, &masks, 4, 5, 3, &device).unwrap();
        assert_eq!(by_count, by_mask, "{cfg:?}");

        let mut holes = masks.pixels().to_vec();
        holes[2] = 0; // row 0 keeps 0, 1, 3, 4: not a prefix
        let holes = BinaryDataset::new(n, holes).unwrap();
        let e = complete_with(model.as_ref(), &given, &holes, 4, 5, 3, &device)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("prefix") && e.contains("image 0") && e.contains("order-agnostic"),
            "{cfg:?}: {e}"
        );
    }
}

/// A model with a fixed order scores a kept prefix of its order exactly: log p(x_kept) is
/// the log of the sum of p(x) over every completion (by enumeration), for each model, the
/// empty prefix and the whole vector included; a kept set that is no prefix is refused.
#[test]
fn fixed_order_models_score_a_kept_prefix_exactly() {
    let n = 7;
    let device = Device::Cpu;
    let given: Vec<u8> = vec![1, 0, 0, 1, 1, 0, 1];
    let prefixes = [0, 1, 3, 6, 7];
    let x: Vec<f32> = given.iter().map(|&v| v as f32).collect();
    let rows =
        |v: Vec<f32>| candle_core::Tensor::from_vec(v, (prefixes.len(), n), &device).unwrap();
    let kept = rows(x.repeat(prefixes.len()));
    let masks: Vec<f32> = prefixes
        .iter()
        .flat_map(|&k| (0..n).map(move |d| if d < k { 1.0 } else { 0.0 }))
        .collect();
    let observed = rows(masks);
    // And a mixture of three natural-order masks: each prefix is one of every mask's.
    let mixture = ModelConfig::Made(MadeConfig {
        masks: 3,
        ..made_config(n, &[6], true, Activation::Relu)
    });
    for (c, cfg) in all_configs(n).into_iter().chain([mixture]).enumerate() {
        let model = model(&cfg, &random_params(&cfg, 70 + c as u64, 1.5), &device);
        let probs = stats::exact_probs(model.as_ref(), n, &device);
        let got = model
            .kept_log_prob(&kept, &observed)
            .unwrap()
            .unwrap_or_else(|| panic!("{cfg:?}: no log p(x_kept) for a prefix"));
        for (r, &k) in prefixes.iter().enumerate() {
            // Sum over every x agreeing with `given` on its first k values.
            let marginal: f64 = (0..1usize << n)
                .filter(|&v| (0..k).all(|d| ((v >> d) & 1) as u8 == given[d]))
                .map(|v| probs[v])
                .sum();
            let want = marginal.ln();
            assert!(
                (got.model[r] - want).abs() < 1e-4,
                "{cfg:?}, prefix {k}: {} vs {want}",
                got.model[r]
            );
        }
        let mut hole = vec![1f32; n];
        hole[1] = 0.0;
        let one = |v: Vec<f32>| candle_core::Tensor::from_vec(v, (1, n), &device).unwrap();
        assert!(model
            .kept_log_prob(&one(x.clone()), &one(hole))
            .unwrap()
            .is_none());
    }
}

/// The fused NADE sampler, the plain (sequential) one and every other model keep the kept
/// pixels whatever the mask, including one that differs per image, when asked through the
/// batched entry directly (the prefix check lives in `complete_with`, not in the sampler).
#[test]
fn the_batched_sampler_keeps_every_observed_value() {
    let n = 20;
    let device = Device::Cpu;
    let kept = random_binary(6, n, 0.5, 11);
    let observed = random_binary(6, n, 0.4, 12);
    for (c, cfg) in all_configs(n).into_iter().enumerate() {
        let model = model(&cfg, &random_params(&cfg, 70 + c as u64, 1.5), &device);
        let t = |v: &[f32]| candle_core::Tensor::from_vec(v.to_vec(), (6, n), &device).unwrap();
        let u = random_binary(6, n, 0.5, 13)
            .iter()
            .map(|v| v * 0.7 + 0.1)
            .collect::<Vec<_>>();
        let out = model
            .sample_batch(&models::Evidence {
                kept: &t(&kept),
                observed: &t(&observed),
                uniforms: &t(&u),
                order: None,
                row_orders: None,
            })
            .unwrap();
        let values = out.values.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for i in 0..6 * n {
            if observed[i] == 1.0 {
                assert_eq!(values[i], kept[i], "{cfg:?}: observed value {i} changed");
            } else {
                assert!(values[i] == 0.0 || values[i] == 1.0);
            }
        }
    }
    // The fused and the sequential NADE samplers draw the same values from the same uniforms.
    let fused_cfg = config("nade", n, 7, NadeKernel::Fused);
    let plain_cfg = config("nade", n, 7, NadeKernel::Plain);
    let params = random_params(&fused_cfg, 5, 1.5);
    let draw = |cfg| {
        let m = model(cfg, &params, &device);
        let t = |v: &[f32]| candle_core::Tensor::from_vec(v.to_vec(), (6, n), &device).unwrap();
        let u: Vec<f32> = (0..6 * n)
            .map(|k| ((k * 37) % 101) as f32 / 101.0)
            .collect();
        let out = m
            .sample_batch(&models::Evidence {
                kept: &t(&kept),
                observed: &t(&observed),
                uniforms: &t(&u),
                order: None,
                row_orders: None,
            })
            .unwrap();
        (
            out.values.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            out.probs.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        )
    };
    let (fused_values, fused_probs) = draw(&fused_cfg);
    let (plain_values, plain_probs) = draw(&plain_cfg);
    assert_eq!(fused_values, plain_values);
    assert!(max_abs_diff(&fused_probs, &plain_probs) < 1e-5);
}

fn write_test_split(dir: &Path) -> BinaryDataset {
    let rows = BinaryDataset::new(
        784,
        random_binary(4, 784, 0.2, 8)
            .iter()
            .map(|&v| v as u8)
            .collect(),
    )
    .unwrap();
    std::fs::write(
        dir.join("toy_test.amat"),
        nade::data::amat::amat_text(&rows),
    )
    .unwrap();
    rows
}

#[test]
fn cli_keep_top_equals_rows_and_keep_left_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("nade.safetensors");
    let cfg = new_config("nade", 784, 6);
    let params = models::init_params(&cfg, 1, &Device::Cpu).unwrap();
    let trainable = models::Trainable::new(&cfg, params, &Device::Cpu).unwrap();
    nade::checkpoint::save(&ckpt, trainable.model.as_ref(), &Default::default()).unwrap();
    write_test_split(dir.path());
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let run = |keep: &[&str], out: &str| {
        let (ckpt, png, amat, data) = (
            p("nade.safetensors"),
            p(&format!("{out}.png")),
            p(&format!("{out}.amat")),
            p(""),
        );
        let mut args = vec![
            "complete",
            &ckpt,
            "--count",
            "2",
            "--samples",
            "3",
            "--out",
            &png,
            "--amat",
            &amat,
            "--data",
            &data,
            "--dataset",
            "toy",
            "--device",
            "cpu",
        ];
        args.extend_from_slice(keep);
        common::bin::nade(&args)
    };
    let by_rows = run(&["--rows", "14"], "rows");
    let by_keep = run(&["--keep", "top:14"], "keep");
    assert!(
        by_rows.status.success() && by_keep.status.success(),
        "{}",
        String::from_utf8_lossy(&by_keep.stderr)
    );
    assert_eq!(
        read_amat(Path::new(&p("rows.amat"))).unwrap(),
        read_amat(Path::new(&p("keep.amat"))).unwrap()
    );

    let left = run(&["--keep", "left:14"], "left");
    assert!(!left.status.success());
    let err = String::from_utf8_lossy(&left.stderr).to_string();
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(
        err.starts_with("error: --keep left:14: a nade model conditions exactly only on a prefix"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
    assert!(
        !Path::new(&p("left.png")).exists(),
        "a refused completion wrote a file"
    );

    let both = run(&["--keep", "top:3", "--rows", "3"], "both");
    assert!(!both.status.success());
    let bad = run(&["--keep", "diagonal:3"], "bad");
    let err = String::from_utf8_lossy(&bad.stderr).to_string();
    assert!(!bad.status.success() && err.contains("--keep"), "{err}");
    assert_eq!(
        err.matches("--keep").count(),
        1,
        "the flag said twice: {err}"
    );

    // `eval --keep` on the fixed-order model: a prefix of its order is scored (exactly, see
    // fixed_order_models_score_a_kept_prefix_exactly), anything else is refused saying why.
    let eval = |keep: &str| {
        let (ckpt, data) = (p("nade.safetensors"), p(""));
        common::bin::nade(&[
            "eval",
            &ckpt,
            "--data",
            &data,
            "--dataset",
            "toy",
            "--keep",
            keep,
            "--json",
        ])
    };
    let top = common::bin::json(&eval("top:14"));
    assert_eq!(top["kept_pixels"].as_u64(), Some(4 * 14 * 28));
    assert!(top["kept_nll_nats"].as_f64().unwrap() > 0.0, "{top}");
    assert_eq!(top["kept_nll_nats"], top["kept_nll_first_nats"]);
    let err = common::bin::refused(&eval("left:14"));
    assert!(err.contains("prefix") && err.contains("image 0"), "{err}");
}

/// A sampler can be asked for an order; a fixed-order model accepts its own and refuses any
/// other with an error that says so.
#[test]
fn fixed_order_models_sample_in_their_own_order_only() {
    let n = 6;
    let device = Device::Cpu;
    let zeros = candle_core::Tensor::zeros((2, n), candle_core::DType::F32, &device).unwrap();
    let u = candle_core::Tensor::full(0.5f32, (2, n), &device).unwrap();
    let own: Vec<usize> = (0..n).collect();
    let reversed: Vec<usize> = (0..n).rev().collect();
    for (c, cfg) in all_configs(n).into_iter().enumerate() {
        let model = model(&cfg, &random_params(&cfg, 90 + c as u64, 1.0), &device);
        assert_eq!(model.orders(), models::Orders::Fixed(own.clone()));
        let ask = |order: &[usize]| {
            model
                .sample_batch(&models::Evidence {
                    kept: &zeros,
                    observed: &zeros,
                    uniforms: &u,
                    order: Some(order),
                    row_orders: None,
                })
                .map(|_| ())
        };
        assert!(ask(&own).is_ok(), "{cfg:?}");
        let e = ask(&reversed).unwrap_err().to_string();
        assert!(e.contains("own order only"), "{cfg:?}: {e}");
    }
}
