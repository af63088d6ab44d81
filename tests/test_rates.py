"""Steady rates from a node's counter (mlvalidate/rates.py) and the measuring schedule.

The node here is a list of batch completion times drawn with a warm-up ramp and jitter; the
counter is what a status route would answer at each reading (batch size x batches done).
The truth is computed from the completion times themselves, not with the code under test.
"""

import numpy as np
import pytest

from mlvalidate.rates import (changes, count_at, interval_rates, sample_rate, steady_rate, timing_error_bound,
                              window_rate)
from mlvalidate.throughput import MIN_INTERVALS, reading_period, schedule

BATCH = 32


def completions(seed: int, rate: float = 20.0, jitter: float = 0.3, ramp_s: float = 20.0, until: float = 120.0):
    """Batch completion times: service = BATCH/rate, three times slower at t=0 falling to 1x at
    ramp_s, times a uniform jitter of +-`jitter`."""
    rng = np.random.default_rng(seed)
    t, out = 0.0, []
    while t < until:
        slow = 1 + 2 * max(0.0, 1 - t / ramp_s)
        t += BATCH / rate * slow * (1 + jitter * rng.uniform(-1, 1))
        out.append(t)
    return np.array(out)


def read(done: np.ndarray, times) -> list[tuple[float, int]]:
    return [(float(t), BATCH * int(np.searchsorted(done, t, side="right"))) for t in times]


def truth(done: np.ndarray, a: float, b: float) -> float:
    """Nonces per second computed in [a, b], a batch's work spread evenly over its service time."""
    starts = np.concatenate([[0.0], done[:-1]])
    overlap = np.clip(np.minimum(done, b) - np.maximum(starts, a), 0, None)
    return float((BATCH * overlap / (done - starts)).sum() / (b - a))


@pytest.mark.parametrize("seed", range(5))
def test_the_rate_between_counter_changes_is_within_its_stated_timing_error(seed):
    done = completions(seed)
    w0, w1 = 30.0, 90.0  # after the ramp
    readings = read(done, np.arange(w0, w1 + 1e-9, 0.25))
    ev = changes(readings)
    # the truth between the first and last change in the window: whole batches over their own span
    first = done[np.searchsorted(done, ev[0][0] - 0.25)]
    last = done[np.searchsorted(done, ev[-1][0] - 0.25)]
    exact = BATCH * (np.searchsorted(done, last, side="right") - np.searchsorted(done, first, side="right")) / (
        last - first)
    got = steady_rate(readings)
    bound = timing_error_bound(readings)
    assert bound is not None and bound <= 0.25 / (ev[-1][0] - ev[0][0]) + 1e-12
    assert abs(got / exact - 1) <= bound + 1e-9
    # and it is close to the node's true rate over the whole window (the jitter averages out)
    assert abs(got / truth(done, w0, w1) - 1) < 0.02


@pytest.mark.parametrize("seed", range(5))
def test_the_windows_rate_is_the_work_done_in_it_within_the_timing_error(seed):
    """A GPU node's pace: batch 32 every ~1.6 s with jitter; a 20 s window. Read from one interval
    before the window to one change after it, the interpolated counter gives the work done in
    the window, part-batches included."""
    done = completions(seed, rate=20.0, jitter=0.1, ramp_s=5.0)
    a, b = 30.0 + seed * 0.31, 50.0 + seed * 0.31
    readings = read(done, np.arange(a - 6.0, b + 2.0, 0.167))
    rate, bound = window_rate(readings, a, b)
    assert bound == pytest.approx(0.167 / 20, rel=0.01)
    assert abs(rate / truth(done, a, b) - 1) <= bound
    assert window_rate(readings, a - 10.0, b) is None  # no change before the window's start


def test_samples_alone_are_off_by_whole_batches():
    """Three 20 s samples see the counter jump by whole batches: the plain rate between them can
    be far off; the change-timed one is not (same node, same window)."""
    worst_plain, worst_changes = 0.0, 0.0
    for seed in range(20):
        done = completions(seed, jitter=0.0, ramp_s=1e-9, rate=20.0)
        w0, w1 = 30.123 + seed * 0.37, 90.123 + seed * 0.37
        t = truth(done, w0, w1)
        plain = sample_rate(*read(done, [w0, w1]))
        fine = steady_rate(read(done, np.arange(w0, w1 + 1e-9, 0.25)))
        worst_plain = max(worst_plain, abs(plain / t - 1))
        worst_changes = max(worst_changes, abs(fine / t - 1))
    assert worst_plain > 0.01 and worst_changes < 0.005  # a 60 s window, 1.6 s batches


def test_a_restart_starts_the_count_over():
    r = [(0.0, 0), (1.0, 32), (2.0, 64), (3.0, 0), (4.0, 32), (5.0, 64), (6.0, 96)]
    assert changes(r) == [(3.5, 32), (4.5, 64), (5.5, 96)]
    assert steady_rate(r) == pytest.approx(32.0)
    assert sample_rate(r[2], r[3]) is None


def test_interpolated_interval_rates_and_the_edges():
    r = [(t, 10 * int(t)) for t in np.arange(0.0, 10.01, 0.5)]  # +10 at every whole second
    ev = changes(r)
    assert count_at(ev, ev[0][0] - 0.1) is None and count_at(ev, ev[-1][0]) == 100
    rates = interval_rates(r, [0.0, 2.75, 5.75, 8.75, 10.0])
    assert rates[0] is None and rates[-1] is None  # outside the changes' span
    assert rates[1] == pytest.approx(10.0) and rates[2] == pytest.approx(10.0)
    assert steady_rate([(0.0, 0), (1.0, 0)]) is None and timing_error_bound([(0.0, 5)]) is None


@pytest.mark.parametrize("measure,interval,n,every", [
    (60, 10, 6, 10.0), (20, 10, 3, 20 / 3), (65, 10, 6, 65 / 6), (1.5, 0.5, 3, 0.5), (5, 100, 3, 5 / 3),
])  # fmt: skip
def test_the_window_always_holds_at_least_three_intervals(measure, interval, n, every):
    assert schedule(measure, interval) == (n, pytest.approx(every))
    assert n >= MIN_INTERVALS and n * every == pytest.approx(measure)
    assert 0.02 <= reading_period(every) <= 0.25
