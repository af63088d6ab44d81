"""Validation of one system under test against one golden reference.

The engine is asked for every reference nonce (in the reference's order, in chunks of the
batch size); what comes back is compared in one batched operation. The harness never
trusts an engine's own verdict, and a nonce with no usable vector is a mismatch.
"""

from __future__ import annotations

import time

from .artifacts import Reference, ResolvedStatTest
from .engines.base import Engine, PocParams
from .poc.stats import compare_vectors
from .progress import Progress
from .report.bundle import RunRecord


def run_validation(
    engine: Engine,
    ref: Reference,
    stat_test: ResolvedStatTest,
    *,
    batch_size: int,
    name: str,
    inputs: dict | None = None,
    progress: bool = True,
) -> RunRecord:
    params = PocParams.from_reference(ref)
    t0 = time.perf_counter()
    res = engine.compute(ref.nonces.tolist(), params, batch_size=batch_size,
                         progress=Progress(name) if progress else None)
    compute_s = time.perf_counter() - t0
    comp = compare_vectors(ref.nonces, ref.vectors, res.nonces, res.vectors, stat_test.values)
    timing = {k: v for k, v in res.info.items() if k.endswith("_s")}
    return RunRecord(
        name=name,
        reference=ref,
        stat_test=stat_test,
        comparison=comp,
        engine={k: v for k, v in res.info.items() if not k.endswith("_s")},
        computed_nonces=res.nonces,
        computed_vectors=res.vectors,
        batch_size=batch_size,
        elapsed_s=res.elapsed_s,
        inputs=inputs or {},
        phases=[{"name": "validate", "status": comp.verdict.value, "elapsed_s": round(compute_s, 3),
                 "detail": f"{comp.n_mismatch}/{comp.n_total} mismatches"}],
        timing={"batch_seconds": res.batch_seconds, **timing},
    )
