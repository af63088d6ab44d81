"""Plain-text rendering shared by every command that prints a verdict or a distribution."""

from __future__ import annotations

import numpy as np

from ..artifacts import ResolvedStatTest
from ..poc.stats import Comparison, fraud_cutoff


def fmt_float(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def nonce_list(nonces: list[int], limit: int = 20) -> str:
    if not nonces:
        return "none"
    head = ", ".join(str(n) for n in nonces[:limit])
    return head + (f", … (+{len(nonces) - limit} more)" if len(nonces) > limit else "")


def stat_test_line(st: ResolvedStatTest) -> str:
    v = st.values.as_dict()
    return " · ".join(f"{k} {v[k]:g} [{st.sources[k]}]" for k in ("dist_threshold", "p_mismatch", "fraud_threshold"))


def cutoff_line(n_total: int, p_mismatch: float, fraud_threshold: float) -> str:
    cut = fraud_cutoff(n_total, p_mismatch, fraud_threshold)
    if cut is None:
        return f"no mismatch count out of {n_total} is declared fraud at these settings"
    from ..poc.stats import log_binomial_tails

    tails = np.exp(log_binomial_tails(n_total, p_mismatch))  # P(X >= m) to ~1e-11: 4 digits shown, no scipy.stats
    below = float(tails[cut - 1]) if cut > 0 else None
    at = float(tails[cut])
    prev = f"p({cut - 1})={below:.4f}, " if below is not None else ""
    return f"fraud declared at >= {cut} mismatches of {n_total} ({prev}p({cut})={at:.4f} < {fraud_threshold:g})"


def percentiles_line(values: np.ndarray, qs=(0, 5, 50, 95, 100)) -> str:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "n/a"
    ps = np.percentile(v, qs)
    names = {0: "min", 50: "median", 100: "max"}
    parts = [f"{names.get(q, f'p{q}')} {p:.4f}" for q, p in zip(qs, ps)]
    return "  ".join(parts) + f"  mean {v.mean():.4f}"


def histogram(values: np.ndarray, lo: float, hi: float, bins: int = 10, width: int = 40, mark: float | None = None) -> list[str]:
    """Text histogram; `mark` (e.g. the threshold) is flagged on the bin that holds it."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    counts, edges = np.histogram(np.clip(v, lo, hi), bins=bins, range=(lo, hi))
    top = max(int(counts.max()), 1) if counts.size else 1
    lines = []
    for c, a, b in zip(counts, edges[:-1], edges[1:]):
        bar = "█" * int(round(width * c / top))
        flag = "  ◀ threshold" if mark is not None and a <= mark < b else ""
        lines.append(f"  [{a:5.3f}, {b:5.3f})  {int(c):6d} {bar}{flag}")
    return lines


def comparison_block(comp: Comparison, st: ResolvedStatTest) -> list[str]:
    s = comp.summary()
    lines = [
        f"stat test     {stat_test_line(st)}",
        f"              {cutoff_line(comp.n_total, st.values.p_mismatch, st.values.fraud_threshold)}",
        f"result        n_total {s['n_total']}  n_mismatch {s['n_mismatch']} "
        f"(over threshold {s['n_over_threshold']}, missing {s['n_missing']}, invalid {s['n_invalid']})  "
        f"p_value {s['p_value']:.4g}  fraud_detected {str(s['fraud_detected']).lower()}",
        f"L2 distance   {percentiles_line(comp.distances, (0, 50, 90, 99, 100))}",
    ]
    if s["n_unchecked"]:
        lines.append(f"              ({s['n_unchecked']} nonce(s) could not be checked: p_value counts only the "
                     "mismatches the returned vectors prove; the run cannot PASS)")
    if s["mismatch_nonces"]:
        lines.append(f"mismatches    {nonce_list(s['mismatch_nonces'])}")
    if s["missing_nonces"]:
        lines.append(f"missing       {nonce_list(s['missing_nonces'])}  (no vector came back: counted as mismatches)")
    if s["invalid_nonces"]:
        lines.append(f"invalid       {nonce_list(s['invalid_nonces'])}  (unusable vector: counted as mismatches)")
    if s["conflicting_nonces"]:
        lines.append(f"conflicting   {nonce_list(s['conflicting_nonces'])}  (answered twice with different vectors: "
                     "invalid)")
    if s["n_malformed"]:
        lines.append(f"malformed     {s['n_malformed']} entr{'y' if s['n_malformed'] == 1 else 'ies'} naming no valid "
                     f"nonce (the run cannot PASS): {'; '.join(s['malformed'][:3])}")
    if s["extra_nonces"]:
        ref = set(comp.nonces.tolist())
        inside = [n for n in s["extra_nonces"] if n in ref]
        outside = [n for n in s["extra_nonces"] if n not in ref]
        parts = []
        if inside:  # an answer for a reference nonce is that nonce's answer, whichever request carried it
            parts.append(f"{len(inside)} reference nonce(s), compared as their answers: {nonce_list(inside, 10)}")
        if outside:
            parts.append(f"{len(outside)} not in the reference (not compared): {nonce_list(outside, 10)}")
        lines.append(f"unrequested   {len(s['extra_nonces'])} nonce(s) answered without being asked — "
                     + "; ".join(parts))
    return lines
