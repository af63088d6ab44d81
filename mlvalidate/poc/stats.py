"""Batched comparison of computed vs reference vectors and the binomial fraud test (spec §4).

The node's own rule skips nonces it has no vector for. The harness fails closed instead:
a reference nonce with no usable computed vector (not returned, dropped as NaN, empty,
undecodable, wrong length, non-finite, or answered twice with different vectors) is counted
as a mismatch, and because it could not be checked the verdict can never be PASS while any
such nonce exists. Malformed entries (no valid nonce) also block a PASS.

Verdict: FAIL when the vectors that did come back prove fraud (distance past the gate, or
unusable); INCOMPLETE when the rest is missing or the answer was malformed — a node that went
down is not proven to cheat, but it has not passed either; otherwise PASS /
PASS-with-mismatches. The reported p_value and fraud_detected are those of the proven
mismatches (past the gate or unusable), so a report never says "fraud" next to a verdict
that is not FAIL; n_mismatch counts every mismatch, missing ones included.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class StatTest:
    dist_threshold: float
    p_mismatch: float
    fraud_threshold: float

    def as_dict(self) -> dict:
        return {
            "dist_threshold": self.dist_threshold,
            "p_mismatch": self.p_mismatch,
            "fraud_threshold": self.fraud_threshold,
        }


# vLLM's StatTestModel and MLNode's defaults (§4); stricter than any chain value.
SERVER_DEFAULTS = StatTest(dist_threshold=0.02, p_mismatch=0.001, fraud_threshold=0.01)


class Verdict(str, enum.Enum):
    PASS = "PASS"
    PASS_WITH_MISMATCHES = "PASS-with-mismatches"
    FAIL = "FAIL"
    INCOMPLETE = "INCOMPLETE"

    @property
    def exit_code(self) -> int:
        return {"PASS": 0, "PASS-with-mismatches": 0, "FAIL": 1, "INCOMPLETE": 2}[self.value]

    @property
    def description(self) -> str:
        return {
            "PASS": "PASS",
            "PASS-with-mismatches": "PASS (with mismatches within stat-test tolerance)",
            "FAIL": "FAIL (fraud detected)",
            "INCOMPLETE": "INCOMPLETE (not every reference vector could be checked)",
        }[self.value]


def load_binomial_test() -> None:
    """Import scipy.stats now. `binomial_p_value` imports it on first use (~0.6 s of CPU, which the quick
    commands never pay); a run calls this while its inputs load, where signals are held, because an
    import that a signal cuts short leaves scipy half-initialised and the verdict then fails on it."""
    import scipy.stats  # noqa: F401


def binomial_p_value(n_mismatch: int, n_total: int, p_mismatch: float) -> float:
    """One-sided binomial test P(X >= n_mismatch), X ~ Bin(n_total, p_mismatch); 1.0 if n_total == 0."""
    if n_total == 0:
        return 1.0
    from scipy.stats import binomtest  # imported on first use: scipy.stats alone costs ~0.6 s of CPU

    return float(binomtest(int(n_mismatch), int(n_total), float(p_mismatch), alternative="greater").pvalue)


def log_binomial_tails(n_total: int, p_mismatch: float) -> np.ndarray:
    """log P(X >= m), X ~ Bin(n_total, p_mismatch), for m = 0..n_total: the pmf from math.lgamma in log
    space, summed from the right (relative error ~1e-13 for any n a reference holds). numpy and math
    only: reading a reference's cutoff needs no scipy.stats, whose import alone costs ~0.6 s of CPU."""
    m = np.arange(n_total + 1)
    lg = np.array([math.lgamma(k + 1) for k in range(n_total + 1)])
    log_pmf = lg[n_total] - lg - lg[::-1] + m * math.log(p_mismatch) + (n_total - m) * math.log1p(-p_mismatch)
    return np.logaddexp.accumulate(log_pmf[::-1])[::-1]


EDGE = 1e-9  # in log: a tail this close to fraud_threshold is decided by the verdict's own binomial test ...
SUBNORMAL_ZONE = 1e-250  # ... and so is any threshold this small, where float tails lose their digits


def fraud_cutoff(n_total: int, p_mismatch: float, fraud_threshold: float) -> int | None:
    """Smallest mismatch count declared fraud (p-value < fraud_threshold), None if none is. Always the
    count at which `binomial_p_value` (what the verdict uses) first falls under the threshold: the log-space
    tails find it, and where a tail lies within EDGE of the threshold scipy's binomial test decides."""
    if n_total == 0:
        return None
    if not 0 < p_mismatch < 1:
        return _cutoff_by_binomial_test(n_total, p_mismatch, fraud_threshold, n_total + 1)
    log_tail = log_binomial_tails(n_total, p_mismatch)
    log_f = np.log(fraud_threshold)
    hits = np.nonzero(log_tail < log_f)[0]
    cut = int(hits[0]) if hits.size else n_total + 1
    # lgamma's rounding grows with its magnitude: the window widens with n (1e-9 up to n ~ 10^5)
    window = EDGE + 64 * np.finfo(float).eps * math.lgamma(n_total + 1)
    near = [c for c in (cut - 1, cut) if 0 <= c <= n_total and abs(log_tail[c] - log_f) <= window]
    if near or fraud_threshold < SUBNORMAL_ZONE:  # the verdict's test decides, as it does when a run is judged
        return _cutoff_by_binomial_test(n_total, p_mismatch, fraud_threshold, cut)
    return cut if cut <= n_total else None


def _cutoff_by_binomial_test(n_total: int, p_mismatch: float, fraud_threshold: float, cut: int) -> int | None:
    """The fraud cutoff by `binomial_p_value` alone, searched from `cut` (near it: a step or two)."""
    while cut > 0 and binomial_p_value(cut - 1, n_total, p_mismatch) < fraud_threshold:
        cut -= 1
    while cut <= n_total and binomial_p_value(cut, n_total, p_mismatch) >= fraud_threshold:
        cut += 1
    return cut if cut <= n_total else None


def l2_distances(a, b, device=None) -> np.ndarray:
    """Row-wise L2 distance of two [N, k] arrays, in float32, batched: numpy by default (in
    blocks of rows); on a torch device (e.g. "cuda") when one is named and torch is installed."""
    da = np.asarray(a, dtype=np.float32)
    db = np.asarray(b, dtype=np.float32)
    if device is None or str(device) == "cpu":
        if da.ndim == 2 and da.shape == db.shape:
            return _l2_rows(da, db)
        return np.linalg.norm(da - db, axis=-1).astype(np.float32, copy=False)
    import torch  # only for an explicit device: torch is optional

    ta, tb = torch.as_tensor(da, device=device), torch.as_tensor(db, device=device)
    return torch.linalg.vector_norm(ta - tb, dim=-1).cpu().numpy()


_L2_ROWS_PER_STEP = 1 << 14  # rows of differences held at once: they stay in cache


def _row_dot(d: np.ndarray, out: np.ndarray) -> None:
    if hasattr(np, "vecdot"):  # numpy >= 2: np.dot row by row (bit-identical in bench_poc)
        np.vecdot(d, d, out=out)
    else:
        np.einsum("ij,ij->i", d, d, out=out)


def _l2_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sqrt(sum((a - b)**2)) per row of two float32 [N, k] arrays, in float32, a block of rows
    at a time: no [N, k] temporary, and one dot product per row."""
    n, k = a.shape
    out = np.empty(n, dtype=np.float32)
    diff = np.empty((min(n, _L2_ROWS_PER_STEP), k), dtype=np.float32)
    for lo in range(0, n, _L2_ROWS_PER_STEP):
        hi = min(n, lo + _L2_ROWS_PER_STEP)
        d = diff[: hi - lo]
        np.subtract(a[lo:hi], b[lo:hi], out=d)
        _row_dot(d, out[lo:hi])
    return np.sqrt(out, out=out)


@dataclass
class Comparison:
    """Outcome of comparing computed vectors with a reference, per reference nonce."""

    stat_test: StatTest
    nonces: np.ndarray  # [N] reference nonces, reference order
    distances: np.ndarray  # [N] float32 L2, NaN where no usable computed vector
    missing: np.ndarray  # [N] bool: no computed vector for this nonce
    invalid: np.ndarray  # [N] bool: a computed vector exists but is unusable (non-finite)
    extra_nonces: list[int] = field(default_factory=list)  # answered without being asked (or not in the reference)
    conflicting_nonces: list[int] = field(default_factory=list)  # answered with different vectors (invalid too)
    malformed: list[str] = field(default_factory=list)  # entries naming no valid nonce (first few reasons)
    n_malformed: int = 0

    @property
    def n_total(self) -> int:
        return int(self.nonces.size)

    @property
    def over_threshold(self) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return self.distances > np.float32(self.stat_test.dist_threshold)

    @property
    def mismatch(self) -> np.ndarray:
        return self.over_threshold | self.missing | self.invalid

    @property
    def n_mismatch(self) -> int:
        return int(self.mismatch.sum())

    @property
    def n_unchecked(self) -> int:
        return int((self.missing | self.invalid).sum())

    @property
    def mismatch_nonces(self) -> list[int]:
        return [int(n) for n in self.nonces[self.mismatch]]

    @property
    def missing_nonces(self) -> list[int]:
        return [int(n) for n in self.nonces[self.missing]]

    @property
    def invalid_nonces(self) -> list[int]:
        return [int(n) for n in self.nonces[self.invalid]]

    @property
    def proven_mismatch(self) -> np.ndarray:
        """Mismatches shown by what came back: past the gate, or an unusable vector."""
        return self.over_threshold | self.invalid

    @property
    def p_value(self) -> float:
        """Binomial p-value of the proven mismatches (missing vectors prove nothing)."""
        return binomial_p_value(int(self.proven_mismatch.sum()), self.n_total, self.stat_test.p_mismatch)

    @property
    def fraud_proven(self) -> bool:
        """Fraud by the vectors that came back alone (past the gate or unusable), missing ones aside."""
        return self.n_total > 0 and self.p_value < self.stat_test.fraud_threshold

    @property
    def fraud_detected(self) -> bool:
        """The same as fraud_proven: a report never says fraud unless the verdict is FAIL."""
        return self.fraud_proven

    @property
    def verdict(self) -> Verdict:
        if self.n_total == 0:
            return Verdict.INCOMPLETE  # nothing was checked: never a PASS
        if self.fraud_proven:
            return Verdict.FAIL
        if self.n_unchecked or self.n_malformed:
            return Verdict.INCOMPLETE
        return Verdict.PASS if self.n_mismatch == 0 else Verdict.PASS_WITH_MISMATCHES

    def distance_percentiles(self, qs=(0, 50, 90, 99, 100)) -> dict[str, float | None]:
        d = self.distances[np.isfinite(self.distances)]
        if d.size == 0:
            return {f"p{q}": None for q in qs}
        return {f"p{q}": float(v) for q, v in zip(qs, np.percentile(d, qs))}

    def summary(self) -> dict:
        return {
            "verdict": self.verdict.value,
            "n_total": self.n_total,
            "n_mismatch": self.n_mismatch,
            "n_over_threshold": int(self.over_threshold.sum()),
            "n_missing": int(self.missing.sum()),
            "n_invalid": int(self.invalid.sum()),
            "p_value": self.p_value,
            "fraud_detected": self.fraud_detected,
            "n_unchecked": self.n_unchecked,
            "fraud_cutoff": fraud_cutoff(self.n_total, self.stat_test.p_mismatch, self.stat_test.fraud_threshold),
            "stat_test": self.stat_test.as_dict(),
            "mismatch_nonces": self.mismatch_nonces,
            "missing_nonces": self.missing_nonces,
            "invalid_nonces": self.invalid_nonces,
            "extra_nonces": list(self.extra_nonces),
            "conflicting_nonces": list(self.conflicting_nonces),
            "n_malformed": self.n_malformed,
            "malformed": list(self.malformed),
            "distance_percentiles": self.distance_percentiles(),
        }


def compare_vectors(
    ref_nonces,
    ref_vectors,
    got_nonces,
    got_vectors,
    stat_test: StatTest,
    device=None,
) -> Comparison:
    """Align computed vectors to the reference nonces and compare them all at once.

    ref_vectors [N, k], got_vectors [M, k] (float; NaN/Inf rows are 'invalid', rows of
    the wrong width are rejected by the caller's decoder). Duplicate nonces on either side
    are an error: which vector would count is ambiguous.
    """
    rn = np.asarray(ref_nonces, dtype=np.int64).reshape(-1)
    gn = np.asarray(got_nonces, dtype=np.int64).reshape(-1)
    for name, arr in (("reference", rn), ("computed", gn)):
        u, c = np.unique(arr, return_counts=True)
        if (c > 1).any():
            raise ValueError(f"duplicate nonces in the {name} vectors: {u[c > 1][:10].tolist()}")
    if rn.size == 0:  # nothing to compare (the verdict is INCOMPLETE); reshape(0, -1) would fail
        empty = np.zeros(0, dtype=bool)
        return Comparison(stat_test, rn, np.zeros(0, np.float32), empty, empty.copy(), [int(x) for x in np.unique(gn)])
    rv = np.asarray(ref_vectors, dtype=np.float32).reshape(rn.size, -1)
    k = rv.shape[1]
    gv = np.asarray(got_vectors, dtype=np.float32).reshape(gn.size, k) if gn.size else np.zeros((0, k), np.float32)

    order = np.argsort(gn, kind="stable")
    sorted_gn = gn[order]
    pos = np.searchsorted(sorted_gn, rn)
    pos_c = np.minimum(pos, max(gn.size - 1, 0))
    found = (pos < gn.size) & (sorted_gn[pos_c] == rn) if gn.size else np.zeros(rn.size, bool)
    aligned = np.full_like(rv, np.nan)
    aligned[found] = gv[order[pos_c[found]]]

    finite = np.isfinite(aligned).all(axis=1)
    invalid = found & ~finite
    dist = l2_distances(rv, aligned, device=device)
    dist[~(found & finite)] = np.nan
    extra = np.setdiff1d(gn, rn).tolist()
    return Comparison(stat_test, rn, dist.astype(np.float32), ~found, invalid, [int(x) for x in extra])


def compare_intake(ref_nonces, ref_vectors, intake, stat_test: StatTest, device=None) -> Comparison:
    """compare_vectors over what an `intake.Intake` resolved: its rows, plus the nonces it
    found conflicting, unrequested or malformed, so the report lists them all."""
    comp = compare_vectors(ref_nonces, ref_vectors, intake.nonces, intake.vectors, stat_test, device=device)
    comp.extra_nonces = sorted(set(comp.extra_nonces) | set(intake.unrequested))
    comp.conflicting_nonces = list(intake.conflicting)
    comp.malformed = list(intake.malformed)
    comp.n_malformed = intake.n_malformed
    return comp


def node_side_validation(computed: dict[int, np.ndarray], received_b64: dict[int, str], n_total: int,
                         stat_test: StatTest) -> dict:
    """The NODE's own validation rule (spec §4), as a Gonka vLLM server answers it.

    Lenient where the harness is strict: a computed nonce whose received vector is absent or
    empty is skipped (not a mismatch); n_total still counts every requested nonce. Only the
    reference PoC server uses this, to answer like a real node; the harness never trusts it.
    """
    from .codec import VectorDecodeError, decode_vectors

    mismatch = []
    thr = np.float32(stat_test.dist_threshold)
    for nonce, vec in computed.items():
        b64 = received_b64.get(nonce)
        if not b64:
            continue
        try:
            got = decode_vectors([b64])[0]
        except VectorDecodeError:
            raise ValueError(f"undecodable vector_b64 for nonce {nonce}") from None
        want = np.asarray(vec, dtype=np.float32)
        if got.shape != want.shape or not np.isfinite(got).all():
            mismatch.append(nonce)
        elif np.float32(np.linalg.norm(want - got)) > thr:
            mismatch.append(nonce)
    p = binomial_p_value(len(mismatch), n_total, stat_test.p_mismatch)
    return {"n_total": n_total, "n_mismatch": len(mismatch), "mismatch_nonces": mismatch,
            "p_value": p, "fraud_detected": p < stat_test.fraud_threshold}
