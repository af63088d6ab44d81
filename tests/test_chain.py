"""Chain readiness (issues 7 and 14): `mlvalidate chain status` and `validate --chain-node`
against a loopback chain whose answers follow the shapes of Gonka's bootstrap documents
(docs/chain-api.md), written in tests/chain_documented.json from that page, not from the code's
constants; plus the projection math and the decoding of decimals and weights."""

import copy
import json
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_serve_validate import _validate, engine, reference, serving  # noqa: F401 (fixtures)

from mlvalidate.chain import (
    chain_status,
    decode_decimal,
    project,
    readiness_lines,
    reading,
    weight_of,
)
from mlvalidate.cli import main

HERE = Path(__file__).parent
DOCUMENTED = json.loads((HERE / "chain_documented.json").read_text())
MODEL = DOCUMENTED["model"]
PARAMS = "/chain-api/productscience/inference/inference/params"
PARTICIPANTS = "/v1/epochs/current/participants"
DELEGATION = "/chain-api/productscience/inference/inference/poc_delegation/"
EVENT_QUERY = f"\"bootstrap_model_preeligibility.model_id='{MODEL}'\""
ECHO = "gonka1echo"


class _Server(ThreadingHTTPServer):
    """close() waits for the handlers still answering, and a client that went away is not an error: a run that
    ends at its --timeout leaves answers to write (slow lookups), which used to land, as BrokenPipeError
    tracebacks on stderr, inside the next test's captured output on a busy machine."""

    daemon_threads = False  # server_close() joins them

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class _Chain:
    """A real HTTP server on 127.0.0.1 serving tests/chain_documented.json.

    `edit(doc)` changes a deep copy of the fixture first; `overrides[path]` answers that path with
    a body (bytes are sent as they are: malformed JSON); `bursts[path] = n` answers 503 n times
    before the real answer, `-1` always; `events=False` makes the pre-eligibility search empty.
    Every request is recorded in `requests` as (method, raw path); any method but GET gets 405."""

    def __init__(self, *, events=True, overrides=None, bursts=None, edit=None):
        self.doc = copy.deepcopy(DOCUMENTED)
        if edit:
            edit(self.doc)
        self.events, self.overrides, self.bursts = events, dict(overrides or {}), dict(bursts or {})
        self.hits: dict[str, int] = {}
        self.requests: list[tuple[str, str]] = []
        chain = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                chain.requests.append(("GET", self.path))
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

            def _refuse(self):
                chain.requests.append((self.command, self.path))
                self._send(405, b'{"error": "read-only loopback chain"}')

            do_POST = do_PUT = do_PATCH = do_DELETE = _refuse

            def _send(self, code, raw):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = _Server(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def answer(self, path, q):
        if path in self.overrides:
            return self.overrides[path]
        if path in self.doc["get"]:
            return self.doc["get"][path]
        if path == "/chain-rpc/block_search":
            query = q.get("query", [""])[0]
            if query == EVENT_QUERY and not self.events:
                return self.doc["block_search"]["_empty"]
            return self.doc["block_search"].get(query, self.doc["block_search"]["_empty"])
        if path == "/chain-rpc/block_results":
            return self.doc["block_results"].get(q.get("height", [""])[0])
        if path.startswith(DELEGATION):
            return self.doc["poc_delegation"].get(path[len(DELEGATION):])
        return None

    def methods(self) -> set:
        return {m for m, _ in self.requests}

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


FAST = {"backoff_s": 0.01, "lookup_backoff_s": 0.01, "lookup_deadline_s": 5.0, "min_interval_s": 0.0, "deadline_s": 5.0}


def _drop(where: str, path: tuple):
    """An edit that deletes `path` from the fixture's answer at `where` (a key path into the doc)."""
    def edit(doc):
        node = doc
        for k in where.split("|"):
            node = node[k]
        for k in path[:-1]:
            node = node[k]
        del node[path[-1]]
    return edit


# ---- the code and the fixture follow the documented paths ------------------------------------
def test_the_code_and_the_fixture_read_the_documented_paths():
    doc = (HERE.parent / "docs" / "chain-api.md").read_text()
    for endpoint in (reading.PARAMS_PATH, reading.PARTICIPANTS_PATH, reading.BLOCK_SEARCH_PATH,
                     reading.BLOCK_RESULTS_PATH, reading.DELEGATION_PATH):
        assert f"$NODE{endpoint}" in doc, endpoint
    for path in (reading.EPOCH_LENGTH, reading.W_THRESHOLD, reading.CURRENT_EPOCH, reading.CURRENT_POC_START,
                 reading.PARTICIPANTS, reading.SEARCH_BLOCKS, reading.FINALIZE_EVENTS, reading.INTENTS):
        assert f"`.{reading.path_text(path)}" in doc, path
    assert f"`.result.blocks[].{reading.path_text(reading.HEADER_HEIGHT)}`" in doc
    assert reading.W_THRESHOLD == ("params", "delegation_params", "w_threshold")
    get = DOCUMENTED["get"]
    for path in (reading.EPOCH_LENGTH, reading.W_THRESHOLD):
        assert reading.Answer("u", "l", get[PARAMS]).has(path), path
    for path in (reading.CURRENT_EPOCH, reading.CURRENT_POC_START, reading.PARTICIPANTS):
        assert reading.Answer("u", "l", get[PARTICIPANTS]).has(path), path
    assert "bootstrap_params" not in json.dumps(DOCUMENTED)


# ---- pure functions -----------------------------------------------------------------------------
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
    assert decode_decimal({"value": "1", "exponent": -1}) == decode_decimal("0.1")  # exact, not 0.1000000001
    assert float(decode_decimal({"value": "25", "exponent": "-2"})) == 0.25
    assert decode_decimal({"value": 3, "exponent": 0}) == 3 and decode_decimal("0.5") == decode_decimal(0.5)
    for bad in ({"value": "x", "exponent": -1}, None, True, "nan", "junk"):
        with pytest.raises(ValueError):
            decode_decimal(bad)
    people = DOCUMENTED["get"][PARTICIPANTS]["active_participants"]["participants"]
    assert [weight_of(p) for p in people] == [100, 0, 0, 0, 300, 1200]  # null and missing: no weight
    assert weight_of({"weight": "42"}) == 42 and weight_of({"weight": "junk"}) is None
    assert weight_of({"weight": -5}) is None and weight_of(None) == 0


# ---- against the documented chain ---------------------------------------------------------------
def test_status_on_the_documented_answers_with_503_bursts_that_recover(chain):
    c = chain(bursts={DELEGATION + ECHO: 3, "/chain-rpc/status": 2})
    s = chain_status(c.url, MODEL, **FAST)
    p = s.projection
    assert (p.current_epoch, p.target_epoch, p.latest_height) == (276, 277, 1_000_000)
    assert p.poc_start == 990000 + 15391 and p.snapshot == 990000 + 15391 - 500  # anchored on the live epoch
    assert p.snapshot != 7300 + 277 * 15391 - 500  # what epoch_shift would give
    assert p.block_time_s == pytest.approx(6.0) and p.punishment_epoch == 278
    assert s.w_threshold == 0.1 and s.w_threshold_source == "params.delegation_params.w_threshold"
    assert (s.v_min, s.v_min_source) == (3, "the bootstrap document's text")
    e = s.preeligibility
    assert e["height"] == 984500 and e["url"].endswith("/chain-rpc/block_results?height=984500")
    assert (e["pre_eligible"], e["meets_v_min"], e["meets_weight_threshold"], e["meets_reachability"]) == \
        (False, True, True, False)
    assert (e["intent_host_count"], e["intent_weight"], e["total_network_weight"]) == (3, 400, 1600)
    assert e["unknown"] == ["reachable_voting_power"] and e["attributes"]["reachable_voting_power"] == "512"
    assert all(isinstance(v, str) for v in e["attributes"].values())
    i = s.intent
    assert i["intent_hosts"] == ["gonka1alpha", "gonka1bravo", ECHO] and i["skipped"] == []
    assert i["zero_weight_intent_hosts"] == ["gonka1bravo"]  # counts toward V_min, adds no weight
    assert (i["intent_weight"], i["total_weight"], i["share"]) == (400, 1600, 0.25)
    assert c.hits[DELEGATION + ECHO] == 4 and c.hits["/chain-rpc/status"] == 3
    assert s.read[PARAMS] == ["params.epoch_params.epoch_length", "params.delegation_params.w_threshold"]
    assert {"field": "params.delegation_params.v_min", "endpoint": PARAMS,
            "then": "V_min 3 from the bootstrap document's text"} in s.not_found
    assert c.methods() == {"GET"}


def test_the_event_search_is_the_url_encoded_quoted_query(chain):
    c = chain()
    chain_status(c.url, MODEL, intents=False, **FAST)
    searches = [raw for _, raw in c.requests if raw.startswith("/chain-rpc/block_search") and "preeligibility" in raw]
    assert len(searches) == 1
    raw_query = urllib.parse.urlsplit(searches[0]).query
    assert "query=%22bootstrap_model_preeligibility.model_id%3D%27MiniMaxAI%2FMiniMax-M2.7%27%22" in raw_query
    assert urllib.parse.parse_qs(raw_query)["query"] == [EVENT_QUERY]


def test_v_min_beside_w_threshold_is_preferred_and_said(chain):
    def edit(doc):
        doc["get"][PARAMS]["params"]["delegation_params"]["v_min"] = "4"
        doc["get"][PARAMS]["params"]["delegation_params"]["w_threshold"] = {"value": "3", "exponent": "-1"}
    c = chain(edit=edit)
    s = chain_status(c.url, MODEL, **FAST)
    assert s.v_min == 4 and s.v_min_source.startswith("params.delegation_params.v_min")
    assert s.w_threshold == 0.3
    assert not [m for m in s.not_found if "v_min" in m["field"]]
    text = "\n".join(readiness_lines(s))
    assert "V_min 4 (from params.delegation_params.v_min (the params answer, beside w_threshold))" in text
    assert "by this count V_min 4 not met, W_threshold 0.3 not met" in text  # 3 hosts; 400 < 0.3 x 1600


def test_a_lookup_that_keeps_failing_is_listed_as_skipped(chain):
    c = chain(bursts={DELEGATION + ECHO: -1}, overrides={DELEGATION + "gonka1delta": b'{"intents": ['})
    s = chain_status(c.url, MODEL, epoch=279, **FAST)
    assert s.projection.past_punishment is True
    assert c.hits[DELEGATION + ECHO] == 6  # 1 + the documents' 5 retries
    i = s.intent
    assert [x["address"] for x in i["skipped"]] == ["gonka1delta", ECHO]
    assert "malformed JSON" in i["skipped"][0]["reason"] and "HTTP 503 after 5 retries" in i["skipped"][1]["reason"]
    assert (i["intent_weight"], i["total_weight"], i["share"]) == (100, 1600, 0.0625)
    text = "\n".join(readiness_lines(s))
    assert "skipped       2 participant(s) (intent may be undercounted): gonka1delta (" in text
    assert f"; {ECHO} (GET {c.url}{DELEGATION}{ECHO}: HTTP 503" in text and "past it" in text


def test_cli_text_shows_sources_unknown_attributes_and_transactions_and_never_posts(chain, capsys):
    c = chain()
    assert main(["chain", "status", "--node", c.url]) == 0
    out = capsys.readouterr().out
    assert "epoch 277: snapshot at block 1004891, ≈ 8.2 h from now (4891 blocks at 6.00 s/block" in out
    assert "punishment    from epoch 278: epoch 277 is before it" in out
    assert ("thresholds    W_threshold 0.1 (10 %, from params.delegation_params.w_threshold); "
            "V_min 3 (from the bootstrap document's text)") in out
    assert ("pre-eligible  false at block 984500 (meets_v_min true, meets_weight_threshold true, meets_reachability "
            "false, intent_host_count 3, intent_weight 400, total_network_weight 1600)") in out
    assert "also in the event: reachable_voting_power=512" in out
    assert ("intent        3 of 6 participants, 1 with zero weight, weight 400 / 1600 = 25.0%; "
            "by this count V_min 3 met, W_threshold 0.1 met") in out
    assert f"read          GET {PARAMS}: params.epoch_params.epoch_length, params.delegation_params.w_threshold" in out
    assert "read          GET /chain-rpc/status (CometBFT; the bootstrap documents do not query it)" in out
    assert (f"not found     params.delegation_params.v_min in GET {PARAMS}: V_min 3 from the bootstrap "
            "document's text") in out
    flags = ("--from <KEY> --node <NODE_RPC> --chain-id gonka-mainnet --keyring-backend file "
             "--gas auto --gas-adjustment 1.3 -y")
    for tx in (f"declare-poc-intent {MODEL}", f"set-poc-delegation {MODEL} <DELEGATEE>",
               f"refuse-poc-delegation {MODEL}"):
        assert f"  inferenced tx inference {tx} {flags}\n" in out
    assert "never signs or sends" in out
    assert c.methods() == {"GET"}  # nothing was ever posted to the chain


def test_cli_text_with_an_empty_event_search(chain, capsys):
    c = chain(events=False)
    assert main(["chain", "status", "--node", c.url]) == 0
    out = capsys.readouterr().out
    assert "no pre-eligibility event yet for MiniMaxAI/MiniMax-M2.7" in out
    assert "/chain-rpc/block_results" not in "".join(raw for _, raw in c.requests)


def test_numbers_sent_as_strings_and_extra_attributes_of_any_kind(chain):
    def edit(doc):
        ap = doc["get"][PARTICIPANTS]["active_participants"]
        ap["epoch_id"], ap["poc_start_block_height"] = "276", "990000"
        ap["participants"][5]["weight"] = "1200"
        attrs = doc["block_results"]["984500"]["result"]["finalize_block_events"][2]["attributes"]
        attrs += [{"key": "brand_new", "value": ""}, {"key": "odd", "value": 7}, {"value": "no key"}]
        del attrs[7]  # total_network_weight
    c = chain(edit=edit)
    s = chain_status(c.url, MODEL, **FAST)
    assert s.projection.snapshot == 1004891 and s.intent["total_weight"] == 1600
    e = s.preeligibility
    assert e["total_network_weight"] is None and e["unknown"] == ["reachable_voting_power", "brand_new", "odd"]
    assert e["attributes"]["odd"] == "7"
    assert {"field": "attribute total_network_weight", "endpoint": "/chain-rpc/block_results?height=H",
            "then": "shown as n/a"} in s.not_found
    assert "total_network_weight n/a" in "\n".join(readiness_lines(s))


def test_cli_json(chain, capsys):
    c = chain()
    assert main(["chain", "status", "--node", c.url, "--model", MODEL, "--epoch", "278", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["projection"]["target_epoch"] == 278 and doc["projection"]["past_punishment"] is True
    assert doc["projection"]["snapshot"] == 990000 + 2 * 15391 - 500
    assert doc["w_threshold"] == 0.1 and doc["w_threshold_source"] == "params.delegation_params.w_threshold"
    assert doc["v_min"] == 3 and doc["v_min_source"] == "the bootstrap document's text"
    assert doc["preeligibility"]["pre_eligible"] is False and doc["intent"]["intent_host_count"] == 3
    assert doc["preeligibility"]["attributes"]["total_network_weight"] == "1600"
    assert len(doc["transactions"]) == 3 and all("--chain-id gonka-mainnet" in t for t in doc["transactions"])
    assert "params.delegation_params.w_threshold" in doc["read"][PARAMS]


def _params_shape_of_the_old_guess(doc):
    p = doc["get"][PARAMS]["params"]
    p["bootstrap_params"] = p.pop("delegation_params")


def _no_model_event(doc):
    events = doc["block_results"]["984500"]["result"]["finalize_block_events"]
    del events[2]


@pytest.mark.parametrize("edit, field, url", [
    (_params_shape_of_the_old_guess, "params.delegation_params", PARAMS),
    (_drop(f"get|{PARAMS}", ("params", "delegation_params", "w_threshold")),
     "params.delegation_params.w_threshold", PARAMS),
    (_drop(f"get|{PARAMS}", ("params", "delegation_params", "w_threshold", "exponent")),
     "params.delegation_params.w_threshold.exponent", PARAMS),
    (_drop(f"get|{PARAMS}", ("params", "epoch_params", "epoch_length")), "params.epoch_params.epoch_length", PARAMS),
    (_drop(f"get|{PARTICIPANTS}", ("active_participants", "epoch_id")), "active_participants.epoch_id", PARTICIPANTS),
    (_drop(f"get|{PARTICIPANTS}", ("active_participants", "poc_start_block_height")),
     "active_participants.poc_start_block_height", PARTICIPANTS),
    (_drop(f"get|{PARTICIPANTS}", ("active_participants", "participants")),
     "active_participants.participants", PARTICIPANTS),
    (_drop(f"block_search|{EVENT_QUERY}", ("result", "blocks")), "result.blocks",
     "/chain-rpc/block_search?query=%22bootstrap_model_preeligibility"),
    (_drop(f"block_search|{EVENT_QUERY}", ("result", "blocks", 1, "block", "header", "height")),
     "result.blocks[1].block.header.height", "/chain-rpc/block_search?query="),
    (_drop("block_results|984500", ("result", "finalize_block_events")), "result.finalize_block_events",
     "/chain-rpc/block_results?height=984500"),
    (_no_model_event, "no bootstrap_model_preeligibility event with model_id 'MiniMaxAI/MiniMax-M2.7'",
     "/chain-rpc/block_results?height=984500"),
])
def test_an_absent_documented_field_is_one_line_naming_it_and_its_url_exit_2(chain, capsys, edit, field, url):
    c = chain(edit=edit)
    assert main(["chain", "status", "--node", c.url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert field in err and f"GET {c.url}{url}" in err, err


@pytest.mark.parametrize("path", [PARAMS, PARTICIPANTS, "/chain-rpc/block_results"])
@pytest.mark.parametrize("raw", [b"<html>502 Bad Gateway</html>", b'{"result": {"blocks": [', b"[1, 2]"])
def test_malformed_json_is_one_line_exit_2(chain, capsys, path, raw):
    c = chain(overrides={path: raw})
    assert main(["chain", "status", "--node", c.url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and f"GET {c.url}{path}" in err
    assert "malformed JSON" in err


def test_an_unreadable_block_time_is_one_line_naming_the_url(chain, capsys):
    def edit(doc):
        doc["get"]["/chain-rpc/status"]["result"]["sync_info"]["latest_block_time"] = "yesterday"
    c = chain(edit=edit)
    assert main(["chain", "status", "--node", c.url]) == 2
    err = capsys.readouterr().err
    assert f"result.sync_info.latest_block_time in GET {c.url}/chain-rpc/status: 'yesterday'" in err


def test_readiness_is_one_line_when_the_chain_cannot_be_read(chain):
    from mlvalidate.chain import chain_readiness

    c = chain(edit=_params_shape_of_the_old_guess)
    lines = chain_readiness(c.url, MODEL, log=lambda m: None)
    assert len(lines) == 1 and lines[0].startswith("readiness     unavailable: missing field params.delegation_params")


def test_validate_with_chain_node_adds_the_readiness_section(engine, reference, serving, chain, tmp_path, capsys):  # noqa: F811
    s, c = serving(engine), chain()
    assert _validate(s.url, reference, tmp_path, "--chain-node", c.url) == 0
    out = capsys.readouterr().out
    assert "VERDICT: PASS" in out and "snapshot at block 1004891, ≈ 8.2 h from now" in out
    assert "no pre-eligibility event yet for test/tiny-minimax" in out  # the reference's model
    assert "W_threshold 0.1 (10 %, from params.delegation_params.w_threshold)" in out
    assert "snapshot at block 1004891" in (tmp_path / "bundle" / "report.txt").read_text()
    assert c.methods() == {"GET"}


# ---- issue 22: answers read strictly, bounded numbers, one line; the whole command bounded ------
BIG = "1" + "0" * 400  # a 401-digit number


def _set(where: str, path: tuple, value):
    def edit(doc):
        node = doc
        for k in where.split("|"):
            node = node[k]
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return edit


STATUS = "/chain-rpc/status"
HEIGHT = ("result", "sync_info", "latest_block_height")
EPOCH_LENGTH = ("params", "epoch_params", "epoch_length")


@pytest.mark.parametrize("where, path, value, field", [
    (f"get|{STATUS}", HEIGHT, BIG, "result.sync_info.latest_block_height"),
    (f"get|{STATUS}", HEIGHT, "-1", "result.sync_info.latest_block_height"),
    (f"get|{PARAMS}", EPOCH_LENGTH, BIG, "params.epoch_params.epoch_length"),
    (f"get|{PARAMS}", EPOCH_LENGTH, "0", "params.epoch_params.epoch_length"),
    (f"get|{PARAMS}", EPOCH_LENGTH, -15391, "params.epoch_params.epoch_length"),
    (f"get|{PARTICIPANTS}", ("active_participants", "poc_start_block_height"), int(BIG),
     "active_participants.poc_start_block_height"),
    (f"get|{PARAMS}", ("params", "delegation_params", "w_threshold"), {"value": BIG, "exponent": "-1"},
     "params.delegation_params.w_threshold"),
    (f"get|{PARAMS}", ("params", "delegation_params", "v_min"), "1e309", "params.delegation_params.v_min"),
    (f"get|{PARAMS}", ("params", "delegation_params", "v_min"), "Infinity", "params.delegation_params.v_min"),
])
def test_an_out_of_range_number_is_one_line_naming_the_field(chain, capsys, where, path, value, field):
    c = chain(edit=_set(where, path, value))
    rc = main(["chain", "status", "--node", c.url])
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err, err
    assert field in err and "internal error" not in err, err
    assert len(err) < 600  # the 401 digits are not printed


@pytest.mark.parametrize("weight", ["1e309", "Infinity", "NaN", float("nan"), float("inf"), int(BIG), "-0.5"])
def test_an_unreadable_weight_is_counted_as_none_and_said(chain, capsys, weight):
    c = chain(edit=_set(f"get|{PARTICIPANTS}", ("active_participants", "participants", 0, "weight"), weight))
    rc = main(["chain", "status", "--node", c.url])
    cap = capsys.readouterr()
    assert rc == 0 and cap.err == "", cap.err
    assert "weight unreadable (counted as no voting weight) for: gonka1alpha" in cap.out
    assert "weight 300 / 1500" in cap.out  # alpha's intent adds no weight; the others' are summed


def test_a_huge_epoch_argument_is_one_line(chain, capsys):
    c = chain()
    assert main(["chain", "status", "--node", c.url, "--epoch", BIG]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --epoch") and "out of range" in err and "\n" not in err


def test_validate_keeps_its_verdict_and_bundle_when_the_chain_answer_is_hostile(engine, reference, serving, chain,  # noqa: F811
                                                                                 tmp_path, capsys):
    s, c = serving(engine), chain(edit=_set(f"get|{PARAMS}", EPOCH_LENGTH, BIG))
    assert _validate(s.url, reference, tmp_path, "--chain-node", c.url) == 0
    cap = capsys.readouterr()
    assert "internal error" not in cap.out + cap.err and cap.err.count("error") == 0, cap.err
    text = (tmp_path / "bundle" / "report.txt").read_text()
    assert text.startswith("VERDICT: PASS") and "readiness     unavailable: field params.epoch_params.epoch_length" in text


class _SlowChain(_Chain):
    """The documented chain with `n` participants whose poc_delegation lookups each take `delay`
    seconds; records how many lookups were in flight at once."""

    def __init__(self, n: int, delay: float):
        def edit(doc):
            doc["get"][PARTICIPANTS]["active_participants"]["participants"] = [
                {"index": f"gonka1p{i:04d}", "weight": 10} for i in range(n)]
        super().__init__(edit=edit)
        self.delay, self.now, self.most = delay, 0, 0
        self.lock = threading.Lock()

    def answer(self, path, q):
        if not path.startswith(DELEGATION):
            return super().answer(path, q)
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        import time

        time.sleep(self.delay)
        with self.lock:
            self.now -= 1
        return {"intents": [{"model_id": MODEL}]}


def test_chain_status_is_bounded_by_its_timeout_and_looks_up_in_parallel(capsys):
    import time

    c = _SlowChain(400, 0.25)  # one at a time: 100 s; --timeout 3 must end it
    try:
        t0 = time.monotonic()
        rc = main(["chain", "status", "--node", c.url, "--timeout", "3", "--lookups", "4", "--json"])
        seconds = time.monotonic() - t0
    finally:
        c.close()
    cap = capsys.readouterr()
    assert rc == 0 and cap.err == "", cap.err
    doc = json.loads(cap.out)
    skipped = doc["intent"]["skipped"]
    late = [x for x in skipped if x["reason"] == "not looked up within --timeout"]
    assert late and doc["intent"]["intent_host_count"] + len(skipped) == 400
    assert [x["address"] for x in skipped] == sorted(x["address"] for x in skipped)  # in the participants' order
    assert c.most >= 2  # lookups overlapped
    assert seconds < 3 + 30, seconds  # the bound, with generous room for a loaded machine (it was 100+ s)


def test_chain_status_timeout_and_lookups_are_checked(chain, capsys):
    c = chain()
    for bad in (["--timeout", "0"], ["--timeout", "inf"], ["--lookups", "0"], ["--lookups", "65"]):
        assert main(["chain", "status", "--node", c.url, *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: --") and "\n" not in err
