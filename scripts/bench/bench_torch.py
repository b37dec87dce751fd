#!/usr/bin/env python3
"""PyTorch baselines for NADE on MNIST-sized data, to compare with the fused CUDA kernels.

NADE: a_i = c + sum_{j<i} x_j W[:, j], h_i = sigmoid(a_i), l_i = V_i . h_i + b_i,
log p(x) = sum_i x_i l_i - softplus(l_i). Parameters W (d, n), c (d), V (n, d), b (n),
initialised like the Rust model (W ~ U(+-1/sqrt(n)), V ~ U(+-1/sqrt(d)), biases 0).
Data: random binary images with about 13% ones (MNIST's rate); n = 784, d = 500 by default.

Formulations:
  loop      a Python loop over the n pixels, O(B n d): eval, train step, incremental sampling;
  cumsum    the exclusive cumulative sum over a (B, n, d) tensor of x_j W[:, j]: eval, train;
  compiled  cumsum under torch.compile: eval, train.
Phases: eval = log p of a batch (no grad); train = forward + mean NLL backward + Adam step;
sample = B images drawn pixel by pixel (loop only).

Prints one JSON line per (formulation, phase, batch): images/s over --seconds after warm-up
(timed between torch.cuda.synchronize() calls) and the peak GPU memory
(torch.cuda.max_memory_allocated, reset before each measurement; null on the CPU, where
peak_rss_mb is the process's peak resident memory so far).

  python3 scripts/bench/bench_torch.py                          # GPU, batches 100 and 1000
  python3 scripts/bench/bench_torch.py --device cpu --n 20 --hidden 8 --batches 4 --seconds 0.1
"""

import argparse
import json
import math
import resource
import sys
import time


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", default="100,1000", help="comma-separated batch sizes (default 100,1000)")
    p.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement (default 3)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs before timing (default 3)")
    p.add_argument("--device", default="cuda", help="torch device (default cuda)")
    p.add_argument(
        "--formulations",
        default="loop,cumsum,compiled",
        help="comma-separated subset of loop,cumsum,compiled (default all)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch's default)")
    p.add_argument("--n", type=int, default=784, help="pixels (default 784)")
    p.add_argument("--hidden", type=int, default=500, help="hidden units d (default 500)")
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
    torch.manual_seed(args.seed)
    n, d = args.n, args.hidden
    batches = [int(b) for b in args.batches.split(",") if b]
    formulations = [f for f in args.formulations.split(",") if f]
    for f in formulations:
        if f not in ("loop", "cumsum", "compiled"):
            sys.exit(f"unknown formulation {f!r}")

    def new_params():
        w = (torch.rand(d, n, device=device) * 2 - 1) / math.sqrt(n)
        v = (torch.rand(n, d, device=device) * 2 - 1) / math.sqrt(d)
        c = torch.zeros(d, device=device)
        b = torch.zeros(n, device=device)
        return [t.requires_grad_() for t in (w, c, v, b)]

    def log_prob_from_logits(logits, x):
        # x l - softplus(l), summed over pixels.
        return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)

    def logits_loop(params, x):
        w, c, v, b = params
        a = c.expand(x.shape[0], d)
        out = []
        for i in range(n):
            h = torch.sigmoid(a)
            out.append(h @ v[i] + b[i])
            a = a + x[:, i : i + 1] * w[:, i]
        return torch.stack(out, 1)

    def logits_cumsum(params, x):
        w, c, v, b = params
        contrib = x.unsqueeze(2) * w.t().unsqueeze(0)  # (B, n, d): x_j W[:, j]
        inclusive = torch.cumsum(contrib, 1)
        exclusive = torch.cat([torch.zeros_like(inclusive[:, :1]), inclusive[:, :-1]], 1)
        h = torch.sigmoid(c + exclusive)
        return (h * v).sum(-1) + b

    def log_prob_loop(params, x):
        return log_prob_from_logits(logits_loop(params, x), x)

    def log_prob_cumsum(params, x):
        return log_prob_from_logits(logits_cumsum(params, x), x)

    def sample_loop(params, batch):
        w, c, v, b = params
        a = c.expand(batch, d).clone()
        xs = []
        for i in range(n):
            p = torch.sigmoid(torch.sigmoid(a) @ v[i] + b[i])
            xi = (torch.rand(batch, device=device) < p).float()
            xs.append(xi)
            a = a + xi.unsqueeze(1) * w[:, i]
        return torch.stack(xs, 1)

    def sync():
        if on_cuda:
            torch.cuda.synchronize(device)

    def measure(fn):
        """(iterations, seconds, peak bytes or None) of fn() after warm-up."""
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
        peak = torch.cuda.max_memory_allocated(device) if on_cuda else None
        return iters, elapsed, peak

    def report(formulation, phase, batch, fn):
        record = {
            "formulation": formulation,
            "phase": phase,
            "batch": batch,
            "n": n,
            "d": d,
            "device": torch.cuda.get_device_name(device) if on_cuda else str(device),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        }
        try:
            iters, elapsed, peak = measure(fn)
            record.update(
                images_per_s=batch * iters / elapsed,
                iterations=iters,
                seconds=elapsed,
                peak_memory_bytes=peak,
            )
            if not on_cuda:
                # The process's peak RSS so far, as nade bench reports it.
                record["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        except Exception as e:  # e.g. out of memory, or torch.compile without a compiler
            record["error"] = f"{type(e).__name__}: {e}"[:500]
        if on_cuda:
            torch.cuda.empty_cache()
        print(json.dumps(record), flush=True)

    for formulation in formulations:
        log_prob = {"loop": log_prob_loop, "cumsum": log_prob_cumsum}.get(formulation, log_prob_cumsum)
        if formulation == "compiled":
            log_prob = torch.compile(log_prob_cumsum)
        for batch in batches:
            x = (torch.rand(batch, n, device=device) < 0.13).float()
            params = new_params()
            opt = torch.optim.Adam(params, lr=args.lr)

            def evaluate():
                with torch.no_grad():
                    return log_prob(params, x)

            def train_step():
                opt.zero_grad(set_to_none=True)
                loss = -log_prob(params, x).mean()
                loss.backward()
                opt.step()

            report(formulation, "eval", batch, evaluate)
            report(formulation, "train", batch, train_step)
            if formulation == "loop":

                def sample():
                    with torch.no_grad():
                        return sample_loop(params, batch)

                report(formulation, "sample", batch, sample)


if __name__ == "__main__":
    main()
