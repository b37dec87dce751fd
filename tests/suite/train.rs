//! Training end to end on small synthetic data with a known entropy: convergence, resume,
//! determinism, divergence handling and config errors.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use candle_core::Device;
use nade::checkpoint;
use nade::config::Config;
use nade::train::{self, Options, Progress};

use crate::common;
use crate::common::{checkpoint_snapshot, markov_splits};

const N: usize = 10;
const P_FIRST: f64 = 0.7;
const P_STAY: f64 = 0.9;

/// A binary Markov chain: x_1 ~ Bern(0.7), x_i = x_{i-1} with probability 0.9. Every model
/// here can represent it exactly; its entropy is H(0.7) + (n - 1) H(0.9) nats.
fn entropy() -> f64 {
    let h = |p: f64| -(p * p.ln() + (1.0 - p) * (1.0 - p).ln());
    h(P_FIRST) + (N - 1) as f64 * h(P_STAY)
}

/// A data folder with toy_{train,valid,test}.amat.
fn toy_data(dir: &Path) -> PathBuf {
    markov_splits(
        dir,
        N,
        P_STAY,
        [("train", 4000, 1), ("valid", 1000, 2), ("test", 4000, 3)],
    )
}

fn config(dir: &Path, kind: &str, hidden: usize, epochs: usize, extra_train: &str) -> Config {
    let data = toy_data(dir);
    let text = format!(
        r#"
[model]
kind = "{kind}"
hidden = {hidden}
[data]
dir = "{}"
dataset = "toy"
[train]
epochs = {epochs}
batch_size = 50
lr = 1e-2
seed = 7
patience = 100
sample_every = 0
device = "cpu"
{extra_train}
[output]
dir = "{}"
"#,
        data.display(),
        dir.join("out").display()
    );
    Config::from_toml(&text).unwrap()
}

fn quiet() -> Options {
    Options {
        resume: false,
        progress: Progress::Off,
        test: true,
        force: false,
    }
}

/// metrics.jsonl without the wall-clock fields.
fn metrics_without_timing(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            for key in ["train_seconds", "train_images_per_s", "valid_seconds"] {
                v.as_object_mut().unwrap().remove(key);
            }
            v
        })
        .collect()
}

#[test]
fn training_brings_the_nll_to_the_entropy() {
    let h = entropy();
    for (kind, hidden) in [("fvsbn", 0), ("nade", 16), ("mlp", 4)] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), kind, hidden, 12, "");
        let s = train::run(&cfg, &quiet()).unwrap();
        // 4000 test rows: the standard error of the mean NLL is ~0.02 nats.
        let test_nll = s.test_nll.unwrap();
        assert!(
            (test_nll - h).abs() < 0.08,
            "{kind}: test NLL {test_nll} vs entropy {h}"
        );
        assert!(s.test_nll_std_err.unwrap() < 0.05);
        for file in [
            "best.safetensors",
            "last.safetensors",
            "metrics.jsonl",
            "curve.png",
            "summary.json",
        ] {
            assert!(
                dir.path().join("out").join(file).is_file(),
                "{kind}: no {file}"
            );
        }
        assert_eq!(metrics_without_timing(&dir.path().join("out")).len(), 12);
    }
}

/// For each optimizer (Adam, and momentum SGD, whose velocity is the state to carry over).
#[test]
fn resumed_run_ends_where_an_uninterrupted_one_does() {
    for optimizer in ["adam", "sgd"] {
        let extra = format!(
            r#"optimizer = "{optimizer}"
momentum = 0.8
lr_schedule = "plateau"
plateau_patience = 1
lr_decay = 0.7"#
        );
        let whole = tempfile::tempdir().unwrap();
        let cfg = config(whole.path(), "nade", 8, 4, &extra);
        train::run(&cfg, &quiet()).unwrap();

        let split = tempfile::tempdir().unwrap();
        let mut first = config(split.path(), "nade", 8, 2, &extra);
        train::run(&first, &quiet()).unwrap();
        first.train.epochs = 4;
        train::run(
            &first,
            &Options {
                resume: true,
                ..quiet()
            },
        )
        .unwrap();

        let (a, b) = (whole.path().join("out"), split.path().join("out"));
        assert_eq!(
            checkpoint_snapshot(&a.join("last.safetensors")),
            checkpoint_snapshot(&b.join("last.safetensors")),
            "{optimizer}"
        );
        assert_eq!(
            checkpoint_snapshot(&a.join("best.safetensors")),
            checkpoint_snapshot(&b.join("best.safetensors")),
            "{optimizer}"
        );
        assert_eq!(metrics_without_timing(&a), metrics_without_timing(&b));
    }
}

#[test]
fn valid_every_validates_the_kth_and_last_epochs_and_leaves_training_alone() {
    let every_epoch = tempfile::tempdir().unwrap();
    train::run(&config(every_epoch.path(), "nade", 8, 5, ""), &quiet()).unwrap();
    let sparse = tempfile::tempdir().unwrap();
    let s = train::run(
        &config(sparse.path(), "nade", 8, 5, "valid_every = 2"),
        &quiet(),
    )
    .unwrap();

    let (a, b) = (every_epoch.path().join("out"), sparse.path().join("out"));
    // Validation draws nothing from the training stream: the weights and moments agree.
    assert_eq!(
        checkpoint_snapshot(&a.join("last.safetensors")),
        checkpoint_snapshot(&b.join("last.safetensors"))
    );
    let dense = metrics_without_timing(&a);
    let skipped = metrics_without_timing(&b);
    let validated: Vec<u64> = skipped
        .iter()
        .filter(|r| !r["valid_nll"].is_null())
        .map(|r| r["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(validated, [2, 4, 5]);
    for (d, k) in dense.iter().zip(&skipped) {
        assert_eq!(d["train_nll"], k["train_nll"]);
        if !k["valid_nll"].is_null() {
            assert_eq!(d["valid_nll"], k["valid_nll"]);
        }
    }
    // The selected model is the best of the validated epochs, and its file says which.
    let best = skipped
        .iter()
        .filter(|r| !r["valid_nll"].is_null())
        .min_by(|x, y| {
            let v = |r: &serde_json::Value| r["valid_nll"].as_f64().unwrap();
            v(x).total_cmp(&v(y))
        })
        .unwrap();
    assert_eq!(s.best_epoch as u64, best["epoch"].as_u64().unwrap());
    let loaded = checkpoint::load(&b.join("best.safetensors"), &Device::Cpu, None).unwrap();
    assert_eq!(loaded.metadata["epoch"], s.best_epoch.to_string());
}

#[test]
fn one_seed_gives_identical_checkpoints_and_another_seed_does_not() {
    // One folder for all runs: the stored config names it, and must be the same.
    let dir = tempfile::tempdir().unwrap();
    let run = |seed: u64| {
        let _ = std::fs::remove_dir_all(dir.path().join("out"));
        let mut cfg = config(dir.path(), "nade", 8, 2, "");
        cfg.train.seed = seed;
        train::run(&cfg, &quiet()).unwrap();
        let out = dir.path().join("out");
        (
            std::fs::read(out.join("best.safetensors")).unwrap(),
            checkpoint_snapshot(&out.join("last.safetensors")),
        )
    };
    let (best_a, last_a) = run(3);
    let (best_b, last_b) = run(3);
    assert!(
        best_a == best_b,
        "best.safetensors differs between two runs of one seed"
    );
    assert_eq!(last_a, last_b);
    let (best_c, _) = run(4);
    assert!(best_a != best_c);
}

#[test]
fn a_run_told_not_to_test_never_reads_the_test_split() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "fvsbn", 0, 2, "");
    std::fs::remove_file(dir.path().join("data/toy_test.amat")).unwrap();
    let no_test = Options {
        test: false,
        ..quiet()
    };
    let s = train::run(&cfg, &no_test).unwrap();
    assert_eq!(s.test_nll, None);
    let summary = std::fs::read_to_string(dir.path().join("out/summary.json")).unwrap();
    assert!(summary.contains("\"test_nll\": null"), "{summary}");
    let best = std::fs::read(dir.path().join("out/best.safetensors")).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&best).unwrap();
    let metadata = header.metadata().clone().unwrap();
    assert!(metadata.contains_key("valid_nll") && !metadata.contains_key("test_nll"));
    // The same run with the test pass needs the file it deleted (--force: the folder holds
    // the first run).
    let forced = Options {
        force: true,
        ..quiet()
    };
    let err = format!("{:#}", train::run(&cfg, &forced).unwrap_err());
    assert!(err.contains("toy_test.amat"), "{err}");
}

#[test]
fn a_diverging_run_stops_with_a_clear_error_and_keeps_best_loadable() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "nade", 8, 3, "");
    train::run(&cfg, &quiet()).unwrap();
    let best = dir.path().join("out/best.safetensors");
    let before = std::fs::read(&best).unwrap();

    // Continue the same run with an absurd learning rate.
    cfg.train.lr = 1e9;
    cfg.train.epochs = 10;
    let err = format!(
        "{:#}",
        train::run(
            &cfg,
            &Options {
                resume: true,
                ..quiet()
            }
        )
        .unwrap_err()
    );
    assert!(
        err.contains("epoch 4, batch") && err.contains("training loss"),
        "{err}"
    );
    assert!(err.contains("best.safetensors is intact"), "{err}");
    assert_eq!(
        std::fs::read(&best).unwrap(),
        before,
        "best.safetensors changed"
    );
    checkpoint::load(&best, &Device::Cpu, None).unwrap();
}

#[test]
fn config_errors_name_the_key() {
    let base = "[model]\nkind = \"nade\"\nhidden = 8\n[output]\ndir = \"x\"\n";
    let err = |text: &str| format!("{:#}", Config::from_toml(text).unwrap_err());
    assert!(Config::from_toml(base).is_ok());

    let e = err(&format!("{base}[train]\nlr = -1.0\n"));
    assert!(e.contains("train.lr"), "{e}");
    let e = err(&format!("{base}[train]\nl1 = -0.5\n"));
    assert!(e.contains("train.l1"), "{e}");
    let e = err(&format!("{base}[train]\nbatch_size = 0\n"));
    assert!(e.contains("train.batch_size"), "{e}");
    let e = err(&format!("{base}[train]\nlearning_rate = 0.1\n"));
    assert!(e.contains("learning_rate") && e.contains("line 7"), "{e}");
    let e = err("[model]\nkind = \"rbm\"\n[output]\ndir = \"x\"\n");
    assert!(e.contains("rbm") && e.contains("kind"), "{e}");
    let e = err("[model]\nkind = \"mlp\"\n[output]\ndir = \"x\"\n");
    assert!(e.contains("model.hidden"), "{e}");
    let e = err(&format!("{base}[train]\nlr = \"fast\"\n"));
    assert!(e.contains("lr = \"fast\""), "{e}");
    let e = err("[model]\nkind = \"nade\"\nhidden = 8\npath = \"fast\"\n[output]\ndir = \"x\"\n");
    assert!(e.contains("model.path"), "{e}");
    assert_eq!(e.lines().count(), 1, "multi-line error: {e}");
    let e = err(&format!(
        "{base}[train]\nepochs = 10\nlr_schedule = \"cosine\"\ncosine_horizons = [4, 10]\n"
    ));
    assert!(e.contains("train.cosine_horizons"), "{e}");
    let e = err(&format!(
        "{base}[train]\nlr_schedule = \"cosine\"\ncosine_horizons = [4, 4]\n"
    ));
    assert!(e.contains("train.cosine_horizons"), "{e}");
    let e = err(&format!(
        "{base}[train]\noptimizer = \"sgd\"\nmomentum = 1.0\n"
    ));
    assert!(e.contains("train.momentum"), "{e}");
    let e = err(&format!("{base}[train]\noptimizer = \"lbfgs\"\n"));
    assert!(e.contains("lbfgs") && e.contains("line 7"), "{e}");
    let e = err(&format!(
        "{base}[train]\nlr_schedule = \"linear\"\nlr = 1e-3\nlr_min = 1e-2\n"
    ));
    assert!(e.contains("train.lr_min"), "{e}");
    let e = err(&format!("{base}[train]\ncosine_horizons = [4]\n"));
    assert!(
        e.contains("train.cosine_horizons") && e.contains("cosine"),
        "{e}"
    );
    // A value of the wrong type inside [model] names its key and its own line, whatever the
    // model and however the table is written.
    for (text, key, line) in [
        (
            "[model]\nkind = \"nade\"\nhidden = -3\n",
            "model.hidden",
            "line 3 (hidden = -3)",
        ),
        (
            "[model]\nkind = \"nade\"\nhidden = \"x\"\n",
            "model.hidden",
            "line 3",
        ),
        (
            "[model]\nkind = \"made\"\nhidden = [8]\norder = \"foo\"\n",
            "model.order",
            "line 4",
        ),
        (
            "[model]\nkind = \"made\"\nmasks = -1\nhidden = [8]\n",
            "model.masks",
            "line 3",
        ),
        (
            "[model]\nkind = \"deepnade\"\nhidden = [8, -2]\n",
            "model.hidden",
            "line 3",
        ),
        (
            "model = { kind = \"nade\", hidden = -3 }\n",
            "model.hidden",
            "line 1",
        ),
        (
            "[model]\nkind = \"nade\"\nhiden = 3\n",
            "`hiden`",
            "line 3 (hiden = 3)",
        ),
    ] {
        let e = err(&format!("{text}[output]\ndir = \"x\"\n"));
        assert!(e.contains(key) && e.contains(line), "{text}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}

/// A linear run resumed with another epoch count is refused by name: its past rates depend
/// on `epochs`. The same count resumes.
#[test]
fn a_linear_run_resumed_with_other_epochs_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(
        dir.path(),
        "nade",
        8,
        2,
        "optimizer = \"sgd\"\nlr_schedule = \"linear\"",
    );
    train::run(&cfg, &quiet()).unwrap();
    let out = dir.path().join("out");
    assert!(train::refuse_linear_extension(&cfg, &out).is_ok());
    cfg.train.epochs = 4;
    let e = train::refuse_linear_extension(&cfg, &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("train.epochs") && e.contains("linear"), "{e}");
}

/// A finished cosine run resumed with more epochs follows the longer cosine from where it is,
/// and records its old end in the stored config (train.cosine_horizons): that config, trained
/// from scratch, gives the same run bit for bit.
#[test]
fn an_extended_cosine_run_is_what_its_stored_config_retrains() {
    let schedule = "lr_schedule = \"cosine\"\nlr_min = 1e-4";
    let split = tempfile::tempdir().unwrap();
    let mut cfg = config(split.path(), "nade", 8, 2, schedule);
    train::run(&cfg, &quiet()).unwrap();
    cfg.train.epochs = 5;
    let out = split.path().join("out");
    train::record_cosine_extension(&mut cfg, &out);
    assert_eq!(cfg.train.cosine_horizons, [2]);
    train::run(
        &cfg,
        &Options {
            resume: true,
            ..quiet()
        },
    )
    .unwrap();
    let stored = train::config_of_run(&out).unwrap();
    assert_eq!(stored.train.cosine_horizons, [2]);
    assert_eq!(stored.train.epochs, 5);

    let whole = tempfile::tempdir().unwrap();
    let mut again = config(whole.path(), "nade", 8, 5, schedule);
    again.train.cosine_horizons = vec![2];
    train::run(&again, &quiet()).unwrap();
    let (a, b) = (whole.path().join("out"), out);
    assert_eq!(
        checkpoint_snapshot(&a.join("last.safetensors")),
        checkpoint_snapshot(&b.join("last.safetensors"))
    );
    let history = metrics_without_timing(&b);
    assert_eq!(history, metrics_without_timing(&a));
    // Epochs 1-2 on the 2-epoch cosine, 3-5 on the 5-epoch one (0-based e: lr(e / horizon)).
    let cosine = |e: f64, horizon: f64| {
        1e-4 + (1e-2 - 1e-4) * 0.5 * (1.0 + (std::f64::consts::PI * e / horizon).cos())
    };
    let want = [
        cosine(0.0, 2.0),
        cosine(1.0, 2.0),
        cosine(2.0, 5.0),
        cosine(3.0, 5.0),
        cosine(4.0, 5.0),
    ];
    for (record, want) in history.iter().zip(want) {
        let lr = record["lr"].as_f64().unwrap();
        assert!(
            (lr - want).abs() < 1e-12,
            "epoch {}: lr {lr} vs {want}",
            record["epoch"]
        );
    }

    // Resumed with the epochs it had, or on another schedule, a run records nothing.
    let other = tempfile::tempdir().unwrap();
    let mut same = config(other.path(), "nade", 8, 2, schedule);
    train::run(&same, &quiet()).unwrap();
    let other_out = other.path().join("out");
    train::record_cosine_extension(&mut same, &other_out);
    assert!(same.train.cosine_horizons.is_empty());
    let mut constant = config(other.path(), "nade", 8, 4, "");
    train::record_cosine_extension(&mut constant, &other_out);
    assert!(constant.train.cosine_horizons.is_empty());
}

#[test]
fn shipped_configs_parse() {
    // configs/ and its folders (configs/uci/): every .toml in them.
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("configs")];
    let mut parsed = 0;
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            Config::from_file(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            parsed += 1;
        }
    }
    assert!(parsed >= 7, "only {parsed} configs found");
}

/// Resume compares the whole model config: another hidden size is refused, naming both; the
/// kernel is how, not what, so resuming with another one continues the run.
#[test]
fn resume_refuses_another_model_and_accepts_another_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "nade", 8, 1, "");
    train::run(&cfg, &quiet()).unwrap();
    let resume = Options {
        resume: true,
        ..quiet()
    };
    let mut other = cfg.clone();
    other.model = nade::models::ModelConfig::from_legacy("nade", 0, Some(9)).unwrap();
    other.train.epochs = 2;
    let e = format!("{:#}", train::run(&other, &resume).unwrap_err());
    assert!(
        e.contains("holds a nade (n = 10, hidden = 8)")
            && e.contains("asks for a nade (n = 10, hidden = 9)"),
        "{e}"
    );
    let mut blocked = cfg.clone();
    blocked.model = cfg.model.with_kernel("blocked:3").unwrap();
    blocked.train.epochs = 2;
    let summary = train::run(&blocked, &resume).unwrap();
    assert_eq!(summary.epochs_run, 2);
}

/// A new run never overwrites an earlier one: without --force it is refused with a message
/// naming the folder and the ways out; with --force the earlier checkpoints are kept aside.
#[test]
fn a_new_run_refuses_a_folder_that_holds_one_and_force_keeps_the_old_best() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "fvsbn", 0, 2, "");
    train::run(&cfg, &quiet()).unwrap();
    let out = dir.path().join("out");
    let best_before = std::fs::read(out.join("best.safetensors")).unwrap();
    let e = format!("{:#}", train::run(&cfg, &quiet()).unwrap_err());
    assert!(
        e.contains(&out.display().to_string())
            && e.contains("already holds a run")
            && e.contains("--resume")
            && e.contains("--force"),
        "{e}"
    );
    assert_eq!(
        std::fs::read(out.join("best.safetensors")).unwrap(),
        best_before
    );

    let mut one_epoch = cfg.clone();
    one_epoch.train.epochs = 1;
    let forced = Options {
        force: true,
        ..quiet()
    };
    train::run(&one_epoch, &forced).unwrap();
    let kept: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|name| name.starts_with("best.replaced-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::read(out.join(&kept[0])).unwrap(), best_before);
}

/// `--force` runs within one second kept their backups under one name, each overwriting
/// the last: every earlier checkpoint survives under a name of its own.
#[test]
fn forced_runs_never_overwrite_an_earlier_backup() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "fvsbn", 0, 1, "");
    cfg.train.init_bias_from_data = false;
    let out = dir.path().join("out");
    let forced = Options {
        force: true,
        ..quiet()
    };
    train::run(&cfg, &quiet()).unwrap();
    // Backups of the next seconds already there, as three forced runs in one second left them.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for stamp in now..now + 30 {
        std::fs::write(
            out.join(format!("best.replaced-{stamp}.safetensors")),
            "earlier",
        )
        .unwrap();
    }
    let mut bests = vec![std::fs::read(out.join("best.safetensors")).unwrap()];
    for seed in 1..4 {
        cfg.train.seed = seed;
        train::run(&cfg, &forced).unwrap();
        bests.push(std::fs::read(out.join("best.safetensors")).unwrap());
    }
    let mut kept = Vec::new();
    for entry in std::fs::read_dir(&out).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        if name.starts_with("best.replaced-") {
            let bytes = std::fs::read(out.join(&name)).unwrap();
            if bytes != b"earlier" {
                kept.push(bytes);
            }
        }
    }
    assert_eq!(kept.len(), 3, "three forced runs keep three earlier bests");
    for earlier in &bests[..3] {
        assert!(kept.contains(earlier), "an earlier best is lost");
    }
    let untouched = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| std::fs::read(e.as_ref().unwrap().path()).unwrap() == b"earlier")
        .count();
    assert_eq!(untouched, 30);
}

/// Two runs started together on one folder: one of them is refused at once, naming the
/// other's process, and so is a `--resume` of the folder while that run goes on.
#[cfg(unix)]
#[test]
fn two_runs_on_one_folder_the_second_is_refused_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let (file, out) = endless_run(dir.path());
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_nade"))
            .args(["train", file.to_str().unwrap(), "--threads", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut runs = [spawn(), spawn()];
    let started = std::time::Instant::now();
    let refused = loop {
        if let Some(i) = (0..2).find(|&i| runs[i].try_wait().unwrap().is_some()) {
            break i;
        }
        assert!(
            started.elapsed().as_secs() < 60,
            "neither run was refused within a minute"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let going = 1 - refused;
    let mut err = String::new();
    runs[refused]
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!runs[refused].wait().unwrap().success(), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("process {}", runs[going].id()))
            && err.contains(&out.display().to_string()),
        "{err}"
    );

    // The one going on: once it has a checkpoint, a resume of the folder is refused too.
    let mut stdout = BufReader::new(runs[going].stdout.take().unwrap());
    loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "the run ended");
        if line.starts_with("epoch 1 of 10000 ") {
            break;
        }
    }
    let resumed = nade(&["train", "--resume", out.to_str().unwrap()]);
    let err = common::bin::refused(&resumed);
    assert!(
        err.contains(&format!("process {}", runs[going].id())),
        "{err}"
    );
    runs[going].kill().unwrap();
    runs[going].wait().unwrap();
    // The lock went with the process (killed, not stopped): nothing holds the folder.
    nade::run_lock::RunLock::acquire(&out).unwrap();
}

/// A run reads three splits: one .amat file given as the data is refused (it would be the
/// training, validation and test set at once), and `--dataset` picks the files' prefix.
#[test]
fn a_run_refuses_one_data_file_and_takes_the_dataset_flag() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "fvsbn", 0, 1, "");
    let file = config_file(&cfg, dir.path());
    let one = dir.path().join("data/toy_train.amat");
    let out = dir.path().join("new-out");
    let run = nade(&[
        "train",
        file.to_str().unwrap(),
        "--data",
        one.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = common::bin::refused(&run);
    assert!(
        err.contains(&one.display().to_string()) && err.contains("toy_{train,valid,test}.amat"),
        "{err}"
    );
    assert!(!out.exists(), "a refused run leaves no output folder");

    let run = nade(&[
        "train",
        file.to_str().unwrap(),
        "--dataset",
        "other",
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = common::bin::refused(&run);
    assert!(err.contains("other_train.amat"), "{err}");
    assert!(!out.exists(), "a refused run leaves no output folder");
}

/// A run file of 10,000 epochs of NADE on the toy data (stopped by the test), and its
/// output folder.
fn endless_run(dir: &Path) -> (PathBuf, PathBuf) {
    let mut cfg = config(dir, "nade", 8, 1, "");
    cfg.train.epochs = 10_000;
    cfg.train.patience = 10_000;
    (config_file(&cfg, dir), dir.join("out"))
}

/// `nade train ARGS` with stdout and stderr piped (not a terminal).
fn nade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nade"))
        .args(args)
        .output()
        .unwrap()
}

/// The config of [`config`] written to `dir/run.toml`, for the binary.
fn config_file(cfg: &Config, dir: &Path) -> PathBuf {
    let path = dir.join("run.toml");
    std::fs::write(&path, cfg.to_toml()).unwrap();
    path
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

fn epochs_recorded(out: &Path) -> usize {
    metrics_without_timing(out).len()
}

/// Not on a terminal, the binary prints the banner (model, size, device, data, output, epoch
/// bound), "epoch k of N" with an ETA after every epoch, and on resume where it goes on from.
#[test]
fn cli_training_prints_a_banner_epochs_of_n_and_where_a_resume_starts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "nade", 8, 2, "");
    let file = config_file(&cfg, dir.path());
    let out = dir.path().join("out");
    let run = nade(&["train", file.to_str().unwrap(), "--threads", "1"]);
    let stdout = text(&run.stdout);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let params = cfg.model_config(N).unwrap().num_params();
    for want in [
        format!("model {{\"kind\":\"nade\",\"n\":{N},\"hidden\":8"),
        format!("{params} parameters, on cpu (1 thread)"),
        format!(
            "data {} (toy): 4000 train and 1000 valid images of {N} values",
            dir.path().join("data").display()
        ),
        format!("output {}: at most 2 epochs", out.display()),
        "epoch 1 of 2 ".to_string(),
        "epoch 2 of 2 ".to_string(),
        "ETA <= ".to_string(),
    ] {
        assert!(stdout.contains(&want), "no `{want}` in:\n{stdout}");
    }

    let out_arg = out.to_str().unwrap();
    let resumed = nade(&["train", "--resume", out_arg, "--epochs", "3"]);
    let stdout = text(&resumed.stdout);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    let want = format!("resuming {out_arg} from epoch 2 of 3");
    assert!(stdout.contains(&want), "no `{want}` in:\n{stdout}");
    assert!(stdout.contains("epoch 3 of 3 "), "{stdout}");
    assert_eq!(epochs_recorded(&out), 3);
}

/// A kill -9 during a write leaves `.NAME.PID.tmp`; the next run in the folder removes those
/// whose writer is gone, says so, and leaves every other file alone.
#[test]
fn a_new_run_removes_stale_temporaries_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "fvsbn", 0, 1, "");
    let file = config_file(&cfg, dir.path());
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    // No process has this pid (Linux pids stop at 2^22); an hour old for systems where the
    // age decides.
    let stale = ".last.safetensors.4000000000.tmp";
    // This test's own process is alive: its temporary may be a write in progress.
    let live = format!(".best.safetensors.{}.tmp", std::process::id());
    let foreign = [
        ".notes.tmp",
        "notes.txt",
        ".metrics.jsonl.tmp",
        "x.4000000000.tmp",
    ];
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for name in foreign.iter().copied().chain([stale, live.as_str()]) {
        let f = std::fs::File::create(out.join(name)).unwrap();
        f.set_modified(an_hour_ago).unwrap();
    }
    let run = nade(&["train", file.to_str().unwrap()]);
    let stderr = text(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        !out.join(stale).exists(),
        "the stale temporary is still there"
    );
    let said: Vec<_> = stderr
        .lines()
        .filter(|l| l.contains("stale temporary"))
        .collect();
    assert_eq!(said.len(), 1, "{stderr}");
    assert!(
        said[0].contains("removed 1 ") && said[0].contains(stale),
        "{stderr}"
    );
    for name in foreign {
        assert!(out.join(name).exists(), "{name} was removed");
    }
    if cfg!(target_os = "linux") {
        assert!(
            out.join(&live).exists(),
            "a live process's temporary was removed"
        );
    }
}

/// Ctrl-C (SIGINT) during training stops between minibatches with a message naming what is
/// saved and the command that continues, exits non-zero, leaves no temporary, and
/// `--resume` goes on from the last completed epoch.
#[cfg(unix)]
#[test]
fn sigint_stops_cleanly_and_resume_continues_from_the_last_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let (file, out) = endless_run(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_nade"))
        .args(["train", file.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    // Wait for the first completed epoch, then interrupt.
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "the run ended before its first epoch: {seen}"
        );
        seen.push_str(&line);
        if line.starts_with("epoch 1 of 10000 ") {
            break;
        }
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "stderr: {stderr}");
    let out_arg = out.to_str().unwrap();
    assert!(
        stderr.contains("interrupted in epoch")
            && stderr.contains(&format!("nade train --resume {out_arg}")),
        "{stderr}"
    );
    // The epoch last.safetensors holds, as the message says it.
    let saved: usize = stderr
        .split("last.safetensors (epoch ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("no saved epoch in: {stderr}"));
    assert!(saved >= 1);
    assert_eq!(epochs_recorded(&out), saved);
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let until = (saved + 1).to_string();
    let resumed = nade(&["train", "--resume", out_arg, "--epochs", &until]);
    let stdout = text(&resumed.stdout);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    let want = format!("resuming {out_arg} from epoch {saved} of {until}");
    assert!(stdout.contains(&want), "no `{want}` in:\n{stdout}");
    assert_eq!(epochs_recorded(&out), saved + 1);
}

#[test]
fn the_threads_key_takes_zero_or_a_count_and_names_itself_otherwise() {
    let base = "[model]\nkind = \"nade\"\nhidden = 8\n[output]\ndir = \"x\"\n[train]\n";
    let parse = |line: &str| Config::from_toml(&format!("{base}{line}\n"));
    assert_eq!(parse("threads = 0").unwrap().train.threads, 0);
    assert_eq!(parse("threads = 3").unwrap().train.threads, 3);
    assert_eq!(Config::from_toml(base).unwrap().train.threads, 0);
    for bad in [
        "threads = -1",
        "threads = 1.5",
        "threads = \"all\"",
        "threads = 5000",
    ] {
        let e = format!("{:#}", parse(bad).unwrap_err());
        assert!(e.contains("threads"), "{bad}: {e}");
        assert_eq!(e.lines().count(), 1, "{bad}: {e}");
    }
    let e = format!("{:#}", parse("threads = 5000").unwrap_err());
    assert!(e.contains("train.threads = 5000"), "{e}");
}

/// `--model-seed` sets model.seed (what MADE's masks and deep NADE's orderings are drawn
/// from: an independently drawn copy of a model) and leaves train.seed alone; a model that
/// draws nothing refuses it by name.
#[test]
fn model_seed_overrides_the_models_own_seed_only() {
    use nade::models::ModelConfig;
    use nade::train_overrides::{ConfigSource, TrainOverrides};
    let dir = tempfile::tempdir().unwrap();
    let resolve = |kind: &str, hidden: &str| {
        let mut text = config(dir.path(), "fvsbn", 0, 1, "").to_toml();
        text = text.replace("kind = \"fvsbn\"", &format!("kind = \"{kind}\"\n{hidden}"));
        TrainOverrides {
            config: Some(ConfigSource::Toml(text)),
            model_seed: Some(5),
            ..Default::default()
        }
        .resolve()
    };
    for (kind, hidden) in [("made", "hidden = [8]"), ("deepnade", "hidden = [8]")] {
        let cfg = resolve(kind, hidden).unwrap();
        let seed = match &cfg.model {
            ModelConfig::Made(c) => c.seed,
            ModelConfig::DeepNade(c) => c.seed,
            other => panic!("{other:?}"),
        };
        assert_eq!((seed, cfg.train.seed), (5, 7), "{kind}");
    }
    let err = resolve("nade", "hidden = 8").unwrap_err().to_string();
    assert!(
        err.contains("--model-seed 5") && err.contains("nade model draws nothing"),
        "{err}"
    );
}
