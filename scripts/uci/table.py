#!/usr/bin/env python3
"""The README's UCI table (issue 33), from the records that scripts/uci/reproduce.sh writes:
docs/records/uci/SET-MODEL-test.json (`nade eval --json` of checkpoints/uci/SET-MODEL.safetensors;
deep NADE also SET-deepnade-ensemble-test.json, all its orderings), SET-MODEL-valid.json,
SET-MODEL-metrics.jsonl (training and validation time) and the used parameters from
`nade info --json`; the mixture row also SET-mix-fit.json (`nade mix --json`) and
SET-mix-copies.jsonl (the extra copies it mixes). Published rows are the papers' (see PUBLISHED). A model or set without
records is left out (its cells say so). Every number of ours comes from a file `nade` wrote.

  python3 scripts/uci/table.py [--write]
      # --write: also docs/records/uci/results.md, the README's block between its markers and
      # the sweeps' table of docs/experiments.md (every run of docs/records/uci/sweeps.jsonl)
"""
import json
import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
NADE = os.path.join(ROOT, "target", "release", "nade")
SETS = [("dna", "DNA (n = 180)"), ("mushrooms", "Mushrooms (n = 112)"), ("nips", "NIPS-0-12 (n = 500)")]
# Test NLL in nats as printed in the MADE paper's UCI table (Germain et al. 2015), which carries
# the earlier rows (Larochelle & Murray 2011; Uria et al. 2014; Gregor et al. 2014). Not checked
# against the papers' text here: no copy of the tables was at hand (docs/experiments.md, "UCI").
PUBLISHED = [
    ("mixture of Bernoullis", (98.19, 14.46, 290.02)),
    ("RBM", (96.74, 15.15, 277.37)),
    ("FVSBN", (83.64, 10.27, 276.88)),
    ("NADE (fixed order)", (84.81, 9.81, 273.08)),
    ("EoNADE, 1 hidden layer, 16 orderings", (82.31, 9.69, 272.39)),
    ("DARN", (81.04, 9.55, 274.68)),
    ("MADE", (83.63, 9.68, 280.25)),
    ("MADE, mask sampling", (79.66, 9.69, 277.28)),
]
# (record key, label); deep NADE's ensemble row reads SET-deepnade-ensemble-test.json.
OURS = [
    ("fvsbn", "FVSBN"),
    ("nade", "NADE (fixed order)"),
    ("made", "MADE, 1 mask, natural order"),
    ("made-ens", "MADE, ensemble of its masks (random orders)"),
    ("deepnade", "deep NADE, 1 ordering"),
    ("deepnade-ensemble", "deep NADE, ensemble of its orderings"),
    ("mix", "mixture of our models (`nade mix`)"),
]
# The trained models a set's mixture row starts from (the copies are in SET-mix-copies.jsonl).
SHIPPED = ["fvsbn", "nade", "made", "made-ens", "deepnade"]
BEGIN = "<!-- uci-table: scripts/uci/table.py -->"
END = "<!-- /uci-table -->"
SWEEPS_BEGIN = "<!-- uci-sweeps: scripts/uci/table.py -->"
SWEEPS_END = "<!-- /uci-sweeps -->"


def path(*parts):
    return os.path.join(ROOT, *parts)


def load(rel):
    try:
        with open(path(rel)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def info(checkpoint):
    out = subprocess.run([NADE, "info", checkpoint, "--json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def minutes(key):
    try:
        with open(path(f"docs/records/uci/{key}-metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f]
    except FileNotFoundError:
        return None
    return sum(r["train_seconds"] + r["valid_seconds"] for r in rows) / 60


def sweeps_table():
    """Every run of docs/records/uci/sweeps.jsonl (scripts/uci/sweeps.sh), by set and config,
    best validation NLL first."""
    try:
        with open(path("docs/records/uci/sweeps.jsonl")) as f:
            runs = [json.loads(line) for line in f]
    except FileNotFoundError:
        return ""
    lines = ["| config | overrides | valid NLL | epochs (best / run) | training time |", "|---|---|---|---|---|"]
    for config in sorted({r["config"] for r in runs}):
        mine = sorted((r for r in runs if r["config"] == config), key=lambda r: r["valid_nll"])
        for i, r in enumerate(mine):
            overrides = ", ".join(f"{k.split('.')[-1]} = {v}" for k, v in r["overrides"].items())
            nll = f"**{r['valid_nll']:.2f}**" if i == 0 else f"{r['valid_nll']:.2f}"
            lines.append(f"| {os.path.basename(config)} | {overrides} | {nll} | {r['best_epoch']} / {r['epochs_run']} "
                         f"| {r['train_seconds']:.0f} s |")
    return "\n".join(lines) + "\n"


def mix_details(set_name, label, used, valid, test):
    """The details row of a set's mixture: what it mixes (docs/records/uci/SET-mix-fit.json,
    SET-mix-copies.jsonl) and the training time of every model it needed."""
    fit = load(f"docs/records/uci/{set_name}-mix-fit.json")
    try:
        with open(path(f"docs/records/uci/{set_name}-mix-copies.jsonl")) as f:
            copies = [json.loads(line) for line in f]
    except FileNotFoundError:
        copies = []
    kept = sum(c["weight"] is not None for c in fit["components"])
    made_of = f"`nade mix` of the {len(SHIPPED)} rows above"
    if copies:
        model = copies[0]["run"].rsplit("-seed", 1)[0].split(f"{set_name}-", 1)[1]
        made_of += f" and {len(copies)} copies of {model} (`--model-seed` 1..{len(copies)})"
    made_of += f"; {kept} kept ([scripts/uci/reproduce.sh](scripts/uci/reproduce.sh))"
    seconds = sum(c["seconds"] for c in copies) + fit["seconds"]
    m = sum(minutes(f"{set_name}-{k}") or 0 for k in SHIPPED) + seconds / 60
    return (f"| {set_name} | {label} | {made_of} | {used:,} | {valid['nll_nats']:.2f} "
            f"| {test['nll_nats']:.2f} ± {test['nll_std_err']:.2f} | - | {m:.1f} min (all its models) |")


def replace_between(rel, begin, end, text):
    with open(path(rel)) as f:
        doc = f.read()
    start, stop = doc.index(begin) + len(begin), doc.index(end)
    tmp = path(rel + ".tmp")
    with open(tmp, "w") as f:
        f.write(doc[:start] + "\n" + text + doc[stop:])
    os.replace(tmp, path(rel))


def main():
    lines = []
    header = "| model | " + " | ".join(label for _, label in SETS) + " |"
    lines.append(header)
    lines.append("|---" * (len(SETS) + 1) + "|")
    for label, values in PUBLISHED:
        lines.append(f"| {label} (published) | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    best_published = [min(v[i] for _, v in PUBLISHED) for i in range(len(SETS))]
    lines.append("| best published | " + " | ".join(f"**{v:.2f}**" for v in best_published) + " |")
    details = []
    for key, label in OURS:
        cells = []
        for set_name, _ in SETS:
            test = load(f"docs/records/uci/{set_name}-{key}-test.json")
            if test is None:
                cells.append("not trained")
                continue
            cells.append(f"{test['nll_nats']:.2f} ± {test['nll_std_err']:.2f}")
            if key.endswith("-ensemble"):
                continue
            valid = load(f"docs/records/uci/{set_name}-{key}-valid.json")
            summary = load(f"docs/records/uci/{set_name}-{key}-summary.json")
            ckpt = path(f"checkpoints/uci/{set_name}-{key}.safetensors")
            used = info(ckpt)["parameters_used"] if os.path.exists(ckpt) else None
            if key == "mix":
                details.append(mix_details(set_name, label, used, valid, test))
                continue
            m = minutes(f"{set_name}-{key}")
            details.append(
                f"| {set_name} | {label} | [configs/uci/{set_name}-{key}.toml](configs/uci/{set_name}-{key}.toml) "
                f"| {used:,} | {valid['nll_nats']:.2f} | {test['nll_nats']:.2f} ± {test['nll_std_err']:.2f} "
                f"| {summary['best_epoch']} / {summary['epochs_run']} | {m:.1f} min |"
            )
        lines.append(f"| **ours**: {label} | " + " | ".join(cells) + " |")
    lines.append("")
    # Who wins each set: our best row against the best published number, by our standard error.
    verdicts = []
    for i, (set_name, set_label) in enumerate(SETS):
        ours = [(load(f"docs/records/uci/{set_name}-{key}-test.json"), label) for key, label in OURS]
        ours = [(t, label) for t, label in ours if t is not None]
        if not ours:
            continue
        test, label = min(ours, key=lambda o: o[0]["nll_nats"])
        gap = best_published[i] - test["nll_nats"]
        verdict = ("beats it by more than one standard error" if gap > test["nll_std_err"]
                   else "matches it within one standard error" if abs(gap) <= test["nll_std_err"]
                   else "does not reach it")
        verdicts.append(f"{set_label.split(' (')[0]}: ours {test['nll_nats']:.2f} ± {test['nll_std_err']:.2f} "
                        f"({label}) against {best_published[i]:.2f}, {verdict}")
    lines.append("Per set, our best against the best published: " + "; ".join(verdicts) + ".")
    lines.append("")
    lines.append("| set | model | config | parameters (used) | valid NLL | test NLL | epochs (best / run) | training time |")
    lines.append("|---|---|---|---|---|---|---|---|")
    lines.extend(details)
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if "--write" in sys.argv[1:]:
        tmp = path("docs/records/uci/results.md.tmp")
        with open(tmp, "w") as f:
            f.write(text.replace("](configs/", "](../../../configs/").replace("](scripts/", "](../../../scripts/"))
        os.replace(tmp, path("docs/records/uci/results.md"))
        replace_between("README.md", BEGIN, END, text)
        replace_between("docs/experiments.md", SWEEPS_BEGIN, SWEEPS_END,
                        sweeps_table())


if __name__ == "__main__":
    main()
