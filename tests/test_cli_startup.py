"""The quick commands stay quick: what `config list`, `config show`, `inspect`, `--version` and `--help`
import (issue 25, point 7).

No timed assertion (the suite runs beside other jobs): each command runs as a user runs it, in its own
Python with `-X importtime`, and the test bounds WHAT it imports. On this 2-core machine scipy.stats
alone costs ~0.6 s of CPU to import (its docstring processing), torch several seconds; `config list`
used to import scipy.stats through the engine module the parser's --in-flight default came from
(about 1 s of CPU quiet, 2.4 s under load). `benchmarks/bench_startup.py` measures the CPU seconds
side by side with the code before.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# never for these commands: the PoC engines' and reports' dependencies
HEAVY = {"torch", "transformers", "vllm", "scipy.stats", "scipy.optimize", "scipy.spatial", "matplotlib",
         "httpx", "psutil", "jinja2", "safetensors", "huggingface_hub", "pynvml", "ray"}
# and these need no numpy at all (profiles are YAML, the version is package metadata)
NO_NUMPY = HEAVY | {"numpy", "scipy"}

COMMANDS = [
    (["--version"], NO_NUMPY),
    (["--help"], NO_NUMPY),
    (["config", "list"], NO_NUMPY),
    (["config", "show", "h100x4"], NO_NUMPY),
    (["config", "show", "h100x4", "--format", "yaml"], NO_NUMPY),
    (["config", "show", "h100x4", "--format", "node-json"], NO_NUMPY),
    (["config", "show", "h100x4", "--format", "command"], NO_NUMPY),
    (["inspect"], HEAVY),
    (["inspect", "MiniMaxAI/MiniMax-M2.7"], HEAVY),
    (["inspect", "MiniMaxAI/MiniMax-M2.7", "--json"], HEAVY),
    (["inspect", "Qwen/Qwen3-235B-A22B-Instruct-2507-FP8"], HEAVY),
]


def imported(argv: list[str], cwd: Path) -> tuple[set[str], subprocess.CompletedProcess]:
    """The modules `python -X importtime -m mlvalidate ARGV` imported, and the finished process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "mlvalidate", *argv], capture_output=True,
                       text=True, cwd=cwd, env=env, timeout=300)
    mods = set()
    for line in r.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2 and "cumulative" not in line:
            mods.add(line.rsplit("|", 1)[1].strip())
    return mods, r


@pytest.mark.parametrize("argv,forbidden", COMMANDS, ids=[" ".join(a) for a, _ in COMMANDS])
def test_a_quick_command_imports_nothing_heavy(argv, forbidden, tmp_path):
    mods, r = imported(argv, tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "mlvalidate.cli" in mods  # the parse worked: it saw the imports
    heavy = sorted(m for m in mods if m in forbidden or m.split(".")[0] in forbidden)
    assert heavy == [], f"mlvalidate {' '.join(argv)} imported {heavy}"


def test_the_check_sees_a_heavy_import(tmp_path):
    """A negative control: a command that needs scipy.stats (the binomial test of `check`) shows it."""
    ref = REPO / "artifacts" / "minimaxai-minimax-m2.7.json"
    mods, r = imported(["check", str(ref), str(ref)], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "scipy.stats" in mods and "numpy" in mods
