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
