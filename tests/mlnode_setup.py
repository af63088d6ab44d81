"""Where Gonka's real MLNode lies, and its Python environment for the tests.

`python tests/mlnode_setup.py` (part of the README's test command, so `.ci/run` runs it) makes
the venv the tests start the MLNode with: `python -m venv --system-site-packages` (torch comes
from this interpreter) plus the MLNode's own pins, `requirements-cpu.txt` of the counterpart
(its HTTP layer: fastapi, starlette, uvicorn, httpx, pydantic, huggingface-hub ... as in its
poetry.lock), which shadow this interpreter's newer ones inside the venv only. Run again, it
does nothing unless those pins changed. Without ../shared beside the checkout there is nothing
to set up: it says so and exits 0 (the tests then skip).

The venv is `.venv-mlnode/` in the checkout (git-ignored), or $MLVALIDATE_MLNODE_VENV.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAMP = ".mlvalidate-requirements-sha256"


def shared_dir() -> Path | None:
    """../shared beside the checkout; in a git worktree, beside its main checkout too."""
    candidates = [REPO.parent / "shared"]
    git = REPO / ".git"
    if git.is_file() and git.read_text().startswith("gitdir:"):  # <main>/.git/worktrees/<name>
        candidates.append(Path(git.read_text().split(":", 1)[1].strip()).parents[2].parent / "shared")
    return next((c for c in candidates if c.is_dir()), None)


def counterpart() -> Path | None:
    shared = shared_dir()
    path = shared / "counterparts" / "gonka-mlnode" if shared else None
    return path if path and (path / "api" / "src" / "api" / "app.py").is_file() else None


def venv_dir() -> Path:
    return Path(os.environ.get("MLVALIDATE_MLNODE_VENV") or REPO / ".venv-mlnode")


def _pins_hash(mlnode: Path) -> str:
    return hashlib.sha256((mlnode / "requirements-cpu.txt").read_bytes()).hexdigest()


def missing() -> str | None:
    """Why the real MLNode cannot be started here (one line), or None."""
    mlnode = counterpart()
    if mlnode is None:
        return "Gonka's MLNode is not here (../shared/counterparts/gonka-mlnode beside the checkout)"
    stamp = venv_dir() / STAMP
    if not stamp.is_file() or stamp.read_text().strip() != _pins_hash(mlnode):
        return f"the MLNode's venv {venv_dir()} is missing or stale: run `python tests/mlnode_setup.py`"
    return None


def python() -> Path:
    return venv_dir() / "bin" / "python"


def setup() -> int:
    mlnode = counterpart()
    if mlnode is None:
        print("mlnode_setup: no ../shared/counterparts/gonka-mlnode beside the checkout: nothing to set up "
              "(the real-MLNode tests will skip)")
        return 0
    if missing() is None:
        print(f"mlnode_setup: {venv_dir()} is up to date")
        return 0
    t0 = time.monotonic()
    steps = [[sys.executable, "-m", "venv", "--system-site-packages", str(venv_dir())],
             [str(python()), "-m", "pip", "install", "-q", "-r", str(mlnode / "requirements-cpu.txt")]]
    for cmd in steps:
        # pip lists every conflict with this interpreter's packages it sees through the venv: only
        # the venv's own pins matter here, so its output is shown only when it fails
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            sys.stderr.write(done.stdout + done.stderr)
            print(f"mlnode_setup: failed: {' '.join(cmd)} (exit {done.returncode})", file=sys.stderr)
            return 1
    (venv_dir() / STAMP).write_text(_pins_hash(mlnode) + "\n")
    print(f"mlnode_setup: the MLNode's venv {venv_dir()} is ready ({time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(setup())
