#!/usr/bin/env python3
"""The CPU speed table against PyTorch from one scripts/bench/cpu_peers.sh run: per model,
phase and batch, our best round (`nade bench --json` lines) beside the best PyTorch
formulation's best round (bench_torch*.py lines), images/s, the ratio, and each side's peak
resident memory in MB (PyTorch's is the process's peak so far, so it includes earlier
measurements of the same script). Markdown on stdout.

  python3 scripts/bench/cpu_table.py docs/records/cpu-peers-nade.jsonl docs/records/cpu-peers-torch.jsonl
"""
import collections
import json
import sys

MODELS = {"nade": "NADE-500", "made": "MADE 1 x 500", "deepnade": "deep NADE 2 x 500"}
PHASES = {"eval": "eval", "train": "train step", "sample": "sample"}


def lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main(ours_path, torch_path):
    ours_lines, torch_lines = lines(ours_path), lines(torch_path)
    machine = next((l for l in ours_lines if "machine" in l), None)
    ours = collections.defaultdict(list)
    for r in ours_lines:
        if "images_per_s" in r:
            key = (r["model"], r.get("masks") or 1, r["phase"], r["batch"])
            ours[key].append((r["images_per_s"], r["peak_rss_mb"]))
    theirs = collections.defaultdict(list)
    version = None
    for r in torch_lines:
        if "images_per_s" not in r:
            continue
        version = r["torch"].split("+")[0]
        model = r.get("model") or ("made" if "masks" in r else "nade")
        key = (model, r.get("masks", 1), r["phase"], r["batch"])
        theirs[key].append((r["images_per_s"], r.get("peak_rss_mb"), r["formulation"]))
    if machine:
        print(
            f"{machine['machine']} ({machine['isa']}, {machine['cores']} cores), {machine['date']}; "
            f"2 threads each side; PyTorch {version}; best of two interleaved rounds, images/s.\n"
        )
    print("| model | K | phase | batch | nade | best PyTorch | ratio | peak MB (nade / PyTorch) |")
    print("|---|---|---|---|---|---|---|---|")
    order = {m: i for i, m in enumerate(MODELS)}
    for key in sorted(ours, key=lambda k: (order[k[0]], k[1], list(PHASES).index(k[2]), k[3])):
        model, k, phase, batch = key
        speed, rss = max(ours[key])
        cells = [MODELS[model], str(k) if model == "made" else "", PHASES[phase], str(batch), f"{speed:,.0f}"]
        if theirs.get(key):
            best = max(theirs[key], key=lambda t: t[0])
            peer_rss = f"{best[1]:,.0f}" if best[1] is not None else "-"
            cells += [f"{best[0]:,.0f} ({best[2]})", f"{speed / best[0]:.2f}x", f"{rss:,.0f} / {peer_rss}"]
        else:
            cells += ["(no peer)", "", f"{rss:,.0f} / -"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
