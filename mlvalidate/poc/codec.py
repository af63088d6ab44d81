"""fp16 / base64 vector encoding of PoC v2 artifacts (spec §3 step 9).

A vector of k float16 values is written little-endian (2k bytes) and base64-encoded with
padding; for k = 12 that is 24 bytes and 32 characters with no '='.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

import numpy as np

ENCODING = {"dtype": "f16", "k_dim": 12, "endian": "le"}


class VectorDecodeError(ValueError):
    """A vector_b64 string that is not base64 of k little-endian float16 values."""

    def __init__(self, index: int, message: str):
        super().__init__(f"vector #{index}: {message}")
        self.index = index
        self.reason = message


def encoding_for(k: int) -> dict:
    return {"dtype": "f16", "k_dim": int(k), "endian": "le"}


def b64_length(k: int) -> int:
    """Characters of the base64 form of k fp16 values (with padding)."""
    return 4 * (-(-2 * k // 3))


def encode_vector(v) -> str:
    """One vector (k values; rounded to fp16 if not already) -> base64 string."""
    a = np.asarray(v)
    if a.ndim != 1:
        raise ValueError(f"encode_vector takes one vector, got shape {a.shape}")
    return base64.b64encode(a.astype("<f2").tobytes()).decode("ascii")


def encode_vectors(vectors) -> list[str]:
    """[N, k] array -> N base64 strings."""
    a = np.ascontiguousarray(np.asarray(vectors).astype("<f2"))
    if a.ndim != 2:
        raise ValueError(f"encode_vectors takes an [N, k] array, got shape {a.shape}")
    n, k = a.shape
    if (2 * k) % 3 == 0:  # no padding: one base64 pass over all rows, then slice
        text = base64.b64encode(a.tobytes()).decode("ascii")
        step = b64_length(k)
        return [text[i : i + step] for i in range(0, n * step, step)]
    return [base64.b64encode(row.tobytes()).decode("ascii") for row in a]


def decode_vectors(b64_list: Sequence[str], k: int | None = None) -> np.ndarray:
    """N base64 strings -> float32 [N, k] (the fp16 values, exactly).

    k defaults to what the first string's length implies. Every string must have the
    length of k fp16 values. When 2k is a multiple of 3 (k = 12 and every published
    reference) base64 has no padding, so all rows are decoded by one strict base64 call
    over their concatenation. Raises VectorDecodeError naming the first bad row.
    """
    n = len(b64_list)
    if n == 0:
        return np.zeros((0, k or 0), dtype=np.float32)
    if k is None:
        first = b64_list[0]
        if not isinstance(first, str) or len(first) % 4 or not first:
            raise VectorDecodeError(0, f"not a base64 string: {first!r:.40}")
        k = (len(first) // 4 * 3 - first.count("=")) // 2
        if k < 1:
            raise VectorDecodeError(0, f"not a base64 fp16 vector: {first!r:.40}")
    step = b64_length(k)
    try:
        joined = "".join(b64_list)
    except TypeError:
        bad = next(i for i, s in enumerate(b64_list) if not isinstance(s, str))
        raise VectorDecodeError(bad, f"expected a string, got {type(b64_list[bad]).__name__}") from None
    # The total length alone is not enough: a short row next to a long one adds up to
    # n * step and would decode silently into misaligned vectors. (set(map(len, ...)) runs
    # in C: a few tens of ms for a million rows.)
    if len(joined) != n * step or (2 * k) % 3 or set(map(len, b64_list)) != {step}:
        # lengths differ (or padded rows): per-row path, which also finds the bad row
        return np.stack([_decode_one(i, s, k) for i, s in enumerate(b64_list)])
    try:
        raw = base64.b64decode(joined, validate=True)
    except (binascii.Error, ValueError):
        raw = None
    # A padded row of the right length (e.g. 11 values: 22 bytes, 32 characters ending '==')
    # decodes here when it is the last one, but to fewer bytes: count them before reshaping.
    if raw is None or len(raw) != n * 2 * k:
        for i, s in enumerate(b64_list):
            _decode_one(i, s, k)
        raise VectorDecodeError(0, "invalid base64")  # pragma: no cover (some row fails above)
    return np.frombuffer(raw, dtype="<f2").reshape(n, k).astype(np.float32)


def _decode_one(i: int, s: str, k: int) -> np.ndarray:
    if not isinstance(s, str):
        raise VectorDecodeError(i, f"expected a string, got {type(s).__name__}")
    try:
        raw = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError) as e:
        raise VectorDecodeError(i, f"invalid base64 ({e}): {s!r:.40}") from None
    if len(raw) != 2 * k:
        raise VectorDecodeError(i, f"{len(raw)} bytes, expected {2 * k} for k_dim={k}: {s!r:.40}")
    return np.frombuffer(raw, dtype="<f2").astype(np.float32)
