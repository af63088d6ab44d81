"""The hardware comparison's plot (matplotlib, the `plots` extra): throughput against energy per
nonce, one point per run that measured both, coloured by its hardware group (report/groups.py's
colours, none of them a verdict's); a run that never ranks is an x in its verdict's colour
(bundles.VERDICT_COLOR); each group's published figure is a dashed line in its colour. Up and
to the left is better: more nonces per second for fewer joules each."""

from __future__ import annotations

import io

from .bundles import VERDICT_COLOR
from .groups import Group, RunFigures

FIG_WIDTH_IN = 12.4  # the report's page width at 100 dpi, as the other plots


def energy_figure(plt, groups: list[Group], apart: list[tuple[RunFigures, str]]):
    """(figure, axes), or None when no run has both figures."""
    points = [(g, f) for g in groups for f in g.runs if f.energy.get("joules_per_nonce")]
    others = [f for f, _ in apart if f.energy.get("joules_per_nonce")]
    if not points and not others:
        return None
    fig, ax = plt.subplots(figsize=(FIG_WIDTH_IN, 4.6))
    said: set[str] = set()
    for g, f in points:
        ax.scatter([f.energy["joules_per_nonce"]], [f.rate], s=70, color=g.color, edgecolors="#222222", linewidths=0.6,
                   zorder=3, label=None if g.label in said else g.label + ("" if g.known else " (hardware unknown)"))
        said.add(g.label)
    for f in others:
        color = VERDICT_COLOR.get(f.run.verdict, VERDICT_COLOR["ERROR"])
        name = f"not ranked: {f.run.verdict}"
        ax.scatter([f.energy["joules_per_nonce"]], [f.rate], s=80, marker="x", color=color, linewidths=2, zorder=3,
                   label=None if name in said else name)
        said.add(name)
    rates = [f.rate for _, f in points] + [f.rate for f in others]
    top = max(rates) * 1.25
    for g in groups:
        pub = g.published_per_min()
        if pub and pub / 60 <= top * 1.6:
            ax.axhline(pub / 60, color=g.color, linestyle="--", linewidth=1.2, zorder=1,
                       label=f"published: {g.label} ({pub:,.0f}/min)")
            top = max(top, pub / 60 * 1.1)
    if len(points) + len(others) <= 12:
        for f in [f for _, f in points] + others:
            ax.annotate(f.run.name, (f.energy["joules_per_nonce"], f.rate), xytext=(6, 4), textcoords="offset points",
                        fontsize=8)
    ax.set_ylim(0, top)
    xs = [f.energy["joules_per_nonce"] for _, f in points] + [f.energy["joules_per_nonce"] for f in others]
    ax.set_xlim(0, max(xs) * 1.3)
    ax.set_xlabel("joules per nonce over the measuring window (NVML; lower is better)")
    ax.set_ylabel("steady nonces/s")
    ax.grid(True, alpha=0.25)
    ax.set_title("throughput vs energy per nonce: one point per run, colour = hardware group", fontsize=10)
    below = -0.5 / (fig.get_figheight() * (fig.subplotpars.top - fig.subplotpars.bottom))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, below), ncol=3, fontsize=8, frameon=False)
    return fig, ax


def plot_energy(plt, groups: list[Group], apart: list[tuple[RunFigures, str]]) -> bytes | None:
    made = energy_figure(plt, groups, apart)
    if made is None:
        return None
    fig, _ = made
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
