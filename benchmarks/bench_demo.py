"""Wall time of `mlvalidate demo`, per step, against its 45 s target (measured, not asserted).

    python benchmarks/bench_demo.py [--runs N] [--workers W] [--torch-threads T] [--out DIR]

Times the imports (torch, transformers, mlvalidate's demo: what `mlvalidate demo` pays before
its first step), then each step of `run_demo`: the tiny checkpoint, the cheating copy, loading
the three models, the bake, the honest and the cheating validation (a validation step's wall
time is what is left of its computation once the bake is done, plus its comparison and
bundle), and for each computation its own wall time and its worker thread's CPU time. Prints the process's user+sys
time, the CPU count, the load average and CPU pressure before and after (the machine may be
shared: a figure means little without them), and the figures the README quotes: verdict,
mismatches, p-value, median and p90 L2.

`--workers 1 --torch-threads 2` is the layout before the computations ran side by side (one at
a time, torch's default two threads on two cores).
"""

from __future__ import annotations

import time

T_IMPORT = time.perf_counter()

import argparse  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402,F401

from mlvalidate import demo  # noqa: E402

IMPORT_S = time.perf_counter() - T_IMPORT
TARGET_S = 45.0


def machine_load() -> str:
    one, five, fifteen = os.getloadavg()
    text = f"load average {one:.2f} {five:.2f} {fifteen:.2f}"
    try:  # Linux PSI: the share of time some runnable task waited for a CPU
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0].split()
        text += ", cpu pressure " + " ".join(f for f in some[1:3])
    except (OSError, IndexError):
        pass
    return text


def one_run(out: Path, workers: int | None, threads: int) -> tuple[float, float]:
    before = os.times()
    print(f"  before: {machine_load()}", flush=True)
    res = demo.run_demo(out, progress=False, workers=workers, threads=threads)
    after = os.times()
    cpu = (after.user - before.user) + (after.system - before.system)
    print(f"  after:  {machine_load()}")
    print(f"\n  {'step':<14}{'wall s':>8}")
    for name, s in res.steps.items():
        print(f"  {name:<14}{s:>8.1f}")
    print(f"  {'demo total':<14}{res.seconds:>8.1f}   (+ imports {IMPORT_S:.1f} s on the first run)")
    print(f"\n  {'computation':<14}{'wall s':>8}{'cpu s':>8}   ({res.workers} worker(s), torch threads {threads}; "
          "cpu s: its worker thread's, all of it only at 1 torch thread)")
    for name, c in res.compute.items():
        print(f"  {name:<14}{c['wall_s']:>8.1f}{c['cpu_s']:>8.1f}")
    print(f"  process user+sys {cpu:.1f} s over {res.seconds:.1f} s of demo\n")
    print(f"  {'run':<9}{'verdict':<22}{'mismatch':>10}{'p-value':>10}{'median L2':>11}{'p90 L2':>9}")
    for name, r in res.runs.items():
        c = r.comparison
        d = c.distances[np.isfinite(c.distances)]
        print(f"  {name:<9}{c.verdict.value:<22}{f'{c.n_mismatch}/{c.n_total}':>10}{c.p_value:>10.3g}"
              f"{np.median(d):>11.4f}{np.percentile(d, 90):>9.4f}")
    print(f"  demo {'OK' if res.ok else 'FAILED'}")
    return res.seconds, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--workers", type=int, default=None, help="computations side by side (default: the demo's)")
    ap.add_argument("--torch-threads", type=int, default=demo.DEMO_TORCH_THREADS)
    ap.add_argument("--out", default=None, help="keep the demo's output here (default: a temporary folder)")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"CPUs: {os.cpu_count()} ({cores} usable), torch {torch.__version__} "
          f"({torch.backends.cpu.get_cpu_capability()}), imports {IMPORT_S:.1f} s")
    totals = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            print(f"\nrun {i + 1}/{args.runs}")
            out = Path(args.out) / f"run{i + 1}" if args.out else Path(tmp) / f"run{i + 1}"
            totals.append(one_run(out, args.workers, args.torch_threads))
    first = totals[0][0] + IMPORT_S
    print(f"\ndemo wall with imports (first run): {first:.1f} s, target <= {TARGET_S:.0f} s: "
          f"{'met' if first <= TARGET_S else 'NOT met'}; every run: "
          + ", ".join(f"{w:.1f} s (user+sys {c:.1f} s)" for w, c in totals))


if __name__ == "__main__":
    main()
