"""Steady rates from a PoC node's counter, read over time.

A node's `total_processed` moves in whole batches: it jumps by the batch size each time a
batch is done. The rate between two readings taken at arbitrary moments is off by up to a
batch at each end: at 20 nonces/s with batch 32, up to ±5 % over a 60 s window.

So the harness reads the counter often and times the moments it CHANGED: each change at the
middle of the two readings that bracket it, so within half the reading period. Between two
changes the node worked through one batch, so the work done by any moment is the counter
interpolated between the changes around it. The rate over a window [a, b] is then the
interpolated count at b minus that at a, over b - a: the window's own nonces, part-batches at
its edges included, with a relative error from timing of at most (reading period) / (b - a).
Without changes on both sides of the window, the rate between its first and last change
(whole batches over their own span) is the fallback.

A reading is (seconds, total). A counter that goes down (a restarted replica) starts over:
only the readings after the last decrease count.
"""

from __future__ import annotations

Reading = tuple[float, int]  # (seconds since the loop started, total_processed)


def _since_restart(readings: list[Reading]) -> list[Reading]:
    start = 0
    for i in range(1, len(readings)):
        if readings[i][1] < readings[i - 1][1]:
            start = i
    return readings[start:]


def changes(readings: list[Reading]) -> list[Reading]:
    """(time, total after the change) of every change of the counter, timed at the middle of
    the two readings that bracket it."""
    r = _since_restart(readings)
    return [((a[0] + b[0]) / 2, b[1]) for a, b in zip(r, r[1:]) if b[1] > a[1]]


def steady_rate(readings: list[Reading]) -> float | None:
    """Nonces/s from the first change of the counter to the last; None with fewer than two."""
    ev = changes(readings)
    if len(ev) < 2 or ev[-1][0] <= ev[0][0]:
        return None
    return (ev[-1][1] - ev[0][1]) / (ev[-1][0] - ev[0][0])


def timing_error_bound(readings: list[Reading]) -> float | None:
    """The largest relative error `steady_rate` can have from timing alone: the two readings
    around the first and the last change, each change known to within half their gap."""
    r = _since_restart(readings)
    gaps = [(b[0] - a[0]) for a, b in zip(r, r[1:]) if b[1] > a[1]]
    ev = changes(readings)
    if len(ev) < 2 or ev[-1][0] <= ev[0][0]:
        return None
    return (gaps[0] / 2 + gaps[-1] / 2) / (ev[-1][0] - ev[0][0])


def window_rate(readings: list[Reading], a: float, b: float) -> tuple[float, float] | None:
    """(nonces/s over [a, b] from the interpolated counter, its largest relative error from
    timing), or None when the counter did not change on both sides of the window."""
    ev = changes(readings)
    na, nb = count_at(ev, a), count_at(ev, b)
    if na is None or nb is None or b <= a:
        return None
    r = _since_restart(readings)
    period = max((y[0] - x[0] for x, y in zip(r, r[1:])), default=0.0)
    return (nb - na) / (b - a), period / (b - a)


def count_at(events: list[Reading], t: float) -> float | None:
    """The counter at time t, interpolated between its changes (None outside them)."""
    if len(events) < 2 or not events[0][0] <= t <= events[-1][0]:
        return None
    for (t0, n0), (t1, n1) in zip(events, events[1:]):
        if t0 <= t <= t1:
            return n0 + (n1 - n0) * (t - t0) / (t1 - t0) if t1 > t0 else float(n1)
    return None


def interval_rates(readings: list[Reading], times: list[float]) -> list[float | None]:
    """Nonces/s over each interval between consecutive `times`, from the interpolated counter
    (None for an interval that is not inside the span of the changes)."""
    ev = changes(readings)
    out: list[float | None] = []
    for a, b in zip(times, times[1:]):
        na, nb = count_at(ev, a), count_at(ev, b)
        out.append((nb - na) / (b - a) if na is not None and nb is not None and b > a else None)
    return out


def sample_rate(a: Reading, b: Reading) -> float | None:
    """The plain rate between two readings (quantised to whole batches); None across a restart."""
    dt, dn = b[0] - a[0], b[1] - a[1]
    return dn / dt if dt > 0 and dn >= 0 else None
