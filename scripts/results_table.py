#!/usr/bin/env python3
"""The README's results table, from runs/*/ (summary.json of a finished run, else the
metrics.jsonl of one still going) and docs/*-{test,valid}.json (`nade eval` of the shipped
checkpoint). Every number comes from a file a run or `nade eval` wrote.
"""
import json
import os

ANCHORS = {
    "fvsbn": "97.45 (Larochelle & Murray 2011)",
    "mlp": "none published",
    "nade": "88.86 (2011), 88.33 (later tables)",
}
ROOT = os.path.join(os.path.dirname(__file__), "..")


def load(path):
    with open(os.path.join(ROOT, path)) as f:
        return json.load(f)


print("| model | parameters (used) | test NLL (nats) | bits/dim | valid NLL | epochs (best / run) | training time | published anchor |")
print("|---|---|---|---|---|---|---|---|")
for model in ["fvsbn", "mlp", "nade"]:
    try:
        test = load(f"docs/{model}-test.json")
        valid = load(f"docs/{model}-valid.json")
        with open(os.path.join(ROOT, f"runs/{model}/metrics.jsonl")) as f:
            history = [json.loads(line) for line in f]
    except FileNotFoundError:
        continue
    try:
        summary = load(f"runs/{model}/summary.json")
        epochs = f"{summary['best_epoch']} / {summary['epochs_run']}"
    except FileNotFoundError:
        best = min(history, key=lambda r: r["valid_nll"])
        epochs = f"{best['epoch']} / {history[-1]['epoch']} (run not finished)"
    # Parameters the model uses: FVSBN's W and MLP's A are stored whole, but only their
    # entries j < i (the strict lower triangle) enter the model.
    params = 0
    with open(os.path.join(ROOT, f"checkpoints/{model}.safetensors"), "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    for name, info in header.items():
        if name == "__metadata__":
            continue
        shape = info["shape"]
        if (model, name) in (("fvsbn", "W"), ("mlp", "A")):
            n = shape[0]
            params += n * (n - 1) // 2 * (shape[1] if model == "mlp" else 1)
        else:
            size = 1
            for dim in shape:
                size *= dim
            params += size
    minutes = sum(r["train_seconds"] + r["valid_seconds"] for r in history) / 60
    hidden = f", d = {test['hidden']}" if test["hidden"] else ""
    name = "MLP" if model == "mlp" else model.upper()
    print(
        f"| {name}{hidden} | {params:,} | {test['nll_nats']:.2f} ± {test['nll_std_err']:.2f} "
        f"| {test['bits_per_dim']:.4f} | {valid['nll_nats']:.2f} | {epochs} "
        f"| {minutes:.0f} min ({test['device']}, 2 cores) | {ANCHORS[model]} |"
    )
