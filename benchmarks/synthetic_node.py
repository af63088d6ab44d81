"""A synthetic PoC node for the benchmarks: mlvalidate's own PoC server (the real HTTP API,
its /generate queue and its init/generate loop) in front of an engine that computes nothing.

Each compute of a chunk takes a known service time (`--service-ms`), optionally slower at
first (`--ramp-s`, `--ramp-factor`: the factor falls linearly to 1 over the ramp, which starts
again after the node has been idle for a second) and with a uniform jitter (`--jitter 0.2`:
x0.8 to x1.2, seeded). Every compute is logged to `--log` as a JSON line {start, end, n} on
the system's monotonic clock, which the benchmark reads for the truth: when the node was busy
and how much it did. Vectors are a fixed function of the nonce (`vector_for`), so a reference
of them is honest.

    python benchmarks/synthetic_node.py --service-ms 50 --log node.jsonl
prints `URL http://127.0.0.1:PORT` when it listens, and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time

import numpy as np

from mlvalidate.engines.base import EngineResult
from mlvalidate.server import make_server

MODEL = "synthetic/node"


def vector_for(nonce: int, k: int = 12) -> np.ndarray:
    v = np.random.default_rng(nonce).standard_normal(k)
    return (v / np.linalg.norm(v)).astype(np.float16)


class SyntheticEngine:
    name = "synthetic"

    def __init__(self, service_s: float, ramp_s: float, ramp_factor: float, jitter: float, seed: int, log_path):
        self.service_s, self.ramp_s, self.ramp_factor, self.jitter = service_s, ramp_s, ramp_factor, jitter
        self.rng = np.random.default_rng(seed)
        self.log = open(log_path, "a", buffering=1) if log_path else None
        self.ramp_from: float | None = None
        self.last_end = 0.0
        self.lock = threading.Lock()

    def describe(self) -> dict:
        return {"engine": self.name, "service_s": self.service_s}

    def service(self, now: float) -> float:
        if self.ramp_from is None or now - self.last_end > 1.0:
            self.ramp_from = now
        slow = 1.0
        if self.ramp_s > 0:
            slow += (self.ramp_factor - 1) * max(0.0, 1 - (now - self.ramp_from) / self.ramp_s)
        return self.service_s * slow * (1 + self.jitter * self.rng.uniform(-1, 1))

    def compute(self, nonces, params, batch_size: int = 32, progress=None) -> EngineResult:
        with self.lock:
            start = time.monotonic()
            end = start + self.service(start)  # the vectors are made within the service time
            vecs = np.stack([vector_for(int(n), params.k_dim) for n in nonces]) if nonces else np.zeros((0, 12), np.float16)
            while (left := end - time.monotonic()) > 0:
                time.sleep(left)
            end = time.monotonic()
            self.last_end = end
            if self.log:
                self.log.write(json.dumps({"start": start, "end": end, "n": len(nonces)}) + "\n")
        return EngineResult(nonces=np.asarray(nonces, np.int64), vectors=vecs, requested=list(nonces),
                            batch_size=batch_size, elapsed_s=end - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--service-ms", type=float, default=50.0, help="seconds per chunk, in ms")
    ap.add_argument("--ramp-s", type=float, default=0.0)
    ap.add_argument("--ramp-factor", type=float, default=3.0)
    ap.add_argument("--jitter", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log", default=None)
    args = ap.parse_args()
    engine = SyntheticEngine(args.service_ms / 1000, args.ramp_s, args.ramp_factor, args.jitter, args.seed, args.log)
    server = make_server(engine, MODEL)
    signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=server.shutdown).start())
    print(f"URL {server.url}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
