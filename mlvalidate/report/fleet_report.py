"""The fleet report: one row per node (with its hardware and where that came from), outliers by
vectors and by speed, the fleet's total speed over the nodes whose vectors passed (the others
shown apart: a FAIL node's speed is no capacity)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .text import fmt_float
from .bundles import CompareError, NO_PLOTS, RunBundle, pct_of, load_bundle, matrix_gate, short_source
from .fleet_fresh import FRESH_TEXT, fresh_heat, fresh_md
from .compare import MATRIX_TEXT, md_distributions, md_table, md_throughput, build_report, md_header, source_cell, template_env, write_plots
from .header import header_rows

# ----------------------------------------------------------------------------------------
OUTLIER_FACTOR = 3.0  # vectors: median L2 to peers above this many times the fleet's typical one ...
OUTLIER_GATE_FRACTION = 0.5  # ... and above this fraction of the gate
SPEED_BAND = (0.5, 1.5)  # steady rate / the profile's published figure outside this band
PEER_SPEED_BAND = (0.5, 2.0)  # steady rate / the median of the nodes that measured one


def vector_outliers(runs: list[RunBundle], m) -> dict[str, str]:
    """Nodes whose vectors sit far from every peer's: per node the distance to its NEAREST peer
    (the smallest pairwise median L2 in the distance matrix), flagged when it is over
    OUTLIER_FACTOR × the fleet's median of that score and over OUTLIER_GATE_FRACTION × the gate.
    Nearest peer, not the median over peers, so one cheater among a few nodes cannot drag the
    honest nodes' scores up. Needs 3 comparable nodes (with 2, nothing says which one is off);
    nodes that cheat alike sit near each other and are not outliers (their verdicts say FAIL)."""
    scores: dict[int, float] = {}
    for i in range(len(runs)):
        peers = [m[i][j][0] for j in range(len(runs)) if j != i and m[i][j][0] is not None]
        if peers:
            scores[i] = float(min(peers))
    if len(scores) < 3:
        return {}
    typical = float(np.median(list(scores.values())))
    gate = matrix_gate(runs) or 0.0
    bar = max(OUTLIER_FACTOR * typical, OUTLIER_GATE_FRACTION * gate)
    return {runs[i].name: f"vectors far from every peer: median L2 to the nearest {s:.3g} (fleet typical "
            f"{typical:.3g}, flagged above {bar:.3g})" for i, s in scores.items() if s > bar and s > 0}


def speed_outliers(runs: list[RunBundle]) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    rates = {r.name: r.steady_per_min() for r in runs if r.steady_per_min() is not None}
    for r in runs:
        v, pub = rates.get(r.name), r.published_per_min()
        if v is not None and pub and not SPEED_BAND[0] <= v / pub <= SPEED_BAND[1]:
            out.setdefault(r.name, []).append(f"speed {100 * v / pub:.0f} % of its profile's published {pub:,.0f}/min")
    if len(rates) >= 3:
        typical = float(np.median(list(rates.values())))
        for name, v in rates.items():
            if typical > 0 and not PEER_SPEED_BAND[0] <= v / typical <= PEER_SPEED_BAND[1]:
                out.setdefault(name, []).append(f"speed {v:,.0f}/min vs the fleet's median {typical:,.0f}/min")
    return {k: "; ".join(v) for k, v in out.items()}


FLEET_HEAD = ["node", "URL", "hardware [source]", "verdict", "n_mismatch / n_total", "p-value", "steady nonces/min",
              "% of published", "% of roofline", "wall s", "outlier", "error"]  # fmt: skip
HTML_HEAD = ["node", *FLEET_HEAD[2:]]  # the page shows each node's URL under its id
PASSED = ("PASS", "PASS-with-mismatches")  # the verdicts whose speed counts as the fleet's capacity


def fleet_summary(fleet, runs: list[RunBundle], m) -> dict:
    """fleet.json: per node its verdict, counts, rate and flags; the fleet's totals."""
    by_bundle = {str(r.path): r for r in runs}
    flags_v, flags_s = vector_outliers(runs, m), speed_outliers(runs)
    nodes = []
    for res in fleet.results:
        b = by_bundle.get(str(res.bundle)) if res.bundle else None
        rep = b.report if b else {}
        per_min = b.steady_per_min() if b else None
        flags = [f for f in (flags_v.get(res.target.id), flags_s.get(res.target.id)) if f]
        hw = b.hardware() if b else None
        nodes.append({
            "id": res.target.id, "url": res.target.url, "api": res.target.api, "source": res.target.source,
            "models": res.target.models, "verdict": res.verdict, "exit_code": res.exit_code,
            "n_mismatch": rep.get("n_mismatch"), "n_total": rep.get("n_total"), "p_value": rep.get("p_value"),
            "steady_nonces_per_min": per_min, "published_nonces_per_min": b.published_per_min() if b else None,
            "roofline_nonces_per_min": b.roofline_per_min() if b else None, "profile": b.profile_name if b else None,
            "wall_s": round(res.wall_s, 3), "bundle": str(res.bundle) if res.bundle else None, "error": res.error,
            "interrupted": res.interrupted, "outlier": flags,
            "hardware": hw.as_dict() if hw else None,
            "hardware_cell": f"{hw.label()} [{short_source(hw)}]" if hw else "unknown [no bundle]",
        })  # fmt: skip
    measured = [n for n in nodes if n["steady_nonces_per_min"] is not None]
    counted = [n for n in measured if n["verdict"] in PASSED]
    with_pub = [n for n in counted if n["published_nonces_per_min"]]
    counts: dict[str, int] = {}
    for n in nodes:
        counts[n["verdict"]] = counts.get(n["verdict"], 0) + 1
    return {"schema": "mlvalidate.fleet/1", "exit_code": fleet.exit_code, "wall_s": round(fleet.wall_s, 3),
            "started_at": getattr(fleet, "started_at", None),
            "interrupted": fleet.interrupted, "verdict_counts": counts, "nodes": nodes,
            # the fleet's capacity: only nodes whose vectors passed; the others' speed is shown apart
            "fleet_nonces_per_min": sum(n["steady_nonces_per_min"] for n in counted) if counted else None,
            "nodes_counted": len(counted), "nodes_measured": len(measured),
            # the published figures of the counted nodes that have one, and those nodes' own speed
            "fleet_published_nonces_per_min": sum(n["published_nonces_per_min"] for n in with_pub) if with_pub else None,
            "published_nodes_nonces_per_min": sum(n["steady_nonces_per_min"] for n in with_pub) if with_pub else None,
            "nodes_with_published": len(with_pub),
            "not_counted": [{"id": n["id"], "verdict": n["verdict"], "steady_nonces_per_min": n["steady_nonces_per_min"]}
                            for n in measured if n["verdict"] not in PASSED]}


def _short_flag(flag: str) -> str:
    """The table's word for an outlier flag (the Outliers section has the whole sentence)."""
    return "vectors" if flag.startswith("vectors") else "speed"


def _fleet_rows(summary: dict) -> list[list[str]]:
    rows = []
    for n in summary["nodes"]:
        v, pub, roof = n["steady_nonces_per_min"], n["published_nonces_per_min"], n["roofline_nonces_per_min"]
        rows.append([
            n["id"], n["url"] or "n/a", n["hardware_cell"], n["verdict"],
            f"{n['n_mismatch']} / {n['n_total']}" if n["n_total"] is not None else "n/a",
            fmt_float(n["p_value"], 3), f"{v:,.1f}" if v is not None else "n/a",
            pct_of(v, pub), pct_of(v, roof, 1), f"{n['wall_s']:.1f}", ", ".join(_short_flag(f) for f in n["outlier"]),
            n["error"] or "",
        ])  # fmt: skip
    return rows


def _html_rows(rows: list[list[str]]) -> list[list]:
    """The page's rows: the node's URL under its id (one column fewer at 1280 px)."""
    return [[{"main": r[0], "sub": r[1]}, source_cell(r[2]), *r[3:]] for r in rows]


def fleet_headline(summary: dict) -> str:
    c = summary["verdict_counts"]
    word = {0: "every node passed", 1: "FRAUD on at least one node", 2: "not every node could be checked"}
    return (f"{len(summary['nodes'])} node(s): " + ", ".join(f"{k} {v}" for k, v in sorted(c.items()))
            + f" — {word.get(summary['exit_code'], '')} (exit {summary['exit_code']})")


def _fleet_rate_line(summary: dict) -> str:
    """The fleet's speed: summed over the nodes whose vectors passed; the rest named apart."""
    tot, pub = summary["fleet_nonces_per_min"], summary["fleet_published_nonces_per_min"]
    apart = summary.get("not_counted") or []
    of_pub = ""
    if pub:
        k, own = summary["nodes_with_published"], summary["published_nodes_nonces_per_min"]
        who = "their profiles'" if k == summary["nodes_counted"] else f"the {k} with a profile figure:"
        of_pub = f" ({who} {100 * own / pub:.0f} % of the published {pub:,.0f}/min)"
    line = ("fleet throughput: no node whose vectors passed measured a steady rate" if tot is None else
            f"fleet throughput: {tot:,.1f} nonces/min summed over the {summary['nodes_counted']} node(s) whose "
            f"vectors passed{of_pub}")
    if apart:
        line += "; not counted (vectors did not pass): " + ", ".join(
            f"{n['id']} {n['steady_nonces_per_min']:,.1f}/min ({n['verdict']})" for n in apart)
    return line


def _utc(iso: str) -> str:
    import datetime as _dt

    try:
        return f"{_dt.datetime.fromisoformat(iso).astimezone(_dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC"
    except (TypeError, ValueError):
        return str(iso)


def write_fleet_report(fleet, out_dir: str | Path, profiles=None, fresh: dict | None = None) -> dict[str, Path]:
    """report.md, report.html and fleet.json for a fleet run (mlvalidate.fleet.FleetResult);
    `fresh`: the fresh challenge's document (fresh_fleet.cross_check), shown beside the golden matrix."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for res in fleet.results:
        if res.bundle is None:
            continue
        try:
            b = load_bundle(res.bundle, profiles)
        except CompareError:
            continue
        b.name = res.target.id
        runs.append(b)
    rep = build_report(runs)
    summary = fleet_summary(fleet, runs, rep["matrix_raw"])
    rows = _fleet_rows(summary)
    plot_dir = write_plots(rep, out)
    from ..artifacts import write_json

    if fresh is not None:
        summary["fresh"] = fresh
    write_json(out / "fleet.json", summary)
    head = header_rows(runs, extra=[("fleet", f"{len(fleet.results)} node(s) side by side, wall time "
                                     f"{fleet.wall_s:.1f} s" + (f", started {_utc(summary['started_at'])}"
                                                                 if summary.get("started_at") else ""))])
    md = ["# mlvalidate fleet", "", f"**{fleet_headline(summary)}**", "", *md_header(head), _fleet_rate_line(summary), ""]
    if fleet.interrupted:
        md += [f"> interrupted by {fleet.interrupted}: every node's run was stopped; bundles were written", ""]
    if not rep["plots"]:
        md += [f"> {NO_PLOTS}", ""]
    md += ["## Nodes", "", *md_table(FLEET_HEAD, rows)]
    flagged = [n for n in summary["nodes"] if n["outlier"]]
    md += ["## Outliers", ""] + ([f"* **{n['id']}**: {'; '.join(n['outlier'])}" for n in flagged]
                                 or ["none flagged"]) + [""]
    if runs:
        md += ["## Distance matrix", "", MATRIX_TEXT, "", *md_table(*rep["matrix"])]
    if fresh is not None:
        md += fresh_md(fresh, md_table)
    if runs:
        md += md_distributions(runs, rep, plot_dir)
        md += md_throughput(rep, plot_dir)
    md_path = out / "report.md"
    md_path.write_text("\n".join(md) + "\n", encoding="utf-8")
    page = template_env().get_template("fleet.html.j2").render(
        runs=runs, rep=rep, fs=summary, html_head=HTML_HEAD, html_rows=_html_rows(rows), header=head,
        headline=fleet_headline(summary),
        rate_line=_fleet_rate_line(summary), flagged=flagged, interrupted=fleet.interrupted,
        fresh=fresh, fresh_heat=fresh_heat(fresh, rep["gate"]) if fresh is not None else None, fresh_text=FRESH_TEXT)
    html_path = out / "report.html"
    html_path.write_text(page, encoding="utf-8")
    return {"markdown": md_path, "html": html_path, "json": out / "fleet.json"}
