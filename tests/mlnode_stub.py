"""A small MLNode-shaped server for tests (spec §5.2), standard library only.

It proxies `/api/v1/inference/pow/*` to real PoC backends (`mlvalidate.server.make_server`)
the way an MLNode does: `/generate` round-robin to one backend with a proxy timeout (502 when
it runs out, the backend's status and text re-raised otherwise; a queued request's id becomes
"{port}:{uuid}" and its poll is routed back to that backend), `init/generate` fanned out
with group_id = i and n_groups = #backends (sorted by port), `status` aggregated
(GENERATING | MIXED | IDLE) with one entry per backend port, `stop` fanned out. Model download
and deployment are small state machines advanced by the status polls:

  models/status:  NOT_FOUND -(download)-> DOWNLOADING -(download_polls polls)-> download_result
  up/status:      not running -(up/async)-> starting -(deploy_polls polls)-> running | failed

Every request is recorded in `requests` as (method, path, body) for assertions.
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

POW = "/api/v1/pow"  # the backends' PoC routes


def _port(url: str) -> int:
    return urlparse(url).port


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
                 deploy_result: str = "running", proxy_timeout_s: float = 60.0):
        self.backends = sorted(backends, key=_port)
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, object]] = []
        self.fanout: list[list[dict]] = []  # the bodies each init/generate sent to the backends
        self.rr = 0
        self.proxy_timeout_s = proxy_timeout_s
        self.model_status, self.download_polls, self.download_result = model_status, download_polls, download_result
        self._download_left, self._download_failed = 0, False
        self.up = {"is_running": running, "is_starting": False, "status": "running" if running else "not_started",
                   "elapsed_seconds": 0.0, "error": None}
        self.deploy_polls, self.deploy_result = deploy_polls, deploy_result
        self._deploy_left = 0
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
            if self.up["is_starting"]:
                self._deploy_left -= 1
                self.up["elapsed_seconds"] += 1.0
                if self._deploy_left <= 0:
                    ok = self.deploy_result == "running"
                    self.up.update(is_starting=False, is_running=ok, status=self.deploy_result,
                                   error=None if ok else "vLLM exited with code 1: CUDA out of memory")
            return dict(self.up)

    def up_async(self, body: dict) -> tuple[int, dict]:
        with self.lock:
            if self.up["is_running"] or self.up["is_starting"]:
                return 409, {"detail": "inference is already running or starting"}
            self.up.update(is_starting=True, status="starting", elapsed_seconds=0.0, error=None)
            self._deploy_left = self.deploy_polls
        return 200, {"status": "starting", "message": f"starting {body.get('model')}"}

    # ---- PoC proxy ----
    def init_generate(self, body: dict) -> tuple[int, dict]:
        n = len(self.backends)
        if n == 0:
            return 503, {"detail": "No backends available"}
        results, errors, sent = [], [], []
        for i, b in enumerate(self.backends):
            fwd = {**body, "group_id": i, "n_groups": n}
            sent.append(fwd)
            try:
                code, text = _forward(b + POW + "/init/generate", "POST", fwd, 30)
            except OSError as e:
                code, text = 0, str(e)
            if code == 200:
                results.append({"port": _port(b), "status": "OK"})
            else:
                errors.append({"port": _port(b), "status": code, "error": text})
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
                               else {"port": _port(b), "status": "ERROR", "error": text})
            except OSError as e:
                entries.append({"port": _port(b), "status": "ERROR", "error": str(e)})
        gen = sum(e["status"] == "GENERATING" for e in entries)
        agg = "GENERATING" if gen == len(entries) else "MIXED" if gen else "IDLE"
        return {"status": agg, "backends": entries}

    def pow_stop(self) -> dict:
        results, errors = [], []
        for b in self.backends:
            try:
                _forward(b + POW + "/stop", "POST", {}, 10)
                results.append({"port": _port(b), "status": "stopped"})
            except OSError as e:
                errors.append({"port": _port(b), "error": str(e)})
        return {"status": "OK", "results": results, "errors": errors or None}

    def generate(self, body: dict) -> tuple[int, dict]:
        if not self.backends:
            return 503, {"detail": "No backends available"}
        with self.lock:
            b = self.backends[self.rr % len(self.backends)]
            self.rr += 1
        try:
            code, text = _forward(b + POW + "/generate", "POST", body, self.proxy_timeout_s)
        except (socket.timeout, TimeoutError):
            return 502, {"detail": f"Request to backend {_port(b)} timed out"}
        except OSError as e:
            return 502, {"detail": f"Backend {_port(b)} unreachable: {e}"}
        if code != 200:
            return code, {"detail": text}  # the backend's status, its text as the detail
        answer = json.loads(text)
        if isinstance(answer, dict) and answer.get("status") == "queued":  # §5.2: "{port}:{uuid}" routes polls back
            answer["request_id"] = f"{_port(b)}:{answer['request_id']}"
        return 200, answer

    def generate_result(self, composite: str) -> tuple[int, dict]:
        """GET .../generate/{port}:{uuid}: the poll routed to the backend that queued it."""
        port, sep, rid = urllib.parse.unquote(composite).partition(":")
        if not sep or not port.isdigit():
            return 400, {"detail": "Invalid request_id format (expected port:uuid)"}
        b = next((b for b in self.backends if _port(b) == int(port)), None)
        if b is None:
            return 502, {"detail": f"no backend on port {port}"}
        code, text = _forward(b + POW + "/generate/" + rid, "GET", None, 10)
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
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
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
            if path.startswith("/api/v1/inference/pow/") and isinstance(body, dict) and (
                    "group_id" in body or "n_groups" in body):
                return self._send(422, {"detail": [{"loc": ["body", "group_id"], "msg": "the MLNode assigns groups",
                                                    "type": "extra_forbidden"}]})
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
