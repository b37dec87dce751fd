//! `--keep SPEC`: the grammar, the masks it makes, completion by a mask, and what a model
//! with a fixed order refuses; `--shape HxW`, and the CLI's sample, complete, eval, bench and
//! info on vectors of any length (n = 1, 2, 3, 7, 112, 180), not only 28 x 28 images.

use std::path::Path;

use candle_core::Device;
use nade::data::amat::read_amat;
use nade::data::BinaryDataset;
use nade::image_grid;
use nade::keep::{prefix_masks, KeepSpec};
use nade::models::made::{Activation, MadeConfig};
use nade::models::{self, ModelConfig, NadeKernel};
use nade::sample::{complete, complete_with};
use nade::tile_shape::TileShape;

use crate::common;
use crate::common::*;

fn ones(mask: &[u8]) -> Vec<usize> {
    (0..mask.len()).filter(|&i| mask[i] == 1).collect()
}

#[test]
fn keep_specs_parse_and_make_the_masks_they_name() {
    let n = 784;
    let spec = |s: &str| s.parse::<KeepSpec>().unwrap();
    let mnist = TileShape::near_square(n);
    let one = |s: &str| spec(s).masks(mnist, 1, 0).unwrap().row(0).to_vec();
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
    let random = spec("random:0.25").masks(mnist, 3, 9).unwrap();
    for row in random.rows() {
        let kept = ones(row).len() as f64;
        // Binomial(784, 0.25): mean 196, s.d. 12.1; 6 s.d. either way.
        assert!((123.0..270.0).contains(&kept), "{kept} pixels kept");
    }
    assert_ne!(random.row(0), random.row(1));
    assert_eq!(random, spec("random:0.25").masks(mnist, 3, 9).unwrap());
    assert_ne!(random, spec("random:0.25").masks(mnist, 3, 10).unwrap());
    assert_eq!(
        random.row(1),
        spec("random:0.25").masks(mnist, 2, 9).unwrap().row(1)
    );

    for (bad, says) in [
        ("top", "expected first:K"),
        ("top:x", "expected first:K"),
        ("middle:3", "expected first:K"),
        ("box:1,2,3", "expected first:K"),
        ("first:-1", "expected first:K"),
        ("last:", "expected first:K"),
        ("mask:", "needs the name of a file"),
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
        let e = spec(past).masks(mnist, 1, 0).unwrap_err().to_string();
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

/// Every spec prints as it is written and reads back as itself (the reports' `keep` is a spec
/// that can be passed again); `--shape HxW` likewise, and its bad forms say what it expects.
#[test]
fn keep_specs_and_shapes_round_trip() {
    for text in [
        "first:0",
        "first:12",
        "last:3",
        "top:2",
        "bottom:1",
        "left:4",
        "right:5",
        "box:1,2,3,4",
        "hole:0,0,2,2",
        "random:0.25",
        "random:1",
        "mask:masks.txt",
        "mask:some dir/kept:1.amat",
    ] {
        let spec: KeepSpec = text.parse().unwrap();
        assert_eq!(spec.to_string(), text);
        assert_eq!(spec.to_string().parse::<KeepSpec>().unwrap(), spec);
    }
    assert_eq!(
        "mask:a b.txt".parse::<KeepSpec>().unwrap(),
        KeepSpec::Mask("a b.txt".into())
    );
    assert_eq!("first:4".parse::<KeepSpec>().unwrap(), KeepSpec::First(4));
    assert_eq!("last:4".parse::<KeepSpec>().unwrap(), KeepSpec::Last(4));

    for text in ["28x28", "12x15", "1x7", "180x1"] {
        let shape: TileShape = text.parse().unwrap();
        assert_eq!(shape.to_string(), text);
    }
    assert_eq!(
        "12X15".parse::<TileShape>().unwrap(),
        TileShape {
            height: 12,
            width: 15
        }
    );
    for bad in [
        "10",
        "x",
        "10x",
        "x10",
        "0x5",
        "5x0",
        "-1x4",
        "axb",
        "2x3x4",
        "99999999999x99999999999",
    ] {
        let e = bad.parse::<TileShape>().unwrap_err();
        assert!(
            (e.contains("expected HxW") || e.contains("more than any vector"))
                && !e.contains("--shape"),
            "{bad}: {e}"
        );
    }
    let shape = |h, w| TileShape {
        height: h,
        width: w,
    };
    assert_eq!(TileShape::for_model(None, 180).unwrap(), shape(12, 15));
    assert_eq!(
        TileShape::for_model(Some(shape(4, 45)), 180).unwrap(),
        shape(4, 45)
    );
    let e = TileShape::for_model(Some(shape(10, 10)), 180).unwrap_err();
    assert_eq!(
        e.to_string(),
        "--shape 10x10 has 100 pixels but the model has n = 180"
    );
}

/// first:K and last:K name indices whatever the layout; the image forms name rows and columns
/// of the layout they are given, and one past it is an error naming the layout and --shape.
#[test]
fn first_last_and_the_image_forms_follow_n_and_the_shape() {
    let one = |s: &str, shape: TileShape| {
        s.parse::<KeepSpec>()
            .unwrap()
            .masks(shape, 1, 0)
            .map(|m| ones(m.row(0)))
    };
    let all = |range: std::ops::Range<usize>| range.collect::<Vec<_>>();
    let line = TileShape::near_square(7);
    assert_eq!(one("first:3", line).unwrap(), vec![0, 1, 2]);
    assert_eq!(one("last:2", line).unwrap(), vec![5, 6]);
    assert_eq!(one("first:7", line).unwrap(), all(0..7));
    assert_eq!(one("last:7", line).unwrap(), all(0..7));
    assert_eq!(one("last:0", line).unwrap(), Vec::<usize>::new());
    assert_eq!(one("top:1", line).unwrap(), all(0..7));
    assert_eq!(one("left:2", line).unwrap(), vec![0, 1]);

    let near = TileShape::near_square(180);
    let wide = TileShape {
        height: 4,
        width: 45,
    };
    assert_eq!(one("first:20", wide).unwrap(), all(0..20));
    assert_eq!(one("first:20", near).unwrap(), all(0..20));
    assert_eq!(one("last:20", near).unwrap(), all(160..180));
    assert_eq!(one("top:1", near).unwrap(), all(0..15));
    assert_eq!(one("top:1", wide).unwrap(), all(0..45));
    assert_eq!(one("bottom:1", wide).unwrap(), all(135..180));
    let left = one("left:2", wide).unwrap();
    assert_eq!(left, (0..180).filter(|i| i % 45 < 2).collect::<Vec<_>>());
    let boxed = one("box:1,40,3,45", wide).unwrap();
    assert_eq!(boxed, [all(85..90), all(130..135)].concat());
    assert_eq!(one("hole:1,40,3,45", wide).unwrap().len(), 170);

    let dot = TileShape::near_square(1);
    assert_eq!(one("first:1", dot).unwrap(), vec![0]);
    assert_eq!(one("top:1", dot).unwrap(), vec![0]);
    assert_eq!(one("hole:0,0,1,1", dot).unwrap(), Vec::<usize>::new());
    assert_eq!(one("random:1", dot).unwrap(), vec![0]);

    let err = |s: &str, shape| one(s, shape).unwrap_err().to_string();
    for (spec, shape, says) in [
        ("first:8", line, "n = 7"),
        ("last:181", near, "n = 180"),
        ("first:2", dot, "n = 1"),
        ("top:2", line, "1 rows of 7 pixels"),
        ("top:13", near, "12 rows of 15 pixels"),
        ("top:5", wide, "4 rows of 45 pixels"),
        ("right:46", wide, "4 rows of 45 pixels"),
        ("box:0,0,1,2", dot, "1 rows of 1 pixels"),
    ] {
        let e = err(spec, shape);
        assert!(
            e.starts_with(&format!("--keep {spec}: ")) && e.contains(says),
            "{spec}: {e}"
        );
    }
    assert!(err("top:5", wide).contains("--shape"));
}

/// mask:PATH: one row is every image's kept set, as many rows as images give one each;
/// a wrong length, a value other than 0 or 1, a wrong number of rows, a ragged or empty file
/// and a missing one are errors that start with `--keep mask:PATH` (and the line, where
/// one applies).
#[test]
fn mask_files_keep_one_set_for_all_or_one_per_image() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let shape = TileShape::near_square(5);
    let masks =
        |path: &Path, count: usize| KeepSpec::Mask(path.to_path_buf()).masks(shape, count, 0);

    let same = write("same.txt", "1 0 0 1 1\n");
    let m = masks(&same, 3).unwrap();
    assert_eq!(m.len(), 3);
    assert!(m.rows().all(|row| row == [1, 0, 0, 1, 1]));
    let each = write("each.amat", "1 1 0 0 0\n0\t0 0 0 1\n");
    let m = masks(&each, 2).unwrap();
    assert_eq!(
        (m.row(0), m.row(1)),
        (&[1, 1, 0, 0, 0][..], &[0, 0, 0, 0, 1][..])
    );

    let err = |path: &Path, count: usize| masks(path, count).unwrap_err().to_string();
    let named = |path: &Path| format!("--keep mask:{}", path.display());
    let short = write("short.txt", "1 0 1\n");
    let e = err(&short, 1);
    assert!(
        e.starts_with(&format!("{}:1: ", named(&short)))
            && e.contains("n = 5")
            && e.contains("found 3"),
        "{e}"
    );
    let two = write("two.txt", "1 0 1 0 1\n0 1 2 0 1\n");
    let e = err(&two, 2);
    assert!(
        e.starts_with(&format!("{}:2: ", named(&two))) && e.contains("value 2"),
        "{e}"
    );
    let e = err(&each, 3);
    assert!(
        e.starts_with(&named(&each)) && e.contains("2 rows for 3 images"),
        "{e}"
    );
    let ragged = write("ragged.txt", "1 0 1 0 1\n1 0\n");
    let e = err(&ragged, 2);
    assert!(e.starts_with(&format!("{}:2: ", named(&ragged))), "{e}");
    let empty = write("empty.txt", "");
    assert!(err(&empty, 1).contains("empty file"));
    let missing = dir.path().join("missing.txt");
    let e = err(&missing, 1);
    assert!(
        e.starts_with(&named(&missing)) && e.contains("cannot read"),
        "{e}"
    );
}

// ------------------------------------------- the CLI on vectors of any length

/// Lengths the CLI is run on: a single value, tiny primes, and lengths that are not square.
const LENGTHS: [usize; 6] = [1, 2, 3, 7, 112, 180];

/// A folder for vectors of length n: a random checkpoint of every kind (`{kind}.safetensors`,
/// hidden layers of 8), a test split `toy_test.amat` of 3 rows, and `binarized_mnist_train.amat`
/// of 20 rows, which `nade bench --data` reads in place of MNIST (so bench runs at this n).
struct SmallVectors {
    dir: tempfile::TempDir,
    test: BinaryDataset,
}

impl SmallVectors {
    fn new(n: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for kind in ModelConfig::kinds() {
            let ckpt = dir.path().join(format!("{kind}.safetensors"));
            common::bin::write_checkpoint(&ckpt, kind, n, 8);
        }
        let rows = |count, seed| {
            let values = random_binary(count, n, 0.4, seed);
            BinaryDataset::new(n, values.iter().map(|&v| v as u8).collect()).unwrap()
        };
        let test = rows(3, 30 + n as u64);
        let text = nade::data::amat::amat_text;
        std::fs::write(dir.path().join("toy_test.amat"), text(&test)).unwrap();
        let train = text(&rows(20, 60 + n as u64));
        std::fs::write(dir.path().join("binarized_mnist_train.amat"), train).unwrap();
        SmallVectors { dir, test }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    /// `nade complete {kind}.safetensors --count 2 --samples 2` on the test split, writing
    /// `{out}.png` and `{out}.amat`, with `extra` flags.
    fn complete(&self, kind: &str, out: &str, extra: &[&str]) -> std::process::Output {
        let (ckpt, png, amat, data) = (
            self.path(&format!("{kind}.safetensors")),
            self.path(&format!("{out}.png")),
            self.path(&format!("{out}.amat")),
            self.path(""),
        );
        let args = [
            "complete",
            &ckpt,
            "--count",
            "2",
            "--samples",
            "2",
            "--scale",
            "1",
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
            "--threads",
            "1",
            "--json",
        ];
        common::bin::nade(&[&args[..], extra].concat())
    }
}

/// Width and height of a PNG file.
fn png_size(path: &str) -> (u32, u32) {
    image::image_dimensions(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `nade info` and `nade sample` of every kind at every length: the grid's tiles follow the
/// default layout or `--shape`, and a shape of another length is a one-line error.
#[test]
fn cli_sample_and_info_work_for_any_n() {
    for n in LENGTHS {
        let small = SmallVectors::new(n);
        for kind in ModelConfig::kinds() {
            let ckpt = small.path(&format!("{kind}.safetensors"));
            let info = common::bin::json(&common::bin::nade(&["info", &ckpt, "--json"]));
            assert!(
                info.to_string().contains(&format!("\"n\":{n}")),
                "{kind} n = {n}: {info}"
            );

            let (png, amat) = (small.path("s.png"), small.path("s.amat"));
            let sample = |extra: &[&str]| {
                let args = [
                    "sample",
                    &ckpt,
                    "--count",
                    "3",
                    "--scale",
                    "1",
                    "--out",
                    &png,
                    "--amat",
                    &amat,
                    "--device",
                    "cpu",
                    "--threads",
                    "1",
                ];
                common::bin::nade(&[&args[..], extra].concat())
            };
            common::bin::ok(&sample(&["--probs"]));
            let near = TileShape::near_square(n);
            assert_eq!(
                png_size(&png),
                image_grid::grid_size(2, 2, near, 1),
                "{kind} n = {n}"
            );
            let drawn = read_amat(Path::new(&amat)).unwrap();
            assert_eq!((drawn.len(), drawn.n()), (3, n), "{kind}");

            // The transposed layout: n rows of one value.
            let column = format!("{n}x1");
            common::bin::ok(&sample(&["--shape", &column]));
            let tall = TileShape {
                height: n,
                width: 1,
            };
            assert_eq!(
                png_size(&png),
                image_grid::grid_size(2, 2, tall, 1),
                "{kind} n = {n}"
            );

            let wrong = format!("{}x2", n + 1);
            let e = common::bin::error_message(&sample(&["--shape", &wrong]));
            assert_eq!(
                e,
                format!(
                    "--shape {wrong} has {} pixels but the model has n = {n}",
                    2 * (n + 1)
                )
            );
        }
    }
    let small = SmallVectors::new(180);
    let ckpt = small.path("nade.safetensors");
    let png = small.path("wide.png");
    let args = [
        "sample", &ckpt, "--count", "4", "--scale", "2", "--out", &png, "--shape", "4x45",
    ];
    common::bin::ok(&common::bin::nade(&args));
    let wide = TileShape {
        height: 4,
        width: 45,
    };
    assert_eq!(png_size(&png), image_grid::grid_size(2, 2, wide, 2));
    let args = [
        "sample", &ckpt, "--count", "4", "--out", &png, "--shape", "10x10",
    ];
    let e = common::bin::error_message(&common::bin::nade(&args));
    assert_eq!(e, "--shape 10x10 has 100 pixels but the model has n = 180");
}

/// `nade complete` of every kind at n = 1, 7 and 180 with the forms each can condition on
/// (every model: first:K, top:R, --rows R, a mask file of prefixes; deep NADE also last:K,
/// random:P, left:C, hole, a mask file of any sets, box in a --shape layout): the kept values
/// come out unchanged, `kept_pixels` counts them, and the grid's tiles follow the layout.
#[test]
fn cli_complete_keeps_the_kept_values_for_any_n() {
    for n in [1, 7, 180] {
        let small = SmallVectors::new(n);
        let near = TileShape::near_square(n);
        // Row 0 keeps the first half, row 1 everything: prefixes of every order.
        let prefixes: Vec<u8> = (0..2 * n)
            .map(|i| u8::from(i % n < n / 2 || i >= n))
            .collect();
        let prefixes = BinaryDataset::new(n, prefixes).unwrap();
        let prefix_file = small.path("prefixes.txt");
        std::fs::write(&prefix_file, nade::data::amat::amat_text(&prefixes)).unwrap();
        let any: Vec<u8> = random_binary(1, n, 0.5, 3)
            .iter()
            .map(|&v| v as u8)
            .collect();
        let any_file = small.path("any.txt");
        std::fs::write(
            &any_file,
            nade::data::amat::amat_text(&BinaryDataset::new(n, any).unwrap()),
        )
        .unwrap();
        let half = (n / 2).to_string();
        let first = format!("first:{}", n.div_ceil(2));
        let last = format!("last:{half}");
        let (mask_prefixes, mask_any) = (format!("mask:{prefix_file}"), format!("mask:{any_file}"));
        let column = format!("{n}x1");
        let mut cases: Vec<(&str, Vec<&str>)> = vec![
            ("nade", vec!["--keep", &first]),
            ("nade", vec!["--keep", "top:1"]),
            ("nade", vec!["--rows", "1"]),
            ("nade", vec!["--keep", "top:1", "--shape", &column]),
            ("deepnade", vec!["--keep", &last]),
            ("deepnade", vec!["--keep", "random:0.5"]),
            ("deepnade", vec!["--keep", "left:1"]),
            ("deepnade", vec!["--keep", "hole:0,0,1,1"]),
            ("deepnade", vec!["--keep", &mask_any]),
        ];
        for kind in ModelConfig::kinds() {
            cases.push((kind, vec!["--keep", &first]));
            cases.push((kind, vec!["--keep", &mask_prefixes]));
        }
        if n == 180 {
            cases.push((
                "deepnade",
                vec!["--keep", "box:1,40,3,45", "--shape", "4x45"],
            ));
            cases.push(("made", vec!["--keep", "top:2", "--shape", "4x45"]));
        }
        for (c, (kind, extra)) in cases.iter().enumerate() {
            let out = format!("c{c}");
            let report = common::bin::json(&small.complete(kind, &out, extra));
            let shape = match extra.iter().position(|&a| a == "--shape") {
                Some(at) => extra[at + 1].parse::<TileShape>().unwrap(),
                None => near,
            };
            let spec = match extra[..] {
                ["--rows", r, ..] => format!("top:{r}"),
                _ => extra[1].to_string(),
            };
            assert_eq!(report["keep"], spec.as_str(), "{kind} {extra:?}");
            let masks = spec
                .parse::<KeepSpec>()
                .unwrap()
                .masks(shape, 2, 0)
                .unwrap();
            let completions = read_amat(Path::new(&small.path(&format!("{out}.amat")))).unwrap();
            assert_eq!(
                (completions.len(), completions.n()),
                (4, n),
                "{kind} {extra:?}"
            );
            for (r, row) in completions.rows().enumerate() {
                let (given, mask) = (small.test.row(r / 2), masks.row(r / 2));
                for i in (0..n).filter(|&i| mask[i] == 1) {
                    assert_eq!(
                        row[i], given[i],
                        "{kind} n = {n} {extra:?}: value {i} of {r}"
                    );
                }
            }
            for (image, kept) in report["images"].as_array().unwrap().iter().enumerate() {
                let count = masks.row(image).iter().filter(|&&v| v == 1).count();
                assert_eq!(
                    kept["kept_pixels"].as_u64(),
                    Some(count as u64),
                    "{extra:?}"
                );
            }
            // Per image: the original, the kept part, 2 completions.
            let png = small.path(&format!("{out}.png"));
            assert_eq!(
                png_size(&png),
                image_grid::grid_size(2, 4, shape, 1),
                "{kind} {extra:?}"
            );
        }
    }
}

/// The one-line errors of `complete` and `eval` on vectors that are not 28 x 28: each names
/// the flag and n or the layout, and nothing is written.
#[test]
fn cli_refuses_keep_and_shape_that_do_not_fit_n() {
    let small = SmallVectors::new(180);
    let short = small.path("short.txt");
    std::fs::write(&short, "1 0 1\n").unwrap();
    let three = small.path("three.txt");
    let three_rows = BinaryDataset::new(180, vec![1; 3 * 180]).unwrap();
    std::fs::write(&three, nade::data::amat::amat_text(&three_rows)).unwrap();
    let (mask_short, mask_three) = (format!("mask:{short}"), format!("mask:{three}"));
    let (short_says, three_says) = (
        format!("--keep {mask_short}:1: "),
        format!("--keep {mask_three}: "),
    );
    for (extra, starts, says) in [
        (vec!["--keep", "first:181"], "--keep first:181: ", "n = 180"),
        (vec!["--keep", "last:200"], "--keep last:200: ", "n = 180"),
        (
            vec!["--keep", "top:13"],
            "--keep top:13: ",
            "12 rows of 15 pixels",
        ),
        (
            vec!["--keep", "top:5", "--shape", "4x45"],
            "--keep top:5: ",
            "4 rows of 45 pixels",
        ),
        (
            vec!["--keep", "box:0,0,2,46", "--shape", "4x45"],
            "--keep box:0,0,2,46: ",
            "column 46",
        ),
        (vec!["--rows", "13"], "--rows 13: ", "12 rows of 15 pixels"),
        (
            vec!["--keep", "top:1", "--shape", "10x10"],
            "--shape 10x10 has 100 pixels",
            "n = 180",
        ),
        (vec!["--keep", &mask_short], &short_says, "n = 180"),
        (
            vec!["--keep", &mask_three],
            &three_says,
            "3 rows for 2 images",
        ),
        (
            vec!["--keep", "mask:nowhere.txt"],
            "--keep mask:nowhere.txt: cannot read",
            "",
        ),
    ] {
        let e = common::bin::error_message(&small.complete("deepnade", "refused", &extra));
        assert!(e.starts_with(starts) && e.contains(says), "{extra:?}: {e}");
        assert!(
            !Path::new(&small.path("refused.png")).exists(),
            "{extra:?} wrote the grid"
        );
    }
    // A fixed-order model names first:K among what it can condition on.
    let e = common::bin::error_message(&small.complete("nade", "refused", &["--keep", "last:3"]));
    assert!(e.contains("prefix") && e.contains("first:K"), "{e}");

    let eval = |extra: &[&str]| {
        let (ckpt, data) = (small.path("deepnade.safetensors"), small.path(""));
        let args = [
            "eval",
            &ckpt,
            "--data",
            &data,
            "--dataset",
            "toy",
            "--device",
            "cpu",
            "--json",
        ];
        common::bin::nade(&[&args[..], extra].concat())
    };
    let kept = common::bin::json(&eval(&["--keep", "top:2", "--shape", "4x45"]));
    assert_eq!(kept["kept_pixels"].as_u64(), Some(3 * 90));
    let kept = common::bin::json(&eval(&["--keep", "first:30"]));
    assert_eq!(kept["kept_pixels"].as_u64(), Some(3 * 30));
    let e = common::bin::error_message(&eval(&["--keep", "first:181"]));
    assert!(
        e.starts_with("--keep first:181: ") && e.contains("n = 180"),
        "{e}"
    );
    let e = common::bin::error_message(&eval(&["--keep", "top:1", "--shape", "7x7"]));
    assert_eq!(e, "--shape 7x7 has 49 pixels but the model has n = 180");
}

/// `nade bench` of every kind on vectors of length 1, 7 and 180 (a 20-row training file in
/// `--data`, which bench reads in place of MNIST): every phase runs and reports.
#[test]
fn cli_bench_runs_every_kind_for_small_n() {
    for n in [1, 7, 180] {
        let small = SmallVectors::new(n);
        let data = small.path("");
        for kind in ModelConfig::kinds() {
            let out = common::bin::nade(&[
                "bench",
                "--model",
                kind,
                "--hidden",
                "8",
                "--batch",
                "1",
                "--seconds",
                "0.001",
                "--data",
                &data,
                "--device",
                "cpu",
                "--threads",
                "1",
                "--json",
            ]);
            let text = common::bin::ok(&out);
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(lines.len(), 3, "{kind} n = {n}: {text}");
            for line in lines {
                assert_eq!(
                    line["data"], "binarized_mnist",
                    "{kind} n = {n}: not the small data"
                );
                assert!(
                    line["images_per_s"].as_f64().unwrap() > 0.0,
                    "{kind} n = {n}: {line}"
                );
            }
        }
    }
}
