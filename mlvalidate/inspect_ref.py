"""`mlvalidate inspect`: what a golden reference holds and what its stat test means."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .artifacts import load_reference, resolve_stat_test
from .poc.stats import fraud_cutoff


PAIRWISE_SAMPLE = 2000  # at most this many vectors enter the pairwise statistics (~2M pairs, a few MB)


def pairwise_sample(n: int, limit: int = PAIRWISE_SAMPLE) -> np.ndarray:
    """Row indices of the vectors whose pairwise distances are summarised: all of them up to
    `limit`, else a fixed-seed random sample of `limit` (sorted): the same file always gives
    the same numbers, and memory stays bounded whatever N is."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size=limit, replace=False))


def pairwise_distances(vectors: np.ndarray) -> np.ndarray:
    """All M(M-1)/2 pairwise L2 distances of M vectors (float64, row by row: O(M^2) output, O(M k) work
    memory). Callers bound M (see `pairwise_sample`)."""
    v = np.asarray(vectors, dtype=np.float64)
    m = len(v)
    out = np.empty(m * (m - 1) // 2, dtype=np.float64)
    pos = 0
    for i in range(m - 1):
        d = np.sqrt(np.square(v[i + 1 :] - v[i]).sum(axis=1))
        out[pos : pos + d.size] = d
        pos += d.size
    return out


def reference_summary(arg: str) -> dict:
    ref = load_reference(arg)
    st = resolve_stat_test(ref)
    norms = np.sqrt(np.einsum("ij,ij->i", ref.vectors, ref.vectors, dtype=np.float64))  # no N x k float64 copy
    sample = pairwise_sample(ref.n)
    pw = pairwise_distances(ref.vectors[sample])
    ignored = None
    if "dist_threshold" in ref.stat_test and ref.stat_test["dist_threshold"] != ref.dist_threshold:
        ignored = ref.stat_test["dist_threshold"]
    found = ref.found
    return {
        "path": str(ref.path),
        "model": ref.model,
        "chosen_because": found.why if found else None,
        "other_references": [{"file": str(p), "n_vectors": vector_count(p)} for p in (found.others if found else ())],
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
            "n_vectors": int(sample.size),
            "sampled": bool(sample.size < ref.n),
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


def vector_count(path) -> int | None:
    """How many vectors a reference file lists (its artifacts, unchecked), None when it cannot be read."""
    from .errors import MlvalidateError
    from .reference_lookup import read_json_file

    try:
        doc = read_json_file(path, "reference")
    except MlvalidateError:
        return None
    arts = doc.get("artifacts") if isinstance(doc, dict) else None
    return len(arts) if isinstance(arts, list) else None


def list_references() -> list[dict]:
    """Every reference in the lookup folders (artifacts_dirs(), first folder wins per file
    name): its model, nonce count, seq_len, stat test, source. A file that does not load is
    listed with its error, not skipped."""
    from .errors import MlvalidateError
    from .reference_lookup import artifacts_dirs, lookup_reference

    rows, seen = [], set()
    for d in artifacts_dirs():
        for path in sorted(d.glob("*.json")) if d.is_dir() else []:
            if path.name in seen:
                continue
            seen.add(path.name)
            try:
                ref = load_reference(str(path))
                st = resolve_stat_test(ref)
            except MlvalidateError as e:
                rows.append({"file": str(path), "error": e.one_line()})
                continue
            rows.append({"file": str(path), "model": ref.model, "n_vectors": ref.n, "seq_len": ref.seq_len,
                         "stat_test": st.values.as_dict(), "source": ref.source, "generated_at": ref.generated_at})
    picked: dict[str, str | None] = {}  # model id -> the file it opens
    for r in rows:
        if "model" in r and r["model"] not in picked:
            try:
                picked[r["model"]] = str(lookup_reference(r["model"]).path.resolve())
            except MlvalidateError:
                picked[r["model"]] = None
        if "model" in r:
            r["model_id_opens"] = picked[r["model"]]
            r["opened_by_model_id"] = picked[r["model"]] == str(Path(r["file"]).resolve())
    return rows
