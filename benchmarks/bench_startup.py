"""CPU seconds of the quick commands, this tree side by side with the code before (issue 25, point 7).

    python benchmarks/bench_startup.py [--baseline REV | --baseline-dir DIR] [--runs N]

Each command runs as a user runs it (`python -m mlvalidate ...`, a fresh process), alternately from the
baseline tree and from this one (A, B, A, B ...), so a busy machine slows both alike; the CPU time
(user + sys of the child, from os.wait4) is the median of --runs. The baseline is `git archive REV`
of this repository unpacked in a temporary folder (default 3414332, main before issue 25), or a
checkout given with --baseline-dir. Also printed: the heavy modules each side imported (-X importtime),
and the load average before and after. tests/test_cli_startup.py bounds the imports; this measures.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = [
    ["--version"],
    ["config", "list"],
    ["config", "show", "h100x4"],
    ["inspect"],
    ["inspect", "MiniMaxAI/MiniMax-M2.7"],
]
HEAVY = ("torch", "scipy.stats", "scipy", "numpy", "httpx", "psutil", "yaml")


def cpu_seconds(tree: Path, argv: list[str], cwd: Path, importtime: bool = False) -> tuple[float, str]:
    """user+sys CPU of one `python -m mlvalidate ARGV` run from `tree`, and its stderr."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    flags = ["-X", "importtime"] if importtime else []
    p = subprocess.Popen([sys.executable, *flags, "-m", "mlvalidate", *argv], cwd=cwd, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"mlvalidate {' '.join(argv)} exited {p.returncode} from {tree}: {err[-500:]}")
    return usage.ru_utime + usage.ru_stime, err


def heavy_imports(tree: Path, argv: list[str], cwd: Path) -> str:
    _, err = cpu_seconds(tree, argv, cwd, importtime=True)
    mods = {line.rsplit("|", 1)[1].strip() for line in err.splitlines() if line.startswith("import time:")}
    return " ".join(m for m in HEAVY if m in mods) or "-"


def baseline_tree(rev: str, into: Path) -> Path:
    data = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default="3414332", metavar="REV", help="git revision of the code before")
    ap.add_argument("--baseline-dir", type=Path, default=None, help="a checkout of the code before instead")
    ap.add_argument("--runs", type=int, default=5, help="runs per command and tree (the median is shown)")
    args = ap.parse_args()
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        before = args.baseline_dir or baseline_tree(args.baseline, tmp / "before")
        cwd = tmp / "cwd"  # no ./artifacts here: the shipped references are looked up
        cwd.mkdir()
        label = str(args.baseline_dir) if args.baseline_dir else args.baseline
        print(f"{'command':<42} {'before (' + label + ')':>20} {'this tree':>10} {'ratio':>6}   heavy imports "
              "before -> now")
        for argv in COMMANDS:
            a, b = [], []
            cpu_seconds(before, argv, cwd), cpu_seconds(REPO, argv, cwd)  # warm the page cache for both
            for _ in range(args.runs):
                a.append(cpu_seconds(before, argv, cwd)[0])
                b.append(cpu_seconds(REPO, argv, cwd)[0])
            ma, mb = statistics.median(a), statistics.median(b)
            print(f"{'mlvalidate ' + ' '.join(argv):<42} {ma:>18.3f} s {mb:>8.3f} s {ma / mb:>5.1f}x   "
                  f"{heavy_imports(before, argv, cwd)} -> {heavy_imports(REPO, argv, cwd)}")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
