"""Distances, the binomial fraud test and the fail-closed comparison (spec §4, §9)."""

from __future__ import annotations

import json
from fractions import Fraction
from math import comb

import numpy as np
import pytest

import spec_oracle as oracle
from mlvalidate.poc import (
    SERVER_DEFAULTS,
    StatTest,
    Verdict,
    binomial_p_value,
    compare_vectors,
    fraud_cutoff,
    l2_distances,
)

MINIMAX = StatTest(dist_threshold=0.75, p_mismatch=0.1, fraud_threshold=0.05)


def exact_tail(m: int, n: int, p: float) -> float:
    """P(X >= m), X ~ Bin(n, p), summed in exact rationals (independent of scipy)."""
    q = Fraction(str(p))  # the decimal value: 0.1 -> 1/10
    return float(sum(comb(n, i) * q**i * (1 - q) ** (n - i) for i in range(m, n + 1)))


def unit_rows(n: int, k: int = 12, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, k))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16).astype(np.float32)


def honest(n: int = 200, seed: int = 0):
    """Reference and a computed copy with small numeric noise (distance << 0.75)."""
    ref = unit_rows(n, seed=seed)
    noise = np.random.default_rng(seed + 1).standard_normal(ref.shape).astype(np.float32) * 0.01
    return np.arange(n), ref, np.arange(n), ref + noise


# ----------------------------------------------------------------------------------------
# binomial test
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "n, p, alpha, cutoff",
    [(200, 0.1, 0.05, 28), (200, 0.001, 0.01, 3), (1000, 0.1, 0.05, 117)],
)
def test_fraud_cutoffs(n, p, alpha, cutoff):
    assert fraud_cutoff(n, p, alpha) == cutoff
    assert binomial_p_value(cutoff, n, p) < alpha <= binomial_p_value(cutoff - 1, n, p)
    assert exact_tail(cutoff, n, p) < alpha <= exact_tail(cutoff - 1, n, p)


def cutoff_by_scipy_alone(n: int, p: float, f: float) -> int | None:
    """The fraud cutoff as it was computed before the log-space tails: scipy's binom.sf for every count,
    then scipy's binomial test (the verdict's) at the edge. The oracle for the cutoff below."""
    from scipy.stats import binom

    if n == 0:
        return None
    hits = np.nonzero(binom.sf(np.arange(n + 1) - 1, n, p) < f)[0]
    if hits.size == 0:
        return None
    cut = int(hits[0])
    while cut > 0 and binomial_p_value(cut - 1, n, p) < f:
        cut -= 1
    while cut <= n and binomial_p_value(cut, n, p) >= f:
        cut += 1
    return cut if cut <= n else None


def test_the_fraud_cutoff_is_the_binomial_tests_own_everywhere():
    """fraud_cutoff finds the count in log space (numpy and math: no scipy.stats import for `inspect` and the
    references' check) and lets scipy's binomial test decide near the threshold: it must equal the cutoff by
    scipy alone for any reference size, rate and threshold, thresholds placed exactly ON a tail value
    (where an ulp decides) and thresholds in the subnormal range included."""
    rng = np.random.default_rng(25)
    cases = 0
    for _ in range(1500):
        n = int(rng.choice([1, 2, 3, 7, 32, 100, 200, 777, 2000, 20000]))
        p = float(rng.choice([1e-4, 1e-3, 0.01, 0.1, 0.5, 0.9, 0.999, rng.uniform(1e-4, 0.9999)]))
        kind = rng.integers(0, 4)
        if kind == 0:  # exactly a tail value: the edge, decided by the binomial test
            f = binomial_p_value(int(rng.integers(0, n + 1)), n, p)
            if not 0 < f < 1:
                continue
            f = float(np.nextafter(f, rng.choice([0.0, 1.0]))) if rng.integers(0, 2) else f
        elif kind == 1:
            f = float(10 ** rng.uniform(-320, -250))  # where float tails lose digits
        else:
            f = float(10 ** rng.uniform(-15, -0.01))
        assert fraud_cutoff(n, p, f) == cutoff_by_scipy_alone(n, p, f), (n, p, f)
        cases += 1
    assert cases > 1200


def test_the_fraud_cutoff_of_a_reference_needs_no_scipy_stats():
    """`inspect REFERENCE` prints the cutoff: away from the edge it is found without importing scipy.stats."""
    import subprocess
    import sys

    code = ("import sys; from mlvalidate.poc.stats import fraud_cutoff; "
            "c = (fraud_cutoff(200, 0.1, 0.05), fraud_cutoff(1000, 0.1, 0.05)); "
            "print(c, 'scipy.stats' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["(28,", "117)", "False"], out.stdout + out.stderr  # test_fraud_cutoffs' values


def test_minimax_p_values():
    assert round(binomial_p_value(27, 200, 0.1), 4) == 0.0672
    assert round(binomial_p_value(28, 200, 0.1), 4) == 0.0434
    for m in (0, 1, 20, 27, 28, 60):
        assert binomial_p_value(m, 200, 0.1) == pytest.approx(exact_tail(m, 200, 0.1), rel=1e-9)
    assert binomial_p_value(0, 200, 0.1) == pytest.approx(1.0)


def test_binomial_edge_cases():
    assert binomial_p_value(0, 0, 0.1) == 1.0
    assert fraud_cutoff(0, 0.1, 0.05) is None
    assert fraud_cutoff(1, 0.5, 0.01) is None  # even 1/1 mismatches has p = 0.5
    assert SERVER_DEFAULTS.as_dict() == {"dist_threshold": 0.02, "p_mismatch": 0.001, "fraud_threshold": 0.01}


# ----------------------------------------------------------------------------------------
# compare_vectors
# ----------------------------------------------------------------------------------------
def test_all_close_is_pass():
    c = compare_vectors(*honest(), MINIMAX)
    assert c.n_total == 200 and c.n_mismatch == 0
    assert c.verdict is Verdict.PASS and c.verdict.exit_code == 0
    assert not c.fraud_detected and c.p_value == pytest.approx(1.0)
    assert c.missing_nonces == [] and c.invalid_nonces == [] and c.extra_nonces == []


def test_some_over_threshold_is_pass_with_mismatches():
    rn, rv, gn, gv = honest()
    bad = [3, 50, 51, 199]
    gv[bad] = -rv[bad]  # distance 2
    c = compare_vectors(rn, rv, gn, gv, MINIMAX)
    assert c.mismatch_nonces == bad and c.n_mismatch == 4
    assert c.verdict is Verdict.PASS_WITH_MISMATCHES and c.verdict.exit_code == 0
    assert not c.fraud_detected


def test_fraud_at_the_cutoff():
    rn, rv, gn, gv = honest()
    gv[:27] = -rv[:27]
    assert compare_vectors(rn, rv, gn, gv, MINIMAX).verdict is Verdict.PASS_WITH_MISMATCHES
    gv[:28] = -rv[:28]
    c = compare_vectors(rn, rv, gn, gv, MINIMAX)
    assert c.n_mismatch == 28 and c.fraud_detected
    assert c.verdict is Verdict.FAIL and c.verdict.exit_code != 0


def test_missing_nonce_fails_closed():
    """The node would skip a nonce it has no vector for; the harness counts it as a mismatch
    and, since that vector was never checked, the verdict is INCOMPLETE, not PASS."""
    rn, rv, gn, gv = honest()
    keep = gn != 17
    c = compare_vectors(rn, rv, gn[keep], gv[keep], MINIMAX)
    assert c.n_total == 200  # all reference nonces
    assert c.missing_nonces == [17] and c.mismatch_nonces == [17] and c.n_mismatch == 1
    assert c.missing.sum() == 1 and not c.invalid.any()
    assert np.isnan(c.distances[17])
    assert not c.fraud_detected  # the binomial test alone would pass ...
    assert c.verdict is Verdict.INCOMPLETE and c.verdict.exit_code == 2  # ... but not every vector was checked


def test_many_missing_is_counted_as_mismatches_but_never_called_fraud():
    """A node that returned nothing (it went down) is not proven to cheat: INCOMPLETE, exit 2.
    Missing vectors count as mismatches (never a PASS), but the report's p_value and
    fraud_detected are those of the proven mismatches, so they never contradict the verdict."""
    rn, rv, gn, gv = honest()
    c = compare_vectors(rn, rv, gn[28:], gv[28:], MINIMAX)
    assert c.n_mismatch == 28 and not c.fraud_detected and not c.fraud_proven
    assert c.p_value == pytest.approx(1.0) and c.summary()["n_unchecked"] == 28
    assert c.verdict is Verdict.INCOMPLETE and c.verdict.exit_code == 2
    c = compare_vectors(rn, rv, [], np.zeros((0, 12), np.float32), MINIMAX)
    assert c.n_mismatch == 200 and c.verdict is Verdict.INCOMPLETE


def test_returned_wrong_vectors_prove_fraud_even_with_missing_ones():
    rn, rv, gn, gv = honest()
    gv[:28] = -gv[:28]  # 28 vectors at L2 = 2: fraud by themselves
    c = compare_vectors(rn, rv, gn[:150], gv[:150], MINIMAX)  # and 50 missing
    assert c.fraud_proven and c.verdict is Verdict.FAIL and c.verdict.exit_code == 1


def test_unusable_vectors_are_evidence():
    rn, rv, gn, gv = honest()
    gv[:28] = np.nan
    c = compare_vectors(rn, rv, gn, gv, MINIMAX)
    assert c.n_unchecked == 28 and c.fraud_proven and c.verdict is Verdict.FAIL


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_vector_is_invalid(bad):
    rn, rv, gn, gv = honest()
    gv[9, 4] = bad
    c = compare_vectors(rn, rv, gn, gv, MINIMAX)
    assert c.invalid_nonces == [9] and c.missing_nonces == []
    assert c.mismatch_nonces == [9] and np.isnan(c.distances[9])
    assert c.verdict is Verdict.INCOMPLETE


def test_extra_computed_nonces_are_reported_and_ignored():
    rn, rv, gn, gv = honest()
    extra_v = unit_rows(3, seed=9)
    gn2 = np.concatenate([[1000, 500], gn, [-1]])
    gv2 = np.concatenate([extra_v[:2], gv, extra_v[2:]])
    c = compare_vectors(rn, rv, gn2, gv2, MINIMAX)
    assert c.extra_nonces == [-1, 500, 1000]
    assert c.n_total == 200 and c.verdict is Verdict.PASS
    np.testing.assert_array_equal(c.distances, compare_vectors(rn, rv, gn, gv, MINIMAX).distances)


def test_computed_order_does_not_matter():
    rn, rv, gn, gv = honest()
    perm = np.random.default_rng(3).permutation(200)
    a = compare_vectors(rn, rv, gn, gv, MINIMAX)
    b = compare_vectors(rn, rv, gn[perm], gv[perm], MINIMAX)
    np.testing.assert_array_equal(a.distances, b.distances)


def test_threshold_is_strictly_greater():
    ref = np.zeros((3, 12), np.float32)
    got = np.zeros((3, 12), np.float32)
    got[0, 0] = 0.75  # distance exactly 0.75
    got[1, 0] = np.nextafter(np.float32(0.75), np.float32(1))  # one float32 ulp above
    got[2, 5] = np.nextafter(np.float32(0.75), np.float32(0))  # one ulp below
    c = compare_vectors([0, 1, 2], ref, [0, 1, 2], got, MINIMAX)
    assert c.distances[0] == np.float32(0.75)
    assert c.mismatch.tolist() == [False, True, False]


def test_threshold_compared_in_float32():
    """float32(0.1) > 0.1 in float64; a distance of exactly float32(0.1) is not over a 0.1
    threshold when compared in float32 (as torch does with a float32 distance)."""
    st = StatTest(dist_threshold=0.1, p_mismatch=0.1, fraud_threshold=0.05)
    ref = np.zeros((2, 12), np.float32)
    got = np.zeros((2, 12), np.float32)
    got[0, 3] = np.float32(0.1)
    got[1, 3] = np.nextafter(np.float32(0.1), np.float32(1))
    c = compare_vectors([0, 1], ref, [0, 1], got, st)
    assert float(c.distances[0]) > 0.1  # as float64
    assert c.mismatch.tolist() == [False, True]


@pytest.mark.parametrize("side", ["reference", "computed"])
def test_duplicate_nonces_raise(side):
    rn, rv, gn, gv = honest(10)
    if side == "reference":
        rn = rn.copy()
        rn[4] = 3
    else:
        gn = gn.copy()
        gn[9] = 0
    with pytest.raises(ValueError, match=side):
        compare_vectors(rn, rv, gn, gv, MINIMAX)


def test_empty_reference_is_incomplete():
    c = compare_vectors([], np.zeros((0, 12), np.float32), [1, 2], unit_rows(2), MINIMAX)
    assert c.n_total == 0 and c.p_value == 1.0 and not c.fraud_detected
    assert c.verdict is Verdict.INCOMPLETE and c.verdict.exit_code == 2


def test_summary_is_json_and_consistent():
    rn, rv, gn, gv = honest()
    gv[5] = -rv[5]
    keep = gn != 6
    s = compare_vectors(rn, rv, gn[keep], gv[keep], MINIMAX).summary()
    json.dumps(s)
    assert s["verdict"] == "INCOMPLETE" and s["n_total"] == 200 and s["n_mismatch"] == 2
    assert s["n_over_threshold"] == 1 and s["n_missing"] == 1 and s["n_invalid"] == 0
    assert s["mismatch_nonces"] == [5, 6] and s["missing_nonces"] == [6]
    assert s["fraud_cutoff"] == 28
    assert s["distance_percentiles"]["p100"] == pytest.approx(2.0, abs=1e-3)


# ----------------------------------------------------------------------------------------
# distances
# ----------------------------------------------------------------------------------------
def test_distances_equal_loop():
    a = unit_rows(5000, seed=1)
    b = unit_rows(5000, seed=2)
    got = l2_distances(a, b, device="cpu")
    assert got.dtype == np.float32 and got.shape == (5000,)
    np.testing.assert_array_max_ulp(got, oracle.distances_loop(a, b), maxulp=2)
    np.testing.assert_allclose(got, np.linalg.norm(a.astype(np.float64) - b, axis=1), rtol=1e-6)


def test_compare_distances_equal_loop():
    rn, rv, gn, gv = honest(500)
    c = compare_vectors(rn, rv, gn, gv, MINIMAX)
    np.testing.assert_array_max_ulp(c.distances, oracle.distances_loop(rv, gv), maxulp=2)


def test_distances_in_blocks_match_the_loop_and_keep_nan_rows():
    from mlvalidate.poc import stats

    n = 2 * stats._L2_ROWS_PER_STEP + 5  # a partial last block
    a, b = unit_rows(n, seed=3), unit_rows(n, seed=4)
    a[7] = np.nan  # compare_vectors hands over NaN rows for missing vectors
    b[n - 1, 3] = np.inf
    got = l2_distances(a, b)
    want = oracle.distances_loop(a, b)
    assert got.dtype == np.float32 and np.isnan(got[7]) and np.isinf(got[n - 1])
    np.testing.assert_array_max_ulp(got, want, maxulp=2)
    assert l2_distances(a[0], b[0]).shape == ()  # one pair of vectors: still the plain norm
    np.testing.assert_array_equal(l2_distances(a[:3], b[:1]), np.linalg.norm(a[:3] - b[:1], axis=-1))
