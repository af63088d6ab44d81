"""Benchmark: the harness's own cost against a synthetic PoC node (benchmarks/synthetic_node.py).

    PYTHONPATH=$PWD python benchmarks/bench_harness.py [--service-ms 50] [--reps 3] [--quick]

(a) Pipelined validation. The node computes each chunk in a known service time. For each
    way of fetching (wait=true one at a time, or N chunks queued), `validate`'s run on 200
    nonces reports: the node's idle fraction between its first and last chunk (from the node's
    own log; target < 1 % at 50 ms per chunk), and the time to the verdict against the ideal,
    chunks x service time.
(b) Throughput truth. The node's loop has a known rate with a warm-up ramp and jitter. The
    harness's steady rate is set against the truth (the nonces the node computed in the
    harness's measuring window, from the node's log; target within 1 %), next to the plain
    rate between the first and last sample (what the harness reported before) and the node's
    cumulative average (what Gonka's validate.py reports, warm-up included), each with its error.

The node runs in its own process on loopback; everything is measured side by side in one run.
Not a test: the figures depend on the machine and its load, which is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_node import MODEL, vector_for  # noqa: E402

from mlvalidate.artifacts import reference_document, write_json  # noqa: E402
from mlvalidate.http_client import HttpClient  # noqa: E402
from mlvalidate.pipeline import RunOptions, run_live  # noqa: E402
from mlvalidate.results import outcome  # noqa: E402
from mlvalidate.throughput import measure_throughput  # noqa: E402

TARGET_IDLE = 0.01
TARGET_TRUTH = 0.01
N_NONCES = 200


class Node:
    def __init__(self, tmp: Path, name: str, **opts):
        self.log = tmp / f"{name}.jsonl"
        args = [sys.executable, str(Path(__file__).with_name("synthetic_node.py")), "--log", str(self.log)]
        for k, v in opts.items():
            args += [f"--{k.replace('_', '-')}", str(v)]
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        line = self.p.stdout.readline()
        if not line.startswith("URL "):
            raise SystemExit(f"the synthetic node did not start: {line!r}")
        self.url = line.split()[1]

    def entries(self, since: float = 0.0) -> list[dict]:
        if not self.log.exists():
            return []
        rows = [json.loads(x) for x in self.log.read_text().splitlines() if x.strip()]
        return [r for r in rows if r["start"] >= since]

    def close(self) -> None:
        self.p.terminate()
        self.p.wait(10)


def write_reference(path: Path) -> Path:
    nonces = np.arange(N_NONCES)
    doc = reference_document(
        model=MODEL, seq_len=16, k_dim=12, block_hash="BENCH", public_key="bench", block_height=1, node_id=0,
        node_count=1, nonces=nonces, vectors=np.stack([vector_for(int(n)) for n in nonces]),
        dist_threshold=0.02, stat_test={"dist_threshold": 0.02, "p_mismatch": 0.001, "fraud_threshold": 0.01},
        source="bench_harness: the synthetic node's vectors")  # fmt: skip
    write_json(path, doc)
    return path


def idle_fraction(rows: list[dict]) -> tuple[float, float]:
    """(idle share between the first chunk's start and the last one's end, that span in s)."""
    span = rows[-1]["end"] - rows[0]["start"]
    busy = sum(r["end"] - r["start"] for r in rows)
    return max(0.0, 1 - busy / span), span


def bench_pipeline(tmp: Path, service_ms: float, reps: int, batches: list[int]) -> bool:
    print(f"\n(a) pipelined validation: {N_NONCES} nonces, a node that takes {service_ms:g} ms per chunk")
    node = Node(tmp, "validate", service_ms=service_ms)
    ref = write_reference(tmp / "ref.json")
    ok = True
    try:
        print(f"  {'batch':>5}  {'fetch':<16} {'idle (median)':>14} {'verdict in':>11} {'ideal':>7} "
              f"{'x ideal':>8}  verdict")
        for batch in batches:
            chunks = -(-N_NONCES // batch)
            ideal = chunks * service_ms / 1000
            for label, in_flight in (("wait=true", 0), ("queued, 1", 1), ("queued, 2", 2), ("queued, 4", 4)):
                idles, walls, verdicts = [], [], set()
                for _ in range(reps):
                    t0 = time.monotonic()
                    run = run_live(RunOptions(url=node.url, reference=str(ref), batch_size=batch, timeout_s=60,
                                              progress=False, in_flight=in_flight), log=lambda m: None)
                    walls.append(time.monotonic() - t0)
                    verdicts.add(outcome(run).verdict)
                    idles.append(idle_fraction(node.entries(since=t0))[0])
                idle, wall = statistics.median(idles), statistics.median(walls)
                mark = ""
                if in_flight == 4 and service_ms >= 50:
                    mark = "  PASS" if idle < TARGET_IDLE else "  MISS"
                    ok &= idle < TARGET_IDLE
                print(f"  {batch:>5}  {label:<16} {100 * idle:>12.2f} % {wall:>9.3f} s {ideal:>5.2f} s "
                      f"{wall / ideal:>7.2f}x  {'/'.join(sorted(verdicts))}{mark}")
        print(f"  target: idle < {100 * TARGET_IDLE:g} % with 4 queued (the default); 'verdict in' is the whole "
              "`validate` run (reference load, model check, fetch, comparison), median of", reps)
    finally:
        node.close()
    return ok


def truth(rows: list[dict], a: float, b: float) -> float:
    """Nonces/s the node computed in [a, b] (monotonic clock), each chunk's work spread over its time."""
    done = 0.0
    for r in rows:
        ov = min(r["end"], b) - max(r["start"], a)
        if ov > 0:
            done += r["n"] * ov / (r["end"] - r["start"])
    return done / (b - a)


# (batch, ms per batch, ramp s, jitter, harness warm-up s, --measure-seconds, --sample-interval)
THROUGHPUT_CASES = {
    "fast batches": (8, 50.0, 4.0, 0.2, 6.0, 20.0, 10.0),
    "a GPU node's pace (batch 32 at 20 nonces/s)": (32, 1600.0, 5.0, 0.1, 8.0, 20.0, 10.0),
}


def bench_throughput(tmp: Path, reps: int, quick: bool) -> bool:
    ok, errs = True, []
    print("\n(b) throughput truth: the node's loop with a warm-up ramp (3x slower at first, falling to 1x) and "
          "jitter; truth = the nonces it computed in the harness's window / the window (from the node's log)")
    print(f"  {'case':<44} {'run':>3} {'truth':>7} {'harness':>7} {'error':>7} {'(bound)':>8} {'samples':>7} "
          f"{'error':>7} {'cumul.':>7} {'error':>7} {'intervals':>9}")
    for case, (batch, service_ms, ramp_s, jitter, warm, measure, interval) in THROUGHPUT_CASES.items():
        if quick:
            warm, measure, interval = warm / 2 + ramp_s / 2, measure / 2, interval / 2
        for i in range(reps):
            node = Node(tmp, f"loop{len(errs)}", service_ms=service_ms, ramp_s=ramp_s, jitter=jitter, seed=i)
            try:
                body = {"block_hash": "BENCH", "block_height": 1, "public_key": "bench", "node_id": 0,
                        "node_count": 1, "params": {"model": MODEL, "seq_len": 16, "k_dim": 12}}
                res = measure_throughput(HttpClient(node.url, deadline_s=30), body, batch_size=batch, warmup_s=warm,
                                         measure_s=measure, sample_interval_s=interval, callback_host=None,
                                         log=lambda m: None)
                rows = node.entries()
            finally:
                node.close()
            s = res.summary()
            key = res.replica_keys()[0]
            a, b = res.started_at + res.samples[0]["elapsed_s"], res.started_at + res.samples[-1]["elapsed_s"]
            t = truth(rows, a, b)
            got, plain, cum = s.steady_nonces_per_second, res.sampled_steady(key), s.rates.node_cumulative
            err = got / t - 1
            errs.append(err)
            ok &= abs(err) <= TARGET_TRUTH and s.n_samples - 1 >= 3
            bound = f"±{100 * s.timing_error:.2f}%" if s.timing_error is not None else "n/a"
            label = f"{case}, {batch} per {service_ms:g} ms, ±{100 * jitter:g} %" if i == 0 else ""
            print(f"  {label:<44} {i:>3} {t:>7.2f} {got:>7.2f} {100 * err:>+6.2f}% {bound:>8} {plain:>7.2f} "
                  f"{100 * (plain / t - 1):>+6.2f}% {cum:>7.2f} {100 * (cum / t - 1):>+6.2f}% {s.n_samples - 1:>9}")
        print(f"  {'':<44} harness: warm-up {warm:g} s, --measure-seconds {measure:g} --sample-interval {interval:g}")
    print(f"  worst harness error {100 * max(abs(e) for e in errs):.2f} % -> {'PASS' if ok else 'MISS'} "
          f"(target within {100 * TARGET_TRUTH:g} % and at least 3 intervals); 'samples' is the plain rate between "
          "the first and last sample, 'cumul.' the node's own cumulative average (warm-up included)")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--service-ms", type=float, default=50.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="shorter throughput windows")
    args = ap.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}, "
          f"python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        a = bench_pipeline(Path(tmp), args.service_ms, args.reps, [32, 8])
        b = bench_throughput(Path(tmp), args.reps, args.quick)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    return 0 if a and b else 1


if __name__ == "__main__":
    raise SystemExit(main())
