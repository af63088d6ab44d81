"""What Gonka's real MLNode starts as "vLLM" in the tests: `mlvalidate serve` on a tiny checkpoint.

The MLNode runs `$VLLM_PYTHON_PATH -m vllm.entrypoints.openai.api_server --model M --dtype D
--port N --host H [additional_args]` for each replica (api/inference/vllm/runner.py). The tests
point VLLM_PYTHON_PATH at a two-line shell script that runs this file with the project's Python;
it takes those arguments as vLLM would: the model is a hub id looked up in the HF cache the
MLNode's download phase filled (HF_HOME, `--revision` if given), the dtype maps to serve's
(float32 -> fp32; auto, bfloat16 -> bf16), the other vLLM arguments are accepted and ignored.
It binds 127.0.0.1 whatever --host says (the MLNode asks for 0.0.0.0, and calls 127.0.0.1).
A model that is not in the cache exits 1 at once, as a vLLM that cannot load its model would.

Faults for tests, by environment (the MLNode passes its environment on):
  MLNODE_TEST_DELAY_S=S             every chunk takes S s longer (a backend slower than the proxy)
  MLNODE_TEST_BROKEN_STATUS=I       replica I's /api/v1/pow/status answers HTTP 500 (BROKEN_STATUS),
                                    its /health still 200 (replica I listens on INFERENCE_PORT + 1 + I)
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

BROKEN_STATUS = "status is broken on purpose (MLNODE_TEST_BROKEN_STATUS)"
DTYPES = {"auto": "bf16", "bfloat16": "bf16", "bf16": "bf16", "float32": "fp32", "fp32": "fp32", "float": "fp32"}


def parse(argv: list[str]):
    p = argparse.ArgumentParser(prog="vllm (mlvalidate serve)")
    p.add_argument("-m", dest="module", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--revision", default=None)
    args, _ignored = p.parse_known_args(argv)  # vLLM's own arguments (--max-model-len ...): not ours
    return args


def local_checkpoint(model: str, revision: str | None) -> str:
    if os.path.isdir(model):
        return model
    from huggingface_hub import snapshot_download

    return snapshot_download(model, revision=revision, local_files_only=True)


def add_faults(port: int) -> None:
    """Wrap the reference engine and the PoC service as the environment asks."""
    import mlvalidate.engines.reference as reference
    import mlvalidate.server as server

    delay = float(os.environ.get("MLNODE_TEST_DELAY_S") or 0)
    if delay:
        compute = reference.ReferenceEngine.compute

        def slow(self, *a, **kw):
            time.sleep(delay)
            return compute(self, *a, **kw)

        reference.ReferenceEngine.compute = slow
    broken = os.environ.get("MLNODE_TEST_BROKEN_STATUS")
    if broken and port == int(os.environ.get("INFERENCE_PORT", "5000")) + 1 + int(broken):
        def broken_status(self):
            raise server.ApiError(500, BROKEN_STATUS)

        server.PocService.status = broken_status


def _orphaned(parent: int) -> None:
    """The MLNode that started this replica is gone (os._exit leaves its replicas running): stop."""
    while os.getppid() == parent:
        time.sleep(1)
    os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str]) -> int:
    threading.Thread(target=_orphaned, args=(os.getppid(),), daemon=True).start()
    args = parse(argv)
    if args.module != "vllm.entrypoints.openai.api_server":
        print(f"mlnode_backend: unexpected module {args.module}", file=sys.stderr)
        return 2
    try:
        path = local_checkpoint(args.model, args.revision)
    except Exception as e:  # noqa: BLE001 - any lookup failure: the model cannot be loaded
        print(f"mlnode_backend: cannot load {args.model}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    add_faults(args.port)
    from mlvalidate.cli import main as cli

    # as the program (argv from sys.argv): serve then ends this process at its stop, not in the teardown
    sys.argv = ["mlvalidate", "serve", "--model", path, "--model-id", args.model, "--dtype",
                DTYPES.get(args.dtype, "bf16"), "--host", "127.0.0.1", "--port", str(args.port)]
    return cli()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
