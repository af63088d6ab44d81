"""Reading the chain's answers: the endpoints, the field paths the bootstrap documents use, a
client whose answers remember their URL, and the decoding of strings, decimals and weights.

Every field the documents name is looked up through an `Answer`, so that an absent field is one
line naming the field and the URL it was read from, and every field read (or not found, where
that is allowed) is recorded for the report's "read" / "not found" lines.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from ..http_client import RETRY_STATUSES, HttpClient
from ..errors import MlvalidateError
from ..shipped import cite

# ---- endpoints (docs/chain-api.md) -------------------------------------------------------
PARAMS_PATH = "/chain-api/productscience/inference/inference/params"
PARTICIPANTS_PATH = "/v1/epochs/current/participants"
DELEGATION_PATH = "/chain-api/productscience/inference/inference/poc_delegation/{address}"
BLOCK_SEARCH_PATH = "/chain-rpc/block_search"
BLOCK_RESULTS_PATH = "/chain-rpc/block_results"
STATUS_PATH = "/chain-rpc/status"  # CometBFT; the bootstrap documents do not query it

# ---- field paths (docs/chain-api.md) -----------------------------------------------------
EPOCH_LENGTH = ("params", "epoch_params", "epoch_length")
DELEGATION_PARAMS = ("params", "delegation_params")
W_THRESHOLD = (*DELEGATION_PARAMS, "w_threshold")
V_MIN = (*DELEGATION_PARAMS, "v_min")  # only if the answer carries it beside w_threshold
CURRENT_EPOCH = ("active_participants", "epoch_id")
CURRENT_POC_START = ("active_participants", "poc_start_block_height")
PARTICIPANTS = ("active_participants", "participants")
PARTICIPANT_ADDRESS, PARTICIPANT_WEIGHT = "index", "weight"
SEARCH_BLOCKS = ("result", "blocks")
HEADER_HEIGHT = ("block", "header", "height")
HEADER_TIME = ("block", "header", "time")
FINALIZE_EVENTS = ("result", "finalize_block_events")
INTENTS = ("intents",)
INTENT_MODEL = "model_id"
# CometBFT status (the documents are silent; kept as the harness read it before)
LATEST_HEIGHT = ("result", "sync_info", "latest_block_height")
LATEST_TIME = ("result", "sync_info", "latest_block_time")

SHAPE_HINT = cite("the chain's answer differs from the bootstrap documents' shape (docs/chain-api.md)")
INT64_MAX = 2**63 - 1  # heights, epochs and weights are int64 on the chain: anything past it is not a chain value
EPOCH_LENGTH_MAX = 10**8  # blocks per epoch (15391 on mainnet); past this a projection means nothing


class ChainError(MlvalidateError):
    """A chain endpoint answered something we cannot read."""


def path_text(path) -> str:
    return ".".join(str(k) for k in path)


@dataclass
class Trail:
    """Which field paths were read from which endpoint, and which could not be found."""

    read: dict = field(default_factory=dict)  # endpoint label -> [field path, ...] in reading order
    missing: list = field(default_factory=list)  # {"field", "endpoint", "then"}

    def found(self, label: str, fld: str) -> None:
        seen = self.read.setdefault(label, [])
        if fld not in seen:
            seen.append(fld)

    def not_found(self, label: str, fld: str, then: str) -> None:
        entry = {"field": fld, "endpoint": label, "then": then}
        if entry not in self.missing:
            self.missing.append(entry)


@dataclass
class Answer:
    url: str  # the full URL, query included: named in every error about this answer
    label: str  # the endpoint as the report groups it (a template for per-address lookups)
    body: dict
    trail: Trail | None = None

    def _fail(self, what: str) -> ChainError:
        return ChainError(f"{what} in GET {self.url}", SHAPE_HINT)

    def need(self, path, name: str | None = None):
        """The value at `path`; absent: ChainError naming the field and this URL."""
        cur = self.body
        for i, key in enumerate(path):
            if not (isinstance(cur, dict) and key in cur):
                raise self._fail(f"missing field {name or path_text(path[: i + 1])}")
            cur = cur[key]
        if self.trail is not None:
            self.trail.found(self.label, name or path_text(path))
        return cur

    def has(self, path) -> bool:
        cur = self.body
        for key in path:
            if not (isinstance(cur, dict) and key in cur):
                return False
            cur = cur[key]
        return True

    def need_int(self, path, name: str | None = None, *, minimum: int = 0, maximum: int = INT64_MAX) -> int:
        """An integer field within [minimum, maximum] (a chain height, epoch or length is never
        negative, never past int64); anything else is a ChainError naming the field and the URL."""
        value = self.need(path, name)
        n = as_int(value)
        fld = name or path_text(path)
        if n is None:
            raise self._fail(f"field {fld} = {shown(value)} is not an integer")
        if not minimum <= n <= maximum:
            raise self._fail(f"field {fld} = {shown(value)} is out of range (expected {minimum}..{maximum})")
        return n

    def need_list(self, path, name: str | None = None) -> list:
        value = self.need(path, name)
        if not isinstance(value, list):
            raise self._fail(f"field {name or path_text(path)} is not a list ({type(value).__name__})")
        return value

    def need_decimal(self, path, name: str | None = None) -> Decimal:
        value = self.need(path, name)
        fld = name or path_text(path)
        if isinstance(value, dict):
            for part in ("value", "exponent"):
                if part not in value:
                    raise self._fail(f"missing field {fld}.{part}")
        try:
            d = decode_decimal(value)
        except ValueError as e:
            raise self._fail(f"field {fld} = {shown(value)} is not a {{value, exponent}} decimal ({e})") from None
        if not 0 <= d <= INT64_MAX:
            raise self._fail(f"field {fld} = {shown(value)} is out of range (expected 0..{INT64_MAX})")
        return d


def shown(value, limit: int = 60) -> str:
    """repr of a value for a message, cut to `limit` characters (a 401-digit height included)."""
    try:
        text = repr(value)
    except ValueError:  # an int past Python's digit limit
        text = f"an integer of about {value.bit_length() * 3 // 10} digits"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def as_int(value) -> int | None:
    """An integer sent as a number or as a string ("15391", at most 30 digits); None when it is
    not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if not isinstance(value, str) or len(value.strip()) > 30:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def decode_decimal(value) -> Decimal:
    """The chain's `{value, exponent}` decimal ({"value": "1", "exponent": -1} -> 0.1), exactly;
    a plain number or numeric string is taken as it is. ValueError when it is neither."""
    if isinstance(value, dict):
        v, e = as_int(value.get("value")), as_int(value.get("exponent"))
        if v is None or e is None:
            raise ValueError("value and exponent must be integers")
        if not -40 <= e <= 40:  # the chain's decimals carry exponents of a few digits; 1e-400 is not a weight
            raise ValueError(f"exponent {e} is out of range (-40..40)")
        return Decimal(v).scaleb(e)
    if isinstance(value, bool) or value is None or not isinstance(value, (int, float, str)):
        raise ValueError("not a number")
    text = str(value).strip()
    if len(text) > 40:
        raise ValueError("not a number of at most 40 characters")
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise ValueError("not a number") from None
    if not d.is_finite() or abs(d.adjusted()) > 40:
        raise ValueError("not a finite number within 1e-40..1e40")
    return d


def weight_of(participant) -> int | float | None:
    """A participant's voting weight. 0, missing and null all mean "no voting weight" (0);
    None when the field is there but unreadable — not a number, negative, not finite, or past
    int64 (the caller counts it as 0 and says so)."""
    w = participant.get(PARTICIPANT_WEIGHT) if isinstance(participant, dict) else None
    if w is None:
        return 0
    try:
        d = decode_decimal(w)
    except ValueError:
        return None
    if not 0 <= d <= INT64_MAX:
        return None
    return int(d) if d == d.to_integral_value() else float(d)


class ChainClient:
    """GETs against one node; an answer that is not a JSON object, or not HTTP 200, is a ChainError.
    Per-participant lookups use their own retry policy (the documents': 5 retries on 502/503/504,
    backoff factor 0.5, 60 s timeout)."""

    def __init__(self, base_url: str, *, deadline_s: float = 60.0, backoff_s: float = 1.0,
                 lookup_backoff_s: float = 0.5, lookup_timeout_s: float = 60.0, log=None):
        self.http = HttpClient(base_url, request_timeout=30.0, deadline_s=deadline_s, backoff_s=backoff_s,
                               max_backoff_s=10.0, log=log)
        self.lookup_http = HttpClient(base_url, request_timeout=lookup_timeout_s, deadline_s=lookup_timeout_s,
                                      backoff_s=lookup_backoff_s, max_backoff_s=8.0, log=log)
        self.base = self.http.base
        self.trail = Trail()

    def get(self, path: str, query: dict | None = None, *, label: str | None = None, lookup: bool = False,
            deadline_s: float | None = None, max_retries: int | None = None) -> Answer:
        full = path + ("?" + urllib.parse.urlencode(query) if query else "")
        url = self.base + full
        tries = [0]

        def give_up(resp, seconds) -> bool:
            tries[0] += 1
            return max_retries is not None and tries[0] > max_retries

        http = self.lookup_http if lookup else self.http
        resp = http.request("GET", full, deadline_s=deadline_s, give_up=give_up)
        if resp.status in RETRY_STATUSES:
            raise ChainError(f"GET {url}: HTTP {resp.status} after {tries[0] - 1} retries: {resp.detail()}",
                             "the node is under load; run again later")
        if resp.status != 200:
            raise ChainError(f"GET {url}: HTTP {resp.status}: {resp.detail()}", "is this a Gonka node's URL?")
        if not isinstance(resp.body, dict):
            head = " ".join(str(resp.body).split())[:80]
            raise ChainError(f"GET {url}: malformed JSON ({head!r})", "is this a Gonka node's chain API (URL, proxy)?")
        return Answer(url=url, label=label or path, body=resp.body, trail=self.trail)
