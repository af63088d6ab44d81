"""`mlvalidate launch`: vLLM with a profile's args, until Ctrl-C.

The server's lifecycle is serving.launch's (`VllmServer`); this module shows the wait, prints
the URL and the stop, turns SIGINT / SIGTERM / SIGHUP into a requested stop, and picks the exit
code: 0 after a requested stop; 2 (via the raised LaunchError) if the server failed to start,
exited on its own, or was interrupted before it was ready.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import sys
from typing import Iterator

from ._common import EXIT_PASS, Formatter


def register(sub) -> None:
    from ..defaults import LAUNCH_HOST, LAUNCH_PORT, LAUNCH_SERVER_CMD, LAUNCH_STARTUP_TIMEOUT

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
    p.add_argument("--port", type=int, default=LAUNCH_PORT, help="port the server binds")
    p.add_argument("--host", default=LAUNCH_HOST, help="address the server binds")
    p.add_argument("--server-cmd", default=LAUNCH_SERVER_CMD, metavar="CMD",
                   help="server command, shell-split; a command not ending in `serve` gets --model DIR "
                   "(e.g. 'python -m vllm.entrypoints.openai.api_server' where the vllm script is broken)")
    p.add_argument("--timeout", type=float, default=LAUNCH_STARTUP_TIMEOUT, metavar="S",
                   help="seconds to wait for readiness (cold starts of large models take 20+ min)")
    p.add_argument("--log", default=None, metavar="FILE",
                   help="server log, appended (default: mlvalidate-runs/launch-<time>-port<port>.log)")

    def run(args) -> int:
        return run_launch(args.profile, args.model, port=args.port, host=args.host, server_cmd=args.server_cmd,
                          timeout=args.timeout, log=args.log)

    p.set_defaults(func=run)


def run_launch(profile: str, model: str, *, port: int, host: str, server_cmd: str | None, timeout: float,
               log: str | None = None, out=None, err=None) -> int:  # fmt: skip
    """Start, wait until ready, serve in the foreground until Ctrl-C or SIGTERM, stop."""
    from ..errors import LaunchError
    from ..progress import StatusLine
    from ..serving.diagnose import ServerFailed
    from ..serving.launch import DEFAULT_SERVER_CMD, VllmServer

    out = out or sys.stdout
    err = err or sys.stderr
    if not timeout > 0:
        raise LaunchError(f"--timeout must be > 0 s, got {timeout}", "e.g. --timeout 1800")
    server = VllmServer.from_profile(
        profile, model, port=port, host=host, server_cmd=server_cmd if server_cmd is not None else DEFAULT_SERVER_CMD,
        log_path=log, startup_timeout=timeout, status=StatusLine("launch", err),
    )  # fmt: skip
    print(f"starting: {shlex.join(server.command)}", file=err)
    print(f"log: {server.log_path}", file=err)
    with _signals_raise_interrupt():
        try:
            server.start()
            print(f"vLLM ready at {server.url} (model {server.model_names[0] if server.model_names else '?'}; "
                  f"pid {server.pid}, process group {server.pgid}) after {server.ready_after_s:.1f} s "
                  f"— Ctrl-C or SIGTERM stops it", file=out, flush=True)  # fmt: skip
            server.serve()  # returns only by an exception
        except ServerFailed as e:
            for line in e.report_lines():
                print(line, file=err)
            raise
        except KeyboardInterrupt:
            if server.ready_after_s is None:
                raise  # interrupted while starting: the finally below stops it; exit 2
            _ignore_interrupts(err)
            print("stopping the server ...", file=err, flush=True)
            took = server.stop()
            print(f"stopped (process group {server.pgid}) in {took:.1f} s{server.kill_note()}", file=out, flush=True)
            return EXIT_PASS
        finally:
            _ignore_interrupts(err)
            server.stop()


@contextlib.contextmanager
def _signals_raise_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM (and SIGHUP) raise KeyboardInterrupt in the main thread meanwhile."""
    def handler(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    sigs = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
    old = {s: signal.signal(s, handler) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _ignore_interrupts(err) -> None:
    """While stopping, a second Ctrl-C must not abandon the process group half-stopped."""
    def handler(signum, frame):
        print("still stopping the server ...", file=err, flush=True)

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, handler)
