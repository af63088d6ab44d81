"""`mlvalidate serve`: the Gonka vLLM PoC API (spec §5.1) over the reference engine.

For dry runs and tests: a client written for a Gonka vLLM node works against it unchanged —
same paths, fields, status codes, the /generate queue, init/generate + status + stop with the
NonceIterator layout — plus vLLM's /health and /v1/models. Standard library HTTP server,
one thread per connection; one PoC computation at a time (the engine lock). Request bodies are
pydantic models (422 details as FastAPI gives them); callbacks are posted with httpx.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .engines.base import PocParams
from .poc.codec import ENCODING, encode_vectors
from .poc.stats import SERVER_DEFAULTS, StatTest, node_side_validation

BATCH_SIZE_DEFAULT = int(os.environ.get("POC_BATCH_SIZE_DEFAULT", "32"))
MAX_QUEUED_NONCES = int(os.environ.get("POC_MAX_QUEUED_NONCES", "100000"))
RESULT_TTL_SEC = float(os.environ.get("POC_GENERATE_RESULT_TTL_SEC", "300"))
CALLBACK_INTERVAL_SEC = float(os.environ.get("POC_CALLBACK_INTERVAL_SEC", "5"))
CALLBACK_MAX_RETRIES = int(os.environ.get("POC_CALLBACK_MAX_RETRIES", "10"))
CALLBACK_BACKOFF_SEC = (1.0, 30.0)  # first wait after a failed callback, doubling up to the second


class ApiError(Exception):
    def __init__(self, status: int, detail):
        super().__init__(str(detail))
        self.status, self.detail = status, detail


# ---- request bodies (§5.1): strict pydantic models; errors become FastAPI's 422 details ----
class _Strict(BaseModel):
    model_config = ConfigDict(strict=True)  # `true` is not an int, "5" is not an int, 3.0 is not an int


class PocParamsModel(_Strict):
    model_config = ConfigDict(strict=True, extra="forbid")  # an unknown params field: 422 (§5.1)
    model: str
    seq_len: int
    k_dim: int = 12


class ArtifactModel(_Strict):
    nonce: int
    vector_b64: str


class ValidationModel(_Strict):
    artifacts: list[ArtifactModel]


class StatTestModel(_Strict):  # the node's defaults (§4), not a reference's
    dist_threshold: float = SERVER_DEFAULTS.dist_threshold
    p_mismatch: float = SERVER_DEFAULTS.p_mismatch
    fraud_threshold: float = SERVER_DEFAULTS.fraud_threshold


class _PocRequest(_Strict):
    block_hash: str
    block_height: int
    public_key: str
    node_id: int
    node_count: int
    params: PocParamsModel
    batch_size: int = Field(default_factory=lambda: BATCH_SIZE_DEFAULT, gt=0)  # read per request
    url: str | None = None
    poc_stronger_rng: bool = False


class InitGenerateRequest(_PocRequest):
    group_id: int = 0
    n_groups: int = 1


class GenerateRequest(_PocRequest):
    nonces: list[int]
    wait: bool = False
    validation: ValidationModel | None = None
    stat_test: StatTestModel | None = None


def parse_body(raw: bytes, model: type[BaseModel]) -> dict:
    """The request as a plain dict (defaults filled in), or ApiError 422 with pydantic's errors."""
    try:
        return model.model_validate_json(raw).model_dump()
    except ValidationError as e:
        raise ApiError(422, [{"loc": ["body", *d["loc"]], "msg": d["msg"], "type": d["type"]}
                             for d in e.errors(include_url=False)]) from None


# ---- the PoC state of one server ----
def nonce_iterator(node_id: int, node_count: int, group_id: int, n_groups: int):
    """x-th value: node_id + group_id*node_count + x*(n_groups*node_count)."""
    return (node_id + group_id * node_count + x * (n_groups * node_count) for x in itertools.count())


@dataclass
class _Job:
    request_id: str
    req: dict
    status: str = "queued"
    result: dict | None = None
    error: str | None = None
    finished_at: float | None = None


class PocService:
    def __init__(self, engine, model_id: str, served_names: list[str] | None = None):
        self.engine = engine
        self.model_id = model_id
        self.served_names = list(dict.fromkeys([model_id, *(served_names or [])]))
        self.engine_lock = threading.Lock()
        self.state_lock = threading.Lock()
        self.loop: dict | None = None  # the init/generate loop's config, stats and thread
        self.jobs: OrderedDict[str, _Job] = OrderedDict()
        self.queue_cv = threading.Condition(self.state_lock)
        self.closed = False
        self.http = httpx.Client(timeout=30.0, trust_env=False)  # callbacks; no proxy from the environment
        self.worker = threading.Thread(target=self._queue_worker, name="poc-generate-queue", daemon=True)
        self.worker.start()

    # ---- helpers ----
    def check_params(self, params: dict) -> None:
        if params["model"] not in self.served_names:
            raise ApiError(409, {"error": "params mismatch", "requested": params,
                                 "deployed": {"model": self.served_names, "seq_len": None, "k_dim": None}})

    def compute(self, req: dict, nonces: list[int]) -> tuple[list[int], np.ndarray]:
        p = req["params"]
        params = PocParams(block_hash=req["block_hash"], public_key=req["public_key"], seq_len=p["seq_len"],
                           k_dim=p["k_dim"], block_height=req["block_height"], node_id=req["node_id"],
                           node_count=req["node_count"], stronger_rng=req["poc_stronger_rng"])
        with self.engine_lock:
            res = self.engine.compute(nonces, params, batch_size=req["batch_size"])
        return res.nonces.tolist(), res.vectors

    def generating(self) -> bool:
        return self.loop is not None and not self.loop["stop"].is_set()

    # ---- /generate ----
    def run_generate(self, req: dict) -> dict:
        """Chunks in request order; returns the artifacts, or the validation result (§4)."""
        nonces = req["nonces"]
        got_n, got_v = [], []
        bs = req["batch_size"]
        for a in range(0, len(nonces), bs):
            n, v = self.compute(req, nonces[a : a + bs])
            got_n += n
            got_v.append(v)
        vecs = np.concatenate(got_v) if got_v else np.zeros((0, req["params"]["k_dim"]), np.float16)
        rid = req.get("_request_id") or str(uuid.uuid4())
        if req.get("validation") is None:
            arts = [{"nonce": int(n), "vector_b64": s} for n, s in zip(got_n, encode_vectors(vecs))]
            return {"status": "completed", "request_id": rid, "artifacts": arts,
                    "encoding": {**ENCODING, "k_dim": req["params"]["k_dim"]}}
        received = {a["nonce"]: a["vector_b64"] for a in req["validation"]["artifacts"]}  # last one wins
        st = StatTest(**(req.get("stat_test") or SERVER_DEFAULTS.as_dict()))
        out = node_side_validation(dict(zip(got_n, vecs)), received, len(nonces), st)
        return {"status": "completed", "request_id": rid, **out}

    def validate_validation(self, req: dict) -> None:
        val = req.get("validation")
        if val is not None and {a["nonce"] for a in val["artifacts"]} != set(req["nonces"]):
            raise ApiError(400, "validation artifacts nonces must match the requested nonces")

    def enqueue(self, req: dict) -> dict:
        with self.state_lock:
            self._expire()
            queued = sum(len(j.req["nonces"]) for j in self.jobs.values() if j.status == "queued")
            if queued + len(req["nonces"]) > MAX_QUEUED_NONCES:
                raise ApiError(429, f"too many queued nonces ({queued} + {len(req['nonces'])} > {MAX_QUEUED_NONCES})")
            rid = str(uuid.uuid4())
            req["_request_id"] = rid
            self.jobs[rid] = _Job(rid, req)
            self.queue_cv.notify_all()
        return {"status": "queued", "request_id": rid, "queued_count": len(req["nonces"])}

    def job_status(self, rid: str) -> dict:
        with self.state_lock:
            self._expire()
            job = self.jobs.get(rid)
            if job is None:
                raise ApiError(404, f"unknown request_id {rid}")
            if job.status == "completed":
                return {**job.result, "status": "completed", "request_id": rid}
            if job.status == "failed":
                return {"status": "failed", "request_id": rid, "error": job.error}
            return {"status": job.status, "request_id": rid}

    def _expire(self) -> None:
        now = time.monotonic()
        for rid in [r for r, j in self.jobs.items() if j.finished_at and now - j.finished_at > RESULT_TTL_SEC]:
            del self.jobs[rid]

    def _queue_worker(self) -> None:
        while True:
            with self.state_lock:
                while not self.closed and (self.generating() or not any(j.status == "queued" for j in self.jobs.values())):
                    self.queue_cv.wait(timeout=0.5)
                if self.closed:
                    return
                job = next(j for j in self.jobs.values() if j.status == "queued")
                job.status = "running"
            try:
                result = self.run_generate(job.req)
                with self.state_lock:
                    job.result, job.status = result, "completed"
            except Exception as e:  # the job fails, the server lives on
                with self.state_lock:
                    job.error, job.status = f"{type(e).__name__}: {e}", "failed"
            job.finished_at = time.monotonic()
            if job.req.get("url") and job.status == "completed":
                path = "validated" if job.req.get("validation") is not None else "generated"
                body = {k: v for k, v in job.result.items() if k != "status"}
                body.update({k: job.req[k] for k in ("block_hash", "block_height", "public_key", "node_id")})
                self.post_callback(job.req["url"].rstrip("/") + "/" + path, body)

    # ---- init/generate loop ----
    def start_loop(self, req: dict) -> None:
        with self.state_lock:
            if self.generating():
                raise ApiError(409, "Already generating")
            cfg = {k: req[k] for k in ("block_hash", "block_height", "public_key", "node_id", "node_count",
                                       "group_id", "n_groups")}
            cfg.update(seq_len=req["params"]["seq_len"], k_dim=req["params"]["k_dim"])
            self.loop = {"config": cfg, "stop": threading.Event(), "total": 0, "start": time.monotonic(), "buffer": []}
            self.loop["thread"] = threading.Thread(target=self._generate_loop, args=(req, self.loop),
                                                   name="poc-generate-loop", daemon=True)
            self.loop["thread"].start()

    def _generate_loop(self, req: dict, loop: dict) -> None:
        it = nonce_iterator(req["node_id"], req["node_count"], req["group_id"], req["n_groups"])
        last_cb = time.monotonic()
        while not loop["stop"].is_set():
            chunk = [next(it) for _ in range(req["batch_size"])]
            try:
                n, v = self.compute(req, chunk)
            except Exception:  # a failed chunk is retried, like the node's loop
                time.sleep(0.5)
                continue
            loop["total"] += len(chunk)  # counts submitted nonces (NaN-dropped ones too)
            if req.get("url"):
                loop["buffer"] += [{"nonce": int(a), "vector_b64": s} for a, s in zip(n, encode_vectors(v))]
                if time.monotonic() - last_cb >= CALLBACK_INTERVAL_SEC and loop["buffer"]:
                    arts, loop["buffer"] = loop["buffer"], []
                    body = {k: req[k] for k in ("public_key", "block_hash", "block_height", "node_id")}
                    threading.Thread(target=self.post_callback, daemon=True,
                                     args=(req["url"].rstrip("/") + "/generated",
                                           {**body, "artifacts": arts, "encoding": ENCODING})).start()
                    last_cb = time.monotonic()

    def status(self) -> dict:
        loop = self.loop
        if loop is None or loop["stop"].is_set():
            return {"status": "IDLE", "config": None, "stats": None}
        el = time.monotonic() - loop["start"]
        return {"status": "GENERATING", "config": loop["config"],
                "stats": {"total_processed": loop["total"], "nonces_per_second": loop["total"] / el if el > 0 else 0.0}}

    def stop(self) -> None:
        with self.state_lock:
            if self.loop is not None:
                self.loop["stop"].set()
            self.jobs.clear()  # stop also wipes queued /generate jobs and their results
            self.queue_cv.notify_all()

    def post_callback(self, url: str, body: dict) -> bool:
        """POST a callback; a connection error or a non-2xx answer is retried after 1, 2, 4 … 30 s
        (CALLBACK_BACKOFF_SEC), CALLBACK_MAX_RETRIES attempts in all, then dropped (§5.1)."""
        delay, cap = CALLBACK_BACKOFF_SEC
        for attempt in range(CALLBACK_MAX_RETRIES):
            if attempt:
                time.sleep(delay)
                delay = min(delay * 2, cap)
            if self.closed:
                return False
            try:
                self.http.post(url, json=body).raise_for_status()
                return True
            except (httpx.InvalidURL, httpx.UnsupportedProtocol):  # no retry can help: dropped at once
                return False
            except (httpx.HTTPError, RuntimeError):  # RuntimeError: the client was closed meanwhile
                continue
        return False

    def close(self) -> None:
        self.stop()
        with self.state_lock:
            self.closed = True
            self.queue_cv.notify_all()
        self.http.close()


# ---- HTTP ----
class _Handler(BaseHTTPRequestHandler):
    service: PocService  # set on the subclass made by make_server
    protocol_version = "HTTP/1.1"
    # headers and body go out in two writes: without TCP_NODELAY the body waits for the client's
    # delayed ACK of the headers, ~40 ms per answer on a keep-alive connection (measured)
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):  # quiet; the CLI prints its own lines
        if os.environ.get("MLVALIDATE_SERVER_LOG"):
            super().log_message(fmt, *args)

    def _send(self, status: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        """The whole body, also a chunked one (the MLNode's /v1 proxy streams even a GET's empty body)."""
        try:
            if "chunked" not in (self.headers.get("Transfer-Encoding") or "").lower():
                return self.rfile.read(max(0, int(self.headers.get("Content-Length") or 0)))
            out = b""
            while size := int(self.rfile.readline(100).split(b";")[0] or b"0", 16):
                out += self.rfile.read(size + 2)[:-2]  # the chunk and its CRLF
            while self.rfile.readline(8192).strip():  # trailer fields, up to the empty line
                pass
            return out
        except ValueError:
            self.close_connection = True
            raise ApiError(400, "malformed request body (Content-Length or chunk size)") from None

    def _dispatch(self, method: str) -> None:
        svc = self.service
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        try:
            raw = self._body()  # every route reads it: left unread, it would start the next request here
            if method == "GET" and path == "/health":
                return self._send(200, {})
            if method == "GET" and path == "/v1/models":
                return self._send(200, {"object": "list", "data": [
                    {"id": name, "object": "model", "owned_by": "mlvalidate", "root": svc.model_id}
                    for name in svc.served_names]})
            if path in ("/v1/chat/completions", "/v1/completions", "/v1/responses"):
                if svc.generating():
                    raise ApiError(503, "PoC generation is active; inference is paused until it stops")
                raise ApiError(501, "the mlvalidate reference server computes PoC vectors only")
            if method == "POST" and path == "/api/v1/pow/init/generate":
                req = parse_body(raw, InitGenerateRequest)
                svc.check_params(req["params"])
                svc.start_loop(req)
                return self._send(200, {"status": "OK", "pow_status": {"status": "GENERATING"}})
            if method == "POST" and path == "/api/v1/pow/generate":
                req = parse_body(raw, GenerateRequest)
                svc.check_params(req["params"])
                svc.validate_validation(req)
                if not req["wait"]:
                    return self._send(200, svc.enqueue(req))
                while svc.generating():  # wait=true blocks while a generation loop runs
                    time.sleep(0.1)
                try:
                    return self._send(200, svc.run_generate(req))
                except ValueError as e:  # undecodable validation vectors, as on the node
                    raise ApiError(500, str(e)) from None
                except Exception as e:  # the engine failed: the node answers 503 with the error
                    raise ApiError(503, f"{type(e).__name__}: {e}") from None
            m = re.fullmatch(r"/api/v1/pow/generate/([0-9a-fA-F-]+)", path)
            if method == "GET" and m:
                return self._send(200, svc.job_status(m.group(1)))
            if method == "GET" and path == "/api/v1/pow/status":
                return self._send(200, svc.status())
            if method == "POST" and path == "/api/v1/pow/stop":
                svc.stop()
                return self._send(200, {"status": "OK", "pow_status": {"status": "STOPPED"}})
            raise ApiError(404, "Not Found")
        except ApiError as e:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client left first
                self._send(e.status, {"detail": e.detail})
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")


class PocServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, service: PocService):
        handler = type("Handler", (_Handler,), {"service": service})
        super().__init__(addr, handler)
        self.service = service

    @property
    def url(self) -> str:
        return "http://{}:{}".format(*self.server_address[:2])

    def shutdown(self) -> None:
        self.service.close()
        super().shutdown()


def make_server(engine, model_id: str, host: str = "127.0.0.1", port: int = 0,
                served_names: list[str] | None = None) -> PocServer:
    return PocServer((host, port), PocService(engine, model_id, served_names))
