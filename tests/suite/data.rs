//! Tests of the data layer: `.amat` and IDX parsing, binarization, download and lookup.
//!
//! Everything runs on synthetic data written into temporary folders (the checks on the real
//! files are in tests/real_data.rs). Downloads are served by a one-shot HTTP server on
//! 127.0.0.1; nothing here reads or sets environment variables.

use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::Device;
use flate2::write::GzEncoder;
use flate2::Compression;
use nade::data::amat::{parse_amat, read_amat};
use nade::data::download::download;
use nade::data::idx::{parse_idx_images, read_idx_images, Binarization, GrayImages};
use nade::data::source::{
    known_content_sha256, load_split_at, load_split_from, resolve_dir_with, DataPath, DataSource,
    PathOrigin, DEFAULT_DIR,
};
use nade::data::{BinaryDataset, Split};
use tempfile::TempDir;

use crate::common::http::{serve_once, unreachable_base_url};

// ---------------------------------------------------------------- helpers

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The full error text, as the CLI prints it.
fn err<T: std::fmt::Debug>(result: anyhow::Result<T>) -> String {
    format!("{:#}", result.expect_err("expected an error"))
}

fn assert_one_line(message: &str) {
    assert!(!message.contains('\n'), "message spans lines: {message}");
}

/// An IDX image file: 16-byte big-endian header, then the pixels.
fn idx_bytes(magic: u32, count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for word in [magic, count, rows, cols] {
        bytes.extend_from_slice(&word.to_be_bytes());
    }
    bytes.extend_from_slice(pixels);
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn no_part_files(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .all(|e| !e.file_name().to_string_lossy().ends_with(".part"))
        })
        .unwrap_or(true)
}

/// A synthetic 784-wide file (not the published data), and its parsed form.
fn fake_mnist_text(rows: usize) -> (String, BinaryDataset) {
    let pixels: Vec<u8> = (0..rows * 784).map(|i| u8::from(i % 7 == 0)).collect();
    let text: String = pixels
        .chunks(784)
        .map(|row| {
            let line: Vec<&str> = row
                .iter()
                .map(|&v| if v == 1 { "1" } else { "0" })
                .collect();
            line.join(" ") + "\n"
        })
        .collect();
    (text, BinaryDataset::new(784, pixels).unwrap())
}

// ---------------------------------------------------------------- BinaryDataset and Split

#[test]
fn dataset_accessors() {
    let mut data = BinaryDataset::new(3, vec![0, 1, 0, 1, 1, 0]).unwrap();
    assert_eq!((data.n(), data.len(), data.is_empty()), (3, 2, false));
    assert_eq!(data.row(1), &[1, 1, 0]);
    assert_eq!(data.rows().count(), 2);
    assert!((data.mean() - 0.5).abs() < 1e-12);
    // Columns with 1, 2 and 0 ones in 2 rows: ln((k + 1) / (2 - k + 1)).
    let want = [0f64, 3f64.ln(), -(3f64.ln())];
    for (got, want) in data.smoothed_logits().iter().zip(want) {
        assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
    }
    assert_eq!(
        data.sha256_hex(),
        "eaabdf1df6e204af976adb395aa28a1dbc3e13271a53ea9aa034fe80bf369584"
    );
    data.truncate(5);
    assert_eq!(data.len(), 2);
    data.truncate(1);
    assert_eq!((data.len(), data.pixels()), (1, &[0u8, 1, 0][..]));
    data.truncate(0);
    assert!(data.is_empty());
}

#[test]
fn dataset_new_rejects_bad_shapes_and_values() {
    assert!(err(BinaryDataset::new(0, vec![])).contains("positive"));
    assert!(err(BinaryDataset::new(3, vec![0; 4])).contains("4 values"));
    let message = err(BinaryDataset::new(2, vec![0, 1, 1, 2]));
    assert!(message.contains("value 2 at row 1, column 1"), "{message}");
    assert!(BinaryDataset::new(4, vec![]).unwrap().is_empty());
}

#[test]
fn dataset_tensors() {
    let data = BinaryDataset::new(2, vec![0, 1, 1, 1, 1, 0]).unwrap();
    let device = Device::Cpu;
    let t = data.tensor_range(1, 3, &device).unwrap();
    assert_eq!(t.dims(), &[2, 2]);
    assert_eq!(
        t.to_vec2::<f32>().unwrap(),
        vec![vec![1.0, 1.0], vec![1.0, 0.0]]
    );
    let t = data.tensor_rows(&[2, 0, 2], &device).unwrap();
    assert_eq!(
        t.to_vec2::<f32>().unwrap(),
        vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![1.0, 0.0]]
    );
    assert_eq!(data.tensor_range(1, 1, &device).unwrap().dims(), &[0, 2]);
    assert!(data.tensor_range(2, 4, &device).is_err());
    assert!(data.tensor_range(2, 1, &device).is_err());
    assert!(data.tensor_rows(&[0, 3], &device).is_err());
}

#[test]
fn split_names() {
    for split in Split::ALL {
        assert_eq!(split.to_string().parse::<Split>().unwrap(), split);
    }
    assert_eq!(Split::Valid.to_string(), "valid");
    let message = err("validation".parse::<Split>());
    assert!(message.contains("train, valid or test"), "{message}");
}

// ---------------------------------------------------------------- .amat

#[test]
fn amat_parses_ints_floats_and_line_ending_variants() {
    let expected = [0u8, 1, 0, 1, 1, 0];
    for text in [
        "0 1 0\n1 1 0\n",
        "0 1 0\n1 1 0",
        "0 1 0\n1 1 0\n\n\n",
        "0 1 0\n1 1 0\n  \n",
        "0 1 0\r\n1 1 0\r\n",
        "  0\t1  0 \n1 1\t0\t\n",
        "0.0 1.0 0.\n1. 1.000000 0e0\n",
        "0.0 1e0 -0\n+1 1.0 0.000\n",
    ] {
        let data = parse_amat(text, "t.amat").unwrap_or_else(|e| panic!("{text:?}: {e:#}"));
        assert_eq!((data.n(), data.pixels()), (3, &expected[..]), "{text:?}");
    }
}

#[test]
fn amat_reads_a_file() {
    let dir = TempDir::new().unwrap();
    let path = write(dir.path(), "x.amat", "1 0 1 1\n0 0 0 1\n1 1 1 1\n");
    let data = read_amat(&path).unwrap();
    assert_eq!((data.len(), data.n()), (3, 4));
    assert_eq!(data.row(2), &[1, 1, 1, 1]);
}

#[test]
fn amat_wrong_width() {
    assert_eq!(
        err(parse_amat("0 1 0\n0 1 0\n1 1\n", "f.amat")),
        "f.amat:3: expected 3 values, found 2"
    );
    assert_eq!(
        err(parse_amat("0 1\n0 1 0\n", "f.amat")),
        "f.amat:2: expected 2 values, found 3"
    );
}

#[test]
fn amat_bad_values() {
    let cases = [
        (
            "0 1 0\n0 3 1\n",
            "f.amat:2: value 3 (column 2) is not 0 or 1",
        ),
        ("0 0.5 1\n", "f.amat:1: value 0.5 (column 2) is not 0 or 1"),
        ("0 1 -1\n", "f.amat:1: value -1 (column 3) is not 0 or 1"),
        ("x 1 0\n", "f.amat:1: value x (column 1) is not 0 or 1"),
        ("0 1 nan\n", "f.amat:1: value nan (column 3) is not 0 or 1"),
        ("0 1,0\n", "f.amat:1: value 1,0 (column 2) is not 0 or 1"),
    ];
    for (text, expected) in cases {
        assert_eq!(err(parse_amat(text, "f.amat")), expected);
    }
    // Non-UTF-8 bytes in a file are a bad value too, not a panic or a decoding error.
    let dir = TempDir::new().unwrap();
    let path = write(dir.path(), "bin.amat", b"0 1\n1 \xff\n");
    let message = err(read_amat(&path));
    assert!(
        message.starts_with(&format!("{}:2: value", path.display())),
        "{message}"
    );
    assert!(message.contains("(column 2) is not 0 or 1"), "{message}");
    assert_one_line(&message);
}

#[test]
fn amat_empty_inputs() {
    for text in ["", "\n", "\n \n\t\n"] {
        assert_eq!(
            err(parse_amat(text, "e.amat")),
            "e.amat: empty file: no vectors found"
        );
    }
}

#[test]
fn amat_blank_line_inside_data() {
    assert_eq!(
        err(parse_amat("0 1\n\n1 0\n", "b.amat")),
        "b.amat:2: blank line inside the data (more vectors follow on line 3)"
    );
    let message = err(parse_amat("\n0 1\n", "b.amat"));
    assert!(message.starts_with("b.amat:1: blank line"), "{message}");
}

#[test]
fn amat_missing_file() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("nope.amat");
    let message = err(read_amat(&path));
    assert!(
        message.starts_with(&format!("{}: cannot read", path.display())),
        "{message}"
    );
    assert_one_line(&message);
}

/// A `.amat.gz` left compressed: the message says so and what to do, not raw bytes.
#[test]
fn amat_gzip_compressed_says_so() {
    let dir = TempDir::new().unwrap();
    let path = write(dir.path(), "test.amat.gz", gzip(b"0 1 1\n1 0 0\n"));
    let message = err(read_amat(&path));
    assert_eq!(
        message,
        format!(
            "{}: looks gzip-compressed (it starts with the gzip magic bytes 1f 8b), not .amat \
             text: decompress it first (gunzip)",
            path.display()
        )
    );
}

// ---------------------------------------------------------------- IDX

const PIXELS: [u8; 12] = [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 255];

#[test]
fn idx_plain_and_gzip_round_trip() {
    let dir = TempDir::new().unwrap();
    let bytes = idx_bytes(0x803, 3, 2, 2, &PIXELS);
    // Compression is recognised by content: the names deliberately say nothing or lie.
    let plain = write(dir.path(), "images.gz", &bytes);
    let packed = write(dir.path(), "images-idx3-ubyte", gzip(&bytes));
    for path in [plain, packed] {
        let images = read_idx_images(&path).unwrap();
        assert_eq!(
            (images.count(), images.rows(), images.cols(), images.n()),
            (3, 2, 2, 4)
        );
        assert_eq!(images.values(), &PIXELS);
        assert_eq!(images.image(2), &[80, 90, 100, 255]);
    }
}

#[test]
fn idx_bad_magic() {
    let dir = TempDir::new().unwrap();
    let path = write(dir.path(), "labels", idx_bytes(0x801, 3, 2, 2, &PIXELS));
    let message = err(read_idx_images(&path));
    assert!(
        message.starts_with(&path.display().to_string()),
        "{message}"
    );
    assert!(
        message.contains("magic 0x00000801, expected 0x00000803"),
        "{message}"
    );
    assert!(message.contains("labels file"), "{message}");
    let message = err(parse_idx_images(b"GIF89a and then some more", "pic"));
    assert!(message.starts_with("pic: byte 0: IDX magic"), "{message}");
}

#[test]
fn idx_truncated_and_trailing_and_short() {
    let message = err(parse_idx_images(
        &idx_bytes(0x803, 3, 2, 2, &PIXELS[..11]),
        "t",
    ));
    assert!(message.starts_with("t: truncated"), "{message}");
    assert!(
        message.contains("12 bytes") && message.contains("found 11"),
        "{message}"
    );

    let mut long = PIXELS.to_vec();
    long.extend([1, 2]);
    let message = err(parse_idx_images(&idx_bytes(0x803, 3, 2, 2, &long), "t"));
    assert!(
        message.starts_with("t: byte 28: 2 trailing bytes"),
        "{message}"
    );

    let message = err(parse_idx_images(&[0, 0, 8, 3, 0, 0], "t"));
    assert!(message.contains("too short"), "{message}");

    // The same checks behind gzip, with the offsets marked as decompressed ones.
    let dir = TempDir::new().unwrap();
    let path = write(
        dir.path(),
        "t.gz",
        gzip(&idx_bytes(0x803, 3, 2, 2, &PIXELS[..5])),
    );
    let message = err(read_idx_images(&path));
    assert!(message.contains("(decompressed): truncated"), "{message}");
}

#[test]
fn idx_zero_sizes() {
    for (count, rows, cols, what) in [
        (0, 2, 2, "byte 4: image count"),
        (3, 0, 2, "byte 8: rows"),
        (3, 2, 0, "byte 12: columns"),
    ] {
        let message = err(parse_idx_images(
            &idx_bytes(0x803, count, rows, cols, &[]),
            "z",
        ));
        assert_eq!(message, format!("z: {what} is 0"));
    }
}

#[test]
fn idx_corrupt_gzip() {
    let dir = TempDir::new().unwrap();
    let mut bytes = gzip(&idx_bytes(0x803, 3, 2, 2, &PIXELS));
    let keep = bytes.len() / 2;
    bytes.truncate(keep);
    let path = write(dir.path(), "broken", bytes);
    let message = err(read_idx_images(&path));
    assert!(message.contains("corrupt gzip"), "{message}");
    assert_one_line(&message);
}

#[test]
fn idx_missing_file() {
    let message = err(read_idx_images(Path::new(
        "/nonexistent/train-images-idx3-ubyte.gz",
    )));
    assert!(message.starts_with("/nonexistent/train-images-idx3-ubyte.gz: cannot read"));
}

// ---------------------------------------------------------------- binarization

/// 20,000 images of 2 x 2 pixels: gray 0, 64, 191, 255.
fn gray_grid() -> GrayImages {
    GrayImages::new(2, 2, [0, 64, 191, 255].repeat(20_000)).unwrap()
}

fn column_means(data: &BinaryDataset) -> Vec<f64> {
    (0..data.n())
        .map(|j| data.rows().map(|r| f64::from(r[j])).sum::<f64>() / data.len() as f64)
        .collect()
}

#[test]
fn threshold_binarization() {
    let images = GrayImages::new(1, 4, vec![0, 127, 128, 255]).unwrap();
    let data = images.binarize(&Binarization::Threshold(0.5), 0);
    assert_eq!((data.n(), data.pixels()), (4, &[0u8, 0, 1, 1][..]));
    let data = images.binarize(&Binarization::Threshold(0.0), 7);
    assert_eq!(data.pixels(), &[0, 1, 1, 1]);
}

#[test]
fn bernoulli_binarization() {
    let images = gray_grid();
    let a = images.binarize(&Binarization::Bernoulli { seed: 1 }, 0);
    // Fixed draw: neither the epoch nor a second call changes it.
    assert_eq!(a, images.binarize(&Binarization::Bernoulli { seed: 1 }, 5));
    assert_ne!(a, images.binarize(&Binarization::Bernoulli { seed: 2 }, 0));

    // Frequencies match pixel / 255; 20,000 draws give a standard error below 0.0035.
    let means = column_means(&a);
    assert_eq!(means[0], 0.0);
    assert_eq!(means[3], 1.0);
    assert!((means[1] - 64.0 / 255.0).abs() < 0.015, "{means:?}");
    assert!((means[2] - 191.0 / 255.0).abs() < 0.015, "{means:?}");
}

#[test]
fn dynamic_binarization() {
    let images = gray_grid();
    let how = Binarization::Dynamic { seed: 3 };
    let epoch0 = images.binarize(&how, 0);
    assert_eq!(epoch0, images.binarize(&how, 0));
    assert_ne!(epoch0, images.binarize(&how, 1));
    assert_ne!(
        epoch0,
        images.binarize(&Binarization::Dynamic { seed: 4 }, 0)
    );
    let means = column_means(&images.binarize(&how, 9));
    assert!((means[1] - 64.0 / 255.0).abs() < 0.015, "{means:?}");
    assert!(how.is_dynamic() && !Binarization::Bernoulli { seed: 3 }.is_dynamic());
}

#[test]
fn binarization_from_str() {
    let cases = [
        ("threshold:0.5", Binarization::Threshold(0.5)),
        ("threshold:0", Binarization::Threshold(0.0)),
        ("bernoulli:42", Binarization::Bernoulli { seed: 42 }),
        (
            "dynamic:18446744073709551615",
            Binarization::Dynamic { seed: u64::MAX },
        ),
    ];
    for (text, expected) in cases {
        let parsed: Binarization = text.parse().unwrap();
        assert_eq!(parsed, expected);
        assert_eq!(
            parsed.to_string().parse::<Binarization>().unwrap(),
            expected
        );
    }
    for (text, needle) in [
        ("threshold", "expected threshold:T"),
        ("", "expected threshold:T"),
        ("threshold:half", "not a number"),
        ("threshold:1.5", "outside [0, 1]"),
        ("threshold:NaN", "outside [0, 1]"),
        ("bernoulli:-1", "not an unsigned 64-bit integer"),
        ("dynamic:", "not an unsigned 64-bit integer"),
        ("stochastic:1", "unknown kind \"stochastic\""),
    ] {
        let message = err(text.parse::<Binarization>());
        assert!(message.contains(needle), "{text}: {message}");
    }
}

// ---------------------------------------------------------------- download

#[test]
fn download_with_correct_checksum() {
    let dir = TempDir::new().unwrap();
    let (text, data) = fake_mnist_text(3);
    let base = serve_once("200 OK", text.clone().into_bytes());
    let dest = dir.path().join("new/folder/fake.amat");
    download(
        &format!("{base}/fake.amat"),
        &dest,
        Some(&data.sha256_hex()),
    )
    .unwrap();
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), text);
    assert!(no_part_files(dest.parent().unwrap()));
}

#[test]
fn download_with_wrong_checksum_keeps_nothing() {
    let dir = TempDir::new().unwrap();
    let (text, _) = fake_mnist_text(2);
    let base = serve_once("200 OK", text.into_bytes());
    let dest = dir.path().join("fake.amat");
    let wrong = known_content_sha256("binarized_mnist", Split::Test).unwrap();
    let message = err(download(&format!("{base}/fake.amat"), &dest, Some(wrong)));
    assert!(
        message.contains("content SHA-256 is") && message.contains(wrong),
        "{message}"
    );
    assert_one_line(&message);
    assert!(!dest.exists());
    assert!(no_part_files(dir.path()));
}

#[test]
fn download_http_error_and_bad_content_keep_nothing() {
    let dir = TempDir::new().unwrap();
    // The folders created for the destination go too.
    let nested = dir.path().join("new/folder/x.amat");
    let base = serve_once("404 Not Found", b"no such file".to_vec());
    let message = err(download(&format!("{base}/x.amat"), &nested, None));
    assert!(message.contains("404"), "{message}");
    assert!(!dir.path().join("new").exists());

    let dest = dir.path().join("x.amat");
    let base = serve_once("404 Not Found", b"no such file".to_vec());
    let message = err(download(&format!("{base}/x.amat"), &dest, None));
    assert!(message.contains("404"), "{message}");

    let base = serve_once("200 OK", b"<html>moved</html>\n".to_vec());
    let message = err(download(&format!("{base}/x.amat"), &dest, None));
    assert!(
        message.contains("x.amat:1: value <html>moved</html>"),
        "{message}"
    );
    assert!(!dest.exists());
    assert!(no_part_files(dir.path()));
}

// ---------------------------------------------------------------- source

#[test]
fn resolve_dir_order() {
    let explicit = Path::new("/a");
    let env = std::ffi::OsStr::new("/b");
    let at = |path: &str, origin| DataPath {
        path: PathBuf::from(path),
        origin,
    };
    for origin in [PathOrigin::Flag, PathOrigin::Config] {
        assert_eq!(
            resolve_dir_with(Some(explicit), origin, "dna", Some(env)),
            at("/a", origin)
        );
    }
    assert_eq!(
        resolve_dir_with(None, PathOrigin::Flag, "dna", Some(env)),
        at("/b", PathOrigin::Env)
    );
    assert_eq!(
        resolve_dir_with(
            None,
            PathOrigin::Flag,
            "binarized_mnist",
            Some(std::ffi::OsStr::new(""))
        ),
        at(DEFAULT_DIR, PathOrigin::DefaultDir)
    );
    assert_eq!(
        resolve_dir_with(None, PathOrigin::Config, "binarized_mnist", None),
        at("data/binarized_mnist", PathOrigin::DefaultDir)
    );
    // The UCI benchmarks have a folder of their own (../shared/data/uci_binary's layout).
    for dataset in ["dna", "mushrooms", "nips"] {
        assert_eq!(
            resolve_dir_with(None, PathOrigin::Config, dataset, None),
            at("data/uci_binary", PathOrigin::DefaultDir)
        );
    }
    assert_eq!(
        resolve_dir_with(None, PathOrigin::Config, "my_own", None),
        at("data/binarized_mnist", PathOrigin::DefaultDir)
    );
    let src = DataSource::default();
    assert_eq!((src.path, src.dataset.as_str()), (None, "binarized_mnist"));
}

/// A mistyped `--data x.amat` once became a folder `x.amat/` that a download then filled: a
/// path somebody named must exist, and nothing is created for it.
#[test]
fn a_named_path_that_does_not_exist_is_an_error_and_creates_nothing() {
    let dir = TempDir::new().unwrap();
    // Were a download attempted, the message would be the offline one instead.
    let unused = unreachable_base_url();
    for name in ["x.amat", "somedir", "deeper/somedir"] {
        let path = dir.path().join(name);
        for (origin, named_by) in [
            (PathOrigin::Flag, "given by --data"),
            (PathOrigin::Config, "given by [data] dir in the config"),
            (PathOrigin::Env, "given by NADE_DATA_DIR"),
        ] {
            let data_path = DataPath {
                path: path.clone(),
                origin,
            };
            for dataset in ["binarized_mnist", "dna"] {
                let message = err(load_split_at(&data_path, dataset, Split::Test, &unused));
                assert_eq!(
                    message,
                    format!("{}: no such file or folder ({named_by})", path.display())
                );
            }
        }
        // The library entry point without an origin says the same, minus who named it.
        let message = err(load_split_from(
            &path,
            "binarized_mnist",
            Split::Test,
            &unused,
        ));
        assert_eq!(
            message,
            format!("{}: no such file or folder", path.display())
        );
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "created {left:?}");

    // The default folder may be missing, but only binarized MNIST is ever downloaded into it.
    let default = DataPath {
        path: dir.path().join("data/binarized_mnist"),
        origin: PathOrigin::DefaultDir,
    };
    let message = err(load_split_at(&default, "dna", Split::Test, &unused));
    assert_eq!(
        message,
        format!(
            "{}: no such file or folder (the default data folder; name another with --data or \
             NADE_DATA_DIR)",
            default.path.display()
        )
    );
    assert!(!dir.path().join("data").exists());
}

#[test]
fn load_split_from_folder_and_file() {
    let dir = TempDir::new().unwrap();
    write(dir.path(), "toy_train.amat", "0 1\n1 1\n");
    write(dir.path(), "toy_test.amat", "1 0\n");
    let unused = unreachable_base_url();
    let train = load_split_from(dir.path(), "toy", Split::Train, &unused).unwrap();
    assert_eq!((train.len(), train.n()), (2, 2));
    let test = load_split_from(dir.path(), "toy", Split::Test, &unused).unwrap();
    assert_eq!(test.pixels(), &[1, 0]);

    // A file is read as is, whatever the split.
    let file = dir.path().join("toy_train.amat");
    let data = load_split_from(&file, "binarized_mnist", Split::Valid, &unused).unwrap();
    assert_eq!(data, train);

    // Unknown data sets are never downloaded: the error names the missing file.
    let message = err(load_split_from(dir.path(), "toy", Split::Valid, &unused));
    let missing = dir.path().join("toy_valid.amat");
    assert_eq!(
        message,
        format!("{}: no such file (toy valid split)", missing.display())
    );
}

#[test]
fn load_split_rejects_unpublished_content() {
    let dir = TempDir::new().unwrap();
    let path = write(dir.path(), "dna_test.amat", "0 1\n");
    let unused = unreachable_base_url();
    for message in [
        err(load_split_from(dir.path(), "dna", Split::Test, &unused)),
        // Named like a published split: checked even when the file is given directly.
        err(load_split_from(&path, "whatever", Split::Train, &unused)),
    ] {
        assert!(
            message.starts_with(&path.display().to_string()),
            "{message}"
        );
        assert!(
            message.contains("not the published dna test split"),
            "{message}"
        );
        assert!(
            message.contains(known_content_sha256("dna", Split::Test).unwrap()),
            "{message}"
        );
        assert_one_line(&message);
    }
}

#[test]
fn offline_message_names_files_and_folder() {
    let dir = TempDir::new().unwrap();
    // The default folder, missing, with a missing parent: both created for the download and
    // both removed when it fails (an `eval` run anywhere offline once left them behind).
    let folder = dir.path().join("data/binarized_mnist");
    let base = unreachable_base_url();
    let default = DataPath {
        path: folder.clone(),
        origin: PathOrigin::DefaultDir,
    };
    let message = err(load_split_at(
        &default,
        "binarized_mnist",
        Split::Test,
        &base,
    ));
    let expected_start = format!(
        "binarized MNIST not found: put binarized_mnist_train.amat, binarized_mnist_valid.amat \
         and binarized_mnist_test.amat (from {base}/) into {}, or point --data / NADE_DATA_DIR \
         at a folder holding them (download failed: ",
        folder.display()
    );
    assert!(message.starts_with(&expected_start), "{message}");
    assert_one_line(&message);
    assert!(
        !dir.path().join("data").exists(),
        "the created folders stayed"
    );

    // With only the test split missing, the message names just that file and its URL.
    std::fs::create_dir_all(&folder).unwrap();
    write(&folder, "binarized_mnist_train.amat", "0\n");
    write(&folder, "binarized_mnist_valid.amat", "0\n");
    let message = err(load_split_from(
        &folder,
        "binarized_mnist",
        Split::Test,
        &base,
    ));
    let expected_start = format!(
        "binarized MNIST not found: put binarized_mnist_test.amat (from \
         {base}/binarized_mnist_test.amat) into {}, or point --data / NADE_DATA_DIR at a folder \
         holding it (download failed: ",
        folder.display()
    );
    assert!(message.starts_with(&expected_start), "{message}");
    // A folder that existed before is kept, and holds no partial download.
    assert!(folder.is_dir() && no_part_files(&folder));
}

/// A server with the wrong content: the download is refused and nothing is kept. (With the
/// real test split served, the download is kept: tests/real_data.rs.)
#[test]
fn load_split_refuses_a_download_with_wrong_content() {
    let dir = TempDir::new().unwrap();
    let (text, _) = fake_mnist_text(4);
    let base = serve_once("200 OK", text.into_bytes());
    let message = err(load_split_from(
        dir.path(),
        "binarized_mnist",
        Split::Valid,
        &base,
    ));
    assert!(
        message.starts_with("binarized MNIST not found"),
        "{message}"
    );
    assert!(message.contains("content SHA-256 is"), "{message}");
    assert!(!dir.path().join("binarized_mnist_valid.amat").exists());
    assert!(no_part_files(dir.path()));
}
