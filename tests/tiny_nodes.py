"""What the loopback-node tests share (test_fleet, test_fault_suite, test_fresh): the tiny
MiniMax-M2 in fp32 as the honest engine, its 4-bit copy as the cheater, one small golden
reference baked from the honest engine, and a lock that lets several servers share one engine.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from mlvalidate.bake import bake_reference
from mlvalidate.engines.base import PocParams
from mlvalidate.engines.reference import ReferenceEngine

MODEL = "test/tiny-minimax"
N, SEQ, BATCH = 24, 32, 8  # reference nonces, seq_len, chunk size
STAT = {"dist_threshold": 0.2, "p_mismatch": 0.1, "fraud_threshold": 0.05}


def honest_engine(checkpoint: Path) -> ReferenceEngine:
    return ReferenceEngine(checkpoint, dtype="fp32", model_id=MODEL)


def cheat_engine(checkpoint: Path, folder: Path) -> ReferenceEngine:
    """The same checkpoint quantized to 4 bits (groups of 32) in `folder`: a node that cuts corners."""
    from mlvalidate.fixtures.quantize import write_quantized_copy

    return ReferenceEngine(write_quantized_copy(checkpoint, folder / "int4", bits=4, group_size=32), dtype="fp32",
                           model_id=MODEL)


def small_reference(engine: ReferenceEngine, folder: Path) -> Path:
    """N nonces at SEQ, baked by `engine`, with STAT's L2 gate written in."""
    path, _ = bake_reference(engine, model_id=MODEL, out=folder / "ref.json", n_nonces=N, batch_size=BATCH,
                             params=PocParams("TEST_BLOCK", "test_pub_keys_v2", SEQ), stat_test=STAT, progress=False)
    doc = json.loads(path.read_text())
    doc["dist_threshold"] = STAT["dist_threshold"]
    path.write_text(json.dumps(doc))
    return path


class Serialized:
    """Servers that share one ReferenceEngine take turns (each server's own lock covers only
    itself; the engine's PoC hooks are not for two threads at once)."""

    lock = threading.Lock()

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name

    def describe(self):
        return self.inner.describe()

    def compute(self, *a, **k):
        with self.lock:
            return self.inner.compute(*a, **k)
