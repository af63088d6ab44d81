"""JSON over HTTP for the harness's clients (httpx), with deadlines that hold against any node.

* Deadlines: a request never outlives its deadline (the earlier of its own `deadline_s` and
  the client's `until`, e.g. the end of a phase). Connect, send and the whole body read run
  in a worker thread that the caller stops waiting for at the deadline, so a node that
  accepts the connection and never answers, or trickles its body a byte at a time, is cut
  off on time. One attempt also waits at most `request_timeout`.
* Retries: connection errors, broken answers (a body cut short) and 502/503/504, with
  exponential backoff, never past the deadline. A connection that is refused (or a host
  that does not resolve) for `connect_grace_s` in a row ends the request at once: a wrong
  port is not worth minutes of retries. Every other status is returned to the caller,
  which explains it.
* Bodies larger than `max_body_bytes` are refused, so a node cannot fill the harness's memory.
* Proxies: HTTP_PROXY / HTTPS_PROXY / ALL_PROXY and NO_PROXY are honoured; loopback
  addresses are never sent through a proxy.
"""

from __future__ import annotations

import ipaddress
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass

import httpx

from . import interrupts
from .errors import EngineError, MlvalidateError
from .jsonio import parse_answer

RETRY_STATUSES = (502, 503, 504)
MAX_BODY_BYTES = 64 * 1024 * 1024
CONNECT_GRACE_S = 30.0


def check_url(url: str, what: str = "--url") -> str:
    """A node URL must be http(s)://host[:port][/path] — no user, query or fragment (they would
    send the harness's requests elsewhere); anything else is a usage error at once."""
    text = url if isinstance(url, str) else ""
    try:
        parts = urllib.parse.urlsplit(text)
        host, _port = parts.hostname, parts.port  # both raise ValueError on a broken [IPv6] part or port
    except ValueError as e:
        bad = "port" if "port" in str(e).lower() else "address"
        raise MlvalidateError(f"{what} {url!r} has an invalid {bad} ({' '.join(str(e).split())})",
                              "use http://HOST:PORT (an IPv6 address in brackets: http://[::1]:PORT)") from None
    if parts.scheme not in ("http", "https") or not host:
        raise MlvalidateError(f"{what} {url!r} is not an http:// or https:// URL",
                              f"write it with the scheme, e.g. http://{text or 'HOST:PORT'}")
    if parts.query or parts.fragment or "#" in text or "?" in text or "@" in parts.netloc:
        raise MlvalidateError(f"{what} {url!r} carries a user, query or fragment",
                              "give the node's base URL only, e.g. http://HOST:PORT")
    if not text.isprintable() or any(c.isspace() for c in text):
        raise MlvalidateError(f"{what} {url!r} holds spaces or control characters", "use http://HOST:PORT")
    return text.rstrip("/")


def is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
                inner = parse_json(b.encode("utf-8", "replace"))
                if isinstance(inner, dict) and "detail" in inner:
                    b = inner
                    continue
            break
        return b

    def detail(self) -> str:
        b = self.detail_obj()
        try:
            text = b if isinstance(b, str) else json.dumps(b)
        except (TypeError, ValueError, RecursionError):
            text = repr(b)
        return " ".join(text.split())[:300] or "(empty body)"


class _TooLarge(Exception):
    pass


class Unreachable(EngineError):
    """The node refused connections (or its host did not resolve) for the whole connect grace."""


class HttpClient:
    def __init__(self, base_url: str, *, request_timeout: float = 120.0, deadline_s: float = 300.0,
                 backoff_s: float = 1.0, max_backoff_s: float = 15.0, connect_grace_s: float = CONNECT_GRACE_S,
                 connect_timeout: float = 10.0, max_body_bytes: int = MAX_BODY_BYTES, log=None):
        self.base = check_url(base_url, "URL")
        self.request_timeout = request_timeout
        self.deadline_s = deadline_s
        self.until: float | None = None  # an absolute time.monotonic() no request goes past (a phase's end)
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.connect_grace_s = connect_grace_s
        self.connect_timeout = connect_timeout
        self.max_body_bytes = max_body_bytes
        self.log = log or (lambda msg: None)
        self._client: httpx.Client | None = None  # one connection pool, made on first use
        self._client_lock = threading.Lock()

    def request(self, method: str, path: str, body=None, *, deadline_s: float | None = None,
                retry_statuses=RETRY_STATUSES, give_up=None, connect_grace_s: float | None = None) -> Response:
        """`give_up(response, attempt_seconds)`, if given, is asked before retrying a retry
        status: True returns that response at once (a retry cannot fix it). `connect_grace_s`
        replaces the client's for this request (0: a refused connection raises Unreachable at once)."""
        grace = self.connect_grace_s if connect_grace_s is None else connect_grace_s
        url = self.base + path
        data = json.dumps(body).encode() if body is not None else None
        deadline = time.monotonic() + (self.deadline_s if deadline_s is None else deadline_s)
        if self.until is not None:
            deadline = min(deadline, self.until)
        delay, attempt, last = self.backoff_s, 0, "no attempt before the deadline"
        refused_since: float | None = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            attempt += 1
            t_attempt = time.monotonic()
            try:
                status, raw = self._attempt(method, url, data, min(self.request_timeout, left))
            except _TooLarge:
                raise EngineError(f"{method} {url}: the answer is larger than {self.max_body_bytes // 2**20} MiB; "
                                  "refused", "is the URL a PoC node?") from None
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                refused_since = refused_since or t_attempt
                last = f"cannot connect: {_reason(e)}"
                if time.monotonic() - refused_since >= grace:
                    raise Unreachable(f"{method} {url}: {last} (for {time.monotonic() - refused_since:.0f} s)",
                                      "is the node running, and are the URL's host and port right?") from None
            except TimeoutError:
                last = f"no complete answer within {min(self.request_timeout, left):.0f} s"
            except httpx.HTTPError as e:  # the body was cut short, the connection dropped, a read timed out
                refused_since = None
                last = f"{type(e).__name__}: {_reason(e)}"
            else:
                refused_since = None
                resp = Response(status, parse_json(raw))
                if status not in retry_statuses or (give_up and give_up(resp, time.monotonic() - t_attempt)):
                    return resp
                last = f"HTTP {status}: {resp.detail()}"
            if time.monotonic() + delay >= deadline:
                break
            self.log(f"    retry {attempt} in {delay:.0f} s: {method} {path}: {last}")
            interrupts.sleep(delay)
            delay = min(delay * 2, self.max_backoff_s)
        raise EngineError(f"{method} {url} failed after {attempt} attempt(s) within the deadline: {last}",
                          "is the node up and answering? (--timeout bounds the whole wait)")

    def probe(self, path: str, timeout_s: float) -> Response | None:
        """One GET, no retry (a readiness poll): the answer, or None when nothing answered in time."""
        try:
            status, raw = self._attempt("GET", self.base + path, None, timeout_s)
        except (TimeoutError, _TooLarge, httpx.HTTPError):
            return None
        return Response(status, parse_json(raw))

    def _attempt(self, method: str, url: str, data: bytes | None, timeout_s: float) -> tuple[int, bytes]:
        """One request, connect to last byte, within timeout_s (TimeoutError past it)."""
        box: dict = {}
        cancelled = threading.Event()

        def work() -> None:
            try:
                box["result"] = self._exchange(method, url, data, timeout_s, cancelled)
            except BaseException as e:  # handed to the caller's thread
                box["error"] = e

        t = threading.Thread(target=work, name="mlvalidate-http", daemon=True)
        t.start()
        try:
            interrupts.join(t, timeout_s)
        except KeyboardInterrupt:
            cancelled.set()
            raise
        if t.is_alive():
            cancelled.set()  # the worker gives up at its next chunk or its own socket timeout
            raise TimeoutError
        if "error" in box:
            raise box["error"]
        return box["result"]

    def _exchange(self, method, url, data, timeout_s, cancelled: threading.Event) -> tuple[int, bytes]:
        timeout = httpx.Timeout(timeout_s, connect=min(self.connect_timeout, timeout_s))
        headers = {"Content-Type": "application/json"} if data is not None else {}
        with self.client().stream(method, url, content=data, headers=headers, timeout=timeout) as r:
            buf = bytearray()
            for chunk in r.iter_bytes():
                if cancelled.is_set():
                    raise TimeoutError
                buf += chunk
                if len(buf) > self.max_body_bytes:
                    raise _TooLarge
            return r.status_code, bytes(buf)

    def client(self) -> httpx.Client:
        with self._client_lock:
            if self._client is None:
                # trust_env: *_PROXY / NO_PROXY from the environment, except for loopback
                self._client = httpx.Client(trust_env=not is_loopback(self.base), follow_redirects=False)
            return self._client


def _reason(e: Exception) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:200]


def parse_json(raw: bytes):
    """JSON of a body, or its text when it is not JSON (also when nested too deep to parse);
    lone surrogates in its strings become U+FFFD (jsonio.parse_answer): what a node says is
    kept in the bundle and printed, whatever it is."""
    return parse_answer(raw or b"null")
