"""`mlvalidate check`: compare a file of computed vectors with a reference, offline.

The computed file is the system under test's output, so it goes through the same intake
rule as a node's answers (`poc.intake`): malformed entries, unusable vectors, conflicting
duplicates and nonces the reference does not hold are listed, never raised. Only the
reference is strict. The stat test is resolved (and refused if it cannot fail) before the
computed file is read, and the computed file's PoC params, k_dim included, are checked
against the reference's before any of its vectors is decoded.
"""

from __future__ import annotations

import json

from .artifacts import load_computed, load_reference, resolve_stat_test
from .poc.stats import compare_intake
from .report.text import comparison_block


def check_files(reference: str, computed: str, overrides: dict | None = None, as_json: bool = False, device=None) -> int:
    ref = load_reference(reference)
    st = resolve_stat_test(ref, overrides)
    got = load_computed(computed, against=ref)
    comp = compare_intake(ref.nonces, ref.vectors, got.intake, st.values, device=device)
    verdict = comp.verdict
    if as_json:
        out = {"reference": str(ref.path), "computed": str(got.path), **comp.summary(),
               "stat_test_source": st.sources, "invalid_reasons": {str(k): v for k, v in got.problems.items()},
               "distances": {str(int(n)): (None if d != d else float(d)) for n, d in zip(comp.nonces, comp.distances)}}
        print(json.dumps(out, indent=2))
        return verdict.exit_code
    lines = [
        f"VERDICT: {verdict.description}",
        f"reference     {ref.path} ({ref.model}, {ref.n} vectors)",
        f"computed      {got.path} ({got.intake.n} distinct nonces)",
        *comparison_block(comp, st),
    ]
    for nonce, why in list(got.problems.items())[:10]:
        lines.append(f"              nonce {nonce}: {why}")
    if len(got.problems) > 10:
        lines.append(f"              … and {len(got.problems) - 10} more unusable nonce(s) (--json lists every one)")
    print("\n".join(lines))
    return verdict.exit_code
