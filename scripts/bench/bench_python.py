#!/usr/bin/env python3
"""The Python package's cost over the engine (issue 34): `Model.log_prob` of the 10,000
binarized MNIST test images against `nade eval` of the same checkpoint (NADE-500), and the
time of one call at batch 1 against `nade bench --batch 1 --phase eval` (the engine's own
time per image, in process).

Run from the repository root in a Python with the package installed (`pip install
./python`) after `cargo build --release`; 2 threads on both sides. Prints a Markdown table and
writes the raw numbers as one JSON object to --out (docs/records/python-bench.json);
--readme rewrites the README's sentence between its python-bench markers from them.

    python scripts/bench/bench_python.py [--rounds 10] [--out docs/records/python-bench.json] [--readme]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

import nade
from nade import _binary_rows  # the conversion alone, to split the batch-1 time

CHECKPOINT = "checkpoints/nade.safetensors"
NADE = "target/release/nade"
THREADS = 2


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def nade_eval() -> dict:
    done = subprocess.run(
        [NADE, "eval", CHECKPOINT, "--json", "--threads", str(THREADS)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(done.stdout)


def per_call(f, seconds: float) -> float:
    """Seconds per call of f, over at least `seconds` after a warm-up."""
    for _ in range(20):
        f()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(50):
            f()
        calls += 50
    return (time.perf_counter() - start) / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=5.0, help="per batch-1 measurement")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--readme", action="store_true", help="rewrite the README's sentence")
    args = ap.parse_args()
    data = Path(os.environ.get("NADE_DATA_DIR") or "data/binarized_mnist")
    x = nade.read_amat(data / "binarized_mnist_test.amat")
    model = nade.load(CHECKPOINT, threads=THREADS)
    model.log_prob(x[:100])  # warm-up: first touches of the weights and pools

    # The whole test set: the same evaluator and batches as nade eval, whose JSON `seconds`
    # times its evaluation loop (data already read, checkpoint loaded). Interleaved rounds.
    ours, theirs, nll = [], [], None
    for _ in range(args.rounds):
        start = time.perf_counter()
        log_p = model.log_prob(x)
        ours.append(time.perf_counter() - start)
        record = nade_eval()
        theirs.append(record["seconds"])
        if abs(-log_p.mean() - record["nll_nats"]) > 1e-9:
            sys.exit(f"log_prob's NLL {-log_p.mean()} differs from nade eval's {record['nll_nats']}")
        nll = record["nll_nats"]

    # Batch 1: the whole call, the numpy conversion alone, and the engine's own time per
    # image from nade bench.
    one = x[0]
    call = per_call(lambda: model.log_prob(one), args.seconds)
    convert = per_call(lambda: _binary_rows(one, 784, "x"), args.seconds)
    bench = json.loads(subprocess.run(
        [NADE, "bench", "--model", "nade", "--batch", "1", "--phase", "eval", "--json",
         "--threads", str(THREADS), "--seconds", str(args.seconds)],
        check=True, capture_output=True, text=True,
    ).stdout.splitlines()[0])
    engine = 1.0 / bench["images_per_s"]

    result = {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_name(),
        "threads": THREADS,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "nade": nade.__version__,
        "checkpoint": CHECKPOINT,
        "test_images": len(x),
        "nll_nats": nll,
        "log_prob_seconds": ours,
        "nade_eval_seconds": theirs,
        "ratio_best": min(ours) / min(theirs),
        "batch1_call_us": call * 1e6,
        "batch1_conversion_us": convert * 1e6,
        "batch1_engine_us": engine * 1e6,
        "batch1_overhead_us": (call - engine) * 1e6,
    }
    print(f"{result['date']}, {result['cpu']}, {THREADS} threads, Python {result['python']}, "
          f"numpy {result['numpy']}; NADE-500 ({CHECKPOINT}), best of {args.rounds}\n")
    print("| measure | Model.log_prob | nade | ratio |\n|---|---|---|---|")
    print(f"| 10,000 test images | {min(ours):.3f} s | {min(theirs):.3f} s (`nade eval`) "
          f"| {result['ratio_best']:.3f} |")
    print(f"| one image (batch 1) | {call * 1e6:.0f} us | {engine * 1e6:.0f} us (`nade bench "
          f"--batch 1`) | {call / engine:.3f} |")
    print(f"\nper call at batch 1: {result['batch1_overhead_us']:.0f} us over the engine, of "
          f"which {convert * 1e6:.0f} us the numpy checks and conversion")
    if args.out:
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        tmp.replace(args.out)
    if args.readme:
        write_readme(result, args.out)


def write_readme(r: dict, record: Optional[Path]) -> None:
    """The README's Python section's speed sentence, between its markers."""
    begin, end = "<!-- python-bench: scripts/bench/bench_python.py -->", "<!-- /python-bench -->"
    source = f"[{record}]({record})" if record else "scripts/bench/bench_python.py"
    sentence = (
        f"Measured {r['date']} on {r['cpu']}, {r['threads']} threads (best of "
        f"{len(r['log_prob_seconds'])}, {source}): `Model.log_prob` of the {r['test_images']:,} "
        f"test images takes {min(r['log_prob_seconds']):.3f} s against "
        f"{min(r['nade_eval_seconds']):.3f} s for `nade eval` ({r['ratio_best']:.2f}x, the "
        f"numpy checks and the one conversion included); one image per call "
        f"{r['batch1_call_us']:.0f} us, {r['batch1_overhead_us']:.0f} us over the engine's own "
        f"{r['batch1_engine_us']:.0f} us."
    )
    path = Path("README.md")
    text = path.read_text()
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(f"{head}{begin}\n{sentence}\n{end}{tail}")
    tmp.replace(path)


if __name__ == "__main__":
    main()
