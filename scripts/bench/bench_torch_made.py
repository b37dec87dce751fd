#!/usr/bin/env python3
"""MADE in PyTorch, the way its users write it, to compare with `nade bench --model made`.

MADE (Germain et al. 2015), one mask k: h_1 = relu(b1 + (W1 * M1) x), h_l = relu(b_l + (W_l *
M_l) h_{l-1}), logits = c + (V * MV) h_L, log p_k(x) = sum_i x_i l_i - softplus(l_i); the K-mask
ensemble is the exact mixture log p(x) = logsumexp_k log p_k(x) - log K. Masks follow the paper
(and nade's src/models/made.rs): input degrees m0(d) = 1 + position of d in the order (natural
order here), the degrees of layer l drawn uniformly from [min of layer l-1's, n-1] (layer 1:
[1, n-1]), M_l[u, u'] = deg_l[u] >= deg_{l-1}[u'], MV[d, u] = m0(d) > deg_L[u]. In training the
masks multiply the weights in every forward pass (a "MaskedLinear"), as karpathy/pytorch-made
does; an evaluation makes each mask's W * M once and reuses it for every batch (the weights do
not change), as `nade eval` and `nade bench`'s eval do.
Weights initialised like nade's (U(+-1/sqrt(fan_in))), biases 0; data: random binary images with
about 13% ones (MNIST's rate).

Formulations: eager (plain PyTorch) and compiled (the same functions under torch.compile).
Phases, as `nade bench`: eval = log p of a batch under the K-mask mixture (no grad), train =
forward with one mask (the next of the K each step) + mean NLL backward + Adam step, sample = B
images pixel by pixel, each image with a mask drawn uniformly from the K (one masked forward
pass per pixel and mask group), eager only.

Prints one JSON line per (formulation, phase, batch, K): images/s over --seconds after warm-up and
the peak memory (CUDA: max_memory_allocated; CPU: the process's peak RSS in MB, as nade bench).

  python3 scripts/bench/bench_torch_made.py --device cpu --threads 2 --batches 100 --masks 1,32
"""

import argparse
import json
import math
import resource
import sys
import time


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", default="100", help="comma-separated batch sizes (default 100)")
    p.add_argument("--masks", default="1,32", help="comma-separated K, masks of the ensemble (default 1,32)")
    p.add_argument("--seconds", type=float, default=5.0, help="timed seconds per measurement (default 5)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs before timing (default 3)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch's default)")
    p.add_argument("--formulations", default="eager,compiled", help="subset of eager,compiled")
    p.add_argument("--phases", default="eval,train,sample", help="subset of eval,train,sample")
    p.add_argument("--n", type=int, default=784, help="pixels (default 784)")
    p.add_argument("--hidden", default="500", help="hidden layer sizes, comma-separated (default 500)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import torch
    import torch.nn.functional as F

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    gen = torch.Generator().manual_seed(args.seed)
    n = args.n
    hidden = [int(u) for u in args.hidden.split(",") if u]
    batches = [int(b) for b in args.batches.split(",") if b]
    mask_counts = [int(k) for k in args.masks.split(",") if k]
    phases = [p for p in args.phases.split(",") if p]
    formulations = [f for f in args.formulations.split(",") if f]
    for f in formulations:
        if f not in ("eager", "compiled"):
            sys.exit(f"unknown formulation {f!r}")

    def new_params():
        # [W1, b1, ..., WL, bL, V, c]
        out, below = [], n
        for h in hidden:
            out += [(torch.rand(h, below, generator=gen) * 2 - 1) / math.sqrt(below), torch.zeros(h)]
            below = h
        out += [(torch.rand(n, below, generator=gen) * 2 - 1) / math.sqrt(below), torch.zeros(n)]
        return [t.to(device).requires_grad_() for t in out]

    def new_masks(k):
        """K masks, each [M1, ..., ML, MV] matching the weights of new_params."""
        m0 = torch.arange(1, n + 1)  # natural order: m0(d) = d + 1
        out = []
        for _ in range(k):
            masks, below = [], m0
            for li, h in enumerate(hidden):
                low = 1 if li == 0 else int(below.min())
                deg = torch.randint(low, n, (h,), generator=gen)  # uniform in [low, n-1]
                masks.append((deg[:, None] >= below[None, :]).float().to(device))
                below = deg
            masks.append((m0[:, None] > below[None, :]).float().to(device))
            out.append(masks)
        return out

    def weights(params):
        return params[0::2]

    def biases(params):
        return params[1::2]

    def log_prob_masked(params, masked, x):
        """log p_k(x) with masked = [W1 * M1, ..., V * MV]."""
        hid = x
        for w, b in zip(masked[:-1], biases(params)[:-1]):
            hid = torch.relu(F.linear(hid, w, b))
        logits = F.linear(hid, masked[-1], biases(params)[-1])
        return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)

    def log_prob_one(params, mask, x):
        return log_prob_masked(params, [w * m for w, m in zip(weights(params), mask)], x)

    def log_prob_mixture(params, masked_weights, x):
        per_mask = torch.stack([log_prob_masked(params, m, x) for m in masked_weights], 0)
        return torch.logsumexp(per_mask, 0) - math.log(len(masked_weights))

    def sample(params, masks, batch):
        choice = torch.randint(0, len(masks), (batch,), generator=gen).to(device)
        x = torch.zeros(batch, n, device=device)
        bs = biases(params)
        for k, mask in enumerate(masks):
            rows = (choice == k).nonzero().flatten()
            if len(rows) == 0:
                continue
            xk = torch.zeros(len(rows), n, device=device)
            masked = [w * m for w, m in zip(weights(params), mask)]
            for i in range(n):
                hid = xk
                for w, b in zip(masked[:-1], bs[:-1]):
                    hid = torch.relu(F.linear(hid, w, b))
                p = torch.sigmoid(hid @ masked[-1][i] + bs[-1][i])
                xk[:, i] = (torch.rand(len(rows), device=device) < p).float()
            x[rows] = xk
        return x

    def sync():
        if on_cuda:
            torch.cuda.synchronize(device)

    def measure(fn):
        for _ in range(args.warmup):
            fn()
        sync()
        if on_cuda:
            torch.cuda.reset_peak_memory_stats(device)
        iters, start = 0, time.perf_counter()
        while True:
            fn()
            iters += 1
            sync()
            elapsed = time.perf_counter() - start
            if elapsed >= args.seconds:
                break
        if on_cuda:
            peak = {"peak_memory_bytes": torch.cuda.max_memory_allocated(device)}
        else:
            peak = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        return iters, elapsed, peak

    def report(formulation, phase, batch, k, fn):
        record = {
            "formulation": formulation,
            "phase": phase,
            "batch": batch,
            "masks": k,
            "n": n,
            "hidden": hidden,
            "device": torch.cuda.get_device_name(device) if on_cuda else str(device),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        }
        try:
            iters, elapsed, peak = measure(fn)
            record.update(images_per_s=batch * iters / elapsed, iterations=iters, seconds=elapsed, **peak)
        except Exception as e:  # e.g. torch.compile without a working compiler
            record["error"] = f"{type(e).__name__}: {e}"[:500]
        print(json.dumps(record), flush=True)

    for formulation in formulations:
        one = torch.compile(log_prob_one) if formulation == "compiled" else log_prob_one
        mixture = torch.compile(log_prob_mixture) if formulation == "compiled" else log_prob_mixture
        for batch in batches:
            x = (torch.rand(batch, n, generator=gen) < 0.13).float().to(device)
            for k in mask_counts:
                params = new_params()
                masks = new_masks(k)
                opt = torch.optim.Adam(params, lr=args.lr)
                step = [0]

                with torch.no_grad():
                    masked_weights = [[w * m for w, m in zip(weights(params), mask)] for mask in masks]

                def evaluate():
                    with torch.no_grad():
                        return mixture(params, masked_weights, x)

                def train_step():
                    mask = masks[step[0] % len(masks)]
                    step[0] += 1
                    opt.zero_grad(set_to_none=True)
                    loss = -one(params, mask, x).mean()
                    loss.backward()
                    opt.step()

                def draw():
                    with torch.no_grad():
                        return sample(params, masks, batch)

                if "eval" in phases:
                    report(formulation, "eval", batch, k, evaluate)
                if "train" in phases:
                    report(formulation, "train", batch, k, train_step)
                if "sample" in phases and formulation == "eager":
                    report(formulation, "sample", batch, k, draw)


if __name__ == "__main__":
    main()
