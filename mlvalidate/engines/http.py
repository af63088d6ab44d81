"""A small JSON-over-HTTP client with bounded retries (standard library only).

Retries with exponential backoff on connection errors and 502/503/504, never past an
overall deadline; every other status is returned to the caller, which explains it.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from ..errors import EngineError

RETRY_STATUSES = (502, 503, 504)


@dataclass
class Response:
    status: int
    body: object  # parsed JSON, or the raw text when not JSON

    def detail_obj(self):
        """The `detail` of an error body, unwrapped: a proxy (the MLNode) re-raises its backend's
        answer with the backend's raw text as its own detail, so a detail that is itself JSON
        carrying a `detail` is opened once more."""
        b = self.body
        for _ in range(3):
            if isinstance(b, dict) and "detail" in b:
                b = b["detail"]
            if isinstance(b, str) and b[:1] in "{[":
                try:
                    inner = json.loads(b)
                except json.JSONDecodeError:
                    break
                if isinstance(inner, dict) and "detail" in inner:
                    b = inner
                    continue
            break
        return b

    def detail(self) -> str:
        b = self.detail_obj()
        text = b if isinstance(b, str) else json.dumps(b)
        return " ".join(text.split())[:300]


class HttpClient:
    def __init__(self, base_url: str, *, request_timeout: float = 120.0, deadline_s: float = 300.0,
                 backoff_s: float = 1.0, max_backoff_s: float = 15.0, log=None):
        self.base = base_url.rstrip("/")
        self.request_timeout = request_timeout
        self.deadline_s = deadline_s
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.log = log or (lambda msg: None)

    def request(self, method: str, path: str, body=None, *, deadline_s: float | None = None,
                retry_statuses=RETRY_STATUSES, give_up=None) -> Response:
        """`give_up(response, attempt_seconds)`, if given, is asked before retrying a retry
        status: True returns that response at once (a retry cannot fix it)."""
        url = self.base + path
        data = json.dumps(body).encode() if body is not None else None
        deadline = time.monotonic() + (self.deadline_s if deadline_s is None else deadline_s)
        delay, attempt, last = self.backoff_s, 0, ""
        while True:
            attempt += 1
            t_attempt = time.monotonic()
            try:
                req = urllib.request.Request(url, data=data, method=method,
                                             headers={"Content-Type": "application/json"} if data else {})
                with urllib.request.urlopen(req, timeout=self.request_timeout) as r:
                    return Response(r.status, _parse(r.read()))
            except urllib.error.HTTPError as e:
                resp = Response(e.code, _parse(e.read()))
                if e.code not in retry_statuses or (give_up and give_up(resp, time.monotonic() - t_attempt)):
                    return resp
                last = f"HTTP {e.code}: {resp.detail()}"
            except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError,
                    http.client.HTTPException) as e:  # HTTPException: e.g. a body cut short (IncompleteRead)
                reason = getattr(e, "reason", e)
                last = f"{type(reason).__name__}: {reason}"
            if time.monotonic() + delay > deadline:
                raise EngineError(f"{method} {url} failed after {attempt} attempt(s): {last}",
                                  "is the node up and reachable? (retries stop at the deadline)")
            self.log(f"    retry {attempt} in {delay:.0f} s: {method} {path}: {last}")
            time.sleep(delay)
            delay = min(delay * 2, self.max_backoff_s)


def _parse(raw: bytes):
    try:
        return json.loads(raw or b"null")
    except json.JSONDecodeError:
        return raw.decode("utf-8", "replace")
