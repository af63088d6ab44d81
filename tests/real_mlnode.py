"""Gonka's real MLNode API (../shared/counterparts/gonka-mlnode, unmodified) on loopback, for tests.

`RealMlnode(workdir, hub_endpoint, replicas=N)` starts it as its README says it runs on CPU:
its venv (tests/mlnode_setup.py), PYTHONPATH=api/src:common/src:pow/src:train/src, uvicorn on
127.0.0.1 (tests/mlnode_launch.py sets torch.cuda.device_count() to N), INFERENCE_PORT for its
replicas, VLLM_PYTHON_PATH a script that runs tests/mlnode_backend.py (`mlvalidate serve` for
the --model and --port it is given) with this interpreter and this checkout, HF_HOME in the
workdir and HF_ENDPOINT a loopback hub (tests/fake_hub.py) for its download phase.

`restart=True` plays a process manager with restart: when the MLNode exits on its own (after
a failed deployment it calls os._exit(1)), it is started again on the same port. Its output
and its replicas' go to `workdir/mlnode.log`. `close()` stops it and every process it started.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

import mlnode_setup

TESTS = Path(__file__).resolve().parent
START_S = 180.0  # generous: the MLNode imports torch and FastAPI before it answers (~8 s on a quiet machine)


def free_port_block(n: int) -> int:
    """A port p with p..p+n-1 free on 127.0.0.1 (checked, not reserved)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p + n >= 65535:
            continue
        try:
            socks = []
            for q in range(p, p + n):
                sk = socket.socket()
                socks.append(sk)
                sk.bind(("127.0.0.1", q))
            return p
        except OSError:
            continue
        finally:
            for sk in socks:
                sk.close()
    raise RuntimeError("no block of free ports")


class RealMlnode:
    def __init__(self, workdir: Path, hub_endpoint: str, *, replicas: int = 1, restart: bool = False,
                 env: dict | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.replicas, self.restart = replicas, restart
        self.port = free_port_block(1)
        self.inference_port = free_port_block(replicas + 1)  # replicas on +1 .. +replicas
        self.backend_ports = [self.inference_port + i + 1 for i in range(replicas)]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / "mlnode.log"
        self.starts = 0  # how many times it was started (restarts included)
        self.exits: list[int] = []  # exit codes of the times it ended on its own
        self._proc: subprocess.Popen | None = None
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._env = self._environment(hub_endpoint, env or {})
        self._start()
        self.wait_ready()
        self._watch = threading.Thread(target=self._supervise, daemon=True)
        self._watch.start()

    # ---- the process ----
    def _environment(self, hub_endpoint: str, extra: dict) -> dict:
        mlnode = mlnode_setup.counterpart()
        backend = self.workdir / "vllm-python"  # what the MLNode runs as `$VLLM_PYTHON_PATH -m vllm...`
        backend.write_text("#!/bin/sh\n"
                           f"PYTHONPATH={shlex.quote(str(TESTS.parent))} exec {shlex.quote(sys.executable)} "
                           f"{shlex.quote(str(TESTS / 'mlnode_backend.py'))} \"$@\"\n")
        backend.chmod(0o755)
        keep = {k: v for k, v in os.environ.items()
                if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "OMP_NUM_THREADS")}
        return {**keep,
                "PYTHONPATH": os.pathsep.join(str(mlnode / p / "src") for p in ("api", "common", "pow", "train")),
                "INFERENCE_PORT": str(self.inference_port), "VLLM_PYTHON_PATH": str(backend),
                "HF_HOME": str(self.workdir / "hf"), "HF_ENDPOINT": hub_endpoint, "HF_HUB_DISABLE_TELEMETRY": "1",
                "NO_PROXY": "127.0.0.1,localhost", "MLVALIDATE_SERVER_LOG": "1",  # backends log their requests
                "POC_CALLBACK_INTERVAL_SEC": "0",  # replicas post their callbacks at once (short throughput windows)
                "PYTHONUNBUFFERED": "1", **extra}

    def _start(self) -> None:
        with self._lock:
            self.starts += 1
            with open(self.log_path, "ab") as log:
                log.write(f"\n==== MLNode start {self.starts} ====\n".encode())
                self._proc = subprocess.Popen(
                    [str(mlnode_setup.python()), str(TESTS / "mlnode_launch.py"), str(self.replicas), str(self.port)],
                    cwd=self.workdir, env=self._env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout_s: float = START_S) -> None:
        """Until the MLNode answers GET /api/v1/state; AssertionError (with its log) if it exits or never does."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            proc = self._proc
            if proc is not None and proc.poll() is not None and not self.restart:
                raise AssertionError(f"the MLNode exited ({proc.returncode}) before it answered:\n{self.log()[-3000:]}")
            try:
                if httpx.get(self.url + "/api/v1/state", timeout=5, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the MLNode did not answer within {timeout_s:.0f} s:\n{self.log()[-3000:]}")

    def _supervise(self) -> None:
        while not self._closing.is_set():
            proc = self._proc
            if proc is not None and proc.poll() is not None and not self._closing.is_set():
                self.exits.append(proc.returncode)
                self._reap_orphans()
                if not self.restart:
                    return
                self._start()
            time.sleep(0.1)

    def _reap_orphans(self) -> None:
        """Replicas the MLNode left behind (their own sessions): ended by pid."""
        for p in psutil.process_iter(["environ"]):
            try:
                env = p.info.get("environ") or {}
            except psutil.Error:
                continue
            if env.get("VLLM_PYTHON_PATH") == self._env["VLLM_PYTHON_PATH"] and p.pid != os.getpid():
                _end(p)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def backend_requests(self, method: str, path: str) -> int:
        """How many `method path` requests the replicas logged (serve's request log, MLVALIDATE_SERVER_LOG)."""
        return self.log().count(f'"{method} {path} HTTP/1.1"')

    def close(self) -> None:
        self._closing.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with _quiet():
                os.killpg(proc.pid, signal.SIGTERM)  # uvicorn's shutdown stops its vLLM replicas (SIGINT)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                with _quiet():
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._reap_orphans()


def _end(p: psutil.Process) -> None:
    with _quiet():
        p.terminate()
        try:
            p.wait(10)
        except psutil.TimeoutExpired:
            p.kill()


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, kind, *_):
        return kind is not None and issubclass(kind, (ProcessLookupError, psutil.Error, OSError))
