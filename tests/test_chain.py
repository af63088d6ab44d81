"""Chain readiness (issue 7): projection math, decimal decoding, intent coverage, and
`mlvalidate chain status` / `validate --chain-node` against recorded chain responses served over
loopback. The shapes are our best reading of Gonka's chain (see mlvalidate/chain.py)."""

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mlvalidate.chain import ChainError, chain_status, decode_decimal, project, weight_of
from mlvalidate.cli import main
from test_serve_validate import _validate, engine, reference, serving  # noqa: F401 (fixtures)

MODEL = "MiniMaxAI/MiniMax-M2.7"
ADDR = ["gonka1alpha", "gonka1bravo", "gonka1charlie", "gonka1delta", "gonka1echo"]

# ---- recorded responses (shapes: our best reading) --------------------------------------
STATUS = {"jsonrpc": "2.0", "id": -1, "result": {
    "node_info": {"network": "gonka-mainnet"},
    "sync_info": {"latest_block_height": "1000000", "latest_block_time": "2026-11-23T12:00:00.123456789Z",
                  "catching_up": False}}}
OLD_BLOCK = {"jsonrpc": "2.0", "id": -1, "result": {"total_count": "1", "blocks": [
    {"block_id": {"hash": "AA"}, "block": {"header": {"height": "999900", "time": "2026-11-23T11:50:00.123456789Z"}}}]}}
PARAMS = {"params": {
    "epoch_params": {"epoch_length": "15391", "epoch_shift": "1200", "poc_stage_duration": "60"},
    "poc_params": {"models": [{"model_id": MODEL}]},
    "bootstrap_params": {"w_threshold": {"value": "1", "exponent": -1}, "v_min": {"value": "5", "exponent": -1}}}}
PARTICIPANTS = {"active_participants": {
    "epoch_id": "276", "epoch_group_id": "301", "poc_start_block_height": "990000",
    "created_at_block_height": "990010",
    "participants": [
        {"index": ADDR[0], "weight": 100, "models": [MODEL]},
        {"index": ADDR[1], "weight": None},  # null weight
        {"index": ADDR[2]},  # missing weight
        {"index": ADDR[3], "weight": 0},
        {"index": ADDR[4], "weight": "300", "models": [MODEL]},
    ]}}
EVENT_SEARCH = {"jsonrpc": "2.0", "id": -1, "result": {"total_count": "2", "blocks": [
    {"block": {"header": {"height": "984500", "time": "2026-11-22T10:00:00Z"}}},
    {"block": {"header": {"height": "969109", "time": "2026-11-21T08:00:00Z"}}}]}}
EMPTY_SEARCH = {"jsonrpc": "2.0", "id": -1, "result": {"total_count": "0", "blocks": []}}
BLOCK_RESULTS = {"jsonrpc": "2.0", "id": -1, "result": {"height": "984500", "txs_results": None, "finalize_block_events": [
    {"type": "coin_spent", "attributes": [{"key": "amount", "value": "1ngonka", "index": True}]},
    {"type": "bootstrap_model_preeligibility", "attributes": [
        {"key": "model_id", "value": "Qwen/Other"}, {"key": "pre_eligible", "value": "true"}]},
    {"type": "bootstrap_model_preeligibility", "attributes": [
        {"key": "model_id", "value": MODEL}, {"key": "pre_eligible", "value": "false"},
        {"key": "meets_v_min", "value": "true"}, {"key": "meets_weight_threshold", "value": "false"},
        {"key": "meets_reachability", "value": "true"}, {"key": "intent_host_count", "value": "2"},
        {"key": "intent_weight", "value": "400"}, {"key": "snapshot_height", "value": "984500"}]}]}}


def _delegation(address, intent: bool):
    return {"delegation": {"delegator": address, "delegatee": ""},
            "poc_intents": [{"model_id": MODEL, "participant": address}] if intent else []}


class _Chain:
    """Serves the recorded responses; `bursts[path] = n` answers 503 n times first, `-1` always."""

    def __init__(self, *, events=True, overrides=None, bursts=None):
        self.events, self.overrides, self.bursts = events, dict(overrides or {}), dict(bursts or {})
        self.hits: dict[str, int] = {}
        chain = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                u = urllib.parse.urlsplit(self.path)
                chain.hits[u.path] = chain.hits.get(u.path, 0) + 1
                left = chain.bursts.get(u.path, 0)
                if left:
                    chain.bursts[u.path] = left - 1 if left > 0 else left
                    return self._send(503, b'{"error": "upstream busy"}')
                body = chain.answer(u.path, urllib.parse.parse_qs(u.query))
                if body is None:
                    return self._send(404, b'{"code": 5, "message": "not found"}')
                self._send(200, body if isinstance(body, bytes) else json.dumps(body).encode())

            def _send(self, code, raw):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, path, q):
        if path in self.overrides:
            return self.overrides[path]
        if path == "/chain-rpc/status":
            return STATUS
        if path == "/chain-api/productscience/inference/inference/params":
            return PARAMS
        if path == "/v1/epochs/current/participants":
            return PARTICIPANTS
        if path == "/chain-rpc/block_search":
            query = q.get("query", [""])[0]
            if "block.height=999900" in query:
                return OLD_BLOCK
            if f"bootstrap_model_preeligibility.model_id='{MODEL}'" in query:
                return EVENT_SEARCH if self.events else EMPTY_SEARCH
            return EMPTY_SEARCH
        if path == "/chain-rpc/block_results" and q.get("height") == ["984500"]:
            return BLOCK_RESULTS
        prefix = "/chain-api/productscience/inference/inference/poc_delegation/"
        if path.startswith(prefix):
            addr = path[len(prefix):]
            return _delegation(addr, addr in (ADDR[0], ADDR[1], ADDR[4])) if addr in ADDR else None
        return None

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def chain():
    made = []

    def start(**kw):
        made.append(_Chain(**kw))
        return made[-1]

    yield start
    for c in made:
        c.close()


FAST = dict(backoff_s=0.01, lookup_deadline_s=0.3, min_interval_s=0.0, deadline_s=5.0)


# ---- pure functions -----------------------------------------------------------------------
def test_projection_math_and_punishment_epoch():
    p = project(276, 990000, 15391, 277, latest_height=1_000_000, block_time_s=6.0, punishment_epoch=278)
    assert p.poc_start == 990000 + 15391 and p.snapshot == 990000 + 15391 - 500
    assert p.blocks_remaining == p.snapshot - 1_000_000 == 4891 and p.eta_s == pytest.approx(4891 * 6.0)
    assert p.past_punishment is False
    q = project(276, 990000, 15391, 279, latest_height=1_000_000, block_time_s=6.0, punishment_epoch=278)
    assert q.poc_start == 990000 + 3 * 15391 and q.past_punishment is True
    assert project(276, 990000, 15391, 278, latest_height=0, block_time_s=6.0, punishment_epoch=278).past_punishment
    old = project(276, 990000, 15391, 275, latest_height=1_000_000, block_time_s=5.0, snapshot_offset=500)
    assert old.snapshot == 990000 - 15391 - 500 and old.blocks_remaining < 0 and old.past_punishment is None


def test_decimal_decoding_and_weights():
    assert decode_decimal({"value": "1", "exponent": -1}) == pytest.approx(0.1)
    assert decode_decimal({"value": "25", "exponent": "-2"}) == pytest.approx(0.25)
    assert decode_decimal({"value": 3, "exponent": 0}) == 3.0 and decode_decimal("0.5") == 0.5
    with pytest.raises(ChainError, match="w_threshold: missing field exponent"):
        decode_decimal({"value": "1"}, "w_threshold")
    assert [weight_of(p) for p in PARTICIPANTS["active_participants"]["participants"]] == [100, 0, 0, 0, 300]
    assert weight_of({"weight": "junk"}) == 0 and weight_of(None) == 0


# ---- against the recorded chain -----------------------------------------------------------
def test_status_with_null_weights_and_a_503_burst_that_recovers(chain):
    c = chain(bursts={f"/chain-api/productscience/inference/inference/poc_delegation/{ADDR[4]}": 3,
                      "/chain-rpc/status": 2})
    s = chain_status(c.url, MODEL, **FAST)
    p = s.projection
    assert (p.current_epoch, p.target_epoch, p.latest_height) == (276, 277, 1_000_000)
    assert p.snapshot == 1005391 - 500 and p.block_time_s == pytest.approx(6.0) and p.punishment_epoch == 278
    assert s.w_threshold == pytest.approx(0.1) and s.v_min == pytest.approx(0.5)
    assert s.preeligibility == {"height": 984500, "pre_eligible": False, "meets_v_min": True,
                                "meets_weight_threshold": False, "meets_reachability": True,
                                "intent_host_count": 2, "intent_weight": 400}
    i = s.intent
    assert i["intent_hosts"] == [ADDR[0], ADDR[1], ADDR[4]] and i["skipped"] == []
    assert i["intent_weight"] == 400 and i["total_weight"] == 400 and i["coverage"] == 1.0
    assert c.hits[f"/chain-api/productscience/inference/inference/poc_delegation/{ADDR[4]}"] == 4


def test_a_lookup_that_keeps_failing_is_listed_as_skipped(chain):
    c = chain(bursts={f"/chain-api/productscience/inference/inference/poc_delegation/{ADDR[4]}": -1})
    s = chain_status(c.url, MODEL, epoch=279, **FAST)
    assert s.projection.past_punishment is True
    i = s.intent
    assert [x["address"] for x in i["skipped"]] == [ADDR[4]] and "503" in i["skipped"][0]["reason"]
    assert i["intent_weight"] == 100 and i["total_weight"] == 400 and i["coverage"] == 0.25
    from mlvalidate.chain import readiness_lines

    text = "\n".join(readiness_lines(s))
    assert "intent may be undercounted: gonka1echo" in text and "past it" in text


def test_cli_text_without_an_event_yet(chain, capsys):
    c = chain(events=False)
    assert main(["chain", "status", "--node", c.url]) == 0
    out = capsys.readouterr().out
    assert "epoch 277: snapshot at block 1004891, ≈ 8.2 h from now (4891 blocks at 6.00 s/block" in out
    assert "punishment    from epoch 278: epoch 277 is before it" in out
    assert "W_threshold 0.1, V_min 0.5" in out
    assert "no pre-eligibility event yet for MiniMaxAI/MiniMax-M2.7" in out
    assert "intent        3 of 5 participants, weight 400 / 400 = 100.0%" in out


def test_cli_json(chain, capsys):
    c = chain()
    assert main(["chain", "status", "--node", c.url, "--model", MODEL, "--epoch", "278", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["projection"]["target_epoch"] == 278 and doc["projection"]["past_punishment"] is True
    assert doc["projection"]["snapshot"] == 990000 + 2 * 15391 - 500
    assert doc["preeligibility"]["pre_eligible"] is False and doc["intent"]["intent_host_count"] == 3


@pytest.mark.parametrize("override, needle", [
    (b"<html>502 Bad Gateway</html>", "malformed JSON"),
    (b'{"active_participants": {"epoch_id": "276", "participants": []', "malformed JSON"),
    ({"active_participants": {"epoch_id": "276"}}, "missing field active_participants.poc_start_block_height"),
])
def test_malformed_or_unexpected_answers_are_one_line_exit_2(chain, capsys, override, needle):
    c = chain(overrides={"/v1/epochs/current/participants": override})
    assert main(["chain", "status", "--node", c.url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and err.count("\n") == 1


def test_validate_with_chain_node_adds_the_readiness_section(engine, reference, serving, chain, tmp_path, capsys):  # noqa: F811
    s, c = serving(engine), chain()
    assert _validate(s.url, reference, tmp_path, "--chain-node", c.url) == 0
    out = capsys.readouterr().out
    assert "VERDICT: PASS" in out and "snapshot at block 1004891, ≈ 8.2 h from now" in out
    assert "no pre-eligibility event yet for test/tiny-minimax" in out  # the reference's model
    assert "snapshot at block 1004891" in (tmp_path / "bundle" / "report.txt").read_text()
