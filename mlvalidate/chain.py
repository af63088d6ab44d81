"""Chain readiness: when is the snapshot block, and where does the bootstrap stand.

Reads a Gonka node's chain REST (`/chain-api/...`), its public API (`/v1/epochs/...`) and its
CometBFT RPC (`/chain-rpc/...`). The exact response shapes are not in our docs: the field paths
below are OUR BEST READING of a Cosmos-SDK / CometBFT chain and the Gonka inference module, kept
here as named constants so that a shape change is a one-line edit. A response that is not JSON,
or lacks a field we need, is a ChainError (one line naming the field, exit 2).

* latest height and time: `/chain-rpc/status` -> result.sync_info.latest_block_height / _time
* recent block time: `/chain-rpc/block_search?query="block.height=H-N"` -> result.blocks[0].block.header.time
* current epoch: the participants endpoint (`/v1/epochs/current/participants`),
  active_participants.epoch_id (falls back to epoch_group_id), with its poc_start_block_height
  and the participants' index (address) and weight
* epoch length and bootstrap thresholds: the params endpoint, params.epoch_params.epoch_length,
  params.bootstrap_params.w_threshold {value, exponent} and params.bootstrap_params.v_min.
  `epoch_shift` is never used: it is stale on mainnet.
* pre-eligibility: `/chain-rpc/block_search?query="bootstrap_model_preeligibility.model_id='M'"`
  (order_by desc), then `/chain-rpc/block_results?height=H` -> result.finalize_block_events
  (older chains: end_block_events, txs_results[].events), {type, attributes: [{key, value}]}
* intents: `/chain-api/.../poc_delegation/{address}` -> poc_intents[].model_id (or intents[])
"""

from __future__ import annotations

import datetime as _dt
import json
import time
import urllib.parse
from dataclasses import asdict, dataclass, field

from .engines.http import HttpClient
from .errors import MlvalidateError

PARAMS_PATH = "/chain-api/productscience/inference/inference/params"
PARTICIPANTS_PATH = "/v1/epochs/current/participants"
DELEGATION_PATH = "/chain-api/productscience/inference/inference/poc_delegation/{address}"
STATUS_PATH = "/chain-rpc/status"
BLOCK_SEARCH_PATH = "/chain-rpc/block_search"
BLOCK_RESULTS_PATH = "/chain-rpc/block_results"

# field paths (our best reading of the shapes)
LATEST_HEIGHT = ("result", "sync_info", "latest_block_height")
LATEST_TIME = ("result", "sync_info", "latest_block_time")
SEARCH_BLOCKS = ("result", "blocks")
HEADER_HEIGHT = ("block", "header", "height")
HEADER_TIME = ("block", "header", "time")
EPOCH_LENGTH = ("params", "epoch_params", "epoch_length")
W_THRESHOLD = ("params", "bootstrap_params", "w_threshold")
V_MIN = ("params", "bootstrap_params", "v_min")
ACTIVE = ("active_participants",)
CURRENT_EPOCH_KEYS = ("epoch_id", "epoch_group_id")  # first present wins
POC_START = ("active_participants", "poc_start_block_height")
PARTICIPANT_LIST = ("active_participants", "participants")
PARTICIPANT_ADDRESS, PARTICIPANT_WEIGHT = "index", "weight"
INTENT_LIST_KEYS = ("poc_intents", "intents")
RESULT_EVENT_KEYS = ("finalize_block_events", "end_block_events", "begin_block_events")
PREELIGIBILITY_EVENT = "bootstrap_model_preeligibility"
PREELIGIBILITY_FIELDS = ("pre_eligible", "meets_v_min", "meets_weight_threshold", "meets_reachability",
                         "intent_host_count", "intent_weight")

BLOCK_TIME_WINDOW = 100  # blocks back for the recent block time
DEFAULT_BLOCK_TIME_S = 6.0  # used (and said so) when the RPC cannot give a recent block time
DEFAULT_SNAPSHOT_OFFSET = 500


class ChainError(MlvalidateError):
    """A chain endpoint answered something we cannot read."""


def dig(doc, path: tuple, what: str):
    cur = doc
    for i, key in enumerate(path):
        if isinstance(cur, dict) and key in cur:
            cur = cur[key]
        elif isinstance(cur, list) and isinstance(key, int) and -len(cur) <= key < len(cur):
            cur = cur[key]
        else:
            raise ChainError(f"{what}: missing field {'.'.join(str(k) for k in path[: i + 1])}",
                             "the chain's response shape differs from our reading (mlvalidate/chain.py)")
    return cur


def as_int(value, name: str) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        raise ChainError(f"{name}: {value!r} is not an integer", "the chain's response shape differs") from None


def decode_decimal(value, name: str = "decimal") -> float:
    """The chain's {value, exponent} decimal (value "1", exponent -1 -> 0.1), or a plain number."""
    if isinstance(value, dict):
        if "value" not in value or "exponent" not in value:
            raise ChainError(f"{name}: missing field {'value' if 'value' not in value else 'exponent'}",
                             "expected a {value, exponent} decimal")
        return as_int(value["value"], name + ".value") * 10.0 ** as_int(value["exponent"], name + ".exponent")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ChainError(f"{name}: {value!r} is not a number", "expected a {value, exponent} decimal") from None


def weight_of(participant) -> float:
    """A participant's weight; 0, missing, null or unreadable count as 0."""
    w = participant.get(PARTICIPANT_WEIGHT) if isinstance(participant, dict) else None
    try:
        return max(float(w), 0.0) if w is not None else 0.0
    except (TypeError, ValueError):
        return 0.0


@dataclass
class Projection:
    current_epoch: int
    target_epoch: int
    poc_start: int
    snapshot: int
    latest_height: int
    blocks_remaining: int
    block_time_s: float
    eta_s: float
    punishment_epoch: int | None
    past_punishment: bool | None


def project(current_epoch: int, current_poc_start: int, epoch_length: int, target_epoch: int, *,
            latest_height: int, block_time_s: float, snapshot_offset: int = DEFAULT_SNAPSHOT_OFFSET,
            punishment_epoch: int | None = None) -> Projection:
    """poc_start = current_poc_start + (N - current_epoch) * epoch_length; snapshot = poc_start - offset."""
    poc_start = current_poc_start + (target_epoch - current_epoch) * epoch_length
    snapshot = poc_start - snapshot_offset
    remaining = snapshot - latest_height
    return Projection(
        current_epoch=current_epoch, target_epoch=target_epoch, poc_start=poc_start, snapshot=snapshot,
        latest_height=latest_height, blocks_remaining=remaining, block_time_s=block_time_s,
        eta_s=remaining * block_time_s, punishment_epoch=punishment_epoch,
        past_punishment=None if punishment_epoch is None else target_epoch >= punishment_epoch,
    )


@dataclass
class ChainStatus:
    model: str
    projection: Projection
    block_time_source: str
    w_threshold: float
    v_min: float | None
    preeligibility: dict | None  # the latest event's fields (+ height), None: none yet
    intent: dict | None = None  # coverage; None when not asked
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


class ChainClient:
    def __init__(self, base_url: str, *, deadline_s: float = 60.0, backoff_s: float = 1.0, log=None):
        self.http = HttpClient(base_url, request_timeout=30.0, deadline_s=deadline_s, backoff_s=backoff_s,
                               max_backoff_s=10.0, log=log)
        self.base = self.http.base

    def get(self, path: str, query: dict | None = None, *, deadline_s: float | None = None) -> dict:
        full = path + ("?" + urllib.parse.urlencode(query) if query else "")
        resp = self.http.request("GET", full, deadline_s=deadline_s)
        if resp.status != 200:
            raise ChainError(f"GET {self.base}{path}: HTTP {resp.status}: {resp.detail()}", "is this a Gonka node's URL?")
        if not isinstance(resp.body, dict):
            head = " ".join(str(resp.body).split())[:80]
            raise ChainError(f"GET {self.base}{path}: malformed JSON ({head!r})",
                             "is this a Gonka node's chain API (URL, proxy)?")
        return resp.body


def _time(text: str, name: str) -> float:
    s = str(text).strip().replace("Z", "+00:00")
    if "." in s:  # CometBFT gives nanoseconds; Python reads microseconds
        head, rest = s.split(".", 1)
        digits = "".join(c for c in rest if c.isdigit())
        s = f"{head}.{digits[:6]}{rest[len(digits):]}"
    try:
        return _dt.datetime.fromisoformat(s).timestamp()
    except ValueError:
        raise ChainError(f"{name}: {text!r} is not an RFC 3339 time", "the chain's response shape differs") from None


def recent_block_time(client: ChainClient, height: int, t_latest: float) -> tuple[float, str]:
    back = min(BLOCK_TIME_WINDOW, height - 1)
    if back < 1:
        return DEFAULT_BLOCK_TIME_S, f"assumed {DEFAULT_BLOCK_TIME_S:g} s"
    try:
        doc = client.get(BLOCK_SEARCH_PATH, {"query": f'"block.height={height - back}"', "per_page": "1"})
        blocks = dig(doc, SEARCH_BLOCKS, "block_search")
        if not blocks:
            raise ChainError("no block")
        t0 = _time(dig(blocks[0], HEADER_TIME, "block_search block"), "block time")
    except ChainError as e:
        return DEFAULT_BLOCK_TIME_S, f"assumed {DEFAULT_BLOCK_TIME_S:g} s ({e.one_line()})"
    bt = (t_latest - t0) / back
    if bt <= 0:
        return DEFAULT_BLOCK_TIME_S, f"assumed {DEFAULT_BLOCK_TIME_S:g} s (block times not increasing)"
    return bt, f"mean of the last {back} blocks"


def latest_preeligibility(client: ChainClient, model: str) -> dict | None:
    doc = client.get(BLOCK_SEARCH_PATH, {"query": f"\"{PREELIGIBILITY_EVENT}.model_id='{model}'\"",
                                         "order_by": '"desc"', "per_page": "5"})
    blocks = dig(doc, SEARCH_BLOCKS, "block_search")
    if not isinstance(blocks, list):
        raise ChainError("block_search: result.blocks is not a list", "the chain's response shape differs")
    if not blocks:
        return None
    height = max(as_int(dig(b, HEADER_HEIGHT, "block_search block"), "block height") for b in blocks)
    res = dig(client.get(BLOCK_RESULTS_PATH, {"height": str(height)}), ("result",), "block_results")
    events = []
    for key in RESULT_EVENT_KEYS:
        events += res.get(key) or []
    for tx in res.get("txs_results") or []:
        events += (tx or {}).get("events") or []
    found = None
    for ev in events:
        if not isinstance(ev, dict) or ev.get("type") != PREELIGIBILITY_EVENT:
            continue
        attrs = {a.get("key"): a.get("value") for a in ev.get("attributes") or [] if isinstance(a, dict)}
        if attrs.get("model_id") == model:
            found = attrs
    if found is None:
        raise ChainError(f"block_results at height {height}: no {PREELIGIBILITY_EVENT} event for {model}",
                         "block_search and block_results disagree")
    return {"height": height, **{k: _attr(found.get(k)) for k in PREELIGIBILITY_FIELDS}}


def _attr(v):
    if v is None:
        return None
    s = str(v)
    if s.lower() in ("true", "false"):
        return s.lower() == "true"
    try:
        return int(s)
    except ValueError:
        try:
            return float(s)
        except ValueError:
            return s


def has_intent(doc: dict, model: str) -> bool:
    for key in INTENT_LIST_KEYS:
        for it in doc.get(key) or []:
            if isinstance(it, dict) and it.get("model_id") == model:
                return True
    return False


def intent_coverage(client: ChainClient, participants: list, model: str, *, lookup_deadline_s: float = 20.0,
                    min_interval_s: float = 0.1) -> dict:
    """Participants with a PoCIntent for `model`: intent weight / total weight. Each lookup is
    retried with backoff (502/503/504, connection errors) up to `lookup_deadline_s`; lookups are at
    least `min_interval_s` apart; a participant whose lookup still fails is listed as skipped."""
    total, weight, hosts, skipped, last = 0.0, 0.0, [], [], 0.0
    for p in participants:
        w = weight_of(p)
        total += w
        addr = p.get(PARTICIPANT_ADDRESS) if isinstance(p, dict) else None
        if not addr:
            skipped.append({"address": None, "reason": f"no {PARTICIPANT_ADDRESS} field"})
            continue
        wait = last + min_interval_s - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        last = time.monotonic()
        try:
            doc = client.get(DELEGATION_PATH.format(address=urllib.parse.quote(str(addr), safe="")),
                             deadline_s=lookup_deadline_s)
        except MlvalidateError as e:
            skipped.append({"address": addr, "reason": e.one_line()})
            continue
        if has_intent(doc, model):
            hosts.append(addr)
            weight += w
    return {"participants": len(participants), "intent_hosts": hosts, "intent_host_count": len(hosts),
            "intent_weight": weight, "total_weight": total, "coverage": weight / total if total > 0 else 0.0,
            "skipped": skipped}


def chain_status(node: str, model: str | None = None, epoch: int | None = None, *, intents: bool = True,
                 deadline_s: float = 60.0, backoff_s: float = 1.0, lookup_deadline_s: float = 20.0,
                 min_interval_s: float = 0.1, log=None) -> ChainStatus:
    from .serving.chain_model import load_chain

    chain = None
    try:
        chain = load_chain(model or "minimaxai-minimax-m2.7")
    except (MlvalidateError, OSError, ValueError):
        if model is None:
            raise
    if chain is not None and (model is None or model == chain.id):
        model = chain.model_id
    if chain is not None and chain.model_id != model:
        chain = None
    punish = (chain.punishment or {}).get("from_epoch") if chain else None
    offset = (chain.snapshot or {}).get("blocks_before_poc_start", DEFAULT_SNAPSHOT_OFFSET) if chain else DEFAULT_SNAPSHOT_OFFSET

    client = ChainClient(node, deadline_s=deadline_s, backoff_s=backoff_s, log=log)
    st = client.get(STATUS_PATH)
    height = as_int(dig(st, LATEST_HEIGHT, "status"), "latest_block_height")
    t_latest = _time(dig(st, LATEST_TIME, "status"), "latest_block_time")
    params = client.get(PARAMS_PATH)
    epoch_length = as_int(dig(params, EPOCH_LENGTH, "params"), "epoch_length")
    w_threshold = decode_decimal(dig(params, W_THRESHOLD, "params"), "w_threshold")
    v_raw = dig(params, V_MIN, "params")
    v_min = decode_decimal(v_raw, "v_min") if v_raw is not None else None
    parts = client.get(PARTICIPANTS_PATH)
    active = dig(parts, ACTIVE, "participants")
    key = next((k for k in CURRENT_EPOCH_KEYS if isinstance(active, dict) and k in active), CURRENT_EPOCH_KEYS[0])
    current = as_int(dig(parts, (*ACTIVE, key), "participants"), key)
    poc_start = as_int(dig(parts, POC_START, "participants"), "poc_start_block_height")
    target = current + 1 if epoch is None else epoch
    bt, bt_source = recent_block_time(client, height, t_latest)
    proj = project(current, poc_start, epoch_length, target, latest_height=height, block_time_s=bt,
                   snapshot_offset=int(offset), punishment_epoch=punish)
    status = ChainStatus(model=model, projection=proj, block_time_source=bt_source, w_threshold=w_threshold,
                         v_min=v_min, preeligibility=latest_preeligibility(client, model))
    if proj.blocks_remaining < 0:
        status.notes.append(f"epoch {target}'s snapshot block has passed")
    if intents:
        plist = dig(parts, PARTICIPANT_LIST, "participants")
        if not isinstance(plist, list):
            raise ChainError("participants: active_participants.participants is not a list", "the shape differs")
        status.intent = intent_coverage(client, plist, model, lookup_deadline_s=lookup_deadline_s,
                                        min_interval_s=min_interval_s)
    return status


def _eta(seconds: float) -> str:
    a = abs(seconds)
    span = f"≈ {a / 3600:.1f} h" if a >= 3600 else f"≈ {a / 60:.0f} min"
    return f"{span} ago" if seconds < 0 else f"{span} from now"


def readiness_lines(s: ChainStatus) -> list[str]:
    p = s.projection
    lines = [f"snapshot      epoch {p.target_epoch}: snapshot at block {p.snapshot}, {_eta(p.eta_s)} "
             f"({p.blocks_remaining} blocks at {p.block_time_s:.2f} s/block, {s.block_time_source}); PoC start "
             f"{p.poc_start}; latest block {p.latest_height}; current epoch {p.current_epoch}"]
    if p.punishment_epoch is not None:
        lines.append(f"punishment    from epoch {p.punishment_epoch}: epoch {p.target_epoch} is "
                     + ("past it (a host that sent nothing, or intent without deploying, loses weight)"
                        if p.past_punishment else "before it"))
    lines.append(f"thresholds    W_threshold {s.w_threshold:g}, V_min {'n/a' if s.v_min is None else f'{s.v_min:g}'}")
    e = s.preeligibility
    if e is None:
        lines.append(f"pre-eligible  no pre-eligibility event yet for {s.model}")
    else:
        lines.append(f"pre-eligible  {e['pre_eligible']} at block {e['height']} (meets_v_min {e['meets_v_min']}, "
                     f"meets_weight_threshold {e['meets_weight_threshold']}, meets_reachability "
                     f"{e['meets_reachability']}, intent_host_count {e['intent_host_count']}, intent_weight "
                     f"{e['intent_weight']})")
    c = s.intent
    if c is not None:
        lines.append(f"intent        {c['intent_host_count']} of {c['participants']} participants, weight "
                     f"{c['intent_weight']:g} / {c['total_weight']:g} = {c['coverage']:.1%}")
        if c["skipped"]:
            lines.append(f"skipped       {len(c['skipped'])} participant(s), intent may be undercounted: "
                         + ", ".join(str(x["address"]) for x in c["skipped"]))
    lines += [f"note          {n}" for n in s.notes]
    return lines


def run_chain_status(node: str, model: str | None, epoch: int | None, *, as_json: bool = False) -> int:
    s = chain_status(node, model, epoch)
    if as_json:
        print(json.dumps(s.as_dict(), indent=2))
    else:
        print(f"chain status of {node} for {s.model}")
        print("\n".join(readiness_lines(s)))
    return 0


def chain_readiness(chain_node: str, model: str, log=print) -> list[str]:
    """--chain-node: the snapshot countdown, thresholds and pre-eligibility (no intent coverage:
    one lookup per participant is `mlvalidate chain status`'s job). A chain that cannot answer is
    one line in the report, never the verdict."""
    log(f"      readiness: asking {chain_node} where the bootstrap stands")
    try:
        return readiness_lines(chain_status(chain_node, model, intents=False))
    except MlvalidateError as e:
        return [f"readiness     unavailable: {e.one_line()}"]
