#!/usr/bin/env python3
"""Order-agnostic deep NADE in PyTorch, the way its users write it, to compare with
`nade bench --model deepnade`.

The network (Uria et al. 2016; nade's src/models/deepnade.rs): h1 = relu(W1 [x * m ; m] + b1),
h_l = relu(W_l h_{l-1} + b_l), logits = V h_L + c, with m the 0/1 mask of observed pixels.
Weights U(+-1/sqrt(fan_in)), biases 0; data: random binary images with about 13% ones (MNIST's
rate), as nade bench's synthetic data.

Phases, as `nade bench`:
- eval: the exact log-likelihood of a batch under one ordering (a random permutation shared by
  the batch), walked pixel by pixel with the first layer updated incrementally (NADE's trick:
  observing pixel d adds x_d W1[:, d] + W1[:, n + d] to a1), so a step costs the layers above
  the first and one output unit; no grad.
- sample: a batch drawn under one ordering, the same walk with each pixel drawn from its
  conditional (uniforms drawn up front) before a1 observes it.
- train: one order-agnostic step: per image d uniform on 0..n-1 and a random set of d observed
  pixels, loss n / (n - d) * the summed cross-entropy of the unobserved ones, the batch's mean,
  backward, Adam.

Formulations: eager (plain PyTorch) and compiled (the walk's step and the training loss under
torch.compile).

Prints one JSON line per (formulation, phase, batch): images/s over --seconds after warm-up and
the process's peak RSS in MB (CPU) or max_memory_allocated (CUDA).

  python3 scripts/bench/bench_torch_deepnade.py --device cpu --threads 2 --batches 100
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
    p.add_argument("--seconds", type=float, default=5.0, help="timed seconds per measurement (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs before timing (default 2)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch's default)")
    p.add_argument("--formulations", default="eager,compiled", help="subset of eager,compiled")
    p.add_argument("--phases", default="eval,train,sample", help="subset of eval,train,sample")
    p.add_argument("--n", type=int, default=784, help="pixels (default 784)")
    p.add_argument("--hidden", default="500,500", help="hidden layer sizes (default 500,500)")
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
    hidden = [int(h) for h in args.hidden.split(",") if h]
    batches = [int(b) for b in args.batches.split(",") if b]
    phases = [p for p in args.phases.split(",") if p]
    formulations = [f for f in args.formulations.split(",") if f]
    for f in formulations:
        if f not in ("eager", "compiled"):
            sys.exit(f"unknown formulation {f!r}")

    def new_params():
        sizes = [2 * n] + hidden
        params = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            params.append((torch.rand(fan_out, fan_in, generator=gen) * 2 - 1) / math.sqrt(fan_in))
            params.append(torch.zeros(fan_out))
        params.append((torch.rand(n, hidden[-1], generator=gen) * 2 - 1) / math.sqrt(hidden[-1]))
        params.append(torch.zeros(n))
        return [t.to(device).requires_grad_() for t in params]

    def net(params, x, m):
        h = torch.cat([x * m, m], 1)
        for l in range(len(hidden)):
            h = torch.relu(F.linear(h, params[2 * l], params[2 * l + 1]))
        return F.linear(h, params[-2], params[-1])

    def order_agnostic_loss(params, x, d, m):
        logits = net(params, x, m)
        ce = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        per_image = (ce * (1 - m)).sum(1) * n / (n - d)
        return per_image.mean()

    def walk_step(params, a1, x_d, w_x, w_m, v_d, c_d):
        """One step of the exact walk: the conditional of pixel d, then a1 with d observed."""
        h = torch.relu(a1)
        for l in range(1, len(hidden)):
            h = torch.relu(F.linear(h, params[2 * l], params[2 * l + 1]))
        logit = h @ v_d + c_d
        log_p = -F.binary_cross_entropy_with_logits(logit, x_d, reduction="none")
        return log_p, a1 + x_d[:, None] * w_x + w_m

    def sample_step(params, a1, u_d, w_x, w_m, v_d, c_d):
        """One step of sampling: pixel d drawn from its conditional, then a1 with d observed."""
        h = torch.relu(a1)
        for l in range(1, len(hidden)):
            h = torch.relu(F.linear(h, params[2 * l], params[2 * l + 1]))
        x_d = (u_d < torch.sigmoid(h @ v_d + c_d)).float()
        return x_d, a1 + x_d[:, None] * w_x + w_m

    def draw(step, params, u, order):
        w1, b1 = params[0], params[1]
        v, c = params[-2], params[-1]
        a1 = b1.expand(u.shape[0], -1)
        x = torch.empty_like(u)
        for d in order.tolist():
            x[:, d], a1 = step(params, a1, u[:, d], w1[:, d], w1[:, n + d], v[d], c[d])
        return x

    def exact_log_prob(step, params, x, order):
        w1, b1 = params[0], params[1]
        v, c = params[-2], params[-1]
        a1 = b1.expand(x.shape[0], -1)
        total = torch.zeros(x.shape[0], device=x.device)
        for d in order.tolist():
            log_p, a1 = step(params, a1, x[:, d], w1[:, d], w1[:, n + d], v[d], c[d])
            total = total + log_p
        return total

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

    def report(formulation, phase, batch, fn):
        record = {
            "model": "deepnade",
            "formulation": formulation,
            "phase": phase,
            "batch": batch,
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
        compiled = formulation == "compiled"
        step = torch.compile(walk_step) if compiled else walk_step
        sampler_step = torch.compile(sample_step) if compiled else sample_step
        loss_fn = torch.compile(order_agnostic_loss) if compiled else order_agnostic_loss
        for batch in batches:
            x = (torch.rand(batch, n, generator=gen) < 0.13).float().to(device)
            params = new_params()
            opt = torch.optim.Adam(params, lr=args.lr)
            order = torch.randperm(n, generator=gen)

            def evaluate():
                with torch.no_grad():
                    return exact_log_prob(step, params, x, order)

            def sample():
                with torch.no_grad():
                    return draw(sampler_step, params, torch.rand(batch, n, generator=gen).to(device), order)

            def train_step():
                d = torch.randint(0, n, (batch,), generator=gen)
                ranks = torch.rand(batch, n, generator=gen).argsort(1).argsort(1)
                m = (ranks < d[:, None]).float()
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(params, x, d.float().to(device), m.to(device))
                loss.backward()
                opt.step()

            if "eval" in phases:
                report(formulation, "eval", batch, evaluate)
            if "train" in phases:
                report(formulation, "train", batch, train_step)
            if "sample" in phases:
                report(formulation, "sample", batch, sample)


if __name__ == "__main__":
    main()
