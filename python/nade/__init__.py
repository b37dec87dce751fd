"""nade: autoregressive density models of binary data (FVSBN, MLP, NADE, MADE, deep NADE).

The Rust engine of the ``nade`` command-line program, from Python: load a checkpoint that
``nade train`` (or :func:`train`) wrote, and compute exact log-probabilities, conditionals,
samples and completions on numpy arrays::

    import nade
    model = nade.load("checkpoints/nade.safetensors")
    x = nade.read_amat("binarized_mnist_test.amat")      # (10000, 784) uint8
    log_p = model.log_prob(x)                            # (10000,) float64, nats
    images = model.sample(16, seed=1)                    # (16, 784) uint8
    filled = model.complete(x[:8], "top:14", samples=4)  # (8, 4, 784) uint8

Arrays go in as numpy arrays of 0s and 1s of any boolean, integer or float dtype, of shape
(B, n) or (n,); results come back as new, writable numpy arrays (a 1-D input gives results
without the batch axis). Every call gives the numbers the CLI gives for the same inputs and
seed. Calls release the GIL, so a Model serves several Python threads at once.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from . import _nade

__all__ = [
    "Model",
    "load",
    "train",
    "read_amat",
    "write_amat",
    "save_grid",
    "keep_mask",
    "features",
    "__version__",
]

__version__: str = _nade.__version__

PathLike = Union[str, "os.PathLike[str]"]
Keep = Union[str, np.ndarray, Sequence[bool], Sequence[int]]


def features() -> Tuple[str, ...]:
    """The accelerator back ends this build has: ``()``, ``("cuda",)`` or ``("metal",)``."""
    return tuple(_nade.features())


# --- numpy in -------------------------------------------------------------------------------


def _binary_rows(x: Any, n: Optional[int], name: str) -> Tuple[bytes, int, int, bool]:
    """``x`` as (row-major u8 bytes, rows, n, whether it was one vector).

    Accepts (B, n) or (n,) arrays of bool, any integer or float dtype holding only 0 and 1,
    in any memory order. The one copy made is the conversion to u8 bytes (none beyond that
    for a C-ordered uint8 or bool array but the bytes themselves).
    """
    a = np.asarray(x)
    if a.ndim not in (1, 2):
        raise ValueError(f"{name}: expected an array of shape (B, n) or (n,), got shape {a.shape}")
    single = a.ndim == 1
    if single:
        a = a.reshape(1, -1)
    width = a.shape[1]
    if n is not None and width != n:
        raise ValueError(f"{name}: rows of {width} values, the model's n is {n}")
    if a.dtype == np.bool_:
        pass
    elif a.dtype.kind in "iuf":
        # One pass where it can tell (unsigned: the maximum); three to find the culprit.
        if a.dtype.kind == "u" and a.size and a.max() <= 1:
            bad = None
        else:
            bad = (a != 0) & (a != 1)
        if bad is not None and bad.any():
            i, j = (int(k) for k in np.argwhere(bad)[0])
            where = f"{name}[{j}]" if single else f"{name}[{i}, {j}]"
            raise ValueError(f"{where} = {a[i, j].item()!r}: expected 0 or 1")
    else:
        raise ValueError(f"{name}: dtype {a.dtype} is not boolean, integer or float")
    return np.ascontiguousarray(a, dtype=np.uint8).tobytes(), a.shape[0], width, single


def _rows_out(buffer: bytearray, dtype: Any, shape: Tuple[int, ...]) -> np.ndarray:
    """A writable numpy view of the bytes the engine returned (no copy)."""
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def _path(path: PathLike) -> str:
    return os.fspath(path)


# --- the model ------------------------------------------------------------------------------


class Model:
    """A checkpoint loaded on a device. Make one with :func:`load`."""

    def __init__(self, checkpoint: "_nade.Checkpoint") -> None:
        self._ckpt = checkpoint

    @property
    def kind(self) -> str:
        """The model family: ``"fvsbn"``, ``"mlp"``, ``"nade"``, ``"made"`` or ``"deepnade"``."""
        return self._ckpt.kind

    @property
    def n(self) -> int:
        """The number of binary values per vector (784 for binarized MNIST)."""
        return self._ckpt.n

    @property
    def config(self) -> Dict[str, Any]:
        """The model's structure as the checkpoint stores it (a new dict on every call)."""
        return json.loads(self._ckpt.config_json)

    @property
    def num_parameters(self) -> int:
        """The number of trained parameters."""
        return self._ckpt.num_parameters

    @property
    def device(self) -> str:
        """Where the model computes: ``"cpu"``, ``"cuda"`` or ``"metal"``."""
        return self._ckpt.device

    @property
    def path(self) -> str:
        """The checkpoint file this model was loaded from."""
        return os.fspath(self._ckpt.path)

    def __repr__(self) -> str:
        return (
            f"<nade.Model {self._ckpt.describe}, "
            f"{self.num_parameters:,} parameters, on {self.device}, from {self.path!r}>"
        )

    def log_prob(
        self, x: Any, orders: Optional[int] = None, masks: Optional[int] = None
    ) -> Union[np.ndarray, np.float64]:
        """Exact log p(x) in nats per vector: float64 (B,) for x of shape (B, n).

        The same numbers ``nade eval`` sums (f32 per vector, as the CLI computes them).
        ``orders`` (deep NADE) and ``masks`` (MADE) evaluate the ensemble of the first K
        stored orderings or masks, as ``nade eval --orders K`` / ``--masks K`` do.
        """
        data, rows, _, single = _binary_rows(x, self.n, "x")
        out = _rows_out(self._ckpt.log_prob(data, rows, masks, orders), np.float64, (rows,))
        return out[0] if single else out

    def nll(
        self, x: Any, orders: Optional[int] = None, masks: Optional[int] = None
    ) -> Tuple[float, float]:
        """(mean negative log-likelihood in nats, its standard error), as ``nade eval``."""
        data, rows, _, _ = _binary_rows(x, self.n, "x")
        if rows == 0:
            raise ValueError("x: no rows to evaluate")
        return self._ckpt.nll(data, rows, masks, orders)

    def conditionals(self, x: Any) -> np.ndarray:
        """p(x_i = 1 | x_<i) for every i, float32 (B, n), indexed by pixel.

        "Earlier" means the model's order: its stored ordering (NADE, deep NADE: the first
        of its orderings), or for MADE the first mask's. Each value depends on x only
        through the values before i in that order.
        """
        data, rows, n, single = _binary_rows(x, self.n, "x")
        out = _rows_out(self._ckpt.conditionals(data, rows), np.float32, (rows, n))
        return out[0] if single else out

    def sample(self, count: int, seed: int = 0, order: str = "stored") -> np.ndarray:
        """``count`` exact draws from the model, uint8 (count, n).

        The same vectors as ``nade sample --count COUNT --seed SEED --order ORDER``. ``order``:
        ``"stored"`` (the model's own; deep NADE: one of its orderings per vector),
        ``"random"`` (a fresh ordering per vector; order-agnostic models) or ``"raster"``.
        """
        count = _count(count, "count")
        out = self._ckpt.sample(count, _seed(seed), order)
        return _rows_out(out, np.uint8, (count, self.n))

    def complete(
        self,
        x: Any,
        keep: Keep,
        samples: int = 1,
        seed: int = 0,
        order: Optional[str] = None,
        shape: Optional[Tuple[int, int]] = None,
    ) -> np.ndarray:
        """Draws the values of x that ``keep`` does not keep, given the kept ones.

        ``keep``: a spec string as ``nade complete --keep`` takes (``"top:14"``,
        ``"random:0.2"``, ``"first:90"``, ``"box:7,7,21,21"``, ...; ``shape`` is the picture's
        (height, width) for the row and column forms, default the most nearly square), or a
        boolean mask of shape (n,) or (B, n), True = kept. Returns uint8 (B, samples, n),
        the kept values unchanged: the vectors ``nade complete`` draws for the same rows,
        keep and seed. A model that cannot condition on the kept set (a fixed-order model
        given anything but a prefix of its order) raises ValueError.
        """
        data, rows, n, single = _binary_rows(x, self.n, "x")
        mask = keep_mask(keep, rows, n, seed=seed, shape=shape)
        samples = _count(samples, "samples")
        out = self._ckpt.complete(data, rows, mask, samples, _seed(seed), order)
        out = _rows_out(out, np.uint8, (rows, samples, n))
        return out[0] if single else out

    def log_prob_kept(
        self, x: Any, keep: Keep, seed: int = 0, shape: Optional[Tuple[int, int]] = None
    ) -> Union[np.ndarray, np.float64]:
        """log p(x_kept) in nats per vector, float64 (B,): the marginal of the kept values.

        Exact for models that give it: deep NADE (the average over its orderings of each
        ordering's probability of the kept values, walked first) and the fixed-order models
        when the kept set is a prefix of their order. Raises ValueError otherwise.
        """
        data, rows, n, single = _binary_rows(x, self.n, "x")
        mask = keep_mask(keep, rows, n, seed=seed, shape=shape)
        kept = self._ckpt.log_prob_kept(data, rows, mask)
        if kept is None:
            raise ValueError(f"{self.kind}: this model does not give p(x_kept) for that kept set")
        _, whole, _ = kept
        out = _rows_out(whole, np.float64, (rows,))
        return out[0] if single else out


def _count(value: int, name: str) -> int:
    value = int(value)
    if value < 1:
        raise ValueError(f"{name}={value}: expected a positive count")
    return value


def _seed(value: int) -> int:
    value = int(value)
    if not 0 <= value < 2**64:
        raise ValueError(f"seed={value}: expected 0 <= seed < 2**64")
    return value


def keep_mask(
    keep: Keep,
    rows: int,
    n: int,
    seed: int = 0,
    shape: Optional[Tuple[int, int]] = None,
) -> bytes:
    """The kept set of ``rows`` vectors of ``n`` values, as row-major 0/1 bytes.

    ``keep`` is a spec string (``nade complete --keep``'s forms; ``random:P`` draws with
    ``seed``) or a boolean mask (n,) or (B, n).
    """
    if isinstance(keep, str):
        return bytes(_nade.keep_masks(keep, rows, n, _seed(seed), shape))
    data, mask_rows, _, single = _binary_rows(keep, n, "keep")
    if single:
        return data * rows
    if mask_rows != rows:
        raise ValueError(f"keep: {mask_rows} rows of masks for {rows} rows of x")
    return data


def load(path: PathLike, device: str = "cpu", threads: Optional[int] = None) -> Model:
    """Loads a checkpoint (``.safetensors``) on ``device``.

    ``device``: ``"cpu"``, ``"cuda"`` (a build with CUDA: ``pip install ./python
    --config-settings=build-args=--features=cuda``), ``"metal"`` or ``"auto"`` (the
    accelerator if the build has one, else the CPU). ``threads``: CPU threads for every nade
    call of this process (None: all cores); the pool is set once, by the first call.
    """
    return Model(_nade.Checkpoint(_path(path), device, threads))


def _toml_value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, os.PathLike)):
        return json.dumps(os.fspath(value))  # a TOML basic string is a JSON string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v, where) for v in value) + "]"
    raise ValueError(f"config: {where} = {value!r}: expected a number, string, bool or list")


def _config_toml(config: Dict[str, Any]) -> str:
    """A run file's dict ({table: {key: value}}) as TOML text."""
    lines = []
    for table, keys in config.items():
        if not isinstance(keys, dict):
            raise ValueError(f"config: {table!r} must be a table (a dict of keys)")
        lines.append(f"[{table}]")
        lines.extend(f"{k} = {_toml_value(v, f'{table}.{k}')}" for k, v in keys.items())
    return "\n".join(lines) + "\n"


def train(
    config: Union[PathLike, Dict[str, Any], None] = None,
    data: Optional[PathLike] = None,
    out: Optional[PathLike] = None,
    resume: Union[bool, PathLike] = False,
    progress: bool = True,
    *,
    dataset: Optional[str] = None,
    epochs: Optional[int] = None,
    seed: Optional[int] = None,
    device: Optional[str] = None,
    test: bool = True,
    force: bool = False,
) -> Dict[str, Any]:
    """Trains a model as ``nade train`` does; returns the run's summary (a dict).

    ``config``: a run file's path, or its content as a dict of tables (``{"model": {"kind":
    "nade", ...}, "train": {...}, ...}``, the keys of docs/config.md). ``data``, ``out``,
    ``dataset``, ``epochs``, ``seed``, ``device`` override the file as the CLI's flags do.
    ``resume``: True continues the run in ``out`` (or the file's output.dir); a path
    continues the run in that folder (``config`` may then be None). ``test=False`` leaves
    the test set alone (for sweeps). Ctrl-C stops between two minibatches with every file
    saved, then raises KeyboardInterrupt; ``train(..., resume=True)`` goes on from there.
    """
    if isinstance(config, dict):
        if "output" not in config and out is not None:
            # The file's one required table, given by out= already.
            config = {**config, "output": {"dir": _path(out)}}
        text, is_path = _config_toml(config), False
    elif config is None:
        text, is_path = None, False
    else:
        text, is_path = _path(config), True
    resume_dir: Optional[str] = None
    if resume is True and config is None and out is None:
        raise ValueError("resume=True: give the run's config or out=, or resume=<run folder>")
    if resume is True and config is None:
        resume_dir = _path(out)  # type: ignore[arg-type]
    elif resume is not True and resume not in (False, None):
        resume_dir = _path(resume)  # type: ignore[arg-type]
    summary = _nade.train(
        text,
        is_path,
        resume=resume_dir,
        resume_here=resume is True and config is not None,
        data=None if data is None else _path(data),
        dataset=dataset,
        out=None if out is None else _path(out),
        epochs=epochs,
        seed=seed,
        device=device,
        progress=progress,
        test=test,
        force=force,
    )
    return json.loads(summary)


def read_amat(path: PathLike) -> np.ndarray:
    """A ``.amat`` file (one vector of 0/1 values per line) as uint8 (rows, n)."""
    data, rows, n = _nade.read_amat(_path(path))
    return _rows_out(data, np.uint8, (rows, n))


def write_amat(path: PathLike, x: Any) -> None:
    """Writes 0/1 vectors (B, n) or (n,) as a ``.amat`` file (atomically: a whole file or
    none)."""
    data, rows, n, _ = _binary_rows(x, None, "x")
    _nade.write_amat(_path(path), data, rows, n)


def save_grid(
    x: Any,
    path: PathLike,
    scale: int = 2,
    shape: Optional[Tuple[int, int]] = None,
    columns: Optional[int] = None,
) -> None:
    """Writes vectors (B, n) as a PNG grid of pictures, as ``nade sample`` draws them.

    ``x``: 0/1 values (1 is white ink on black, the MNIST convention), or floats in
    [0, 1] such as :meth:`Model.conditionals` drawn as gray levels round(255 p). ``shape``:
    each picture's (height, width), default the most nearly square layout of n (28 x 28 for
    784). ``columns``: pictures per grid row (default: a near-square grid).
    """
    a = np.asarray(x)
    if a.ndim == 1:
        a = a.reshape(1, -1)
    if a.ndim != 2:
        raise ValueError(f"x: expected an array of shape (B, n) or (n,), got shape {a.shape}")
    probs = a.dtype.kind == "f" and bool(((a != 0) & (a != 1)).any())
    if probs:
        bad = ~((a >= 0) & (a <= 1))
        if bad.any():
            i, j = (int(k) for k in np.argwhere(bad)[0])
            raise ValueError(f"x[{i}, {j}] = {a[i, j].item()!r}: expected a value in [0, 1]")
        data, (rows, n) = np.ascontiguousarray(a, dtype=np.float32).tobytes(), a.shape
    else:
        data, rows, n, _ = _binary_rows(a, None, "x")
    _nade.save_grid(_path(path), data, rows, n, probs, scale, shape, columns)
