"""`fleet --fresh N`: every node answers the same fresh challenge; then the nodes are compared.

Each node's run (fleet.py) asks its node for the challenge of its reference (drawn once per
reference, when the first node needs it) right after its golden phase and leaves the verdict
open. When every node's run has ended, `cross_check` compares every pair of nodes that answered
the same challenge under the golden gate and binomial test (poc/fresh.py `fleet_verdicts`: a
node that disagrees with the majority of three or more is FAIL; with two that disagree nothing
says which one is right: INCOMPLETE), or, with `--against`, each node with the one trusted
computation, which outvotes the rest. Each node's fresh verdict is folded into its run (the
worse of its two phases), its bundle rewritten, and the fleet's fresh document returned for
OUT/fresh.json and the fleet report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import MlvalidateError
from .fresh import FreshPlan, judge, verdict_reason
from .poc.fresh import USABLE, compare_pair, fleet_verdicts, median_distance, relation
from .results import PhaseStatus, outcome


def _pair_dict(comp) -> dict:
    return {"relation": relation(comp), "verdict": comp.verdict.value, "n_mismatch": comp.n_mismatch,
            "n_total": comp.n_total, "p_value": comp.p_value, "median_l2": median_distance(comp),
            "n": int(np.isfinite(comp.distances).sum())}


def _matrix(answers: dict, st) -> dict:
    names = list(answers)
    cells = []
    for a in names:
        row = []
        for b in names:
            if a == b:
                n = int((answers[a].state == USABLE).sum())
                row.append({"relation": "self", "verdict": None, "n_mismatch": 0, "n_total": n, "p_value": None,
                            "median_l2": 0.0 if n else None, "n": n})
            else:
                row.append(_pair_dict(compare_pair(answers[a], answers[b], st)))
        cells.append(row)
    return {"names": names, "cells": cells}


def cross_check(fleet, plan: FreshPlan, log=print) -> dict:
    """Judge every collected node's fresh answer, rewrite its bundle and its fleet row; returns
    the fleet's fresh document (challenges, trusted side, pairwise matrix, per-node verdicts)."""
    from .report.bundle import write_bundle

    order = {res.target.id: i for i, res in enumerate(fleet.results)}  # the fleet's order, not who finished first
    runs = {r.name: r for r in sorted(plan.fleet.runs, key=lambda r: order.get(r.name, len(order))) if r.fresh}
    doc: dict = {"n": plan.n, "against": plan.against.label() if plan.against else None, "groups": [], "nodes": {}}
    for ch in plan.fleet.by_reference.values():
        group = [r for r in runs.values() if r.fresh.challenge is ch]
        if not group:
            continue
        st = group[0].stat_test.values
        answers = {r.name: r.fresh.node for r in group}
        entry = {"challenge": ch.as_dict(), "nodes": list(answers), "trusted": None, "trusted_error": None}
        trusted = desc = None
        if plan.against is not None:
            entry["trusted"] = plan.against.label()
            log(f"fresh challenge: computing it with {plan.against.label()} for {len(group)} node(s)")
            try:
                trusted, desc = plan.against.compute(ch, group[0].batch_size, log)
            except MlvalidateError as e:
                entry["trusted_error"] = e.one_line()
            except KeyboardInterrupt as e:
                entry["trusted_error"] = f"interrupted by {getattr(e, 'signal_name', 'SIGINT (Ctrl-C)')}"
        if trusted is not None:
            for r in group:
                judge(r.fresh, trusted, desc, st)
                r.fresh.reason = verdict_reason(r.fresh.comparison, r.fresh.node, trusted, plan.against.label())
            matrix = _matrix({**answers, "trusted": trusted}, st)
        elif entry["trusted_error"]:
            for r in group:
                r.fresh.verdict = "INCOMPLETE"
                r.fresh.reason = f"the trusted computation failed: {entry['trusted_error']}"
            matrix = _matrix(answers, st)
        else:
            verdicts, _pairs = fleet_verdicts(answers, st)
            for r in group:
                r.fresh.verdict, r.fresh.reason = verdicts[r.name].verdict, verdicts[r.name].reason
            matrix = _matrix(answers, st)
        for i, name in enumerate(matrix["names"]):
            if name in runs:
                runs[name].fresh.peers = {p: c for p, c in zip(matrix["names"], matrix["cells"][i]) if p != name}
        entry["matrix"] = matrix
        doc["groups"].append(entry)
    by_id = {res.target.id: res for res in fleet.results}
    for name, r in runs.items():
        ph = r.phase("fresh")
        if ph is not None and ph.status is PhaseStatus.OK:
            ph.status, ph.detail = PhaseStatus(r.fresh.verdict), r.fresh.reason
        res = by_id.get(name)
        o = outcome(r)
        doc["nodes"][name] = {"verdict": r.fresh.verdict, "reason": r.fresh.reason, "run_verdict": o.verdict,
                              "requests": r.fresh.node_info.get("requests"), **r.fresh.node.counts()}
        if res is None:
            continue
        res.verdict, res.exit_code = o.verdict, o.exit_code
        if res.bundle is not None:
            try:
                write_bundle(Path(res.bundle), r)
            except OSError as e:
                res.error = res.error or f"could not rewrite the bundle with the fresh verdict: {e.strerror or e}"
        log(f"[{name}] fresh challenge: {r.fresh.verdict} — {r.fresh.reason}")
    return doc
