//! The tests that need the real data files: the shipped checkpoints against the README's
//! results table, `eval` and `complete` on the real test split, the published splits' checksums
//! and the download of a real split.
//!
//! They find the data as the program does, `$NADE_DATA_DIR` and then `data/<set>`, and after
//! that in `../shared/data/<set>` (this project's CI machines); relative paths start at the
//! working folder, which `cargo test` sets to the crate root. Without the data a test is
//! reported as ignored in cargo test's own output and summary, with one line on stderr saying
//! where it looked; with `CI` set it fails instead. A test that did not run must never look
//! like one that passed, and libtest's `#[ignore]` is decided at compile time: hence
//! `harness = false` (Cargo.toml) and libtest-mimic, which decides at run time and prints,
//! filters and counts like libtest.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use common::bin::{eval_json, json, nade, ok, write_checkpoint};
use common::http::{serve_once, unreachable_base_url};
use libtest_mimic::{Arguments, Completion, Trial};
use nade::data::amat::read_amat;
use nade::data::source::{load_split_at, load_split_from, DataPath, PathOrigin};
use nade::data::source::{DATA_DIR_ENV, DEFAULT_DIR};
use nade::data::Split;
use nade::image_grid::{GUTTER, HIDDEN};

/// A data set the tests need: its folder name, and the file whose presence means "found".
struct DataSet {
    folder: &'static str,
    probe: &'static str,
}

const MNIST: DataSet = DataSet {
    folder: "binarized_mnist",
    probe: "binarized_mnist_test.amat",
};

const UCI: DataSet = DataSet {
    folder: "uci_binary",
    probe: "dna_test.amat",
};

/// A test of this file that needs real data.
struct RealDataTest {
    name: &'static str,
    set: &'static DataSet,
    /// Runs it on the data folder.
    body: fn(&Path),
}

const REAL_DATA_TESTS: [RealDataTest; 7] = [
    RealDataTest {
        name: "shipped_checkpoints_reproduce_the_results_table",
        set: &MNIST,
        body: shipped_checkpoints_reproduce_the_results_table,
    },
    RealDataTest {
        name: "eval_on_the_real_test_split_reports_the_count_and_a_sane_nll",
        set: &MNIST,
        body: eval_on_the_real_test_split_reports_the_count_and_a_sane_nll,
    },
    RealDataTest {
        name: "cli_complete_on_the_real_test_split",
        set: &MNIST,
        body: cli_complete_on_the_real_test_split,
    },
    RealDataTest {
        name: "real_binarized_mnist_test_split",
        set: &MNIST,
        body: real_binarized_mnist_test_split,
    },
    RealDataTest {
        name: "load_split_downloads_missing_mnist_and_verifies_it",
        set: &MNIST,
        body: load_split_downloads_missing_mnist_and_verifies_it,
    },
    RealDataTest {
        name: "real_uci_dna_test_split",
        set: &UCI,
        body: real_uci_dna_test_split,
    },
    RealDataTest {
        name: "shipped_uci_checkpoints_reproduce_their_records",
        set: &UCI,
        body: shipped_uci_checkpoints_reproduce_their_records,
    },
];

// ---------------------------------------------------------------- finding the data

/// Where a data set is looked for, in order: `$NADE_DATA_DIR` (an empty value counts as
/// unset, as in the program), `data/<set>` (for binarized MNIST the program's default
/// folder), `../shared/data/<set>`; relative paths from `root`.
fn candidates(set: &DataSet, env_dir: Option<&OsStr>, root: &Path) -> Vec<PathBuf> {
    let env = env_dir
        .filter(|dir| !dir.is_empty())
        .map(|dir| root.join(dir));
    env.into_iter()
        .chain([
            root.join("data").join(set.folder),
            root.join("../shared/data").join(set.folder),
        ])
        .collect()
}

/// The first candidate folder holding the set's probe file, or every place looked.
fn find(set: &DataSet, env_dir: Option<&OsStr>, root: &Path) -> Result<PathBuf, Vec<PathBuf>> {
    let places = candidates(set, env_dir, root);
    places
        .iter()
        .find(|dir| dir.join(set.probe).is_file())
        .cloned()
        .ok_or(places)
}

/// What becomes of one real-data test.
#[derive(Debug, PartialEq)]
enum Plan {
    /// The data is in this folder.
    Run(PathBuf),
    /// No data, not under CI: reported as ignored, with this note.
    Skip(String),
    /// No data under CI: the test fails with this message.
    Fail(String),
}

fn plan(set: &DataSet, found: Result<PathBuf, Vec<PathBuf>>, ci: bool) -> Plan {
    let places = match found {
        Ok(dir) => return Plan::Run(dir),
        Err(places) => places,
    };
    let looked: Vec<String> = places.iter().map(|p| p.display().to_string()).collect();
    let missing = format!("no {} in {}", set.probe, looked.join(", "));
    if ci {
        Plan::Fail(format!("{missing}; CI must provide the real data"))
    } else {
        Plan::Skip(format!(
            "{missing} (set {DATA_DIR_ENV} or put the files into data/{})",
            set.folder
        ))
    }
}

fn trial(name: &'static str, plan: Plan, test: fn(&Path)) -> Trial {
    match plan {
        Plan::Run(dir) => Trial::test(name, move || {
            test(&dir);
            Ok(())
        }),
        Plan::Fail(message) => Trial::test(name, move || Err(message.into())),
        // Printed as "test NAME ... ignored (NOTE)" and counted as ignored.
        Plan::Skip(note) => Trial::ignorable_test(name, move || Ok(Completion::ignored_with(note))),
    }
}

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let root = std::env::current_dir().expect("the working folder");
    let env_dir = std::env::var_os(DATA_DIR_ENV);
    let ci = std::env::var_os("CI").is_some();

    let mut trials = vec![
        Trial::test("the_lookup_follows_the_program_then_shared", || {
            the_lookup_follows_the_program_then_shared();
            Ok(())
        }),
        Trial::test("missing_data_is_ignored_or_fails_under_ci", || {
            missing_data_is_ignored_or_fails_under_ci();
            Ok(())
        }),
    ];
    // One line on stderr says how many real-data tests of this run have their data, and from
    // where: the summary's "passed" does not tell them apart from the others.
    let (mut ran, mut found_in, mut missing) = (0, Vec::new(), 0);
    for RealDataTest { name, set, body } in REAL_DATA_TESTS {
        let plan = plan(set, find(set, env_dir.as_deref(), &root), ci);
        let dir = match &plan {
            Plan::Run(dir) => Some(dir.display().to_string()),
            _ => None,
        };
        let trial = trial(name, plan, body);
        if !args.is_filtered_out(&trial) {
            match dir {
                Some(dir) => {
                    ran += 1;
                    if !found_in.contains(&dir) {
                        found_in.push(dir);
                    }
                }
                None => missing += 1,
            }
        }
        trials.push(trial);
    }
    if !args.list && ran + missing > 0 {
        let mut note = format!(
            "real data: {ran} of {} tests have their data",
            ran + missing
        );
        if !found_in.is_empty() {
            note += &format!(" (in {})", found_in.join(", "));
        }
        if missing > 0 && !ci {
            note += &format!("; {missing} reported as ignored: they did not run");
        }
        eprintln!("{note}");
    }
    libtest_mimic::run(&args, trials).exit_code()
}

// ---------------------------------------------------------------- the lookup itself

fn the_lookup_follows_the_program_then_shared() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("clone");
    let shared = tmp.path().join("shared/data/binarized_mnist");
    let data = root.join(DEFAULT_DIR);
    let env = tmp.path().join("env");
    let put = |dir: &Path, file: &str| {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(file), "0 1\n").unwrap();
    };
    // The working folder exists (and `clone/..` resolves only through an existing `clone`).
    std::fs::create_dir_all(&root).unwrap();
    assert_eq!(root.join("data").join(MNIST.folder), data);

    // Nothing anywhere: every place is named, the environment's first; "" is unset.
    let looked = vec![data.clone(), root.join("../shared/data/binarized_mnist")];
    assert_eq!(find(&MNIST, None, &root), Err(looked.clone()));
    assert_eq!(find(&MNIST, Some(OsStr::new("")), &root), Err(looked));
    assert_eq!(
        find(&MNIST, Some(env.as_os_str()), &root).unwrap_err()[0],
        env
    );
    // A relative NADE_DATA_DIR starts at the working folder, as in the program.
    assert_eq!(
        find(&MNIST, Some(OsStr::new("rel")), &root).unwrap_err()[0],
        root.join("rel")
    );

    put(&shared, MNIST.probe);
    assert_eq!(
        find(&MNIST, None, &root),
        Ok(root.join("../shared/data/binarized_mnist"))
    );
    put(&data, MNIST.probe);
    assert_eq!(find(&MNIST, None, &root), Ok(data.clone()));
    // A NADE_DATA_DIR without the files does not hide the ones in data/...
    std::fs::create_dir_all(&env).unwrap();
    assert_eq!(find(&MNIST, Some(env.as_os_str()), &root), Ok(data.clone()));
    // ...and one with them comes first.
    put(&env, MNIST.probe);
    assert_eq!(find(&MNIST, Some(env.as_os_str()), &root), Ok(env.clone()));

    // UCI: the folder holding dna_test.amat; NADE_DATA_DIR (binarized MNIST here) lacks it.
    assert!(find(&UCI, Some(env.as_os_str()), &root).is_err());
    put(&root.join("data/uci_binary"), UCI.probe);
    assert_eq!(
        find(&UCI, Some(env.as_os_str()), &root),
        Ok(root.join("data/uci_binary"))
    );

    // Found: run; not found: skipped with a note naming the places, or failed under CI.
    assert_eq!(plan(&MNIST, Ok(data.clone()), true), Plan::Run(data));
    let places = vec![PathBuf::from("/a"), PathBuf::from("/b")];
    assert_eq!(
        plan(&MNIST, Err(places.clone()), false),
        Plan::Skip(
            "no binarized_mnist_test.amat in /a, /b (set NADE_DATA_DIR or put the files into \
             data/binarized_mnist)"
                .into()
        )
    );
    assert_eq!(
        plan(&UCI, Err(places), true),
        Plan::Fail("no dna_test.amat in /a, /b; CI must provide the real data".into())
    );
}

/// This very binary, run where there is no data: cargo test's summary counts the real-data
/// tests as ignored (not passed), and under `CI` as failed.
fn missing_data_is_ignored_or_fails_under_ci() {
    let tmp = tempfile::tempdir().unwrap();
    // No data/ below it, and no shared/ beside it.
    let (cwd, empty) = (tmp.path().join("clone"), tmp.path().join("empty"));
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::create_dir_all(&empty).unwrap();
    // As the child's current_dir() will report it (symbolic links resolved).
    let (cwd, empty) = (cwd.canonicalize().unwrap(), empty.canonicalize().unwrap());
    let run = |ci: bool| {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        // The two tests that need no data are skipped: this one would recurse.
        cmd.args([
            "--skip",
            "the_lookup_",
            "--skip",
            "missing_data_",
            "--test-threads",
            "1",
        ])
        .current_dir(&cwd)
        .env(DATA_DIR_ENV, &empty)
        .env_remove("CI");
        if ci {
            cmd.env("CI", "1");
        }
        cmd.output().unwrap()
    };
    let count = REAL_DATA_TESTS.len();

    let out = run(false);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("0 passed; 0 failed; {count} ignored")),
        "{stdout}"
    );
    // libtest pads the names to one width: "test NAME   ... ignored (NOTE)".
    let outcome = |name: &str| -> String {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("test {name} ")));
        let line = line.unwrap_or_else(|| panic!("no line for {name}: {stdout}"));
        line.split_once(" ... ").unwrap().1.to_string()
    };
    for RealDataTest { name, .. } in REAL_DATA_TESTS {
        assert!(outcome(name).starts_with("ignored (no "), "{stdout}");
    }
    // Each says where it looked.
    assert_eq!(
        outcome("real_uci_dna_test_split"),
        format!(
            "ignored (no dna_test.amat in {}, {}, {} (set NADE_DATA_DIR or put the files into \
             data/uci_binary))",
            empty.display(),
            cwd.join("data/uci_binary").display(),
            cwd.join("../shared/data/uci_binary").display()
        )
    );
    assert!(
        stderr.contains(&format!(
            "real data: 0 of {count} tests have their data; {count} reported as ignored"
        )),
        "{stderr}"
    );

    let out = run(true);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("0 passed; {count} failed; 0 ignored")),
        "{stdout}"
    );
    assert!(stdout.contains("CI must provide the real data"), "{stdout}");
}

// ---------------------------------------------------------------- the tests on real data

/// The shipped checkpoints load and give, over the whole test split, the numbers the README's
/// results table shows (docs/records/*-test.json, from which scripts/reproduce/results_table.py
/// writes it).
fn shipped_checkpoints_reproduce_the_results_table(data: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Deep NADE's row is its single (validation-chosen) ordering, row 0 of `order`: n passes
    // of the upper layers per image, about 15 s for the test set on 2 threads.
    for (model, extra) in [
        ("fvsbn", &[][..]),
        ("mlp", &[]),
        ("nade", &[]),
        ("made", &[]),
        ("deepnade", &["--orders", "1"]),
    ] {
        let ckpt = root.join(format!("checkpoints/{model}.safetensors"));
        let recorded: serde_json::Value = serde_json::from_slice(
            &std::fs::read(root.join(format!("docs/records/{model}-test.json"))).unwrap(),
        )
        .unwrap();
        let out = eval_json(&ckpt, data, extra);
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

fn eval_on_the_real_test_split_reports_the_count_and_a_sane_nll(data: &Path) {
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

fn cli_complete_on_the_real_test_split(data: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("nade.safetensors");
    write_checkpoint(&ckpt, "nade", 784, 10);
    let (png, amat) = (dir.path().join("c.png"), dir.path().join("c.amat"));
    let args = [
        "complete",
        ckpt.to_str().unwrap(),
        "--rows",
        "14",
        "--count",
        "3",
        "--index",
        "5",
        "--stride",
        "1000",
        "--samples",
        "4",
        "--seed",
        "1",
        "--out",
        png.to_str().unwrap(),
        "--amat",
        amat.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--device",
        "cpu",
    ];
    ok(&nade(&args));
    // Per digit: original, kept part, 4 completions; 3 digits.
    assert_eq!(
        image::image_dimensions(&png).unwrap(),
        (6 * 56 + 7 * GUTTER, 3 * 56 + 4 * GUTTER)
    );
    let test = read_amat(&data.join("binarized_mnist_test.amat")).unwrap();
    let out = read_amat(&amat).unwrap();
    assert_eq!(out.len(), 12);
    for (r, row) in out.rows().enumerate() {
        let original = test.row(5 + (r / 4) * 1000);
        assert_eq!(&row[..392], &original[..392], "completion {r}");
    }
    // The kept tile shows the cut: the bottom half of column 1 is the hidden gray.
    let img = image::open(&png).unwrap().to_luma8();
    let (x, y) = (GUTTER + 56 + GUTTER + 20, GUTTER + 50);
    assert_eq!(img.get_pixel(x, y).0[0], HIDDEN);
    let top = (0..56).map(|dx| img.get_pixel(GUTTER + 56 + GUTTER + dx, GUTTER + 10).0[0]);
    assert!(top.clone().all(|v| v == 0 || v == 255));
}

fn real_binarized_mnist_test_split(dir: &Path) {
    // Verified against the published checksum inside load_split_from.
    let data = load_split_from(dir, "binarized_mnist", Split::Test, &unreachable_base_url())
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!((data.len(), data.n()), (10_000, 784));
    assert!((data.mean() - 0.13251).abs() < 5e-5, "mean {}", data.mean());
    assert_eq!(
        data.sha256_hex(),
        "ca0294c3b8d984c7a1dc891015a8eea6f37bae59a34e35ea0fc8c47110a8dd86"
    );
}

/// A server with the real test split: downloaded into the (missing) default folder and kept.
/// (A server with the wrong content: tests/suite/data.rs.)
fn load_split_downloads_missing_mnist_and_verifies_it(shared: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let real = std::fs::read(shared.join("binarized_mnist_test.amat")).unwrap();
    let base = serve_once("200 OK", real.clone());
    let folder = dir.path().join("created");
    let default = DataPath {
        path: folder.clone(),
        origin: PathOrigin::DefaultDir,
    };
    let data = load_split_at(&default, "binarized_mnist", Split::Test, &base).unwrap();
    assert_eq!((data.len(), data.n()), (10_000, 784));
    assert_eq!(
        std::fs::read(folder.join("binarized_mnist_test.amat")).unwrap(),
        real
    );
    // Present now: read locally, no server needed.
    let again = load_split_from(
        &folder,
        "binarized_mnist",
        Split::Test,
        &unreachable_base_url(),
    );
    assert_eq!(again.unwrap(), data);
}

fn real_uci_dna_test_split(dir: &Path) {
    let data = load_split_from(dir, "dna", Split::Test, &unreachable_base_url())
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!((data.len(), data.n()), (1186, 180));
    assert!((data.mean() - 0.2514).abs() < 5e-4, "mean {}", data.mean());
}

/// The UCI table's shipped checkpoints (issue 33) give, over each set's whole test split, the
/// numbers of their records (docs/records/uci/SET-MODEL-test.json, from which
/// scripts/uci/table.py writes the README's table), reading the data set each checkpoint names
/// (its run's `[data] dataset`, a mixture's `dataset`): deep NADE's first ordering and its whole
/// ensemble, and each set's mixture of them (`nade mix`).
fn shipped_uci_checkpoints_reproduce_their_records(data: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for (set, rows) in [("dna", 1186), ("mushrooms", 5624), ("nips", 1240)] {
        for (model, record, extra) in [
            ("fvsbn", "fvsbn", &[][..]),
            ("nade", "nade", &[]),
            ("made", "made", &[]),
            ("made-ens", "made-ens", &[]),
            ("deepnade", "deepnade", &["--orders", "1"]),
            ("deepnade", "deepnade-ensemble", &[]),
            ("mix", "mix", &[]),
        ] {
            let ckpt = root.join(format!("checkpoints/uci/{set}-{model}.safetensors"));
            let file = root.join(format!("docs/records/uci/{set}-{record}-test.json"));
            let recorded: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&file).unwrap_or_else(|e| {
                    panic!("{}: {e}", file.display());
                }))
                .unwrap();
            let out = eval_json(&ckpt, data, extra);
            assert_eq!(out["count"], rows, "{set}-{record}");
            let (got, want) = (
                out["nll_nats"].as_f64().unwrap(),
                recorded["nll_nats"].as_f64().unwrap(),
            );
            assert!(
                (got - want).abs() < 1e-6 * want,
                "{set}-{record}: {got} vs the recorded {want}"
            );
            assert!(
                readme.contains(&format!("{want:.2} ± ")),
                "{set}-{record}: README lacks {want:.2}"
            );
        }
    }
}
