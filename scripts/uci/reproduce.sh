#!/usr/bin/env bash
# Retrains the UCI table (issue 33) from configs/uci/*.toml and regenerates its checkpoints,
# records and the README's rows: for each set and model, `nade train` into runs/uci/SET-MODEL
# (resumable: a cut-off run continues from its last.safetensors, a finished one is kept), the
# selected model copied to checkpoints/uci/SET-MODEL.safetensors, its validation and test NLL
# from `nade eval --json` into docs/records/uci/ (the test split once per shipped model), then
# scripts/uci/table.py --write. Deep NADE gets two test records: its first stored ordering and
# the ensemble of all its orderings.
#
#   NADE_DATA_DIR=../shared/data/uci_binary scripts/uci/reproduce.sh [SET...] [-- MODEL...]
set -euo pipefail
cd "$(dirname "$0")/../.."
sets=() models=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do sets+=("$1"); shift; done
[ $# -eq 0 ] || { shift; models=("$@"); }
[ ${#sets[@]} -gt 0 ] || sets=(dna mushrooms nips)
[ ${#models[@]} -gt 0 ] || models=(fvsbn nade made made-ens deepnade)
export NADE_DATA_DIR="${NADE_DATA_DIR:-$(cd ../shared/data/uci_binary 2>/dev/null && pwd || echo data/uci_binary)}"

cargo build --release
nade=target/release/nade
mkdir -p runs/uci docs/records/uci checkpoints/uci

for set in "${sets[@]}"; do
  for model in "${models[@]}"; do
    key="$set-$model" out="runs/uci/$set-$model"
    if [ -f "$out/summary.json" ]; then
      echo "== $key: finished run in $out, kept"
    elif [ -f "$out/last.safetensors" ]; then
      echo "== $key: resuming $out"
      "$nade" train --resume "$out" --no-test
    else
      echo "== $key: training configs/uci/$key.toml into $out"
      "$nade" train "configs/uci/$key.toml" --out "$out" --no-test
    fi
    cp "$out/best.safetensors" "checkpoints/uci/$key.safetensors"
    cp "$out/metrics.jsonl" "docs/records/uci/$key-metrics.jsonl"
    cp "$out/summary.json" "docs/records/uci/$key-summary.json"
    # The checkpoint names its data set (its run's [data] dataset): eval reads it from there.
    # Deep NADE's rows: its first stored ordering (what validation selected on), and the
    # ensemble of all of them.
    one=()
    [ "$model" != deepnade ] || one=(--orders 1)
    "$nade" eval "checkpoints/uci/$key.safetensors" --split valid --json "${one[@]}" > "docs/records/uci/$key-valid.json"
    "$nade" eval "checkpoints/uci/$key.safetensors" --split test --json "${one[@]}" > "docs/records/uci/$key-test.json"
    if [ "$model" = deepnade ]; then
      "$nade" eval "checkpoints/uci/$key.safetensors" --split test --json > "docs/records/uci/$key-ensemble-test.json"
    fi
  done
done

python3 scripts/uci/table.py --write
