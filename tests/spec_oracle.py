"""A deliberately plain re-implementation of the PoC v2 math, written from POC_V2_SPEC.md.

It is the test oracle for mlvalidate.poc and the baseline of benchmarks/bench_poc.py, so it
follows the spec text step by step and avoids every trick the production code uses: no
batching over nonces, no chunking, no in-place ops, no packed sort keys. Where the spec
says "int64 tensors with masking" it does exactly that; where a pure-Python version is
clearer (the pick scores) it uses Python ints.

Nothing here imports mlvalidate, so a bug there cannot leak into the oracle.
"""

from __future__ import annotations

import base64
import hashlib
import math

import numpy as np
import torch

MASK32 = 0xFFFFFFFF
C1 = 0xCC9E2D51
C2 = 0x1B873593


# ----------------------------------------------------------------------------------------
# §1.1 seeds
# ----------------------------------------------------------------------------------------
def seed(s: str) -> int:
    """SHA-256 of the UTF-8 bytes, lower-case hex, first 8 hex characters as an unsigned int."""
    return int(hashlib.sha256(s.encode("utf-8")).hexdigest()[:8], 16)


def sub_seeds(s: str) -> list[int]:
    """§1.5: the 32-byte digest as 8 big-endian uint32 words."""
    digest = hashlib.sha256(s.encode("utf-8")).digest()
    return [int.from_bytes(digest[4 * j : 4 * j + 4], "big") for j in range(8)]


# ----------------------------------------------------------------------------------------
# §1.2 murmur3 variant
# ----------------------------------------------------------------------------------------
def _rotl32(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & MASK32


def mm3_scalar(key: int, seed: int) -> int:
    """MurmurHash3_x86_32 of one 4-byte key, without the final `h ^= length`, in Python ints."""
    k = (key * C1) & MASK32
    k = _rotl32(k, 15)
    k = (k * C2) & MASK32
    h = seed ^ k
    h = _rotl32(h, 13)
    h = (h * 5 + 0xE6546B64) & MASK32
    # (stock murmur3 would do `h ^= 4` here)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & MASK32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & MASK32
    h ^= h >> 16
    return h


def mm3_stock_scalar(key: int, seed: int) -> int:
    """Stock MurmurHash3_x86_32 of the 4-byte little-endian key (WITH `h ^= length`)."""
    k = _rotl32((key * C1) & MASK32, 15)
    k = (k * C2) & MASK32
    h = _rotl32(seed ^ k, 13)
    h = (h * 5 + 0xE6546B64) & MASK32
    h ^= 4  # the length in bytes
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & MASK32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & MASK32
    h ^= h >> 16
    return h


def mm3_tensor(keys: torch.Tensor, seed: int) -> torch.Tensor:
    """The same hash on an int64 tensor of keys, masking to 32 bits after every multiply."""
    k = keys.to(torch.int64)
    k = (k * C1) & MASK32
    k = ((k << 15) | (k >> 17)) & MASK32
    k = (k * C2) & MASK32
    h = k ^ seed
    h = ((h << 13) | (h >> 19)) & MASK32
    h = (h * 5 + 0xE6546B64) & MASK32
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & MASK32
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & MASK32
    h = h ^ (h >> 16)
    return h


# ----------------------------------------------------------------------------------------
# §1.3 uniforms, normals
# ----------------------------------------------------------------------------------------
def uniform_loop(seed: int, m: int) -> torch.Tensor:
    """float32(mm3(i, seed)) / 2**32 for i = 0..m-1: convert to float32 first, then divide."""
    keys = torch.arange(m, dtype=torch.int32)
    return mm3_tensor(keys, seed).to(torch.float32) / 2**32


def normal_loop(seed: int, n: int) -> torch.Tensor:
    """Box-Muller of §1.3, one seed, whole tensors at once -> float32 [n]."""
    p = (n + 1) // 2
    u = uniform_loop(seed, 2 * p)
    u1 = u[:p]
    u2 = u[p:]
    u1 = torch.clamp(u1, min=1e-10)
    r = torch.sqrt(-2.0 * torch.log(u1))
    theta = 2 * math.pi * u2
    z0 = r * torch.cos(theta)
    z1 = r * torch.sin(theta)
    return torch.cat([z0, z1])[:n]


# ----------------------------------------------------------------------------------------
# §1.4 / §1.5 input embeddings, §2.1 Householder vectors
# ----------------------------------------------------------------------------------------
def input_values_loop(bh: str, pk: str, nonce: int, seq_len: int, hidden: int, stronger_rng: bool = False):
    """float32 [seq_len, hidden] input embeddings of one nonce, before the dtype cast."""
    s = f"{bh}_{pk}_nonce{nonce}"
    total = seq_len * hidden
    if not stronger_rng:
        x = normal_loop(seed(s), total)
    else:
        subs = sub_seeds(s)
        seg = math.ceil(total / 8)
        parts = []
        for j in range(8):
            if j * seg < total:
                parts.append(normal_loop(subs[j], min(seg, total - j * seg)))
        x = torch.cat(parts)[:total]
    return x.reshape(seq_len, hidden)


def input_embeddings_loop(bh, pk, nonces, seq_len, hidden, dtype, stronger_rng=False) -> torch.Tensor:
    """[B, seq_len, hidden] in dtype, one nonce at a time."""
    rows = [input_values_loop(bh, pk, n, seq_len, hidden, stronger_rng).to(dtype) for n in nonces]
    return torch.stack(rows)


def householder_vector_loop(bh: str, layer: int, hidden: int) -> torch.Tensor:
    v = normal_loop(seed(f"{bh}_layer_{layer}_householder"), hidden)
    return v / torch.linalg.norm(v)


def householder_reflect_f64(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """x - 2 (x.v) v in float64 (an exact-ish reference for the bf16 reflection)."""
    x64 = x.to(torch.float64)
    v64 = v.to(torch.float64)
    return x64 - 2 * (x64 @ v64)[..., None] * v64


# ----------------------------------------------------------------------------------------
# §3.6 pick
# ----------------------------------------------------------------------------------------
def production_order(scores: list[int], k: int) -> list[int]:
    """The k indices with the smallest scores, in the production order of §3.6.

    Chosen = the k smallest (score, index) pairs, i.e. ties broken by lowest index.
    Order = chosen indices whose score is below the largest chosen score, ascending by
    index, then those holding the largest chosen score, ascending by index.
    """
    ranked = sorted(range(len(scores)), key=lambda j: (scores[j], j))
    chosen = ranked[:k]
    top = scores[chosen[-1]]
    below = sorted(j for j in chosen if scores[j] < top)
    at_top = sorted(j for j in chosen if scores[j] == top)
    return below + at_top


def pick_scores_loop(bh: str, pk: str, nonce: int, hidden: int, k: int) -> list[int]:
    s = seed(f"{bh}_{pk}_nonce_{nonce}_pick_{k}")
    return [mm3_scalar(j, s) for j in range(hidden)]


def pick_loop(bh: str, pk: str, nonce: int, hidden: int, k: int) -> list[int]:
    return production_order(pick_scores_loop(bh, pk, nonce, hidden, k), k)


# ----------------------------------------------------------------------------------------
# §3.7 Haar, §3.5-3.9 the whole post-processing of one nonce
# ----------------------------------------------------------------------------------------
def haar_vectors_loop(bh: str, pk: str, nonce: int, k: int) -> list[torch.Tensor]:
    us = []
    for j in range(k - 1):
        u = normal_loop(seed(f"{bh}_{pk}_nonce_{nonce}_haar_hh_{k}_{j}"), k)
        us.append(u / (torch.linalg.norm(u) + 1e-30))
    return us


def haar_loop(bh: str, pk: str, nonce: int, xk: torch.Tensor) -> torch.Tensor:
    """y = xk; for j = 0..k-2: y = y - 2 (y.u_j) u_j, float32."""
    y = xk.to(torch.float32)
    for u in haar_vectors_loop(bh, pk, nonce, y.shape[0]):
        y = y - 2 * torch.dot(y, u) * u
    return y


def poc_vector_loop(last_hidden_row: torch.Tensor, bh: str, pk: str, nonce: int, k: int = 12) -> np.ndarray:
    """One nonce: normalise, pick, Haar, normalise, fp16 -> numpy float16 [k]."""
    x = last_hidden_row.to(torch.float32)
    x = x / (torch.linalg.norm(x) + 1e-8)
    idx = pick_loop(bh, pk, nonce, x.shape[0], k)
    y = haar_loop(bh, pk, nonce, x[idx])
    y = y / (torch.linalg.norm(y) + 1e-8)
    return y.half().numpy()


# ----------------------------------------------------------------------------------------
# §3.9 codec, §4 distances
# ----------------------------------------------------------------------------------------
def encode_loop(vectors) -> list[str]:
    return [base64.b64encode(np.asarray(v, dtype="<f2").tobytes()).decode("ascii") for v in vectors]


def decode_loop(b64_list) -> np.ndarray:
    """One base64 decode and one numpy conversion per vector -> float32 [N, k]."""
    rows = []
    for s in b64_list:
        raw = base64.b64decode(s, validate=True)
        rows.append(np.frombuffer(raw, dtype="<f2").astype(np.float32))
    return np.stack(rows)


def distances_loop(a, b) -> np.ndarray:
    """Row-wise float32 L2 distance, one row at a time."""
    out = np.empty(len(a), dtype=np.float32)
    for i in range(len(a)):
        d = np.asarray(a[i], dtype=np.float32) - np.asarray(b[i], dtype=np.float32)
        out[i] = np.sqrt(np.dot(d, d))
    return out
