"""Interrupting a run from another thread (a fleet's workers, on Ctrl-C or SIGTERM).

Python delivers signals to the main thread only. A thread that runs a validation binds a
`Token`; the waits a run spends its time in — an HTTP answer (engines/http.py) and the sleeps
between polls and samples (`sleep` here) — check it every fraction of a second and raise
`Interrupted` once it is set, so the worker leaves through the same path as Ctrl-C (the node's
generation is stopped, what came back is kept, the bundle is written). The interrupt is
delivered once: the waits of that clean-up run normally. A thread with no token waits as
before, where a signal reaches it directly.
"""

from __future__ import annotations

import threading
import time

from .errors import Interrupted

SLICE_S = 0.2  # how often a wait looks at its thread's token
_local = threading.local()


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
    """time.sleep that a bound token interrupts (Interrupted)."""
    token = current()
    if token is None:
        time.sleep(max(0.0, seconds))
    else:
        token.wait(max(0.0, seconds))


def join(thread: threading.Thread, seconds: float) -> None:
    """thread.join(seconds) that a bound token interrupts (Interrupted)."""
    token = current()
    if token is None:
        thread.join(seconds)
        return
    end = time.monotonic() + seconds
    while thread.is_alive():
        left = end - time.monotonic()
        if left <= 0:
            return
        thread.join(min(SLICE_S, left))
        token.take()
