"""The chain queries behind `chain status`: the recent block time (CometBFT), the latest
bootstrap_model_preeligibility event, and intent coverage (one poc_delegation lookup per
participant, several at a time, within the command's deadline)."""

from __future__ import annotations

import datetime as _dt
import threading
import time
import urllib.parse

from .. import interrupts
from ..errors import MlvalidateError
from .reading import (
    BLOCK_RESULTS_PATH,
    BLOCK_SEARCH_PATH,
    DELEGATION_PATH,
    FINALIZE_EVENTS,
    HEADER_HEIGHT,
    HEADER_TIME,
    INTENT_MODEL,
    INTENTS,
    PARTICIPANT_ADDRESS,
    SEARCH_BLOCKS,
    Answer,
    ChainClient,
    ChainError,
    shown,
    weight_of,
)

BLOCK_TIME_WINDOW = 100  # blocks back for the recent block time
DEFAULT_BLOCK_TIME_S = 6.0  # used (and said so) when the RPC cannot give a recent block time

PREELIGIBILITY_EVENT = "bootstrap_model_preeligibility"
# the attributes the documents name, in their order (model_id is the match key)
PREELIGIBILITY_FIELDS = ("pre_eligible", "meets_v_min", "meets_weight_threshold", "meets_reachability",
                         "intent_host_count", "intent_weight", "total_network_weight")

# the documents' script: 5 retries (backoff factor 0.5, 60 s timeout), 0.15 s between participants;
# here LOOKUP_WORKERS such lookups at a time, each worker pacing its own, within `chain status --timeout`
LOOKUP_RETRIES = 5
LOOKUP_TIMEOUT_S = 60.0
LOOKUP_INTERVAL_S = 0.15
LOOKUP_WORKERS = 8


def rfc3339(text, name: str) -> float:
    s = str(text).strip().replace("Z", "+00:00")
    if "." in s:  # CometBFT gives nanoseconds; Python reads microseconds
        head, rest = s.split(".", 1)
        digits = "".join(c for c in rest if c.isdigit())
        s = f"{head}.{digits[:6]}{rest[len(digits):]}"
    try:
        return _dt.datetime.fromisoformat(s).timestamp()
    except (ValueError, OverflowError, OSError):  # not a time, or one no clock can hold
        raise ChainError(f"{name}: {shown(text)} is not an RFC 3339 time", "the chain's answer shape differs") from None


def recent_block_time(client: ChainClient, height: int, t_latest: float) -> tuple[float, str]:
    """Mean block time over the last BLOCK_TIME_WINDOW blocks (CometBFT block_search by height);
    DEFAULT_BLOCK_TIME_S, said so, when that cannot be read."""
    back = min(BLOCK_TIME_WINDOW, height - 1)
    if back < 1:
        return DEFAULT_BLOCK_TIME_S, f"assumed {DEFAULT_BLOCK_TIME_S:g} s"
    label = f"{BLOCK_SEARCH_PATH}?query=\"block.height=H\""
    try:
        a = client.get(BLOCK_SEARCH_PATH, {"query": f'"block.height={height - back}"', "per_page": "1"}, label=label)
        blocks = a.need_list(SEARCH_BLOCKS)
        if not blocks:
            raise ChainError(f"no block at height {height - back} in GET {a.url}")
        header = Answer(url=a.url, label=a.label, body=blocks[0] if isinstance(blocks[0], dict) else {})
        t0 = rfc3339(header.need(HEADER_TIME, "result.blocks[0].block.header.time"), "block time")
        a.trail.found(label, "result.blocks[0].block.header.time")
    except MlvalidateError as e:
        client.trail.not_found(label, "result.blocks[0].block.header.time",
                               f"block time assumed {DEFAULT_BLOCK_TIME_S:g} s")
        return DEFAULT_BLOCK_TIME_S, f"assumed {DEFAULT_BLOCK_TIME_S:g} s ({e.one_line()})"
    bt = (t_latest - t0) / back
    if bt <= 0:
        return DEFAULT_BLOCK_TIME_S, f"assumed {DEFAULT_BLOCK_TIME_S:g} s (block times not increasing)"
    return bt, f"mean of the last {back} blocks"


def attribute_value(v):
    """An event attribute (always a string on the chain): "true"/"false" -> bool, integers -> int,
    other numbers -> float, anything else as it is."""
    if v is None:
        return None
    s = str(v)
    if s in ("true", "false"):
        return s == "true"
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        return s


def preeligibility_query(model: str) -> str:
    return f"\"{PREELIGIBILITY_EVENT}.model_id='{model}'\""


def latest_preeligibility(client: ChainClient, model: str) -> dict | None:
    """The latest bootstrap_model_preeligibility event for `model`: block_search (highest height)
    then block_results' finalize_block_events. None when the search finds no block yet.

    The returned dict has the height, the URL, every attribute as the chain sent it (strings,
    unknown ones included), the documented ones decoded, and the names of the unknown ones."""
    search_label = f"{BLOCK_SEARCH_PATH}?query={preeligibility_query('MODEL')}"
    # order_by desc: the newest blocks on the first page (CometBFT); the maximum is taken anyway
    a = client.get(BLOCK_SEARCH_PATH, {"query": preeligibility_query(model), "order_by": '"desc"'},
                   label=search_label)
    blocks = a.need_list(SEARCH_BLOCKS)
    if not blocks:
        return None
    heights = []
    for i, b in enumerate(blocks):
        sub = Answer(url=a.url, label=a.label, body=b if isinstance(b, dict) else {})
        heights.append(sub.need_int(HEADER_HEIGHT, f"result.blocks[{i}].block.header.height"))
    a.trail.found(a.label, "result.blocks[].block.header.height")
    height = max(heights)

    r = client.get(BLOCK_RESULTS_PATH, {"height": str(height)}, label=f"{BLOCK_RESULTS_PATH}?height=H")
    events = r.need(FINALIZE_EVENTS)
    if events is None:
        events = []
    if not isinstance(events, list):
        raise ChainError(f"field result.finalize_block_events is not a list in GET {r.url}",
                         "the chain's answer differs from the bootstrap documents' shape")
    found = None
    for ev in events:
        if not isinstance(ev, dict) or ev.get("type") != PREELIGIBILITY_EVENT:
            continue
        attrs = {}
        items = ev.get("attributes") or []
        if not isinstance(items, list):
            raise ChainError(f"field attributes of a {PREELIGIBILITY_EVENT} event is not a list "
                             f"({type(items).__name__}) in GET {r.url}", "the chain's answer differs from the "
                             "bootstrap documents' shape")
        for item in items:
            if isinstance(item, dict) and "key" in item:
                v = item.get("value")
                attrs[str(item["key"])] = v if v is None or isinstance(v, str) else str(v)
        if attrs.get("model_id") == model:
            found = attrs  # the last one in the block wins
    if found is None:
        raise ChainError(f"no {PREELIGIBILITY_EVENT} event with model_id {model!r} in "
                         f"result.finalize_block_events in GET {r.url}",
                         "block_search and block_results disagree")
    r.trail.found(r.label, f"result.finalize_block_events[type={PREELIGIBILITY_EVENT}].attributes[{{key, value}}]")
    out = {"height": height, "url": r.url, "attributes": found}
    for k in PREELIGIBILITY_FIELDS:
        out[k] = attribute_value(found.get(k))
        if k not in found:
            client.trail.not_found(r.label, f"attribute {k}", "shown as n/a")
    out["unknown"] = [k for k in found if k != "model_id" and k not in PREELIGIBILITY_FIELDS]
    return out


def intents_of(answer, model: str) -> bool:
    """Does this poc_delegation answer hold an intent for `model`? `.intents` may be null or
    missing (no intent); any other non-list is a ChainError."""
    intents = answer.body.get(INTENTS[0])
    if intents is None:
        return False
    if not isinstance(intents, list):
        raise ChainError(f"field intents is not a list ({type(intents).__name__}) in GET {answer.url}")
    return any(isinstance(it, dict) and it.get(INTENT_MODEL) == model for it in intents)


def intent_coverage(client: ChainClient, participants: list, model: str, *, lookup_deadline_s: float = LOOKUP_TIMEOUT_S,
                    min_interval_s: float = LOOKUP_INTERVAL_S, max_retries: int = LOOKUP_RETRIES,
                    workers: int = LOOKUP_WORKERS, until: float | None = None) -> dict:
    """Participants with a PoCIntent for `model` (poc_delegation/{address} -> .intents[].model_id).

    intent weight = the summed weight of the participants with an intent; zero-weight intents
    count as hosts (toward V_min) and add no weight; share = intent weight / the summed weight of
    every participant. `workers` lookups run at a time, each worker's at least `min_interval_s`
    apart, each retried on 502/503/504 up to `max_retries` times with backoff; none starts or
    runs past `until` (a time.monotonic(): `chain status --timeout`). A participant whose lookup
    fails, or is not reached in time, is listed as skipped, in the participants' order."""
    label = DELEGATION_PATH
    weights, addrs, unreadable = [], [], []
    for p in participants:
        w = weight_of(p)
        addr = p.get(PARTICIPANT_ADDRESS) if isinstance(p, dict) else None
        if w is None:
            unreadable.append(str(addr))
            w = 0
        weights.append(w)
        addrs.append(addr if isinstance(addr, (str, int)) and str(addr) else None)
    answers: list = [None] * len(participants)  # True / False, or why it was skipped (a str)
    todo = [i for i, a in enumerate(addrs) if a is not None]
    lock = threading.Lock()

    def work() -> None:
        last = 0.0
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop(0)
            wait = last + min_interval_s - time.monotonic()
            if until is not None and time.monotonic() + max(wait, 0.0) >= until:
                answers[i] = "not looked up within --timeout"
                continue
            if wait > 0:
                time.sleep(wait)
            last = time.monotonic()
            try:
                a = client.get(DELEGATION_PATH.format(address=urllib.parse.quote(str(addrs[i]), safe="")), label=label,
                               lookup=True, deadline_s=lookup_deadline_s, max_retries=max_retries)
                answers[i] = intents_of(a, model)
            except MlvalidateError as e:
                answers[i] = e.one_line()
            except Exception as e:  # noqa: BLE001 — a bug costs this lookup, never the command or a traceback
                answers[i] = f"internal error: {type(e).__name__}: {' '.join(str(e).split())[:200]} (a bug in mlvalidate)"

    threads = [threading.Thread(target=work, name="chain-lookup", daemon=True) for _ in range(max(1, min(workers, len(todo))))]
    for t in threads:
        t.start()
    for t in threads:
        interrupts.join(t, float("inf"))  # in slices: Ctrl-C is noticed whichever thread the kernel gave it to
    hosts, zero, skipped = [], [], []
    for i, (addr, w, has) in enumerate(zip(addrs, weights, answers)):
        if addr is None:
            skipped.append({"address": None, "reason": f"no {PARTICIPANT_ADDRESS} field in the participant"})
        elif isinstance(has, str) or has is None:
            skipped.append({"address": addr, "reason": has or "not looked up"})
        elif has:
            hosts.append(addr)
            if w == 0:
                zero.append(addr)
    total = sum(weights)
    weight = sum(w for addr, w, has in zip(addrs, weights, answers) if has is True)
    if len(skipped) < len(participants):
        client.trail.found(label, "intents[].model_id")
    return {"participants": len(participants), "intent_hosts": hosts, "intent_host_count": len(hosts),
            "zero_weight_intent_hosts": zero, "intent_weight": weight, "total_weight": total,
            "share": weight / total if total > 0 else 0.0, "skipped": skipped, "unreadable_weights": unreadable}
