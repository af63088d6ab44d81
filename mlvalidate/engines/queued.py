"""Vectors through the node's /generate queue, several chunks in flight (spec §5.1, §5.2).

With `wait: true` the node computes one chunk, answers, and idles while the harness reads the
answer, decodes it and sends the next chunk. Here every chunk is a `wait: false` job: up to
`in_flight` jobs wait in the node's queue, so when the node finishes one the next is already
there. The node's queue has one worker that runs jobs one after another (Gonka's fork:
`vllm/poc/generate_queue.py`; our `serve` does the same), so each job is computed alone at its
batch size: the numerics are those of a wait=true chunk.

Answers are still taken in request order and go through the one intake rule; anything the
node gets wrong (a submission that is not queued, a request id that is missing, repeated or
unknown, a job that fails or never finishes within the deadline) ends the fetch with an
error, and the nonces not yet received count as missing: the run cannot PASS.
An MLNode returns "{port}:{uuid}" ids and routes the poll back to that replica; jobs spread
over its replicas round-robin. A node that ignores `wait: false` and answers with the
artifacts at once is taken at its word (the same intake rule applies), whatever they are
(`artifacts: null` is a malformed answer, not a job to poll). A request id "." or ".." is
refused: a URL drops dot segments, so its poll would reach another route.

Polling: the head job is polled about 10 times per chunk time (from the last chunk), and
each poll that finds it still waiting lengthens the interval by half, up to POLL_MAX_S, never
sleeping past the deadline: a job that never finishes costs about one poll a second.
"""

from __future__ import annotations

import time
import urllib.parse
from collections import deque
from dataclasses import dataclass

from .. import interrupts
from ..errors import EngineError
from .answers import artifacts_of, clip, explain_failure

POLL_MIN_S = 0.005
POLL_MAX_S = 1.0  # a job that keeps the harness waiting is polled at most about once a second
POLL_GROWTH = 1.5  # each poll that finds the job still waiting lengthens the next interval by this
MAX_ID_CHARS = 200
PENDING = object()  # a job's answer before the node has given one (a node may answer `artifacts: null`)


@dataclass
class _Job:
    index: int
    nonces: list[int]
    submitted: float
    request_id: str | None = None
    answer: object = PENDING  # the completed answer (queued) or the artifacts (answered at once), once known
    over: bool = False  # the node answered for it for good (completed, failed, unknown...)


@dataclass
class QueueStats:
    """How the queued fetch went: for the bundle and the benchmark."""

    in_flight: int
    polls: int = 0
    submitted: int = 0
    answered_at_once: int = 0  # submissions the node answered with artifacts (it ignored wait=false)
    left_queued: int = 0  # jobs still on the node when the fetch ended early (the one being polled included)
    on_exit: str | None = None  # what became of them: left on the node, or stopped (--stop-on-exit)

    def as_dict(self) -> dict:
        return {"in_flight": self.in_flight, "polls": self.polls, "submitted": self.submitted,
                "answered_at_once": self.answered_at_once, "left_queued": self.left_queued, "on_exit": self.on_exit}


def _poll_path(engine, rid: str) -> str:
    return engine.api.path("/generate/" + urllib.parse.quote(rid, safe=":"))


def _request_id(body, where: str) -> str:
    rid = body.get("request_id") if isinstance(body, dict) else None
    if not isinstance(rid, str) or not rid.strip() or len(rid) > MAX_ID_CHARS:
        raise EngineError(f"{where}: the node did not queue the request: {clip(body)}",
                          "is it a Gonka PoC node with the /generate queue? --in-flight 0 asks with wait=true instead")
    if rid in (".", ".."):  # a dot segment: the HTTP client would remove it and poll another route
        raise EngineError(f"{where}: the node gave the request id {rid!r}, which cannot be polled as "
                          "/generate/{id} (a URL drops it as a dot segment)", "is it a Gonka PoC node?")
    return rid


def _answered_at_once(body) -> bool:
    """A submission the node answered with its vectors (it ignored wait=false): an object with
    `artifacts` (whatever they are: the intake judges them) whose status is not "queued"."""
    return isinstance(body, dict) and "artifacts" in body and body.get("status") != "queued"


def fetch_queued(engine, nonces: list[int], base: dict, size: int, batch_size: int, intake, stats: QueueStats,
                 progress=None, on_chunk=None) -> list[float]:
    """Fetch `nonces` in chunks of `size` with up to `stats.in_flight` queued jobs; every answer
    goes into `intake` in request order, and `stats` counts what happened (also when it ends
    early). Returns the seconds per chunk result; raises EngineError (or KeyboardInterrupt)
    with what came back already in the intake."""
    http, in_flight = engine.http, stats.in_flight
    chunks = [nonces[a : a + size] for a in range(0, len(nonces), size)]
    pending: deque[_Job] = deque()
    ids: set[str] = set()
    chunk_s: list[float] = []
    nxt, poll_s, last_done = 0, POLL_MIN_S * 2, time.perf_counter()
    deadline = min(time.monotonic() + http.deadline_s, http.until or float("inf"))
    try:
        while nxt < len(chunks) or pending:
            while nxt < len(chunks) and len(pending) < in_flight:
                job = _Job(nxt, chunks[nxt], time.perf_counter())
                where = f"request {nxt + 1} (nonces {job.nonces[0]}..{job.nonces[-1]})"
                r = engine.fetch_chunk({**base, "nonces": job.nonces, "batch_size": batch_size, "wait": False})
                if r.status != 200:
                    raise EngineError(engine.explain_chunk(r, len(job.nonces), batch_size,
                                                           time.perf_counter() - job.submitted))
                stats.submitted += 1
                if _answered_at_once(r.body):
                    job.answer = r.body["artifacts"]
                    stats.answered_at_once += 1
                else:
                    job.request_id = _request_id(r.body, where)
                    if job.request_id in ids:
                        raise EngineError(f"{where}: the node gave request id {job.request_id!r} to two requests",
                                          "a node must queue every request as its own job")
                    ids.add(job.request_id)
                pending.append(job)
                nxt += 1
            head = pending[0]
            where = f"request {head.index + 1} (nonces {head.nonces[0]}..{head.nonces[-1]})"
            if head.answer is PENDING:
                if time.monotonic() >= deadline:
                    raise EngineError(f"{where}: queued on the node as {head.request_id!r}, no result within the "
                                      "deadline", "is the node computing? (--timeout bounds the whole wait)")
                r = http.request("GET", _poll_path(engine, head.request_id))
                stats.polls += 1
                head.answer = _job_answer(engine, r, head, where)
                if head.answer is PENDING:  # still queued or running: wait longer each time, never past the deadline
                    interrupts.sleep(max(0.0, min(poll_s, deadline - time.monotonic())))
                    poll_s = min(POLL_MAX_S, poll_s * POLL_GROWTH)
                    continue
            intake.add(head.answer if head.request_id is None else artifacts_of(head.answer, where),
                       asked=set(head.nonces), where=where)
            pending.popleft()
            now = time.perf_counter()
            chunk_s.append(now - max(last_done, head.submitted))
            poll_s = min(POLL_MAX_S, max(POLL_MIN_S, (now - last_done) / 10))  # ~10 polls per chunk
            last_done = now
            if on_chunk is not None:
                on_chunk(len(head.nonces), batch_size, chunk_s[-1])
            if progress is not None:
                progress(sum(len(c) for c in chunks[: head.index + 1]), len(nonces))
    finally:
        stats.left_queued = sum(1 for j in pending if j.answer is PENDING and j.request_id is not None and not j.over)
    return chunk_s


def _job_answer(engine, r, job: _Job, where: str):
    """The completed answer of a poll, or PENDING while the job waits or runs."""
    status = r.body.get("status") if r.status == 200 and isinstance(r.body, dict) else None
    # nothing more runs for it on the node: unknown there, or an answer other than queued/running
    job.over = r.status == 404 or (r.status == 200 and status not in ("queued", "running"))
    if r.status == 404:
        raise EngineError(f"{where}: the node no longer knows request {job.request_id!r} (HTTP 404)",
                          "its queue was cleared (a /pow/stop, a restart) or the result expired: run again")
    if r.status != 200:
        raise EngineError(f"{where}: polling request {job.request_id!r}: {engine.explain(r)}")
    body = r.body
    if status in ("queued", "running"):
        return PENDING
    if status == "completed":
        artifacts_of(body, where)  # a completed answer without artifacts is an error here
        return body
    if status == "failed":
        err = str(body.get("error"))[:300]
        hint = explain_failure(err)
        raise EngineError(f"{where}: the node failed request {job.request_id!r}: {err}" + (f" — {hint}" if hint else ""))
    raise EngineError(f"{where}: unexpected answer while polling request {job.request_id!r}: {clip(body)}",
                      "is it a Gonka PoC node?")
