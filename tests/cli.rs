//! The `nade` binary end to end: eval's text and JSON output, and its one-line errors.

mod common;

use std::process::Output;

use candle_core::Device;
use common::bin::{eval_json, nade, write_checkpoint};
use nade::checkpoint;
use nade::data::amat::read_amat;
use nade::models::ModelConfig;

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
