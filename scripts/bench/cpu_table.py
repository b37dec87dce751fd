#!/usr/bin/env python3
"""The CPU speed table against PyTorch from one scripts/bench/cpu_peers.sh run: per model,
phase and batch, our best round (`nade bench --json` lines) beside the best PyTorch
formulation's best round (bench_torch*.py lines), images/s, the ratio, and each side's peak
resident memory in MB (PyTorch's is the process's peak so far, so it includes earlier
measurements of the same script). Markdown on stdout; with --readme, the README's one
paragraph of ratios instead.

  python3 scripts/bench/cpu_table.py [--readme] docs/records/cpu-peers-nade.jsonl docs/records/cpu-peers-torch.jsonl
"""
import collections
import json
import sys

MODELS = {"nade": "NADE-500", "made": "MADE 1 x 500", "deepnade": "deep NADE 2 x 500"}
PHASES = {"eval": "eval", "train": "train step", "sample": "sample"}


def lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main(ours_path, torch_path, readme=False):
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
    rounds = max((len(v) for v in ours.values()), default=0)
    if machine and not readme:
        print(
            f"{machine['machine']} ({machine['isa']}, {machine['cores']} cores), {machine['date']}, nade at "
            f"{machine.get('commit', '?')}; "
            f"2 threads each side; PyTorch {version}; best of {rounds} interleaved rounds, images/s.\n"
        )
    rows = [
        "| model | K | phase | batch | nade | best PyTorch | ratio | peak MB (nade / PyTorch) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    order = {m: i for i, m in enumerate(MODELS)}
    ratios = {}
    for key in sorted(ours, key=lambda k: (order[k[0]], k[1], list(PHASES).index(k[2]), k[3])):
        model, k, phase, batch = key
        speed, rss = max(ours[key])
        cells = [MODELS[model], str(k) if model == "made" else "", PHASES[phase], str(batch), f"{speed:,.0f}"]
        if theirs.get(key):
            best = max(theirs[key], key=lambda t: t[0])
            peer_rss = f"{best[1]:,.0f}" if best[1] is not None else "-"
            ratios[key] = speed / best[0]
            cells += [f"{best[0]:,.0f} ({best[2]})", f"{speed / best[0]:.2f}x", f"{rss:,.0f} / {peer_rss}"]
        else:
            cells += ["(no peer)", "", f"{rss:,.0f} / -"]
        rows.append("| " + " | ".join(cells) + " |")
    if readme:
        print(summary(machine, version, ratios))
    else:
        print("\n".join(rows))


def summary(machine, version, ratios):
    """The README's CPU paragraph: each model's ratios at batch 100 / 1000."""
    def pair(model, k, phase):
        got = [ratios.get((model, k, phase, b)) for b in (100, 1000)]
        return " / ".join(f"{r:.1f}x" if r is not None else "-" for r in got)

    parts = []
    for model, k, name in (("nade", 1, "NADE-500 (`fused`)"), ("made", 1, "MADE 1 x 500"),
                           ("made", 32, "its 32-mask ensemble"), ("deepnade", 1, "deep NADE 2 x 500")):
        phases = ", ".join(f"{PHASES[p]} {pair(model, k, p)}" for p in PHASES if any(
            (model, k, p, b) in ratios for b in (100, 1000)))
        parts.append(f"{name}: {phases}")
    where = f"{machine['machine']} ({machine['isa']}, {machine['cores']} cores, {machine['date']})" if machine else "this machine"
    return (f"Against PyTorch {version} on the same CPU ({where}), 2 threads each side, batch 100 / 1000, "
            f"the speed of ours over the best PyTorch formulation: " + "; ".join(parts) + ".")

if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--readme"]
    if len(args) != 2:
        sys.exit(__doc__)
    main(args[0], args[1], readme="--readme" in sys.argv[1:])
