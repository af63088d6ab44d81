"""Benchmark of the batched PoC math against the spec-literal per-item loops.

    python benchmarks/bench_poc.py [--reps N] [--loop-vectors N]

(a) decode_vectors + l2_distances for 1,000,000 vectors vs per-vector decode + distance loops
(b) input_embeddings for 4 nonces x 1024 x 3072 (bf16) vs the per-nonce int64 loop

Both sides of each comparison are measured in the same run, interleaved (A, B, A, B, ...)
after one warm-up each, so that a busy machine slows both alike; the median is reported.
The loops are the test oracle in tests/spec_oracle.py (straight from the spec text).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import spec_oracle as oracle  # noqa: E402

from mlvalidate.poc import decode_vectors, encode_vectors, input_embeddings, l2_distances  # noqa: E402

TARGET_DECODE = 10.0
TARGET_EMBED = 3.0


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def interleaved(fn_a, fn_b, reps: int):
    """Warm up both, then time them alternately; returns (times_a, times_b, last_a, last_b)."""
    _, out_a = timed(fn_a)
    _, out_b = timed(fn_b)
    ta, tb = [], []
    for _ in range(reps):
        t, out_a = timed(fn_a)
        ta.append(t)
        t, out_b = timed(fn_b)
        tb.append(t)
    return ta, tb, out_a, out_b


def fmt(ts) -> str:
    return f"median {statistics.median(ts):8.3f} s  (min {min(ts):.3f}, max {max(ts):.3f}, n={len(ts)})"


def verdict(ratio: float, target: float) -> str:
    return f"{'PASS' if ratio >= target else 'MISS'} (target >= {target:g}x)"


def max_ulp_f32(a: np.ndarray, b: np.ndarray) -> int:
    """Largest distance in float32 ulps (monotone integer mapping of the bit patterns)."""

    def ordered(x):
        i = np.ascontiguousarray(x, dtype=np.float32).view(np.int32).astype(np.int64)
        return np.where(i < 0, -(2**31) - i, i)

    return int(np.abs(ordered(a) - ordered(b)).max())


def bench_decode(n: int, n_loop: int, reps: int) -> float:
    print(f"\n(a) decode_vectors + l2_distances, {n:,} vectors of 12 fp16 (32-char base64)")
    gen = np.random.default_rng(0)
    ref = gen.standard_normal((n, 12), dtype=np.float32)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    got = ref + gen.standard_normal((n, 12), dtype=np.float32) * 0.02
    got /= np.linalg.norm(got, axis=1, keepdims=True)
    ref_b64 = encode_vectors(ref.astype(np.float16))  # encoded once, outside the timing
    got_b64 = encode_vectors(got.astype(np.float16))

    def batched(a=ref_b64, b=got_b64):
        return l2_distances(decode_vectors(a), decode_vectors(b), device="cpu")

    def loop(a=ref_b64[:n_loop], b=got_b64[:n_loop]):
        return oracle.distances_loop(oracle.decode_loop(a), oracle.decode_loop(b))

    ta, tb, dist, dist_loop = interleaved(batched, loop, reps)
    scale = n / n_loop
    tb_scaled = [t * scale for t in tb]
    ratio = statistics.median(tb_scaled) / statistics.median(ta)
    print(f"  batched  ({n:,} vectors):        {fmt(ta)}")
    print(f"  per-vector loop ({n_loop:,} vectors): {fmt(tb)}")
    print(f"  per-vector loop scaled x{scale:g} to {n:,} (linear; the loop is O(n)): {fmt(tb_scaled)}")
    print(f"  agreement on the first {n_loop:,}: max ulp {max_ulp_f32(dist[:n_loop], dist_loop)}")
    print(f"  speed-up {ratio:6.1f}x  -> {verdict(ratio, TARGET_DECODE)}")
    return ratio


def bench_embeddings(reps: int) -> float:
    bh, pk, nonces, S, D = "TEST_BLOCK", "test_pub_keys_v2", [0, 1, 2, 3], 1024, 3072
    print(f"\n(b) input_embeddings, {len(nonces)} nonces x {S} x {D}, bf16")

    def batched():
        return input_embeddings(bh, pk, nonces, S, D, dtype=torch.bfloat16)

    def loop():
        return oracle.input_embeddings_loop(bh, pk, nonces, S, D, torch.bfloat16)

    ta, tb, out, out_loop = interleaved(batched, loop, reps)
    ratio = statistics.median(tb) / statistics.median(ta)
    print(f"  batched (mlvalidate.poc):            {fmt(ta)}")
    print(f"  per-nonce int64 loop (spec-literal):  {fmt(tb)}")
    print(f"  speed-up {ratio:6.2f}x  -> {verdict(ratio, TARGET_EMBED)}")

    f32 = input_embeddings(bh, pk, nonces, S, D, dtype=torch.float32).numpy()
    f32_loop = oracle.input_embeddings_loop(bh, pk, nonces, S, D, torch.float32).numpy()
    ulp = max_ulp_f32(f32, f32_loop)
    n_diff = int((f32.view(np.int32) != f32_loop.view(np.int32)).sum())
    print(
        f"  float32 before the cast: max ulp difference {ulp} ({n_diff:,} of {f32.size:,} values differ) "
        f"-> {'PASS' if ulp <= 1 else 'MISS'} (target <= 1 ulp)"
    )
    print(f"  bf16 outputs identical: {torch.equal(out, out_loop)}")
    return ratio


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per side (after one warm-up)")
    ap.add_argument("--vectors", type=int, default=1_000_000)
    ap.add_argument("--loop-vectors", type=int, default=100_000, help="vectors for the per-vector loop (scaled)")
    args = ap.parse_args()

    print(
        f"torch {torch.__version__}, intra-op threads {torch.get_num_threads()}, "
        f"os.cpu_count {os.cpu_count()}, numpy {np.__version__}, python {platform.python_version()}, "
        f"{platform.machine()}"
    )
    r_a = bench_decode(args.vectors, min(args.loop_vectors, args.vectors), max(3, args.reps - 2))
    r_b = bench_embeddings(args.reps)
    print("\nsummary")
    print(f"  (a) decode + distances: {r_a:6.1f}x  {verdict(r_a, TARGET_DECODE)}")
    print(f"  (b) input embeddings:   {r_b:6.2f}x  {verdict(r_b, TARGET_EMBED)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
