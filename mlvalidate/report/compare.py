"""`mlvalidate compare`: one report over several run bundles (and the fleet report's pieces).

Writes report.md and a self-contained report.html (plots embedded as base64 PNG data URIs,
no external resource, no script) with:
  * a verdict table, verdicts coloured: run, profile, GPUs, verdict, n_mismatch / n_total,
    p-value, steady-state nonces/min, % of the profile's published figure and of its roofline;
  * the cross-run distance matrix as a heat map (an HTML table coloured from green at 0 through
    yellow at the gate to red at twice the gate): median L2 between every pair of runs' vectors
    over the nonces both have, with the shared count;
  * ONE plot of every run's distance distribution: ECDFs overlaid on a log x axis with the gate
    line (a run with missing vectors tops out below 1);
  * throughput bars per run, coloured by verdict, with the profile's published figure and
    roofline marked on each bar.

Plots need matplotlib (the `plots` extra); without it every table (and the heat map) is still
there, with a text histogram per run.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MlvalidateError
from .bundle import REPORT_SCHEMA
from .text import fmt_float, histogram

NO_PLOTS = "plots need the `plots` extra (pip install mlvalidate[plots], i.e. matplotlib): tables only"


class CompareError(MlvalidateError):
    """A run bundle given to `compare` cannot be read."""


@dataclass
class RunBundle:
    name: str
    path: Path
    report: dict
    environment: dict | None
    config: dict | None
    profile_name: str | None = None
    profile: Any = None  # serving.profiles.Profile when the name loads
    _vectors: Any = field(default=None, repr=False)

    # -- what the tables show -------------------------------------------------------------
    @property
    def verdict(self) -> str:
        return str(self.report.get("verdict"))

    @property
    def threshold(self) -> float | None:
        try:
            return float(self.report["stat_test"]["values"]["dist_threshold"])
        except (KeyError, TypeError, ValueError):
            return None

    def distances(self) -> np.ndarray:
        d = self.report.get("distances") or {}
        return np.array([np.nan if v is None else float(v) for v in d.values()], dtype=np.float64)

    def gpus(self) -> str:
        env = self.environment
        if env is None:
            return "n/a"
        names = env.get("gpus") or []
        if names:
            counts: dict[str, int] = {}
            for n in names:
                counts[str(n)] = counts.get(str(n), 0) + 1
            return ", ".join(f"{c}× {n}" for n, c in counts.items())
        return "n/a" if env.get("cuda_available") else "CPU"

    def steady_per_min(self) -> float | None:
        tp = self.report.get("throughput_phase") or {}
        v = (tp.get("summary") or {}).get("steady_nonces_per_min")
        return float(v) if v is not None else None

    def published_per_min(self) -> float | None:
        tref = getattr(self.profile, "throughput_reference", None) or {}
        v = tref.get("nonces_per_min")
        return float(v) if v else None

    def roofline_per_min(self) -> float | None:
        if self.profile is None:
            return None
        roof = self.profile.roofline_nonces_per_min_per_gpu()
        return roof * self.profile.gpu_count if roof and self.profile.gpu_count else None

    def vectors(self):
        """vectors.json as a Reference (strict=False: bad rows are invalid), or None if absent or
        empty (a run that got no vector back: an ERROR run's bundle)."""
        if self._vectors is None:
            p = self.path / "vectors.json"
            self._vectors = False
            if p.is_file():
                from ..artifacts import load_computed

                try:
                    self._vectors = load_computed(p)
                except MlvalidateError:
                    self._vectors = False
        return self._vectors or None


def _read_json(path: Path, what: str, required: bool) -> dict | None:
    if not path.is_file():
        if required:
            raise CompareError(f"{path.parent}: no {path.name} — not a run bundle",
                               "pass folders written by `mlvalidate validate --out` or `mlvalidate demo`")
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CompareError(f"{path}: unreadable {what} ({type(e).__name__}: {e})",
                           "re-run the validation to rewrite the bundle") from None
    if not isinstance(doc, dict):
        raise CompareError(f"{path}: {what} is not a JSON object", "re-run the validation to rewrite the bundle")
    return doc


def _profile_name(report: dict, env: dict | None, config: dict | None) -> str | None:
    tp = report.get("throughput_phase") or {}
    if tp.get("profile"):
        return str(tp["profile"])
    if env and env.get("profile"):
        return str(env["profile"])
    inp = ((config or {}).get("inputs") or {}).get("profile")
    if isinstance(inp, dict) and inp.get("value"):
        return str(inp["value"])
    return None


def load_bundle(path: str | Path, profiles=None) -> RunBundle:
    """One bundle; `profiles(name)` gives the Profile a run names (its published figure and
    roofline), or None."""
    p = Path(path)
    if not p.is_dir():
        raise CompareError(f"{p}: not a run bundle folder (no such directory)",
                           "pass folders written by `mlvalidate validate --out` or `mlvalidate demo`")
    report = _read_json(p / "report.json", "report", required=True)
    if report.get("schema") != REPORT_SCHEMA:
        raise CompareError(f"{p / 'report.json'}: schema {report.get('schema')!r}, expected {REPORT_SCHEMA!r}",
                           "compare reads bundles from this mlvalidate version; re-run the validation")
    for key in ("verdict", "distances", "stat_test"):
        if key not in report:
            raise CompareError(f"{p / 'report.json'}: no {key!r} field", "re-run the validation to rewrite the bundle")
    env = _read_json(p / "environment.json", "environment", required=False)
    config = _read_json(p / "config.json", "config", required=False)
    run = RunBundle(name=str(report.get("name") or p.name), path=p, report=report, environment=env, config=config)
    run.profile_name = _profile_name(report, env, config)
    if run.profile_name and profiles is not None:
        run.profile = profiles(run.profile_name)  # None: named but not loadable here (no published figure)
    return run


def load_bundles(paths, profiles=None) -> list[RunBundle]:
    runs = [load_bundle(p, profiles) for p in paths]
    seen: dict[str, int] = {}
    for r in runs:  # names must tell runs apart in every table
        seen[r.name] = seen.get(r.name, 0) + 1
    for r in runs:
        if seen[r.name] > 1:
            r.name = f"{r.name} ({r.path})"
    return runs


# ----------------------------------------------------------------------------------------
# the numbers
# ----------------------------------------------------------------------------------------
def pair_distance(a: RunBundle, b: RunBundle) -> tuple[float | None, int, str | None]:
    """(median L2 over shared usable nonces, shared count, why n/a)."""
    from ..artifacts import same_poc_params

    va, vb = a.vectors(), b.vectors()
    if va is None or vb is None:
        return None, 0, "no vectors"
    diff = same_poc_params(va, vb)
    if diff:
        return None, 0, "different PoC params: " + "; ".join(diff)
    ia = {int(n): i for i, n in enumerate(va.nonces) if va.valid[i]}
    ib = {int(n): i for i, n in enumerate(vb.nonces) if vb.valid[i]}
    shared = sorted(ia.keys() & ib.keys())
    if not shared:
        return None, 0, "no shared nonce"
    xa = va.vectors[[ia[n] for n in shared]].astype(np.float64)
    xb = vb.vectors[[ib[n] for n in shared]].astype(np.float64)
    return float(np.median(np.linalg.norm(xa - xb, axis=1))), len(shared), None


def distance_matrix(runs: list[RunBundle]) -> list[list[tuple[float | None, int, str | None]]]:
    n = len(runs)
    m: list[list[Any]] = [[None] * n for _ in range(n)]
    for i in range(n):
        for j in range(i, n):
            m[i][j] = m[j][i] = pair_distance(runs[i], runs[j])
    return m


def _pct(x: float | None, of: float | None, digits: int = 0) -> str:
    if x is None or not of:
        return "n/a"
    return f"{100 * x / of:.{digits}f} %"


def verdict_rows(runs: list[RunBundle]) -> list[list[str]]:
    rows = []
    for r in runs:
        rep, per_min = r.report, r.steady_per_min()
        n_mis, n_tot = rep.get("n_mismatch"), rep.get("n_total")
        rows.append([
            r.name, r.profile_name or "n/a", r.gpus(), r.verdict,
            f"{n_mis} / {n_tot}" if n_tot is not None else "n/a",
            fmt_float(rep.get("p_value"), 3),
            f"{per_min:,.1f}" if per_min is not None else "n/a",
            _pct(per_min, r.published_per_min()) if r.profile else "n/a",
            _pct(per_min, r.roofline_per_min(), 1) if r.profile else "n/a",
        ])  # fmt: skip
    return rows


VERDICT_HEAD = ["run", "profile", "GPUs", "verdict", "n_mismatch / n_total", "p-value",
                "steady nonces/min", "% of published", "% of roofline"]  # fmt: skip


def matrix_rows(runs: list[RunBundle], m) -> tuple[list[str], list[list[str]]]:
    head = ["median L2 (shared nonces)"] + [r.name for r in runs]
    rows = []
    for i, r in enumerate(runs):
        cells = [r.name]
        for med, n, why in m[i]:
            cells.append(f"{med:.4g} ({n})" if med is not None else f"n/a ({why})")
        rows.append(cells)
    return head, rows


def distance_summary(r: RunBundle) -> str:
    d = r.distances()
    fin = d[np.isfinite(d)]
    if fin.size == 0:
        return "no finite distance"
    thr = r.threshold
    over = int((fin > thr).sum()) if thr is not None else None
    return (f"{fin.size} finite distances (+{d.size - fin.size} missing/invalid): median {np.median(fin):.4g}, "
            f"p90 {np.percentile(fin, 90):.4g}, max {fin.max():.4g}; threshold {fmt_float(thr)}"
            + (f", {over} over" if over is not None else ""))


def throughput_groups(runs: list[RunBundle]) -> dict[str, list[RunBundle]]:
    groups: dict[str, list[RunBundle]] = {}
    for r in runs:
        if r.steady_per_min() is not None:
            groups.setdefault(r.profile_name or "no profile", []).append(r)
    return groups


# ----------------------------------------------------------------------------------------
# how it looks: verdict colours, the heat map's colours
# ----------------------------------------------------------------------------------------
VERDICT_CLASS = {"PASS": "v-pass", "PASS-with-mismatches": "v-pwm", "FAIL": "v-fail", "INCOMPLETE": "v-incomplete",
                 "ERROR": "v-error", "SKIPPED": "v-skipped"}  # fmt: skip
VERDICT_COLOR = {"PASS": "#1a7f37", "PASS-with-mismatches": "#6a9f1f", "FAIL": "#c62828", "INCOMPLETE": "#e07b00",
                 "ERROR": "#6e4b9e", "SKIPPED": "#888888"}  # fmt: skip
_HEAT = ((0.0, (0x1a, 0x98, 0x50)), (1.0, (0xfe, 0xe0, 0x8b)), (2.0, (0xd7, 0x30, 0x27)))  # L2 / gate -> colour


def verdict_class(verdict: str) -> str:
    return VERDICT_CLASS.get(str(verdict), "v-error")


def heat_color(value: float | None, gate: float | None) -> str:
    """Background of a distance-matrix cell: green at 0, yellow at the gate, red from twice the gate."""
    if value is None or not np.isfinite(value) or not gate:
        return "#dddddd"
    x = min(max(value / gate, 0.0), _HEAT[-1][0])
    for (x0, c0), (x1, c1) in zip(_HEAT, _HEAT[1:]):
        if x <= x1:
            f = (x - x0) / (x1 - x0)
            return "#" + "".join(f"{round(a + f * (b - a)):02x}" for a, b in zip(c0, c1))
    return "#" + "".join(f"{c:02x}" for c in _HEAT[-1][1])


def matrix_gate(runs: list[RunBundle]) -> float | None:
    gates = [r.threshold for r in runs if r.threshold]
    return min(gates) if gates else None


def heat_cells(runs: list[RunBundle], m) -> list[list[dict]]:
    """The matrix for the HTML heat map: per cell its text, colour and a tooltip."""
    gate = matrix_gate(runs)
    rows = []
    for i, a in enumerate(runs):
        cells = []
        for j, (med, n, why) in enumerate(m[i]):
            text = f"{med:.3g}" if med is not None else "n/a"
            tip = (f"{a.name} vs {runs[j].name}: median L2 {med:.4g} over {n} shared nonces" if med is not None
                   else f"{a.name} vs {runs[j].name}: {why}")
            cells.append({"text": text, "n": n, "color": heat_color(med, gate), "title": tip})
        rows.append(cells)
    return rows


# ----------------------------------------------------------------------------------------
# plots (optional)
# ----------------------------------------------------------------------------------------
def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _png(fig, plt) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def ecdf_points(r: RunBundle) -> tuple[np.ndarray, np.ndarray, int]:
    """(sorted finite distances, fraction of ALL the run's nonces at or below each, n without a
    distance): a run with missing vectors tops out below 1."""
    d = r.distances()
    fin = np.sort(d[np.isfinite(d)])
    y = np.arange(1, fin.size + 1) / max(d.size, 1)
    return fin, y, int(d.size - fin.size)


def plot_ecdf(plt, runs: list[RunBundle]) -> bytes | None:
    """Every run's distance distribution on one log-x ECDF, with each distinct gate."""
    curves = [(r, *ecdf_points(r)) for r in runs]
    positive = [x[x > 0] for _, x, _, _ in curves]
    pos = np.concatenate(positive) if positive else np.zeros(0)
    gates = sorted({r.threshold for r in runs if r.threshold})
    lo = float(pos.min()) if pos.size else (gates[0] / 100 if gates else 1e-3)
    floor = min(lo, gates[0] / 100 if gates else lo) / 2
    hi = max(float(pos.max()) if pos.size else 1.0, (gates[-1] * 2 if gates else 0))
    fig, ax = plt.subplots(figsize=(8.0, 4.2))
    cmap = plt.get_cmap("tab10")
    zeros_any = False
    for k, (r, x, y, missing) in enumerate(curves):
        if x.size == 0:
            ax.plot([], [], color=cmap(k % 10), label=f"{r.name} — {r.verdict} (no distance)")
            continue
        zeros_any |= bool((x <= 0).any())
        xs = np.concatenate([[floor], np.maximum(x, floor)])
        ys = np.concatenate([[0.0], y])
        style = "--" if r.verdict == "FAIL" else "-"
        label = f"{r.name} — {r.verdict}" + (f" ({missing} without a vector)" if missing else "")
        ax.step(xs, ys, where="post", color=cmap(k % 10), linestyle=style, linewidth=2, label=label)
    for g in gates:
        ax.axvline(g, color="#c62828", linewidth=1.5, linestyle=":")
        ax.text(g, 0.03, f"gate {g:g} ", color="#c62828", va="bottom", ha="right", rotation=90, fontsize=9,
                transform=ax.get_xaxis_transform())
    ax.set_xscale("log")
    ax.set_xlim(floor / 2, hi * 1.2)
    ax.set_ylim(0, 1.0)
    ax.set_xlabel("L2 distance to the reference (log)" + (f"; 0 drawn at {floor:.1g}" if zeros_any else ""))
    ax.set_ylabel("fraction of the run's nonces ≤ x")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
    ax.set_title("distance distributions (ECDF): a curve right of the gate is a mismatch", fontsize=10)
    return _png(fig, plt)


def plot_throughput(plt, runs: list[RunBundle]) -> bytes | None:
    """One bar per run that measured throughput, coloured by verdict, with its profile's
    published figure (|) and roofline (▮ outline) marked on the bar."""
    rs = [r for r in runs if r.steady_per_min() is not None]
    if not rs:
        return None
    fig, ax = plt.subplots(figsize=(8.0, 1.2 + 0.45 * len(rs)))
    ys = np.arange(len(rs))[::-1]
    vals = [r.steady_per_min() for r in rs]
    ax.barh(ys, vals, color=[VERDICT_COLOR.get(r.verdict, "#6e4b9e") for r in rs], height=0.6)
    said_pub = said_roof = False
    for y, r, v in zip(ys, rs, vals):
        pub, roof = r.published_per_min(), r.roofline_per_min()
        if pub:
            ax.plot([pub, pub], [y - 0.42, y + 0.42], color="#0b5394", linewidth=3,
                    label=None if said_pub else "published figure (profile)")
            said_pub = True
        if roof:
            ax.plot([roof, roof], [y - 0.42, y + 0.42], color="#000000", linewidth=1.5, linestyle="--",
                    label=None if said_roof else "roofline (profile)")
            said_roof = True
        note = f" {v:,.0f}" + (f" ({100 * v / pub:.0f} % of published)" if pub else "")
        ax.text(v, y, note, va="center", ha="left", fontsize=8)
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{r.name} [{r.profile_name or 'no profile'}]" for r in rs], fontsize=8)
    top = max(vals + [r.published_per_min() or 0 for r in rs] + [r.roofline_per_min() or 0 for r in rs])
    ax.set_xlim(0, top * 1.35 or 1)
    ax.set_xlabel("steady-state nonces/min")
    if said_pub or said_roof:
        ax.legend(loc="lower right", fontsize=8)
    ax.set_title("throughput per run (bar colour = verdict)", fontsize=10)
    return _png(fig, plt)


# ----------------------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------------------
def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    def esc(s):
        return str(s).replace("|", "\\|")

    return ["| " + " | ".join(map(esc, head)) + " |", "| " + " | ".join("---" for _ in head) + " |",
            *("| " + " | ".join(map(esc, row)) + " |" for row in rows), ""]  # fmt: skip


def build_report(runs: list[RunBundle]) -> dict:
    """Every table and (when matplotlib is importable) the plots as PNG bytes: one ECDF of all
    runs, one throughput chart; the distance matrix is an HTML heat map (no plot needed)."""
    plt = _pyplot()
    m = distance_matrix(runs)
    groups = throughput_groups(runs)
    return {
        "verdicts": (VERDICT_HEAD, verdict_rows(runs)),
        "matrix": matrix_rows(runs, m),
        "matrix_raw": m,
        "heat": heat_cells(runs, m),
        "gate": matrix_gate(runs),
        "ecdf": plot_ecdf(plt, runs) if plt else None,
        "throughput_png": plot_throughput(plt, runs) if plt else None,
        "throughput": [(p, rs) for p, rs in groups.items()],
        "plots": plt is not None,
    }


def _throughput_table(rs: list[RunBundle]) -> tuple[list[str], list[list[str]]]:
    head = ["run", "steady nonces/min", "published", "roofline"]
    rows = [[r.name, f"{r.steady_per_min():,.1f}",
             f"{r.published_per_min():,.0f}" if r.published_per_min() else "n/a",
             f"{r.roofline_per_min():,.0f}" if r.roofline_per_min() else "n/a"] for r in rs]  # fmt: skip
    return head, rows


def _text_hist(r: RunBundle) -> list[str]:
    d = r.distances()
    fin, thr = d[np.isfinite(d)], r.threshold
    if fin.size == 0:
        return ["(no finite distance)"]
    hi = max(float(fin.max()), (thr or 0) * 1.5, 1e-6)
    return histogram(fin, 0.0, hi, bins=12, width=40, mark=thr)


MATRIX_TEXT = ("Median L2 between two runs' vectors over the nonces both have (count in brackets): how "
               "numerically close one deployment is to another. Colour: green at 0, yellow at the gate, red from "
               "twice the gate.")


def _md_distributions(runs: list[RunBundle], rep: dict, plot_dir: Path | None) -> list[str]:
    out = ["## Distance distributions", ""]
    if rep["ecdf"] and plot_dir is not None:
        out += ["Every run's ECDF on one log axis; the dotted line is the gate.", "",
                "![distance distributions](plots/ecdf.png)", ""]
    for r in runs:
        out += [f"* **{r.name}** — {r.verdict}: {distance_summary(r)}"]
    out.append("")
    if not (rep["ecdf"] and plot_dir is not None):
        for r in runs:
            out += [f"### {r.name} — {r.verdict}", "", "```", *_text_hist(r), "```", ""]
    return out


def _md_throughput(rep: dict, plot_dir: Path | None) -> list[str]:
    if not rep["throughput"]:
        return []
    out = ["## Throughput per profile", ""]
    if rep["throughput_png"] and plot_dir is not None:
        out += ["![throughput](plots/throughput.png)", ""]
    for prof, rs in rep["throughput"]:
        out += [f"### {prof}", "", *_md_table(*_throughput_table(rs))]
    return out


def render_markdown(runs: list[RunBundle], rep: dict, plot_dir: Path | None) -> str:
    out = ["# mlvalidate compare", "", f"{len(runs)} run(s): " + ", ".join(f"`{r.path}`" for r in runs), ""]
    if not rep["plots"]:
        out += [f"> {NO_PLOTS}", ""]
    out += ["## Verdicts", "", *_md_table(*rep["verdicts"])]
    out += ["## Distance matrix", "", MATRIX_TEXT, "", *_md_table(*rep["matrix"])]
    out += _md_distributions(runs, rep, plot_dir)
    out += _md_throughput(rep, plot_dir)
    return "\n".join(out) + "\n"


def template_env():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("mlvalidate.report", "templates"),
                             autoescape=True, keep_trailing_newline=True)
    env.filters["b64"] = lambda png: base64.b64encode(png).decode("ascii")
    env.globals.update(verdict_class=verdict_class, no_plots=NO_PLOTS, matrix_text=MATRIX_TEXT,
                       summary=distance_summary, throughput_table=_throughput_table,
                       text_hist=lambda r: "\n".join(_text_hist(r)))
    return env


def render_html(runs: list[RunBundle], rep: dict) -> str:
    """report.html from templates/compare.html.j2 (Jinja2, autoescaped)."""
    return template_env().get_template("compare.html.j2").render(runs=runs, rep=rep)


def write_plots(rep: dict, out: Path) -> Path | None:
    if not rep["plots"]:
        return None
    plot_dir = out / "plots"
    plot_dir.mkdir(exist_ok=True)
    if rep["ecdf"]:
        (plot_dir / "ecdf.png").write_bytes(rep["ecdf"])
    if rep["throughput_png"]:
        (plot_dir / "throughput.png").write_bytes(rep["throughput_png"])
    return plot_dir


def write_compare(run_dirs, out_dir: str | Path, profiles=None) -> dict[str, Path]:
    runs = load_bundles(run_dirs, profiles)
    rep = build_report(runs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_dir = write_plots(rep, out)
    md = out / "report.md"
    md.write_text(render_markdown(runs, rep, plot_dir), encoding="utf-8")
    page = out / "report.html"
    page.write_text(render_html(runs, rep), encoding="utf-8")
    return {"markdown": md, "html": page}


# ----------------------------------------------------------------------------------------
# the fleet report (`mlvalidate fleet`): the same pieces, one row per node, outliers flagged
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


FLEET_HEAD = ["node", "URL", "verdict", "n_mismatch / n_total", "p-value", "steady nonces/min",
              "% of published", "% of roofline", "wall s", "outlier", "error"]  # fmt: skip


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
        nodes.append({
            "id": res.target.id, "url": res.target.url, "api": res.target.api, "source": res.target.source,
            "models": res.target.models, "verdict": res.verdict, "exit_code": res.exit_code,
            "n_mismatch": rep.get("n_mismatch"), "n_total": rep.get("n_total"), "p_value": rep.get("p_value"),
            "steady_nonces_per_min": per_min, "published_nonces_per_min": b.published_per_min() if b else None,
            "roofline_nonces_per_min": b.roofline_per_min() if b else None, "profile": b.profile_name if b else None,
            "wall_s": round(res.wall_s, 3), "bundle": str(res.bundle) if res.bundle else None, "error": res.error,
            "interrupted": res.interrupted, "outlier": flags,
        })  # fmt: skip
    rates = [n["steady_nonces_per_min"] for n in nodes if n["steady_nonces_per_min"] is not None]
    pubs = [n["published_nonces_per_min"] for n in nodes
            if n["steady_nonces_per_min"] is not None and n["published_nonces_per_min"]]
    counts: dict[str, int] = {}
    for n in nodes:
        counts[n["verdict"]] = counts.get(n["verdict"], 0) + 1
    return {"schema": "mlvalidate.fleet/1", "exit_code": fleet.exit_code, "wall_s": round(fleet.wall_s, 3),
            "interrupted": fleet.interrupted, "verdict_counts": counts, "nodes": nodes,
            "fleet_nonces_per_min": sum(rates) if rates else None, "nodes_measured": len(rates),
            "fleet_published_nonces_per_min": sum(pubs) if pubs else None}


def _short_flag(flag: str) -> str:
    """The table's word for an outlier flag (the Outliers section has the whole sentence)."""
    return "vectors" if flag.startswith("vectors") else "speed"


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _fleet_rows(summary: dict) -> list[list[str]]:
    rows = []
    for n in summary["nodes"]:
        v, pub, roof = n["steady_nonces_per_min"], n["published_nonces_per_min"], n["roofline_nonces_per_min"]
        rows.append([
            n["id"], n["url"] or "n/a", n["verdict"],
            f"{n['n_mismatch']} / {n['n_total']}" if n["n_total"] is not None else "n/a",
            fmt_float(n["p_value"], 3), f"{v:,.1f}" if v is not None else "n/a",
            _pct(v, pub), _pct(v, roof, 1), f"{n['wall_s']:.1f}", ", ".join(_short_flag(f) for f in n["outlier"]),
            _clip(n["error"] or "", 90),
        ])  # fmt: skip
    return rows


def fleet_headline(summary: dict) -> str:
    c = summary["verdict_counts"]
    word = {0: "every node passed", 1: "FRAUD on at least one node", 2: "not every node could be checked"}
    return (f"{len(summary['nodes'])} node(s): " + ", ".join(f"{k} {v}" for k, v in sorted(c.items()))
            + f" — {word.get(summary['exit_code'], '')} (exit {summary['exit_code']})")


def _fleet_rate_line(summary: dict) -> str:
    tot, pub = summary["fleet_nonces_per_min"], summary["fleet_published_nonces_per_min"]
    if tot is None:
        return "fleet throughput: no node measured a steady rate"
    return (f"fleet throughput: {tot:,.1f} nonces/min summed over {summary['nodes_measured']} node(s)"
            + (f" ({100 * tot / pub:.0f} % of their profiles' published {pub:,.0f}/min)" if pub else ""))


def write_fleet_report(fleet, out_dir: str | Path, profiles=None) -> dict[str, Path]:
    """report.md, report.html and fleet.json for a fleet run (mlvalidate.fleet.FleetResult)."""
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

    write_json(out / "fleet.json", summary)
    md = ["# mlvalidate fleet", "", f"**{fleet_headline(summary)}**", "", _fleet_rate_line(summary), ""]
    if fleet.interrupted:
        md += [f"> interrupted by {fleet.interrupted}: every node's run was stopped; bundles were written", ""]
    if not rep["plots"]:
        md += [f"> {NO_PLOTS}", ""]
    md += ["## Nodes", "", *_md_table(FLEET_HEAD, rows)]
    flagged = [n for n in summary["nodes"] if n["outlier"]]
    md += ["## Outliers", ""] + ([f"* **{n['id']}**: {'; '.join(n['outlier'])}" for n in flagged]
                                 or ["none flagged"]) + [""]
    if runs:
        md += ["## Distance matrix", "", MATRIX_TEXT, "", *_md_table(*rep["matrix"])]
        md += _md_distributions(runs, rep, plot_dir)
        md += _md_throughput(rep, plot_dir)
    md_path = out / "report.md"
    md_path.write_text("\n".join(md) + "\n", encoding="utf-8")
    page = template_env().get_template("fleet.html.j2").render(
        runs=runs, rep=rep, fs=summary, head=FLEET_HEAD, rows=rows, headline=fleet_headline(summary),
        rate_line=_fleet_rate_line(summary), flagged=flagged, interrupted=fleet.interrupted)
    html_path = out / "report.html"
    html_path.write_text(page, encoding="utf-8")
    return {"markdown": md_path, "html": html_path, "json": out / "fleet.json"}
