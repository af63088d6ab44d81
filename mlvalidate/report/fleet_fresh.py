"""The fleet report's fresh-challenge section (fleet --fresh N): per challenge, each node's fresh
verdict and the pairwise matrix of the nodes' answers, beside the golden distance matrix."""

from __future__ import annotations

from .bundles import heat_color
from .text import fmt_float

# ----------------------------------------------------------------------------------------
FRESH_TEXT = ("Every node answered the same fresh challenge (a block hash, key and nonces drawn for this run); "
              "median L2 between two nodes' vectors over the nonces both answered usably, with the pair's verdict "
              "under the golden gate and binomial test: agree, disagree (fraud proven between them) or unknown.")


def fresh_md(doc: dict, table) -> list[str]:
    """The fleet report's fresh-challenge section in Markdown (`table`: compare.md_table)."""
    out = ["## Fresh challenge", "", FRESH_TEXT, ""]
    for g in doc["groups"]:
        ch = g["challenge"]
        out += [f"Challenge for {ch['model']}: block_hash `{ch['block_hash']}`, {len(ch['nonces'])} nonces; "
                + (f"judged against {g['trusted']}" if g["trusted"] else "judged by the majority of the nodes")
                + (f" — the trusted computation failed: {g['trusted_error']}" if g.get("trusted_error") else ""), ""]
        out += table(["node", "fresh verdict", "why"],
                     [[n, doc["nodes"][n]["verdict"], doc["nodes"][n]["reason"]] for n in g["nodes"]])
        names, cells = g["matrix"]["names"], g["matrix"]["cells"]
        out += table(["median L2 (shared nonces)", *names],
                     [[a, *(_cell_text(c) for c in row)] for a, row in zip(names, cells)])
    return out


def _cell_text(c: dict) -> str:
    if c["median_l2"] is None:
        return f"n/a ({c['relation']})"
    return f"{c['median_l2']:.4g} ({c['n']}) {c['relation']}"


def fresh_heat(doc: dict, gate: float | None) -> list[dict]:
    """Per challenge: the verdict rows, names and heat-map cells for the HTML report (the golden
    matrix's colours)."""
    groups = []
    for g in doc["groups"]:
        names, cells = g["matrix"]["names"], []
        for a, row in zip(names, g["matrix"]["cells"]):
            cells.append([{"text": "n/a" if c["median_l2"] is None else f"{c['median_l2']:.3g}"
                           + ("" if c["relation"] == "self" else f" {c['relation']}"),
                           "n": c["n"], "color": heat_color(c["median_l2"], gate),
                           "dark": c["median_l2"] is not None and bool(gate) and c["median_l2"] > 1.3 * gate,
                           "title": f"{a} vs {b}: {c['relation']}, {c['n']} shared usable nonces, p_value "
                                    f"{fmt_float(c['p_value'], 3)}"} for b, c in zip(names, row)])
        rows = [[n, doc["nodes"][n]["verdict"], doc["nodes"][n]["reason"]] for n in g["nodes"]]
        groups.append({"names": names, "cells": cells, "rows": rows, "group": g})
    return groups
