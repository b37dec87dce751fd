#!/usr/bin/env python3
"""How much a mixture of checkpoints gains on a validation split, and how much of that EM's
fit on the same rows flatters: the numbers behind the choice of each UCI mixture
(docs/experiments.md, "A mixture of our models").

For the given checkpoints (the Python package, `pip install ./python`, and numpy): each one's
validation NLL, the mixture's with EM weights fit on the whole split (what `nade mix` reports),
the mean over 10 random halvings of the split of the mixture's NLL on one half with weights fit
on the other (2-fold cross-validation), and with uniform weights. The test split is not read.

    python3 scripts/uci/mix_cv.py --data ../shared/data/uci_binary --dataset mushrooms \\
        checkpoints/uci/mushrooms-*.safetensors runs/uci/mushrooms-made-ens-seed*/best.safetensors
"""
import argparse
import os

import numpy as np

import nade


def log_sum_exp(a):
    top = a.max(0)
    return top + np.log(np.exp(a - top).sum(0))


def em_weights(log_p, iterations=2000):
    """EM for the weights of fixed components, log_p: (J, N) log-likelihoods."""
    w = np.full(len(log_p), 1.0 / len(log_p))
    for _ in range(iterations):
        joint = log_p + np.log(w)[:, None]
        w = np.exp(joint - log_sum_exp(joint)).mean(1)
    return w


def nll(log_p, w):
    return -log_sum_exp(log_p + np.log(w)[:, None]).mean()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--data", default=os.environ.get("NADE_DATA_DIR", "../shared/data/uci_binary"))
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--halvings", type=int, default=10)
    args = ap.parse_args()
    x = nade.read_amat(os.path.join(args.data, f"{args.dataset}_valid.amat"))
    log_p = np.stack([nade.load(path).log_prob(x) for path in args.checkpoints])
    # EM drives useless components' weights to exactly 0: log 0 = -inf is what it means.
    np.seterr(divide="ignore")
    for path, lp in zip(args.checkpoints, log_p):
        print(f"{-lp.mean():9.3f}  {path}")
    w = em_weights(log_p)
    rng = np.random.default_rng(0)
    held_out = []
    for _ in range(args.halvings):
        halves = np.array_split(rng.permutation(x.shape[0]), 2)
        total = 0.0
        for i in range(2):
            fit, score = halves[1 - i], halves[i]
            total += nll(log_p[:, score], em_weights(log_p[:, fit])) * len(score)
        held_out.append(total / x.shape[0])
    uniform = nll(log_p, np.full(len(log_p), 1.0 / len(log_p)))
    print(f"EM on the whole split {nll(log_p, w):.3f}, cross-validated {np.mean(held_out):.3f}, "
          f"uniform weights {uniform:.3f}")
    print("EM weights: " + ", ".join(f"{v:.3f}" for v in w))


if __name__ == "__main__":
    main()
