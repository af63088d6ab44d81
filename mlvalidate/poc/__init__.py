"""PoC v2 math, checkable against docs/poc-v2.md line by line.

rng.py        §1, §2.1  seeds, murmur3 variant, uniforms, Box-Muller, input embeddings, Householder vectors
transform.py  §2.2, §3  the per-layer reflection, k-dim pick, Haar rotation, poc_vectors
codec.py      §3.9      fp16 little-endian base64 encoding
stats.py      §4        batched distances, binomial fraud test, fail-closed comparison

Pure functions on tensors/arrays: no I/O, no HTTP, no model code.
"""

from .codec import ENCODING, VectorDecodeError, decode_vectors, encode_vector, encode_vectors, encoding_for
from .rng import (
    batched_normal,
    householder_vector,
    input_embeddings,
    mm3,
    normal,
    seed_from_string,
    sub_seeds_from_string,
    uniform,
)
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
from .transform import (
    apply_reflections,
    finite_rows,
    haar_rotate,
    haar_vectors,
    householder_reflect,
    pick_indices,
    poc_vectors,
)

__all__ = [
    "ENCODING", "VectorDecodeError", "decode_vectors", "encode_vector", "encode_vectors", "encoding_for",
    "batched_normal", "householder_vector", "input_embeddings", "mm3", "normal", "seed_from_string",
    "sub_seeds_from_string", "uniform",
    "SERVER_DEFAULTS", "Comparison", "StatTest", "Verdict", "binomial_p_value", "compare_vectors",
    "fraud_cutoff", "l2_distances",
    "apply_reflections", "finite_rows", "haar_rotate", "haar_vectors", "householder_reflect",
    "pick_indices", "poc_vectors",
]
