"""Benchmark: PoC v2 inside stock vLLM (engines/vllm_inprocess.py) next to the reference engine.

    PYTHONPATH=$PWD python benchmarks/bench_vllm_inprocess.py [--arch qwen3_moe|qwen3] [--nonces N]
        [--seq-len S] [--batch-size B] [--dtype bf16|fp32] [--reps R] [--uni]

Same CPU, same tiny checkpoint (built here), same nonces. Reports for each engine the best of
R timed computes (after one warm-up batch) in nonces/s, and for vLLM where the wall time goes:
input embeddings (RNG), `LLM.generate` (of which vLLM's model forward, timed inside the worker
between the model's pre- and post-hook), fetching the rows, and post-processing (pick, Haar,
fp16). Target: at most 10 % of the wall time outside vLLM's forward. Not a test: numbers
depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

TARGET_OUTSIDE = 0.10


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="qwen3_moe", choices=["qwen3_moe", "qwen3"])
    ap.add_argument("--nonces", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--omp-bind", default=None, metavar="CPUS",
                    help="VLLM_CPU_OMP_THREADS_BIND for vLLM's worker, e.g. 0-1 (default: vLLM's auto, which "
                    "keeps one CPU for the frontend)")
    ap.add_argument("--uni", action="store_true",
                    help="run vLLM's engine core and worker in this process (default: its spawned processes)")
    args = ap.parse_args()

    from mlvalidate.engines.base import PocParams
    from mlvalidate.engines.reference import ReferenceEngine
    from mlvalidate.engines.vllm_inprocess import VllmInProcessEngine
    from mlvalidate.fixtures.tiny import make_tiny_dense, make_tiny_qwen3_moe

    vdtype = {"bf16": "bfloat16", "fp32": "float32"}[args.dtype]
    env = {"VLLM_CPU_KVCACHE_SPACE": "1"}
    vargs = ["--dtype", vdtype, "--max-model-len", str(max(512, args.seq_len)),
             "--max-num-batched-tokens", str(args.batch_size * args.seq_len)]
    if args.omp_bind:
        env["VLLM_CPU_OMP_THREADS_BIND"] = args.omp_bind
    if args.uni:
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        vargs += ["--distributed-executor-backend", "uni"]
    params = PocParams("TEST_BLOCK", "test_pub_keys_v2", seq_len=args.seq_len)
    nonces = list(range(args.nonces))
    print(f"{args.arch}, {args.dtype}, {args.nonces} nonces x seq_len {args.seq_len}, batch {args.batch_size}, "
          f"best of {args.reps}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, vLLM OMP bind "
          f"{args.omp_bind or 'auto'}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        make = make_tiny_qwen3_moe if args.arch == "qwen3_moe" else make_tiny_dense
        ckpt = make(Path(tmp) / args.arch)

        t = time.perf_counter()
        with VllmInProcessEngine(ckpt, vargs, env=env) as eng:
            print(f"vLLM start: {eng.start_seconds:.1f} s (with its import and arg parsing "
                  f"{time.perf_counter() - t:.1f} s)", flush=True)
            eng.compute(nonces[: args.batch_size], params, batch_size=args.batch_size)  # warm-up
            vruns = [eng.compute(nonces, params, batch_size=args.batch_size) for _ in range(args.reps)]
        ref = ReferenceEngine(ckpt, dtype=args.dtype)
        ref.compute(nonces[: args.batch_size], params, batch_size=args.batch_size)  # warm-up
        rruns = [ref.compute(nonces, params, batch_size=args.batch_size) for _ in range(args.reps)]

    v = min(vruns, key=lambda r: r.elapsed_s)
    r = min(rruns, key=lambda r: r.elapsed_s)
    i = v.info
    wall = v.elapsed_s
    fwd = i["vllm_forward_s"]
    outside = 1 - fwd / wall
    print(f"\n{'engine':<28}{'nonces/s':>10}{'wall s':>9}")
    print(f"{'vLLM in process':<28}{v.nonces_per_second:>10.1f}{wall:>9.2f}")
    print(f"{'reference (transformers)':<28}{r.nonces_per_second:>10.1f}{r.elapsed_s:>9.2f}")
    print(f"\nvLLM wall time ({wall:.2f} s, {i['vllm_forwards']} forward steps):")
    rows = [("vLLM model forward (in the worker)", fwd),
            ("LLM.generate outside the forward", i["generate_s"] - fwd),
            ("fetching the rows (collective_rpc)", i["fetch_s"]),
            ("rest (first inputs, last post, hooks)", wall - i["generate_s"] - i["fetch_s"])]
    for name, s in rows:
        print(f"  {name:<38}{s:>8.3f} s  {s / wall:>6.1%}")
    print(f"  overlapped with vLLM on a helper thread: input embeddings {i['inputs_s']:.3f} s, "
          f"post-processing (pick, Haar, fp16) {i['post_s']:.3f} s")
    verdict = "within" if outside <= TARGET_OUTSIDE else "OVER"
    print(f"\noutside vLLM's forward: {outside:.1%} of the wall time ({verdict} the {TARGET_OUTSIDE:.0%} target)")


if __name__ == "__main__":
    main()
