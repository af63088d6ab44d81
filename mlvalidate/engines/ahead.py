"""Engine computations started ahead of the run that asks for them (the demo's overlap).

A PoC computation does not depend on the reference it is later compared with: the nonces and
the request fields are all it needs. `Ahead` starts an engine's one expected `compute` on a
worker thread as soon as it is made; the run pipeline's later `compute` with the same request
waits for that result instead of starting again, and any other request is computed as usual.
Over `AheadPool`'s workers the demo's bake, honest node and cheater run side by side on the
cores, one torch thread each (`torch_threads`); torch releases the GIL inside its kernels.

Ending early (Ctrl-C, an error) stops the computations at their next batch: `AheadPool`'s
exit sets a flag that the engines' progress callbacks turn into an exception.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from .base import EngineResult, PocParams


class _Stopped(Exception):
    """Raised inside a computation that the pool's exit stopped."""


class AheadPool:
    """`with AheadPool(workers) as pool:` the workers that `Ahead` computations run on."""

    def __init__(self, workers: int):
        self.workers = max(1, int(workers))
        self.stop = threading.Event()
        self._ex: ThreadPoolExecutor | None = None

    def __enter__(self) -> "AheadPool":
        self._ex = ThreadPoolExecutor(self.workers, thread_name_prefix="mlvalidate-ahead")
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()  # computations still running end at their next batch
        self._ex.shutdown(wait=True, cancel_futures=True)

    def submit(self, fn, *args) -> Future:
        if self._ex is None:
            raise RuntimeError("use AheadPool as a context manager")
        return self._ex.submit(fn, *args)


class Ahead:
    """`engine`, with its computation of (`nonces`, `params`, `batch_size`) started on `pool` now.

    `progress` (optional) follows that computation from its worker thread, e.g. a bar for the
    one computation a user watches."""

    def __init__(self, engine, pool: AheadPool, nonces: Sequence[int], params: PocParams, batch_size: int,
                 progress=None):
        self.engine = engine
        self.name = engine.name
        self._request = ([int(n) for n in nonces], params, int(batch_size))
        self._stop = pool.stop
        self._progress = progress
        self.cpu_s: float | None = None  # CPU time of its worker thread (all of it with one torch thread)
        self.future = pool.submit(self._run)

    def _tick(self, done: int, total: int) -> None:
        if self._stop.is_set():
            raise _Stopped()
        if self._progress is not None:
            self._progress(done, total)

    def _run(self) -> EngineResult:
        nonces, params, batch_size = self._request
        c = time.thread_time()
        try:
            return self.engine.compute(nonces, params, batch_size=batch_size, progress=self._tick)
        finally:
            self.cpu_s = time.thread_time() - c

    def describe(self) -> dict:
        return self.engine.describe()

    def result(self) -> EngineResult:
        """The computation started ahead (waits for it; re-raises its error)."""
        return self.future.result()

    def compute(self, nonces: Sequence[int], params: PocParams, batch_size: int = 32, progress=None) -> EngineResult:
        if ([int(n) for n in nonces], params, int(batch_size)) != self._request:
            return self.engine.compute(nonces, params, batch_size=batch_size, progress=progress)
        return self.result()  # its progress, if any, was the one given to the constructor


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op threads set to `n` (a process-wide setting) for the block, then restored."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)
