#!/usr/bin/env python3
"""The README's results table, from the runs and `nade eval` of the shipped checkpoints.

For each row: docs/records/{key}-test.json and docs/records/{key}-valid.json (`nade eval --json`
of checkpoints/{key}.safetensors), the run's history (runs/{key}/metrics.jsonl and summary.json,
else the copies docs/records/{key}-metrics.jsonl and docs/records/{key}-summary.json that
scripts/reproduce/reproduce.sh keeps) and the used-parameter count from `nade info --json`. A row
whose run history is on neither place (runs of an earlier machine) is kept as the previous
docs/records/results.md had it, which this script wrote from those files. Every number comes
from a file a run or `nade` wrote.

  python3 scripts/reproduce/results_table.py [--write]
      # --write: also update docs/records/results.md and the README
"""
import json
import math
import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
NADE = os.path.join(ROOT, "target/release/nade")
# key, label, published anchor
ROWS = [
    ("fvsbn", "FVSBN", "97.45 (Larochelle & Murray 2011)"),
    ("mlp", "MLP, d = 4", "none published"),
    ("nade", "NADE, d = 500", "88.86 (2011), 88.33 (later tables)"),
    ("made", "MADE, 1 x 4,000 relu, direct, 1 mask", "88.40 (Germain et al. 2015, 1 mask)"),
    ("made-k32", "MADE, 2 x 1,000 relu, direct, random orders, 32-mask ensemble", "86.64 (Germain et al. 2015, best)"),
    ("deepnade", "deep NADE, 2 x 500 relu, first stored ordering", "89.17 (Uria et al. 2014, EoNADE 2hl)"),
]
# The label of a row whose checkpoint had its single ordering chosen on the validation set
# (scripts/reproduce/choose_ordering.py writes `ordering_choice` into its metadata).
CHOSEN_ORDERING_LABELS = {
    "deepnade": "deep NADE, 2 x 500 relu, 1 ordering chosen on valid among the 128",
}
# Ensembles evaluated after training by `nade eval --curve` (scripts/reproduce/orderings_curve.py):
# the row of the whole ensemble, the last line of the curve, beside its one-ordering row above,
# and the row of the mean of its orderings alone.
CURVES = [
    ("deepnade", "deep NADE, 2 x 500 relu, 128 orderings", "85.10 (Uria et al. 2014, EoNADE 2hl)",
     "deep NADE, 2 x 500 relu, 1 ordering, mean of the 128", "89.17 (Uria et al. 2014: mean of 10 orderings)"),
]


def path(*parts):
    return os.path.join(ROOT, *parts)


def load(rel):
    with open(path(rel)) as f:
        return json.load(f)


def first_existing(*rels):
    return next((r for r in rels if os.path.exists(path(r))), None)


def previous_rows():
    try:
        with open(path("docs/records/results.md")) as f:
            return {line.split("|")[1].strip(): line.rstrip("\n") for line in f if line.startswith("| ")}
    except FileNotFoundError:
        return {}


previous = previous_rows()
lines = []
print = lines.append  # noqa: A001 (collected, then printed and written below)
print("| model | parameters (used) | test NLL (nats) | bits/dim | valid NLL | epochs (best / run) | training time | published anchor |")
print("|---|---|---|---|---|---|---|---|")
for key, label, anchor in ROWS:
    if not os.path.exists(path(f"checkpoints/{key}.safetensors")):
        continue
    metrics = first_existing(f"runs/{key}/metrics.jsonl", f"docs/records/{key}-metrics.jsonl")
    if metrics is None:
        if label in previous:
            print(previous[label])
        continue
    with open(path(metrics)) as f:
        history = [json.loads(line) for line in f]
    summary = first_existing(f"runs/{key}/summary.json", f"docs/records/{key}-summary.json")
    if summary:
        s = load(summary)
        epochs = f"{s['best_epoch']} / {s['epochs_run']}"
    else:
        # Epochs that train.valid_every skipped have valid_nll null.
        best = min((r for r in history if r["valid_nll"] is not None), key=lambda r: r["valid_nll"])
        epochs = f"{best['epoch']} / {history[-1]['epoch']} (run not finished)"
    info = json.loads(subprocess.run([NADE, "info", path(f"checkpoints/{key}.safetensors"), "--json"],
                                     check=True, capture_output=True, text=True).stdout)
    if "ordering_choice" in info["metadata_keys"]:
        label = CHOSEN_ORDERING_LABELS[key]
    valid = load(f"docs/records/{key}-valid.json")
    try:
        test = load(f"docs/records/{key}-test.json")
        test_cells = f"{test['nll_nats']:.2f} ± {test['nll_std_err']:.2f} | {test['bits_per_dim']:.4f}"
    except FileNotFoundError:
        test_cells = "not evaluated (training goes on) | "
    minutes = sum(r["train_seconds"] + r["valid_seconds"] for r in history) / 60
    print(
        f"| {label} | {info['parameters_used']:,} | {test_cells} | {valid['nll_nats']:.2f} | {epochs} "
        f"| {minutes:.0f} min ({valid['device']}, 2 cores, shared) | {anchor} |"
    )

for key, label, anchor, each_label, each_anchor in CURVES:
    curve = path(f"docs/records/{key}-orderings.jsonl")
    if not os.path.exists(curve):
        for kept in (label, each_label):
            if kept in previous:
                print(previous[kept])
        continue
    with open(curve) as f:
        whole = [json.loads(line) for line in f][-1]
    info = json.loads(subprocess.run([NADE, "info", path(f"checkpoints/{key}.safetensors"), "--json"],
                                     check=True, capture_output=True, text=True).stdout)
    print(
        f"| {label} | {info['parameters_used']:,} | {whole['nll_nats']:.2f} ± {whole['nll_std_err']:.2f} "
        f"| {whole['bits_per_dim']:.4f} | (selected on 1 ordering) | as above "
        f"| eval {whole['seconds_of_the_whole_curve'] / 60:.0f} min ({whole['device']}, {whole['threads']} thread{'s' if whole['threads'] != 1 else ''}) | {anchor} |"
    )
    # The mean over the stored orderings of each one's test NLL alone, from the same pass
    # (scripts/reproduce/orderings_curve.py --each): Uria et al.'s "one ordering" figure is such a
    # mean.
    e = load(f"docs/records/{key}-each-ordering.json")
    print(
        f"| {each_label} | as above | {e['mean_nll_nats']:.2f} ± {e['mean_std_err_over_orders']:.2f} over orderings "
        f"({e['min_nll_nats']:.2f} to {e['max_nll_nats']:.2f}) | {e['mean_nll_nats'] / (784 * math.log(2)):.4f} "
        f"| (selected on 1 ordering) | as above | the same pass | {each_anchor} |"
    )

del print
text = "\n".join(lines) + "\n"
sys.stdout.write(text)
if "--write" in sys.argv[1:]:
    # Read above before writing: rows of earlier machines' runs come from this file.
    tmp = path("docs/records/results.md.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path("docs/records/results.md"))
    # ... and the README's copy of the table (the block of lines from its header row on).
    with open(path("README.md")) as f:
        readme = f.read().split("\n")
    start = next(i for i, l in enumerate(readme) if l.startswith(lines[0][:30]))
    end = start
    while end < len(readme) and readme[end].startswith("|"):
        end += 1
    readme[start:end] = lines
    tmp = path("README.md.tmp")
    with open(tmp, "w") as f:
        f.write("\n".join(readme))
    os.replace(tmp, path("README.md"))
