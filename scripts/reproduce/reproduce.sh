#!/usr/bin/env bash
# Retrains every row of the README's results table from scratch and regenerates the shipped
# checkpoints, the table and the pictures. Resumable: a run that was cut off continues from its
# last.safetensors (`nade train --resume`), a finished run (summary.json present) is kept.
#
#   NADE_DATA_DIR=/path/to/binarized_mnist scripts/reproduce/reproduce.sh \
#       [fvsbn mlp nade made made-k32 deepnade]
#
# NADE_SKIP_TRAINING=1 regenerates checkpoints, table and pictures from the runs' current
# best.safetensors without training (for a run that is still going).
set -euo pipefail
cd "$(dirname "$0")/../.."

models=("$@")
[ ${#models[@]} -gt 0 ] || models=(fvsbn mlp nade made made-k32 deepnade)

cargo build --release
nade=target/release/nade
mkdir -p runs docs/records docs/images checkpoints

for model in "${models[@]}"; do
  out="runs/$model"
  if [ -n "${NADE_SKIP_TRAINING:-}" ]; then
    echo "== $model: using the current best of $out"
  elif [ -f "$out/summary.json" ]; then
    echo "== $model: finished run in $out, kept"
  elif [ -f "$out/last.safetensors" ]; then
    echo "== $model: resuming $out"
    "$nade" train --resume "$out" 2>&1 | tee -a "runs/$model.log"
  else
    echo "== $model: training configs/$model.toml into $out"
    "$nade" train "configs/$model.toml" --out "$out" 2>&1 | tee "runs/$model.log"
  fi

  cp "$out/best.safetensors" "checkpoints/$model.safetensors"
  if [ "$model" = deepnade ] && [ -f "$out/summary.json" ]; then
    # The single ordering of the shipped model: the best of the stored orderings on the
    # validation set, swapped into row 0 (the ensemble does not change). 128 orderings of the
    # validation set: ~45 min on 2 threads.
    python3 scripts/reproduce/choose_ordering.py "$out/best.safetensors" --out "checkpoints/$model.safetensors" \
      --record "docs/records/$model-valid-each-ordering.json"
  fi
  cp "$out/curve.png" "docs/images/$model-curve.png"
  # The run's history beside the table it feeds (runs/ is not in the repository).
  cp "$out/metrics.jsonl" "docs/records/$model-metrics.jsonl"
  [ ! -f "$out/summary.json" ] || cp "$out/summary.json" "docs/records/$model-summary.json"
  # Deep NADE's table row is one ordering (n network passes per image and ordering); its
  # 128-ordering ensemble is a separate, long `nade eval` (docs/experiments.md).
  eval_args=()
  [ "$model" != deepnade ] || eval_args=(--orders 1)
  if [ -f "$out/summary.json" ]; then
    # The test set once, for a finished run's selected model only.
    "$nade" eval "checkpoints/$model.safetensors" --split test --json "${eval_args[@]}" > "docs/records/$model-test.json"
    if [ "$model" = deepnade ]; then
      # The ensemble of all stored orderings and its curve (1, 2, 4, ... orderings), one pass.
      python3 scripts/reproduce/orderings_curve.py "checkpoints/$model.safetensors" --split test \
        --jsonl "docs/records/$model-orderings.jsonl" --svg "docs/images/$model-orderings.svg" \
        --each "docs/records/$model-each-ordering.json"
    fi
  fi
  "$nade" eval "checkpoints/$model.safetensors" --split valid --json "${eval_args[@]}" > "docs/records/$model-valid.json"
  "$nade" sample "checkpoints/$model.safetensors" --count 100 --seed 1 --scale 2 \
    --out "docs/images/$model-samples.png"
  # A MADE with a random order per mask conditions exactly only on a prefix of every mask's
  # order, which the top rows are not: no completions for it (`nade complete` says so).
  if ! grep -q '^order = "random"' "configs/$model.toml"; then
    "$nade" complete "checkpoints/$model.safetensors" --rows 14 --count 10 --stride 1000 --samples 5 --seed 1 \
      --scale 2 --out "docs/images/$model-completions.png"
  fi
  if [ "$model" = deepnade ]; then
    # Any kept set: the left half, a centre box to fill in, 80% of the pixels missing.
    for keep in left:14 hole:7,7,21,21 random:0.2; do
      name=$(echo "$keep" | cut -d: -f1)
      "$nade" complete "checkpoints/$model.safetensors" --keep "$keep" --count 10 --stride 1000 --samples 5 \
        --seed 1 --scale 2 --out "docs/images/$model-completions-$name.png"
    done
  fi
done

python3 scripts/reproduce/results_table.py --write
