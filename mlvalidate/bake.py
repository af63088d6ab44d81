"""`mlvalidate bake`: compute a golden reference with the reference engine."""

from __future__ import annotations

from pathlib import Path

from .artifacts import reference_document, write_json
from .engines.base import EngineResult, PocParams
from .engines.reference import ReferenceEngine
from .errors import EngineError
from .progress import Progress

# The chain's MiniMax-M2.7 stat test (docs/minimax-m2.md §1): the default for baked references.
CHAIN_STAT_TEST = {"dist_threshold": 0.75, "p_mismatch": 0.1, "fraud_threshold": 0.05}


def bake_reference(
    engine: ReferenceEngine,
    *,
    model_id: str,
    out: str | Path,
    n_nonces: int = 200,
    batch_size: int = 32,
    params: PocParams | None = None,
    stat_test: dict | None = None,
    progress: bool = True,
) -> tuple[Path, EngineResult]:
    """Compute nonces 0..n-1 and write them in the golden schema. Every nonce must come back."""
    params = params or PocParams(block_hash="TEST_BLOCK", public_key="test_pub_keys_v2", seq_len=1024)
    st = dict(CHAIN_STAT_TEST if stat_test is None else stat_test)
    res = engine.compute(range(n_nonces), params, batch_size=batch_size,
                         progress=Progress(f"bake {model_id}") if progress else None)
    if len(res.nonces) != n_nonces:
        dropped = sorted(set(range(n_nonces)) - set(res.nonces.tolist()))
        raise EngineError(f"{len(dropped)} nonce(s) produced NaN and were dropped: {dropped[:10]}",
                          "a reference must be complete; check the checkpoint and dtype")
    d = engine.describe()
    doc = reference_document(
        model=model_id, seq_len=params.seq_len, k_dim=params.k_dim, block_hash=params.block_hash,
        public_key=params.public_key, block_height=params.block_height, node_id=params.node_id,
        node_count=params.node_count, nonces=res.nonces, vectors=res.vectors,
        dist_threshold=st.pop("dist_threshold", None), stat_test=st or None,
        source=(f"mlvalidate reference engine ({d['architecture']}, {d['num_layers']} layers, hidden "
                f"{d['hidden_size']}) on {d['device']}, dtype {d['dtype']}, batch size {batch_size}, "
                f"torch {d['torch']}, from {d['model_dir'] or d['model']}"),
        collection_batch_size=batch_size,
        stronger_rng=params.stronger_rng,
    )
    return write_json(out, doc), res
