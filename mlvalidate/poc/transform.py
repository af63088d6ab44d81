"""Per-layer Householder reflection and the vector post-processing of PoC v2 (spec §2.2, §3).

All functions are batched over nonces; the only Python loops run over the k-1 Haar steps
and over the strings that are hashed into seeds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .rng import (
    batched_normal,
    haar_seed_string,
    mm3,
    pick_seed_string,
    seed_from_string,
)

_INDEX_BITS = 31  # pick: score (< 2**32) and index (< 2**31) packed into one int64 sort key


# ----------------------------------------------------------------------------------------
# §2.2 the reflection applied to each decoder layer's output
# ----------------------------------------------------------------------------------------
def householder_reflect(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """H(x) = x - 2 (x.v) v along the last dim, in x's dtype (activation dtype).

    v is cast to x's dtype first; the dot is an elementwise product summed over D (torch
    accumulates in fp32 and rounds the result to x's dtype); 2*dot*v and the subtraction
    are ops in x's dtype.
    """
    v = v.to(device=x.device, dtype=x.dtype)
    dot = (x * v).sum(dim=-1, keepdim=True)
    return x - 2 * dot * v


# ----------------------------------------------------------------------------------------
# §3.6 k-dim pick
# ----------------------------------------------------------------------------------------
def pick_indices(
    block_hash: str, public_key: str, nonces: Sequence[int], hidden_size: int, k: int, device=None
) -> torch.Tensor:
    """The k dims each nonce keeps, in production order -> int64 [B, k].

    score[j] = mm3(j, seed(f"{bh}_{pk}_nonce_{n}_pick_{k}")) for j < D; the k smallest scores
    are chosen (ties: lowest index). Order: the chosen indices whose score is below the
    largest chosen score, ascending by index, then the index(es) holding the largest chosen
    score, ascending by index. (This is what CUDA topk(sorted=False) returns; CPU topk's
    unsorted order differs, so the order is built here explicitly.)
    """
    if not 1 <= k <= hidden_size:
        raise ValueError(f"k must be in [1, hidden_size={hidden_size}], got {k}")
    seeds = torch.tensor(
        [seed_from_string(pick_seed_string(block_hash, public_key, int(n), k)) for n in nonces],
        dtype=torch.int64,
        device=device,
    )
    idx = torch.arange(hidden_size, dtype=torch.int64, device=seeds.device)
    score = mm3(idx, seeds)  # [B, D], values < 2**32
    key = (score << _INDEX_BITS) | idx  # sorts by (score, index)
    chosen = torch.sort(key, dim=1).values[:, :k]  # [B, k] the k smallest, ascending
    chosen_idx = chosen & ((1 << _INDEX_BITS) - 1)
    chosen_score = chosen >> _INDEX_BITS
    at_boundary = chosen_score == chosen_score[:, -1:]  # the largest chosen score
    order_key = (at_boundary.to(torch.int64) << _INDEX_BITS) | chosen_idx
    return torch.sort(order_key, dim=1).values & ((1 << _INDEX_BITS) - 1)


# ----------------------------------------------------------------------------------------
# §3.7 Haar rotation
# ----------------------------------------------------------------------------------------
def haar_vectors(block_hash: str, public_key: str, nonces: Sequence[int], k: int, device=None) -> torch.Tensor:
    """The k-1 unit reflection vectors of each nonce -> float32 [B, k-1, k]."""
    seeds = [
        seed_from_string(haar_seed_string(block_hash, public_key, int(n), k, j))
        for n in nonces
        for j in range(k - 1)
    ]
    if not seeds:
        return torch.empty(len(nonces), max(k - 1, 0), k, dtype=torch.float32, device=device)
    u = batched_normal(seeds, k, device=device).reshape(len(nonces), k - 1, k)
    return u / (torch.linalg.vector_norm(u, dim=-1, keepdim=True) + 1e-30)


def apply_reflections(y: torch.Tensor, u: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """y <- y - 2 (y.u_j) u_j for j = 0..k-2 in order (reverse=True undoes it). y [B, k], u [B, k-1, k]."""
    steps = range(u.shape[1] - 1, -1, -1) if reverse else range(u.shape[1])
    for j in steps:
        uj = u[:, j, :]
        y = y - 2 * (y * uj).sum(dim=-1, keepdim=True) * uj
    return y


def haar_rotate(block_hash: str, public_key: str, nonces: Sequence[int], x: torch.Tensor) -> torch.Tensor:
    """Haar rotation of §3.7 of each row of x [B, k] (float32) -> float32 [B, k]."""
    k = x.shape[-1]
    u = haar_vectors(block_hash, public_key, nonces, k, device=x.device)
    return apply_reflections(x.to(torch.float32), u)


# ----------------------------------------------------------------------------------------
# §3 steps 5-9
# ----------------------------------------------------------------------------------------
def poc_vectors(
    last_hidden: torch.Tensor, block_hash: str, public_key: str, nonces: Sequence[int], k: int = 12
) -> np.ndarray:
    """Last-position hidden states [B, D] -> the PoC vectors, numpy float16 [B, k].

    normalise (eps 1e-8) -> pick k dims in production order -> Haar rotation -> normalise
    (eps 1e-8) -> fp16 (round to nearest even). Rows that contain NaN come out NaN; the
    engine drops them together with their nonce (see `finite_rows`).
    """
    if last_hidden.ndim != 2 or last_hidden.shape[0] != len(nonces):
        raise ValueError(f"last_hidden must be [len(nonces), D], got {tuple(last_hidden.shape)}")
    x = last_hidden.to(torch.float32)
    x = x / (torch.linalg.vector_norm(x, dim=-1, keepdim=True) + 1e-8)
    idx = pick_indices(block_hash, public_key, nonces, x.shape[-1], k, device=x.device)
    y = haar_rotate(block_hash, public_key, nonces, torch.gather(x, 1, idx))
    y = y / (torch.linalg.vector_norm(y, dim=-1, keepdim=True) + 1e-8)
    return y.to(torch.float16).cpu().numpy()


def finite_rows(vectors: np.ndarray) -> np.ndarray:
    """Boolean mask of rows without NaN (§3 step 4: NaN rows are dropped with their nonce)."""
    return ~np.isnan(np.asarray(vectors, dtype=np.float32)).any(axis=-1)
