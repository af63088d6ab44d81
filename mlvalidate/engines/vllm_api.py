"""A Gonka vLLM node's PoC API (spec §5.1) as a system under test.

Vectors are fetched with `POST /api/v1/pow/generate` (no validation) in chunks of the batch
size — queued with several in flight (queued.py), or `wait: true` one at a time — and
compared by the harness itself: the node's own verdict is never trusted. Before the first
chunk, a running init/generate loop is stopped (neither would run behind it), and the caller
is told. The request/answer handling shared with the MLNode engine lives in poc_http.py.
"""

from __future__ import annotations

from .poc_http import VLLM, PocHttpEngine, explain  # noqa: F401  (explain: re-exported)

POW = VLLM.prefix


class VllmPocApiEngine(PocHttpEngine):
    name = "vllm-poc-api"
    api = VLLM
