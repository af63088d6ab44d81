"""Progress lines for anything slow: rewritten in place on a terminal, sparse plain lines otherwise."""

from __future__ import annotations

import sys
import time


class Progress:
    """`Progress("bake", unit="nonces")(done, total)` — call after each step."""

    def __init__(self, label: str, unit: str = "nonces", stream=None, min_interval: float = 2.0):
        self.label, self.unit = label, unit
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.min_interval = 0.1 if self.tty else min_interval
        self.t0 = time.perf_counter()
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        final = done >= total
        if not final and now - self._last < self.min_interval:
            return
        self._last = now
        el = now - self.t0
        rate = f", {done / el:.1f} {self.unit}/s" if el > 0 and done else ""
        msg = f"  {self.label}: {done}/{total} {self.unit} ({el:.1f} s{rate})"
        if self.tty:
            self.stream.write("\r" + msg + ("\n" if final else ""))
        else:
            self.stream.write(msg + "\n")
        self.stream.flush()
