"""Benchmark: PoC v2 inside stock vLLM (engines/vllm_inprocess.py) next to the reference engine.

    PYTHONPATH=$PWD python benchmarks/bench_vllm_inprocess.py [--arch qwen3_moe|qwen3] [--nonces N]
        [--seq-len S] [--batch-size B] [--dtype bf16|fp32] [--reps R] [--executors mp,uni]

Same CPU, same tiny checkpoint (built here), same nonces. Runs the vLLM engine in each set-up
(--executors: mp = vLLM's spawned engine-core process, uni = the engine core in this process,
the default where one worker does it all), both interleaved rep by rep so the machine's load
falls on each alike, and reports for each the best of R timed computes (after one
warm-up batch) in nonces/s and where its wall time goes: vLLM's model forward (timed inside the
worker between the model's pre- and post-hook), vLLM's calls outside it, and ours. Target: at
most 10 % of the wall time outside vLLM's forward. Not a test: numbers depend on the machine
and its load (printed at the start and at the end).
"""

from __future__ import annotations

import argparse
import contextlib
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
    ap.add_argument("--executors", default="mp,uni",
                    help="which vLLM set-ups to run side by side, comma-separated: mp (engine core and worker in "
                    "vLLM's spawned process) and uni (VLLM_ENABLE_V1_MULTIPROCESSING=0 and the uni executor: all in "
                    "this process)")
    ap.add_argument("--settle", type=float, default=2.0,
                    help="seconds of rest before each timed compute (default 2)")
    args = ap.parse_args()

    from mlvalidate.engines.base import PocParams
    from mlvalidate.engines.reference import ReferenceEngine
    from mlvalidate.engines.vllm_inprocess import VllmInProcessEngine
    from mlvalidate.fixtures.tiny import make_tiny_dense, make_tiny_qwen3_moe

    vdtype = {"bf16": "bfloat16", "fp32": "float32"}[args.dtype]
    base_env = {"VLLM_CPU_KVCACHE_SPACE": "1"}
    base_args = ["--dtype", vdtype, "--max-model-len", str(max(512, args.seq_len)),
                 "--max-num-batched-tokens", str(args.batch_size * args.seq_len)]
    if args.omp_bind:
        base_env["VLLM_CPU_OMP_THREADS_BIND"] = args.omp_bind
    executors = [e for e in args.executors.split(",") if e]
    params = PocParams("TEST_BLOCK", "test_pub_keys_v2", seq_len=args.seq_len)
    nonces = list(range(args.nonces))
    print(f"{args.arch}, {args.dtype}, {args.nonces} nonces x seq_len {args.seq_len}, batch {args.batch_size}, "
          f"best of {args.reps} (variants interleaved), {os.cpu_count()} CPUs, load {_load()}, vLLM OMP bind "
          f"{args.omp_bind or 'auto'}", flush=True)

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        make = make_tiny_qwen3_moe if args.arch == "qwen3_moe" else make_tiny_dense
        ckpt = make(Path(tmp) / args.arch)
        engines = {}
        for ex in executors:  # mp first: the uni engine binds this process's threads
            t = time.perf_counter()
            eng = engines[ex] = stack.enter_context(VllmInProcessEngine(ckpt, base_args, env=base_env,
                                                                         core_in_process=ex == "uni"))
            print(f"vLLM start ({ex}): {eng.start_seconds:.1f} s (with its import and arg parsing "
                  f"{time.perf_counter() - t:.1f} s)", flush=True)
            eng.compute(nonces[: args.batch_size], params, batch_size=args.batch_size)  # warm-up
        runs: dict = {}
        for _ in range(args.reps):
            for ex, eng in engines.items():
                # the other engine's OpenMP threads spin for a while after its last forward (both are
                # bound to the same CPUs): let them settle, or the second variant pays for the first
                time.sleep(args.settle)
                runs.setdefault(ex, []).append(eng.compute(nonces, params, batch_size=args.batch_size))
        stack.close()
        ref = ReferenceEngine(ckpt, dtype=args.dtype)
        ref.compute(nonces[: args.batch_size], params, batch_size=args.batch_size)  # warm-up
        rruns = [ref.compute(nonces, params, batch_size=args.batch_size) for _ in range(args.reps)]

    r = min(rruns, key=lambda r: r.elapsed_s)
    print(f"\nreference (transformers): {r.nonces_per_second:.1f} nonces/s, {r.elapsed_s:.2f} s")
    print("\nvLLM in process (best wall of each variant), shares of its wall time:")
    print(f"{'executor':<9}{'nonces/s':>10}{'wall s':>8}{'steps':>6}{'forward':>9}"
          f"{'vLLM':>8}{'ours':>7}{'outside':>9}  vs reference")
    for ex, rs in runs.items():
        v = min(rs, key=lambda r: r.elapsed_s)
        i, wall = v.info, v.elapsed_s
        fwd = i["vllm_forward_s"]
        calls = i["generate_s"] + i["fetch_s"]
        eng_out, rest = (calls - fwd) / wall, (wall - calls) / wall
        outside = 1 - fwd / wall
        mark = "" if outside <= TARGET_OUTSIDE else " OVER"
        print(f"{ex:<9}{v.nonces_per_second:>10.1f}{wall:>8.2f}{i['vllm_forwards']:>6}{fwd / wall:>9.1%}"
              f"{eng_out:>8.1%}{rest:>7.1%}{outside:>9.1%}{mark}  "
              f"{v.nonces_per_second / r.nonces_per_second:.2f}x")
    print(f"\nforward: vLLM's model forward, timed in the worker between the model's pre- and post-hook; "
          f"vLLM: the time in vLLM's calls (generate, the rows' collective_rpc) outside that forward "
          f"(scheduling, sampling, the engine-core round trip); ours: the rest (first inputs, last "
          f"post-processing, waiting on the helper thread). outside = 1 - forward / wall. Target: outside <= "
          f"{TARGET_OUTSIDE:.0%}. Load at the end {_load()}.")


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
