"""`mlvalidate check`: compare a file of computed vectors with a reference, offline.

The computed file is the system under test's output, so it goes through the same intake
rule as a node's answers (`poc.intake`): malformed entries, unusable vectors, conflicting
duplicates and nonces the reference does not hold are listed, never raised. Only the
reference is strict. The stat test is resolved (and refused if it cannot fail) before the
computed file is read, and the computed file's PoC params, k_dim included, are checked
against the reference's before any of its vectors is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

from .artifacts import Reference, ResolvedStatTest, load_computed, load_reference, resolve_stat_test
from .poc.stats import Comparison, compare_intake


@dataclass
class CheckResult:
    reference: Reference
    computed: Reference  # read leniently: its intake lists what is unusable
    stat_test: ResolvedStatTest
    comparison: Comparison


def check_files(reference: str, computed: str, overrides: dict | None = None, device=None) -> CheckResult:
    ref = load_reference(reference)
    st = resolve_stat_test(ref, overrides)
    got = load_computed(computed, against=ref)
    comp = compare_intake(ref.nonces, ref.vectors, got.intake, st.values, device=device)
    return CheckResult(ref, got, st, comp)
