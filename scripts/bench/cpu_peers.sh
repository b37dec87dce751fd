#!/usr/bin/env bash
# The CPU speed table of docs/performance.md and the README: `nade bench` for NADE-500 (fused),
# MADE 1 x 500 (K = 1 and 32) and deep NADE 2 x 500 beside their PyTorch peers
# (scripts/bench/bench_torch.py, bench_torch_made.py, bench_torch_deepnade.py), batch 100 and
# 1000, 2 threads each side, in interleaved rounds (ours, PyTorch, ours, PyTorch, ...; ROUNDS,
# default 3) so that both see the same machine; the table takes each side's best round.
# Nothing else should run meanwhile (~12 minutes a round on 2 cores). Run by hand, not by CI.
#
#   PYTHON=/path/to/python-with-torch [ROUNDS=3] scripts/bench/cpu_peers.sh [OUT_PREFIX]
#
# Writes OUT_PREFIX-nade.jsonl and OUT_PREFIX-torch.jsonl (default docs/records/cpu-peers), a
# `machine` line first in each, and prints the table (scripts/bench/cpu_table.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
# Synthetic images (MNIST's 13% of ones) on both sides, as the peers make theirs: `nade bench`
# would read real batches from a NADE_DATA_DIR the caller has set, and hold the whole
# training split in its peak memory.
unset NADE_DATA_DIR
nade=${NADE:-target/release/nade}
python=${PYTHON:-.venv/bin/python}
prefix=${1:-docs/records/cpu-peers}
seconds=${SECONDS_EACH:-3}
rounds=${ROUNDS:-3}
tmp_ours=$(mktemp) tmp_torch=$(mktemp)
trap 'rm -f "$tmp_ours" "$tmp_torch"' EXIT
machine=$(python3 - <<'PY'
import json, platform, subprocess
model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
flags = next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith("flags")), [])
isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
date = subprocess.run(["date", "-u", "+%Y-%m-%d"], capture_output=True, text=True).stdout.strip()
commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
print(json.dumps({"machine": model, "isa": isa, "cores": len(__import__("os").sched_getaffinity(0)), "date": date, "commit": commit}))
PY
)
echo "$machine" > "$tmp_ours"
echo "$machine" > "$tmp_torch"
run_ours() {
  for batch in 100 1000; do
    "$nade" bench --model nade --kernel fused --batch "$batch" --threads 2 --seconds "$seconds" --json >> "$tmp_ours"
    for k in 1 32; do
      "$nade" bench --model made --hidden 500 --masks "$k" --batch "$batch" --threads 2 --seconds "$seconds" --json >> "$tmp_ours"
    done
    "$nade" bench --model deepnade --batch "$batch" --threads 2 --seconds "$seconds" --json >> "$tmp_ours"
  done
}
run_torch() {
  "$python" scripts/bench/bench_torch.py --device cpu --threads 2 --batches 100,1000 --seconds "$seconds" >> "$tmp_torch"
  "$python" scripts/bench/bench_torch_made.py --device cpu --threads 2 --batches 100,1000 --masks 1,32 --seconds "$seconds" >> "$tmp_torch"
  "$python" scripts/bench/bench_torch_deepnade.py --device cpu --threads 2 --batches 100,1000 --seconds "$seconds" >> "$tmp_torch"
}
for _ in $(seq "$rounds"); do
  run_ours
  run_torch
done
mv "$tmp_ours" "$prefix-nade.jsonl"
mv "$tmp_torch" "$prefix-torch.jsonl"
python3 scripts/bench/cpu_table.py "$prefix-nade.jsonl" "$prefix-torch.jsonl"
