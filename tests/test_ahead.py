"""Computations started ahead (the demo's overlap) give what the engine gives when asked
directly, compute anything else afresh, and stop when their pool closes."""

import threading

import numpy as np
import pytest

from mlvalidate.engines.ahead import Ahead, AheadPool, torch_threads
from mlvalidate.engines.base import EngineResult, PocParams
from mlvalidate.engines.reference import ReferenceEngine

PARAMS = PocParams(block_hash="TEST_BLOCK", public_key="test_pub_keys_v2", seq_len=16)


def test_side_by_side_vectors_equal_one_after_another(tiny_minimax_fp8):
    engines = {d: ReferenceEngine(tiny_minimax_fp8, dtype=d) for d in ("bf16", "fp32")}
    direct = {d: e.compute(range(6), PARAMS, batch_size=4).vectors for d, e in engines.items()}
    with torch_threads(1), AheadPool(2) as pool:
        ahead = {d: Ahead(e, pool, range(6), PARAMS, 4) for d, e in engines.items()}
        got = {d: a.compute(list(range(6)), PARAMS, batch_size=4) for d, a in ahead.items()}
    for d in engines:
        assert np.array_equal(got[d].vectors, direct[d]) and got[d].info["threads"] == 1
        assert ahead[d].cpu_s is not None and ahead[d].describe()["dtype"] == d


class Recorder:
    """An engine that records its requests; `gate` holds the first one until it is set."""

    name = "recorder"

    def __init__(self):
        self.calls, self.gate = [], threading.Event()

    def describe(self) -> dict:
        return {"engine": self.name}

    def compute(self, nonces, params, batch_size=32, progress=None) -> EngineResult:
        self.calls.append((list(nonces), batch_size))
        for i in range(1, 1000):
            if progress is not None:
                progress(i, 1000)
            if self.gate.wait(0.01):
                break
        return EngineResult(np.asarray(nonces, np.int64), np.zeros((len(nonces), 12), np.float16), list(nonces),
                            batch_size, 0.0)


def test_another_request_is_computed_afresh():
    eng = Recorder()
    eng.gate.set()
    with AheadPool(1) as pool:
        a = Ahead(eng, pool, range(3), PARAMS, 2)
        a.result()
        a.compute([0, 1, 2], PARAMS, batch_size=2)  # the one started ahead: not again
        a.compute([0, 1], PARAMS, batch_size=2)  # another: computed now
    assert eng.calls == [([0, 1, 2], 2), ([0, 1], 2)]


def test_closing_the_pool_stops_a_running_computation():
    eng = Recorder()  # its gate never opens: it would run for ~10 s
    with AheadPool(1) as pool:
        a = Ahead(eng, pool, range(3), PARAMS, 2)
        while not eng.calls:  # started, not merely queued
            threading.Event().wait(0.01)
    with pytest.raises(Exception) as e:
        a.result()
    assert type(e.value).__name__ == "_Stopped" and a.future.done()
