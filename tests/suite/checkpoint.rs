//! Checkpoints: round trip, files written by another tool, and every malformed file.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use nade::checkpoint;
use nade::models::{ModelConfig, NadeKernel, Pass};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

use crate::common;
use crate::common::*;

/// Writes a safetensors file the way numpy / PyTorch users would: just tensors and metadata.
fn write_by_hand<S: AsRef<str>>(
    path: &Path,
    tensors: &[(S, Vec<usize>, Vec<f32>)],
    metadata: &[(&str, &str)],
) {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, shape, v)| {
            (
                name.as_ref().to_string(),
                shape.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(&str, TensorView)> = bytes
        .iter()
        .map(|(name, shape, data)| {
            (
                name.as_str(),
                TensorView::new(Dtype::F32, shape.clone(), data).unwrap(),
            )
        })
        .collect::<Vec<_>>();
    // MADE's integer buffers go out as I64, as another tool writes them.
    let integers: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .filter(|(name, ..)| is_integer_buffer(name.as_ref()))
        .map(|(name, shape, v)| {
            (
                name.as_ref().to_string(),
                shape.clone(),
                v.iter().flat_map(|&x| (x as i64).to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(&str, TensorView)> = views
        .into_iter()
        .filter(|(name, _)| !is_integer_buffer(name))
        .chain(integers.iter().map(|(name, shape, data)| {
            (
                name.as_str(),
                TensorView::new(Dtype::I64, shape.clone(), data).unwrap(),
            )
        }))
        .collect();
    let meta: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
}

/// The names of MADE's order and degree buffers.
fn is_integer_buffer(name: &str) -> bool {
    name == "order" || name.starts_with("degrees")
}

fn schema_tensors(cfg: &ModelConfig, seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let params = random_params(cfg, seed, 1.0);
    cfg.param_specs()
        .into_iter()
        .map(|s| (s.name.clone(), s.shape.clone(), params[&s.name].clone()))
        .collect()
}

fn load_err(path: &Path) -> String {
    match checkpoint::load(path, &Device::Cpu, None) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn round_trip_keeps_tensors_logits_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::Cpu;
    for cfg in all_configs(9) {
        let params = random_params(&cfg, 1, 1.0);
        let model = model(&cfg, &params, &device);
        let path = dir.path().join(format!("{}.safetensors", cfg.kind()));
        let extra = BTreeMap::from([("epoch".to_string(), "7".to_string())]);
        checkpoint::save(&path, model.as_ref(), &extra).unwrap();
        let loaded = checkpoint::load(&path, &device, cfg.kernel_name().as_deref()).unwrap();
        assert_eq!(loaded.model.config(), &cfg);
        assert_eq!(loaded.metadata["epoch"], "7");
        assert_eq!(loaded.metadata["model"], cfg.kind());
        for ((name, a), (_, b)) in model
            .named_tensors()
            .iter()
            .zip(loaded.model.named_tensors())
        {
            let as_f32 = |t: &Tensor| {
                t.flatten_all()
                    .unwrap()
                    .to_dtype(candle_core::DType::F32)
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            };
            assert_eq!(a.dtype(), b.dtype(), "tensor {name}");
            assert_eq!(as_f32(a), as_f32(&b), "tensor {name}");
        }
        let x = Tensor::from_vec(random_binary(4, 9, 0.5, 3), (4, 9), &device).unwrap();
        let before = model
            .logits(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let after = loaded
            .model
            .logits(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(before, after);
    }
    // Atomic writes leave no temporary files behind.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        assert!(name.ends_with(".safetensors"), "left behind: {name}");
    }
}

#[test]
fn a_file_written_by_another_tool_with_three_metadata_keys_loads() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, hidden) in [("fvsbn", 0), ("mlp", 3), ("nade", 6)] {
        let cfg = common::new_config(kind, 8, hidden);
        let tensors = schema_tensors(&cfg, 4);
        let path = dir.path().join(format!("{kind}.safetensors"));
        let hidden_s = hidden.to_string();
        let mut meta = vec![("model", kind), ("n", "8")];
        if kind != "fvsbn" {
            meta.push(("hidden", &hidden_s));
        }
        write_by_hand(&path, &tensors, &meta);
        let loaded = checkpoint::load(&path, &Device::Cpu, None).unwrap();
        assert_eq!(loaded.model.config(), &cfg);
        // Same numbers as a model built straight from those tensors.
        let params: HashMap<String, Vec<f32>> = tensors
            .iter()
            .map(|(n, _, v)| (n.to_string(), v.clone()))
            .collect();
        let reference = model(&cfg, &params, &Device::Cpu);
        let x = Tensor::from_vec(random_binary(3, 8, 0.5, 1), (3, 8), &Device::Cpu).unwrap();
        let a = loaded
            .model
            .log_prob(&x, Pass::Eval)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let b = reference
            .log_prob(&x, Pass::Eval)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(a, b);
    }
}

#[test]
fn float64_tensors_are_accepted_and_converted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f64.safetensors");
    let cfg = common::new_config("fvsbn", 3, 0);
    let w: Vec<u8> = (0..9)
        .flat_map(|i| (i as f64 * 0.5).to_le_bytes())
        .collect();
    let b: Vec<u8> = [0.25f64, -0.5, 1.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let views = vec![
        ("W", TensorView::new(Dtype::F64, vec![3, 3], &w).unwrap()),
        ("b", TensorView::new(Dtype::F64, vec![3], &b).unwrap()),
    ];
    let meta = HashMap::from([
        ("model".to_string(), "fvsbn".to_string()),
        ("n".to_string(), "3".to_string()),
    ]);
    std::fs::write(&path, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
    let loaded = checkpoint::load(&path, &Device::Cpu, None).unwrap();
    assert_eq!(loaded.model.config(), &cfg);
    let bias = loaded.model.named_tensors()[1].1.to_vec1::<f32>().unwrap();
    assert_eq!(bias, vec![0.25, -0.5, 1.0]);
}

#[test]
fn malformed_checkpoints_give_errors_that_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::new_config("nade", 8, 4);
    let good = schema_tensors(&cfg, 2);
    let base_meta = [("model", "nade"), ("n", "8"), ("hidden", "4")];
    let case = |name: &str, tensors: &[(String, Vec<usize>, Vec<f32>)], meta: &[(&str, &str)]| {
        let path = dir.path().join(name);
        write_by_hand(&path, tensors, meta);
        load_err(&path)
    };

    let missing: Vec<_> = good.iter().filter(|t| t.0 != "V").cloned().collect();
    let e = case("missing.safetensors", &missing, &base_meta);
    assert!(e.contains("missing tensor `V`"), "{e}");

    let mut extra = good.clone();
    extra.push(("U".to_string(), vec![2], vec![0.0, 1.0]));
    let e = case("extra.safetensors", &extra, &base_meta);
    assert!(e.contains("unexpected tensor `U`"), "{e}");

    let mut transposed = good.clone();
    transposed[0].1 = vec![8, 4];
    let e = case("shape.safetensors", &transposed, &base_meta);
    assert!(
        e.contains("tensor `W` has shape [8, 4], expected [4, 8]"),
        "{e}"
    );

    let e = case(
        "kind.safetensors",
        &good,
        &[("model", "rbm"), ("n", "8"), ("hidden", "4")],
    );
    assert!(e.contains("`model`") && e.contains("rbm"), "{e}");

    let e = case(
        "nohidden.safetensors",
        &good,
        &[("model", "nade"), ("n", "8")],
    );
    assert!(e.contains("no `hidden`"), "{e}");

    let e = case(
        "badn.safetensors",
        &good,
        &[("model", "nade"), ("n", "eight"), ("hidden", "4")],
    );
    assert!(
        e.contains("`n` = \"eight\" is not a positive integer"),
        "{e}"
    );

    let e = case("nometa.safetensors", &good, &[]);
    assert!(e.contains("no `model`"), "{e}");

    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"this is not a checkpoint").unwrap();
    let e = load_err(&garbage);
    assert!(
        e.contains("garbage.safetensors") && e.contains("not a safetensors file"),
        "{e}"
    );

    let e = load_err(&dir.path().join("absent.safetensors"));
    assert!(
        e.contains("absent.safetensors") && e.contains("cannot read"),
        "{e}"
    );

    let mut poisoned = good.clone();
    poisoned[2].2[5] = f32::NAN;
    let e = case("nan.safetensors", &poisoned, &base_meta);
    assert!(e.contains("tensor `V` holds NaN at flat index 5"), "{e}");

    // Every message names the file.
    let e = case("named.safetensors", &missing, &base_meta);
    assert!(e.contains("named.safetensors"), "{e}");
}

/// A checkpoint written now holds the whole model config as JSON under `config`, and that
/// alone rebuilds the model: a file whose only metadata is `model` and `config` loads to the
/// same config and the same numbers.
#[test]
fn a_checkpoint_holds_the_whole_model_config_and_needs_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    for cfg in all_configs(6) {
        let params = random_params(&cfg, 3, 1.0);
        let model = model(&cfg, &params, &Device::Cpu);
        let path = dir.path().join("full.safetensors");
        checkpoint::save(&path, model.as_ref(), &Default::default()).unwrap();
        let loaded = checkpoint::load(&path, &Device::Cpu, None).unwrap();
        let stored: ModelConfig = serde_json::from_str(&loaded.metadata["config"]).unwrap();
        assert_eq!(stored, cfg.structure(), "the stored config is the model's");

        let only_config = dir.path().join("only-config.safetensors");
        let json = loaded.metadata["config"].clone();
        write_by_hand(
            &only_config,
            &schema_tensors(&cfg, 3),
            &[("model", cfg.kind()), ("config", &json)],
        );
        let again = checkpoint::load(&only_config, &Device::Cpu, None).unwrap();
        assert_eq!(again.model.config(), &cfg.structure());
        let x = Tensor::from_vec(random_binary(3, 6, 0.5, 1), (3, 6), &Device::Cpu).unwrap();
        let a = model
            .log_prob(&x, Pass::Eval)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let b = again
            .model
            .log_prob(&x, Pass::Eval)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(max_abs_diff(&a, &b) < 1e-5, "{cfg:?}");
    }
    // A `config` that disagrees with `model`, or does not parse, is refused by name.
    let cfg = common::new_config("nade", 6, 3);
    let tensors = schema_tensors(&cfg, 1);
    let path = dir.path().join("mismatch.safetensors");
    write_by_hand(
        &path,
        &tensors,
        &[
            ("model", "mlp"),
            ("config", r#"{"kind":"nade","n":6,"hidden":3}"#),
        ],
    );
    let e = load_err(&path);
    assert!(
        e.contains("`model` = \"mlp\"") && e.contains("describes a nade"),
        "{e}"
    );
    write_by_hand(
        &path,
        &tensors,
        &[
            ("model", "nade"),
            ("config", r#"{"kind":"nade","n":6,"hidden":3,"depth":2}"#),
        ],
    );
    let e = load_err(&path);
    assert!(e.contains("`config`") && e.contains("depth"), "{e}");
}

/// Files of the previous main stored the run's TOML under `config`: they load by `model`,
/// `n` and `hidden` (the shipped checkpoints are such files).
#[test]
fn a_checkpoint_whose_config_is_the_old_run_toml_loads() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::new_config("nade", 6, 3);
    let path = dir.path().join("old.safetensors");
    let toml =
        "[model]\nkind = \"nade\"\nhidden = 3\npath = \"auto\"\n\n[output]\ndir = \"runs/x\"\n";
    write_by_hand(
        &path,
        &schema_tensors(&cfg, 1),
        &[
            ("model", "nade"),
            ("n", "6"),
            ("hidden", "3"),
            ("config", toml),
        ],
    );
    let loaded = checkpoint::load(&path, &Device::Cpu, Some("plain")).unwrap();
    assert_eq!(
        loaded.model.config(),
        &config("nade", 6, 3, NadeKernel::Plain)
    );
}

/// A MADE file written by another tool with only `model`, `n` and `activation`: the layer
/// sizes, K and the direct connection come from the tensors, and it computes what the model
/// it was written from computes. Without `activation`, or with an order that is not a
/// permutation, it is refused by name.
#[test]
fn a_made_file_with_model_n_and_activation_only_loads() {
    use nade::models::made::{Activation, MadeConfig, OrderChoice};
    let dir = tempfile::tempdir().unwrap();
    let n = 7;
    for (hidden, masks, direct) in [(vec![5], 1, false), (vec![4, 6], 3, true)] {
        let made = MadeConfig {
            masks,
            order: OrderChoice::Random,
            seed: 9,
            ..made_config(n, &hidden, direct, Activation::Sigmoid)
        };
        let cfg = ModelConfig::Made(made.clone());
        let tensors = schema_tensors(&cfg, 4);
        let path = dir.path().join("made.safetensors");
        write_by_hand(
            &path,
            &tensors,
            &[("model", "made"), ("n", "7"), ("activation", "sigmoid")],
        );
        let loaded = checkpoint::load(&path, &Device::Cpu, None).unwrap();
        let ModelConfig::Made(got) = loaded.model.config().clone() else {
            panic!("not a made model")
        };
        assert_eq!(
            (got.hidden.clone(), got.masks, got.direct, got.activation),
            (hidden.clone(), masks, direct, Activation::Sigmoid)
        );
        let params: HashMap<String, Vec<f32>> = tensors
            .iter()
            .map(|(n, _, v)| (n.to_string(), v.clone()))
            .collect();
        let reference = model(&cfg, &params, &Device::Cpu);
        let x = Tensor::from_vec(random_binary(5, n, 0.5, 1), (5, n), &Device::Cpu).unwrap();
        let lp = |m: &dyn nade::models::Autoregressive| {
            m.log_prob(&x, Pass::Eval)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(lp(loaded.model.as_ref()), lp(reference.as_ref()));

        write_by_hand(&path, &tensors, &[("model", "made"), ("n", "7")]);
        let e = load_err(&path);
        assert!(e.contains("`activation`"), "{e}");

        let mut broken = tensors.clone();
        let order = broken.iter_mut().find(|(n, ..)| n == "order").unwrap();
        let (twice, missing) = (order.2[0], order.2[1]);
        order.2[1] = order.2[0];
        write_by_hand(
            &path,
            &broken,
            &[("model", "made"), ("n", "7"), ("activation", "sigmoid")],
        );
        let e = load_err(&path);
        assert!(e.contains("`order`") && e.contains("permutation"), "{e}");
        assert!(
            e.contains(&format!("{twice} appears twice and {missing} is missing")),
            "{e}"
        );
        one_line_even_with_rust_backtrace(&path, "`order`");

        let mut broken = tensors.clone();
        let degrees = broken.iter_mut().find(|(n, ..)| n == "degrees1").unwrap();
        degrees.2[0] = 99.0;
        write_by_hand(
            &path,
            &broken,
            &[("model", "made"), ("n", "7"), ("activation", "sigmoid")],
        );
        assert!(load_err(&path).contains("`degrees1`"));
        one_line_even_with_rust_backtrace(&path, "`degrees1`");
    }
}

/// `nade info FILE` under RUST_BACKTRACE=1 (common in developers' shells): candle attaches a
/// backtrace to its errors then, which must not reach the one-line message.
fn one_line_even_with_rust_backtrace(path: &Path, says: &str) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nade"))
        .args(["info", path.to_str().unwrap()])
        .env("RUST_BACKTRACE", "1")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .unwrap();
    let err = common::bin::refused(&out);
    assert!(err.contains(says), "{err}");
}
