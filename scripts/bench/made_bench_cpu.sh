#!/usr/bin/env bash
# The MADE speed table of docs/performance.md, on the CPU: `nade bench --model made` (K = 1 and
# 32) and scripts/bench/bench_torch_made.py, interleaved (ours, PyTorch, ours; twice) so that both
# see the same machine, with 2 threads each; nothing else should run meanwhile (~11 minutes).
# Writes docs/records/made-bench-cpu.jsonl and docs/records/made-torch-bench-cpu.jsonl, prints
# the table.
#
#   NADE_DATA_DIR=/path/to/binarized_mnist scripts/bench/made_bench_cpu.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
nade=${NADE:-target/release/nade}
python=${PYTHON:-.venv/bin/python}
ours=docs/records/made-bench-cpu.jsonl
torch=docs/records/made-torch-bench-cpu.jsonl
tmp_ours=$(mktemp) tmp_torch=$(mktemp)
trap 'rm -f "$tmp_ours" "$tmp_torch"' EXIT
run_ours() {
  for k in 1 32; do
    "$nade" bench --model made --hidden 500 --masks "$k" --batch 100 --threads 2 --json >> "$tmp_ours"
  done
}
for _ in 1 2; do
  run_ours
  "$python" scripts/bench/bench_torch_made.py --device cpu --threads 2 --batches 100 --masks 1,32 >> "$tmp_torch"
  run_ours
done
mv "$tmp_ours" "$ours"
mv "$tmp_torch" "$torch"
python3 scripts/bench/made_bench_table.py "$ours" "$torch"
