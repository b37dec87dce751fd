#!/usr/bin/env python3
"""Exact NLL of a deep NADE checkpoint under structured orderings of the 28 x 28 pixels
(raster, reversed raster, column by column, centre outwards, outside inwards) beside its first
stored (random) ordering, on the validation set.

Each ordering is evaluated by `nade eval` on a copy of the checkpoint whose `order` tensor
holds that one ordering (the schema's K = 1, with only the `model`, `n` and `activation`
metadata), so the numbers are the program's own exact evaluation. Prints a markdown table; `--json` one JSON line per ordering instead.

  NADE_DATA_DIR=... python3 scripts/analysis/structured_orderings.py checkpoints/deepnade.safetensors
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

SIDE = 28


def orderings(first):
    n = SIDE * SIDE
    dims = np.arange(n)
    row, col = np.divmod(dims, SIDE)
    centre = (SIDE - 1) / 2
    dist = (row - centre) ** 2 + (col - centre) ** 2
    return {
        "first stored (random)": first,
        "raster": dims,
        "reversed raster": dims[::-1],
        "column by column": np.lexsort((row, col)),
        "centre outwards": np.argsort(dist, kind="stable"),
        "outside inwards": np.argsort(-dist, kind="stable"),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--nade", default="target/release/nade", help="the nade binary")
    p.add_argument("--split", default="valid")
    p.add_argument("--threads", default="0")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    tensors = load_file(args.checkpoint)
    with safe_open(args.checkpoint, "np") as f:
        metadata = f.metadata()
    if metadata.get("model") != "deepnade" or int(metadata["n"]) != SIDE * SIDE:
        sys.exit(f"{args.checkpoint}: not a deep NADE of 28 x 28 pixels")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, order in orderings(tensors["order"][0]).items():
            path = os.path.join(tmp, "one-ordering.safetensors")
            # The schema's minimal metadata: K and the layers follow from the tensors.
            minimal = {k: metadata[k] for k in ("model", "n", "activation")}
            save_file({**tensors, "order": order.reshape(1, -1).astype(np.int64)}, path, metadata=minimal)
            out = subprocess.run(
                [args.nade, "eval", path, "--split", args.split, "--threads", args.threads, "--json"],
                check=True, capture_output=True, text=True,
            ).stdout
            result = json.loads(out)
            rows.append({"ordering": name, "split": args.split, "nll_nats": result["nll_nats"],
                         "nll_std_err": result["nll_std_err"], "count": result["count"]})
            if args.json:
                print(json.dumps(rows[-1]), flush=True)
    if not args.json:
        print(f"| ordering | {args.split} NLL |")
        print("|---|---|")
        for r in rows:
            print(f"| {r['ordering']} | {r['nll_nats']:.2f} ± {r['nll_std_err']:.2f} |")


if __name__ == "__main__":
    main()
