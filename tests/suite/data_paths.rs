//! Data paths through the binary: a path somebody named (`--data`, `NADE_DATA_DIR`, a config's
//! `[data] dir`) that does not exist is a one-line error naming it and where it came from,
//! and nothing is created for it; the default folder is created only for a download, and
//! removed again when that fails.

use std::path::Path;
use std::process::{Command, Output};

use crate::common;
use crate::common::bin::write_checkpoint;
use crate::common::http::unreachable_base_url;

/// `nade ARGS` in `cwd` with no data folder in the environment and no reachable download.
fn nade_in(cwd: &Path, args: &[&str], env_data_dir: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nade"));
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("NADE_DATA_DIR")
        .env("NADE_DATA_URL", unreachable_base_url());
    if let Some(dir) = env_data_dir {
        cmd.env("NADE_DATA_DIR", dir);
    }
    cmd.output().unwrap()
}

/// The entries of `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_missing_data_path_is_an_error_naming_it_and_where_it_came_from() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_checkpoint(&dir.join("m.safetensors"), "nade", 784, 2);
    let (x_amat, somedir) = (dir.join("x.amat"), dir.join("somedir"));
    let (x, some) = (x_amat.to_str().unwrap(), somedir.to_str().unwrap());

    for data in [x, some] {
        let e = common::bin::error_message(&nade_in(
            dir,
            &["eval", "m.safetensors", "--data", data],
            None,
        ));
        assert_eq!(
            e,
            format!("{data}: no such file or folder (given by --data)")
        );
        let complete = [
            "complete",
            "m.safetensors",
            "--rows",
            "1",
            "--count",
            "1",
            "--data",
            data,
        ];
        let e = common::bin::error_message(&nade_in(dir, &complete, None));
        assert_eq!(
            e,
            format!("{data}: no such file or folder (given by --data)")
        );
        let e = common::bin::error_message(&nade_in(dir, &["bench", "--data", data], None));
        assert_eq!(
            e,
            format!("{data}: no such file or folder (given by --data)")
        );
    }
    let e = common::bin::error_message(&nade_in(dir, &["eval", "m.safetensors"], Some(&somedir)));
    assert_eq!(
        e,
        format!("{some}: no such file or folder (given by NADE_DATA_DIR)")
    );

    // A config's [data] dir, and --data overriding it.
    let config = dir.join("run.toml");
    std::fs::write(
        &config,
        format!(
            "[model]\nkind = \"fvsbn\"\n[data]\ndir = \"{some}\"\n[output]\ndir = \"{}\"\n",
            dir.join("run").display()
        ),
    )
    .unwrap();
    let train = ["train", config.to_str().unwrap()];
    let e = common::bin::error_message(&nade_in(dir, &train, None));
    assert_eq!(
        e,
        format!("{some}: no such file or folder (given by [data] dir in the config)")
    );
    let e = common::bin::error_message(&nade_in(dir, &[&train[..], &["--data", x]].concat(), None));
    assert_eq!(e, format!("{x}: no such file or folder (given by --data)"));

    // Nothing was created: no x.amat/, no somedir/, no data/, no run folder.
    assert_eq!(entries(dir), ["m.safetensors", "run.toml"]);
}

/// `nade eval` run offline in a folder without data: the download into the default folder
/// fails with the message saying where to put the files, and leaves no `data/` behind.
#[test]
fn a_failed_download_leaves_no_default_folder_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_checkpoint(&dir.join("m.safetensors"), "nade", 784, 2);
    let out = nade_in(dir, &["eval", "m.safetensors"], None);
    assert!(!out.status.success());
    // The line announcing the download, then the error.
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<&str> = stderr.trim_end().lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].contains("missing, downloading"), "{stderr}");
    let e = lines[1].strip_prefix("error: ").unwrap();
    let folder = std::path::absolute(dir.join("data/binarized_mnist")).unwrap();
    assert!(
        e.starts_with(
            "binarized MNIST not found: put binarized_mnist_train.amat, binarized_mnist_valid.amat \
             and binarized_mnist_test.amat (from http://127.0.0.1:"
        ) && e.contains(&format!("into {}, or point", folder.display())),
        "{e}"
    );
    assert_eq!(entries(dir), ["m.safetensors"]);
}
