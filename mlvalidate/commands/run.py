"""`mlvalidate run`: validate a deployment with stock vLLM started in this process.

Wiring only: the arguments become a `pipeline_inprocess.InprocessOptions`, `pipeline_inprocess.run_inprocess`
starts vLLM with the profile's engine args and runs the phases, and `validate.finish` writes
the bundle (and JUnit), prints the report and returns the exit code — however the run ended.
"""

from __future__ import annotations

import signal

from ..errors import MlvalidateError
from ._common import Formatter, add_nvml_arg, add_stat_test_args, stop_on_sigterm
from ._fresh import add_fresh_args, fresh_plan


def register(sub) -> None:
    p = sub.add_parser(
        "run",
        help="validate with stock vLLM in this process: the profile's engine args, PoC hooks inside vLLM's model runner",
        description="Start vLLM (a stock build, no Gonka fork) in this process with exactly the engine args "
        "`mlvalidate config show PROFILE --format args` prints and the profile's env, plus what the PoC "
        "computation needs (prompt embeddings on, prefix caching off, eager model, the PoC worker extension). "
        "Every reference nonce is computed inside vLLM's model runner — per-layer Householder hooks, the final "
        "norm's last position — and compared here; then steady-state throughput at the profile's batch. Writes "
        "the same run bundle as `validate`, with the throughput window's energy per nonce, average power and "
        "throttling read through this host's NVML where it has GPUs. Layouts: tensor parallelism through vLLM's "
        "multiprocessing or Ray executor (rank 0's rows); pipeline parallelism is refused before vLLM starts (the last stage holds the "
        "final norm, the first the input embeddings); on CPU, TP > 1 needs VLLM_CPU_OMP_THREADS_BIND in the "
        "profile's env where there are fewer NUMA nodes than workers. vLLM logs at WARNING unless "
        "VLLM_LOGGING_LEVEL is set. "
        "Exit 0 PASS, 1 FAIL (fraud), 2 error or incomplete run.",
        formatter_class=Formatter,
    )
    p.add_argument("--profile", required=True,
                   help="hardware profile name (configs/) or a profile YAML path (e.g. a CPU profile with chain: null)")
    p.add_argument("--model", required=True, metavar="DIR", help="the checkpoint directory vLLM loads")
    p.add_argument("--reference", default=None, metavar="ID|FILE",
                   help="reference JSON file or model id (default: the profile's model id, looked up in artifacts/)")
    p.add_argument("--batch-size", type=int, default=32,
                   help="nonces handed to vLLM together for the validation (vLLM's scheduler splits them into steps)")
    p.add_argument("--out", default=None, metavar="DIR", help="run bundle folder (default: mlvalidate-runs/run-<time>)")
    p.add_argument("--junit", default=None, metavar="FILE", help="also write JUnit XML: one test case per phase")
    t = p.add_argument_group("throughput phase (after the validation unless skipped; at the profile's PoC batch)")
    t.add_argument("--skip-throughput", action="store_true", help="only validate")
    t.add_argument("--warmup-rounds", type=int, default=1, help="batches computed and thrown away first")
    t.add_argument("--measure-seconds", type=float, default=60.0, help="batches are timed until this has passed")
    t.add_argument("--min-rounds", type=int, default=3, help="at least this many timed batches")
    add_nvml_arg(t, "every GPU of this host (those CUDA_VISIBLE_DEVICES names, where it is set)")
    add_fresh_args(p, "run")
    add_stat_test_args(p)

    def run(args) -> int:
        from .validate import finish

        previous = stop_on_sigterm()
        try:
            opts = options(args)
            from ..pipeline_inprocess import run_inprocess

            record = run_inprocess(opts, log=lambda msg: print(msg, flush=True))
            return finish(record, args.out, args.junit, suite="run")
        finally:
            signal.signal(signal.SIGTERM, previous)

    p.set_defaults(func=run)


def options(args):
    """InprocessOptions from the parsed arguments; a usage error is one line, before anything runs."""
    from ..pipeline import StatOverrides
    from ..pipeline_inprocess import InprocessOptions

    if args.batch_size < 1:
        raise MlvalidateError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.warmup_rounds < 0 or args.min_rounds < 1:
        raise MlvalidateError("--warmup-rounds must be >= 0 and --min-rounds >= 1")
    if not 0 <= args.measure_seconds < float("inf"):
        raise MlvalidateError(f"--measure-seconds must be >= 0, got {args.measure_seconds}")
    nvml = None
    if args.nvml is not None:
        from ..serving.energy import parse_nvml_option

        chosen = parse_nvml_option(args.nvml)
        nvml = chosen if isinstance(chosen, str) else ",".join(chosen)
    return InprocessOptions(
        profile=args.profile, model_dir=args.model, reference=args.reference, batch_size=args.batch_size,
        stat=StatOverrides(args.dist_threshold, args.p_mismatch, args.fraud_threshold),
        throughput=not args.skip_throughput, warmup_rounds=args.warmup_rounds, measure_s=args.measure_seconds,
        min_rounds=args.min_rounds, fresh=fresh_plan(args, "run"), nvml=nvml)
