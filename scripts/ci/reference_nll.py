#!/usr/bin/env python3
"""Independent float64 check of `nade eval`.

Writes randomly initialised FVSBN, MLP, NADE, MADE and deep NADE checkpoints with numpy +
safetensors (only the metadata keys another tool would write: `model`, `n`, and `hidden` or
`activation`), computes the exact average test NLL of each in float64 straight from the
formulas (NADE by its O(nd) recurrence, a path the Rust code does not use for density; MADE
and deep NADE from the schemas of their issues, docs/checkpoints.md: a mixture of K masks,
of K orderings, one full masked pass per conditional for deep NADE), runs `nade eval --json` on
the same files and fails if any pair differs by more than 1e-4 relative.

    pip install numpy safetensors
    cargo build --release
    python3 scripts/ci/reference_nll.py [--data DIR]

With --checkpoint (repeatable) it checks trained checkpoints instead, each on the data set its
training run read (the `[data] dataset` of its `run_config` metadata, else --dataset): the
shipped UCI models, for instance (a deep NADE on its first --orders orderings; a mixture of
`nade mix` with every component whole):

    python3 scripts/ci/reference_nll.py --data ../shared/data/uci_binary \
        --checkpoint checkpoints/uci/dna-nade.safetensors

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


ACTIVATIONS = {"relu": lambda a: np.maximum(a, 0.0), "sigmoid": sigmoid, "tanh": np.tanh}


def log_mean_exp(per_component):
    # (K, B) log-densities -> (B,) log of their uniform mixture.
    top = per_component.max(0)
    return top + np.log(np.exp(per_component - top).mean(0))


def nll_made(p, x, activation):
    """MADE: h_l = g(b_l + (W_l * M_l) h_{l-1}), logits = c + (V * M_V) h_L (+ (A * M_A) x),
    M_l[u, u'] = deg_l[u] >= deg_{l-1}[u'], M_V[d, u] = m0(d) > deg_L[u], M_A[d, d'] = m0(d) >
    m0(d'), m0(d) = 1 + position of d in order[k]; the K masks' densities mixed uniformly."""
    g = ACTIVATIONS[activation]
    layers = sum(1 for k in p if k.startswith("W"))
    n = x.shape[1]
    per_mask = []
    for k in range(p["order"].shape[0]):
        m0 = np.empty(n)
        m0[p["order"][k]] = np.arange(1, n + 1)
        h, below = x, m0
        for l in range(1, layers + 1):
            deg = p[f"degrees{l}"][k].astype(np.float64)
            w = p[f"W{l}"].astype(np.float64) * (deg[:, None] >= below[None, :])
            h = g(h @ w.T + p[f"b{l}"])
            below = deg
        logits = h @ (p["V"].astype(np.float64) * (m0[:, None] > below[None, :])).T + p["c"]
        if "A" in p:
            logits += x @ (p["A"].astype(np.float64) * (m0[:, None] > m0[None, :])).T
        per_mask.append(log_sigmoid_terms(x, logits).sum(1))
    return -log_mean_exp(np.array(per_mask))


def nll_deepnade(p, x, activation):
    """Deep NADE: h_1 = g(W1 [x * m ; m] + b1), h_l = g(W_l h_{l-1} + b_l), logits = V h_L + c;
    log p_o(x) = sum_t log p(x_{o_t} | x_{o_<t}), each conditional one full pass with m = 1 on
    o_<t; the K stored orderings' densities mixed uniformly."""
    g = ACTIVATIONS[activation]
    layers = sum(1 for k in p if k.startswith("W"))
    weights = [(p[f"W{l}"].astype(np.float64), p[f"b{l}"].astype(np.float64)) for l in range(1, layers + 1)]
    v, c = p["V"].astype(np.float64), p["c"].astype(np.float64)
    per_order = []
    for order in p["order"]:
        m = np.zeros_like(x)
        total = np.zeros(x.shape[0])
        for d in order:
            h = np.concatenate([x * m, m], axis=1)
            for w, b in weights:
                h = g(h @ w.T + b)
            total += log_sigmoid_terms(x[:, d], h @ v[d] + c[d])
            m[:, d] = 1.0
        per_order.append(total)
    return -log_mean_exp(np.array(per_order))


def random_stack(kind, n, hidden, masks, rng):
    """Weights, orderings (and MADE's degrees, drawn as in its paper) of K = `masks`."""
    u = lambda scale, *shape: rng.uniform(-scale, scale, size=shape).astype(np.float32)
    params, below = {}, 2 * n if kind == "deepnade" else n
    for l, width in enumerate(hidden, 1):
        params[f"W{l}"], params[f"b{l}"] = u(0.3, width, below), u(1.0, width)
        below = width
    params["V"], params["c"] = u(0.3, n, below), u(1.0, n)
    params["order"] = np.stack([rng.permutation(n) for _ in range(masks)]).astype(np.int64)
    if kind == "made":
        params["A"] = u(0.1, n, n)
        for k_layer, width in enumerate(hidden, 1):
            low = 1 if k_layer == 1 else params[f"degrees{k_layer - 1}"].min(1, keepdims=True)
            params[f"degrees{k_layer}"] = rng.integers(low, n, size=(masks, width)).astype(np.int64)
    return params


def random_checkpoint(kind, n, hidden, rng):
    u = lambda scale, *shape: rng.uniform(-scale, scale, size=shape).astype(np.float32)
    if kind == "fvsbn":
        return {"W": u(0.3, n, n), "b": u(1.0, n)}
    if kind == "mlp":
        return {"A": u(0.3, n, hidden, n), "c": u(1.0, n, hidden), "alpha": u(1.0, n, hidden), "b": u(1.0, n)}
    return {"W": u(0.3, hidden, n), "c": u(1.0, hidden), "V": u(0.3, n, hidden), "b": u(1.0, n)}


# The float64 reference of each kind, by the registry's name.
REFERENCES = {"fvsbn": nll_fvsbn, "mlp": nll_mlp, "nade": nll_nade, "made": nll_made, "deepnade": nll_deepnade}


def reference_nll(cfg, params, x, orders=None):
    """Per-image float64 NLL of the model `cfg` (a checkpoint's `config` JSON) holding
    `params`: a deep NADE on its first `orders` orderings, a MADE on its `eval_masks`; a
    mixture (`nade mix`) as -log sum_j w_j p_j(x), component j holding the tensors named
    `component{j}.` + its own names and evaluated whole (all its orderings and masks)."""
    kind = cfg["kind"]
    if kind == "mixture":
        per = []
        for j, component in enumerate(cfg["components"]):
            prefix = f"component{j}."
            own = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
            per.append(np.log(component["weight"]) - reference_nll(component["model"], own, x))
        per = np.array(per)
        top = per.max(0)
        return -(top + np.log(np.exp(per - top).sum(0)))
    if kind == "deepnade" and orders:
        params = dict(params, order=params["order"][:orders])
    if kind == "made" and cfg.get("eval_masks"):
        used = int(cfg["eval_masks"])
        params = {k: (v[:used] if k == "order" or k.startswith("degrees") else v) for k, v in params.items()}
    if kind in ("made", "deepnade"):
        return REFERENCES[kind](params, x, cfg.get("activation", "relu"))
    return REFERENCES[kind](params, x)


def trained_dataset(meta):
    """The data set of a checkpoint: a mixture's `dataset` metadata, else the `[data] dataset`
    of its run config, if it names one."""
    import tomllib

    if meta.get("dataset"):
        return meta["dataset"]
    try:
        return tomllib.loads(meta.get("run_config", "")).get("data", {}).get("dataset")
    except tomllib.TOMLDecodeError:
        return None


def check_checkpoint(args, path):
    """(ok, line): the float64 NLL of a trained checkpoint against `nade eval --json`."""
    from safetensors import safe_open

    with safe_open(path, "np") as f:
        meta = f.metadata() or {}
        params = {k: f.get_tensor(k) for k in f.keys() if not k.startswith("optim.")}
    cfg = json.loads(meta["config"])
    kind = cfg["kind"]
    dataset = args.dataset or trained_dataset(meta) or "binarized_mnist"
    x = read_amat(os.path.join(args.data, f"{dataset}_{args.split}.amat"))
    if args.limit:
        x = x[: args.limit]
    cmd = [args.nade, "eval", path, "--data", args.data, "--dataset", dataset, "--split", args.split,
           "--json", "--device", "cpu"]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    if kind == "deepnade":
        cmd += ["--orders", str(args.orders)]
    want = reference_nll(cfg, params, x, args.orders).mean()
    got = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    rel = abs(got["nll_nats"] - want) / abs(want)
    ok = rel <= args.tolerance and got["count"] == x.shape[0]
    return ok, (f"{'ok  ' if ok else 'FAIL'} {path} on {dataset} {args.split} count={got['count']} "
                f"float64 {want:.6f}  nade {got['nll_nats']:.6f}  rel {rel:.2e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # An empty NADE_DATA_DIR counts as unset, as in nade.
    ap.add_argument("--data", default=os.environ.get("NADE_DATA_DIR") or "data/binarized_mnist")
    ap.add_argument("--split", default="test")
    ap.add_argument("--nade", default="target/release/nade", help="the nade binary")
    ap.add_argument(
        "--models",
        default="fvsbn,mlp:8,nade:500,made:10x8:tanh,deepnade:8x6:relu",
        help="kind[:hidden[:activation]],... (hidden 10x8: two layers; MADE and deep NADE get 3 masks / orderings)",
    )
    ap.add_argument("--paths", default="auto,blocked,plain", help="NADE paths to check")
    ap.add_argument("--limit", type=int, default=None, help="first N images only")
    ap.add_argument("--seed", type=int, default=2011)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    ap.add_argument("--checkpoint", action="append", default=[], help="check this trained checkpoint instead (repeatable)")
    ap.add_argument("--dataset", default=None, help="with --checkpoint: the data set, where the checkpoint does not name one")
    ap.add_argument("--orders", type=int, default=1, help="with --checkpoint: a deep NADE's first orderings checked")
    args = ap.parse_args()

    if args.checkpoint:
        results = [check_checkpoint(args, path) for path in args.checkpoint]
        for _, line in results:
            print(line)
        failures = sum(not ok for ok, _ in results)
        print(f"{len(results) - failures} passed, {failures} failed")
        sys.exit(1 if failures else 0)

    x = read_amat(os.path.join(args.data, f"binarized_mnist_{args.split}.amat"))
    if args.limit:
        x = x[: args.limit]
    n = x.shape[1]
    rng = np.random.default_rng(args.seed)
    failures = checks = 0
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.models.split(","):
            kind, _, rest = spec.partition(":")
            hidden, _, activation = rest.partition(":")
            path = os.path.join(tmp, f"{kind}.safetensors")
            meta = {"model": kind, "n": str(n)}
            if kind in ("made", "deepnade"):
                layers = [int(h) for h in hidden.split("x")]
                activation = activation or "relu"
                params = random_stack(kind, n, layers, 3, rng)
                meta["activation"] = activation
                want = REFERENCES[kind](params, x, activation).mean()
                hidden = "x".join(map(str, layers))
            else:
                hidden = int(hidden or 0)
                params = random_checkpoint(kind, n, hidden, rng)
                if kind != "fvsbn":
                    meta["hidden"] = str(hidden)
                want = REFERENCES[kind](params, x).mean()
            save_file(params, path, metadata=meta)
            for path_name in args.paths.split(",") if kind == "nade" else ["-"]:
                cmd = [args.nade, "eval", path, "--data", args.data, "--split", args.split, "--json", "--device", "cpu"]
                if args.limit:
                    cmd += ["--limit", str(args.limit)]
                if kind == "nade":
                    cmd += ["--kernel", path_name]
                got = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                rel = abs(got["nll_nats"] - want) / abs(want)
                ok = rel <= args.tolerance and got["count"] == x.shape[0]
                failures += not ok
                checks += 1
                print(
                    f"{'ok  ' if ok else 'FAIL'} {kind:8} hidden={hidden!s:<4} path={path_name:8} count={got['count']} "
                    f"float64 {want:.6f}  nade {got['nll_nats']:.6f}  rel {rel:.2e}  ({got['images_per_s']:.0f} images/s)"
                )
    # Every model of the build's registry has its float64 reference here: a new kind without
    # one fails this check instead of going unchecked.
    kinds = json.loads(subprocess.run([args.nade, "kinds", "--json"], check=True, capture_output=True, text=True).stdout)
    for kind in (k["name"] for k in kinds):
        checked = kind in REFERENCES and any(spec.partition(":")[0] == kind for spec in args.models.split(","))
        failures += not checked
        checks += 1
        print(f"{'ok  ' if checked else 'FAIL'} {kind:8} {'has' if checked else 'lacks'} a float64 reference checked here (nade kinds)")
    print(f"{checks - failures} passed, {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
