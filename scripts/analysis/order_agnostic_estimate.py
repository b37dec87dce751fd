#!/usr/bin/env python3
"""The order-agnostic NLL estimate of a deep NADE checkpoint on the train and valid splits, in
float64 numpy straight from the checkpoint schema (docs/ARCHITECTURE.md, issue 15): per image, d
uniform in 0..n-1, a uniform random subset of d observed pixels, and n / (n - d) times the sum
over the unobserved pixels of -log p(x_i | x_obs), averaged over images and draws. It estimates
the NLL averaged over all orderings (the training objective, here with the final weights on
both splits), so train against valid is the generalization gap measured the same way on both,
and valid against `nade eval` (the first stored ordering) is how that ordering compares with
the average one.

    python3 scripts/analysis/order_agnostic_estimate.py checkpoints/deepnade.safetensors \\
        [--rows 5000] [--draws 20] [--seed 0] [--data DIR]
"""
import argparse
import json
import os

import numpy as np
from safetensors import safe_open


def read_amat(path, rows):
    with open(path) as f:
        lines = [next(f) for _ in range(rows)] if rows else f.readlines()
    return np.array([[float(v) for v in line.split()] for line in lines])


def load(checkpoint):
    with safe_open(checkpoint, "np") as f:
        meta = f.metadata()
        if meta.get("model") != "deepnade":
            raise SystemExit(f"{checkpoint}: metadata model = {meta.get('model')!r}, not deepnade")
        act = meta.get("activation", "relu")
        tensors = {k: f.get_tensor(k).astype(np.float64) for k in f.keys() if k != "order"}
    layers = []
    l = 1
    while f"W{l}" in tensors:
        layers.append((tensors[f"W{l}"], tensors[f"b{l}"]))
        l += 1
    g = {"relu": lambda a: np.maximum(a, 0.0), "sigmoid": lambda a: 1 / (1 + np.exp(-a)), "tanh": np.tanh}[act]
    return layers, tensors["V"], tensors["c"], g


def estimate(x, model, draws, rng):
    layers, V, c, g = model
    rows, n = x.shape
    values = []
    for _ in range(draws):
        d = rng.integers(0, n, size=rows)
        # Ranks of uniform keys: the d smallest form a uniform random subset of size d.
        ranks = np.argsort(np.argsort(rng.random((rows, n)), axis=1), axis=1)
        m = (ranks < d[:, None]).astype(np.float64)
        h = np.concatenate([x * m, m], axis=1)
        for W, b in layers:
            h = g(h @ W.T + b)
        logits = h @ V.T + c
        log_p = x * logits - np.logaddexp(0.0, logits)
        values.append(-(n / (n - d)) * ((1 - m) * log_p).sum(axis=1))
    v = np.concatenate(values)
    return v.mean(), v.std(ddof=1) / np.sqrt(len(v))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--rows", type=int, default=5000, help="first N images of each split (0 = all)")
    p.add_argument("--draws", type=int, default=20, help="random subsets per image")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=os.environ.get("NADE_DATA_DIR", "data/binarized_mnist"))
    args = p.parse_args()
    model = load(args.checkpoint)
    rng = np.random.default_rng(args.seed)
    out = {"checkpoint": args.checkpoint, "rows": args.rows, "draws": args.draws, "seed": args.seed}
    for split in ("train", "valid"):
        x = read_amat(os.path.join(args.data, f"binarized_mnist_{split}.amat"), args.rows)
        mean, se = estimate(x, model, args.draws, rng)
        out[split] = {"nll_nats": mean, "std_err": se}
        print(f"{split}: order-agnostic estimate {mean:.3f} ± {se:.3f} nats", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
