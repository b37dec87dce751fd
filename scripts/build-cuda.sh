#!/usr/bin/env bash
# Build nade with CUDA on a machine without a CUDA toolkit (and without a GPU):
#
#   scripts/build-cuda.sh                    # cargo build --release --features cuda
#   scripts/build-cuda.sh clippy --release --features cuda --all-targets -- -D warnings
#   scripts/build-cuda.sh test --release --features cuda --no-run
#
# Sets up the toolchain with scripts/cuda/toolchain.sh (PyPI wheels in .cuda/, first run only)
# and builds into target/cuda (override: NADE_CUDA_TARGET_DIR), apart from the CPU build in
# target/release. The binary: target/cuda/release/nade (about 140 MB with the release profile's
# line tables); the plain build also writes target/cuda/nade-stripped (no debug info, about
# 57 MiB, small enough for the device tool's 64 MiB carry). To run it, the CUDA libraries must be
# found: `eval "$(scripts/cuda/toolchain.sh)"` sets LD_LIBRARY_PATH to the wheels' lib/ (or use
# the machine's own CUDA 13 libraries); the driver (libcuda.so.1) comes from the machine.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

eval "$(scripts/cuda/toolchain.sh)"
export CARGO_TARGET_DIR="${NADE_CUDA_TARGET_DIR:-$ROOT/target/cuda}"

if (($# > 0)); then
  echo "build-cuda: CARGO_TARGET_DIR=$CARGO_TARGET_DIR cargo $*" >&2
  exec cargo "$@"
fi
echo "build-cuda: CARGO_TARGET_DIR=$CARGO_TARGET_DIR cargo build --release --features cuda" >&2
cargo build --release --features cuda
bin="$CARGO_TARGET_DIR/release/nade"
if [[ ! -f "$CARGO_TARGET_DIR/nade-stripped" || "$bin" -nt "$CARGO_TARGET_DIR/nade-stripped" ]]; then
  strip --strip-debug -o "$CARGO_TARGET_DIR/nade-stripped" "$bin"
fi
ls -l "$bin" "$CARGO_TARGET_DIR/nade-stripped" >&2
