"""`mlvalidate compare`: one report over several run bundles (and the fleet report's pieces).

Writes report.md and a self-contained report.html (plots embedded as base64 PNG data URIs,
no external resource, no script), laid out for a 1280 px window, with:
  * the head: reference, model, stat test (with sources), harness version, run time (header.py);
  * a verdict table, one colour per verdict (bundles.VERDICT_COLOR, in every table and plot):
    run, profile, the node's hardware with its source (never the harness machine's for a remote
    node), verdict, n_mismatch / n_total, p-value, steady-state nonces/min, % of the profile's
    published figure and of its roofline;
  * the cross-run distance matrix as a heat map (an HTML table in blues, no verdict colour: near
    white at 0, mid blue at the gate, dark from twice the gate): median L2 between every pair of
    runs' vectors over the nonces both have, with the shared count;
  * ONE plot of every run's distance distribution at the page's width: ECDFs overlaid on a log x
    axis that starts at the data, in their verdicts' colours, the gate a grey line named in the
    legend below the axes (a run with missing vectors tops out below 1);
  * throughput bars per run, coloured by verdict, with the profile's published figure and
    roofline marked on each bar;
  * the hardware comparison (groups.py): runs grouped by the node's hardware, each group's median
    and spread, ranked by nonces/s, per GPU, per kWh and per $ (`--prices`: cost.py), its
    published figure beside it, FAIL and unchecked runs apart; a plot of throughput against
    energy per nonce (group_plot.py); each run's energy (the window's NVML figures, or why none:
    a remote node's GPUs are not this machine's) and cost.

Plots need matplotlib (the `plots` extra); without it every table (and the heat map) is still
there, with a text histogram per run.
"""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np

from .text import histogram
from .bundles import NO_PLOTS, RunBundle, VERDICT_HEAD, distance_matrix, distance_summary, heat_cells, heat_legend, load_bundles, matrix_gate, matrix_rows, throughput_groups, verdict_class, verdict_css, verdict_rows
from .header import header_rows
from .group_plot import plot_energy
from .groups import (GROUP_HEAD, GROUPS_TEXT, NO_GROUP, RUN_HEAD, cost_text, group_rows, hardware_groups, md_hardware,
                     run_figures, run_rows)
from .plots import plot_ecdf, plot_throughput, pyplot

FOLD_AT = 160  # a text cell longer than this folds (<details>): the page stays readable, nothing is cut

# ----------------------------------------------------------------------------------------
def md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    def esc(s):
        return str(s).replace("|", "\\|")

    return ["| " + " | ".join(map(esc, head)) + " |", "| " + " | ".join("---" for _ in head) + " |",
            *("| " + " | ".join(map(esc, row)) + " |" for row in rows), ""]  # fmt: skip


def source_cell(text: str):
    """A "label [source]" cell as the page shows it: the source on a line of its own, smaller."""
    main, sep, sub = text.rpartition(" [")
    return {"main": main, "sub": sub[:-1]} if sep and text.endswith("]") else text


def html_rows(rows: list[list[str]], col: int) -> list[list]:
    return [[source_cell(c) if i == col else c for i, c in enumerate(row)] for row in rows]


def build_report(runs: list[RunBundle], prices=None) -> dict:
    """Every table and (when matplotlib is importable) the plots as PNG bytes: one ECDF of all
    runs, one throughput chart, throughput vs energy per nonce; the distance matrix is an HTML
    heat map (no plot needed). `prices`: a cost.Prices, or None."""
    plt = pyplot()
    m = distance_matrix(runs)
    groups = throughput_groups(runs)
    figs = run_figures(runs, prices)
    hw_groups, apart = hardware_groups(figs)
    return {
        "hw_groups": hw_groups, "group_rows": group_rows(hw_groups), "run_rows": run_rows(figs), "apart": apart,
        "energy_png": plot_energy(plt, hw_groups, apart) if plt else None, "cost_text": cost_text(prices),
        "no_rate": [r.name for r in runs if r.steady_per_min() is None],
        "header": header_rows(runs),
        "verdicts": (VERDICT_HEAD, verdict_rows(runs)),
        "verdicts_html": (VERDICT_HEAD, html_rows(verdict_rows(runs), 2)),
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
               "numerically close one deployment is to another. Colour: near white at 0, mid blue at the gate, dark "
               "blue from twice the gate.")


def md_distributions(runs: list[RunBundle], rep: dict, plot_dir: Path | None) -> list[str]:
    out = ["## Distance distributions", ""]
    if rep["ecdf"] and plot_dir is not None:
        out += ["Every run's ECDF on one log axis, in its verdict's colour; the grey dotted line is the gate.", "",
                "![distance distributions](plots/ecdf.png)", ""]
    for r in runs:
        out += [f"* **{r.name}** — {r.verdict}: {distance_summary(r)}"]
    out.append("")
    if not (rep["ecdf"] and plot_dir is not None):
        for r in runs:
            out += [f"### {r.name} — {r.verdict}", "", "```", *_text_hist(r), "```", ""]
    return out


def md_throughput(rep: dict, plot_dir: Path | None) -> list[str]:
    if not rep["throughput"]:
        return []
    out = ["## Throughput per profile", ""]
    if rep["throughput_png"] and plot_dir is not None:
        out += ["![throughput](plots/throughput.png)", ""]
    for prof, rs in rep["throughput"]:
        out += [f"### {prof}", "", *md_table(*_throughput_table(rs))]
    return out


def md_header(rows: list[tuple[str, str]]) -> list[str]:
    return [*(f"* **{k}**: {v}" for k, v in rows), ""]


def render_markdown(runs: list[RunBundle], rep: dict, plot_dir: Path | None) -> str:
    out = ["# mlvalidate compare", "", *md_header(rep["header"]),
           f"{len(runs)} run(s): " + ", ".join(f"`{r.path}`" for r in runs), ""]
    if not rep["plots"]:
        out += [f"> {NO_PLOTS}", ""]
    out += ["## Verdicts", "", *md_table(*rep["verdicts"])]
    out += md_hardware(rep, plot_dir, md_table)
    out += ["## Distance matrix", "", MATRIX_TEXT, "", *md_table(*rep["matrix"])]
    out += md_distributions(runs, rep, plot_dir)
    out += md_throughput(rep, plot_dir)
    return "\n".join(out) + "\n"


def template_env():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("mlvalidate.report", "templates"),
                             autoescape=True, keep_trailing_newline=True)
    env.filters["b64"] = lambda png: base64.b64encode(png).decode("ascii")
    env.globals.update(verdict_class=verdict_class, verdict_css=verdict_css, heat_legend=heat_legend, fold_at=FOLD_AT,
                       no_plots=NO_PLOTS, matrix_text=MATRIX_TEXT, groups_text=GROUPS_TEXT, group_head=GROUP_HEAD,
                       no_group=NO_GROUP, run_head=RUN_HEAD,
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
    if rep["energy_png"]:
        (plot_dir / "energy.png").write_bytes(rep["energy_png"])
    return plot_dir


def runs_exit_code(runs: list[RunBundle]) -> int:
    """`compare`'s exit code, by the README's rule over the runs' verdicts (as a fleet's): 1 if any
    run FAILed (its bundle proves fraud), else 2 if any is INCOMPLETE, ERROR or unknown, else 0
    (every run PASS, PASS-with-mismatches or SKIPPED)."""
    verdicts = {r.verdict for r in runs}
    if "FAIL" in verdicts:
        return 1
    return 0 if verdicts and verdicts <= {"PASS", "PASS-with-mismatches", "SKIPPED"} else 2


def write_compare(run_dirs, out_dir: str | Path, profiles=None, prices: str | Path | None = None) -> dict:
    """report.md and report.html over the bundles (`prices`: a prices file, report/cost.py);
    returns their paths and the exit code (runs_exit_code)."""
    from .cost import read_prices

    price_table = read_prices(prices) if prices is not None else None
    runs = load_bundles(run_dirs, profiles)
    rep = build_report(runs, price_table)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_dir = write_plots(rep, out)
    md = out / "report.md"
    md.write_text(render_markdown(runs, rep, plot_dir), encoding="utf-8")
    page = out / "report.html"
    page.write_text(render_html(runs, rep), encoding="utf-8")
    return {"markdown": md, "html": page, "exit_code": runs_exit_code(runs), "verdicts": [r.verdict for r in runs]}


# ----------------------------------------------------------------------------------------
# the fleet report (`mlvalidate fleet`): the same pieces, one row per node, outliers flagged
