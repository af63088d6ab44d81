"""`chain status`: the target epoch's blocks, the thresholds with their source, the latest
pre-eligibility event, intent coverage, the fields read, and the transactions a host may need."""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field

from ..errors import MlvalidateError
from .queries import (
    LOOKUP_INTERVAL_S,
    LOOKUP_RETRIES,
    LOOKUP_TIMEOUT_S,
    LOOKUP_WORKERS,
    PREELIGIBILITY_FIELDS,
    intent_coverage,
    latest_preeligibility,
    recent_block_time,
    rfc3339,
)
from .reading import (
    CURRENT_EPOCH,
    CURRENT_POC_START,
    EPOCH_LENGTH,
    EPOCH_LENGTH_MAX,
    INT64_MAX,
    LATEST_HEIGHT,
    LATEST_TIME,
    PARAMS_PATH,
    PARTICIPANTS,
    PARTICIPANTS_PATH,
    STATUS_PATH,
    V_MIN,
    W_THRESHOLD,
    ChainClient,
    ChainError,
    path_text,
)

DEFAULT_SNAPSHOT_OFFSET = 500  # SNAPSHOT_BLOCK = POC_START - 500 (BootstrapDelegationSnapshot)
V_MIN_DOCUMENT = 3  # "V_min is 3" in the bootstrap document's text; not read from params there
V_MIN_DOCUMENT_SOURCE = "the bootstrap document's text"
TX_FLAGS = ("--from <KEY> --node <NODE_RPC> --chain-id gonka-mainnet --keyring-backend file "
            "--gas auto --gas-adjustment 1.3 -y")
# endpoints the bootstrap documents do not query (CometBFT): read as before, marked in the output
UNDOCUMENTED = (STATUS_PATH, '/chain-rpc/block_search?query="block.height=H"')


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
    """POC_START = current_poc_start + (EPOCH - current_epoch) * epoch_length, anchored on the live
    current epoch (never epoch_shift); SNAPSHOT = POC_START - snapshot_offset."""
    poc_start = current_poc_start + (target_epoch - current_epoch) * epoch_length
    snapshot = poc_start - snapshot_offset
    remaining = snapshot - latest_height
    return Projection(
        current_epoch=current_epoch, target_epoch=target_epoch, poc_start=poc_start, snapshot=snapshot,
        latest_height=latest_height, blocks_remaining=remaining, block_time_s=block_time_s,
        eta_s=remaining * block_time_s, punishment_epoch=punishment_epoch,
        past_punishment=None if punishment_epoch is None else target_epoch >= punishment_epoch,
    )


def transactions(model: str) -> list[str]:
    """The transactions a host may need next, filled with the model id. Printed only: the
    harness never signs or sends anything."""
    m = shlex.quote(model)
    return [f"inferenced tx inference declare-poc-intent {m} {TX_FLAGS}",
            f"inferenced tx inference set-poc-delegation {m} <DELEGATEE> {TX_FLAGS}",
            f"inferenced tx inference refuse-poc-delegation {m} {TX_FLAGS}"]


@dataclass
class ChainStatus:
    model: str
    node: str
    projection: Projection
    block_time_source: str
    w_threshold: float
    w_threshold_source: str
    v_min: int | float
    v_min_source: str
    preeligibility: dict | None  # the latest event (height, url, attributes, decoded fields); None: none yet
    intent: dict | None = None  # coverage; None when not asked
    read: dict = field(default_factory=dict)  # endpoint -> field paths read
    not_found: list = field(default_factory=list)  # {"field", "endpoint", "then"}
    transactions: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _number(d):
    return int(d) if d == d.to_integral_value() else float(d)


def chain_status(node: str, model: str | None = None, epoch: int | None = None, *, intents: bool = True,
                 deadline_s: float = 60.0, backoff_s: float = 1.0, lookup_deadline_s: float = LOOKUP_TIMEOUT_S,
                 lookup_backoff_s: float = 0.5, lookup_retries: int = LOOKUP_RETRIES,
                 min_interval_s: float = LOOKUP_INTERVAL_S, lookup_workers: int = LOOKUP_WORKERS,
                 timeout_s: float | None = None, log=None) -> ChainStatus:
    """The chain's readiness for `model` at `epoch` (default: the next). `timeout_s` bounds the
    whole of it: every request ends by then, and intent lookups not done by then are listed as
    skipped (the answer says so)."""
    import time

    from ..serving.chain_model import load_chain

    if epoch is not None and not 0 <= epoch <= INT64_MAX:
        raise ChainError(f"--epoch {epoch} is out of range (0..{INT64_MAX})", "give an epoch number of the chain")

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
    offset = (chain.snapshot or {}).get("blocks_before_poc_start", DEFAULT_SNAPSHOT_OFFSET) if chain \
        else DEFAULT_SNAPSHOT_OFFSET

    client = ChainClient(node, deadline_s=deadline_s, backoff_s=backoff_s, lookup_backoff_s=lookup_backoff_s,
                         lookup_timeout_s=lookup_deadline_s, log=log)
    until = time.monotonic() + timeout_s if timeout_s is not None else None
    client.http.until = client.lookup_http.until = until
    st = client.get(STATUS_PATH)
    height = st.need_int(LATEST_HEIGHT)
    t_latest = rfc3339(st.need(LATEST_TIME), f"field {path_text(LATEST_TIME)} in GET {st.url}")

    params = client.get(PARAMS_PATH)
    epoch_length = params.need_int(EPOCH_LENGTH, minimum=1, maximum=EPOCH_LENGTH_MAX)
    w_threshold = float(params.need_decimal(W_THRESHOLD))
    w_source = path_text(W_THRESHOLD)
    if params.has(V_MIN):
        v_min, v_source = _number(params.need_decimal(V_MIN)), f"{path_text(V_MIN)} (the params answer, beside w_threshold)"
    else:
        v_min, v_source = V_MIN_DOCUMENT, V_MIN_DOCUMENT_SOURCE
        client.trail.not_found(PARAMS_PATH, path_text(V_MIN), f"V_min {V_MIN_DOCUMENT} from {V_MIN_DOCUMENT_SOURCE}")

    parts = client.get(PARTICIPANTS_PATH)
    current = parts.need_int(CURRENT_EPOCH)
    poc_start = parts.need_int(CURRENT_POC_START)
    target = current + 1 if epoch is None else epoch
    bt, bt_source = recent_block_time(client, height, t_latest)
    proj = project(current, poc_start, epoch_length, target, latest_height=height, block_time_s=bt,
                   snapshot_offset=int(offset), punishment_epoch=punish)
    status = ChainStatus(model=model, node=client.base, projection=proj, block_time_source=bt_source,
                         w_threshold=w_threshold, w_threshold_source=w_source, v_min=v_min, v_min_source=v_source,
                         preeligibility=latest_preeligibility(client, model), transactions=transactions(model))
    if proj.blocks_remaining < 0:
        status.notes.append(f"epoch {target}'s snapshot block has passed")
    if intents:
        plist = parts.need_list(PARTICIPANTS)
        status.intent = intent_coverage(client, plist, model, lookup_deadline_s=lookup_deadline_s,
                                        min_interval_s=min_interval_s, max_retries=lookup_retries,
                                        workers=lookup_workers, until=until)
        client.trail.found(PARTICIPANTS_PATH, "active_participants.participants[].index")
        client.trail.found(PARTICIPANTS_PATH, "active_participants.participants[].weight")
        if status.intent["unreadable_weights"]:
            status.notes.append("weight unreadable (counted as no voting weight) for: "
                                + ", ".join(status.intent["unreadable_weights"]))
    status.read, status.not_found = client.trail.read, client.trail.missing
    return status


def _eta(seconds: float) -> str:
    a = abs(seconds)
    span = f"≈ {a / 3600:.1f} h" if a >= 3600 else f"≈ {a / 60:.0f} min"
    return f"{span} ago" if seconds < 0 else f"{span} from now"


def _shown(v) -> str:
    if v is None:
        return "n/a"
    return str(v).lower() if isinstance(v, bool) else str(v)


def _pct(x: float) -> str:
    return f"{x * 100:.4g} %"


def readiness_lines(s: ChainStatus) -> list[str]:
    p = s.projection
    lines = [(f"snapshot      epoch {p.target_epoch}: snapshot at block {p.snapshot}, {_eta(p.eta_s)} "
              f"({p.blocks_remaining} blocks at {p.block_time_s:.2f} s/block, {s.block_time_source}); PoC start "
              f"{p.poc_start}; latest block {p.latest_height}; current epoch {p.current_epoch}")]
    if p.punishment_epoch is not None:
        lines.append(f"punishment    from epoch {p.punishment_epoch}: epoch {p.target_epoch} is "
                     + ("past it (a host that sent nothing, or intent without deploying, loses weight)"
                        if p.past_punishment else "before it"))
    lines.append(f"thresholds    W_threshold {s.w_threshold:g} ({_pct(s.w_threshold)}, from {s.w_threshold_source}); "
                 f"V_min {s.v_min:g} (from {s.v_min_source})")
    e = s.preeligibility
    if e is None:
        lines.append(f"pre-eligible  no pre-eligibility event yet for {s.model}")
    else:
        known = ", ".join(f"{k} {_shown(e.get(k))}" for k in PREELIGIBILITY_FIELDS[1:])
        lines.append(f"pre-eligible  {_shown(e['pre_eligible'])} at block {e['height']} ({known})")
        if e["unknown"]:
            lines.append("              also in the event: "
                         + ", ".join(f"{k}={e['attributes'][k]}" for k in e["unknown"]))
    c = s.intent
    if c is not None:
        zero = f", {len(c['zero_weight_intent_hosts'])} with zero weight" if c["zero_weight_intent_hosts"] else ""
        v_ok = "met" if c["intent_host_count"] >= s.v_min else "not met"
        w_ok = "met" if c["total_weight"] > 0 and c["intent_weight"] >= s.w_threshold * c["total_weight"] else "not met"
        lines.append(f"intent        {c['intent_host_count']} of {c['participants']} participants{zero}, weight "
                     f"{c['intent_weight']} / {c['total_weight']} = {c['share']:.1%}; by this count V_min "
                     f"{s.v_min:g} {v_ok}, W_threshold {s.w_threshold:g} {w_ok}")
        if c["skipped"]:
            lines.append(f"skipped       {len(c['skipped'])} participant(s) (intent may be undercounted): "
                         + "; ".join(f"{x['address']} ({x['reason']})" for x in c["skipped"]))
    lines += [f"note          {n}" for n in s.notes]
    return lines


def source_lines(s: ChainStatus) -> list[str]:
    """Which field paths were read from which endpoint, and which could not be found."""
    lines = []
    for endpoint, fields in s.read.items():
        tag = " (CometBFT; the bootstrap documents do not query it)" if endpoint in UNDOCUMENTED else ""
        lines.append(f"read          GET {endpoint}{tag}: {', '.join(fields)}")
    for m in s.not_found:
        lines.append(f"not found     {m['field']} in GET {m['endpoint']}: {m['then']}")
    return lines


def transaction_lines(s: ChainStatus) -> list[str]:
    head = "transactions  a host may need next (printed only: mlvalidate never signs or sends)"
    return [head] + [f"  {t}" for t in s.transactions]


def chain_readiness(chain_node: str, model: str, log=print, timeout_s: float | None = None) -> list[str]:
    """--chain-node: the snapshot countdown, thresholds and pre-eligibility (no intent coverage:
    one lookup per participant is `mlvalidate chain status`'s job), within `timeout_s`. A chain
    that cannot answer is one line in the report, never the verdict."""
    log(f"      readiness: asking {chain_node} where the bootstrap stands")
    try:
        return readiness_lines(chain_status(chain_node, model, intents=False, timeout_s=timeout_s))
    except MlvalidateError as e:
        return [f"readiness     unavailable: {e.one_line()}"]


__all__ = ["ChainError", "ChainStatus", "Projection", "chain_readiness", "chain_status", "project",
           "readiness_lines", "source_lines", "transaction_lines", "transactions"]
