#!/usr/bin/env python3
"""Runs the README's numpy snippet (the shipped NADE's NLL on the first 1,000 test images) and
fails unless it prints the number the README states and `nade eval --limit 1000` agrees.
Run from the repository root after `cargo build --release`; the snippet and `nade eval` read the
test split from where nade finds it: $NADE_DATA_DIR, else data/binarized_mnist.
"""
import contextlib
import io
import json
import re
import subprocess
import sys

readme = open("README.md").read()
stated = re.search(r"prints `NLL ([0-9.]+) nats`", readme).group(1)
# The numpy-only snippet of "Reading a checkpoint in Python" (the "Python" section's example
# is the package's, run by python/tests/test_readme.py).
section = readme.split("## Reading a checkpoint in Python", 1)[1]
snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)

out = io.StringIO()
with contextlib.redirect_stdout(out):
    exec(snippet, {})
printed = out.getvalue().strip()

rust = json.loads(subprocess.run(
    ["target/release/nade", "eval", "checkpoints/nade.safetensors", "--limit", "1000", "--json"],
    check=True, capture_output=True, text=True).stdout)["nll_nats"]

print(f"README states {stated}, the snippet prints `{printed}`, nade eval gives {rust:.4f}")
if printed != f"NLL {stated} nats" or f"{rust:.4f}" != stated:
    sys.exit("README snippet check failed")
