"""Command line: argument parsing and exit codes only.

Exit codes (every command): 0 PASS / success, 1 FAIL (fraud detected), 2 error or
incomplete run. Errors are one line on stderr: `error: what happened — what to do next`.
Each command's work lives in the module it names; this file only wires arguments to it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from . import __version__
from .errors import MlvalidateError

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2

DESCRIPTION = """\
PoC v2 validation harness for Gonka ML nodes.

Answers, before the snapshot block: will my deployment's PoC vectors pass the chain's
check, and how fast is it? Vectors are compared with golden references (artifacts/*.json)
under the reference's L2 threshold and binomial fraud test.

exit codes: 0 PASS (also PASS with mismatches within tolerance), 1 FAIL (fraud detected),
            2 error or incomplete run (bad input, unreachable node, not every vector checked)
"""


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


# ----------------------------------------------------------------------------------------
# commands: each has an _add_<name>(subparsers) that registers its arguments and sets
# `func` to a callable(args) -> exit code.
# ----------------------------------------------------------------------------------------
def _add_inspect(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="summarise a golden reference",
        description="Print a golden reference's model, nonces, PoC params, stat test (with the "
        "mismatch count at which fraud is declared), vector norms and pairwise distances.",
        formatter_class=_Formatter,
    )
    p.add_argument("reference", help="reference JSON file, or a model id looked up in artifacts/")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")

    def run(args) -> int:
        from .inspect_ref import inspect_reference

        return inspect_reference(args.reference, as_json=args.json)

    p.set_defaults(func=run)


def _add_stat_test_args(p) -> None:
    g = p.add_argument_group("stat test (overrides; default: the reference's values, else the server defaults)")
    g.add_argument("--threshold", type=float, dest="dist_threshold", default=None, help="L2 distance gate")
    g.add_argument("--p-mismatch", type=float, default=None, help="expected honest mismatch rate")
    g.add_argument("--fraud-threshold", type=float, default=None, help="p-value below which fraud is declared")


def _add_check(sub) -> None:
    p = sub.add_parser(
        "check",
        help="compare a file of computed vectors with a reference, offline",
        description="Compare computed vectors (a JSON file in the golden-reference schema) with a "
        "reference. Every reference nonce must have a usable computed vector: one that is "
        "missing or invalid counts as a mismatch and the verdict cannot be PASS.",
        formatter_class=_Formatter,
    )
    p.add_argument("reference", help="reference JSON file, or a model id looked up in artifacts/")
    p.add_argument("computed", help="computed vectors, JSON in the golden-reference schema")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.add_argument("--device", default=None, help="torch device for the comparison (default: cuda if available)")
    _add_stat_test_args(p)

    def run(args) -> int:
        from .check import check_files

        return check_files(
            args.reference,
            args.computed,
            overrides={
                "dist_threshold": args.dist_threshold,
                "p_mismatch": args.p_mismatch,
                "fraud_threshold": args.fraud_threshold,
            },
            as_json=args.json,
            device=args.device,
        )

    p.set_defaults(func=run)


def _add_make_tiny(sub) -> None:
    p = sub.add_parser(
        "make-tiny",
        help="write a tiny random MiniMax-M2 checkpoint in the real layout",
        description="Write a tiny random MiniMax-M2 (config.json fields, tensor names and dtypes, "
        "sharded safetensors + index, block-FP8 with --fp8, tokenizer) for tests and demos "
        "without a model hub. OUT_DIR must be new or empty; --force reuses a directory, "
        "replacing the checkpoint files written there before and leaving other files alone.",
        formatter_class=_Formatter,
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="directory to write (new or empty)")
    p.add_argument("--fp8", action="store_true", help="block-FP8 weights (F8_E4M3 + weight_scale_inv), as released")
    p.add_argument("--seed", type=int, default=0, help="weights seed (same seed: same weights, bf16 or FP8)")
    p.add_argument("--hidden-size", type=int, default=128, help="hidden size (a multiple of 128 with --fp8)")
    p.add_argument("--layers", type=int, default=4, help="decoder layers")
    p.add_argument("--experts", type=int, default=8, help="routed experts per layer (top-2)")
    p.add_argument("--gain", type=float, default=1.5, help="weights are N(0,1) * gain / sqrt(fan_in)")
    p.add_argument("--force", action="store_true", help="reuse a non-empty OUT_DIR")

    def run(args) -> int:
        from .deploy.tiny import describe_checkpoint, make_tiny

        out = make_tiny(
            args.out_dir, fp8=args.fp8, seed=args.seed, hidden_size=args.hidden_size,
            num_layers=args.layers, num_experts=args.experts, gain=args.gain, force=args.force,
        )  # fmt: skip
        info = describe_checkpoint(out)
        kind = "block-FP8" if info["fp8"] else "bf16"
        print(f"wrote {info['model_type']} ({kind}) to {info['path']}: {info['params']:,} parameters, "
              f"{info['tensors']} tensors, {info['bytes']:,} bytes")  # fmt: skip
        for name, size in info["files"].items():
            print(f"  {size:>12,}  {name}")
        return EXIT_PASS

    p.set_defaults(func=run)


def _add_bake(sub) -> None:
    p = sub.add_parser(
        "bake",
        help="compute a golden reference with the reference engine",
        description="Compute PoC vectors for nonces 0..N-1 with a local checkpoint and write them in the "
        "golden-reference schema, recording the engine, device, dtype and batch size.",
        formatter_class=_Formatter,
    )
    p.add_argument("--model", required=True, metavar="DIR", help="local checkpoint directory (bf16 or block-FP8)")
    p.add_argument("--model-id", required=True, help="model id written into the reference (e.g. org/name)")
    p.add_argument("--out", required=True, metavar="FILE", help="reference JSON to write")
    p.add_argument("--nonces", type=int, default=200, help="number of nonces (0..N-1)")
    p.add_argument("--batch-size", type=int, default=32, help="nonces per forward (numerics depend on it)")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"], help="activation dtype")
    p.add_argument("--seq-len", type=int, default=1024, help="PoC sequence length")
    p.add_argument("--block-hash", default="TEST_BLOCK")
    p.add_argument("--public-key", default="test_pub_keys_v2")
    p.add_argument("--k-dim", type=int, default=12)
    p.add_argument("--dist-threshold", type=float, default=0.75, help="L2 gate written into the reference")
    p.add_argument("--p-mismatch", type=float, default=0.1, help="written into the reference's stat_test")
    p.add_argument("--fraud-threshold", type=float, default=0.05, help="written into the reference's stat_test")

    def run(args) -> int:
        from .bake import bake_reference
        from .engines.base import PocParams
        from .engines.reference import ReferenceEngine

        if args.nonces < 1 or args.batch_size < 1 or args.seq_len < 1:
            raise MlvalidateError("--nonces, --batch-size and --seq-len must be >= 1")
        engine = ReferenceEngine(args.model, device=args.device, dtype=args.dtype, model_id=args.model_id)
        params = PocParams(block_hash=args.block_hash, public_key=args.public_key, seq_len=args.seq_len, k_dim=args.k_dim)
        path, res = bake_reference(
            engine, model_id=args.model_id, out=args.out, n_nonces=args.nonces, batch_size=args.batch_size,
            params=params, stat_test={"dist_threshold": args.dist_threshold, "p_mismatch": args.p_mismatch,
                                      "fraud_threshold": args.fraud_threshold},
        )
        print(f"wrote {path}: {len(res.nonces)} vectors in {res.elapsed_s:.1f} s ({res.nonces_per_second:.2f} nonces/s)")
        return EXIT_PASS

    p.set_defaults(func=run)


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="end-to-end dry run on this machine: honest node PASSes, cheating node FAILs",
        description="Make a tiny MiniMax-M2 (real FP8 layout) and a 4-bit cheating copy, bake a 200-nonce "
        "reference, then validate an honest re-computation (float32, other batch size) and the cheater. "
        "Writes one run bundle per validation. Exit 0 only if the honest node passed and the cheater failed.",
        formatter_class=_Formatter,
    )
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: mlvalidate-runs/demo-<time>)")
    p.add_argument("--seed", type=int, default=0, help="seed of the tiny checkpoint's weights")
    p.add_argument("--junit", default=None, metavar="FILE", help="also write JUnit XML: one test case per expectation")

    def run(args) -> int:
        from .demo import run_demo

        return run_demo(args.out, seed=args.seed, junit=args.junit)

    p.set_defaults(func=run)


def _interrupt(signum, frame):
    from .errors import Interrupted

    raise Interrupted("SIGTERM" if signum == signal.SIGTERM else signal.Signals(signum).name)


def _stop_on_sigterm():
    """SIGTERM ends a run like Ctrl-C: the node's generation is stopped and the bundle written.
    Returns the handler it replaced."""
    return signal.signal(signal.SIGTERM, _interrupt)


def _add_serve(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the Gonka vLLM PoC API from a local checkpoint (for dry runs and tests)",
        description="A reference PoC server: the Gonka vLLM PoC API (/api/v1/pow/*: generate with its queue, "
        "init/generate, status, stop) plus /health and /v1/models, computed by the reference engine. "
        "A client written for a Gonka vLLM node works against it unchanged. Runs until Ctrl-C / SIGTERM.",
        formatter_class=_Formatter,
    )
    p.add_argument("--model", required=True, metavar="DIR", help="local checkpoint directory")
    p.add_argument("--model-id", default=None, help="served model name (default: the directory path)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])

    def run(args) -> int:
        from .engines.reference import ReferenceEngine
        from .server import make_server

        model_id = args.model_id or args.model
        engine = ReferenceEngine(args.model, device=args.device, dtype=args.dtype, model_id=model_id)
        try:
            server = make_server(engine, model_id, args.host, args.port, served_names=[args.model])
        except OSError as e:
            raise MlvalidateError(f"cannot listen on {args.host}:{args.port}: {e.strerror}", "pick another --port") from None
        signal.signal(signal.SIGTERM, _interrupt)  # stop like Ctrl-C
        print(f"serving {model_id} (PoC API) at {server.url} — Ctrl-C to stop", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.service.close()
            server.server_close()
        print("stopped", flush=True)
        return EXIT_PASS

    p.set_defaults(func=run)


def _add_validate(sub) -> None:
    p = sub.add_parser(
        "validate",
        help="validate a live node: fetch the golden nonces' vectors and compare them locally",
        description="Fetch the PoC vectors of every reference nonce from a Gonka vLLM node's PoC API "
        "(POST /api/v1/pow/generate, wait=true, in chunks of the batch size) and compare them with the "
        "reference here — the node's own verdict is never trusted. A nonce the node does not return, or "
        "returns unusable, is a mismatch and blocks a PASS. Writes a run bundle. "
        "With --api mlnode the URL is the host's MLNode API (port 8080) and the full stack is checked: "
        "[download] the model at the chain's commit, [deploy] vLLM with the reference's (or --profile's) args, "
        "[throughput] every replica's generation loop, [validate] through the MLNode's /generate proxy, "
        "one batch per request (its 60 s proxy timeout); each phase can be skipped.",
        formatter_class=_Formatter,
    )
    p.add_argument("--url", required=True,
                   help="the node's vLLM server, e.g. http://127.0.0.1:5001 (--api mlnode: the MLNode API, e.g. "
                   "http://127.0.0.1:8080)")  # fmt: skip
    p.add_argument("--api", choices=["vllm", "mlnode"], default="vllm", help="which API the URL serves")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", default=None, help="model id; its reference is looked up in artifacts/")
    g.add_argument("--reference", default=None, metavar="FILE", help="reference JSON file")
    p.add_argument("--batch-size", type=int, default=32,
                   help="nonces per request; numerics depend on it (the MiniMax reference's is unrecorded, 32 is the node default)")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="bound of every phase: the validation's requests and retries together (502/503/504, "
                   "broken or stalled answers) end within it; the throughput phase gets its warm-up and measuring "
                   "window plus this")
    p.add_argument("--connect-grace", type=float, default=30.0, metavar="S",
                   help="a node that refuses connections (or does not resolve) for this long ends the run at once")
    p.add_argument("--out", default=None, metavar="DIR", help="run bundle folder (default: mlvalidate-runs/validate-<time>)")
    p.add_argument("--profile", default=None, help="hardware profile (e.g. h100x4): throughput vs its published reference and roofline")
    p.add_argument("--junit", default=None, metavar="FILE", help="also write JUnit XML: one test case per phase")
    p.add_argument("--chain-node", default=None, metavar="URL",
                   help="a Gonka node's public URL: the report adds the chain readiness section "
                   "(snapshot block countdown, W_threshold / V_min, pre-eligibility)")
    p.add_argument("--server-side", action="store_true",
                   help="(--api vllm) also ask the node to validate the reference itself and show its answer "
                   "next to the harness's (never trusted for the verdict)")
    t = p.add_argument_group("throughput phase (runs before the validation unless skipped)")
    t.add_argument("--skip-throughput", action="store_true", help="only validate")
    t.add_argument("--throughput-batch-size", type=int, default=None, help="generation batch (default: --batch-size)")
    t.add_argument("--warmup-seconds", type=float, default=30.0, help="generation time before the first sample")
    t.add_argument("--measure-seconds", type=float, default=60.0, help="sampling window")
    t.add_argument("--sample-interval", type=float, default=10.0, help="seconds between status samples")
    t.add_argument("--callback-host", default="127.0.0.1",
                   help="address the node can reach this machine at, for the spot-check callbacks")
    m = p.add_argument_group("MLNode phases (--api mlnode only)")
    m.add_argument("--skip-download", action="store_true", help="do not check or download the weights")
    m.add_argument("--download-timeout", type=float, default=7200.0, metavar="S", help="seconds to wait for the download")
    m.add_argument("--skip-deploy", action="store_true", help="do not check or start vLLM")
    m.add_argument("--deploy-timeout", type=float, default=1800.0, metavar="S", help="seconds to wait for vLLM to run")
    m.add_argument("--dtype", default="auto", help="vLLM dtype sent with the deploy request")
    m.add_argument("--skip-validate", action="store_true",
                   help="no comparison: the run reports 'validation skipped' (exit 0), never PASS")
    _add_stat_test_args(p)

    def run(args) -> int:
        from .engines.http import check_url

        if not (args.model or args.reference):
            raise MlvalidateError("give --model ID or --reference FILE", "e.g. --model MiniMaxAI/MiniMax-M2.7")
        check_url(args.url, "--url")
        if args.chain_node:
            check_url(args.chain_node, "--chain-node")
        positive = {"--batch-size": args.batch_size, "--timeout": args.timeout, "--connect-grace": args.connect_grace,
                    "--sample-interval": args.sample_interval, "--throughput-batch-size": args.throughput_batch_size or 1}
        for flag, v in positive.items():
            if not v > 0 or v == float("inf"):
                raise MlvalidateError(f"{flag} must be a positive number, got {v}")
        for flag, v in {"--warmup-seconds": args.warmup_seconds, "--measure-seconds": args.measure_seconds}.items():
            if not 0 <= v < float("inf"):
                raise MlvalidateError(f"{flag} must be >= 0, got {v}")
        previous = _stop_on_sigterm()
        try:
            return _run_validate(args)
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _run_validate(args) -> int:
        from .validate import validate_mlnode, validate_node

        common = dict(
            reference=args.reference or args.model, model=args.model, batch_size=args.batch_size, junit=args.junit,
            overrides={"dist_threshold": args.dist_threshold, "p_mismatch": args.p_mismatch,
                       "fraud_threshold": args.fraud_threshold},
            out_dir=args.out, deadline_s=args.timeout, profile=args.profile, connect_grace_s=args.connect_grace,
            throughput=None if args.skip_throughput else {
                "batch_size": args.throughput_batch_size or args.batch_size, "warmup_s": args.warmup_seconds,
                "measure_s": args.measure_seconds, "sample_interval_s": args.sample_interval,
                "callback_host": args.callback_host},
        )
        if args.api == "mlnode":
            if args.server_side:
                raise MlvalidateError("--server-side: only with --api vllm",
                                      "the MLNode's 60 s proxy timeout cuts a whole-reference request short")
            return validate_mlnode(
                args.url, **common, chain_node=args.chain_node, skip_download=args.skip_download, skip_deploy=args.skip_deploy,
                skip_validate=args.skip_validate, download_timeout=args.download_timeout,
                deploy_timeout=args.deploy_timeout, dtype=args.dtype)
        only = [f for f, on in (("--skip-download", args.skip_download), ("--skip-deploy", args.skip_deploy),
                                ("--skip-validate", args.skip_validate)) if on]
        if only:
            raise MlvalidateError(f"{', '.join(only)}: only with --api mlnode", "a vLLM node has no such phase")
        return validate_node(args.url, **common, server_side=args.server_side, chain_node=args.chain_node)

    p.set_defaults(func=run)


def _add_pull(sub) -> None:
    p = sub.add_parser(
        "pull",
        help="download the chain's pinned weights (resumable), record and verify them",
        description="Download a model repository at one commit (default: the chain's pin, hf_repo @ hf_commit "
        "of configs/chain/minimaxai-minimax-m2.7.yaml) into DIR with huggingface_hub, "
        "after checking the free disk space against the listed file sizes. Files finished by an earlier run "
        "are kept; run it again after an interruption. Writes DIR/.mlvalidate-pull.json, then runs the "
        "verify-weights checks. Only a full 40-hex commit is accepted as --revision. Honours HF_ENDPOINT "
        "and HF_TOKEN.",
        formatter_class=_Formatter,
    )
    p.add_argument("--dir", default=None, metavar="DIR", help="target directory, models/<owner>--<name> when not given")
    p.add_argument("--revision", default=None, metavar="COMMIT", help="full commit sha, the chain's pin when not given")
    p.add_argument("--repo", default=None, help="hub repository, the chain's (MiniMaxAI/MiniMax-M2.7) when not given")

    def run(args) -> int:
        from .deploy.pull import run_pull

        return run_pull(args.dir, revision=args.revision, repo=args.repo)

    p.set_defaults(func=run)


def _add_verify_weights(sub) -> None:
    p = sub.add_parser(
        "verify-weights",
        help="check a local checkpoint: shards, headers, dtypes/shapes vs config.json, pinned commit",
        description="List every problem of a checkpoint directory: shards of model.safetensors.index.json "
        "missing or with a header the strict reader rejects (e.g. truncated), tensors missing from their "
        "shard or unlisted, for MiniMax-M2 every dtype and shape against config.json (FP8 weights and "
        "block scales, F32 router), and the commit the directory records (pull record or huggingface_hub "
        "metadata) against the chain's pin. Reads headers only. Exit 0 clean, 2 with any problem.",
        formatter_class=_Formatter,
    )
    p.add_argument("dir", metavar="DIR", help="checkpoint directory (e.g. what `mlvalidate pull` wrote)")
    p.add_argument("--revision", default=None, metavar="COMMIT",
                   help="expected full commit sha, the chain's pin when not given")
    p.add_argument("--json", action="store_true", help="print the report as JSON (every problem)")

    def run(args) -> int:
        from .deploy.verify import run_verify_weights

        return run_verify_weights(args.dir, revision=args.revision, as_json=args.json)

    p.set_defaults(func=run)


def _add_launch(sub) -> None:
    from .deploy.launch import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_SERVER_CMD, DEFAULT_STARTUP_TIMEOUT

    p = sub.add_parser(
        "launch",
        help="start vLLM with a profile's args, wait until it is ready, serve until Ctrl-C",
        description="Start the vLLM server for a profile (a name under configs/ or a profile YAML) in its own "
        "process group, output to a log file. Refuses a busy port; shows progress until /health answers 200 "
        "and /v1/models lists the model; then prints the URL and keeps serving until Ctrl-C or SIGTERM, which "
        "stop the whole process group (SIGTERM, then SIGKILL). An early exit prints the log tail with a "
        "diagnosis of known failures. Exit 0 after a requested stop, 2 if the server failed, exited on its "
        "own, timed out or was interrupted before it was ready.",
        formatter_class=_Formatter,
    )
    p.add_argument("--profile", required=True, help="profile name (configs/<name>/profile.yaml) or YAML path")
    p.add_argument("--model", required=True, metavar="DIR", help="local checkpoint directory to serve")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port the server binds")
    p.add_argument("--host", default=DEFAULT_HOST, help="address the server binds")
    p.add_argument("--server-cmd", default=DEFAULT_SERVER_CMD, metavar="CMD",
                   help="server command, shell-split; a command not ending in `serve` gets --model DIR "
                   "(e.g. 'python -m vllm.entrypoints.openai.api_server' where the vllm script is broken)")
    p.add_argument("--timeout", type=float, default=DEFAULT_STARTUP_TIMEOUT, metavar="S",
                   help="seconds to wait for readiness (cold starts of large models take 20+ min)")
    p.add_argument("--log", default=None, metavar="FILE",
                   help="server log, appended (default: mlvalidate-runs/launch-<time>-port<port>.log)")

    def run(args) -> int:
        from .deploy.launch import run_launch

        return run_launch(args.profile, args.model, port=args.port, host=args.host, server_cmd=args.server_cmd,
                          timeout=args.timeout, log=args.log)

    p.set_defaults(func=run)


_COMMANDS = [_add_demo, _add_validate, _add_serve, _add_inspect, _add_check, _add_make_tiny, _add_bake,
             _add_pull, _add_verify_weights, _add_launch]


def _add_config(sub) -> None:
    p = sub.add_parser(
        "config",
        help="per-hardware vLLM profiles: list, show, check",
        description="Per-hardware vLLM profiles (configs/<profile>/profile.yaml) built on the chain's model "
        "definition (configs/chain/<model>.yaml). A profile may add vLLM args but never drop or change a chain "
        "ModelArg. vLLM args, in order: the chain's ModelArgs, --revision <hf_commit>, --tensor-parallel-size, "
        "the profile's own args. PROFILE is a name under configs/ ($MLVALIDATE_CONFIGS) or a profile.yaml path.",
        formatter_class=_Formatter,
    )
    csub = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)

    lp = csub.add_parser("list", help="the profiles under configs/", formatter_class=_Formatter)

    def run_list(args) -> int:
        from .deploy.profile_check import list_profiles_text

        print(list_profiles_text())
        return EXIT_PASS

    lp.set_defaults(func=run_list)

    sp = csub.add_parser(
        "show",
        help="print a profile's vLLM args, merged YAML, node JSON or launch command",
        description="args: the exact vLLM argument list, one shell-quoted line. yaml: the profile merged with its "
        "chain definition. node-json: the network node's admin API body (POST /admin/v1/nodes). command: env "
        "vars + the full vLLM launch command.",
        formatter_class=_Formatter,
    )
    sp.add_argument("profile", metavar="PROFILE")
    sp.add_argument("--format", default="args", choices=["args", "yaml", "node-json", "command"])
    sp.add_argument("--model", default=None, metavar="PATH_OR_ID",
                    help="command: the model to serve (default: the chain's hf_repo); node-json: model id of a "
                    "non-chain profile")  # fmt: skip
    sp.add_argument("--host", default=None,
                    help="node-json: how the network node reaches this ML node (default localhost); "
                    "command: the address vLLM binds (default 0.0.0.0)")  # fmt: skip
    sp.add_argument("--port", type=int, default=None, help="command: vLLM's port (default: the node's inference_port)")
    sp.add_argument("--server-cmd", default=None, metavar="CMD",
                    help="command: how to start vLLM, e.g. 'python -m vllm.entrypoints.openai.api_server' "
                    "(default 'vllm serve')")  # fmt: skip

    def run_show(args) -> int:
        from .deploy.profile_check import show_profile

        print(show_profile(args.profile, args.format, model=args.model, host=args.host, port=args.port,
                           server_cmd=args.server_cmd))  # fmt: skip
        return EXIT_PASS

    sp.set_defaults(func=run_show)

    cp = csub.add_parser(
        "check",
        help="check profiles: chain args intact, PoC batch limits, vLLM's own parser and registries",
        description="Always: the chain's ModelArgs are all present and unchanged, --revision is the chain's "
        "commit, tensor x pipeline parallel = the layout's GPUs, --max-num-batched-tokens (where set) >= PoC batch "
        "x seq_len. When vLLM is importable: vLLM's CLI parser accepts the args, and the tool/reasoning parser "
        "and attention backend names are registered in vLLM. Exit 0 only when every profile is a chain "
        "deployment with no problem; 2 otherwise (a chain: null profile is never reported as passing).",
        formatter_class=_Formatter,
    )
    cp.add_argument("profiles", nargs="*", metavar="PROFILE", help="default: every profile under configs/")
    cp.add_argument("--no-vllm", action="store_true", help="skip vLLM's parser even when vLLM is importable")
    cp.add_argument("--json", action="store_true", help="print the results as JSON")

    def run_check(args) -> int:
        from .deploy.profile_check import run_config_check

        return run_config_check(args.profiles, use_vllm=not args.no_vllm, as_json=args.json)

    cp.set_defaults(func=run_check)


def _add_hw(sub) -> None:
    p = sub.add_parser(
        "hw",
        help="GPU inventory (NVML), the matching profile, and the VRAM fit per profile",
        description="Read this host's GPUs through NVML (names, memory, driver, CUDA, clocks, power, processes "
        "holding GPU memory), name the profile that matches (GPU model and count), and estimate per GPU whether "
        "the model fits: weights/TP + fp8 KV cache for one max-model-len sequence + headroom against GPU memory x "
        "gpu-memory-utilization. Without an NVIDIA driver: a one-line error, exit 2. --profiles-only prints the "
        "fit table from the profiles' own GPU memory figures, without NVML.",
        formatter_class=_Formatter,
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--profiles-only", action="store_true", help="only the fit table; do not query NVML")
    p.add_argument("--profile", action="append", default=None, metavar="PROFILE",
                   help="limit to these profiles (repeatable; default: all under configs/)")  # fmt: skip
    p.add_argument("--headroom-gib", type=float, default=4.0,
                   help="per-GPU allowance for activations, CUDA graphs, NCCL and the CUDA context")  # fmt: skip

    def run(args) -> int:
        from .deploy.hardware import run_hw

        return run_hw(as_json=args.json, profiles_only=args.profiles_only, profiles=args.profile,
                      headroom_gib=args.headroom_gib)  # fmt: skip

    p.set_defaults(func=run)


_COMMANDS += [_add_config, _add_hw]


def _add_compare(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="compare run bundles: verdicts, distance histograms, cross-run distance matrix, throughput",
        description="Read run bundles (folders written by `validate --out` or `demo`) and write report.md and a "
        "self-contained report.html: a verdict table (profile, GPUs, counts, p-value, steady nonces/min against "
        "the profile's published figure and roofline), each run's distance histogram against its threshold, the "
        "median L2 between every pair of runs' vectors over their shared nonces, and throughput bars per profile. "
        "Plots need the `plots` extra (matplotlib); without it the report has every table.",
        formatter_class=_Formatter,
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run bundle folders")
    p.add_argument("--out", default="mlvalidate-compare", help="folder for report.md and report.html")

    def run(args) -> int:
        from .report.compare import run_compare

        return run_compare(args.run_dirs, args.out)

    p.set_defaults(func=run)


_COMMANDS += [_add_compare]


def _add_chain(sub) -> None:
    p = sub.add_parser(
        "chain",
        help="chain readiness: snapshot-block countdown, bootstrap thresholds, pre-eligibility, intent coverage",
        description="Read a Gonka node's chain REST and RPC endpoints (field paths: mlvalidate/chain.py).",
        formatter_class=_Formatter,
    )
    csub = p.add_subparsers(dest="chain_command", metavar="SUBCOMMAND", required=True)
    sp = csub.add_parser(
        "status",
        help="when is the target epoch's snapshot block, and where does the bootstrap stand",
        description="The target epoch's PoC start and snapshot block, projected from the current epoch's "
        "poc_start_block_height and epoch_length (never epoch_shift): poc_start = current_poc_start + "
        "(N - current_epoch) * epoch_length, snapshot = poc_start - 500; blocks remaining and an ETA from the "
        "recent block time; the punishment epoch; W_threshold and V_min; the latest "
        "bootstrap_model_preeligibility event; intent coverage (participants with a PoCIntent for the model, "
        "intent weight / total weight; lookups still failing after retries are listed as skipped). "
        "Exit 0, or 2 when the chain cannot be read.",
        formatter_class=_Formatter,
    )
    sp.add_argument("--node", required=True, metavar="URL", help="a Gonka node's public URL, e.g. http://node3.gonka.ai:8000")
    sp.add_argument("--model", default=None, metavar="ID", help="model id (default: MiniMaxAI/MiniMax-M2.7)")
    sp.add_argument("--epoch", type=int, default=None, metavar="N", help="target epoch (default: the next one)")
    sp.add_argument("--json", action="store_true", help="print the status as JSON")

    def run(args) -> int:
        from .chain import run_chain_status

        return run_chain_status(args.node, args.model, args.epoch, as_json=args.json)

    sp.set_defaults(func=run)


_COMMANDS += [_add_chain]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlvalidate", description=DESCRIPTION, formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"mlvalidate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_ERROR
    try:
        return int(args.func(args))
    except MlvalidateError as e:
        print(f"error: {e.one_line()}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted — nothing was reported as passed", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # a bug: still one line and exit 2 (exit 1 means fraud and nothing else)
        if os.environ.get("MLVALIDATE_DEBUG"):
            raise
        where = ""
        tb = e.__traceback__
        while tb is not None:
            where = f" at {os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"
            tb = tb.tb_next
        print(f"error: internal error: {type(e).__name__}: {' '.join(str(e).split())[:300]}{where} — this is a bug "
              "in mlvalidate; please report it with the command line (MLVALIDATE_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
