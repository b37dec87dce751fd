//! With the `cuda` feature: compiles every `src/kernels/cuda/*.cu` to PTX in OUT_DIR with nvcc
//! (`src/kernels/nade_cuda.rs` embeds it with `include_str!`). Without it: nothing, so the CPU
//! build needs no CUDA toolkit.
//!
//! nvcc is `$NVCC`, else `$CUDA_HOME/bin/nvcc` (or `$CUDA_PATH`, `$CUDA_ROOT`), else `nvcc` on
//! PATH; `scripts/build-cuda.sh` sets these up. `$NVCC_CCBIN` picks the host compiler, as for
//! candle-kernels.
//!
//! PTX target: `compute_90` by default, or `compute_$CUDA_COMPUTE_CAP` (digits only). candle-kernels
//! (cudaforge) builds its PTX for `compute_90a` when CUDA_COMPUTE_CAP=90, which
//! scripts/cuda/toolchain.sh sets on a machine without a GPU (the lent machines are H100 / H200,
//! sm_90). We use plain `compute_90` instead: the kernels need nothing arch-specific (only warp
//! shuffles, sm_30+), and `90a` PTX loads only on sm_90 exactly, while `compute_90` PTX is
//! JIT-compiled by the driver for sm_90 and any later GPU. The PTX is ISA 9.0 (CUDA 13.0's nvcc),
//! so the driver must be CUDA 13.0 or newer, as candle's own kernels already require.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const KERNEL_DIR: &str = "src/kernels/cuda";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    println!("cargo:rerun-if-changed={KERNEL_DIR}");
    for var in [
        "NVCC",
        "CUDA_HOME",
        "CUDA_PATH",
        "CUDA_ROOT",
        "NVCC_CCBIN",
        "CUDA_COMPUTE_CAP",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let nvcc = find_nvcc();
    let arch = ptx_arch();
    let mut sources: Vec<PathBuf> = std::fs::read_dir(KERNEL_DIR)
        .unwrap_or_else(|e| panic!("cannot read {KERNEL_DIR}: {e}"))
        .map(|entry| entry.expect("reading the kernel directory").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "cu"))
        .collect();
    sources.sort();
    for source in &sources {
        println!("cargo:rerun-if-changed={}", source.display());
        compile(&nvcc, &arch, source, &out_dir);
    }
}

/// `compute_NN` from CUDA_COMPUTE_CAP ("90", "90a", "sm_90" all give compute_90), default 90.
fn ptx_arch() -> String {
    let cap = env::var("CUDA_COMPUTE_CAP").unwrap_or_default();
    let digits: String = cap
        .trim()
        .trim_start_matches("sm_")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    format!("compute_{}", if digits.is_empty() { "90" } else { &digits })
}

fn find_nvcc() -> PathBuf {
    let candidates: Vec<PathBuf> = env::var_os("NVCC")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"]
                .iter()
                .filter_map(env::var_os)
                .map(|home| Path::new(&home).join("bin").join("nvcc")),
        )
        .chain(std::iter::once(PathBuf::from("nvcc")))
        .collect();
    for nvcc in &candidates {
        let works = Command::new(nvcc)
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success());
        if works {
            return nvcc.clone();
        }
    }
    panic!(
        "\n\nthe `cuda` feature needs nvcc to compile src/kernels/cuda/*.cu, and none runs \
         (tried {candidates:?}).\nSet NVCC or CUDA_HOME, put nvcc on PATH, or build with \
         scripts/build-cuda.sh, which installs a CUDA toolkit in .cuda/.\n\n"
    );
}

fn compile(nvcc: &Path, arch: &str, source: &Path, out_dir: &Path) {
    let stem = source.file_stem().expect("a .cu file has a stem");
    let ptx = out_dir.join(stem).with_extension("ptx");
    let mut cmd = Command::new(nvcc);
    // No --use_fast_math: the kernels pick their fast intrinsics one by one (see nade.cu).
    cmd.arg("--ptx")
        .arg(format!("--gpu-architecture={arch}"))
        .args(["-O3", "-std=c++17", "-lineinfo", "-o"])
        .arg(&ptx)
        .arg(source);
    if let Some(ccbin) = env::var_os("NVCC_CCBIN") {
        cmd.arg("-allow-unsupported-compiler")
            .arg("-ccbin")
            .arg(ccbin);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", nvcc.display()));
    if !status.success() {
        panic!("nvcc failed ({status}) on {}: {cmd:?}", source.display());
    }
}
