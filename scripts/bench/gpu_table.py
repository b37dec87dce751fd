#!/usr/bin/env python3
"""The GPU table of docs/cuda.md from one gpu-check run (scripts/cuda/gpu_check.sh): `nade
bench` and scripts/bench/bench_torch.py output of the same machine, images/s per phase and batch.

    python3 scripts/bench/gpu_table.py docs/records/gpu/h200-nade-bench.jsonl \\
        docs/records/gpu/h200-torch-bench.jsonl
"""
import json
import sys


def rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip().startswith("{")]


def main():
    ours, torch = rows(sys.argv[1]), rows(sys.argv[2])
    table = {}
    for r in ours:
        if r["model"] != "nade":
            continue
        table.setdefault(f"nade `{r.get('kernel', r.get('path'))}`", {})[(r["phase"], r["batch"])] = r["images_per_s"]
    names = {"loop": "PyTorch, python loop over i", "cumsum": "PyTorch, exclusive cumsum (B, n, d)",
             "compiled": "PyTorch, cumsum under `torch.compile`"}
    for r in torch:
        if "images_per_s" in r:
            table.setdefault(names.get(r["formulation"], r["formulation"]), {})[(r["phase"], r["batch"])] = r["images_per_s"]
    phases = [("eval", 100), ("eval", 1000), ("train", 100), ("train", 1000), ("sample", 100), ("sample", 1000)]
    print("| | " + " | ".join(f"{p} B={b}" for p, b in phases) + " |")
    print("|---|" + "---|" * len(phases))
    for name, cells in table.items():
        print(f"| {name} | " + " | ".join(f"{cells[k]:,.0f}" if k in cells else "" for k in phases) + " |")
    others = [r for r in ours if r["model"] != "nade"]
    for r in others:
        print(f"<!-- {r['model']} {r['phase']} B={r['batch']}: {r['images_per_s']:,.0f} images/s -->")


if __name__ == "__main__":
    main()
