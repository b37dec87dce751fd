#!/usr/bin/env bash
# Retrains the UCI table (issue 33) from configs/uci/*.toml and regenerates its checkpoints,
# records and the README's rows: for each set and model, `nade train` into runs/uci/SET-MODEL
# (resumable: a cut-off run continues from its last.safetensors, a finished one is kept), the
# selected model copied to checkpoints/uci/SET-MODEL.safetensors, its validation and test NLL
# from `nade eval --json` into docs/records/uci/ (the test split once per shipped model), then
# scripts/uci/table.py --write. Deep NADE gets two test records: its first stored ordering and
# the ensemble of all its orderings. The `mix` row: `nade mix` of the set's five shipped models
# and independently drawn copies of one of them (below), weights fit by EM on the validation
# split; the copies train into runs/uci/SET-MODEL-seedS and are not shipped but inside the
# mixture (their summaries: docs/records/uci/SET-mix-copies.jsonl).
#
#   NADE_DATA_DIR=../shared/data/uci_binary scripts/uci/reproduce.sh [SET...] [-- MODEL...]
set -euo pipefail
cd "$(dirname "$0")/../.."
sets=() models=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do sets+=("$1"); shift; done
[ $# -eq 0 ] || { shift; models=("$@"); }
[ ${#sets[@]} -gt 0 ] || sets=(dna mushrooms nips)
[ ${#models[@]} -gt 0 ] || models=(fvsbn nade made made-ens deepnade mix)
export NADE_DATA_DIR="${NADE_DATA_DIR:-$(cd ../shared/data/uci_binary 2>/dev/null && pwd || echo data/uci_binary)}"

cargo build --release
nade=target/release/nade
mkdir -p runs/uci docs/records/uci checkpoints/uci

# The copies in each set's mixture: MODEL COUNT, drawn with --model-seed s --seed 1234+s for
# s = 1..COUNT. Chosen on the validation split (docs/experiments.md, "A mixture of our models").
copies() {
  case "$1" in
    mushrooms) echo "made-ens 10" ;;
    *) echo "- 0" ;;
  esac
}

# Trains configs/uci/$2.toml into $1 unless a finished run is there (resumes a cut-off one);
# further arguments go to `nade train`.
train_into() {
  local out=$1 key=$2
  shift 2
  if [ -f "$out/summary.json" ]; then
    echo "== $key: finished run in $out, kept"
  elif [ -f "$out/last.safetensors" ]; then
    echo "== $key: resuming $out"
    "$nade" train --resume "$out" --no-test
  else
    echo "== $key: training configs/uci/$key.toml into $out $*"
    "$nade" train "configs/uci/$key.toml" --out "$out" --no-test "$@"
  fi
}

for set in "${sets[@]}"; do
  for model in "${models[@]}"; do
    key="$set-$model" out="runs/uci/$set-$model"
    if [ "$model" = mix ]; then
      read -r copy count < <(copies "$set")
      components=(checkpoints/uci/"$set"-{fvsbn,nade,made,made-ens,deepnade}.safetensors)
      : > "docs/records/uci/$key-copies.jsonl.tmp"
      for s in $(seq 1 "$count"); do
        run="runs/uci/$set-$copy-seed$s"
        train_into "$run" "$set-$copy" --model-seed "$s" --seed $((1234 + s))
        components+=("$run/best.safetensors")
        python3 -c 'import json, sys
run, s = sys.argv[1], int(sys.argv[2])
summary = json.load(open(f"{run}/summary.json"))
seconds = sum(r["train_seconds"] + r["valid_seconds"] for r in map(json.loads, open(f"{run}/metrics.jsonl")))
print(json.dumps({"run": run, "model_seed": s, "seed": 1234 + s, "valid_nll": summary["valid_nll"],
                  "best_epoch": summary["best_epoch"], "epochs_run": summary["epochs_run"], "seconds": seconds}))' \
          "$run" "$s" >> "docs/records/uci/$key-copies.jsonl.tmp"
      done
      mv "docs/records/uci/$key-copies.jsonl.tmp" "docs/records/uci/$key-copies.jsonl"
      "$nade" mix "${components[@]}" --out "checkpoints/uci/$key.safetensors" --json > "docs/records/uci/$key-fit.json"
      "$nade" eval "checkpoints/uci/$key.safetensors" --split valid --json > "docs/records/uci/$key-valid.json"
      "$nade" eval "checkpoints/uci/$key.safetensors" --split test --json > "docs/records/uci/$key-test.json"
      continue
    fi
    train_into "$out" "$key"
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
