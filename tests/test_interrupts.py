"""Waits in the main thread notice a signal that the kernel handed another thread.

A process-directed SIGINT/SIGTERM goes to any thread that does not block it. CPython's C
handler then only notes it; the Python handler runs in the main thread at its next bytecode. A
main thread blocked in one long `thread.join(60)` or `time.sleep(60)` is not woken (no EINTR
there), so the run ended at its 60 s deadline instead of at the signal: seen once in a full
suite at load 2 (test_signals, "validation: a poll that hangs", SIGTERM: exit 60.1 s after it).
Here the signal is sent to a helper thread on purpose (signal.pthread_kill), every time.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest

from mlvalidate import interrupts
from mlvalidate.errors import Interrupted

WAIT_S = 60.0  # what the main thread would wait without noticing the signal


def signal_from_another_thread(sig: int, after_s: float = 0.3) -> threading.Thread:
    """A thread that sends `sig` to itself: its C handler runs there, not in the main thread."""
    def go():
        time.sleep(after_s)
        signal.pthread_kill(threading.get_ident(), sig)

    t = threading.Thread(target=go, name="signalled", daemon=True)
    t.start()
    return t


@pytest.fixture
def handlers():
    assert threading.current_thread() is threading.main_thread()
    with interrupts.handling_signals():
        yield


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_join_in_the_main_thread_notices_a_signal_delivered_to_another_thread(handlers, sig):
    never = threading.Event()
    busy = threading.Thread(target=never.wait, args=(WAIT_S * 2,), daemon=True)
    busy.start()
    signal_from_another_thread(sig)
    t0 = time.monotonic()
    try:
        with pytest.raises(Interrupted) as e:
            interrupts.join(busy, WAIT_S)
    finally:
        never.set()
    assert time.monotonic() - t0 < WAIT_S / 2, "the join ran to its end before the signal was handled"
    assert e.value.signal_name == interrupts.signal_name(sig)


def test_sleep_in_the_main_thread_notices_a_signal_delivered_to_another_thread(handlers):
    signal_from_another_thread(signal.SIGTERM)
    t0 = time.monotonic()
    with pytest.raises(Interrupted):
        interrupts.sleep(WAIT_S)
    assert time.monotonic() - t0 < WAIT_S / 2, "the sleep ran to its end before the signal was handled"


def test_the_waits_still_last_their_time_and_end_when_the_thread_does():
    t0 = time.monotonic()
    interrupts.sleep(0.5)
    assert time.monotonic() - t0 >= 0.5
    done = threading.Thread(target=time.sleep, args=(0.3,))
    done.start()
    interrupts.join(done, WAIT_S)
    assert not done.is_alive()
    never = threading.Event()
    alive = threading.Thread(target=never.wait, args=(WAIT_S,), daemon=True)
    alive.start()
    t0 = time.monotonic()
    interrupts.join(alive, 0.5)  # its timeout, then back with the thread still running
    assert alive.is_alive() and time.monotonic() - t0 >= 0.5
    never.set()
