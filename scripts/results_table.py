#!/usr/bin/env python3
"""The README's results table, from runs/*/summary.json and docs/*-{test,valid}.json.

Every number comes from a file a run or `nade eval` wrote; nothing is typed in by hand.
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


print("| model | parameters | test NLL (nats) | bits/dim | valid NLL | epochs (best / run) | training time | published anchor |")
print("|---|---|---|---|---|---|---|---|")
for model in ["fvsbn", "mlp", "nade"]:
    try:
        summary = load(f"runs/{model}/summary.json")
        test = load(f"docs/{model}-test.json")
        valid = load(f"docs/{model}-valid.json")
    except FileNotFoundError:
        continue
    hidden = f", d = {summary['hidden']}" if summary["hidden"] else ""
    minutes = summary["train_seconds"] / 60
    print(
        f"| {model.upper() if model != 'mlp' else 'MLP'}{hidden} | {summary['parameters']:,} "
        f"| {test['nll_nats']:.2f} ± {test['nll_std_err']:.2f} | {test['bits_per_dim']:.4f} "
        f"| {valid['nll_nats']:.2f} | {summary['best_epoch']} / {summary['epochs_run']} "
        f"| {minutes:.0f} min ({summary['device']}, 2 cores) | {ANCHORS[model]} |"
    )
