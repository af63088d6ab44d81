"""Interrupting a run from another thread (a fleet's workers, on Ctrl-C or SIGTERM).

Python delivers signals to the main thread only. A thread that runs a validation binds a
`Token`; the waits a run spends its time in — an HTTP answer (http_client.py) and the sleeps
between polls and samples (`sleep` here) — check it every fraction of a second and raise
`Interrupted` once it is set, so the worker leaves through the same path as Ctrl-C (the node's
generation is stopped, what came back is kept, the bundle is written). The interrupt is
delivered once: the waits of that clean-up run normally. A thread with no token (the main
thread) is interrupted by the signal itself, raised from its waits.

Every wait here is cut in slices of SLICE_S, also in the main thread. The kernel hands a
process-directed signal to any thread that does not block it; CPython's C handler only notes it
there, and the Python handler runs in the main thread at its next bytecode. A main thread
blocked in one long join or sleep is then not woken: a SIGTERM while a poll hung waited out the
run's 60 s deadline (seen once in a loaded suite; tests/test_interrupts.py sends the signal to
another thread every time).

In the main thread, the commands that run a validation install `on_signal` for SIGINT and
SIGTERM (`handling_signals`): it raises `Interrupted` at once, except inside `held()` — the
few steps that must not be cut in half (loading the inputs, writing the bundle and the
report) — where the signal is held and the step's owner decides what it means once the step
is done (the run is then recorded as interrupted, and its bundle still written).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time

from .errors import Interrupted

SLICE_S = 0.2  # how often a wait looks at its thread's token
_local = threading.local()
_holds: list[held] = []  # the main thread's open held() blocks, innermost last


class Token:
    """What a controlling thread hands a worker: `request()` an interrupt, which the worker
    raises once, at its next wait."""

    def __init__(self) -> None:
        self._pending = threading.Event()
        self.signal_name = "SIGINT (Ctrl-C)"
        self.delivered = False

    def request(self, signal_name: str) -> None:
        self.signal_name = signal_name
        self._pending.set()

    def take(self) -> None:
        """Raise the requested interrupt (once)."""
        if self._pending.is_set():
            self._pending.clear()
            self.delivered = True
            raise Interrupted(self.signal_name)

    def wait(self, seconds: float) -> None:
        """Sleep `seconds`, or raise the interrupt as soon as it is requested."""
        if self._pending.wait(seconds):
            self.take()


def bind(token: Token | None) -> None:
    """The token of the calling thread (None: unbind)."""
    _local.token = token


def current() -> Token | None:
    return getattr(_local, "token", None)


def check() -> None:
    token = current()
    if token is not None:
        token.take()


def sleep(seconds: float) -> None:
    """time.sleep that a bound token interrupts (Interrupted); without a token it sleeps in
    slices, so that a signal handed to another thread is raised here within SLICE_S."""
    token = current()
    if token is not None:
        token.wait(max(0.0, seconds))
        return
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(SLICE_S, left))


def join(thread: threading.Thread, seconds: float) -> None:
    """thread.join(seconds), in slices: a bound token interrupts it (Interrupted), and in the
    main thread a signal handed to another thread is raised here within SLICE_S."""
    token = current()
    end = time.monotonic() + seconds
    while thread.is_alive():
        left = end - time.monotonic()
        if left <= 0:
            return
        thread.join(min(SLICE_S, left))
        if token is not None:
            token.take()


# ----------------------------------------------------------------------------------------
# signals in the main thread
# ----------------------------------------------------------------------------------------
def signal_name(signum: int) -> str:
    return {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM"}.get(signum) or signal.Signals(signum).name


def on_signal(signum, frame) -> None:
    """The handler of SIGINT and SIGTERM while a command runs: Interrupted, or held (see held())."""
    name = signal_name(signum)
    if _holds:
        for h in _holds:
            h.signal = h.signal or name
        return
    raise Interrupted(name)


class held:
    """A block that a signal must not cut in half (the main thread only; elsewhere it holds
    nothing): SIGINT/SIGTERM arriving inside it are recorded in `signal` (the first one's name)
    instead of raising. The owner reads `signal` after the block and ends the run its own way."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._main = threading.current_thread() is threading.main_thread()

    def __enter__(self) -> held:
        if self._main:
            _holds.append(self)
        return self

    def __exit__(self, *exc) -> None:
        if self._main and self in _holds:
            _holds.remove(self)


@contextlib.contextmanager
def handling_signals():
    """SIGINT and SIGTERM end the run like Ctrl-C (`on_signal`) for the duration of the block;
    the previous handlers are put back after it."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    sigs = (signal.SIGINT, signal.SIGTERM)
    old = {s: signal.signal(s, on_signal) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
