"""PoC v2 math, checkable against docs/poc-v2.md line by line.

rng.py        §1, §2.1  seeds, murmur3 variant, uniforms, Box-Muller, input embeddings, Householder vectors
transform.py  §2.2, §3  the per-layer reflection, k-dim pick, Haar rotation, poc_vectors
codec.py      §3.9      fp16 little-endian base64 encoding
stats.py      §4        batched distances, binomial fraud test, fail-closed comparison
intake.py               one rule for every vector that comes in from a system under test

Pure functions on tensors/arrays: no I/O, no HTTP, no model code. codec, stats and intake run
on numpy alone (what talking to a node needs); rng and transform compute vectors and need
torch, so they are imported on first use of one of their names, never with the package.
"""

import importlib

from .codec import ENCODING, VectorDecodeError, decode_vectors, encode_vector, encode_vectors, encoding_for
from .stats import (
    SERVER_DEFAULTS,
    Comparison,
    StatTest,
    Verdict,
    binomial_p_value,
    compare_vectors,
    fraud_cutoff,
    l2_distances,
)

_NEEDS_TORCH = {
    "rng": ("batched_normal", "householder_vector", "input_embeddings", "mm3", "normal", "seed_from_string",
            "sub_seeds_from_string", "uniform"),
    "transform": ("apply_reflections", "finite_rows", "haar_rotate", "haar_vectors", "householder_reflect",
                  "pick_indices", "poc_vectors"),
}
_LAZY = {name: module for module, names in _NEEDS_TORCH.items() for name in names}


def __getattr__(name: str):
    if name in _LAZY or name in _NEEDS_TORCH:
        module = importlib.import_module(f".{_LAZY.get(name, name)}", __name__)
        return module if name in _NEEDS_TORCH else getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ENCODING", "VectorDecodeError", "decode_vectors", "encode_vector", "encode_vectors", "encoding_for",
    "SERVER_DEFAULTS", "Comparison", "StatTest", "Verdict", "binomial_p_value", "compare_vectors",
    "fraud_cutoff", "l2_distances", *_LAZY,
]
