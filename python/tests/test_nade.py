"""The Python package against the CLI it wraps: same numbers, same draws, clear errors.

Needs the `nade` binary (NADE_BIN, default target/release/nade) and binarized MNIST
(NADE_DATA_DIR, default ../shared/data/binarized_mnist); without them the tests that need
them are skipped, or fail when CI is set.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

import nade

REPO = Path(__file__).resolve().parents[2]
CHECKPOINTS = REPO / "checkpoints"
CLI = Path(os.environ.get("NADE_BIN", REPO / "target" / "release" / "nade"))
DATA = Path(os.environ.get("NADE_DATA_DIR", REPO.parent / "shared" / "data" / "binarized_mnist"))


def need(path: Path, what: str) -> None:
    if path.exists():
        return
    message = f"{what} not found at {path}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def cli(*args: str) -> str:
    need(CLI, "the nade binary (cargo build --release)")
    env = dict(os.environ, NADE_DATA_DIR=str(DATA))
    done = subprocess.run([str(CLI), *args], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def test_images() -> np.ndarray:
    path = DATA / "binarized_mnist_test.amat"
    need(path, "binarized MNIST")
    return nade.read_amat(path)


@pytest.fixture(scope="module")
def nade500() -> nade.Model:
    return nade.load(CHECKPOINTS / "nade.safetensors")


# --- exact numbers: the CLI's nade eval -----------------------------------------------------

# (checkpoint, images, the eval flags / keyword arguments): every shipped MNIST model, on a
# prefix of the test set that keeps CI short (deep NADE on one of its orderings).
EVALS = [
    ("fvsbn", 1000, {}),
    ("mlp", 1000, {}),
    ("nade", 10000, {}),
    ("made", 1000, {}),
    ("made-k32", 200, {"masks": 4}),
    ("deepnade", 100, {"orders": 2}),
]


@pytest.mark.parametrize("name,limit,choices", EVALS, ids=[e[0] for e in EVALS])
def test_nll_and_log_prob_equal_nade_eval(name, limit, choices, test_images):
    path = CHECKPOINTS / f"{name}.safetensors"
    flags = [f"--{k}={v}" for k, v in choices.items()]
    record = json.loads(cli("eval", str(path), "--limit", str(limit), "--json", *flags))
    model = nade.load(path)
    x = test_images[:limit]
    mean, std_err = model.nll(x, **choices)
    # The same evaluator, batches and f64 sums: the same bits, so every printed digit.
    assert mean == record["nll_nats"]
    assert std_err == record["nll_std_err"]
    log_p = model.log_prob(x, **choices)
    assert log_p.dtype == np.float64 and log_p.shape == (limit,)
    assert -log_p.sum() / limit == pytest.approx(record["nll_nats"], rel=1e-12)


def test_a_mixture_of_nade_mix_evaluates_as_nade_eval_and_has_no_conditionals():
    """The UCI Mushrooms mixture (kind `mixture`, scripts/uci/reproduce.sh) through the package."""
    uci = REPO.parent / "shared" / "data" / "uci_binary"
    need(uci / "mushrooms_valid.amat", "the UCI binary data")
    path = CHECKPOINTS / "uci" / "mushrooms-mix.safetensors"
    record = json.loads(cli("eval", str(path), "--data", str(uci), "--split", "valid", "--json"))
    model = nade.load(path)
    mean, std_err = model.nll(nade.read_amat(uci / "mushrooms_valid.amat"))
    assert (mean, std_err) == (record["nll_nats"], record["nll_std_err"])
    with pytest.raises(RuntimeError, match="no single set of conditionals"):
        model.conditionals(np.zeros((2, 112), np.uint8))


def test_log_prob_accepts_every_dtype_and_layout(nade500, test_images):
    x = test_images[:50]
    want = nade500.log_prob(x)
    for variant in (
        x.astype(bool),
        x.astype(np.int64),
        x.astype(np.int8),
        x.astype(np.float32),
        x.astype(np.float64),
        np.asfortranarray(x),
        np.ascontiguousarray(x[:, ::-1])[:, ::-1],  # a negative-stride view
    ):
        np.testing.assert_array_equal(nade500.log_prob(variant), want)
    one = nade500.log_prob(x[7])
    assert np.ndim(one) == 0 and one == want[7]


def test_normalizes_over_all_vectors_of_a_small_model(tmp_path):
    """sum_x p(x) = 1 over {0,1}^n, through the package (a model trained here, n = 10)."""
    rng = np.random.default_rng(0)
    rows = (rng.random((300, 10)) < np.linspace(0.1, 0.9, 10)).astype(np.uint8)
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "valid", "test"):
        nade.write_amat(data / f"toy_{split}.amat", rows)
    summary = nade.train(
        {
            "model": {"kind": "nade", "hidden": 8},
            "data": {"dataset": "toy"},
            "train": {"epochs": 2, "batch_size": 50, "lr": 1e-2, "seed": 3},
        },
        data=data,
        out=tmp_path / "run",
        progress=False,
    )
    model = nade.load(summary["best_checkpoint"])
    every = ((np.arange(1024)[:, None] >> np.arange(10)) & 1).astype(np.uint8)
    assert np.exp(model.log_prob(every)).sum() == pytest.approx(1.0, abs=1e-5)


# --- draws: the CLI's sample and complete, then their statistics ----------------------------


def test_sample_equals_nade_sample(nade500, tmp_path):
    cli("sample", str(CHECKPOINTS / "nade.safetensors"), "--count", "12", "--seed", "5",
        "--out", str(tmp_path / "s.png"), "--amat", str(tmp_path / "s.amat"))
    drawn = nade500.sample(12, seed=5)
    assert drawn.dtype == np.uint8 and drawn.shape == (12, 784)
    np.testing.assert_array_equal(drawn, nade.read_amat(tmp_path / "s.amat"))
    assert not np.array_equal(drawn, nade500.sample(12, seed=6))


def test_complete_equals_nade_complete(test_images, tmp_path):
    path = CHECKPOINTS / "deepnade.safetensors"
    cli("complete", str(path), "--keep", "random:0.3", "--count", "3", "--samples", "2",
        "--seed", "9", "--out", str(tmp_path / "c.png"), "--amat", str(tmp_path / "c.amat"))
    model = nade.load(path)
    done = model.complete(test_images[:3], "random:0.3", samples=2, seed=9)
    assert done.shape == (3, 2, 784)
    np.testing.assert_array_equal(done.reshape(6, 784), nade.read_amat(tmp_path / "c.amat"))


def test_completion_keeps_the_kept_values(test_images):
    model = nade.load(CHECKPOINTS / "deepnade.safetensors")
    x = test_images[:4]
    rng = np.random.default_rng(1)
    keep = rng.random((4, 784)) < 0.5
    done = model.complete(x, keep, samples=3, seed=2)
    for s in range(3):
        np.testing.assert_array_equal(done[:, s][keep], x[keep])
    assert (done[:, 0][~keep] != x[~keep]).any()
    one = model.complete(x[0], keep[0], samples=2, seed=2)
    assert one.shape == (2, 784)


def test_sample_frequencies_match_the_conditionals():
    """Calibration: the fraction of ones of pixel i among the samples whose earlier pixels
    agree is p(x_i = 1 | x_<i); for the first pixel of the order it is exactly p(x_0 = 1),
    and for every pixel the mean of the conditionals at the samples estimates the same
    frequency as the samples themselves (E[x_i] = E[p(x_i = 1 | x_<i)])."""
    model = nade.load(CHECKPOINTS / "nade.safetensors")
    draws = model.sample(2000, seed=11)
    probs = model.conditionals(draws).astype(np.float64)
    freq, mean_p = draws.mean(axis=0), probs.mean(axis=0)
    # Per pixel, the difference of two means over 2,000 draws: its standard error is at most
    # sqrt(p (1 - p) / 2000); 5 of them over 784 pixels fails by chance about once in 10^4.
    se = np.sqrt(np.clip(mean_p * (1 - mean_p), 1e-4, None) / len(draws))
    assert (np.abs(freq - mean_p) < 5 * se + 1e-3).all()
    # And the draws are far from a wrong model's: all-zeros or independent pixels at 0.5.
    assert 0.05 < freq.mean() < 0.3


def test_conditionals_are_autoregressive(nade500, test_images):
    x = test_images[:1].copy()
    before = nade500.conditionals(x)
    x[0, 500] ^= 1
    after = nade500.conditionals(x)
    np.testing.assert_array_equal(before[0, :501], after[0, :501])
    assert (before[0, 501:] != after[0, 501:]).any()


def test_log_prob_kept_of_deep_nade(test_images):
    model = nade.load(CHECKPOINTS / "deepnade.safetensors")
    x = test_images[:2]
    everything = model.log_prob_kept(x, np.ones(784, bool))
    np.testing.assert_allclose(everything, model.log_prob(x), rtol=1e-5)
    half = model.log_prob_kept(x, "top:14")
    assert (half > everything).all() and (half < 0).all()


# --- files ----------------------------------------------------------------------------------


def test_amat_round_trip_and_grid(tmp_path):
    x = (np.random.default_rng(2).random((5, 12)) < 0.5)
    nade.write_amat(tmp_path / "x.amat", x)
    np.testing.assert_array_equal(nade.read_amat(tmp_path / "x.amat"), x.astype(np.uint8))
    nade.save_grid(x, tmp_path / "x.png", scale=3, shape=(3, 4))
    nade.save_grid(x * 0.5, tmp_path / "p.png")
    assert (tmp_path / "x.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "p.png").stat().st_size > 0


# --- bad input: the CLI's messages as Python exceptions -------------------------------------


def test_bad_arrays_raise_value_error_naming_the_value(nade500):
    bad = np.zeros((3, 784))
    bad[2, 17] = 0.5
    with pytest.raises(ValueError, match=r"x\[2, 17\] = 0\.5: expected 0 or 1"):
        nade500.log_prob(bad)
    bad[2, 17] = np.nan
    with pytest.raises(ValueError, match=r"x\[2, 17\] = nan"):
        nade500.log_prob(bad)
    with pytest.raises(ValueError, match=r"x\[3\] = -1"):
        nade500.log_prob(np.array([0, 0, 0, -1] + [0] * 780))
    with pytest.raises(ValueError, match="rows of 783 values, the model's n is 784"):
        nade500.log_prob(np.zeros((2, 783), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        nade500.log_prob(np.zeros((2, 2, 784), np.uint8))
    with pytest.raises(ValueError, match="dtype"):
        nade500.log_prob(np.array([["0"] * 784]))


def test_bad_choices_raise(nade500, test_images):
    x = test_images[:2]
    with pytest.raises(ValueError, match="first:K"):
        nade500.complete(x, "left:14")  # a fixed-order model conditions on prefixes only
    with pytest.raises(ValueError, match="keep="):
        nade500.complete(x, "sideways:3")
    with pytest.raises(ValueError, match="keep: 3 rows of masks for 2 rows"):
        nade500.complete(x, np.ones((3, 784), bool))
    with pytest.raises(ValueError, match="count=0"):
        nade500.sample(0)
    with pytest.raises(ValueError, match="order"):
        nade500.sample(2, order="sideways")
    with pytest.raises(ValueError, match="device"):
        nade.load(CHECKPOINTS / "nade.safetensors", device="tpu")
    with pytest.raises(ValueError, match=r"\.png"):
        nade.save_grid(x, "grid.jpg")


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        nade.load(tmp_path / "nope.safetensors")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="broken.safetensors"):
        nade.load(broken)
    with pytest.raises(FileNotFoundError):
        nade.read_amat(tmp_path / "nope.amat")
    bad = tmp_path / "bad.amat"
    bad.write_text("0 1 0\n0 2 0\n")
    with pytest.raises(RuntimeError, match=r"bad\.amat:2: value 2 \(column 2\) is not 0 or 1"):
        nade.read_amat(bad)
    with pytest.raises(FileNotFoundError, match="missing.toml"):
        nade.train(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="hiden"):
        nade.train({"model": {"kind": "nade", "hiden": 3}})


# --- threads and training -------------------------------------------------------------------


def test_one_model_serves_many_threads(nade500, test_images):
    x = test_images[:200]
    want = nade500.log_prob(x)
    results = [None] * 4

    def work(k):
        results[k] = nade500.log_prob(x)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results:
        np.testing.assert_array_equal(got, want)


def test_train_smoke_config_then_resume(tmp_path):
    need(DATA / "binarized_mnist_train.amat", "binarized MNIST")
    out = tmp_path / "smoke"
    summary = nade.train(REPO / "configs" / "smoke.toml", data=DATA, out=out, epochs=1,
                         progress=False, test=False)
    assert summary["model"] == "nade" and summary["epochs_run"] == 1
    assert summary["test_nll"] is None and 100 < summary["valid_nll"] < 300
    assert (out / "best.safetensors").exists()
    # One more epoch from where it stopped, as `nade train --resume DIR --epochs 2`.
    resumed = nade.train(resume=out, epochs=2, data=DATA, progress=False, test=False)
    assert resumed["epochs_run"] == 2
    model = nade.load(out / "best.safetensors")
    assert model.kind == "nade" and model.n == 784 and model.config["hidden"] == 32
    assert "nade" in repr(model) and "784" in repr(model)


def test_ctrl_c_stops_training_with_the_files_saved(tmp_path):
    """SIGINT during nade.train: KeyboardInterrupt after the current minibatch, the last
    completed epoch saved, and resume=True goes on from it."""
    need(DATA / "binarized_mnist_train.amat", "binarized MNIST")
    import signal
    import sys
    import time

    out = tmp_path / "run"
    script = (
        "import nade, sys\n"
        "try:\n"
        f"    nade.train({str(REPO / 'configs' / 'smoke.toml')!r}, data={str(DATA)!r},"
        f" out={str(out)!r}, epochs=1000, progress=False, test=False)\n"
        "except KeyboardInterrupt as e:\n"
        "    print('interrupted:', e)\n"
        "    sys.exit(3)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "last.safetensors").exists() and time.time() < deadline:
        time.sleep(0.2)
    assert (out / "last.safetensors").exists(), child.communicate()[1]
    child.send_signal(signal.SIGINT)
    stdout, stderr = child.communicate(timeout=120)
    assert child.returncode == 3, stderr
    assert "interrupted:" in stdout and "resume" in stdout
    stopped = json.loads(cli("info", str(out / "last.safetensors"), "--json"))
    assert stopped["epoch"] >= 1 and stopped["optimizer_state"]
    summary = nade.train(REPO / "configs" / "smoke.toml", data=DATA, out=out, resume=True,
                         epochs=2, progress=False, test=False)
    assert summary["epochs_run"] >= 1
