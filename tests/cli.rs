//! The `nade` binary end to end: eval's text and JSON output, and its one-line errors.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use common::shared_data;
use nade::checkpoint;
use nade::data::amat::read_amat;
use nade::models::{self, ModelConfig};

fn nade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nade"))
        .args(args)
        .output()
        .unwrap()
}

/// A randomly initialised checkpoint written by this crate.
fn write_checkpoint(path: &Path, kind: &str, n: usize, hidden: usize) {
    let cfg = common::new_config(kind, n, hidden);
    let params = models::init_params(&cfg, 1, &Device::Cpu)
        .unwrap()
        .into_iter()
        .collect();
    let model = cfg
        .build(VarBuilder::from_tensors(params, DType::F32, &Device::Cpu))
        .unwrap();
    checkpoint::save(path, model.as_ref(), &Default::default()).unwrap();
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `nade eval CKPT --data DATA --json --device cpu`, parsed.
fn eval_json(ckpt: &Path, data: &Path) -> serde_json::Value {
    let (ckpt, data) = (ckpt.to_str().unwrap(), data.to_str().unwrap());
    json(&nade(&[
        "eval", ckpt, "--data", data, "--json", "--device", "cpu",
    ]))
}

/// A failed run: non-zero exit, exactly one line on stderr, starting with "error:".
fn error_line(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected failure, stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

#[test]
fn eval_json_on_a_file_matches_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("toy.amat");
    std::fs::write(&data, "0 1 1 0 1\n1 1 0 0 0\n0 0 0 0 1\n").unwrap();
    for kind in ModelConfig::KINDS {
        let ckpt = dir.path().join(format!("{kind}.safetensors"));
        write_checkpoint(&ckpt, kind, 5, 3);
        let out = eval_json(&ckpt, &data);
        assert_eq!(out["model"], kind);
        assert_eq!(out["count"], 3);
        let loaded = checkpoint::load(&ckpt, &Device::Cpu, None).unwrap();
        let rows = read_amat(&data).unwrap();
        let want = nade::eval::nll(loaded.model.as_ref(), &rows, 2, &Device::Cpu, false).unwrap();
        let got = out["nll_nats"].as_f64().unwrap();
        assert!(
            (got - want.nll_nats).abs() < 1e-9,
            "{got} vs {}",
            want.nll_nats
        );
        let bpd = out["bits_per_dim"].as_f64().unwrap();
        assert!((bpd - got / (5.0 * std::f64::consts::LN_2)).abs() < 1e-12);
    }
}

#[test]
fn eval_on_the_real_test_split_reports_the_count_and_a_sane_nll() {
    let Some(data) = shared_data("binarized_mnist") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("nade.safetensors");
    write_checkpoint(&ckpt, "nade", 784, 20);
    let args = [
        "eval",
        ckpt.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--limit",
        "300",
        "--json",
    ];
    let out = json(&nade(&args));
    assert_eq!(out["split"], "test");
    assert_eq!(out["count"], 300);
    // An untrained model is near uniform: 784 ln 2 = 543 nats, give or take its random init.
    let nll = out["nll_nats"].as_f64().unwrap();
    assert!((400.0..700.0).contains(&nll), "{nll}");
    // Text mode says the same number.
    let text = nade(&args[..args.len() - 1]);
    assert!(text.status.success());
    let line = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(line.contains(&format!("NLL {nll:.4}")), "{line}");
}

#[test]
fn bad_inputs_are_one_line_errors_naming_the_culprit() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("fvsbn.safetensors");
    write_checkpoint(&ckpt, "fvsbn", 4, 0);
    let ckpt = ckpt.to_str().unwrap();

    let e = error_line(&nade(&["eval", "/nonexistent/model.safetensors"]));
    assert!(e.contains("/nonexistent/model.safetensors"), "{e}");

    let bad_row = dir.path().join("bad.amat");
    std::fs::write(&bad_row, "0 1 1 0\n0 1 2 0\n").unwrap();
    let e = error_line(&nade(&["eval", ckpt, "--data", bad_row.to_str().unwrap()]));
    assert!(e.contains("bad.amat:2") && e.contains("not 0 or 1"), "{e}");

    let wide = dir.path().join("wide.amat");
    std::fs::write(&wide, "0 1 1 0 1\n").unwrap();
    let e = error_line(&nade(&["eval", ckpt, "--data", wide.to_str().unwrap()]));
    assert!(e.contains("5 dimensions") && e.contains("n = 4"), "{e}");

    let empty_dir = dir.path().join("nothing-here");
    std::fs::create_dir(&empty_dir).unwrap();
    let e = error_line(&nade(&[
        "eval",
        ckpt,
        "--data",
        empty_dir.to_str().unwrap(),
        "--dataset",
        "dna",
    ]));
    assert!(e.contains("dna_test.amat"), "{e}");

    // clap rejects a zero batch before anything runs.
    let out = nade(&["eval", ckpt, "--batch", "0"]);
    assert!(!out.status.success());
}

/// The shipped checkpoints load and give, over the whole test split, the numbers the README's
/// results table shows (docs/*-test.json, from which scripts/results_table.py writes it).
#[test]
fn shipped_checkpoints_reproduce_the_results_table() {
    let Some(data) = shared_data("binarized_mnist") else {
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for model in ["fvsbn", "mlp", "nade"] {
        let ckpt = root.join(format!("checkpoints/{model}.safetensors"));
        let recorded: serde_json::Value = serde_json::from_slice(
            &std::fs::read(root.join(format!("docs/{model}-test.json"))).unwrap(),
        )
        .unwrap();
        let out = eval_json(&ckpt, &data);
        assert_eq!(out["count"], 10_000);
        let (got, want) = (
            out["nll_nats"].as_f64().unwrap(),
            recorded["nll_nats"].as_f64().unwrap(),
        );
        assert!(
            (got - want).abs() < 1e-6 * want,
            "{model}: {got} vs the recorded {want}"
        );
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        assert!(
            readme.contains(&format!("| {:.2} ± ", want)),
            "{model}: README lacks {want:.2}"
        );
    }
}

/// `--threads 1` sizes the thread pools (eval and bench report it) and changes no number;
/// sample and complete take it too; a count beyond the limit is refused.
#[test]
fn threads_one_runs_every_command_and_gives_the_default_nll() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("toy_test.amat");
    let rows: Vec<String> = common::random_binary(300, 6, 0.4, 5)
        .chunks(6)
        .map(|row| {
            let row: Vec<String> = row.iter().map(|v| v.to_string()).collect();
            row.join(" ")
        })
        .collect();
    std::fs::write(&data, rows.join("\n") + "\n").unwrap();
    for kind in ModelConfig::KINDS {
        let ckpt = dir.path().join(format!("{kind}.safetensors"));
        write_checkpoint(&ckpt, kind, 6, 5);
        let default = eval_json(&ckpt, &data);
        let (c, d) = (ckpt.to_str().unwrap(), data.to_str().unwrap());
        let one = json(&nade(&[
            "eval",
            c,
            "--data",
            d,
            "--json",
            "--device",
            "cpu",
            "--threads",
            "1",
        ]));
        assert_eq!(one["threads"], 1, "{kind}");
        assert_eq!(one["nll_nats"], default["nll_nats"], "{kind}");
    }
    let ckpt = dir.path().join("nade.safetensors");
    let c = ckpt.to_str().unwrap();
    let png = dir.path().join("s.png");
    let sample = nade(&[
        "sample",
        c,
        "--count",
        "3",
        "--threads",
        "1",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(
        sample.status.success(),
        "{}",
        String::from_utf8_lossy(&sample.stderr)
    );
    let complete = nade(&[
        "complete",
        c,
        "--rows",
        "1",
        "--count",
        "2",
        "--data",
        data.to_str().unwrap(),
        "--threads",
        "1",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(
        complete.status.success(),
        "{}",
        String::from_utf8_lossy(&complete.stderr)
    );
    let bench = json(&nade(&[
        "bench",
        "--model",
        "fvsbn",
        "--phase",
        "eval",
        "--seconds",
        "0.05",
        "--threads",
        "1",
        "--json",
    ]));
    assert_eq!(bench["threads"], 1);
    let out = nade(&["eval", c, "--threads", "5000"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--threads"));
}
