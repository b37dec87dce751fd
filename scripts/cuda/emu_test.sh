#!/usr/bin/env bash
# Tests the CUDA kernels of src/kernels/cuda/ (nade.cu, deepnade.cu, bernoulli.cu) without a
# GPU: compiles them as C++ with a thread-per-CUDA-thread emulation (tests/cuda_emu/cuda_emu.h)
# and checks them against double precision references (tests/cuda_emu/harness.cpp for nade.cu,
# deepnade_harness.cpp, bernoulli_harness.cpp). Needs g++ with C++20 (std::barrier).
#
#   scripts/cuda/emu_test.sh           # all cases (about 7 minutes on 2 cores)
#   scripts/cuda/emu_test.sh --quick   # the small cases (about a minute; CI runs these)
#   SANITIZE=thread scripts/cuda/emu_test.sh --quick   # with ThreadSanitizer: data races
#
# It checks indexing, synchronisation and the order of the sums; not the GPU's floating point
# (the fast intrinsics are emulated by the precise functions) nor the host code in Rust.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
flags=(-std=c++20 -O2 -pthread -Wall -Wextra -Wno-unused-parameter -Wno-unknown-pragmas)
if [[ -n "${SANITIZE:-}" ]]; then flags+=(-fsanitize="$SANITIZE" -g); fi
for harness in harness deepnade_harness bernoulli_harness; do
  "${CXX:-g++}" "${flags[@]}" -o "$out/$harness" "$ROOT/tests/cuda_emu/$harness.cpp"
done
for harness in harness deepnade_harness bernoulli_harness; do
  echo "== tests/cuda_emu/$harness.cpp"
  "$out/$harness" "$@"
done
