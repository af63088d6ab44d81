"""`mlvalidate inspect`: what a golden reference holds and what its stat test means."""

from __future__ import annotations

import json

import numpy as np
import torch

from .artifacts import load_reference, resolve_stat_test
from .poc.stats import fraud_cutoff
from .report.text import cutoff_line, histogram, percentiles_line, stat_test_line


def pairwise_distances(vectors: np.ndarray) -> np.ndarray:
    """All N(N-1)/2 pairwise L2 distances, in one batched op."""
    v = torch.as_tensor(np.asarray(vectors, dtype=np.float32))
    d = torch.cdist(v.double(), v.double())
    iu = torch.triu_indices(len(v), len(v), offset=1)
    return d[iu[0], iu[1]].numpy()


def _nonce_range(nonces: np.ndarray) -> str:
    lo, hi = int(nonces.min()), int(nonces.max())
    contiguous = hi - lo + 1 == nonces.size
    return f"{lo}..{hi}" + (" (contiguous)" if contiguous else f" ({nonces.size} distinct, with gaps)")


def reference_summary(arg: str) -> dict:
    ref = load_reference(arg)
    st = resolve_stat_test(ref)
    norms = np.linalg.norm(ref.vectors.astype(np.float64), axis=1)
    pw = pairwise_distances(ref.vectors)
    ignored = None
    if "dist_threshold" in ref.stat_test and ref.stat_test["dist_threshold"] != ref.dist_threshold:
        ignored = ref.stat_test["dist_threshold"]
    return {
        "path": str(ref.path),
        "model": ref.model,
        "n_vectors": ref.n,
        "nonce_min": int(ref.nonces.min()),
        "nonce_max": int(ref.nonces.max()),
        "poc_params": {
            "seq_len": ref.seq_len,
            "k_dim": ref.k_dim,
            "block_hash": ref.block_hash,
            "public_key": ref.public_key,
            "block_height": ref.block_height,
            "node_id": ref.node_id,
            "node_count": ref.node_count,
        },
        "stat_test": st.as_dict(),
        "ignored_stat_test_dist_threshold": ignored,
        "fraud_cutoff": fraud_cutoff(ref.n, st.values.p_mismatch, st.values.fraud_threshold),
        "norm_min": float(norms.min()),
        "norm_max": float(norms.max()),
        "pairwise_l2": {
            "n_pairs": int(pw.size),
            "min": float(pw.min()) if pw.size else None,
            "median": float(np.median(pw)) if pw.size else None,
            "mean": float(pw.mean()) if pw.size else None,
            "max": float(pw.max()) if pw.size else None,
        },
        "collection_batch_size": ref.collection_batch_size,
        "additional_args": ref.additional_args,
        "source": ref.source,
        "generated_at": ref.generated_at,
        "_ref": ref,
        "_pairwise": pw,
        "_st": st,
    }


def inspect_reference(arg: str, as_json: bool = False) -> int:
    s = reference_summary(arg)
    ref, pw, st = s.pop("_ref"), s.pop("_pairwise"), s.pop("_st")
    if as_json:
        print(json.dumps(s, indent=2))
        return 0
    p = s["poc_params"]
    bs = ref.collection_batch_size
    lines = [
        f"reference     {s['path']}",
        f"model         {ref.model}",
        f"vectors       {ref.n}, nonces {_nonce_range(ref.nonces)}",
        f"PoC params    seq_len {p['seq_len']} · k_dim {p['k_dim']} · block_hash {p['block_hash']!r} · "
        f"public_key {p['public_key']!r} · block_height {p['block_height']} · node {p['node_id']}/{p['node_count']}",
        f"stat test     {stat_test_line(st)}",
        f"              {cutoff_line(ref.n, st.values.p_mismatch, st.values.fraud_threshold)}",
    ]
    if s["ignored_stat_test_dist_threshold"] is not None:
        lines.append(
            f"              note: stat_test.dist_threshold {s['ignored_stat_test_dist_threshold']} is ignored; "
            "the top-level dist_threshold is the gate"
        )
    lines += [
        f"vector norms  {s['norm_min']:.5f} .. {s['norm_max']:.5f}  (unit vectors up to fp16 rounding)",
        f"pairwise L2   {percentiles_line(pw)}  ({pw.size} pairs; random unit vectors in R^{ref.k_dim} average ≈ 1.41)",
    ]
    lines += histogram(pw, 0.0, 2.0, bins=10, mark=st.values.dist_threshold)
    lines += [
        f"batch size    {bs if bs is not None else 'not recorded (numerics depend on it; nodes default to 32)'}",
        f"deploy args   {' '.join(ref.additional_args) or 'none'}",
        f"source        {ref.source or 'n/a'}",
        f"generated at  {ref.generated_at or 'n/a'}",
    ]
    print("\n".join(lines))
    return 0
