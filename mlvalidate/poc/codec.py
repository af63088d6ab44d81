"""fp16 / base64 vector encoding of PoC v2 artifacts (spec §3 step 9).

A vector of k float16 values is written little-endian (2k bytes) and base64-encoded with
padding; for k = 12 that is 24 bytes and 32 characters with no '='.
"""

from __future__ import annotations

import base64
import binascii
import functools
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
    reference) base64 has no padding, so the concatenation of all rows is decoded at once:
    by table lookups in numpy for many rows (`_decode_batched`), else by one strict base64
    call. Raises VectorDecodeError naming the first bad row (found by the per-row path).
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
    if k % 3 == 0 and n >= _BATCHED_MIN_ROWS:
        rows = _decode_batched(b64_list, n, k)
        if rows is not None:
            return rows
        # some row is not k values of unpadded base64: the per-row path names the first one
        return np.stack([_decode_one(i, s, k) for i, s in enumerate(b64_list)])
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


# ----------------------------------------------------------------------------------------
# batched decode of unpadded rows (k a multiple of 3) by table lookups
# ----------------------------------------------------------------------------------------
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_BASE64 = 1 << 56  # table value of a character pair outside the alphabet (above 48 bits)
_BATCHED_MIN_ROWS = 512  # below it one binascii call is as fast (measured crossover, 2 cores)
_GROUPS_PER_STEP = 1 << 15  # 8-character groups per numpy step: the temporaries stay in cache


@functools.cache
def _tables() -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Lookup tables of `_decode_batched`.

    Eight base64 characters carry 48 bits: six bytes, three fp16 values. Read as four
    little-endian uint16, character pair j holds the 12 bits at [36 - 12j, 48 - 12j) of that
    big-endian group. pairs[j][p] is the contribution of pair value p already laid out as a
    little-endian uint64 (byte i of the group in bits 8i..8i+7), so the OR of four lookups
    is the group's six bytes; a pair with a character outside the alphabet gives _NOT_BASE64.
    to_f32[h] is the float32 value of the fp16 bit pattern h (numpy's own conversion).
    """
    sextet = np.full(256, -1, dtype=np.int64)
    sextet[np.frombuffer(_ALPHABET, dtype=np.uint8)] = np.arange(64)
    p = np.arange(1 << 16, dtype=np.int64)
    first, second = sextet[p & 0xFF], sextet[p >> 8]  # little-endian: first character low
    bits12 = (first << 6) | second
    pairs = []
    for j in range(4):
        group = bits12 << (36 - 12 * j)
        word = np.zeros(1 << 16, dtype=np.int64)
        for i in range(6):
            word |= ((group >> (40 - 8 * i)) & 0xFF) << (8 * i)
        word[(first < 0) | (second < 0)] = _NOT_BASE64
        pairs.append(word.astype("<u8"))
    to_f32 = p.astype("<u2").view("<f2").astype(np.float32)
    return tuple(pairs), to_f32


def _decode_batched(b64_list: Sequence[str], n: int, k: int) -> np.ndarray | None:
    """float32 [n, k] of n rows of unpadded base64 (k a multiple of 3), or None when any row
    is not one: not a string, not ASCII, a length other than b64_length(k), a character
    outside the alphabet ('=' included). None says only that some row is bad; which one is
    for the per-row path to find. On valid rows this is exactly the per-row decode."""
    step = b64_length(k)
    try:
        text = "".join(b64_list).encode("ascii")
    except (TypeError, UnicodeEncodeError):
        return None
    # n rows adding up to n * step characters, none longer than step: all exactly step
    if len(text) != n * step or max(map(len, b64_list)) != step:
        return None
    pairs, to_f32 = _tables()
    quads = np.frombuffer(text, dtype="<u2").reshape(-1, 4)  # one row per 8 characters
    out = np.empty((n, k), dtype=np.float32)
    triples = out.reshape(-1, 3)  # three fp16 values per 8 characters
    size = min(_GROUPS_PER_STEP, quads.shape[0])
    # buffers for every step; indices are made intp once here (take would convert each one)
    index = np.empty((4, size), dtype=np.intp)
    word, part = np.empty((2, size), dtype="<u8")
    halves = np.empty((size, 3), dtype=np.intp)
    for lo in range(0, quads.shape[0], size):
        q = quads[lo : lo + size]
        m = q.shape[0]
        idx, w, p, h = index[:, :m], word[:m], part[:m], halves[:m]
        np.copyto(idx, q.T)
        pairs[0].take(idx[0], out=w, mode="clip")  # a uint16 is always in range: nothing clips
        for j in (1, 2, 3):
            pairs[j].take(idx[j], out=p, mode="clip")
            w |= p
        if w.max() >= _NOT_BASE64:
            return None
        np.copyto(h, w.view("<u2").reshape(-1, 4)[:, :3])  # bytes 0-5: three fp16 bit patterns
        to_f32.take(h, out=triples[lo : lo + m], mode="clip")
    return out
