#!/usr/bin/env python3
"""Chooses a deep NADE checkpoint's single ordering on the validation set: evaluates every
stored ordering alone (one `nade eval --curve` pass over the split), and writes a copy of the
checkpoint whose `order` row 0 is the ordering with the lowest NLL (swapped with the old row 0).

Row 0 is the ordering that `nade eval --orders 1`, validation and the first-ordering figures of
`--keep` use, so the copy is the best single-ordering model the stored orderings offer, selected
without touching the test set. The ensemble (all K rows) is unchanged: a mixture does not depend
on the order of its components. The copy keeps the metadata and sets `valid_nll` to the chosen
ordering's NLL (when the split is valid) and `ordering_choice` to what was chosen and how.

  NADE_DATA_DIR=... python3 scripts/reproduce/choose_ordering.py runs/deepnade/best.safetensors \\
      --out checkpoints/deepnade.safetensors \\
      --record docs/records/deepnade-valid-each-ordering.json
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, help="the copy with the chosen ordering in row 0 (may be the input)")
    p.add_argument("--record", help="JSON: every ordering's NLL and the choice")
    p.add_argument("--split", default="valid", choices=["train", "valid"],
                   help="never the test set: this is model selection")
    p.add_argument("--limit", type=int, default=0, help="first N images only (0 = the whole split)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--data", help="data folder (default: as nade finds it)")
    p.add_argument("--nade", default=os.path.join(ROOT, "target/release/nade"))
    args = p.parse_args()

    with safe_open(args.checkpoint, "np") as f:
        metadata = f.metadata() or {}
    if metadata.get("model") != "deepnade":
        sys.exit(f"{args.checkpoint}: `model` is {metadata.get('model')!r}, not deepnade")
    tensors = load_file(args.checkpoint)
    order = tensors["order"]
    k = order.shape[0]

    cmd = [args.nade, "eval", args.checkpoint, "--split", args.split, "--orders", str(k), "--curve", "--json"]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.data:
        cmd += ["--data", args.data]
    # stderr passes through: the evaluation's progress lines.
    whole = json.loads(subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout)
    each = whole["each_component"]["nll_nats"]
    if len(each) != k:
        sys.exit(f"{args.checkpoint}: nade eval reported {len(each)} orderings, the file holds {k}")
    best = int(np.argmin(each))
    print(f"{args.split} NLL of the {k} orderings alone: row 0 {each[0]:.4f}, best row {best} "
          f"{each[best]:.4f}, mean {np.mean(each):.4f}, worst {max(each):.4f} "
          f"({whole['count']} images)", flush=True)

    swapped = order.copy()
    swapped[[0, best]] = order[[best, 0]]
    choice = (f"row 0 is stored ordering {best} of {k}, the lowest {args.split} NLL of the {k} alone "
              f"({each[best]:.4f} nats over {whole['count']} images; the old row 0: {each[0]:.4f}); "
              f"scripts/reproduce/choose_ordering.py swapped the two rows")
    out_metadata = {**metadata, "ordering_choice": choice}
    if args.split == "valid" and not args.limit:
        out_metadata["valid_nll"] = repr(float(each[best]))
    tmp = args.out + ".tmp"
    save_file({**tensors, "order": swapped}, tmp, metadata=out_metadata)
    os.replace(tmp, args.out)

    if args.record:
        record = {"checkpoint": args.checkpoint, "split": args.split, "count": whole["count"],
                  "limit": args.limit, "orders": k, "nll_nats_each": each, "chosen_row": best,
                  "chosen_nll_nats": each[best], "row0_nll_nats": each[0],
                  "mean_nll_nats": float(np.mean(each)), "seconds": whole["seconds"],
                  "threads": whole["threads"], "device": whole["device"]}
        tmp = args.record + ".tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(record, indent=1) + "\n")
        os.replace(tmp, args.record)


if __name__ == "__main__":
    main()
