//! The `nade` binary end to end: eval's text and JSON output, and its one-line errors.

use std::path::Path;
use std::process::Output;

use candle_core::Device;
use nade::checkpoint;
use nade::data::amat::read_amat;
use nade::models::ModelConfig;

use crate::common;
use crate::common::bin::{eval_json, json, nade, write_checkpoint};

#[test]
fn eval_json_on_a_file_matches_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("toy.amat");
    std::fs::write(&data, "0 1 1 0 1\n1 1 0 0 0\n0 0 0 0 1\n").unwrap();
    for kind in ModelConfig::kinds() {
        let ckpt = dir.path().join(format!("{kind}.safetensors"));
        write_checkpoint(&ckpt, kind, 5, 3);
        let out = eval_json(&ckpt, &data, &[]);
        assert_eq!(out["model"], kind);
        assert_eq!(out["count"], 3);
        // The kernel once, under its own name (`path` was its duplicate until 2026-12-05).
        assert!(out.get("path").is_none(), "{out}");
        assert_eq!(out["kernel"].is_null(), kind != "nade", "{out}");
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

    let e = common::bin::refused(&nade(&["eval", "/nonexistent/model.safetensors"]));
    assert!(e.contains("/nonexistent/model.safetensors"), "{e}");

    let bad_row = dir.path().join("bad.amat");
    std::fs::write(&bad_row, "0 1 1 0\n0 1 2 0\n").unwrap();
    let e = common::bin::refused(&nade(&["eval", ckpt, "--data", bad_row.to_str().unwrap()]));
    assert!(e.contains("bad.amat:2") && e.contains("not 0 or 1"), "{e}");

    let wide = dir.path().join("wide.amat");
    std::fs::write(&wide, "0 1 1 0 1\n").unwrap();
    let e = common::bin::refused(&nade(&["eval", ckpt, "--data", wide.to_str().unwrap()]));
    assert!(
        e.contains("wide.amat: images of 5 values") && e.contains("n = 4"),
        "{e}"
    );

    let empty_dir = dir.path().join("nothing-here");
    std::fs::create_dir(&empty_dir).unwrap();
    let e = common::bin::refused(&nade(&[
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

/// A random FVSBN checkpoint of n = 4 and a two-image data file of that width, in `dir`:
/// (checkpoint, data) as strings for the command line.
fn fvsbn_and_two_images(dir: &Path) -> (String, String) {
    let ckpt = dir.join("fvsbn.safetensors");
    write_checkpoint(&ckpt, "fvsbn", 4, 0);
    let data = dir.join("toy.amat");
    std::fs::write(&data, "0 1 1 0\n1 1 0 0\n").unwrap();
    let text = |p: std::path::PathBuf| p.to_str().unwrap().to_string();
    (text(ckpt), text(data))
}

/// A data folder with toy_{train,valid,test}.amat of seeded random n-dimensional rows.
fn toy_data(dir: &Path, n: usize) -> std::path::PathBuf {
    use rand::{Rng, SeedableRng};
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for split in ["train", "valid", "test"] {
        let rows: Vec<String> = (0..40)
            .map(|_| {
                let row: Vec<&str> = (0..n)
                    .map(|_| if rng.random_bool(0.3) { "1" } else { "0" })
                    .collect();
                row.join(" ")
            })
            .collect();
        std::fs::write(
            data.join(format!("toy_{split}.amat")),
            rows.join("\n") + "\n",
        )
        .unwrap();
    }
    data
}

/// A run file training `model` (a TOML `[model]` body) on [`toy_data`] into `dir`/run.
fn toy_run_config(dir: &Path, model: &str, epochs: usize) -> std::path::PathBuf {
    let data = toy_data(dir, 6);
    let path = dir.join("run.toml");
    let text = format!(
        "[model]\n{model}\n[data]\ndir = \"{}\"\ndataset = \"toy\"\n[train]\nepochs = {epochs}\nbatch_size = 10\nsample_every = 0\ndevice = \"cpu\"\n[output]\ndir = \"{}\"\n",
        data.display(),
        dir.join("run").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `nade info` on the shipped checkpoints: the model, its config, the parameter counts of the
/// README's results table, every tensor, and the epoch and NLLs the training run recorded.
#[test]
fn info_describes_the_shipped_checkpoints() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let nade_ckpt = root.join("checkpoints/nade.safetensors");
    let text = stdout(&nade(&["info", nade_ckpt.to_str().unwrap()]));
    for want in [
        "nade (n = 784, hidden = 500)",
        r#""kind":"nade","n":784,"hidden":500"#,
        "785,284 used, 785,284 stored",
        "epoch 128",
        "valid NLL 88.4848",
        "test NLL 87.7826",
        "  W  F32  [500, 784]",
        "  V  F32  [784, 500]",
    ] {
        assert!(text.contains(want), "no {want:?} in\n{text}");
    }
    let info = json(&nade(&["info", nade_ckpt.to_str().unwrap(), "--json"]));
    assert_eq!(info["model"], "nade");
    assert_eq!(info["config"]["n"], 784);
    assert_eq!(info["config"]["hidden"], 500);
    assert_eq!(info["parameters_used"], 785_284);
    assert_eq!(info["parameters_stored"], 785_284);
    assert_eq!(info["epoch"], 128);
    assert!((info["valid_nll"].as_f64().unwrap() - 88.4848).abs() < 1e-4);
    assert_eq!(info["optimizer_state"], false);
    let tensors = info["tensors"].as_array().unwrap();
    let names: Vec<&str> = tensors
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 4);
    for name in ["W", "c", "V", "b"] {
        assert!(names.contains(&name), "{names:?}");
    }
    let keys = info["metadata_keys"].as_array().unwrap();
    assert!(keys.iter().any(|k| k == "valid_nll"), "{keys:?}");

    // The used parameters are the README's: FVSBN's W and MLP's A count by their lower triangles.
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for (model, used, stored) in [
        ("fvsbn", 307_720, 784 * 784 + 784),
        ("mlp", 1_234_800, 784 * 4 * 784 + 2 * 784 * 4 + 784),
        ("nade", 785_284, 785_284),
    ] {
        let ckpt = root.join(format!("checkpoints/{model}.safetensors"));
        let info = json(&nade(&["info", ckpt.to_str().unwrap(), "--json"]));
        assert_eq!(info["parameters_used"], used, "{model}");
        assert_eq!(info["parameters_stored"], stored, "{model}");
        let digits = used.to_string();
        let mut shown = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                shown.push(',');
            }
            shown.push(c);
        }
        let cell = format!("| {shown} |");
        assert!(readme.contains(&cell), "README lacks {cell}");
        let text = stdout(&nade(&["info", ckpt.to_str().unwrap()]));
        assert!(text.contains(&format!("{shown} used")), "{text}");
    }
}

/// On a run's checkpoints: best.safetensors has the epoch and both NLLs, last.safetensors the
/// optimizer's tensors as well.
#[test]
fn info_reports_the_epoch_and_nlls_of_a_training_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let config = toy_run_config(dir.path(), "kind = \"nade\"\nhidden = 3", 2);
    stdout(&nade(&["train", config.to_str().unwrap()]));
    let run = dir.path().join("run");

    let last = json(&nade(&[
        "info",
        run.join("last.safetensors").to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(last["model"], "nade");
    assert_eq!(last["config"]["n"], 6);
    assert_eq!(last["epoch"], 2);
    assert_eq!(last["optimizer_state"], true);
    let valid = last["valid_nll"].as_f64().unwrap();
    assert!(valid.is_finite() && valid > 0.0, "{valid}");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let epoch2: serde_json::Value = serde_json::from_str(metrics.lines().nth(1).unwrap()).unwrap();
    assert_eq!(epoch2["valid_nll"].as_f64().unwrap(), valid);
    let names: Vec<&str> = last["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.iter().any(|n| n.starts_with("optim.")), "{names:?}");
    // 3 x 6 + 3 + 6 x 3 + 6: every NADE parameter is used.
    assert_eq!(last["parameters_used"], 45);

    let best = run.join("best.safetensors");
    let text = stdout(&nade(&["info", best.to_str().unwrap()]));
    assert!(
        text.contains("valid NLL") && text.contains("test NLL"),
        "{text}"
    );
    assert!(!text.contains("optimizer"), "{text}");
}

/// `nade eval` of a trained checkpoint reads the data set its run trained on (the run's
/// `[data] dataset`, here "toy") when --dataset is not given; --dataset still wins.
#[test]
fn eval_reads_the_data_set_the_checkpoint_trained_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = toy_run_config(dir.path(), "kind = \"fvsbn\"", 1);
    stdout(&nade(&["train", config.to_str().unwrap()]));
    let best = dir.path().join("run").join("best.safetensors");
    let data = dir.path().join("data");
    let json = eval_json(&best, &data, &[]);
    assert_eq!(json["data"], data.join("toy_test.amat").to_str().unwrap());
    assert_eq!(json["count"], 40);
    let e = common::bin::refused(&nade(&[
        "eval",
        best.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--dataset",
        "other",
    ]));
    assert!(e.contains("other_test.amat"), "{e}");
}

#[test]
fn info_on_a_bad_file_gives_the_one_line_error_eval_gives() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("garbage.safetensors");
    std::fs::write(&bad, b"this is not a checkpoint").unwrap();
    let bad = bad.to_str().unwrap();
    let e = common::bin::refused(&nade(&["info", bad]));
    assert!(
        e.contains("garbage.safetensors") && e.contains("not a safetensors file"),
        "{e}"
    );
    assert_eq!(e, common::bin::refused(&nade(&["eval", bad])));
    let e = common::bin::refused(&nade(&["info", "/nonexistent/model.safetensors", "--json"]));
    assert!(e.contains("/nonexistent/model.safetensors"), "{e}");
}

/// A model far beyond any machine's memory is refused before anything is allocated (it was
/// OOM-killed after 55 s), with one line naming the key; no run folder is made.
#[test]
fn training_a_model_too_large_for_memory_is_refused_naming_model_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let config = toy_run_config(dir.path(), "kind = \"nade\"\nhidden = 100000000", 1);
    let e = common::bin::refused(&nade(&["train", config.to_str().unwrap()]));
    assert!(
        e.contains("model.hidden = 100000000") && e.contains("training needs about"),
        "{e}"
    );
    assert!(e.contains("available"), "{e}");
    assert!(!dir.path().join("run").exists());
}

/// A grid of 40,000 images at scale 32 (180k x 180k pixels) is refused before sampling.
#[test]
fn a_huge_sample_grid_is_refused_naming_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ckpt = root.join("checkpoints/nade.safetensors");
    let out = dir.path().join("grid.png");
    let e = common::bin::refused(&nade(&[
        "sample",
        ckpt.to_str().unwrap(),
        "--count",
        "40000",
        "--scale",
        "32",
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]));
    assert!(
        e.contains("--count 40000 --scale 32") && e.contains("PNG grid") && e.contains("limit"),
        "{e}"
    );
    assert!(!out.exists());
}

/// Long sampling reports its progress; on a pipe as plain lines.
#[test]
fn long_sampling_prints_progress_lines_when_not_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("fvsbn.safetensors");
    write_checkpoint(&ckpt, "fvsbn", 4, 0);
    let out = dir.path().join("s.png");
    let run = nade(&[
        "sample",
        ckpt.to_str().unwrap(),
        "--count",
        "10000",
        "--scale",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    stdout(&run);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("sampled 10000 of 10000 images (100%"), "{err}");
    assert_eq!(err.matches("sampled ").count(), 10, "{err}");
    assert!(out.exists());
}

/// Count-like flags name themselves when given 0 (eval --limit 0 said "the data set is empty").
#[test]
fn zero_counts_are_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, data) = fvsbn_and_two_images(dir.path());
    let (ckpt, data) = (ckpt.as_str(), data.as_str());
    let config = toy_run_config(dir.path(), "kind = \"fvsbn\"", 1);
    let config = config.to_str().unwrap();
    for (flag, args) in [
        (
            "--limit",
            vec!["eval", ckpt, "--data", data, "--limit", "0"],
        ),
        (
            "--batch",
            vec!["eval", ckpt, "--data", data, "--batch", "0"],
        ),
        ("--count", vec!["sample", ckpt, "--count", "0"]),
        (
            "--batch",
            vec!["sample", ckpt, "--count", "1", "--batch", "0"],
        ),
        (
            "--count",
            vec!["complete", ckpt, "--rows", "1", "--count", "0"],
        ),
        (
            "--samples",
            vec![
                "complete",
                ckpt,
                "--rows",
                "1",
                "--count",
                "1",
                "--samples",
                "0",
            ],
        ),
        (
            "--stride",
            vec![
                "complete", ckpt, "--rows", "1", "--count", "1", "--stride", "0",
            ],
        ),
        ("--batch", vec!["bench", "--batch", "0"]),
        ("--hidden", vec!["bench", "--hidden", "0"]),
        ("--epochs", vec!["train", config, "--epochs", "0"]),
    ] {
        let out = nade(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: ") && first.contains(flag) && first.contains("at least 1"),
            "{args:?}: {err}"
        );
    }
}

/// The grids are PNG: any other name is refused before anything runs, never PNG bytes
/// under a .jpg name.
#[test]
fn a_grid_name_not_ending_in_png_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, data) = fvsbn_and_two_images(dir.path());
    let ckpt = ckpt.as_str();
    for name in ["x.jpg", "grid", "x.png.txt"] {
        let out = dir.path().join(name);
        let path = out.to_str().unwrap();
        let e = common::bin::refused(&nade(&["sample", ckpt, "--count", "2", "--out", path]));
        assert!(
            e.contains("--out") && e.contains(name) && e.contains("PNG"),
            "{e}"
        );
        let e = common::bin::refused(&nade(&[
            "complete", ckpt, "--rows", "1", "--count", "1", "--data", &data, "--out", path,
        ]));
        assert!(e.contains("--out") && e.contains(name), "{e}");
        assert!(!out.exists());
    }
    // Upper case is still PNG.
    let upper = dir.path().join("GRID.PNG");
    stdout(&nade(&[
        "sample",
        ckpt,
        "--count",
        "2",
        "--out",
        upper.to_str().unwrap(),
    ]));
    assert!(std::fs::read(&upper).unwrap().starts_with(b"\x89PNG"));
}

/// FVSBN and MLP have one way to compute: a NADE kernel (by either flag name) is an error.
#[test]
fn a_kernel_for_a_model_without_kernels_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("toy.amat");
    std::fs::write(&data, "0 1 1 0\n1 1 0 0\n").unwrap();
    for kind in ["fvsbn", "mlp"] {
        let ckpt = dir.path().join(format!("{kind}.safetensors"));
        write_checkpoint(&ckpt, kind, 4, 2);
        for flag in ["--kernel", "--path"] {
            for kernel in ["fused", "plain", "blocked:2"] {
                let e = common::bin::refused(&nade(&[
                    "eval",
                    ckpt.to_str().unwrap(),
                    "--data",
                    data.to_str().unwrap(),
                    flag,
                    kernel,
                ]));
                assert!(
                    e.contains(&format!("--kernel {kernel}")) && e.contains("one way to compute"),
                    "{e}"
                );
            }
        }
        // auto is what they compute with.
        stdout(&nade(&[
            "eval",
            ckpt.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--kernel",
            "auto",
        ]));
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
    for kind in ModelConfig::kinds() {
        let ckpt = dir.path().join(format!("{kind}.safetensors"));
        write_checkpoint(&ckpt, kind, 6, 5);
        let default = eval_json(&ckpt, &data, &[]);
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
    let sample = json(&nade(&[
        "sample",
        c,
        "--count",
        "3",
        "--threads",
        "1",
        "--out",
        png.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(
        (sample["count"].as_u64(), sample["model"].as_str()),
        (Some(3), Some("nade"))
    );
    assert_eq!(sample["out"], png.to_str().unwrap());
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
    assert_eq!(bench["kernel"], "-");
    let out = nade(&["eval", c, "--threads", "5000"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--threads"));
}

/// One file given by --data is evaluated whole and said to be that file, never labelled a
/// split it may not be; `--split` with it is refused. A folder's split is named as before.
#[test]
fn eval_of_one_file_names_the_file_and_refuses_a_split() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("fvsbn.safetensors");
    write_checkpoint(&ckpt, "fvsbn", 6, 0);
    let data = toy_data(dir.path(), 6);
    let file = data.join("toy_train.amat");
    let (c, f) = (ckpt.to_str().unwrap(), file.to_str().unwrap());
    let json = eval_json(&ckpt, &file, &[]);
    assert!(json["split"].is_null(), "{json}");
    assert_eq!(json["data"], f);
    let text = stdout(&nade(&["eval", c, "--data", f]));
    assert!(text.contains(&format!("on 40 images of {f}:")), "{text}");
    let e = common::bin::refused(&nade(&["eval", c, "--data", f, "--split", "valid"]));
    assert!(e.contains("--split valid") && e.contains(f), "{e}");
    let e = common::bin::refused(&nade(&[
        "eval", c, "--data", f, "--split", "valid", "--keep", "top:1",
    ]));
    assert!(e.contains("--split valid"), "{e}");

    let folder = data.to_str().unwrap();
    let json = eval_json(&ckpt, &data, &["--dataset", "toy", "--split", "valid"]);
    assert_eq!(json["split"], "valid");
    assert_eq!(
        json["data"],
        data.join("toy_valid.amat").to_str().unwrap(),
        "{json}"
    );
    let text = stdout(&nade(&["eval", c, "--data", folder, "--dataset", "toy"]));
    assert!(text.contains("on 40 test images:"), "{text}");
}

/// Completion data of another width than the model's: the error names the file and the
/// checkpoint, not the --keep spec.
#[test]
fn completing_images_of_another_width_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("nade.safetensors");
    write_checkpoint(&ckpt, "nade", 784, 4);
    let data = toy_data(dir.path(), 6);
    let out = dir.path().join("c.png");
    let e = common::bin::refused(&nade(&[
        "complete",
        ckpt.to_str().unwrap(),
        "--keep",
        "top:3",
        "--count",
        "2",
        "--data",
        data.to_str().unwrap(),
        "--dataset",
        "toy",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(
        e.contains("toy_test.amat")
            && e.contains("6 values")
            && e.contains("nade.safetensors")
            && !e.contains("--keep"),
        "{e}"
    );
}

/// `--out` (and `--amat`) in a folder that does not exist is refused before any work, and
/// no folder is created: a mistyped path never becomes a folder.
#[test]
fn output_files_in_a_missing_folder_are_refused_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (c, data) = fvsbn_and_two_images(dir.path());
    let (c, data) = (c.as_str(), data.as_str());
    let missing = dir.path().join("no/such");
    let png = missing.join("x.png");
    let amat = missing.join("x.amat");
    let good_png = dir.path().join("ok.png");
    for args in [
        vec!["sample", c, "--count", "2", "--out", png.to_str().unwrap()],
        vec![
            "sample",
            c,
            "--count",
            "2",
            "--out",
            good_png.to_str().unwrap(),
            "--amat",
            amat.to_str().unwrap(),
        ],
        vec![
            "complete",
            c,
            "--rows",
            "1",
            "--count",
            "1",
            "--data",
            data,
            "--out",
            png.to_str().unwrap(),
        ],
    ] {
        let e = common::bin::refused(&nade(&args));
        assert!(
            e.contains("no such folder") && e.contains(&missing.display().to_string()),
            "{args:?}: {e}"
        );
        assert!(!dir.path().join("no").exists(), "{args:?} made a folder");
        assert!(!good_png.exists(), "{args:?} wrote its grid first");
    }
}

/// `bench --seconds` takes a duration above 0: 0, a negative number and NaN are refused.
#[test]
fn bench_seconds_must_be_a_positive_number() {
    for bad in ["0", "-1", "nan", "inf", "soon"] {
        let out = nade(&["bench", "--model", "fvsbn", &format!("--seconds={bad}")]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            !out.status.success() && err.contains("--seconds"),
            "{bad}: {err}"
        );
    }
}

/// More threads than cores: a warning on stderr, the work still done; far more: refused
/// with one line naming the flag and the cores.
#[test]
fn thread_counts_past_the_cores_warn_and_absurd_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (c, d) = fvsbn_and_two_images(dir.path());
    let (c, d) = (c.as_str(), d.as_str());
    let cores = nade::threads::cores();
    let limit = nade::threads::MAX_PER_CORE * cores;
    let over = (cores + 1).to_string();
    let out = nade(&["eval", c, "--data", d, "--threads", &over]);
    stdout(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: --threads") && err.contains(&format!("{cores} cores")),
        "{err}"
    );
    if limit < nade::threads::MAX {
        let absurd = (limit + 1).to_string();
        let e = common::bin::refused(&nade(&["eval", c, "--data", d, "--threads", &absurd]));
        assert!(e.contains(&format!("--threads = {absurd}")), "{e}");
    }
}
