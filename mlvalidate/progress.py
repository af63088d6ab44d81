"""Progress for anything slow, on tqdm: its own in-place display on a terminal; sparse plain
lines otherwise, so that logs and CI output stay readable (tqdm's carriage-return redraws would
pile up in a file as one endless line).

* `Progress(label, unit)(done, total)` — counts with a rate (bake, validate);
* `StatusLine(label)(elapsed, state, last_line)` — one status line while waiting (launch), with
  `done()` when the wait is over.
"""

from __future__ import annotations

import os
import sys
import time

from tqdm import tqdm


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _width_options(stream) -> dict:
    """tqdm follows the terminal's width; one that reports none (a bare pty) gets 120 columns."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        columns = 0
    return {"dynamic_ncols": True} if columns > 0 else {"ncols": 120}


class Progress:
    """`Progress("bake", unit="nonces")(done, total)` — call after each step.

    On a terminal: a tqdm bar, redrawn at most every 0.1 s and left in place when done.
    Otherwise: a plain line at most every `min_interval` s, and always the final one."""

    def __init__(self, label: str, unit: str = "nonces", stream=None, min_interval: float = 2.0):
        self.label, self.unit = label, unit
        self.stream = stream or sys.stderr
        self.tty = _is_tty(self.stream)
        self.min_interval = 0.1 if self.tty else min_interval
        self.t0 = time.perf_counter()
        self._wall0 = time.time()  # tqdm's clock, for a bar that starts with this object
        self._last = 0.0
        self._bar: tqdm | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.tty:
            self._draw(done, total)
            return
        now = time.perf_counter()
        final = done >= total
        if not final and now - self._last < self.min_interval:
            return
        self._last = now
        el = now - self.t0
        rate = f", {done / el:.1f} {self.unit}/s" if el > 0 and done else ""
        self.stream.write(f"  {self.label}: {done}/{total} {self.unit} ({el:.1f} s{rate})\n")
        self.stream.flush()

    def _draw(self, done: int, total: int) -> None:
        bar = self._bar
        if bar is None or bar.disable:  # the first call, or again after a finished bar
            bar = self._bar = tqdm(total=total, desc=f"  {self.label}", unit=f" {self.unit}", file=self.stream,
                                   mininterval=self.min_interval, leave=True, **_width_options(self.stream))  # fmt: skip
            bar.start_t = bar.last_print_t = min(self._wall0, bar.start_t)
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)
        if done >= total:
            bar.close()  # the final count, then a newline: the bar stays on screen


class StatusLine:
    """One status line while waiting: rewritten in place on a terminal (a tqdm line, cut to the
    terminal's width), a plain line every `interval` s otherwise."""

    def __init__(self, label: str = "launch", stream=None, interval: float = 15.0):
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = _is_tty(self.stream)
        self.interval = 0.0 if self.tty else interval
        self._last = float("-inf")
        self._bar: tqdm | None = None

    def __call__(self, elapsed: float, state: str, last_line: str | None) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        msg = f"  {self.label}: {elapsed:5.0f} s  {state}"
        if last_line:
            msg += f"  | {last_line}"
        if self.tty:
            if self._bar is None:
                self._bar = tqdm(total=None, bar_format="{desc}", file=self.stream, mininterval=0, leave=True,
                                 **_width_options(self.stream))  # fmt: skip
            self._bar.set_description_str(msg)  # redrawn at once, cut to the terminal's width
        else:
            self.stream.write(msg[:300] + "\n")
            self.stream.flush()

    def done(self) -> None:
        """The wait is over: on a terminal the line is left as it is, followed by a newline."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
