"""The README's Python example runs as printed and prints the NLL its comment states."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_readme_python_example(tmp_path, monkeypatch):
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    example = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    stated = re.search(r'print\(f"NLL .*?# ([0-9.]+), as nade eval', example).group(1)
    data = Path(os.environ.get("NADE_DATA_DIR", REPO.parent / "shared/data/binarized_mnist"))
    if not (data / "binarized_mnist_test.amat").exists():
        if os.environ.get("CI"):
            pytest.fail(f"binarized MNIST not found at {data}")
        pytest.skip(f"binarized MNIST not found at {data}")
    # Run where a user runs it: a folder with checkpoints/ in it; the PNG lands there.
    (tmp_path / "checkpoints").symlink_to(REPO / "checkpoints")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NADE_DATA_DIR", str(data))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(example, {})
    assert out.getvalue().strip() == f"NLL {stated} nats"
    assert (tmp_path / "completions.png").read_bytes()[:4] == b"\x89PNG"
