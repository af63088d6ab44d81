"""The hardware comparison of `compare`: runs grouped by the node's hardware, each group's median
and spread over its runs, the groups ranked, and each run's energy and cost.

* A group is one `NodeHardware.group_key()`: GPU model x count x profile (or layout). Runs whose
  hardware is unknown are one group, "unknown", which is shown and never ranked: nothing says
  what it computes on.
* Only runs whose vectors passed (PASS, PASS-with-mismatches) and that measured a steady rate are
  a group's runs: a FAIL run's speed is no capacity (fraud proven), an INCOMPLETE, ERROR or
  skipped validation's is unchecked; they are listed apart with why.
* Per group, over its runs: the median of nonces/s, nonces/s per GPU, joules per nonce, nonces
  per kWh and per GPU-hour, $ per million nonces and nonces per $ (report/cost.py), with the
  smallest and largest; ranked (1 = best) by nonces/s, per GPU, per kWh and per $; the profile's
  published figure beside it; how many of its runs were throttled in their window.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from .bundles import RunBundle, short_source
from .cost import Prices, run_costs
from .energy import energy_cells

RANKED_VERDICTS = ("PASS", "PASS-with-mismatches")
RANKS = (("rate", "nonces/s"), ("per_gpu", "per GPU"), ("per_kwh", "nonces/kWh"), ("per_usd", "nonces/$"))
# group colours in the plot: none of them a verdict's (bundles.VERDICT_COLOR), so a colour never reads as a verdict
GROUP_COLORS = ("#1f77b4", "#17becf", "#8c564b", "#e377c2", "#0b3d91", "#b8860b", "#5f9ea0", "#d62790")
UNKNOWN_COLOR = "#4d4d4d"
UNKNOWN_LABEL = "unknown"


@dataclass
class RunFigures:
    """One run that measured a steady rate: its group, energy and cost figures."""

    run: RunBundle
    rate: float  # steady nonces/s
    key: tuple
    label: str
    energy: dict  # report/energy.energy_cells
    costs: dict  # report/cost.run_costs
    throttled: bool = False

    def value(self, metric: str) -> float | None:
        return self.rate if metric == "rate" else self.costs.get(metric)


@dataclass
class Group:
    key: tuple
    label: str
    known: bool
    source: str  # where its hardware came from (or why it is unknown)
    runs: list[RunFigures] = field(default_factory=list)
    ranks: dict[str, int | None] = field(default_factory=dict)
    color: str = UNKNOWN_COLOR

    def values(self, metric: str) -> list[float]:
        return [v for f in self.runs if (v := f.value(metric)) is not None]

    def median(self, metric: str) -> float | None:
        v = self.values(metric)
        return statistics.median(v) if v else None

    def published_per_min(self) -> float | None:
        return next((p for f in self.runs if (p := f.run.published_per_min())), None)

    def profile(self) -> str | None:
        return next((f.run.profile_name for f in self.runs if f.run.profile_name), None)


def group_of(r: RunBundle) -> tuple[tuple, str, bool, str]:
    """(key, label, known, source) of a run's hardware group."""
    hw = r.hardware()
    if not hw.known:
        return (UNKNOWN_LABEL,), UNKNOWN_LABEL, False, short_source(hw)
    model, count, setup = hw.group_key()
    return (model, count, setup), f"{hw.label()} · {setup}", True, short_source(hw)


def run_figures(runs: list[RunBundle], prices: Prices | None) -> list[RunFigures]:
    """Every run that measured a steady rate, with its figures."""
    out = []
    for r in runs:
        per_min = r.steady_per_min()
        if per_min is None:
            continue
        tp = r.report.get("throughput_phase") or {}
        e = tp.get("energy") if "energy" in tp else None
        cells = energy_cells(e, True)
        hw = r.hardware()
        model = hw.gpu_model if hw.known else None
        costs = run_costs(per_min / 60, hw.gpu_count if hw.known else None, cells.get("joules_per_nonce"), model, prices)
        key, label, _, _ = group_of(r)
        out.append(RunFigures(r, per_min / 60, key, label, cells, costs, throttled=cells.get("throttled", "no") != "no"))
    return out


def hardware_groups(figs: list[RunFigures]) -> tuple[list[Group], list[tuple[RunFigures, str]]]:
    """(groups, best first by nonces/s with the unknown group last; runs that never rank, with why)."""
    groups: dict[tuple, Group] = {}
    apart = []
    for f in figs:
        if f.run.verdict not in RANKED_VERDICTS:
            apart.append((f, _why_apart(f.run.verdict)))
            continue
        _, label, known, source = group_of(f.run)
        g = groups.setdefault(f.key, Group(f.key, label, known, source))
        g.runs.append(f)
    out = sorted(groups.values(), key=lambda g: (not g.known, -(g.median("rate") or 0.0)))
    for metric, _ in RANKS:
        ranked = sorted((g for g in out if g.known and g.median(metric) is not None), key=lambda g: -g.median(metric))
        for g in out:
            g.ranks[metric] = ranked.index(g) + 1 if g in ranked else None
    for i, g in enumerate(g for g in out if g.known):
        g.color = GROUP_COLORS[i % len(GROUP_COLORS)]
    return out, apart


def _why_apart(verdict: str) -> str:
    if verdict == "FAIL":
        return "FAIL: fraud proven, its speed is no capacity"
    if verdict == "SKIPPED":
        return "validation skipped: its vectors were not checked"
    return f"{verdict}: not every vector was checked"


# ----------------------------------------------------------------------------------------
# how the tables say it (cells: text, or {"main", "sub"} that the page shows on two lines)
# ----------------------------------------------------------------------------------------
def fmt(v: float | None) -> str:
    if v is None:
        return "n/a"
    a = abs(v)
    return f"{v:,.0f}" if a >= 1000 else f"{v:.1f}" if a >= 10 else f"{v:.3g}" if a >= 0.01 else f"{v:.2e}"


def usd(v: float | None) -> str:
    return "n/a" if v is None else f"${v:,.2f}" if v >= 0.01 else f"${v:.2e}"


def spread(g: Group, metric: str) -> list[str]:
    """The spread over the group's runs: [half the range as % of the median, min–max], or how many runs."""
    v = g.values(metric)
    if len(v) < 2:
        return [f"{len(v)} run" if v else "no run"]
    half = (max(v) - min(v)) / 2 / statistics.median(v) if statistics.median(v) else 0.0
    return [f"±{100 * half:.1f} % of {len(v)}", f"{fmt(min(v))}–{fmt(max(v))}"]


def _ranked(g: Group, metric: str, extra: list[str] | None = None) -> dict:
    rank = g.ranks.get(metric)
    head = f"#{rank}" if rank else ("not ranked" if not g.known else "")
    lines = [x for x in (head, *(extra or [])) if x]
    return {"main": fmt(g.median(metric)), "sub": [" · ".join(lines[:2]), *lines[2:]] if lines else []}


def _usd_parts(c) -> list[str]:
    """$/M nonces' parts, rental and energy (`c`: a cost figure getter)."""
    return [f"{k} {usd(c(m))}" for k, m in (("rental", "rental_usd_per_m"), ("energy", "energy_usd_per_m"))
            if c(m) is not None]


GROUP_HEAD = ["group [hardware from]", "runs", "nonces/s", "per GPU", "J/nonce", "nonces/kWh", "nonces/GPU-h",
              "$/M nonces", "nonces/$", "published", "throttled runs"]


def group_rows(groups: list[Group]) -> list[list]:
    rows = []
    for g in groups:
        pub, rate = g.published_per_min(), g.median("rate")
        throttled = [f for f in g.runs if f.throttled]
        rows.append([
            {"main": g.label, "sub": [g.source if g.known else f"hardware unknown ({g.source}): not ranked"]},
            str(len(g.runs)), _ranked(g, "rate", spread(g, "rate")), _ranked(g, "per_gpu"),
            {"main": fmt(g.median("joules_per_nonce")), "sub": spread(g, "joules_per_nonce")},
            _ranked(g, "per_kwh"), {"main": fmt(g.median("per_gpu_hour")), "sub": []},
            {"main": usd(g.median("usd_per_m")), "sub": _usd_parts(g.median)}, _ranked(g, "per_usd"),
            {"main": f"{pub:,.0f}/min" if pub else "n/a",
             "sub": [f"median at {100 * rate * 60 / pub:.0f} %" if pub and rate else (g.profile() or "no profile")]},
            f"{len(throttled)} of {len(g.runs)}" + (": " + ", ".join(sorted({k for f in throttled for k in
                                                                            f.energy["throttled"].split(" + ")}))
                                                     if throttled else ""),
        ])  # fmt: skip
    return rows


RUN_HEAD = ["run", "verdict", "group", "nonces/s", "J/nonce [W per GPU]", "nonces/kWh", "nonces/GPU-h", "$/M nonces",
            "nonces/$", "energy: method [source], throttling; or why none"]


def run_rows(figs: list[RunFigures]) -> list[list]:
    rows = []
    for f in figs:
        e, c = f.energy, f.costs
        source = ((f.run.report.get("throughput_phase") or {}).get("energy") or {}).get("source")
        if "why" in e:
            note = e["why"]
        else:
            note = f"{e['method']} [{source or 'n/a'}]" + (f"; THROTTLED: {e['flag']}" if e.get("flag") else "")
        if c.get("why_usd") and c["usd_per_m"] is None:
            note += f" ($ n/a: {c['why_usd']})"
        watts = e.get("watts_per_gpu")
        rows.append([
            f.run.name, f.run.verdict, f.label, fmt(f.rate),
            {"main": fmt(e.get("joules_per_nonce")), "sub": [f"{fmt(watts)} W/GPU"] if watts is not None else []},
            fmt(c["per_kwh"]), fmt(c["per_gpu_hour"]),
            {"main": usd(c["usd_per_m"]), "sub": _usd_parts(c.get)},
            fmt(c["per_usd"]), note,
        ])  # fmt: skip
    return rows


def flat(rows: list[list]) -> list[list[str]]:
    """The rows for Markdown: a cell of several lines as "main (line; line)"."""
    return [[(f"{c['main']} ({'; '.join(c['sub'])})" if c["sub"] else c["main"]) if isinstance(c, dict) else c
             for c in row] for row in rows]


def cost_text(prices: Prices | None) -> str:
    if prices is None:
        return ("No --prices: nonces per GPU-hour and per kWh only (compare --prices FILE adds $ per million nonces and "
                "nonces per $, GPU rental and energy apart).")
    return (f"Prices {prices.describe()}. $/M nonces is GPU rental + energy (each apart under it); a part whose "
            "figure is missing (no energy measured) leaves the sum n/a.")


def md_hardware(rep: dict, plot_dir, md_table) -> list[str]:
    """The Markdown report's hardware sections (compare.build_report's `rep`; `md_table(head, rows)`
    the report's table lines)."""
    if not rep["run_rows"]:
        return []
    out = ["## Hardware comparison", "", GROUPS_TEXT, "", rep["cost_text"], ""]
    out += md_table(GROUP_HEAD, flat(rep["group_rows"])) if rep["group_rows"] else [NO_GROUP, ""]
    if rep["energy_png"] and plot_dir is not None:
        out += ["![throughput vs energy per nonce](plots/energy.png)", ""]
    out += [f"* not ranked: **{f.run.name}** — {why}" for f, why in rep["apart"]]
    out += ["", "## Energy and cost per run", "", *md_table(RUN_HEAD, flat(rep["run_rows"]))]
    if rep["no_rate"]:
        out += [f"No throughput phase: {', '.join(rep['no_rate'])}.", ""]
    return out


NO_GROUP = "No run ranks: none whose vectors passed measured a steady rate."
GROUPS_TEXT = ("Runs grouped by the node's hardware (GPU model × count · profile or layout): each figure is the "
               "median over the group's runs, under it the rank (#1 best) and the spread. Only runs whose vectors "
               "passed rank; runs with unknown hardware are the group \"unknown\", shown and never ranked. Energy is "
               "the measuring window's, through NVML on the node's own host; a remote node's is not measured.")
