#!/usr/bin/env python3
"""The GPU tables of docs/cuda.md from one run on a lent GPU (scripts/cuda/gpu_check.sh or
gpu_zoo.sh): `nade bench` and the PyTorch peers (scripts/bench/bench_torch*.py) of the same
machine and run, images/s per phase and batch. NADE: one row per kernel and formulation. With
--zoo: MADE and deep NADE, one row per (model, layers, K, phase, batch), ours beside the best
PyTorch formulation of the same shape and the ratio.

    python3 scripts/bench/gpu_table.py docs/records/gpu/h200-nade-bench.jsonl \\
        docs/records/gpu/h200-torch-bench.jsonl
    python3 scripts/bench/gpu_table.py --zoo gpu-out/bench.jsonl gpu-out/torch.jsonl
"""
import json
import sys


def rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip().startswith("{")]


def layers(r):
    h = r.get("layers", r.get("hidden"))
    return tuple(h) if isinstance(h, list) else (h,)


def zoo(ours, torch):
    """MADE and deep NADE: ours against the best PyTorch formulation of the same shape."""
    names = {"made": "MADE", "deepnade": "deep NADE"}
    key = lambda r: (r.get("model") or ("made" if "masks" in r else "nade"), layers(r),
                     r.get("masks") or 1, r["phase"], r["batch"])
    best = {}
    for r in torch:
        if "images_per_s" in r and key(r)[0] in names:
            k = key(r)
            if k not in best or r["images_per_s"] > best[k]["images_per_s"]:
                best[k] = r
    print("| model | layers | K | phase | batch | nade | best PyTorch | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for r in ours:
        if r.get("model") not in names or "images_per_s" not in r:
            continue
        k = key(r)
        cells = [names[k[0]], " x ".join(map(str, k[1])), str(k[2]) if k[0] == "made" else "", k[3], str(k[4]),
                 f"{r['images_per_s']:,.0f}"]
        peer = best.get(k)
        cells += ([f"{peer['images_per_s']:,.0f} ({peer['formulation']})", f"{r['images_per_s'] / peer['images_per_s']:.2f}x"]
                  if peer else ["(no peer)", ""])
        print("| " + " | ".join(cells) + " |")


def main():
    if sys.argv[1] == "--zoo":
        return zoo(rows(sys.argv[2]), rows(sys.argv[3]))
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
