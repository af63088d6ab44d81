"""`mlvalidate compare`: one report over several run bundles.

Writes report.md and a self-contained report.html (plots embedded as base64 PNG data URIs,
no external resource) with:
  * a verdict table: run, profile, GPUs, verdict, n_mismatch / n_total, p-value, steady-state
    nonces/min, % of the profile's published figure and % of its roofline;
  * per run, the distance histogram against the run's dist_threshold;
  * the cross-run distance matrix: median L2 between every pair of runs' vectors over the
    nonces both have (is this hardware numerically close to that one?), with the shared count;
  * throughput bars per profile, when any run measured throughput.

Plots need matplotlib (the `plots` extra); without it every table is still there.
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
        """vectors.json as a Reference (strict=False: bad rows are invalid), or None if absent."""
        if self._vectors is None:
            p = self.path / "vectors.json"
            if not p.is_file():
                return None
            from ..artifacts import load_computed

            self._vectors = load_computed(p)
        return self._vectors


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
        return None, 0, "no vectors.json"
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


def plot_histogram(plt, r: RunBundle) -> bytes:
    d = r.distances()
    fin, thr = d[np.isfinite(d)], r.threshold
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    hi = max(float(fin.max()) if fin.size else 1.0, (thr or 0) * 1.5, 1e-6)
    ax.hist(fin, bins=40, range=(0, hi), color="#4878a8", edgecolor="white")
    if thr is not None:
        ax.axvline(thr, color="#c0392b", linestyle="--", label=f"threshold {thr:g}")
        ax.legend()
    ax.set_xlabel("L2 distance to the reference")
    ax.set_ylabel("nonces")
    ax.set_title(f"{r.name}: {r.verdict}")
    return _png(fig, plt)


def plot_throughput(plt, profile: str, runs: list[RunBundle]) -> bytes:
    fig, ax = plt.subplots(figsize=(6.4, 0.6 + 0.5 * len(runs) + 1.2))
    vals = [r.steady_per_min() for r in runs]
    ax.barh([r.name for r in runs], vals, color="#4878a8")
    ref = runs[0]
    if ref.published_per_min():
        ax.axvline(ref.published_per_min(), color="#27ae60", linestyle="--",
                   label=f"published {ref.published_per_min():,.0f}")
    if ref.roofline_per_min():
        ax.axvline(ref.roofline_per_min(), color="#c0392b", linestyle=":",
                   label=f"roofline {ref.roofline_per_min():,.0f}")
    if ref.published_per_min() or ref.roofline_per_min():
        ax.legend(loc="lower right")
    ax.set_xlabel("steady-state nonces/min")
    ax.set_title(f"throughput, profile {profile}")
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
    """Every table and (when matplotlib is importable) every plot as PNG bytes."""
    plt = _pyplot()
    m = distance_matrix(runs)
    groups = throughput_groups(runs)
    return {
        "verdicts": (VERDICT_HEAD, verdict_rows(runs)),
        "matrix": matrix_rows(runs, m),
        "matrix_raw": m,
        "histograms": [(r, plot_histogram(plt, r) if plt else None) for r in runs],
        "throughput": [(p, rs, plot_throughput(plt, p, rs) if plt else None) for p, rs in groups.items()],
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


def render_markdown(runs: list[RunBundle], rep: dict, plot_dir: Path | None) -> str:
    out = ["# mlvalidate compare", "", f"{len(runs)} run(s): " + ", ".join(f"`{r.path}`" for r in runs), ""]
    if not rep["plots"]:
        out += [f"> {NO_PLOTS}", ""]
    out += ["## Verdicts", "", *_md_table(*rep["verdicts"])]
    out += ["## Distance matrix", "",
            "Median L2 between two runs' vectors over the nonces both have (count in brackets): "
            "how numerically close one deployment is to another.", "", *_md_table(*rep["matrix"])]  # fmt: skip
    out += ["## Distance distributions", ""]
    for i, (r, png) in enumerate(rep["histograms"]):
        out += [f"### {r.name} — {r.verdict}", "", distance_summary(r), ""]
        if png and plot_dir is not None:
            out += [f"![{r.name}](plots/hist-{i}.png)", ""]
        else:
            out += ["```", *_text_hist(r), "```", ""]
    if rep["throughput"]:
        out += ["## Throughput per profile", ""]
        for k, (prof, rs, png) in enumerate(rep["throughput"]):
            out += [f"### {prof}", "", *_md_table(*_throughput_table(rs))]
            if png and plot_dir is not None:
                out += [f"![throughput {prof}](plots/throughput-{k}.png)", ""]
    return "\n".join(out) + "\n"


def render_html(runs: list[RunBundle], rep: dict) -> str:
    """report.html from templates/compare.html.j2 (Jinja2, autoescaped)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("mlvalidate.report", "templates"),
                             autoescape=True, keep_trailing_newline=True)
    env.filters["b64"] = lambda png: base64.b64encode(png).decode("ascii")
    return env.get_template("compare.html.j2").render(
        runs=runs, rep=rep, no_plots=NO_PLOTS, summary=distance_summary, throughput_table=_throughput_table,
        text_hist=lambda r: "\n".join(_text_hist(r)))


def write_compare(run_dirs, out_dir: str | Path, profiles=None) -> dict[str, Path]:
    runs = load_bundles(run_dirs, profiles)
    rep = build_report(runs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_dir = None
    if rep["plots"]:
        plot_dir = out / "plots"
        plot_dir.mkdir(exist_ok=True)
        for i, (_, png) in enumerate(rep["histograms"]):
            (plot_dir / f"hist-{i}.png").write_bytes(png)
        for k, (_, _, png) in enumerate(rep["throughput"]):
            (plot_dir / f"throughput-{k}.png").write_bytes(png)
    md = out / "report.md"
    md.write_text(render_markdown(runs, rep, plot_dir), encoding="utf-8")
    page = out / "report.html"
    page.write_text(render_html(runs, rep), encoding="utf-8")
    return {"markdown": md, "html": page}
