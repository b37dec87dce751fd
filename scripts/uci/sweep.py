#!/usr/bin/env python3
"""Validation sweeps of the UCI binary benchmarks (issue 33): trains one base config under every
combination of the given overrides with `nade train --no-test` (the test split is never read)
and appends one JSON line per run to the record: the set, the base config, the overrides, the
best validation NLL and its epoch, the epochs run and the training time (from the run's
summary.json). A run whose line is already in the record is skipped, so a cut-off sweep
continues where it stopped.

  NADE_DATA_DIR=../shared/data/uci_binary python3 scripts/uci/sweep.py \\
      configs/uci/dna-nade.toml model.hidden=100,300,500 train.weight_decay=0,0.01,0.1 \\
      [--record docs/records/uci/sweeps.jsonl] [--runs runs/uci-sweep]

With --apply-best it trains nothing: it writes into each given config the overrides of its
best recorded run (lowest validation NLL), with that number in a comment:

  python3 scripts/uci/sweep.py --apply-best configs/uci/*.toml

An override is SECTION.KEY=V1,V2,...; each value is written into the TOML as it is given (a
list needs its own brackets and is split on ';': model.hidden=[500;500],[1000]).
"""
import argparse
import itertools
import json
import os
import re
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NADE = os.path.join(ROOT, "target", "release", "nade")


def set_key(text, section, key, value):
    """`text` (a TOML file) with `key = value` in [section], replaced or added."""
    lines = text.split("\n")
    start = next((i for i, l in enumerate(lines) if l.strip() == f"[{section}]"), None)
    if start is None:
        return text.rstrip("\n") + f"\n\n[{section}]\n{key} = {value}\n"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for i in range(start + 1, end):
        if pattern.match(lines[i]):
            lines[i] = f"{key} = {value}"
            return "\n".join(lines)
    lines.insert(start + 1, f"{key} = {value}")
    return "\n".join(lines)


def parse_override(spec):
    name, _, values = spec.partition("=")
    section, _, key = name.partition(".")
    if not key or not values:
        sys.exit(f"sweep: override {spec!r} is not SECTION.KEY=V1,V2,...")
    return section, key, [v.replace(";", ",") for v in values.split(",")]


def apply_best(configs, record):
    with open(record) as f:
        runs = [json.loads(line) for line in f]
    for config in configs:
        name = os.path.relpath(os.path.abspath(config), ROOT)
        mine = [r for r in runs if r["config"] == name]
        if not mine:
            print(f"{name}: no recorded run, left as it is")
            continue
        best = min(mine, key=lambda r: r["valid_nll"])
        with open(config) as f:
            text = f.read()
        for key, value in best["overrides"].items():
            section, _, k = key.partition(".")
            text = set_key(text, section, k, value)
        note = (f"# Selected by scripts/uci/sweep.py --apply-best: valid {best['valid_nll']:.2f}, the best of "
                f"{len(mine)} runs in docs/records/uci/sweeps.jsonl ({', '.join(f'{k} = {v}' for k, v in best['overrides'].items())}).")
        lines = [l for l in text.split("\n") if not l.startswith("# Selected by scripts/uci/sweep.py")]
        first = next(i for i, l in enumerate(lines) if not l.startswith("#"))
        lines.insert(first, note)
        tmp = config + ".tmp"
        with open(tmp, "w") as f:
            f.write("\n".join(lines))
        os.replace(tmp, config)
        print(f"{name}: {best['overrides']} (valid {best['valid_nll']:.2f})")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--record", default=os.path.join(ROOT, "docs", "records", "uci", "sweeps.jsonl"))
    p.add_argument("--runs", default=os.path.join(ROOT, "runs", "uci-sweep"))
    p.add_argument("--threads", default="2")
    p.add_argument("--apply-best", action="store_true", help="write each config's best recorded overrides into it")
    args = p.parse_args()
    if args.apply_best:
        apply_best([args.config] + args.overrides, args.record)
        return

    with open(args.config) as f:
        base = f.read()
    grid = [parse_override(o) for o in args.overrides]
    done = set()
    if os.path.exists(args.record):
        with open(args.record) as f:
            for line in f:
                r = json.loads(line)
                done.add((r["config"], json.dumps(r["overrides"], sort_keys=True)))
    config_name = os.path.relpath(os.path.abspath(args.config), ROOT)
    stem = os.path.splitext(os.path.basename(args.config))[0]
    os.makedirs(os.path.dirname(args.record), exist_ok=True)
    for values in itertools.product(*[vals for _, _, vals in grid]):
        overrides = {f"{s}.{k}": v for (s, k, _), v in zip(grid, values)}
        if (config_name, json.dumps(overrides, sort_keys=True)) in done:
            continue
        text = base
        for (section, key, _), value in zip(grid, values):
            text = set_key(text, section, key, value)
        tag = "-".join(f"{k.split('.')[-1]}{v}" for k, v in overrides.items()) or "base"
        tag = re.sub(r"[^A-Za-z0-9.,_=-]", "", tag)
        out = os.path.join(args.runs, stem, tag)
        os.makedirs(out, exist_ok=True)
        cfg_path = os.path.join(out, "sweep.toml")
        with open(cfg_path, "w") as f:
            f.write(text)
        cmd = [NADE, "train", cfg_path, "--out", out, "--no-test", "--threads", args.threads, "--force"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"sweep: {' '.join(cmd)} failed:\n{result.stderr[-2000:]}")
        with open(os.path.join(out, "summary.json")) as f:
            s = json.load(f)
        record = {
            "config": config_name,
            "overrides": overrides,
            "valid_nll": s["valid_nll"],
            "best_epoch": s["best_epoch"],
            "epochs_run": s["epochs_run"],
            "parameters": s["parameters"],
            "train_seconds": round(s["train_seconds"], 1),
        }
        with open(args.record, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
