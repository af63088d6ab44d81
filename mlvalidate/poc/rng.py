"""Deterministic random primitives of PoC v2 (spec §1 and §2.1).

Everything here is exact integer arithmetic except the float32 Box-Muller transform,
so results match the production node bit for bit up to the last ulp of log/sqrt/cos/sin.

Hashes are computed on int64 tensors and masked to 32 bits after every multiply (int64
products wrap modulo 2**64, which keeps the low 32 bits right). Work is batched over
seeds (nonces) and done in cache-sized column chunks with in-place ops: the input
embeddings of one MiniMax nonce are 3.1 M normals, and the straightforward
tensor-at-a-time version is bound by memory traffic.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch

_MASK32 = 0xFFFFFFFF
_C1 = 0xCC9E2D51
_C2 = 0x1B873593
_TWO_POW_M32 = 2.0**-32  # multiplying by a power of two is exactly a division by 2**32
_TWO_PI = 2.0 * math.pi
_CHUNK = 1 << 15  # columns per chunk: a few int64/float32 buffers of this size stay in L2


# ----------------------------------------------------------------------------------------
# §1.1 Seeds
# ----------------------------------------------------------------------------------------
def seed_from_string(s: str) -> int:
    """First 4 bytes of SHA-256(utf-8 s), big-endian, as an int in [0, 2**32)."""
    return int.from_bytes(hashlib.sha256(s.encode("utf-8")).digest()[:4], "big")


def sub_seeds_from_string(s: str) -> list[int]:
    """The 8 big-endian uint32 words of SHA-256(s) (§1.5); element 0 is seed_from_string(s)."""
    d = hashlib.sha256(s.encode("utf-8")).digest()
    return [int.from_bytes(d[4 * i : 4 * i + 4], "big") for i in range(8)]


def input_seed_string(block_hash: str, public_key: str, nonce: int) -> str:
    """§1.4: no underscore between 'nonce' and the number."""
    return f"{block_hash}_{public_key}_nonce{nonce}"


def householder_seed_string(block_hash: str, layer_index: int) -> str:
    """§2.1: no public key, no nonce — the same reflections for every node of a block."""
    return f"{block_hash}_layer_{layer_index}_householder"


def pick_seed_string(block_hash: str, public_key: str, nonce: int, k: int) -> str:
    """§3.6: underscores on both sides of the nonce, unlike the input seed."""
    return f"{block_hash}_{public_key}_nonce_{nonce}_pick_{k}"


def haar_seed_string(block_hash: str, public_key: str, nonce: int, k: int, j: int) -> str:
    """§3.7: one seed per reflection step j = 0..k-2."""
    return f"{block_hash}_{public_key}_nonce_{nonce}_haar_hh_{k}_{j}"


# ----------------------------------------------------------------------------------------
# §1.2 murmur3 variant (MurmurHash3_x86_32 of a 4-byte key without the `h ^= len` step)
# ----------------------------------------------------------------------------------------
def _rotl32_(x: torch.Tensor, r: int, tmp: torch.Tensor) -> torch.Tensor:
    """In-place 32-bit rotate-left of non-negative int64 values < 2**32."""
    torch.bitwise_right_shift(x, 32 - r, out=tmp)
    x.bitwise_left_shift_(r).bitwise_and_(_MASK32).bitwise_or_(tmp)
    return x


def mm3_key_part(keys: torch.Tensor) -> torch.Tensor:
    """Step 1, which depends on the key only: k = rotl(key*C1, 15) * C2 (mod 2**32)."""
    k = keys.to(torch.int64).mul(_C1).bitwise_and_(_MASK32)
    _rotl32_(k, 15, torch.empty_like(k))
    return k.mul_(_C2).bitwise_and_(_MASK32)


def _mm3_finish_(h: torch.Tensor, tmp: torch.Tensor) -> torch.Tensor:
    """Steps 2-3 on h = seed XOR k, in place: rotl 13, *5 + 0xE6546B64, fmix32 (no length)."""
    _rotl32_(h, 13, tmp)
    h.mul_(5).add_(0xE6546B64).bitwise_and_(_MASK32)
    h.bitwise_xor_(torch.bitwise_right_shift(h, 16, out=tmp))
    h.mul_(0x85EBCA6B).bitwise_and_(_MASK32)
    h.bitwise_xor_(torch.bitwise_right_shift(h, 13, out=tmp))
    h.mul_(0xC2B2AE35).bitwise_and_(_MASK32)
    h.bitwise_xor_(torch.bitwise_right_shift(h, 16, out=tmp))
    return h


def mm3(keys: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """murmur3 variant of every key under every seed: keys [m], seeds [B] -> int64 [B, m].

    Values are in [0, 2**32). Meant for small m (pick scores); the Box-Muller path below
    uses the same two steps chunk by chunk.
    """
    kpart = mm3_key_part(keys)  # [m]
    h = seeds.to(torch.int64).reshape(-1, 1).bitwise_xor(kpart)  # [B, m]
    return _mm3_finish_(h, torch.empty_like(h))


def _seed_tensor(seeds: Sequence[int] | torch.Tensor, device) -> torch.Tensor:
    return torch.as_tensor(seeds, dtype=torch.int64, device=device).reshape(-1)


# ----------------------------------------------------------------------------------------
# §1.3 uniforms and Box-Muller normals
# ----------------------------------------------------------------------------------------
def uniform(seeds: Sequence[int] | torch.Tensor, m: int, device=None) -> torch.Tensor:
    """float32(mm3(i, seed)) / 2**32 for i < m, per seed -> float32 [B, m]."""
    s = _seed_tensor(seeds, device)
    h = mm3(torch.arange(m, dtype=torch.int64, device=s.device), s)
    # int -> float32 rounds to nearest even; going through float64 (exact for < 2**53)
    # keeps it a single rounding on every backend.
    return h.to(torch.float64).to(torch.float32).mul_(_TWO_POW_M32)


def batched_normal(seeds: Sequence[int] | torch.Tensor, n: int, device=None) -> torch.Tensor:
    """Box-Muller normals of §1.3 for each seed -> float32 [B, n].

    P = ceil(n/2) pairs; u1 = uniform[0:P], u2 = uniform[P:2P] (halves, not interleaved);
    output = concat(r*cos(2*pi*u2), r*sin(2*pi*u2))[:n] with r = sqrt(-2 ln max(u1, 1e-10)).
    """
    s = _seed_tensor(seeds, device).reshape(-1, 1)  # [B, 1]
    B = s.shape[0]
    P = (n + 1) // 2
    out = torch.empty(B, 2 * P, dtype=torch.float32, device=s.device)
    c = min(_CHUNK, max(P, 1))
    # scratch buffers reused by every chunk (chunks are column ranges of the P pairs)
    h1 = torch.empty(B, c, dtype=torch.int64, device=s.device)
    h2 = torch.empty_like(h1)
    tmp = torch.empty_like(h1)
    f64 = torch.empty(B, c, dtype=torch.float64, device=s.device)
    u1 = torch.empty(B, c, dtype=torch.float32, device=s.device)
    u2 = torch.empty_like(u1)
    for a in range(0, P, c):
        w = min(c, P - a)
        i1 = torch.arange(a, a + w, dtype=torch.int64, device=s.device)
        for key, h, u in ((i1, h1, u1), (i1 + P, h2, u2)):
            hv, uv, fv, tv = h[:, :w], u[:, :w], f64[:, :w], tmp[:, :w]
            torch.bitwise_xor(s, mm3_key_part(key), out=hv)
            _mm3_finish_(hv, tv)
            fv.copy_(hv)  # exact
            uv.copy_(fv)  # float64 -> float32, round to nearest even
            uv.mul_(_TWO_POW_M32)
        r, th = u1[:, :w], u2[:, :w]
        r.clamp_(min=1e-10).log_().mul_(-2.0).sqrt_()  # r = sqrt(-2 ln u1)
        th.mul_(_TWO_PI)  # theta = 2*pi*u2
        torch.cos(th, out=out[:, a : a + w]).mul_(r)
        torch.sin(th, out=out[:, P + a : P + a + w]).mul_(r)
    return out[:, :n]


def normal(seed: int, n: int, device=None) -> torch.Tensor:
    """Box-Muller normals for one seed -> float32 [n]."""
    return batched_normal([seed], n, device=device)[0]


# ----------------------------------------------------------------------------------------
# §1.4 / §1.5 input embeddings
# ----------------------------------------------------------------------------------------
def input_embeddings(
    block_hash: str,
    public_key: str,
    nonces: Sequence[int],
    seq_len: int,
    hidden_size: int,
    dtype: torch.dtype = torch.bfloat16,
    device=None,
    stronger_rng: bool = False,
) -> torch.Tensor:
    """The PoC inputs_embeds for a batch of nonces -> [B, seq_len, hidden_size] in `dtype`.

    Default RNG: normal(seed(f"{bh}_{pk}_nonce{n}"), S*D) reshaped row-major (position-major).
    Stronger RNG: the SHA-256 digest's 8 uint32 words seed 8 independent Box-Muller segments
    of ceil(S*D/8) values each (the last one shorter), concatenated.
    """
    strings = [input_seed_string(block_hash, public_key, int(n)) for n in nonces]
    total = seq_len * hidden_size
    if not stronger_rng:
        x = batched_normal([seed_from_string(s) for s in strings], total, device=device)
    else:
        subs = torch.tensor([sub_seeds_from_string(s) for s in strings], dtype=torch.int64)
        seg = -(-total // 8)
        parts = []
        for j in range(8):
            if j * seg >= total:
                break
            parts.append(batched_normal(subs[:, j], min(seg, total - j * seg), device=device))
        x = torch.cat(parts, dim=1)[:, :total]
    return x.reshape(len(strings), seq_len, hidden_size).to(dtype)


# ----------------------------------------------------------------------------------------
# §2.1 Householder vectors
# ----------------------------------------------------------------------------------------
def householder_vector(block_hash: str, layer_index: int, hidden_size: int, device=None) -> torch.Tensor:
    """v_i = normal(seed(f"{bh}_layer_{i}_householder"), D) / ||.||_2 (float32, no epsilon)."""
    v = normal(seed_from_string(householder_seed_string(block_hash, layer_index)), hidden_size, device)
    return v / torch.linalg.vector_norm(v)
