"""Deterministic random primitives of PoC v2 (spec §1 and §2.1).

Everything here is exact integer arithmetic except the float32 Box-Muller transform,
so results match the production node bit for bit up to the last ulp of log/sqrt/cos/sin.

Hashes are computed on int64 tensors and masked to 32 bits wherever a right shift or
rotation follows (int64 products wrap modulo 2**64, which keeps the low 32 bits right);
the CPU Box-Muller path hashes in numpy uint32 instead, which wraps by definition.
Work is batched over seeds (nonces) and done in small column chunks with in-place ops:
the input embeddings of one MiniMax nonce are 3.1 M normals, and the straightforward
tensor-at-a-time version is bound by memory traffic. See _chunk_plan for the chunk size.
The key half of the hash does not depend on the seed and is computed once per length.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

_MASK32 = 0xFFFFFFFF
_C1 = 0xCC9E2D51
_C2 = 0x1B873593
_TWO_POW_M32 = 2.0**-32  # multiplying by a power of two is exactly a division by 2**32
_TWO_PI = 2.0 * math.pi
_CHUNK = 1 << 15  # CPU: elements per op in batched_normal (= torch's intra-op grain size)
_DEVICE_CHUNK = 1 << 24  # other devices: elements per op (bounds the int64 scratch memory)
_MAX_WORKERS = 4  # CPU threads for batched_normal; more mostly wait for the GIL between ops
_NUMPY_HASH_ON_CPU = True  # batched_normal hashes with numpy uint32 on CPU (tests flip it)


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


def _rotl32_int(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _MASK32


def mm3_key_part(keys: torch.Tensor) -> torch.Tensor:
    """Step 1, which depends on the key only: k = rotl(key*C1, 15) * C2 (mod 2**32)."""
    k = keys.to(torch.int64).mul(_C1).bitwise_and_(_MASK32)
    _rotl32_(k, 15, torch.empty_like(k))
    return k.mul_(_C2).bitwise_and_(_MASK32)


def _rotated_key_part(keys: torch.Tensor) -> torch.Tensor:
    """rotl(k, 13) of step 1's k. Step 2 starts with rotl(seed XOR k, 13), and a rotation
    distributes over XOR: rotl(seed ^ k) = rotl(seed) ^ rotl(k). So both halves can be
    rotated separately, the key half once for all seeds and the seed half in Python."""
    k = mm3_key_part(keys)
    return _rotl32_(k, 13, torch.empty_like(k))


@functools.lru_cache(maxsize=4)
def _rotated_key_table(m: int, device: torch.device) -> torch.Tensor:
    """_rotated_key_part(arange(m)): seed-independent, so computed once per length and device
    and shared by every seed and call (MiniMax inputs: 3.1 M keys, 25 MB). Read-only."""
    table = torch.empty(m, dtype=torch.int64, device=device)
    step = _CHUNK if device.type == "cpu" else _DEVICE_CHUNK
    for a in range(0, m, step):
        w = min(step, m - a)
        table[a : a + w] = _rotated_key_part(torch.arange(a, a + w, dtype=torch.int64, device=device))
    return table


def _rotated_seeds(seeds: Sequence[int] | torch.Tensor, device) -> torch.Tensor:
    """rotl(seed, 13) of each seed -> int64 [B, 1]."""
    values = seeds.tolist() if isinstance(seeds, torch.Tensor) else seeds
    rotated = [_rotl32_int(int(s), 13) for s in values]
    return torch.tensor(rotated, dtype=torch.int64, device=device).reshape(-1, 1)


def _mm3_mix_(h: torch.Tensor, tmp: torch.Tensor) -> torch.Tensor:
    """The rest of step 2 and step 3 on h = rotl(seed ^ k, 13), in place:
    h*5 + 0xE6546B64, then fmix32 (no length XOR). Masks only where a right shift follows."""
    h.mul_(5).add_(0xE6546B64).bitwise_and_(_MASK32)
    h.bitwise_xor_(torch.bitwise_right_shift(h, 16, out=tmp))
    h.mul_(0x85EBCA6B).bitwise_and_(_MASK32)
    h.bitwise_xor_(torch.bitwise_right_shift(h, 13, out=tmp))
    h.mul_(0xC2B2AE35).bitwise_and_(_MASK32)
    h.bitwise_xor_(torch.bitwise_right_shift(h, 16, out=tmp))
    return h


def _mm3_mix_numpy_(h: np.ndarray, tmp: np.ndarray) -> np.ndarray:
    """_mm3_mix_ in numpy uint32, whose arithmetic wraps modulo 2**32 by definition: the
    spec's steps as written, no masks. About twice as fast as int64 torch ops on CPU."""
    h *= 5
    h += 0xE6546B64
    h ^= np.right_shift(h, 16, out=tmp)
    h *= 0x85EBCA6B
    h ^= np.right_shift(h, 13, out=tmp)
    h *= 0xC2B2AE35
    h ^= np.right_shift(h, 16, out=tmp)
    return h


def mm3(keys: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """murmur3 variant of every key under every seed: keys [m], seeds [B] -> int64 [B, m].

    Values are in [0, 2**32). Meant for small m (pick scores); the Box-Muller path below
    uses the same steps chunk by chunk.
    """
    h = _rotated_seeds(seeds, keys.device).bitwise_xor(_rotated_key_part(keys))  # [B, m]
    return _mm3_mix_(h, torch.empty_like(h))


# ----------------------------------------------------------------------------------------
# §1.3 uniforms and Box-Muller normals
# ----------------------------------------------------------------------------------------
def uniform(seeds: Sequence[int] | torch.Tensor, m: int, device=None) -> torch.Tensor:
    """float32(mm3(i, seed)) / 2**32 for i < m, per seed -> float32 [B, m]."""
    s = torch.as_tensor(seeds, dtype=torch.int64, device=device).reshape(-1)
    h = mm3(torch.arange(m, dtype=torch.int64, device=s.device), s)
    # int -> float32 rounds to nearest even; going through float64 (exact for < 2**53)
    # keeps it a single rounding on every backend.
    return h.to(torch.float64).to(torch.float32).mul_(_TWO_POW_M32)


def _chunk_plan(rows: int, pairs: int, device: torch.device) -> tuple[int, int]:
    """(columns per chunk, worker threads) for batched_normal.

    CPU: each op covers at most _CHUNK elements (rows x columns), which is torch's intra-op
    grain size, so torch runs it inline on the calling thread instead of opening an OpenMP
    parallel region. Thousands of small parallel regions are fine on an idle machine but
    collapse when the cores are shared (threads spin at every barrier waiting for a
    descheduled peer: 4 MiniMax nonces took 10-19 s instead of 0.2 s on a busy 2-vCPU VM).
    Parallelism comes from a few Python threads working on disjoint chunks instead; torch and
    numpy release the GIL inside ops. Other devices: large chunks (few kernel launches), no threads.
    """
    if device.type != "cpu":
        return max(1, min(pairs, _DEVICE_CHUNK // rows)), 1
    cols = max(1, min(pairs, _CHUNK // rows))
    n_chunks = -(-pairs // cols)
    workers = min(torch.get_num_threads(), _MAX_WORKERS, n_chunks)
    if rows * cols > _CHUNK:  # more seeds than the grain size: every op goes parallel anyway
        workers = 1
    return cols, max(1, workers)


def _uniforms_torch_(u, s, keys, h, tmp, f64) -> None:
    """u = float32(mm3(key, seed)) / 2**32 for a slice of keys, int64 torch ops (any device).

    s: rotl(seed, 13) [B, 1]; keys: rotl(key part, 13) [w]; h, tmp: int64, f64: float64 [B, w].
    """
    torch.bitwise_xor(s, keys, out=h)
    _mm3_mix_(h, tmp)
    f64.copy_(h)  # exact
    # float64(h) * 2**-32 rounded to float32 == float32(h) / 2**32: scaling by a power of
    # two commutes with the (single, round-to-nearest-even) rounding
    torch.mul(f64, _TWO_POW_M32, out=u)


def _uniforms_numpy_(u, s, keys, h, tmp) -> None:
    """The same with numpy uint32 arithmetic (CPU). u: a numpy view of a float32 tensor;
    s, keys: int64 arrays as above (values < 2**32, so the cast to uint32 h is exact)."""
    np.bitwise_xor(s, keys, out=h, casting="unsafe")
    _mm3_mix_numpy_(h, tmp)
    np.multiply(h, _TWO_POW_M32, out=u, casting="unsafe")  # float64 product, one rounding


def batched_normal(seeds: Sequence[int] | torch.Tensor, n: int, device=None) -> torch.Tensor:
    """Box-Muller normals of §1.3 for each seed -> float32 [B, n].

    P = ceil(n/2) pairs; u1 = uniform[0:P], u2 = uniform[P:2P] (halves, not interleaved);
    output = concat(r*cos(2*pi*u2), r*sin(2*pi*u2))[:n] with r = sqrt(-2 ln max(u1, 1e-10)).
    Computed in column chunks (see _chunk_plan); the hash runs in numpy on CPU, in torch
    elsewhere; the float math is torch's everywhere.
    """
    dev = torch.device(device) if device is not None else (
        seeds.device if isinstance(seeds, torch.Tensor) else torch.device("cpu")
    )
    s = _rotated_seeds(seeds, dev)  # [B, 1]
    B = s.shape[0]
    P = (n + 1) // 2
    out = torch.empty(B, 2 * P, dtype=torch.float32, device=dev)
    if B == 0 or P == 0:
        return out[:, :n]
    cols, workers = _chunk_plan(B, P, dev)
    starts = list(range(0, P, cols))
    keys = _rotated_key_table(2 * P, dev)  # u1 uses keys [0, P), u2 keys [P, 2P)
    use_numpy = dev.type == "cpu" and _NUMPY_HASH_ON_CPU
    s_np, keys_np = (s.numpy(), keys.numpy()) if use_numpy else (None, None)

    def work(chunk_starts: list[int]) -> None:
        # scratch buffers of one worker, reused by each of its chunks (column ranges of the pairs)
        u1 = torch.empty(B, cols, dtype=torch.float32, device=dev)
        u2 = torch.empty_like(u1)
        if use_numpy:
            h, tmp, f64 = np.empty((B, cols), dtype=np.uint32), np.empty((B, cols), dtype=np.uint32), None
            halves = ((0, u1.numpy()), (P, u2.numpy()))  # numpy views of the same memory
        else:
            h = torch.empty(B, cols, dtype=torch.int64, device=dev)
            tmp = torch.empty_like(h)
            f64 = torch.empty(B, cols, dtype=torch.float64, device=dev)
            halves = ((0, u1), (P, u2))
        for a in chunk_starts:
            w = min(cols, P - a)
            for offset, u in halves:
                k = offset + a
                if use_numpy:
                    _uniforms_numpy_(u[:, :w], s_np, keys_np[k : k + w], h[:, :w], tmp[:, :w])
                else:
                    _uniforms_torch_(u[:, :w], s, keys[k : k + w], h[:, :w], tmp[:, :w], f64[:, :w])
            r, th = u1[:, :w], u2[:, :w]
            r.clamp_(min=1e-10).log_().mul_(-2.0).sqrt_()  # r = sqrt(-2 ln u1)
            th.mul_(_TWO_PI)  # theta = 2*pi*u2
            torch.cos(th, out=out[:, a : a + w]).mul_(r)
            torch.sin(th, out=out[:, P + a : P + a + w]).mul_(r)

    if workers == 1:
        work(starts)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            # interleaved assignment balances the (shorter) last chunk; list() re-raises errors
            list(pool.map(work, [starts[i::workers] for i in range(workers)]))
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
