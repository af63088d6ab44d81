"""How many nodes one machine validates at once with `mlvalidate fleet`, and at what cost.

    python benchmarks/fleet_scale.py 8 16 32        # fleet sizes to try

The nodes are loopback reference PoC servers (mlvalidate.server.make_server) over a cheap
synthetic engine (the reference's own vectors for golden nonces, seeded noise for the others,
SLEEP_S per batch standing in for the GPU), all in ONE child process, so that this process's
CPU time and peak RSS are the harness's alone: the client side of the fleet. Each node gets a
400-nonce validation (50 requests of 8) and a short throughput phase with its spot-check.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N_NONCES, K, BATCH, SLEEP_S = 400, 12, 8, 0.02


def make_reference(path: Path) -> None:
    from mlvalidate.artifacts import reference_document

    rng = np.random.default_rng(0)
    v = rng.standard_normal((N_NONCES, K)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    doc = reference_document(model="bench/synthetic", seq_len=16, k_dim=K, block_hash="H", public_key="P",
                             nonces=np.arange(N_NONCES, dtype=np.int64), vectors=v.astype(np.float16),
                             dist_threshold=0.2, stat_test={"p_mismatch": 0.1, "fraud_threshold": 0.05})
    path.write_text(json.dumps(doc))


class Synthetic:
    name = "synthetic"

    def __init__(self, ref_path: Path):
        from mlvalidate.artifacts import load_reference

        ref = load_reference(str(ref_path))
        self.table = {int(n): ref.vectors[i] for i, n in enumerate(ref.nonces)}

    def describe(self):
        return {"engine": self.name}

    def compute(self, nonces, params, batch_size=32, progress=None):
        from mlvalidate.engines.base import EngineResult

        time.sleep(SLEEP_S * max(1, len(nonces) // max(1, batch_size)))
        rows = [self.table.get(int(n), np.random.default_rng(int(n)).standard_normal(K)) for n in nonces]
        return EngineResult(nonces=np.array(nonces, np.int64), vectors=np.array(rows, np.float16),
                            requested=list(nonces), batch_size=batch_size, elapsed_s=0.0)


def serve(n: int, ref_path: Path) -> None:
    """Child: n servers over one synthetic engine; prints their URLs, then waits for stdin to close."""
    import threading

    import mlvalidate.server as srv

    srv.CALLBACK_INTERVAL_SEC = 0.3
    eng = Synthetic(ref_path)
    urls = []
    for _ in range(n):
        s = srv.make_server(eng, "bench/synthetic")
        threading.Thread(target=s.serve_forever, daemon=True).start()
        urls.append(s.url)
    print(json.dumps(urls), flush=True)
    sys.stdin.read()


def measure(n: int, ref_path: Path, work: Path) -> dict:
    child = subprocess.Popen([sys.executable, __file__, "--serve", str(n), str(ref_path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        urls = json.loads(child.stdout.readline())
        from mlvalidate.cli import main

        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        rc = main(["fleet", "--reference", str(ref_path), "--batch-size", str(BATCH), "--timeout", "120",
                   "--concurrency", str(n), "--warmup-seconds", "1", "--measure-seconds", "2",
                   "--sample-interval", "1", "--out", str(work / f"fleet-{n}"),
                   *sum((["--url", u] for u in urls), [])])
        wall = time.monotonic() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        child.stdin.close()
        child.wait(30)
    rcc = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = json.loads((work / f"fleet-{n}" / "fleet.json").read_text())
    return {"nodes": n, "exit_code": rc, "verdicts": summary["verdict_counts"], "wall_s": round(wall, 1),
            "client_cpu_s": round((r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime), 1),
            "client_peak_rss_mib": round(r1.ru_maxrss / 1024),
            "client_rss_before_mib": round(rss0 / 1024), "servers_cpu_s_cumulative": round(rcc.ru_utime + rcc.ru_stime, 1),
            "per_node_wall_s_median": float(np.median([x["wall_s"] for x in summary["nodes"]]))}


if __name__ == "__main__":
    if sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), Path(sys.argv[3]))
        sys.exit(0)
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        ref = work / "ref.json"
        make_reference(ref)
        rows = []
        for n in [int(a) for a in sys.argv[1:]] or [8, 16, 32]:
            with open(os.devnull, "w") as quiet:
                old = sys.stdout
                sys.stdout = quiet
                try:
                    row = measure(n, ref, work)
                finally:
                    sys.stdout = old
            rows.append(row)
            print(json.dumps(row), flush=True)
