"""`mlvalidate check`: compare a file of computed vectors with a reference, offline."""

from __future__ import annotations

import json

from .artifacts import load_computed, load_reference, resolve_stat_test, same_poc_params
from .errors import ReferenceError_
from .poc.stats import compare_vectors
from .report.text import comparison_block


def check_files(reference: str, computed: str, overrides: dict | None = None, as_json: bool = False, device=None) -> int:
    ref = load_reference(reference)
    got = load_computed(computed)
    diff = same_poc_params(ref, got)
    if diff:
        raise ReferenceError_(
            f"{computed} was not computed with the reference's PoC params ({'; '.join(diff)})",
            "compute the vectors with the reference's model, seq_len, k_dim, block_hash and public_key",
        )
    st = resolve_stat_test(ref, overrides)
    comp = compare_vectors(ref.nonces, ref.vectors, got.nonces, got.vectors, st.values, device=device)
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
        f"computed      {got.path} ({got.n} vectors)",
        *comparison_block(comp, st),
    ]
    for nonce, why in list(got.problems.items())[:10]:
        lines.append(f"              nonce {nonce}: {why}")
    print("\n".join(lines))
    return verdict.exit_code
