"""`mlvalidate launch`: vLLM with a profile's args, until Ctrl-C."""

from __future__ import annotations

from ._common import Formatter


def register(sub) -> None:
    from ..serving.launch import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_SERVER_CMD, DEFAULT_STARTUP_TIMEOUT

    p = sub.add_parser(
        "launch",
        help="start vLLM with a profile's args, wait until it is ready, serve until Ctrl-C",
        description="Start the vLLM server for a profile (a name under configs/ or a profile YAML) in its own "
        "process group, output to a log file. Refuses a busy port; shows progress until /health answers 200 "
        "and /v1/models lists the model; then prints the URL and keeps serving until Ctrl-C or SIGTERM, which "
        "stop the whole process group (SIGTERM, then SIGKILL). An early exit prints the log tail with a "
        "diagnosis of known failures. Exit 0 after a requested stop, 2 if the server failed, exited on its "
        "own, timed out or was interrupted before it was ready.",
        formatter_class=Formatter,
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
        from ..serving.launch import run_launch

        return run_launch(args.profile, args.model, port=args.port, host=args.host, server_cmd=args.server_cmd,
                          timeout=args.timeout, log=args.log)

    p.set_defaults(func=run)
