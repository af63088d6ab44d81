"""`mlvalidate validate`: validate a live node (vLLM PoC API or a host's MLNode) against a reference.

Wiring only: the arguments become a `pipeline.RunOptions`, `pipeline.run_live` runs the
phases, and this module writes the bundle (and JUnit), prints the report and returns the exit
code — however the run ended.
"""

from __future__ import annotations

import datetime as _dt
import sys
from pathlib import Path

from .. import interrupts
from ..errors import MlvalidateError
from ._common import (
    Formatter,
    add_gpus_arg,
    add_in_flight_arg,
    add_nvml_arg,
    add_stat_test_args,
    add_stop_on_exit_arg,
    add_throughput_args,
    gpus_option,
    node_run_options,
)
from ._fresh import add_fresh_args, fresh_plan


def register(sub) -> None:
    p = sub.add_parser(
        "validate",
        help="validate a live node: fetch the golden nonces' vectors and compare them locally",
        description="Fetch the PoC vectors of every reference nonce from a Gonka vLLM node's PoC API "
        "(POST /api/v1/pow/generate in chunks of the batch size, --in-flight of them queued on the node at a "
        "time, or wait=true one at a time with --in-flight 0) and compare them with the "
        "reference here — the node's own verdict is never trusted. A nonce the node does not return, or "
        "returns unusable, is a mismatch and blocks a PASS. Writes a run bundle. "
        "With --api mlnode the URL is the host's MLNode API (port 8080) and the full stack is checked: "
        "[download] the model at the chain's commit, [deploy] vLLM with the reference's (or --profile's) args, "
        "[throughput] every replica's generation loop, [validate] through the MLNode's /generate proxy, "
        "one batch per request (queued: its 60 s proxy timeout only bounds wait=true); each phase can be skipped. "
        "The bundle's environment.json keeps this machine apart from the node: the node's hardware is what its "
        "MLNode's GPU routes say, else this machine's where the node runs on it (loopback), else --gpus or --profile "
        "(the operator's word), else unknown. Where the node's GPUs are this machine's (a loopback node, or --nvml), "
        "the throughput phase's window also records their energy per nonce, average power and throttling; a "
        "remote node's bundle says they were not measured.\n\n"
        "exit codes: 0 PASS or PASS-with-mismatches (also a validation skipped by --skip-validate); 1 FAIL (fraud "
        "proven by the vectors that came back); 2 error or incomplete (not every vector checked, the node "
        "unreachable, interrupted, bad input)",
        formatter_class=Formatter,
    )
    p.add_argument("--url", required=True,
                   help="the node's vLLM server, e.g. http://127.0.0.1:5001 (--api mlnode: the MLNode API, e.g. "
                   "http://127.0.0.1:8080)")  # fmt: skip
    p.add_argument("--api", choices=["vllm", "mlnode"], default="vllm", help="which API the URL serves")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", default=None, help="model id; its reference is looked up in artifacts/")
    g.add_argument("--reference", default=None, metavar="FILE", help="reference JSON file")
    p.add_argument("--batch-size", type=int, default=32,
                   help="nonces per request; numerics depend on it (the MiniMax reference records none; a node uses 32 unless told)")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="bound of every phase: the validation's requests and retries together (502/503/504, "
                   "broken or stalled answers) end within it; the throughput phase gets its warm-up and measuring "
                   "window plus this")
    p.add_argument("--connect-grace", type=float, default=30.0, metavar="S",
                   help="a node that refuses connections (or does not resolve) for this long ends the run at once")
    add_in_flight_arg(p)
    add_stop_on_exit_arg(p)
    p.add_argument("--out", default=None, metavar="DIR", help="run bundle folder (default: mlvalidate-runs/validate-<time>)")
    p.add_argument("--profile", default=None, help="hardware profile (e.g. h100x4): throughput vs its published reference and roofline")
    add_gpus_arg(p, "the node's hardware")
    add_nvml_arg(p, "every GPU of this host for a node on loopback; none for a remote node, whose GPUs this host's "
                 "NVML does not see (its bundle says so)")
    p.add_argument("--junit", default=None, metavar="FILE", help="also write JUnit XML: one test case per phase")
    p.add_argument("--chain-node", default=None, metavar="URL",
                   help="a Gonka node's public URL: the report adds the chain readiness section "
                   "(snapshot block countdown, W_threshold / V_min, pre-eligibility)")
    p.add_argument("--server-side", action="store_true",
                   help="(--api vllm) also ask the node to validate the reference itself and show its answer "
                   "next to the harness's (never trusted for the verdict)")
    add_throughput_args(p, "the node")
    m = p.add_argument_group("MLNode phases (--api mlnode only)")
    m.add_argument("--skip-download", action="store_true", help="do not check or download the weights")
    m.add_argument("--download-timeout", type=float, default=7200.0, metavar="S", help="seconds to wait for the download")
    m.add_argument("--skip-deploy", action="store_true", help="do not check or start vLLM")
    m.add_argument("--deploy-timeout", type=float, default=1800.0, metavar="S", help="seconds to wait for vLLM to run")
    m.add_argument("--dtype", default="auto", help="vLLM dtype sent with the deploy request")
    m.add_argument("--skip-validate", action="store_true",
                   help="no comparison: the run reports 'validation skipped' (exit 0), never PASS")
    add_fresh_args(p, "validate")
    add_stat_test_args(p)

    def run(args) -> int:  # SIGINT/SIGTERM: interrupts.handling_signals (cli.main)
        opts = options(args)
        return finish(_run(opts), args.out, args.junit)

    p.set_defaults(func=run)


def _run(opts):
    from ..pipeline import run_live

    return run_live(opts, log=lambda msg: print(msg, flush=True))


def options(args):
    """RunOptions from the parsed arguments; a usage error is one line, before anything runs."""
    from ..http_client import check_url
    from ..pipeline import RunOptions, StatOverrides
    from ..serving.energy import energy_plan

    if not (args.model or args.reference):
        raise MlvalidateError("give --model ID or --reference FILE", "e.g. --model MiniMaxAI/MiniMax-M2.7")
    check_url(args.url, "--url")
    if args.chain_node:
        check_url(args.chain_node, "--chain-node")
    throughput = node_run_options(args)
    if args.api == "mlnode" and args.server_side:
        raise MlvalidateError("--server-side: only with --api vllm",
                              "the MLNode's 60 s proxy timeout cuts a whole-reference request short")
    only = [f for f, on in (("--skip-download", args.skip_download), ("--skip-deploy", args.skip_deploy),
                            ("--skip-validate", args.skip_validate)) if on]
    if args.api == "vllm" and only:
        raise MlvalidateError(f"{', '.join(only)}: only with --api mlnode", "a vLLM node has no such phase")
    return RunOptions(
        url=args.url, reference=args.reference or args.model, api=args.api, model=args.model,
        batch_size=args.batch_size, stat=StatOverrides(args.dist_threshold, args.p_mismatch, args.fraud_threshold),
        timeout_s=args.timeout, connect_grace_s=args.connect_grace, profile=args.profile, throughput=throughput,
        server_side=args.server_side, chain_node=args.chain_node, skip_download=args.skip_download,
        skip_deploy=args.skip_deploy, skip_validate=args.skip_validate, download_timeout_s=args.download_timeout,
        deploy_timeout_s=args.deploy_timeout, dtype=args.dtype, in_flight=args.in_flight,
        stop_on_exit=args.stop_on_exit, fresh=fresh_plan(args, "validate"), gpus=gpus_option(args),
        energy=energy_plan(args.url, args.nvml))


def finish(run, out_dir, junit=None, suite: str = "validate") -> int:
    """Capture the environment, write the bundle (and JUnit XML if asked), print the report
    (its first line is the verdict); return the exit code. A signal that comes before the
    bundle is complete is held (interrupts.held): the run is then recorded as interrupted and
    its bundle written as such, so a Ctrl-C never costs the evidence."""
    from ..results import outcome

    out = Path(out_dir) if out_dir else Path("mlvalidate-runs") / f"{suite}-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    with interrupts.held() as hold:
        from ..serving.environment import environment

        run.environment = environment(run)
        problem = _write(run, out, junit, suite)
        if hold.signal and problem is None:  # the run ends as interrupted, recorded in the bundle
            run.error = run.error or f"interrupted by {hold.signal} while the run bundle was written: the run is incomplete"
            problem = _write(run, out, junit, suite)
        if problem is not None:
            print(f"error: {problem}", file=sys.stderr)
            return 2
        from ..report.bundle import report_text

        print()
        print(report_text(run), end="")
        if run.engine.get("error"):
            print(f"node error    {run.engine['error']}")
        print(f"bundle        {out}", flush=True)
        if run.error:
            print(f"error: {run.error}", file=sys.stderr)
    return outcome(run).exit_code


def _write(run, out: Path, junit, suite: str) -> str | None:
    """The bundle (and JUnit XML); None, or why they could not be written (one line)."""
    from ..report.bundle import write_bundle
    from ..results import outcome

    try:
        write_bundle(out, run)
        if junit:
            from ..report.junit import write_junit

            write_junit(junit, suite, run.phases, {"model": run.reference.model, "verdict": outcome(run).verdict,
                                                   "bundle": str(out)})
    except OSError as e:
        return (f"could not write the run bundle to {out}: {e.strerror or e} — pass --out (and --junit) a writable "
                "path")
    return None
