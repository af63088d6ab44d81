"""The comparison report's plots (matplotlib, the `plots` extra): the runs' distance ECDFs
overlaid on a log axis with the gate, and throughput bars against the published figure and
roofline. Without matplotlib `pyplot()` is None and the reports keep their tables."""

from __future__ import annotations

import io

import numpy as np

from .bundles import RunBundle, VERDICT_COLOR

# ----------------------------------------------------------------------------------------
def pyplot():
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


FIG_WIDTH_IN = 12.4  # at 100 dpi about the report's page width (1200 px): the page shows it at full width
LINE_STYLES = ("-", "--", ":", "-.")  # runs of one verdict share its colour and differ by line style
GATE_COLOR = "#333333"  # the gate is not a verdict: no verdict colour


def _below(fig, inches: float = 0.5) -> float:
    """The axes-fraction y just under the x axis' label: a legend anchored there covers nothing."""
    return -inches / (fig.get_figheight() * (fig.subplotpars.top - fig.subplotpars.bottom))


def ecdf_limits(curves, gates: list[float]) -> tuple[float, float, float]:
    """(floor where a distance of 0 is drawn, x min, x max) of the log axis: it starts just left
    of the smallest distance drawn, not decades before it, and ends past the largest distance
    and gate."""
    positive = [x[x > 0] for _, x, _, _ in curves]
    pos = np.concatenate(positive) if positive else np.zeros(0)
    zeros = any(bool((x <= 0).any()) for _, x, _, _ in curves)
    lo = float(pos.min()) if pos.size else (gates[0] / 10 if gates else 1e-3)
    floor = lo / 3 if zeros else lo
    hi = max(float(pos.max()) if pos.size else lo, max(gates) if gates else 0.0)
    return floor, floor / 1.5, hi * 1.5


def ecdf_figure(plt, runs: list[RunBundle]):
    """(figure, axes): every run's distance distribution on one log-x ECDF, each run in its
    verdict's colour (VERDICT_COLOR), each distinct gate a grey dotted line named in the legend,
    which sits below the axes and so covers no curve."""
    curves = [(r, *ecdf_points(r)) for r in runs]
    gates = sorted({r.threshold for r in runs if r.threshold})
    floor, x0, x1 = ecdf_limits(curves, gates)
    fig, ax = plt.subplots(figsize=(FIG_WIDTH_IN, 4.2))
    seen: dict[str, int] = {}
    zeros_any = False
    for r, x, y, missing in curves:
        color = VERDICT_COLOR.get(r.verdict, VERDICT_COLOR["ERROR"])
        style = LINE_STYLES[seen.get(r.verdict, 0) % len(LINE_STYLES)]
        seen[r.verdict] = seen.get(r.verdict, 0) + 1
        if x.size == 0:
            ax.plot([], [], color=color, linestyle=style, label=f"{r.name} — {r.verdict} (no distance)")
            continue
        zeros_any |= bool((x <= 0).any())
        xs = np.concatenate([[floor], np.maximum(x, floor)])
        ys = np.concatenate([[0.0], y])
        label = f"{r.name} — {r.verdict}" + (f" ({missing} without a vector)" if missing else "")
        ax.step(xs, ys, where="post", color=color, linestyle=style, linewidth=2, label=label)
    for g in gates:
        ax.axvline(g, color=GATE_COLOR, linewidth=1.5, linestyle=(0, (1, 2)), label=f"gate {g:g} (L2 threshold)")
    ax.set_xscale("log")
    ax.set_xlim(x0, x1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("L2 distance to the reference (log)" + (f"; a distance of 0 is drawn at {floor:.1g}" if zeros_any
                                                           else ""))
    ax.set_ylabel("fraction of the run's nonces ≤ x")
    ax.grid(True, which="both", alpha=0.25)
    ncol = max(1, min(4, len(curves) + len(gates)))
    if curves or gates:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, _below(fig)), ncol=ncol, fontsize=8, frameon=False)
    ax.set_title("distance distributions (ECDF): a curve right of the gate is a mismatch; colour = verdict",
                 fontsize=10)
    return fig, ax


def plot_ecdf(plt, runs: list[RunBundle]) -> bytes | None:
    fig, _ax = ecdf_figure(plt, runs)
    return _png(fig, plt)


def plot_throughput(plt, runs: list[RunBundle]) -> bytes | None:
    """One bar per run that measured throughput, coloured by verdict, with its profile's
    published figure (|) and roofline (dashed, or named at the axis' end when it lies past it)
    marked on the bar."""
    rs = [r for r in runs if r.steady_per_min() is not None]
    if not rs:
        return None
    fig, ax = plt.subplots(figsize=(FIG_WIDTH_IN, 1.2 + 0.45 * len(rs)))
    ys = np.arange(len(rs))[::-1]
    vals = [r.steady_per_min() for r in rs]
    ax.barh(ys, vals, color=[VERDICT_COLOR.get(r.verdict, VERDICT_COLOR["ERROR"]) for r in rs], height=0.6)
    # the axis ends past the bars and published figures; a roofline beyond it (often 10-20x the measured
    # rate) is named at the axis' end instead of stretching the axis into an empty plot
    top = max(vals + [r.published_per_min() or 0 for r in rs]) * 1.35 or 1
    said_pub = said_roof = False
    for y, r, v in zip(ys, rs, vals):
        pub, roof = r.published_per_min(), r.roofline_per_min()
        if pub:
            ax.plot([pub, pub], [y - 0.42, y + 0.42], color="#0b5394", linewidth=3,
                    label=None if said_pub else "published figure (profile)")
            said_pub = True
        if roof and roof <= top:
            ax.plot([roof, roof], [y - 0.42, y + 0.42], color="#000000", linewidth=1.5, linestyle="--",
                    label=None if said_roof else "roofline (profile)")
            said_roof = True
        elif roof:
            ax.text(top, y, f"roofline {roof:,.0f} →", va="center", ha="right", fontsize=8)
        note = f" {v:,.0f}" + (f" ({100 * v / pub:.0f} % of published)" if pub else "")
        ax.text(v, y, note, va="center", ha="left", fontsize=8)
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{r.name} [{r.profile_name or 'no profile'}]" for r in rs], fontsize=8)
    ax.set_xlim(0, top)
    ax.set_xlabel("steady-state nonces/min")
    if said_pub or said_roof:  # below the axes: it covers no bar
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, _below(fig)), ncol=2, fontsize=8, frameon=False)
    ax.set_title("throughput per run (bar colour = verdict)", fontsize=10)
    return _png(fig, plt)


# ----------------------------------------------------------------------------------------
# rendering
