#!/usr/bin/env python3
"""Test NLL of a deep NADE ensemble against its number of orderings (1, 2, 4, ..., K), from one
`nade eval CKPT --curve --json` (the mixtures of the first k orderings all come out of the one
pass that evaluates the K-ordering ensemble, which costs K orderings' worth: see
docs/performance.md for the times), written as JSON lines (one per k) and as an SVG plot (no plotting library needed),
and, with --each, the NLL of every stored ordering alone as one JSON object (their mean over
orderings, with its standard error over orderings, is the "one ordering" figure of Uria et al.,
who report the mean of 10 single orderings).

  python3 scripts/reproduce/orderings_curve.py checkpoints/deepnade.safetensors \\
      --jsonl docs/records/deepnade-orderings.jsonl --svg docs/images/deepnade-orderings.svg \\
      [--each docs/records/deepnade-each-ordering.json] [--split test] \\
      [--limit N] [--max-orders K] [--threads T]
"""
import argparse
import json
import math
import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--jsonl", required=True, help="one `nade eval --json` object per number of orderings")
    p.add_argument("--svg", required=True, help="the plot")
    p.add_argument("--each", help="the NLL of each ordering alone, one JSON object")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=0, help="first N images only (0 = the whole split)")
    p.add_argument("--max-orders", type=int, default=0, help="largest k (default: all stored orderings)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--data", help="data folder (default: as nade finds it)")
    p.add_argument("--dataset", default="binarized_mnist")
    p.add_argument("--nade", default=os.path.join(ROOT, "target/release/nade"))
    return p.parse_args(argv)


def stored_orders(nade, checkpoint):
    info = json.loads(subprocess.run([nade, "info", checkpoint, "--json"], check=True,
                                     capture_output=True, text=True).stdout)
    if info["model"] != "deepnade":
        sys.exit(f"{checkpoint}: a {info['model']} model, not deepnade")
    return info["config"]["orders"]


def svg(points, split, count):
    """A line plot of (k, nll, std_err) with a log2 x axis."""
    w, h, left, right, top, bottom = 640, 400, 70, 20, 30, 50
    xs = [math.log2(k) for k, _, _ in points]
    lo = min(nll - se for _, nll, se in points)
    hi = max(nll + se for _, nll, se in points)
    pad = max((hi - lo) * 0.1, 0.05)
    lo, hi = lo - pad, hi + pad
    x_max = max(xs) if max(xs) > 0 else 1.0

    def px(x):
        return left + (w - left - right) * x / x_max

    def py(y):
        return top + (h - top - bottom) * (hi - y) / (hi - lo)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="18" text-anchor="middle" font-size="14">deep NADE: {split} NLL ({count:,} images) against orderings</text>',
           f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="black"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="black"/>',
           f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle">orderings in the ensemble</text>',
           f'<text x="16" y="{h / 2}" text-anchor="middle" transform="rotate(-90 16 {h / 2})">NLL (nats per image)</text>']
    for k, _, _ in points:
        x = px(math.log2(k))
        out.append(f'<line x1="{x}" y1="{h - bottom}" x2="{x}" y2="{h - bottom + 5}" stroke="black"/>')
        out.append(f'<text x="{x}" y="{h - bottom + 18}" text-anchor="middle">{k}</text>')
    for i in range(5):
        y = lo + (hi - lo) * i / 4
        out.append(f'<line x1="{left - 5}" y1="{py(y)}" x2="{w - right}" y2="{py(y)}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 8}" y="{py(y) + 4}" text-anchor="end">{y:.2f}</text>')
    line = " ".join(f"{px(math.log2(k))},{py(nll)}" for k, nll, _ in points)
    out.append(f'<polyline points="{line}" fill="none" stroke="#c00" stroke-width="2"/>')
    for k, nll, se in points:
        x = px(math.log2(k))
        out.append(f'<line x1="{x}" y1="{py(nll - se)}" x2="{x}" y2="{py(nll + se)}" stroke="#c00"/>')
        out.append(f'<circle cx="{x}" cy="{py(nll)}" r="3" fill="#c00"/>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    k_max = args.max_orders or stored_orders(args.nade, args.checkpoint)
    cmd = [args.nade, "eval", args.checkpoint, "--split", args.split, "--orders", str(k_max),
           "--curve", "--json", "--dataset", args.dataset]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.data:
        cmd += ["--data", args.data]
    # stderr passes through: the evaluation's progress lines.
    whole = json.loads(subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout)
    lines = []
    for p in whole["curve"]:
        r = {"orders": p["components"], "nll_nats": p["nll_nats"], "nll_std_err": p["nll_std_err"],
             "bits_per_dim": p["bits_per_dim"], "split": args.split, "count": whole["count"],
             "limit": args.limit, "device": whole["device"], "threads": whole["threads"],
             "seconds_of_the_whole_curve": whole["seconds"]}
        lines.append(json.dumps(r) + "\n")
        print(f"{r['orders']:4d} orderings: {r['nll_nats']:.4f} ± {r['nll_std_err']:.4f} nats", flush=True)
    # The README's table of the curve.
    print("| orderings | " + " | ".join(str(p["components"]) for p in whole["curve"]) + " |")
    print("|---|" + "---|" * len(whole["curve"]))
    print(f"| {args.split} NLL | " + " | ".join(f"{p['nll_nats']:.2f}" for p in whole["curve"]) + " |")
    each = whole["each_component"]
    print(f"each of the {each['components']} orderings alone: mean {each['mean_nll_nats']:.4f} "
          f"± {each['mean_std_err']:.4f} nats (over orderings), from {min(each['nll_nats']):.4f} "
          f"to {max(each['nll_nats']):.4f}", flush=True)
    outputs = [(args.jsonl, "".join(lines)),
               (args.svg, svg([(p["components"], p["nll_nats"], p["nll_std_err"]) for p in whole["curve"]],
                              args.split, whole["count"]))]
    if args.each:
        record = {"orders": each["components"], "nll_nats_each": each["nll_nats"],
                  "mean_nll_nats": each["mean_nll_nats"], "mean_std_err_over_orders": each["mean_std_err"],
                  "min_nll_nats": min(each["nll_nats"]), "max_nll_nats": max(each["nll_nats"]),
                  "split": args.split, "count": whole["count"], "limit": args.limit,
                  "device": whole["device"], "threads": whole["threads"]}
        outputs.append((args.each, json.dumps(record, indent=1) + "\n"))
    for path, text in outputs:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)


if __name__ == "__main__":
    main()
