"""The fresh challenge in a run's bundle: report.txt lines, report.json's `fresh`, the fresh/
folder — and the one line the golden phase owes the reader when every vector is bit-identical
to the public reference (the fleet report's section: fleet_fresh.py).

  fresh/challenge.json  the challenge: model, seq_len, k_dim, block hash, public key, node layout, nonces
  fresh/node.json       the node's vectors in the golden schema (usable ones; unusable ones as NaN rows)
  fresh/trusted.json    the trusted side's vectors in the golden schema, with the gate used: anyone can
                        recompute the comparison with `mlvalidate check fresh/trusted.json fresh/node.json`
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..artifacts import reference_document, write_json
from ..poc.fresh import BAD, MISSING, USABLE, FreshAnswer
from ..results import RunRecord
from .text import comparison_block, fmt_float

IDENTICAL = ("identical to the public reference: a replay cannot be told from an exact reproduction; "
             "run with --fresh")


# ----------------------------------------------------------------------------------------
# what the golden phase cannot say
# ----------------------------------------------------------------------------------------
def identical_to_reference(run: RunRecord) -> bool:
    """Every reference nonce came back, once, with the reference's fp16 bits exactly."""
    comp, ref = run.comparison, run.reference
    if comp is None or comp.n_total == 0 or comp.n_unchecked or comp.n_malformed:
        return False
    index = {int(n): i for i, n in enumerate(run.computed_nonces)}
    if any(int(n) not in index for n in ref.nonces):
        return False
    got = np.asarray(run.computed_vectors)[[index[int(n)] for n in ref.nonces]].astype(np.float16)
    return bool(np.array_equal(got.view(np.uint16), ref.vectors.astype(np.float16).view(np.uint16)))


def identical_lines(run: RunRecord) -> list[str]:
    if not identical_to_reference(run):
        return []
    tail = "" if run.fresh is None else " (the fresh challenge below tells them apart)"
    return [f"note          every golden vector is {IDENTICAL}{tail}"]


# ----------------------------------------------------------------------------------------
# one run
# ----------------------------------------------------------------------------------------
def _short(s: str, n: int = 16) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def fresh_lines(run: RunRecord) -> list[str]:
    f = run.fresh
    if f is None:
        return []
    ch, c = f.challenge, f.node.counts()
    lines = [f"fresh         {f.verdict} — {f.reason}",
             f"  challenge   block_hash {_short(ch.block_hash)}  public_key {_short(ch.public_key)}  {ch.n} nonces "
             f"drawn from [0, 2^63) (fresh/challenge.json); checked against {f.against}",
             f"  the node    {c['usable']} usable, {c['bad']} answered without a usable vector, {c['missing']} never "
             f"answered, {c['unrequested']} unasked, {c['malformed']} malformed; "
             f"{f.node_info.get('requests', 'n/a')} request(s) in {f.node_info.get('elapsed_s', 0):.2f} s"]
    if f.comparison is not None:  # the golden block's test, counts and distances; the nonces are in report.json
        lines += ["  " + line for line in comparison_block(f.comparison, run.stat_test)[:4]]
    for peer, p in f.peers.items():
        lines.append(f"  vs {peer:<8}  {p['relation']}: {p['n_mismatch']}/{p['n_total']} mismatches, p_value "
                     f"{fmt_float(p['p_value'], 3)}, median L2 {fmt_float(p['median_l2'])}")
    if f.node.problems:
        first, why = next(iter(f.node.problems.items()))
        lines.append(f"  unusable    {len(f.node.problems)} nonce(s), e.g. {first}: {why}")
    return lines


def _answer_dict(a: FreshAnswer | None) -> dict | None:
    if a is None:
        return None
    return {**a.counts(), "error": a.error, "problems": {str(k): v for k, v in list(a.problems.items())[:50]},
            "unrequested_nonces": a.unrequested[:50], "malformed": a.malformed[:50],
            "missing_nonces": [int(n) for n in a.nonces[a.state == MISSING]][:50]}


def fresh_document(run: RunRecord) -> dict | None:
    """report.json's `fresh` (None without --fresh)."""
    f = run.fresh
    if f is None:
        return None
    comp = f.comparison
    return {"verdict": f.verdict, "reason": f.reason, "exit_code": f.outcome().exit_code, "against": f.against,
            "challenge": f.challenge.as_dict(), "node": {**f.node_info, "answer": _answer_dict(f.node)},
            "trusted": {"engine": f.trusted_engine, "answer": _answer_dict(f.trusted)} if f.trusted else None,
            "comparison": comp.summary() if comp is not None else None,
            "distances": None if comp is None else {str(int(n)): (float(d) if np.isfinite(d) else None)
                                                    for n, d in zip(comp.nonces, comp.distances)},
            "peers": f.peers}


def vectors_document(run: RunRecord, a: FreshAnswer, source: str, keep_bad: bool) -> dict:
    """One side's vectors in the golden schema, at the challenge's params, with the run's gate."""
    ch, st = run.fresh.challenge, run.stat_test.values
    rows = (a.state == USABLE) | ((a.state == BAD) if keep_bad else False)
    return reference_document(
        model=ch.model, seq_len=ch.seq_len, k_dim=ch.k_dim, block_hash=ch.block_hash, public_key=ch.public_key,
        block_height=ch.block_height, node_id=ch.node_id, node_count=ch.node_count, nonces=a.nonces[rows],
        vectors=a.vectors[rows].astype(np.float16), dist_threshold=st.dist_threshold,
        stat_test={"p_mismatch": st.p_mismatch, "fraud_threshold": st.fraud_threshold}, source=source,
        collection_batch_size=run.batch_size)


def write_fresh_files(out: Path, run: RunRecord) -> None:
    f = run.fresh
    if f is None:
        return
    d = Path(out) / "fresh"
    write_json(d / "challenge.json", f.challenge.as_dict())
    write_json(d / "node.json", vectors_document(run, f.node, f"the node's answer to the fresh challenge of run "
                                                 f"{run.name!r} (NaN rows: answered without a usable vector)", True))
    if f.trusted is not None:
        write_json(d / "trusted.json", vectors_document(run, f.trusted, "the trusted computation of the fresh "
                                                        f"challenge: {f.against}", False))
