"""A hostile node for tests: a loopback HTTP proxy in front of a real `mlvalidate serve`.

Every request is forwarded to the real server; a scenario may rewrite the JSON answer of a
route, answer in its place, or take over the connection (hang, trickle, close half-way,
send a huge body). Vectors come back either in a `wait: true` answer to POST /generate or,
for a queued request, in the completed answer to GET /generate/{id}: both are handed to the
scenario's `answer` as a /generate answer with the request that asked for them. The proxy
keeps every such answer it sent, so a test can judge the harness's verdict from what the
node really said, independently of the harness's code.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

GENERATE = "/api/v1/pow/generate"
INIT = "/api/v1/pow/init/generate"
STATUS = "/api/v1/pow/status"
MODELS = "/v1/models"


class Conn:
    """What a scenario may do with one request's connection."""

    def __init__(self, handler: BaseHTTPRequestHandler, proxy: "FaultProxy"):
        self.h, self.proxy = handler, proxy

    def send(self, status: int, body, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
        self.h.send_response(status)
        self.h.send_header("Content-Type", content_type)
        self.h.send_header("Content-Length", str(len(data)))
        self.h.end_headers()
        self.h.wfile.write(data)
        self.h.wfile.flush()

    def hang(self) -> None:
        """Accept the request and never answer (until the proxy closes)."""
        self.proxy.closing.wait(600)
        self.h.close_connection = True

    def trickle(self, every_s: float = 0.5) -> None:
        """Headers, then one byte of a long body every `every_s`."""
        self.h.send_response(200)
        self.h.send_header("Content-Type", "application/json")
        self.h.send_header("Content-Length", "100000")
        self.h.end_headers()
        while not self.proxy.closing.wait(every_s):
            try:
                self.h.wfile.write(b" ")
                self.h.wfile.flush()
            except OSError:
                break
        self.h.close_connection = True

    def truncate(self, body) -> None:
        """Promise a longer body than is sent, then close the connection."""
        data = json.dumps(body).encode()
        self.h.send_response(200)
        self.h.send_header("Content-Type", "application/json")
        self.h.send_header("Content-Length", str(len(data) + 500))
        self.h.end_headers()
        self.h.wfile.write(data[: len(data) // 2])
        self.h.wfile.flush()
        self.h.close_connection = True

    def close(self) -> None:
        """Close the connection without any answer."""
        self.h.close_connection = True

    def huge(self, megabytes: int = 200) -> None:
        self.h.send_response(200)
        self.h.send_header("Content-Type", "application/json")
        self.h.send_header("Content-Length", str(megabytes * 2**20))
        self.h.end_headers()
        block = b"[" * 2**20
        try:
            for _ in range(megabytes):
                if self.proxy.closing.is_set():
                    break
                self.h.wfile.write(block)
        except OSError:
            pass
        self.h.close_connection = True


class Scenario:
    """Override what you need. `route(conn, method, path, request)` may answer in place of the
    node (return True); `answer(path, request, status, body)` rewrites a forwarded JSON answer
    and returns (status, body)."""

    def route(self, conn: Conn, method: str, path: str, request) -> bool:
        return False

    def answer(self, path: str, request, status: int, body):
        return status, body


class FaultProxy:
    def __init__(self, upstream: str, scenario: Scenario | None = None):
        self.upstream = upstream.rstrip("/")
        self.scenario = scenario or Scenario()
        self.closing = threading.Event()
        self.sent: list[tuple[list[int], object]] = []  # (nonces asked, the /generate answer body sent)
        self.queued: dict[str, dict] = {}  # request_id -> the queued /generate request
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.client = httpx.Client(trust_env=False, timeout=120)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # no 40 ms delayed-ACK stall per answer

            def log_message(self, *a):
                pass

            def do_GET(self):
                proxy.handle(self, "GET")

            def do_POST(self):
                proxy.handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        n = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(n) if n else b""
        try:
            request = json.loads(raw) if raw else None
        except ValueError:
            request = None
        path = h.path.split("?", 1)[0]
        with self.lock:
            self.calls.append((method, path))
        conn = Conn(h, self)
        try:
            if self.scenario.route(conn, method, path, request):
                return
            r = self.client.request(method, self.upstream + h.path, content=raw or None,
                                    headers={"Content-Type": "application/json"} if raw else {})
            try:
                body = r.json()
            except ValueError:
                body = r.text
            status = r.status_code
            if method == "POST" and path == GENERATE and isinstance(body, dict) and body.get("status") == "queued":
                with self.lock:
                    self.queued[str(body.get("request_id"))] = request
            asked = request
            if method == "GET" and path.startswith(GENERATE + "/") and isinstance(body, dict) and "artifacts" in body:
                with self.lock:
                    asked = self.queued.get(str(body.get("request_id")))
                path = GENERATE  # the vectors of a queued request: judged like a wait=true answer
            status, body = self.scenario.answer(path, asked, status, body)
            acknowledged = method == "POST" and isinstance(body, dict) and body.get("status") == "queued"
            if path == GENERATE and isinstance(asked, dict) and not acknowledged:
                with self.lock:
                    self.sent.append((list(asked.get("nonces") or []), body))
            conn.send(status, body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()
        self.client.close()
