"""A host's MLNode API (spec §5.2; port 8080, prefix /api/v1) as a system under test.

Vectors come from `POST /api/v1/inference/pow/generate` (no validation, no group fields),
which the MLNode forwards round-robin to one of its vLLM replicas with a 60 s timeout on that
call. Every request carries one batch of nonces. Queued (`wait: false`, the default), the
call returns at once with a "{port}:{uuid}" id that the MLNode routes polls back with, and the
queued chunks spread over the replicas. With `wait: true` (--in-flight 0) the backend must
compute the batch within the proxy's 60 s: a request that outlives it comes back as HTTP 502,
which is not retried (it would time out again) but explained: lower --batch-size, or queue.
The MLNode's answer to that timeout is HTTP 502 `{"detail": ""}` (the text of httpx's
ReadTimeout is empty), which is how it is told from a backend that is down (its 502 carries
the connection error). With no vLLM deployed, its /v1/models answers 503 "No vLLM backend
available": said at once, not retried. A running generation loop (status GENERATING, or MIXED
with some replicas generating) is stopped first, as on vLLM; a replica whose status errors
ends the run (poc_http.unwell_backends).
"""

from __future__ import annotations

import re

from ..errors import EngineError
from ..http_client import HttpClient, Response
from .poc_http import DEFAULT_IN_FLIGHT, MLNODE, PocHttpEngine

PROXY_TIMEOUT_S = 60.0  # the MLNode -> vLLM call (spec §5.2)
SLOW_CHUNK_S = PROXY_TIMEOUT_S / 2  # warn past this: a slower batch, or a busier node, hits the timeout
_TIMEOUT_TEXT = re.compile(r"time[ds]?[ _-]?out", re.IGNORECASE)  # timeout, timed out, ReadTimeout
NO_BACKEND = "No vLLM backend available"  # the MLNode's /v1 proxy with no healthy replica (503, plain text)


def proxy_timed_out(resp: Response, seconds: float) -> bool:
    """A 502 from the MLNode's proxy giving up on its backend (not a backend that is down): its
    own shape `{"detail": ""}`, a detail that names a timeout, or a 502 that took the proxy's time."""
    if resp.status != 502:
        return False
    empty = isinstance(resp.body, dict) and resp.body.get("detail") == ""
    return empty or bool(_TIMEOUT_TEXT.search(resp.detail())) or seconds >= PROXY_TIMEOUT_S - 10


class MlnodeApiEngine(PocHttpEngine):
    name = "mlnode-api"
    api = MLNODE

    def __init__(self, url: str, model: str, *, deadline_s: float = 300.0, request_timeout: float = 2 * PROXY_TIMEOUT_S,
                 in_flight: int = DEFAULT_IN_FLIGHT, log=print):
        super().__init__(url, model, deadline_s=deadline_s, request_timeout=request_timeout, in_flight=in_flight,
                         log=log)
        self._warned_slow = False

    def compute(self, nonces, params, batch_size: int = 32, progress=None):
        if self.in_flight > 0:
            self.log(f"    requests of {self.chunk_size(batch_size)} nonces (one batch each), up to {self.in_flight} "
                     "queued at a time over the MLNode's replicas")
        else:
            self.log(f"    requests of {self.chunk_size(batch_size)} nonces (one batch each), so that each finishes "
                     f"well within the MLNode's {PROXY_TIMEOUT_S:.0f} s proxy timeout")
        return super().compute(nonces, params, batch_size=batch_size, progress=progress)

    def fetch_chunk(self, body: dict) -> Response:
        # a proxy timeout is answered at once; any other 502 (a replica restarting) is retried
        return self.http.request("POST", self.api.path("/generate"), body, give_up=proxy_timed_out)

    def explain_chunk(self, resp: Response, n: int, batch_size: int, seconds: float) -> str:
        if proxy_timed_out(resp, seconds):
            said = '{"detail": ""}' if isinstance(resp.body, dict) and resp.body.get("detail") == "" else resp.detail()
            return (f"the MLNode's {PROXY_TIMEOUT_S:.0f} s proxy timeout: a request of {n} nonces (batch {batch_size}) "
                    f"did not finish on its vLLM backend in time (HTTP 502 {said} after {seconds:.0f} s); lower "
                    "--batch-size or use the queued mode (--in-flight 4: the proxy then answers at once)")
        return self.explain(resp)

    def models_answer(self) -> Response:
        """GET /v1/models; a 503 "No vLLM backend available" with nothing deployed ends it at once."""
        up: dict = {}

        def nothing_deployed(resp: Response, _seconds: float) -> bool:
            if resp.status != 503 or NO_BACKEND not in resp.detail():
                return False
            r = self.http.request("GET", "/api/v1/inference/up/status", deadline_s=min(30.0, self.http.deadline_s))
            up.update(r.body if r.status == 200 and isinstance(r.body, dict) else {"status": f"HTTP {r.status}"})
            return not up.get("is_running")  # running: the proxy's health check (every 2 s) has not seen it yet

        r = self.http.request("GET", "/v1/models", deadline_s=min(60.0, self.http.deadline_s), give_up=nothing_deployed)
        if r.status == 503 and up and not up.get("is_running"):
            raise EngineError(f"no vLLM runs behind the MLNode: GET /v1/models answered HTTP 503 {NO_BACKEND!r} and its "
                              f"deployment is {up.get('status')} (GET /api/v1/inference/up/status)",
                              "deploy it: run without --skip-deploy, or wait for the deployment that is starting")
        return r

    def on_chunk(self, n: int, batch_size: int, seconds: float) -> None:
        if self.in_flight == 0 and seconds > SLOW_CHUNK_S and not self._warned_slow:  # queued: no proxy wait
            self.log(f"    warning: a request of {n} nonces took {seconds:.0f} s, over half the MLNode's "
                     f"{PROXY_TIMEOUT_S:.0f} s proxy timeout; a lower --batch-size is safer")
            self._warned_slow = True


GPU_ROUTES = {"devices": "/api/v1/gpu/devices", "driver": "/api/v1/gpu/driver"}  # read-only (GET /state is not:
# on an MLNode running two services at once it stops them all)


def gpu_answers(url: str, timeout_s: float = 10.0) -> dict:
    """What a host's MLNode says of its hardware (spec §5.2, its GPU routes): GET /api/v1/gpu/devices
    (each CUDA device its NVML sees: index, name, memory) and /api/v1/gpu/driver (driver and CUDA
    versions; 503 while its NVML is not running). One try each,
    no retry, all within `timeout_s`: per route {"status", "body"}, or None where nothing answered
    in time. serving/node_hardware.py reads them."""
    import time

    http = HttpClient(url, request_timeout=timeout_s, deadline_s=timeout_s, connect_grace_s=0)
    end = time.monotonic() + timeout_s
    out: dict = {"url": http.base}
    for key, path in GPU_ROUTES.items():
        left = end - time.monotonic()
        r = http.probe(path, left) if left > 0 else None
        out[key] = None if r is None else {"status": r.status, "body": r.body}
    return out
