//! Where the data comes from: the folder (or file) chosen by flag, config or environment,
//! the published checksums, and the download of binarized MNIST when it is missing.
//!
//! The functions that read the environment are thin wrappers over `*_from` / `*_with`
//! versions taking those values as parameters, so tests never have to set process-global
//! environment variables.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};

use super::amat::read_amat;
use super::download::download_amat;
use super::{BinaryDataset, Split};

/// The data set read when none is named.
pub const DEFAULT_DATASET: &str = "binarized_mnist";
/// The data folder of binarized MNIST (and of data sets of your own) when neither flag,
/// config nor environment names one.
pub const DEFAULT_DIR: &str = "data/binarized_mnist";
/// The data folder of the UCI binary benchmarks ([`UCI_DATASETS`]) when nothing names one.
pub const UCI_DIR: &str = "data/uci_binary";
/// The UCI binary benchmarks of the NADE and MADE papers that nade knows the checksums of.
pub const UCI_DATASETS: [&str; 3] = ["dna", "mushrooms", "nips"];
/// Environment variable naming the data folder (or a single `.amat` file).
pub const DATA_DIR_ENV: &str = "NADE_DATA_DIR";
/// Environment variable overriding [`BINARIZED_MNIST_URL`] (a mirror, or a test server).
pub const DATA_URL_ENV: &str = "NADE_DATA_URL";
/// Public location of `binarized_mnist_{train,valid,test}.amat`.
pub const BINARIZED_MNIST_URL: &str =
    "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist";

/// SHA-256 of the row-major 0/1 bytes of each published split, from
/// ../shared/data/binarized_mnist/README.md and ../shared/data/uci_binary/README.md.
const KNOWN_CONTENT_SHA256: [(&str, Split, &str); 12] = [
    (
        "binarized_mnist",
        Split::Train,
        "43490d4d6ac9002727af4426d8748609fdb7e4094fa65ad8d681ea60082a7a5a",
    ),
    (
        "binarized_mnist",
        Split::Valid,
        "069b4f0beb389b776478c3e872b4df71c95ac4be64d7cbe6d32e24ebac8e6d5e",
    ),
    (
        "binarized_mnist",
        Split::Test,
        "ca0294c3b8d984c7a1dc891015a8eea6f37bae59a34e35ea0fc8c47110a8dd86",
    ),
    (
        "dna",
        Split::Train,
        "425f2f6eb1b989bd0e41e88fd0c004bfee8c2b1b398b50a974ea0764966a30aa",
    ),
    (
        "dna",
        Split::Valid,
        "99063a569f2e3733e99aacc610a295ce92a604c41f102e7c5fcc67799bc96c7c",
    ),
    (
        "dna",
        Split::Test,
        "183aa2a8acb410c9d950e26030da5b30e3176da04b2ed2566c03565a5c3479a1",
    ),
    (
        "mushrooms",
        Split::Train,
        "bdc96ef5b74d908aa8f0665aad1a060c95c29e3f0140e0c004f538785e7f37f4",
    ),
    (
        "mushrooms",
        Split::Valid,
        "a02bb4bbe086e12738e27dca9436d43823ee5c6c6a2f684eb4eff51ebf924ecc",
    ),
    (
        "mushrooms",
        Split::Test,
        "02d2b76d77c88d8f7e9c4e5b6be68e16d242c5e9db55b16bea81a953c3823d3c",
    ),
    (
        "nips",
        Split::Train,
        "d3533784ce37bd8ca6c195160c47b7fc18447917e639781f6b9f4ceee743bf37",
    ),
    (
        "nips",
        Split::Valid,
        "b389c16873bbb94a617d83a5525e6be9bc9ef6d00f49621e1c8dcfed85f9ceea",
    ),
    (
        "nips",
        Split::Test,
        "7163c55ede1f8077131fb918de107b5782dce395e1c5b9fe33d8b82236a8ec9a",
    ),
];

/// Which data to load: a folder holding `{dataset}_{split}.amat` files, or one `.amat` file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DataSource {
    /// Folder or file; None means [`DATA_DIR_ENV`], then [`DEFAULT_DIR`].
    pub path: Option<PathBuf>,
    /// Who gave `path` (the `--data` flag or a config's `[data] dir`), for the error when it
    /// does not exist.
    #[serde(skip)]
    pub path_origin: PathOrigin,
    /// File name prefix: `binarized_mnist`, `dna`, `mushrooms`, `nips`, or your own.
    pub dataset: String,
}

impl DataSource {
    /// The data path this source reads: its own, else the environment's, else the default
    /// folder of its data set.
    pub fn resolve(&self) -> DataPath {
        resolve_dir(self.path.as_deref(), self.path_origin, &self.dataset)
    }

    /// The one `.amat` file this source names, where it names a file rather than a folder: it
    /// is read whole whatever split is asked for.
    pub fn single_file(&self) -> Option<PathBuf> {
        let path = self.resolve().path;
        path.is_file().then_some(path)
    }

    /// Who named the path this source reads, for messages.
    pub fn path_origin_text(&self) -> String {
        self.resolve().origin.to_string()
    }

    /// What [`load_split`] reads for `split`, for messages: the split's file in the folder, or
    /// the one file named.
    pub fn file_of(&self, split: Split) -> PathBuf {
        match self.single_file() {
            Some(file) => file,
            None => split_file(&self.resolve().path, &self.dataset, split),
        }
    }
}

impl Default for DataSource {
    fn default() -> Self {
        Self {
            path: None,
            path_origin: PathOrigin::default(),
            dataset: DEFAULT_DATASET.to_owned(),
        }
    }
}

/// What an evaluation or completion reads: a split of the data folder, or the one file that
/// `--data` names, for the labels of its results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitRead {
    /// None for one file: it is no split, whatever its content.
    pub split: Option<Split>,
    pub file: PathBuf,
}

impl SplitRead {
    /// `split` as asked (None: the default, test) of `source`; refused for a single file,
    /// which is read whole and would otherwise be labelled a split it may not be.
    pub fn of(source: &DataSource, split: Option<Split>) -> Result<Self> {
        match (source.single_file(), split) {
            (Some(file), Some(split)) => bail!(
                "--split {split}: --data names one file ({}), which is evaluated whole; drop --split, or point --data at the folder of {}_{{train,valid,test}}.amat",
                file.display(),
                source.dataset
            ),
            (Some(file), None) => Ok(Self { split: None, file }),
            (None, split) => {
                let split = split.unwrap_or(Split::Test);
                Ok(Self {
                    split: Some(split),
                    file: source.file_of(split),
                })
            }
        }
    }

    /// The split to load (a single file ignores it).
    pub fn split(&self) -> Split {
        self.split.unwrap_or(Split::Test)
    }

    /// An error naming the file and the checkpoint unless the images read have the model's
    /// `n` values.
    pub fn check_width(&self, width: usize, checkpoint: &Path, n: usize) -> Result<()> {
        if width != n {
            bail!(
                "{}: images of {width} values, but {} models n = {n}",
                self.file.display(),
                checkpoint.display()
            );
        }
        Ok(())
    }

    /// "test images", or "images of FILE".
    pub fn images(&self) -> String {
        match self.split {
            Some(split) => format!("{split} images"),
            None => format!("images of {}", self.file.display()),
        }
    }
}

/// Who named the data path. A path somebody named must exist (a typo must not become a new
/// folder that a download then fills); only [`DEFAULT_DIR`], which nobody named, may be
/// created, for the download of binarized MNIST.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PathOrigin {
    /// `--data` on the command line.
    Flag,
    /// `[data] dir` in a run's config: the default, as a config file is what deserializes.
    #[default]
    Config,
    /// The environment variable [`DATA_DIR_ENV`].
    Env,
    /// [`DEFAULT_DIR`]: nothing named a path.
    DefaultDir,
}

impl fmt::Display for PathOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Flag => "given by --data",
            Self::Config => "given by [data] dir in the config",
            Self::Env => "given by NADE_DATA_DIR",
            Self::DefaultDir => {
                "the default data folder; name another with --data or NADE_DATA_DIR"
            }
        })
    }
}

/// A data path (folder or `.amat` file) and who named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPath {
    pub path: PathBuf,
    pub origin: PathOrigin,
}

impl DataPath {
    /// Whether the path exists; an error naming the path and where it came from when it cannot
    /// be looked at.
    pub fn exists(&self) -> Result<bool> {
        self.path.try_exists().map_err(|e| {
            anyhow!(
                "{}: cannot access: {e} ({})",
                self.path.display(),
                self.origin
            )
        })
    }

    /// The error for a path that does not exist, naming it and where it came from.
    pub fn missing(&self) -> anyhow::Error {
        anyhow!(
            "{}: no such file or folder ({})",
            self.path.display(),
            self.origin
        )
    }
}

/// The data path: `explicit` (from `origin`: flag or config), else `$NADE_DATA_DIR`, else
/// the default folder of `dataset` ([`default_dir`]).
pub fn resolve_dir(explicit: Option<&Path>, origin: PathOrigin, dataset: &str) -> DataPath {
    resolve_dir_with(
        explicit,
        origin,
        dataset,
        std::env::var_os(DATA_DIR_ENV).as_deref(),
    )
}

/// [`resolve_dir`] with the environment value passed in; an empty value counts as unset.
pub fn resolve_dir_with(
    explicit: Option<&Path>,
    origin: PathOrigin,
    dataset: &str,
    env_dir: Option<&OsStr>,
) -> DataPath {
    let (path, origin) = match (explicit, env_dir.filter(|d| !d.is_empty())) {
        (Some(path), _) => (path.to_path_buf(), origin),
        (None, Some(env)) => (PathBuf::from(env), PathOrigin::Env),
        (None, None) => (PathBuf::from(default_dir(dataset)), PathOrigin::DefaultDir),
    };
    DataPath { path, origin }
}

/// The folder a data set is looked for in when nothing names one: [`UCI_DIR`] for the UCI
/// benchmarks, [`DEFAULT_DIR`] for every other.
pub fn default_dir(dataset: &str) -> &'static str {
    if UCI_DATASETS.contains(&dataset) {
        UCI_DIR
    } else {
        DEFAULT_DIR
    }
}

/// Base URL of the binarized MNIST files: `$NADE_DATA_URL`, else [`BINARIZED_MNIST_URL`].
pub fn download_base_url() -> String {
    std::env::var(DATA_URL_ENV)
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| BINARIZED_MNIST_URL.to_owned())
}

/// `{dir}/{dataset}_{split}.amat`.
pub fn split_file(dir: &Path, dataset: &str, split: Split) -> PathBuf {
    dir.join(split_file_name(dataset, split))
}

fn split_file_name(dataset: &str, split: Split) -> String {
    format!("{dataset}_{split}.amat")
}

/// Published content checksum of a split, if it is one of the known data sets.
pub fn known_content_sha256(dataset: &str, split: Split) -> Option<&'static str> {
    KNOWN_CONTENT_SHA256
        .iter()
        .find(|(name, s, _)| *name == dataset && *s == split)
        .map(|(_, _, sha)| *sha)
}

/// Loads one split as chosen by `src`, the environment and the defaults.
pub fn load_split(src: &DataSource, split: Split) -> Result<BinaryDataset> {
    let data_path = src.resolve();
    load_split_at(&data_path, &src.dataset, split, &download_base_url())
}

/// Loads one split from `data_path` as [`load_split_from`] does, except for a path that does
/// not exist: an error naming it and who named it, unless it is the default folder and the
/// data set binarized MNIST, which is then downloaded into it (the folder is created, and
/// removed again if the download fails).
pub fn load_split_at(
    data_path: &DataPath,
    dataset: &str,
    split: Split,
    download_base_url: &str,
) -> Result<BinaryDataset> {
    let downloadable = data_path.origin == PathOrigin::DefaultDir && dataset == DEFAULT_DATASET;
    if !data_path.exists()? && !downloadable {
        return Err(data_path.missing());
    }
    read_or_download(&data_path.path, dataset, split, download_base_url)
}

/// Loads one split from `path`, an existing file or folder, downloading binarized MNIST from
/// `download_base_url` if needed.
///
/// - `path` is a file: it is read as is and `split` is ignored; if its name is that of a
///   published split (`dna_test.amat` ...) its checksum is verified.
/// - otherwise `path` is the folder of `{dataset}_{split}.amat`. Published splits are
///   verified against their checksums, so a truncated or different file is an error rather
///   than a silently different benchmark. A missing binarized MNIST file is downloaded into
///   the folder; any other missing file is an error.
/// - `path` does not exist: an error naming it (a mistyped name never becomes a folder).
pub fn load_split_from(
    path: &Path,
    dataset: &str,
    split: Split,
    download_base_url: &str,
) -> Result<BinaryDataset> {
    if !path
        .try_exists()
        .map_err(|e| anyhow!("{}: cannot access: {e}", path.display()))?
    {
        bail!("{}: no such file or folder", path.display());
    }
    read_or_download(path, dataset, split, download_base_url)
}

/// [`load_split_from`] without the existence check: a missing folder is created by the
/// download of a binarized MNIST file (and removed again if it fails).
fn read_or_download(
    path: &Path,
    dataset: &str,
    split: Split,
    download_base_url: &str,
) -> Result<BinaryDataset> {
    if path.is_file() {
        let data = read_amat(path)?;
        let name = path.file_name().and_then(OsStr::to_str).unwrap_or_default();
        let published = KNOWN_CONTENT_SHA256
            .iter()
            .find(|(set, s, _)| split_file_name(set, *s) == name);
        if let Some(&(set, s, expected)) = published {
            verify(path, set, s, &data, expected)?;
        }
        return Ok(data);
    }

    let file = split_file(path, dataset, split);
    let expected = known_content_sha256(dataset, split);
    if file.exists() {
        let data = read_amat(&file)?;
        if let Some(expected) = expected {
            verify(&file, dataset, split, &data, expected)?;
        }
        return Ok(data);
    }

    if dataset != DEFAULT_DATASET {
        bail!("{}: no such file ({dataset} {split} split)", file.display());
    }
    let base = download_base_url.trim_end_matches('/');
    let url = format!("{base}/{}", split_file_name(dataset, split));
    // A line even when stderr is not a terminal (no progress bar then): a run that starts by
    // fetching 78 MB should say so.
    eprintln!("{} missing, downloading {url}", file.display());
    download_amat(&url, &file, expected).map_err(|e| not_found_message(path, base, &e))
}

fn verify(
    file: &Path,
    dataset: &str,
    split: Split,
    data: &BinaryDataset,
    expected: &str,
) -> Result<()> {
    let found = data.sha256_hex();
    if found != expected {
        bail!(
            "{}: not the published {dataset} {split} split: content SHA-256 {found}, expected {expected}",
            file.display()
        );
    }
    Ok(())
}

/// The offline error: which files to put where, and how to point the program elsewhere.
fn not_found_message(dir: &Path, base_url: &str, cause: &anyhow::Error) -> anyhow::Error {
    let missing: Vec<String> = Split::ALL
        .into_iter()
        .map(|split| split_file_name(DEFAULT_DATASET, split))
        .filter(|name| !dir.join(name).exists())
        .collect();
    // Absolute, because the default folder is relative to wherever the program was started.
    let shown_dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let (files, from, them) = match missing.as_slice() {
        [one] => (one.clone(), format!("{base_url}/{one}"), "it"),
        [init @ .., last] => (
            format!("{} and {last}", init.join(", ")),
            format!("{base_url}/"),
            "them",
        ),
        // Unreachable in practice (this runs because a file is missing); keep a sane text.
        [] => (
            "the binarized_mnist_*.amat files".to_owned(),
            format!("{base_url}/"),
            "them",
        ),
    };
    anyhow!(
        "binarized MNIST not found: put {files} (from {from}) into {}, or point --data / \
         {DATA_DIR_ENV} at a folder holding {them} (download failed: {cause:#})",
        shown_dir.display()
    )
}
