"""What the two HTTP PoC APIs share: routes, request bodies, answers, one-line explanations.

A Gonka vLLM server serves PoC at `/api/v1/pow/*` (spec §5.1). A host's MLNode serves the
same calls at `/api/v1/inference/pow/*` (spec §5.2) and proxies them to its vLLM replicas:
`/generate` round-robin to one replica, `init/generate` to every replica with its own nonce
group, `status` aggregated over replicas. `PocApi` names those differences;
`PocHttpEngine` fetches vectors through either: `POST .../generate` with `wait: true` and no
validation, in chunks, and the harness compares them itself (the node's verdict is never
trusted). A chunk that cannot be fetched ends the run: what came back is returned with
info['error'] set, so the comparison counts the rest as missing (fail closed).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import EngineError
from ..poc.codec import VectorDecodeError, decode_vectors
from .base import EngineResult, PocParams
from .http import HttpClient, Response


@dataclass(frozen=True)
class PocApi:
    name: str  # "vllm" | "mlnode"
    prefix: str  # where the PoC routes live
    running: frozenset  # status values that mean a generation loop runs (wait=true would block)
    group_fields: bool  # init/generate carries group_id/n_groups (vLLM); the MLNode assigns them
    what: str  # for messages: what should be answering at the URL

    def path(self, route: str) -> str:
        return self.prefix + route


VLLM = PocApi("vllm", "/api/v1/pow", frozenset({"GENERATING"}), True, "a Gonka vLLM build")
MLNODE = PocApi("mlnode", "/api/v1/inference/pow", frozenset({"GENERATING", "MIXED"}), False,
                "a Gonka MLNode API (port 8080)")


def replica_stats(status_body) -> dict[str, dict]:
    """Per-replica `{status, total_processed, nonces_per_second}` of a status answer, for the
    replicas that report stats. A vLLM answer is one replica ("node"); an MLNode answer lists
    `backends`, keyed here by port."""
    if not isinstance(status_body, dict):
        return {}
    if isinstance(status_body.get("backends"), list):
        entries = [(str(b.get("port")), b) for b in status_body["backends"] if isinstance(b, dict)]
    else:
        entries = [("node", status_body)]
    out = {}
    for key, b in entries:
        stats = b.get("stats")
        if isinstance(stats, dict) and stats.get("total_processed") is not None:
            out[key] = {"status": b.get("status"), "total_processed": int(stats["total_processed"]),
                        "nonces_per_second": float(stats.get("nonces_per_second") or 0.0)}
    return out


def explain(resp: Response, model: str, api: PocApi = VLLM) -> str:
    """One line for a status a retry cannot fix."""
    d = resp.detail_obj()
    if resp.status == 409 and isinstance(d, dict) and d.get("error") == "params mismatch":
        served = (d.get("deployed") or {}).get("model")
        return f"the node serves model {served}, the reference is for {model!r} (HTTP 409 params mismatch)"
    if resp.status == 409:
        return f"the node refused: {resp.detail()} (HTTP 409)"
    if resp.status == 422:
        return (f"the node rejected the request as malformed (HTTP 422: {resp.detail()}); "
                f"is it {api.what} serving PoC v2 prefill?")
    if resp.status == 404:
        return f"no PoC API at this URL (HTTP 404: {resp.detail()}); is it {api.what}?"
    return f"HTTP {resp.status}: {resp.detail()}"


def request_body(model: str, params: PocParams) -> dict:
    """The fields every PoC request carries (spec §5.1), without nonces, batch or group."""
    return {
        "block_hash": params.block_hash, "block_height": params.block_height,
        "public_key": params.public_key, "node_id": params.node_id, "node_count": params.node_count,
        "params": {"model": model, "seq_len": params.seq_len, "k_dim": params.k_dim},
        "poc_stronger_rng": params.stronger_rng,
    }


def parse_artifacts(body, asked: list[int], k: int) -> tuple[list[int], np.ndarray]:
    """Nonces and float32 vectors of a /generate answer. A vector that does not decode is
    kept as NaN (the comparison calls it invalid); nonces that were not asked are dropped."""
    if not isinstance(body, dict) or not isinstance(body.get("artifacts"), list):
        raise EngineError(f"unexpected /generate answer: {str(body)[:200]}")
    asked_set = set(asked)
    nonces, vecs = [], []
    for a in body["artifacts"]:
        if not isinstance(a, dict) or a.get("nonce") not in asked_set or a["nonce"] in nonces:
            continue
        try:
            v = decode_vectors([a.get("vector_b64")], k)[0]
        except VectorDecodeError:
            v = np.full(k, np.nan, np.float32)
        nonces.append(int(a["nonce"]))
        vecs.append(v)
    return nonces, (np.stack(vecs) if vecs else np.zeros((0, k), np.float32))


class PocHttpEngine:
    """Vectors through a PoC HTTP API; subclasses set `name` and `api`."""

    name = "poc-http"
    api: PocApi = VLLM

    def __init__(self, url: str, model: str, *, deadline_s: float = 300.0, request_timeout: float = 600.0,
                 log=print):
        self.url = url.rstrip("/")
        self.model = model
        self.log = log or (lambda m: None)
        self.http = HttpClient(self.url, request_timeout=request_timeout, deadline_s=deadline_s, log=self.log)

    def describe(self) -> dict:
        return {"engine": self.name, "url": self.url, "model": self.model}

    def body(self, params: PocParams) -> dict:
        return request_body(self.model, params)

    def explain(self, resp: Response) -> str:
        return explain(resp, self.model, self.api)

    def stop_generation_if_running(self) -> bool:
        """Stop a running init/generate loop (wait=true would block behind it); True if one ran."""
        st = self.http.request("GET", self.api.path("/status"))
        if st.status == 200 and isinstance(st.body, dict) and st.body.get("status") in self.api.running:
            self.log(f"    a PoC generation loop is running on the node (status {st.body.get('status')}): "
                     "stopping it first (wait=true would block)")
            r = self.http.request("POST", self.api.path("/stop"))
            if r.status != 200:
                raise EngineError(f"could not stop the node's generation loop: {self.explain(r)}")
            return True
        return False

    def node_verdict(self, nonces: list[int], vectors_b64: list[str], params: PocParams, batch_size: int,
                     stat_test: dict) -> dict:
        """Ask the node to validate the reference itself (`validation` + the full `stat_test`, one
        wait=true request for all nonces, so its n_total and binomial test cover them all) and
        return its answer. For display next to the harness's own verdict only: never trusted."""
        body = {**self.body(params), "nonces": list(nonces), "batch_size": batch_size, "wait": True,
                "validation": {"artifacts": [{"nonce": int(n), "vector_b64": b} for n, b in zip(nonces, vectors_b64)]},
                "stat_test": dict(stat_test)}
        r = self.http.request("POST", self.api.path("/generate"), body)
        if r.status != 200 or not isinstance(r.body, dict):
            raise EngineError(f"the node's own validation failed: {self.explain(r)}")
        return {k: r.body.get(k) for k in ("n_total", "n_mismatch", "mismatch_nonces", "p_value", "fraud_detected")}

    def chunk_size(self, batch_size: int) -> int:
        """Nonces per /generate request: one batch (the node computes a request in chunks of the
        batch size, so any multiple keeps the numerics; one batch keeps each request short)."""
        return batch_size

    def fetch_chunk(self, body: dict) -> Response:
        return self.http.request("POST", self.api.path("/generate"), body)

    def explain_chunk(self, resp: Response, n: int, batch_size: int, seconds: float) -> str:
        return self.explain(resp)

    def on_chunk(self, n: int, batch_size: int, seconds: float) -> None:
        """Called after each chunk that came back (subclasses warn about slow ones)."""

    def compute(self, nonces: Sequence[int], params: PocParams, batch_size: int = 32, progress=None) -> EngineResult:
        """Fetch vectors chunk by chunk. A chunk that cannot be fetched ends the run: what came
        back so far is returned with info['error'] set, so the report can list what is missing."""
        nonces = [int(n) for n in nonces]
        base = self.body(params)
        size = self.chunk_size(batch_size)
        got_n: list[int] = []
        got_v: list[np.ndarray] = []
        chunk_s: list[float] = []
        error, stopped = None, False
        t0 = time.perf_counter()
        try:
            stopped = self.stop_generation_if_running()
        except EngineError as e:
            error = e.one_line()
        for a in range(0, len(nonces) if error is None else 0, size):
            chunk = nonces[a : a + size]
            tc = time.perf_counter()
            try:
                r = self.fetch_chunk({**base, "nonces": chunk, "batch_size": batch_size, "wait": True})
                if r.status != 200:
                    raise EngineError(self.explain_chunk(r, len(chunk), batch_size, time.perf_counter() - tc))
                n, v = parse_artifacts(r.body, chunk, params.k_dim)
            except EngineError as e:
                error = e.one_line()
                break
            got_n += n
            got_v.append(v)
            chunk_s.append(time.perf_counter() - tc)
            self.on_chunk(len(chunk), batch_size, chunk_s[-1])
            if progress is not None:
                progress(min(a + size, len(nonces)), len(nonces))
        vecs = np.concatenate(got_v) if got_v else np.zeros((0, params.k_dim), np.float32)
        info = {**self.describe(), "chunk_size": size, "stopped_generation_loop": stopped}
        if error:
            info["error"] = error
        return EngineResult(nonces=np.asarray(got_n, dtype=np.int64), vectors=vecs, requested=nonces,
                            batch_size=batch_size, elapsed_s=time.perf_counter() - t0,
                            batch_seconds=chunk_s, info=info)
