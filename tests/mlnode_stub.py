"""A small MLNode-shaped server for tests (spec §5.2), standard library only.

Gonka's real MLNode runs in the tests (tests/real_mlnode.py); this stub stays for what the real
one cannot be made to do cheaply (a download that fails after it ran, a proxy timeout in
0.3 s instead of 60, a build older than v0.2.12 that drops poc_stronger_rng) and for tests
about the harness rather than the MLNode. Every answer it gives has the real one's shape,
codes and texts (tests/test_real_mlnode.py compares them side by side):

It proxies `/api/v1/inference/pow/*` to real PoC backends (`mlvalidate.server.make_server`)
the way the MLNode does: request bodies are read laxly (unknown top-level fields dropped,
defaults filled, as its pydantic models and model_dump() do) and forwarded; `/generate`
round-robin to one backend with a proxy timeout (502 `{"detail": ""}` when it runs out, the
text of the transport error for other failures, the backend's status and text re-raised
otherwise; a queued request's id becomes "{port}:{uuid}" and its poll is routed back to that
backend), `init/generate` fanned out with group_id = i and n_groups = #backends (sorted by
port), `status` aggregated (GENERATING | MIXED | IDLE | NO_BACKENDS; an entry whose status
call failed is {"port", "status": "ERROR", "detail": text}), `stop` fanned out, `/v1/models`
proxied (503 "No vLLM backend available", plain text, with no backend). Model download and
deployment are small state machines advanced by the status polls:

  models/status:  NOT_FOUND -(download)-> DOWNLOADING -(download_polls polls)-> download_result
  up/status:      not_started -(up/async)-> in_progress -(deploy_polls polls)-> deploy_result:
                  completed | failed | not_started (a failure, restarted) | exit (the stub closes)
                  | hang (every status answer from then on takes 5 s)

Its GPU routes (api/gpu/ of the real one) answer as the real one does on a machine without
NVML — `{"devices": [], "count": 0}` and 503 "NVML not initialized. ..." — unless `gpus` lists
devices (the real one's device objects) and `driver` its driver answer.

Every request is recorded in `requests` as (method, path, body) for assertions.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

POW = "/api/v1/pow"  # the backends' PoC routes
NO_BACKENDS = "No vLLM backends available"  # the PoC routes' 503 detail
NO_BACKEND = "No vLLM backend available"  # the /v1 proxy's 503 text
# the MLNode's request models (api/inference/pow_v2_routes.py): fields and defaults; others are dropped
_COMMON = {"block_hash": None, "block_height": None, "public_key": None, "node_id": None, "node_count": None,
           "batch_size": 32, "params": None, "url": None, "poc_stronger_rng": False}
INIT_FIELDS = dict(_COMMON)
GENERATE_FIELDS = {**_COMMON, "nonces": None, "wait": False, "validation": None, "stat_test": None}


def _port(url: str) -> int:
    return urlparse(url).port


def _lax(body, fields: dict, drop: tuple = ()) -> dict:
    """What the MLNode forwards: its model's fields (defaults filled), numeric strings read as
    numbers, every other field dropped without a word."""
    body = body if isinstance(body, dict) else {}
    out = {k: body.get(k, default) for k, default in fields.items() if k not in drop}
    for k in ("block_height", "node_id", "node_count", "batch_size"):
        if isinstance(out.get(k), str) and out[k].strip().lstrip("-").isdigit():
            out[k] = int(out[k])
    return out


def _transport_text(e: OSError) -> str:
    """What the MLNode's httpx client says for a transport error (its text becomes the detail)."""
    reason = getattr(e, "reason", e)  # urllib wraps the socket error
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return ""  # httpx's ReadTimeout has no text
    if isinstance(reason, ConnectionRefusedError):
        return "All connection attempts failed"
    return str(reason)


def _forward(url: str, method: str, body, timeout: float) -> tuple[int, str]:
    """(status, text) of one backend call; raises OSError (timeouts included) on transport errors."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class MlnodeStub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, backends: list[str], *, model_status: str = "DOWNLOADED", download_polls: int = 2,
                 download_result: str = "DOWNLOADED", running: bool = True, deploy_polls: int = 2,
                 deploy_result: str = "completed", proxy_timeout_s: float = 60.0, drops_stronger_rng: bool = False,
                 gpus: list[dict] | None = None, driver: dict | None = None):
        self.backends = sorted(backends, key=_port)
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, object]] = []
        self.fanout: list[list[dict]] = []  # the bodies each init/generate sent to the backends
        self.rr = 0
        self.proxy_timeout_s = proxy_timeout_s
        self.drop = ("poc_stronger_rng",) if drops_stronger_rng else ()  # MLNode builds older than v0.2.12
        self.model_status, self.download_polls, self.download_result = model_status, download_polls, download_result
        self._download_left, self._download_failed = 0, False
        self.up = {"status": "completed" if running else "not_started", "is_starting": False, "is_running": running,
                   "elapsed_seconds": 12.0 if running else None, "error": None}
        self.deploy_polls, self.deploy_result = deploy_polls, deploy_result
        self._deploy_left = 0
        self.gpus, self.driver = list(gpus or []), driver  # driver None: its NVML is not running
        super().__init__(("127.0.0.1", 0), _Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()

    def calls(self, method: str, path: str) -> list:
        return [b for m, p, b in self.requests if m == method and p == path]

    # ---- models ----
    def models_status(self, body: dict) -> dict:
        with self.lock:
            if self.model_status == "DOWNLOADING":
                self._download_left -= 1
                if self._download_left <= 0:
                    self.model_status = self.download_result
                    self._download_failed = self.download_result != "DOWNLOADED"
            st, failed = self.model_status, self._download_failed
        return {"model": {"hf_repo": body.get("hf_repo"), "hf_commit": body.get("hf_commit")}, "status": st,
                "progress": {"start_time": 0.0, "elapsed_seconds": 1.0} if st == "DOWNLOADING" else None,
                "error_message": "403 Client Error: repository not accessible" if failed else None}

    def models_download(self, body: dict) -> tuple[int, dict]:
        with self.lock:
            if self.model_status == "DOWNLOADING":
                return 409, {"detail": "model is already downloading"}
            self.model_status, self._download_left = "DOWNLOADING", self.download_polls
        return 202, {"task_id": str(uuid.uuid4()), "status": "DOWNLOADING",
                     "model": {"hf_repo": body.get("hf_repo"), "hf_commit": body.get("hf_commit")}}

    # ---- deploy ----
    def up_status(self) -> dict:
        with self.lock:
            hang = self.up["is_starting"] and self._deploy_left <= 0 and self.deploy_result == "hang"
        if hang:  # the real one's watcher blocks its event loop for 35 s after a failure: no answer
            time.sleep(5)
        with self.lock:
            if self.up["is_starting"]:
                self._deploy_left -= 1
                self.up["elapsed_seconds"] += 1.0
                if self._deploy_left <= 0 and self.deploy_result == "exit":  # os._exit(1): nothing answers
                    threading.Thread(target=self.close, daemon=True).start()
                elif self._deploy_left <= 0 and self.deploy_result != "hang":  # completed | failed | not_started
                    ok = self.deploy_result == "completed"
                    self.up.update(is_starting=False, is_running=ok, status=self.deploy_result,
                                   elapsed_seconds=self.up["elapsed_seconds"] if ok else None,
                                   error="vLLM process exited prematurely: None" if self.deploy_result == "failed"
                                   else None)
            return dict(self.up)

    def up_async(self, body: dict) -> tuple[int, dict]:
        with self.lock:
            if self.up["is_running"]:
                return 409, {"detail": "VLLM is already running. Use /inference/down to stop it first."}
            if self.up["is_starting"]:
                return 409, {"detail": "VLLM startup is already in progress. Use /inference/up/status to check status."}
            self.up.update(is_starting=True, status="in_progress", elapsed_seconds=0.0, error=None)
            self._deploy_left = self.deploy_polls
        return 200, {"status": "starting", "message": "Inference startup initiated in background"}

    # ---- PoC proxy ----
    def init_generate(self, body: dict) -> tuple[int, dict]:
        n = len(self.backends)
        if n == 0:
            return 503, {"detail": NO_BACKENDS}
        results, errors, sent = [], [], []
        for i, b in enumerate(self.backends):
            fwd = {**_lax(body, INIT_FIELDS, self.drop), "group_id": i, "n_groups": n}
            sent.append(fwd)
            try:
                code, text = _forward(b + POW + "/init/generate", "POST", fwd, 30)
            except OSError as e:
                code, text = 0, _transport_text(e)
            if code == 200:
                results.append({"port": _port(b), "status": "OK"})
            else:
                errors.append({"port": _port(b), "error": text})
        self.fanout.append(sent)
        if not results:
            return 502, {"detail": {"errors": errors}}
        return 200, {"status": "OK", "backends": len(results), "n_groups": n, "results": results,
                     "errors": errors or None}

    def pow_status(self) -> dict:
        if not self.backends:
            return {"status": "NO_BACKENDS", "backends": []}
        entries = []
        for b in self.backends:
            try:
                code, text = _forward(b + POW + "/status", "GET", None, 10)
                entries.append({"port": _port(b), **json.loads(text)} if code == 200
                               else {"port": _port(b), "status": "ERROR", "detail": text})
            except OSError as e:
                entries.append({"port": _port(b), "status": "ERROR", "detail": _transport_text(e)})
        st = [e.get("status", "UNKNOWN") for e in entries]
        agg = ("GENERATING" if all(s == "GENERATING" for s in st) else "MIXED" if "GENERATING" in st
               else "IDLE" if all(s == "IDLE" for s in st) else "MIXED")
        return {"status": agg, "backends": entries}

    def pow_stop(self) -> dict:
        if not self.backends:
            return {"status": "OK", "message": "No backends to stop"}
        results, errors = [], []
        for b in self.backends:
            try:
                code, text = _forward(b + POW + "/stop", "POST", {}, 10)
            except OSError as e:
                code, text = 0, _transport_text(e)
            if code == 200:
                results.append({"port": _port(b), "status": "stopped"})
            else:
                errors.append({"port": _port(b), "error": text})
        return {"status": "OK", "results": results, "errors": errors or None}

    def generate(self, body: dict) -> tuple[int, dict]:
        if not self.backends:
            return 503, {"detail": NO_BACKENDS}
        with self.lock:
            b = self.backends[self.rr % len(self.backends)]
            self.rr += 1
        try:
            code, text = _forward(b + POW + "/generate", "POST", _lax(body, GENERATE_FIELDS, self.drop),
                                  self.proxy_timeout_s)
        except OSError as e:  # a timeout: {"detail": ""} (httpx's ReadTimeout has no text)
            return 502, {"detail": _transport_text(e)}
        if code != 200:
            return code, {"detail": text}  # the backend's status, its text as the detail
        answer = json.loads(text)
        if isinstance(answer, dict) and answer.get("status") == "queued":  # §5.2: "{port}:{uuid}" routes polls back
            answer["request_id"] = f"{_port(b)}:{answer['request_id']}"
        return 200, answer

    def gpu_route(self, path: str) -> tuple[int, dict]:
        if path.endswith("/devices"):
            return 200, {"devices": self.gpus, "count": len(self.gpus)}
        if self.driver is None:
            return 503, {"detail": "NVML not initialized. GPU features are not available."}
        return 200, self.driver

    def proxy_v1(self, method: str, path: str) -> tuple[int, object]:
        """/v1/* to a backend (the first: the MLNode picks the least busy); 503 text with none."""
        if not self.backends:
            return 503, NO_BACKEND.encode()
        code, text = _forward(self.backends[0] + path, method, None, 30)
        return code, json.loads(text)

    def generate_result(self, composite: str) -> tuple[int, dict]:
        """GET .../generate/{port}:{uuid}: the poll routed to the backend that queued it."""
        port, sep, rid = urllib.parse.unquote(composite).partition(":")
        if not sep:
            return 400, {"detail": "Invalid request_id format (expected port:uuid)"}
        if not port.strip().lstrip("-").isdigit():
            return 400, {"detail": "Invalid port in request_id"}
        try:  # any port, as the MLNode does: nothing there is a transport error
            code, text = _forward(f"http://127.0.0.1:{int(port)}" + POW + "/generate/" + rid, "GET", None, 10)
        except OSError as e:
            return 502, {"detail": _transport_text(e)}
        if code == 404:
            return 404, {"detail": "Request not found"}
        if code != 200:
            return code, {"detail": text}
        answer = json.loads(text)
        answer["request_id"] = f"{port}:{rid}"
        return 200, answer


class _Handler(BaseHTTPRequestHandler):
    server: MlnodeStub

    def log_message(self, *a):
        pass

    def _send(self, code: int, body) -> None:
        text = isinstance(body, bytes)  # the /v1 proxy's own answers are plain text
        data = body if text else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain" if text else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method: str) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n)) if n else None
        path = self.path.split("?", 1)[0]
        s = self.server
        s.requests.append((method, path, body))
        try:
            if (method, path) == ("POST", "/api/v1/models/status"):
                return self._send(200, s.models_status(body))
            if (method, path) == ("POST", "/api/v1/models/download"):
                return self._send(*s.models_download(body))
            if (method, path) == ("GET", "/api/v1/inference/up/status"):
                return self._send(200, s.up_status())
            if (method, path) == ("POST", "/api/v1/inference/up/async"):
                return self._send(*s.up_async(body))
            if path.startswith("/v1/"):
                return self._send(*s.proxy_v1(method, path))
            if method == "GET" and path in ("/api/v1/gpu/devices", "/api/v1/gpu/driver"):
                return self._send(*s.gpu_route(path))
            if (method, path) == ("POST", "/api/v1/inference/pow/init/generate"):
                return self._send(*s.init_generate(body))
            if (method, path) == ("GET", "/api/v1/inference/pow/status"):
                return self._send(200, s.pow_status())
            if (method, path) == ("POST", "/api/v1/inference/pow/stop"):
                return self._send(200, s.pow_stop())
            if (method, path) == ("POST", "/api/v1/inference/pow/generate"):
                return self._send(*s.generate(body))
            if method == "GET" and path.startswith("/api/v1/inference/pow/generate/"):
                return self._send(*s.generate_result(path.rsplit("/", 1)[1]))
            return self._send(404, {"detail": "Not Found"})
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")
