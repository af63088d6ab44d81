"""What the two HTTP PoC APIs share: routes, request bodies, answers, one-line explanations.

A Gonka vLLM server serves PoC at `/api/v1/pow/*` (spec §5.1). A host's MLNode serves the
same calls at `/api/v1/inference/pow/*` (spec §5.2) and proxies them to its vLLM replicas:
`/generate` round-robin to one replica, `init/generate` to every replica with its own nonce
group, `status` aggregated over replicas. `PocApi` names those differences;
`PocHttpEngine` fetches vectors through either: `POST .../generate` without validation, in
chunks, and the harness compares them itself (the node's verdict is never trusted). The
chunks go through the node's /generate queue with several in flight (queued.py), or with
`in_flight=0` one `wait: true` request at a time. A chunk that cannot be fetched ends the
run: what came back is returned with info['error'] set, so the comparison counts the rest
as missing (fail closed).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass


from ..defaults import DEFAULT_IN_FLIGHT
from ..errors import EngineError
from ..poc.intake import Intake
from .answers import artifacts_of, clip, explain_failure
from .base import EngineResult, PocParams
from ..http_client import HttpClient, Response


@dataclass(frozen=True)
class PocApi:
    name: str  # "vllm" | "mlnode"
    prefix: str  # where the PoC routes live
    running: frozenset  # status values that mean a generation loop runs (wait=true would block)
    group_fields: bool  # init/generate carries group_id/n_groups (vLLM); the MLNode assigns them
    what: str  # for messages: what should be answering at the URL

    def path(self, route: str) -> str:
        return self.prefix + route

    def is_running(self, resp: Response) -> bool:
        """A status answer that says a generation loop runs (whatever JSON the node sent)."""
        st = resp.body.get("status") if resp.status == 200 and isinstance(resp.body, dict) else None
        return isinstance(st, str) and st in self.running


VLLM = PocApi("vllm", "/api/v1/pow", frozenset({"GENERATING"}), True, "a Gonka vLLM build")
MLNODE = PocApi("mlnode", "/api/v1/inference/pow", frozenset({"GENERATING", "MIXED"}), False,
                "a Gonka MLNode API (port 8080)")


def replica_stats(status_body) -> dict[str, dict]:
    """Per-replica `{status, total_processed, nonces_per_second}` of a status answer, for the
    replicas that report stats. A vLLM answer is one replica ("node"); an MLNode answer lists
    `backends`, keyed here by port. Stats of the wrong type (`total_processed: "lots"`) raise
    EngineError: a rate cannot be measured from them."""
    if not isinstance(status_body, dict):
        return {}
    if isinstance(status_body.get("backends"), list):
        entries = [(str(b.get("port")), b) for b in status_body["backends"] if isinstance(b, dict)]
    else:
        entries = [("node", status_body)]
    out = {}
    for key, b in entries:
        stats = b.get("stats")
        if not isinstance(stats, dict) or stats.get("total_processed") is None:
            continue
        total, rate = stats.get("total_processed"), stats.get("nonces_per_second", 0.0)
        if type(total) is not int or total < 0:
            raise EngineError(f"the node's status is malformed: total_processed {total!r} (replica {key}) is not a "
                              "non-negative integer", "is it a Gonka PoC node?")
        if rate is None:
            rate = 0.0
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate):
            raise EngineError(f"the node's status is malformed: nonces_per_second {rate!r} (replica {key}) is not a "
                              "number", "is it a Gonka PoC node?")
        out[key] = {"status": b.get("status"), "total_processed": total, "nonces_per_second": float(rate)}
    return out


STOP_GRACE_S = 1.0  # a stop sent on the way out of an interrupted run or a spent deadline: the run must end now

GONKA_MODEL_MISMATCH = "a bytes-like object is required"  # Gonka's 0.23 fork: its 409 breaks its error handler


def explain(resp: Response, model: str, api: PocApi = VLLM) -> str:
    """One line for a status a retry cannot fix: what the node sent, and what it means."""
    d = resp.detail_obj()
    said = f"HTTP {resp.status}: {resp.detail()}"
    if resp.status == 409 and isinstance(d, dict) and d.get("error") == "params mismatch":
        served = (d.get("deployed") or {}).get("model")
        return f"the node serves model {served}, the reference is for {model!r} ({said})"
    if resp.status == 400 and GONKA_MODEL_MISMATCH in resp.detail():
        return (f"the node refused the request ({said}); Gonka's PoC vLLM answers a model mismatch this way: "
                f"does it serve {model!r}? (GET /v1/models lists what it serves)")
    if resp.status in (400, 422):
        return (f"the node rejected the request as malformed ({said}); is it {api.what} serving PoC v2 prefill "
                f"for {model!r}?")
    if resp.status == 409:
        return f"the node refused: {said}"
    if resp.status == 404:
        return f"no PoC API at this URL ({said}); is it {api.what}?"
    if 400 <= resp.status < 500:
        return f"the node refused the request ({said})"
    return f"the node answered {said}"


def request_body(model: str, params: PocParams) -> dict:
    """The fields every PoC request carries (spec §5.1), without nonces, batch or group."""
    return {
        "block_hash": params.block_hash, "block_height": params.block_height,
        "public_key": params.public_key, "node_id": params.node_id, "node_count": params.node_count,
        "params": {"model": model, "seq_len": params.seq_len, "k_dim": params.k_dim},
        "poc_stronger_rng": params.stronger_rng,
    }


def unwell_backends(status_body) -> list[str]:
    """The replicas of an MLNode status that are neither IDLE nor GENERATING ("port P: STATUS
    (detail)"): the MLNode says MIXED for them, and its entry for a replica whose status call
    failed is {"port", "status": "ERROR", "detail": text}. Empty for a vLLM answer."""
    backends = status_body.get("backends") if isinstance(status_body, dict) else None
    out = []
    for b in backends if isinstance(backends, list) else []:
        st = b.get("status") if isinstance(b, dict) else None
        if isinstance(b, dict) and st not in ("IDLE", "GENERATING"):
            why = b.get("detail", b.get("error"))
            out.append(f"port {b.get('port')}: {st}" + (f" ({Response(0, {'detail': why}).detail()})" if why else ""))
    return out


def check_backends(st: Response) -> None:
    """EngineError naming the replicas an MLNode's status answer reports unwell (none: nothing)."""
    bad = unwell_backends(st.body) if st.status == 200 else []
    if bad:
        raise EngineError(f"the MLNode's status is {st.body.get('status')}: its vLLM replica on {'; '.join(bad)}",
                          "that replica answers /health but not its PoC status: read its log, restart it")


def stop_if_running(http: HttpClient, api: PocApi, model: str, log, why: str) -> bool:
    """Stop the node's init/generate loop if its status says one runs; True if one ran. An
    MLNode replica whose status errors ends it (check_backends): MIXED is not taken as running then."""
    st = http.request("GET", api.path("/status"))
    check_backends(st)
    if not api.is_running(st):
        return False
    log(f"    a PoC generation loop is running on the node (status {st.body.get('status')}): stopping it first ({why})")
    stop(http, api, model)
    return True


def stop(http: HttpClient, api: PocApi, model: str, deadline_s: float | None = None) -> None:
    """POST the stop route; EngineError when the node does not confirm it."""
    r = http.request("POST", api.path("/stop"), deadline_s=deadline_s)  # the route takes no body
    if r.status != 200:
        raise EngineError(f"could not stop the node's generation loop: {explain(r, model, api)}")


class PocHttpEngine:
    """Vectors through a PoC HTTP API; subclasses set `name` and `api`."""

    name = "poc-http"
    api: PocApi = VLLM
    stop_on_exit = False  # --stop-on-exit: POST stop when the fetch ends with chunks still queued on the node

    def __init__(self, url: str, model: str, *, deadline_s: float = 300.0, request_timeout: float = 600.0,
                 in_flight: int = DEFAULT_IN_FLIGHT, log=print):
        self.url = url.rstrip("/")
        self.model = model
        self.in_flight = in_flight  # queued chunks at a time; 0: one wait=true request at a time
        self.log = log or (lambda m: None)
        self.http = HttpClient(self.url, request_timeout=request_timeout, deadline_s=deadline_s, log=self.log)

    def describe(self) -> dict:
        return {"engine": self.name, "url": self.url, "model": self.model, "in_flight": self.in_flight,
                "stop_on_exit": self.stop_on_exit}

    def body(self, params: PocParams) -> dict:
        return request_body(self.model, params)

    def explain(self, resp: Response) -> str:
        return explain(resp, self.model, self.api)

    def stop_generation_if_running(self) -> bool:
        """Stop a running init/generate loop (wait=true would block behind it); True if one ran."""
        return stop_if_running(self.http, self.api, self.model, self.log, why="wait=true would block")

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
        out = {k: r.body.get(k) for k in ("n_total", "n_mismatch", "mismatch_nonces", "p_value", "fraud_detected")}
        ints = all(type(out[k]) is int for k in ("n_total", "n_mismatch"))
        p = out["p_value"]
        if not ints or isinstance(p, bool) or not isinstance(p, (int, float)) or not isinstance(out["fraud_detected"], bool):
            raise EngineError(f"the node's own validation answer is malformed: {clip(r.body)}")
        return out

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
        """Fetch vectors chunk by chunk; every answer goes through one `Intake`. A chunk that
        cannot be fetched ends the run: what came back so far is returned with info['error']
        set, so the report can list what is missing."""
        from .queued import QueueStats, fetch_queued

        nonces = [int(n) for n in nonces]
        base = self.body(params)
        size = self.chunk_size(batch_size)
        intake = Intake(params.k_dim)
        chunk_s: list[float] = []
        error, stopped, interrupted = None, False, None
        queue = QueueStats(self.in_flight) if self.in_flight > 0 else None
        t0 = time.perf_counter()
        try:
            stopped = self.stop_generation_if_running()
            if queue is not None:
                chunk_s = fetch_queued(self, nonces, base, size, batch_size, intake, queue, progress=progress,
                                       on_chunk=self.on_chunk)
            else:
                self._fetch_waiting(nonces, base, size, batch_size, intake, chunk_s, progress)
        except EngineError as e:
            hint = explain_failure(str(e))
            error = e.one_line() + (f" — {hint}" if hint else "")
        except KeyboardInterrupt as e:  # keep what came back; the caller ends the run
            interrupted = getattr(e, "signal_name", "SIGINT (Ctrl-C)")
            got_n = len(intake.result().nonces)
            error = f"interrupted by {interrupted} after {got_n} of {len(nonces)} nonces came back"
        got = intake.result()
        info = {**self.describe(), "chunk_size": size, "stopped_generation_loop": stopped}
        if queue is not None:
            if queue.left_queued:
                self._left_on_node(queue)
            info["queue"] = queue.as_dict()
        if error:
            info["error"] = error
        if interrupted:
            info["interrupted"] = interrupted
        return EngineResult(nonces=got.nonces, vectors=got.vectors, requested=nonces, batch_size=batch_size,
                            elapsed_s=time.perf_counter() - t0, batch_seconds=chunk_s, info=info, intake=got)

    def _left_on_node(self, queue) -> None:
        """The fetch ended with chunks still queued on the node: stop them (--stop-on-exit, within
        STOP_GRACE_S, whatever deadline was spent) or say they are left to compute."""
        n = queue.left_queued
        if not self.stop_on_exit:
            self.log(f"    {n} queued chunk(s) were not collected: the node computes them anyway and drops the "
                     "results after 300 s (without --stop-on-exit the harness does not call /pow/stop: the queue may "
                     "hold other clients' requests)")
            queue.on_exit = "left on the node"
            return
        until, self.http.until = self.http.until, None  # the phase's deadline may be spent: the stop has its own
        try:
            stop(self.http, self.api, self.model, deadline_s=STOP_GRACE_S)
            queue.on_exit = f"stopped (--stop-on-exit): POST {self.api.path('/stop')} dropped {n} queued chunk(s)"
        except EngineError as e:
            queue.on_exit = f"--stop-on-exit: the stop failed ({e.one_line()}); {n} chunk(s) may still compute"
        except KeyboardInterrupt:  # a second interrupt: the run ends now, the chunks are where they are
            queue.on_exit = "--stop-on-exit: interrupted again before the node confirmed the stop"
        finally:
            self.http.until = until
        self.log(f"    {queue.on_exit}")

    def _fetch_waiting(self, nonces, base, size, batch_size, intake, chunk_s, progress) -> None:
        """One `wait: true` request per chunk, the next sent when the last has come back."""
        for a in range(0, len(nonces), size):
            chunk = nonces[a : a + size]
            tc = time.perf_counter()
            where = f"request {a // size + 1} (nonces {chunk[0]}..{chunk[-1]})"
            r = self.fetch_chunk({**base, "nonces": chunk, "batch_size": batch_size, "wait": True})
            if r.status != 200:
                raise EngineError(self.explain_chunk(r, len(chunk), batch_size, time.perf_counter() - tc))
            intake.add(artifacts_of(r.body, where), asked=set(chunk), where=where)
            chunk_s.append(time.perf_counter() - tc)
            self.on_chunk(len(chunk), batch_size, chunk_s[-1])
            if progress is not None:
                progress(min(a + size, len(nonces)), len(nonces))

    def models_answer(self) -> Response:
        return self.http.request("GET", "/v1/models", deadline_s=min(60.0, self.http.deadline_s))

    def served_models(self) -> list[str] | None:
        """The ids (and roots) /v1/models lists; None when the node has no such route."""
        r = self.models_answer()
        if r.status != 200:
            self.log(f"    note: GET /v1/models answered HTTP {r.status}: {r.detail()}; the served model is not "
                     "checked before the run")
            return None
        data = r.body.get("data") if isinstance(r.body, dict) else None
        if not isinstance(data, list):
            raise EngineError(f"GET /v1/models: unexpected answer: {clip(r.body)}", "is the URL a vLLM node?")
        names = []
        for m in data:
            if isinstance(m, dict):
                names += [str(m[k]) for k in ("id", "root") if isinstance(m.get(k), str)]
        return list(dict.fromkeys(names))

    def versions(self) -> dict | None:
        """GET {prefix}/versions of newer Gonka builds: {vllm_version, poc_validation_inference};
        None when the node does not answer it (older builds: that is fine)."""
        r = self.http.probe(self.api.path("/versions"), min(10.0, self.http.deadline_s))
        if r is None or r.status != 200 or not isinstance(r.body, dict):
            return None
        return {k: r.body.get(k) for k in ("vllm_version", "poc_validation_inference") if k in r.body} or None

    def check_model(self) -> list[str] | None:
        """Before the run: the node must serve the reference's model (Gonka's server answers a
        mismatch with an unhelpful 400 later). Returns what it serves (None: not listed)."""
        served = self.served_models()
        if served is not None and self.model not in served:
            raise EngineError(f"the node serves {', '.join(map(repr, served)) or 'no model'}, the reference is for "
                              f"{self.model!r} (GET /v1/models)",
                              "serve the reference's model (the served model name must equal it), or pick the "
                              "reference of the model the node serves")
        return served
