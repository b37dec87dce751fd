#!/usr/bin/env python3
"""The MADE speed table of docs/performance.md: `nade bench --model made --json` lines
(docs/records/made-bench-cpu.jsonl, two runs of K = 1 and K = 32 around the PyTorch script)
beside scripts/bench/bench_torch_made.py's (docs/records/made-torch-bench-cpu.jsonl), images/s;
ours is the mean of its runs.

  python3 scripts/bench/made_bench_table.py docs/records/made-bench-cpu.jsonl \\
      docs/records/made-torch-bench-cpu.jsonl
"""
import collections
import json
import sys


def rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


ours, torch = rows(sys.argv[1]), rows(sys.argv[2])
table = collections.defaultdict(lambda: collections.defaultdict(list))
for r in ours:
    table[("nade (candle)", r["masks"])][r["phase"]].append(r["images_per_s"])
for r in torch:
    if "images_per_s" in r:
        name = f"PyTorch {r['torch'].split('+')[0]} {r['formulation']}"
        table[(name, r["masks"])][r["phase"]].append(r["images_per_s"])
print("| implementation | K masks | eval (K-mask mixture) | train step | sample |")
print("|---|---|---|---|---|")
for (name, k), phases in table.items():
    cells = []
    for phase in ("eval", "train", "sample"):
        v = phases.get(phase)
        cells.append(f"{sum(v) / len(v):,.0f}" if v else "")
    print(f"| {name} | {k} | " + " | ".join(cells) + " |")
