//! Running the built `nade` binary, and the checkpoints its tests feed it.

use std::path::Path;
use std::process::{Command, Output};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use nade::{checkpoint, models};

/// `nade ARGS`, run to completion.
pub fn nade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nade"))
        .args(args)
        .output()
        .unwrap()
}

/// A randomly initialised checkpoint written by this crate.
pub fn write_checkpoint(path: &Path, kind: &str, n: usize, hidden: usize) {
    let cfg = super::new_config(kind, n, hidden);
    let params = models::init_params(&cfg, 1, &Device::Cpu)
        .unwrap()
        .into_iter()
        .collect();
    let model = cfg
        .build(VarBuilder::from_tensors(params, DType::F32, &Device::Cpu))
        .unwrap();
    checkpoint::save(path, model.as_ref(), &Default::default()).unwrap();
}

/// The stdout of a run that succeeded; else the test fails showing its stderr.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The stderr of a run that failed with one line, "error: ..."; else the test fails showing
/// its output.
pub fn refused(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "expected failure, stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

/// [`refused`]'s message alone: without "error: " and the newline.
pub fn error_message(out: &Output) -> String {
    let err = refused(out);
    err.trim_end()
        .strip_prefix("error: ")
        .expect("refused checked the prefix")
        .to_string()
}

/// [`ok`], parsed as JSON.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).unwrap()
}

/// `nade eval CKPT --data DATA --json --device cpu EXTRA...`, parsed.
pub fn eval_json(ckpt: &Path, data: &Path, extra: &[&str]) -> serde_json::Value {
    let (ckpt, data) = (ckpt.to_str().unwrap(), data.to_str().unwrap());
    let args = ["eval", ckpt, "--data", data, "--json", "--device", "cpu"];
    json(&nade(&[&args[..], extra].concat()))
}
