"""`mlvalidate serve` over loopback: request bodies are read strictly (pydantic) with FastAPI's 422
details, and callbacks are retried with backoff until the receiver accepts them.

The engine is a stand-in that answers unit vectors at once: these tests are about the HTTP layer.
"""

import json
import socket
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

import mlvalidate.server as srv
from mlvalidate.engines.base import EngineResult
from mlvalidate.server import make_server

MODEL = "test/model"
BODY = {"block_hash": "B", "block_height": 7, "public_key": "pk", "node_id": 0, "node_count": 1,
        "params": {"model": MODEL, "seq_len": 16, "k_dim": 12}}


class _UnitEngine:
    def __init__(self, delay: float = 0.0):
        self.calls, self.delay = [], delay  # (nonces, batch_size) per compute()

    def compute(self, nonces, params, batch_size=32, progress=None):
        self.calls.append((list(nonces), batch_size))
        time.sleep(self.delay)
        vecs = np.zeros((len(nonces), params.k_dim), np.float16)
        vecs[:, 0] = 1.0
        return EngineResult(nonces=np.asarray(nonces, np.int64), vectors=vecs, requested=list(nonces),
                            batch_size=batch_size, elapsed_s=0.0)


@pytest.fixture
def server():
    servers = []

    def start(engine=None):
        s = make_server(engine or _UnitEngine(), MODEL)
        threading.Thread(target=s.serve_forever, daemon=True).start()
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def _post(url, path, data: bytes):
    req = urllib.request.Request(url + path, data=data, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _call(url, path, body):
    return _post(url, path, json.dumps(body).encode())


def _errors(body):
    return {tuple(d["loc"]): d["type"] for d in body["detail"]}


# ---- 422: strict types, extra params fields, missing fields, bad JSON -------------------
@pytest.mark.parametrize("bad", [True, "5", 3.0, None])
@pytest.mark.parametrize("path", ["/api/v1/pow/generate", "/api/v1/pow/init/generate"])
def test_batch_size_must_be_an_int(server, bad, path):
    s = server()
    code, body = _call(s.url, path, {**BODY, "nonces": [0, 1], "batch_size": bad, "wait": True})
    assert code == 422 and _errors(body) == {("body", "batch_size"): "int_type"}
    assert set(body["detail"][0]) == {"loc", "msg", "type"} and body["detail"][0]["msg"] == "Input should be a valid integer"
    assert s.service.engine.calls == [] and s.service.status()["status"] == "IDLE"


@pytest.mark.parametrize("bad", [True, "5", 3.0])
def test_every_nonce_must_be_an_int(server, bad):
    s = server()
    code, body = _call(s.url, "/api/v1/pow/generate", {**BODY, "nonces": [0, bad, 2], "wait": True})
    assert code == 422 and _errors(body) == {("body", "nonces", 1): "int_type"}


def test_other_strict_fields(server):
    s = server()
    bad = {**BODY, "nonces": [0], "block_height": "7", "public_key": 5, "wait": 1, "poc_stronger_rng": "false",
           "params": {"model": MODEL, "seq_len": 16.0, "k_dim": False}}
    code, body = _call(s.url, "/api/v1/pow/generate", bad)
    assert code == 422 and _errors(body) == {
        ("body", "block_height"): "int_type", ("body", "public_key"): "string_type", ("body", "wait"): "bool_type",
        ("body", "poc_stronger_rng"): "bool_type", ("body", "params", "seq_len"): "int_type",
        ("body", "params", "k_dim"): "int_type"}


def test_batch_size_must_be_positive(server):
    s = server()
    for path in ("/api/v1/pow/generate", "/api/v1/pow/init/generate"):
        code, body = _call(s.url, path, {**BODY, "nonces": [0], "batch_size": 0})
        assert code == 422 and _errors(body) == {("body", "batch_size"): "greater_than"}


def test_an_extra_params_field_is_forbidden_elsewhere_ignored(server):
    s = server()
    code, body = _call(s.url, "/api/v1/pow/generate", {**BODY, "nonces": [0], "params": {**BODY["params"], "x": 1}})
    assert code == 422 and _errors(body) == {("body", "params", "x"): "extra_forbidden"}
    assert body["detail"][0]["msg"] == "Extra inputs are not permitted"
    # the request body and the stat_test object ignore unknown fields, as the node's models do
    code, body = _call(s.url, "/api/v1/pow/generate", {**BODY, "nonces": [0], "wait": True, "extra": 1})
    assert code == 200 and [a["nonce"] for a in body["artifacts"]] == [0]


def test_missing_required_fields(server):
    s = server()
    code, body = _call(s.url, "/api/v1/pow/generate", {k: v for k, v in BODY.items() if k != "node_count"})
    assert code == 422 and _errors(body) == {("body", "node_count"): "missing", ("body", "nonces"): "missing"}
    assert body["detail"][0]["msg"] == "Field required"
    code, body = _call(s.url, "/api/v1/pow/init/generate", {**BODY, "params": {"model": MODEL}})
    assert code == 422 and _errors(body) == {("body", "params", "seq_len"): "missing"}
    code, body = _call(s.url, "/api/v1/pow/generate", {**BODY, "nonces": [0], "validation": {"artifacts": [{"nonce": 0}]}})
    assert code == 422 and _errors(body) == {("body", "validation", "artifacts", 0, "vector_b64"): "missing"}


@pytest.mark.parametrize("raw", [b"{not json", b'{"nonces": [1,', b"", b"[1, 2]", b"null"])
def test_a_body_that_is_not_a_json_object_is_422(server, raw):
    s = server()
    code, body = _post(s.url, "/api/v1/pow/generate", raw)
    assert code == 422 and body["detail"][0]["loc"] == ["body"]
    assert body["detail"][0]["type"] in ("json_invalid", "model_type")


def test_stat_test_numbers_and_node_defaults(server):
    s = server()
    code, body = _call(s.url, "/api/v1/pow/generate", {**BODY, "nonces": [0], "stat_test": {"p_mismatch": True}})
    assert code == 422 and _errors(body) == {("body", "stat_test", "p_mismatch"): "float_type"}
    vec = "ADwAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"  # (1, 0, ..., 0) in fp16: what the stand-in computes
    far = "AAAAPAAAAAAAAAAAAAAAAAAAAAAAAAAA"  # (0, 1, 0, ...): L2 1.41
    val = {"artifacts": [{"nonce": 0, "vector_b64": vec}, {"nonce": 1, "vector_b64": far}]}
    # an int is a number; unspecified fields take the node's defaults (p_mismatch 0.001)
    code, v = _call(s.url, "/api/v1/pow/generate", {**BODY, "nonces": [0, 1], "wait": True, "validation": val,
                                                    "stat_test": {"dist_threshold": 2}})
    assert code == 200 and v["n_mismatch"] == 0
    code, v = _call(s.url, "/api/v1/pow/generate", {**BODY, "nonces": [0, 1], "wait": True, "validation": val,
                                                    "stat_test": None})
    assert code == 200 and v["mismatch_nonces"] == [1] and v["fraud_detected"] is True


def test_defaults_and_nulls(server, monkeypatch):
    monkeypatch.setattr(srv, "BATCH_SIZE_DEFAULT", 2)  # read per request
    s = server()
    code, body = _call(s.url, "/api/v1/pow/generate", {**BODY, "nonces": [5, 3, 1, 4, 2], "wait": True, "url": None,
                                                       "validation": None, "params": {"model": MODEL, "seq_len": 16}})
    assert code == 200 and [a["nonce"] for a in body["artifacts"]] == [5, 3, 1, 4, 2]
    assert body["encoding"]["k_dim"] == 12
    assert s.service.engine.calls == [([5, 3], 2), ([1, 4], 2), ([2], 2)]


# ---- callbacks: retried with backoff until accepted --------------------------------------
class _Receiver:
    """A callback receiver that answers `fail` 503s, then 200s."""

    def __init__(self, fail: int):
        self.posts, self.fail, self.accepted = [], fail, threading.Event()
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.posts.append((time.monotonic(), self.path, body))
                ok = len(outer.posts) > outer.fail
                self.send_response(200 if ok else 503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if ok:
                    outer.accepted.set()

            def log_message(self, *a):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.http.server_port}"

    def close(self):
        self.http.shutdown()
        self.http.server_close()


def test_a_callback_that_fails_twice_is_delivered_on_the_third_try(server, monkeypatch):
    monkeypatch.setattr(srv, "CALLBACK_BACKOFF_SEC", (0.2, 0.3))
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # loopback callbacks never go through a proxy
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    rx = _Receiver(fail=2)
    try:
        s = server()
        code, q = _call(s.url, "/api/v1/pow/generate", {**BODY, "nonces": [3, 1], "url": rx.url + "/"})
        assert code == 200 and q["status"] == "queued"
        assert rx.accepted.wait(30)
    finally:
        rx.close()
    assert len(rx.posts) == 3 and {p for _, p, _ in rx.posts} == {"/generated"}
    t = [at for at, _, _ in rx.posts]
    assert t[1] - t[0] >= 0.2 and t[2] - t[1] >= 0.3  # backoff doubles, capped at the second value
    body = rx.posts[-1][2]
    assert body["request_id"] == q["request_id"] and [a["nonce"] for a in body["artifacts"]] == [3, 1]
    assert {k: body[k] for k in ("block_hash", "block_height", "public_key", "node_id")} == {
        "block_hash": "B", "block_height": 7, "public_key": "pk", "node_id": 0}


def test_a_callback_is_dropped_after_the_retry_limit_and_the_queue_goes_on(server, monkeypatch):
    """Refused, failing and malformed callback URLs never stop the /generate queue."""
    monkeypatch.setattr(srv, "CALLBACK_BACKOFF_SEC", (0.01, 0.02))
    monkeypatch.setattr(srv, "CALLBACK_MAX_RETRIES", 3)
    rx = _Receiver(fail=10**6)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        s = server()
        _call(s.url, "/api/v1/pow/generate", {**BODY, "nonces": [1], "url": rx.url})
        _call(s.url, "/api/v1/pow/generate", {**BODY, "nonces": [2], "url": refused})
        for bad_url in ("localhost:8011", "ftp://host/x", "http://[::1"):  # never deliverable: dropped at once
            _call(s.url, "/api/v1/pow/generate", {**BODY, "nonces": [4], "url": bad_url})
        code, q = _call(s.url, "/api/v1/pow/generate", {**BODY, "nonces": [3]})
        deadline = time.monotonic() + 120  # the jobs before it and their callbacks' retries, on a busy machine
        while True:
            res = json.loads(urllib.request.urlopen(f"{s.url}/api/v1/pow/generate/{q['request_id']}", timeout=30).read())
            if res["status"] == "completed" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert res["status"] == "completed" and [a["nonce"] for a in res["artifacts"]] == [3]
    finally:
        rx.close()
    assert len(rx.posts) == 3  # CALLBACK_MAX_RETRIES attempts in all, then dropped


def test_init_generate_callbacks_are_retried_too(server, monkeypatch):
    monkeypatch.setattr(srv, "CALLBACK_BACKOFF_SEC", (0.05, 0.05))
    monkeypatch.setattr(srv, "CALLBACK_INTERVAL_SEC", 0.0)
    rx = _Receiver(fail=2)
    try:
        s = server(_UnitEngine(delay=0.1))  # one callback thread per chunk: keep them few
        code, _ = _call(s.url, "/api/v1/pow/init/generate", {**BODY, "batch_size": 2, "url": rx.url})
        assert code == 200
        assert rx.accepted.wait(30)
        _call(s.url, "/api/v1/pow/stop", {})
    finally:
        rx.close()
    accepted = [b for _, _, b in rx.posts][2]
    assert accepted["encoding"] == {"dtype": "f16", "k_dim": 12, "endian": "le"}
    assert all(a["vector_b64"] == "ADwAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" for a in accepted["artifacts"])


def test_every_route_reads_its_body_so_a_keep_alive_connection_goes_on(server):
    """Gonka's MLNode POSTs `{}` to each backend's /pow/stop over one pooled keep-alive client:
    a body left unread would be parsed as the start of the next request on that connection
    (`{}GET ...`, answered 501). Every route, the ones that ignore their body included."""
    import httpx

    s = server()
    with httpx.Client(base_url=s.url, timeout=30, trust_env=False) as c:
        for method, path in [("POST", "/api/v1/pow/stop"), ("GET", "/api/v1/pow/status"), ("GET", "/health"),
                             ("POST", "/v1/completions"), ("POST", "/no/such/route"), ("GET", "/v1/models")]:
            r = c.request(method, path, json={})
            assert r.status_code in (200, 404, 501) and r.json() is not None, (method, path, r.text)
            nxt = c.get("/api/v1/pow/status")  # the next request, on the same pooled connection
            assert nxt.status_code == 200 and nxt.json()["status"] == "IDLE", (method, path, nxt.text)
        r = c.post("/api/v1/pow/generate", json={**BODY, "nonces": [1, 2], "wait": True})
        assert r.status_code == 200 and len(r.json()["artifacts"]) == 2
        assert c.get("/api/v1/pow/status").status_code == 200
        # chunked bodies: the MLNode's /v1 proxy streams every request's body, a GET's empty one too
        assert c.request("GET", "/v1/models", content=iter([b""])).status_code == 200
        assert c.get("/api/v1/pow/status").status_code == 200
        raw = json.dumps({**BODY, "nonces": [3], "wait": True}).encode()
        r = c.post("/api/v1/pow/generate", content=iter([raw[:7], raw[7:]]))
        assert r.status_code == 200 and [a["nonce"] for a in r.json()["artifacts"]] == [3]
        assert c.get("/api/v1/pow/status").status_code == 200
