#!/usr/bin/env python3
"""Independent float64 check of `nade eval`.

Writes randomly initialised FVSBN, MLP and NADE checkpoints with numpy + safetensors (only the
three metadata keys `model`, `n`, `hidden`, as another tool would), computes the exact average
test NLL of each in float64 straight from the formulas (NADE by its O(nd) recurrence, a path
the Rust code does not use for density), runs `nade eval --json` on the same files and fails
if any pair differs by more than 1e-4 relative.

    pip install numpy safetensors
    cargo build --release
    python3 scripts/reference_nll.py [--data DIR]

The data folder is found as `nade` finds it: --data, else $NADE_DATA_DIR, else
data/binarized_mnist.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import save_file


def read_amat(path):
    with open(path, "rb") as f:
        raw = np.frombuffer(f.read(), dtype=np.uint8)
    digits = raw[(raw == ord("0")) | (raw == ord("1"))] - ord("0")
    rows = sum(1 for line in open(path, "rb") if line.strip())
    return digits.reshape(rows, -1).astype(np.float64)


def log_sigmoid_terms(x, logits):
    # x * l - softplus(l), softplus via logaddexp: exact in float64.
    return x * logits - np.logaddexp(0.0, logits)


def sigmoid(a):
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def nll_fvsbn(p, x):
    w = np.tril(p["W"].astype(np.float64), -1)
    logits = x @ w.T + p["b"]
    return -log_sigmoid_terms(x, logits).sum(1)


def nll_mlp(p, x):
    a, c, alpha, b = (p[k].astype(np.float64) for k in ("A", "c", "alpha", "b"))
    total = np.zeros(x.shape[0])
    for i in range(x.shape[1]):
        h = sigmoid(x[:, :i] @ a[i, :, :i].T + c[i])
        total += log_sigmoid_terms(x[:, i], h @ alpha[i] + b[i])
    return -total


def nll_nade(p, x):
    w, c, v, b = (p[k].astype(np.float64) for k in ("W", "c", "V", "b"))
    a = np.tile(c, (x.shape[0], 1))
    total = np.zeros(x.shape[0])
    for i in range(x.shape[1]):
        total += log_sigmoid_terms(x[:, i], sigmoid(a) @ v[i] + b[i])
        a += np.outer(x[:, i], w[:, i])
    return -total


def random_checkpoint(kind, n, hidden, rng):
    u = lambda scale, *shape: rng.uniform(-scale, scale, size=shape).astype(np.float32)
    if kind == "fvsbn":
        return {"W": u(0.3, n, n), "b": u(1.0, n)}
    if kind == "mlp":
        return {"A": u(0.3, n, hidden, n), "c": u(1.0, n, hidden), "alpha": u(1.0, n, hidden), "b": u(1.0, n)}
    return {"W": u(0.3, hidden, n), "c": u(1.0, hidden), "V": u(0.3, n, hidden), "b": u(1.0, n)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # An empty NADE_DATA_DIR counts as unset, as in nade.
    ap.add_argument("--data", default=os.environ.get("NADE_DATA_DIR") or "data/binarized_mnist")
    ap.add_argument("--split", default="test")
    ap.add_argument("--nade", default="target/release/nade", help="the nade binary")
    ap.add_argument("--models", default="fvsbn,mlp:8,nade:500", help="kind[:hidden],...")
    ap.add_argument("--paths", default="auto,blocked,plain", help="NADE paths to check")
    ap.add_argument("--limit", type=int, default=None, help="first N images only")
    ap.add_argument("--seed", type=int, default=2011)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    args = ap.parse_args()

    x = read_amat(os.path.join(args.data, f"binarized_mnist_{args.split}.amat"))
    if args.limit:
        x = x[: args.limit]
    n = x.shape[1]
    rng = np.random.default_rng(args.seed)
    failures = checks = 0
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.models.split(","):
            kind, _, hidden = spec.partition(":")
            hidden = int(hidden or 0)
            params = random_checkpoint(kind, n, hidden, rng)
            path = os.path.join(tmp, f"{kind}.safetensors")
            meta = {"model": kind, "n": str(n)}
            if kind != "fvsbn":
                meta["hidden"] = str(hidden)
            save_file(params, path, metadata=meta)
            want = {"fvsbn": nll_fvsbn, "mlp": nll_mlp, "nade": nll_nade}[kind](params, x).mean()
            for path_name in args.paths.split(",") if kind == "nade" else ["-"]:
                cmd = [args.nade, "eval", path, "--data", args.data, "--split", args.split, "--json", "--device", "cpu"]
                if args.limit:
                    cmd += ["--limit", str(args.limit)]
                if kind == "nade":
                    cmd += ["--path", path_name]
                got = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                rel = abs(got["nll_nats"] - want) / abs(want)
                ok = rel <= args.tolerance and got["count"] == x.shape[0]
                failures += not ok
                checks += 1
                print(
                    f"{'ok  ' if ok else 'FAIL'} {kind:5} hidden={hidden:<4} path={path_name:8} count={got['count']} "
                    f"float64 {want:.6f}  nade {got['nll_nats']:.6f}  rel {rel:.2e}  ({got['images_per_s']:.0f} images/s)"
                )
    print(f"{checks - failures} passed, {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
