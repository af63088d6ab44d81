"""`mlvalidate serve`: the Gonka vLLM PoC API over the reference engine, or over stock vLLM in
this process (`--engine vllm --profile P`: engines/vllm_inprocess.py).

Ctrl-C / SIGTERM stop it at once: the server stops answering, the queue and the generation loop are
dropped, the engine is released, "stopped" is printed and, as the program itself, the process ends
there (os._exit after flushing) instead of in Python's interpreter teardown. That teardown was what
took the time (seconds for torch's and vLLM's modules, vLLM's shutdown unfreezing and collecting the
whole heap), and with a chunk still computing on a daemon thread torch's C++ teardown aborted the
process ("terminate called without an active exception", exit -6). Nothing is left to save: `serve`
writes no files, a queued job dies with the process as it would with the node's."""

from __future__ import annotations

import os
import sys

from ..errors import MlvalidateError
from ._common import EXIT_PASS, Formatter, require_extra, stop_on_sigterm


STOP_WITHIN_S = 2.0  # from SIGTERM to the process's end (tests/test_serve_stop.py, with room for the load)


def register(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the Gonka vLLM PoC API from a local checkpoint (for dry runs and tests)",
        description="A reference PoC server: the Gonka vLLM PoC API (/api/v1/pow/*: generate with its queue, "
        "init/generate, status, stop) plus /health and /v1/models, computed by the reference engine. "
        "A client written for a Gonka vLLM node works against it unchanged. Runs until Ctrl-C / SIGTERM, which "
        f"stop it within {STOP_WITHIN_S:g} s (queued jobs are dropped; with vLLM worker processes, after vLLM's own "
        "shutdown). "
        "With --engine vllm the vectors are computed inside a stock vLLM started in this process with the "
        "--profile's engine args (as `mlvalidate run` does): the PoC API for a vLLM without Gonka's routes.\n\n"
        "exit codes: 0 after Ctrl-C or SIGTERM stopped it; 2 when it cannot start (the checkpoint, the port, a "
        "missing extra)",
        formatter_class=Formatter,
    )
    p.add_argument("--model", required=True, metavar="DIR", help="local checkpoint directory")
    p.add_argument("--model-id", default=None, help="served model name (default: the directory path)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (0.0.0.0: every interface; the API has no authentication)")
    p.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    p.add_argument("--device", default="cpu", help="(--engine reference) torch device, e.g. cuda or cuda:1")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"], help="(--engine reference) activation dtype")
    p.add_argument("--engine", default="reference", choices=["reference", "vllm"],
                   help="reference: transformers in process; vllm: stock vLLM in process with --profile's engine args")
    p.add_argument("--profile", default=None,
                   help="(--engine vllm) profile name or YAML path whose engine args and env start vLLM")

    def run(args) -> int:
        require_extra("reference", "serve")
        from ..engines.reference import ReferenceEngine
        from ..server import make_server

        model_id = args.model_id or args.model
        if args.engine == "vllm":
            if not args.profile:
                raise MlvalidateError("--engine vllm needs --profile", "the profile's engine args start vLLM")
            from ..engines.vllm_inprocess import VllmInProcessEngine
            from ..serving.profiles import load_profile

            prof = load_profile(args.profile)
            engine = VllmInProcessEngine(args.model, prof.vllm_args(), env=prof.env, model_id=model_id)
        else:
            if args.profile:
                raise MlvalidateError("--profile is for --engine vllm", "drop it, or add --engine vllm")
            engine = ReferenceEngine(args.model, device=args.device, dtype=args.dtype, model_id=model_id)
        try:
            server = make_server(engine, model_id, args.host, args.port, served_names=[args.model])
        except OSError as e:
            getattr(engine, "close", lambda: None)()
            raise MlvalidateError(f"cannot listen on {args.host}:{args.port}: {e.strerror}", "pick another --port") from None
        stop_on_sigterm()  # stop like Ctrl-C
        print(f"serving {model_id} (PoC API, {engine.name} engine) at {server.url} — Ctrl-C to stop", flush=True)
        ends_process = getattr(args, "ends_process", False)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.service.close()
            server.server_close()
            release(engine, ends_process)
        print("stopped", flush=True)
        if ends_process:  # the program: end here, not in the interpreter's teardown (see the docstring)
            sys.stderr.flush()
            os._exit(EXIT_PASS)
        return EXIT_PASS

    p.set_defaults(func=run)


def release(engine, process_ends: bool) -> None:
    """The engine's resources (the in-process vLLM engine has some: worker processes, /dev/shm files).
    When this process ends next, the memory held in it is not worth reclaiming (VllmInProcessEngine.close)."""
    if hasattr(engine, "close"):
        engine.close(process_ends=process_ends)
