"""The reference PoC server speaks the Gonka vLLM PoC API, and `mlvalidate validate` against it
over loopback: PASS when honest, FAIL for a cheating checkpoint, never PASS when the node drops
nonces, returns NaN, answers 503 past the timeout, or dies mid-run."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from mlvalidate.bake import bake_reference
from mlvalidate.cli import main
from mlvalidate.engines.base import PocParams
from mlvalidate.engines.reference import ReferenceEngine
from mlvalidate.server import make_server

MODEL = "test/tiny-minimax"
SEQ = 64
N = 40
STAT = {"dist_threshold": 0.2, "p_mismatch": 0.1, "fraud_threshold": 0.05}


@pytest.fixture(scope="module")
def engine(tiny_minimax_fp8):
    return ReferenceEngine(tiny_minimax_fp8, dtype="fp32", model_id=MODEL)


@pytest.fixture(scope="module")
def reference(engine, tmp_path_factory):
    path, _ = bake_reference(engine, model_id=MODEL, out=tmp_path_factory.mktemp("ref") / "ref.json", n_nonces=N,
                             batch_size=8, params=PocParams("TEST_BLOCK", "test_pub_keys_v2", SEQ),
                             stat_test=STAT, progress=False)
    return path


class _Serving:
    def __init__(self, engine, model_id=MODEL):
        self.server = make_server(engine, model_id)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = self.server.url

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serving():
    servers = []

    def start(engine, model_id=MODEL):
        s = _Serving(engine, model_id)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


def _call(url, path, body=None, method=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method=method or ("POST" if data else "GET"),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _validate(url, reference, tmp_path, *extra):
    return main(["validate", "--url", url, "--reference", str(reference), "--batch-size", "8", "--skip-throughput",
                 "--out", str(tmp_path / "bundle"), *extra])


def _report(tmp_path):
    return json.loads((tmp_path / "bundle" / "report.json").read_text())


BODY = {"block_hash": "TEST_BLOCK", "block_height": 100, "public_key": "test_pub_keys_v2", "node_id": 0,
        "node_count": 1, "params": {"model": MODEL, "seq_len": SEQ, "k_dim": 12}}


# ---- validate against honest, cheating and faulty nodes --------------------------------
def test_honest_server_passes(engine, reference, serving, tmp_path, capsys):
    s = serving(engine)
    assert _validate(s.url, reference, tmp_path, "--server-side") == 0
    out = capsys.readouterr().out
    nv = _report(tmp_path)["node_verdict"]  # the node's own answer, shown next to ours
    assert nv["n_total"] == N and nv["n_mismatch"] == 0 and nv["fraud_detected"] is False
    assert "node's own    n_total 40  n_mismatch 0" in out
    assert "[1/2] plan" in out and "[2/2] validate" in out
    assert "VERDICT: PASS" in out and "dist_threshold 0.2 [reference]" in out
    r = _report(tmp_path)
    assert r["verdict"] == "PASS" and r["n_total"] == N and r["batch_size"] == 8


def test_cheating_checkpoint_fails(tiny_minimax_fp8, reference, serving, tmp_path, capsys):
    import xml.etree.ElementTree as ET

    from mlvalidate.fixtures.quantize import write_quantized_copy

    cheat = write_quantized_copy(tiny_minimax_fp8, tmp_path / "int4", bits=4, group_size=32)
    s = serving(ReferenceEngine(cheat, dtype="fp32", model_id=MODEL))
    assert _validate(s.url, reference, tmp_path, "--junit", str(tmp_path / "junit.xml")) == 1
    assert "VERDICT: FAIL" in capsys.readouterr().out
    assert _report(tmp_path)["fraud_detected"] is True
    case = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite/testcase")
    assert case.get("name") == "validate" and "mismatches" in case.find("failure").get("message")


class _Faulty:
    """Wraps the honest engine: the fault is in what the node returns, the HTTP is real."""

    def __init__(self, inner, drop=(), nan=(), fail=False):
        self.inner, self.drop, self.nan, self.fail = inner, set(drop), set(nan), fail
        self.name = "faulty"

    def describe(self):
        return self.inner.describe()

    def compute(self, nonces, params, batch_size=32, progress=None):
        if self.fail:
            raise RuntimeError("engine not available")
        res = self.inner.compute(nonces, params, batch_size=batch_size)
        keep = np.array([n not in self.drop for n in res.nonces.tolist()], dtype=bool)
        res.nonces, res.vectors = res.nonces[keep], res.vectors[keep].astype(np.float16)
        res.vectors[[n in self.nan for n in res.nonces.tolist()]] = np.nan
        return res


def test_dropped_nonces_are_incomplete_not_pass(engine, reference, serving, tmp_path, capsys):
    s = serving(_Faulty(engine, drop={3, 17}))
    assert _validate(s.url, reference, tmp_path, "--server-side") == 2
    out = capsys.readouterr().out
    assert "VERDICT: INCOMPLETE" in out and "missing       3, 17" in out
    r = _report(tmp_path)
    assert r["missing_nonces"] == [3, 17]
    # the node's own rule skips what it did not compute: it would have called this clean
    assert r["node_verdict"]["n_mismatch"] == 0 and r["node_verdict"]["fraud_detected"] is False


def test_nan_vectors_are_never_pass(engine, reference, serving, tmp_path):
    s = serving(_Faulty(engine, nan={5}))
    assert _validate(s.url, reference, tmp_path) == 2
    r = _report(tmp_path)
    assert r["invalid_nonces"] == [5] and r["verdict"] == "INCOMPLETE"


def test_503_longer_than_the_timeout_is_an_error(engine, reference, serving, tmp_path, capsys):
    s = serving(_Faulty(engine, fail=True))
    t = time.monotonic()
    assert _validate(s.url, reference, tmp_path, "--timeout", "3", "--in-flight", "0") == 2  # wait=true
    assert time.monotonic() - t < 30
    out = capsys.readouterr().out
    assert "node error" in out and "HTTP 503" in out and "VERDICT: INCOMPLETE" in out
    assert len(_report(tmp_path)["missing_nonces"]) == N


def test_a_queued_request_the_node_fails_is_an_error_with_its_reason(engine, reference, serving, tmp_path, capsys):
    s = serving(_Faulty(engine, fail=True))
    assert _validate(s.url, reference, tmp_path, "--timeout", "10") == 2  # queued: the job fails at once
    out = capsys.readouterr().out
    assert "the node failed request" in out and "engine not available" in out and "VERDICT: INCOMPLETE" in out
    assert "3 queued chunk(s) were not collected" in out  # 4 in flight: the first failed, 3 still on the node
    assert len(_report(tmp_path)["missing_nonces"]) == N


def test_model_mismatch_is_explained_in_one_line(engine, reference, serving, tmp_path, capsys):
    s = serving(engine, model_id="other/model")
    assert _validate(s.url, reference, tmp_path, "--timeout", "3") == 2
    cap = capsys.readouterr()
    # checked against GET /v1/models before the first PoC request
    assert f"the node serves 'other/model', the reference is for '{MODEL}' (GET /v1/models)" in cap.err
    assert _report(tmp_path)["verdict"] == "ERROR" and "Traceback" not in cap.err + cap.out


def test_unreachable_node_is_an_error(reference, tmp_path, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert _validate(f"http://127.0.0.1:{port}", reference, tmp_path, "--timeout", "2") == 2


def test_server_killed_mid_run_is_an_error_listing_the_missing_nonces(tiny_minimax_fp8, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # the server computes in bf16 at seq_len 256: 15 chunks of 8 nonces, each a visible
    # fraction of a second (the reference is baked in fp32 only to be quick; it is never passed)
    ref, _ = bake_reference(ReferenceEngine(tiny_minimax_fp8, dtype="fp32", model_id=MODEL), model_id=MODEL,
                            out=tmp_path / "ref256.json", n_nonces=120, batch_size=8,
                            params=PocParams("TEST_BLOCK", "test_pub_keys_v2", 256), stat_test=STAT, progress=False)
    server = subprocess.Popen([sys.executable, "-m", "mlvalidate", "serve", "--model", str(tiny_minimax_fp8),
                               "--model-id", MODEL, "--port", str(port)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True,
                              env={**os.environ, "MLVALIDATE_SERVER_LOG": "1"})  # one log line per request
    try:
        assert "serving" in server.stdout.readline()
        client = subprocess.Popen([sys.executable, "-m", "mlvalidate", "validate", "--url", f"http://127.0.0.1:{port}",
                                   "--reference", str(ref), "--batch-size", "8", "--timeout", "3", "--skip-throughput",
                                   "--out", str(tmp_path / "bundle")], stdout=subprocess.PIPE, text=True)
        for line in server.stdout:  # kill the node once it has answered its first chunk
            if "POST /api/v1/pow/generate" in line:
                break
        assert client.poll() is None, "the validation finished before the node could be killed"
        os.killpg(server.pid, signal.SIGKILL)
        out, _ = client.communicate(timeout=120)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
    assert client.returncode == 2, out
    assert "PASS" not in out.split("VERDICT:")[1].splitlines()[0]
    r = _report(tmp_path)
    assert r["n_missing"] > 0 and r["verdict"] == "INCOMPLETE"


# ---- the server speaks the node's API ------------------------------------------------------
def test_api_shapes_and_status_codes(engine, serving):
    s = serving(engine)
    assert _call(s.url, "/health")[0] == 200
    assert MODEL in [m["id"] for m in _call(s.url, "/v1/models")[1]["data"]]
    # extra params fields: 422; missing field: 422; wrong model: 409 with the deployed names
    code, body = _call(s.url, "/api/v1/pow/generate", {**BODY, "nonces": [0], "params": {**BODY["params"], "x": 1}})
    assert code == 422 and body["detail"][0]["type"] == "extra_forbidden"
    code, body = _call(s.url, "/api/v1/pow/generate", {k: v for k, v in BODY.items() if k != "public_key"})
    assert code == 422 and ["body", "public_key"] in [d["loc"] for d in body["detail"]]
    code, body = _call(s.url, "/api/v1/pow/generate", {**BODY, "nonces": [0], "params": {**BODY["params"], "model": "x"}})
    assert code == 409 and body["detail"]["error"] == "params mismatch" and MODEL in body["detail"]["deployed"]["model"]
    # wait=true answers artifacts in request order with the encoding
    code, body = _call(s.url, "/api/v1/pow/generate", {**BODY, "nonces": [4, 2, 9], "wait": True, "batch_size": 2})
    assert code == 200 and [a["nonce"] for a in body["artifacts"]] == [4, 2, 9]
    assert body["encoding"] == {"dtype": "f16", "k_dim": 12, "endian": "le"} and len(body["artifacts"][0]["vector_b64"]) == 32
    # validation: 400 unless the nonce sets match; the node's lenient rule otherwise
    arts = body["artifacts"]
    code, _ = _call(s.url, "/api/v1/pow/generate", {**BODY, "nonces": [4, 2], "wait": True, "validation": {"artifacts": arts}})
    assert code == 400
    wrong = [arts[0], {"nonce": 2, "vector_b64": arts[2]["vector_b64"]}, {"nonce": 9, "vector_b64": ""}]
    code, v = _call(s.url, "/api/v1/pow/generate", {**BODY, "nonces": [4, 2, 9], "wait": True,
                                                    "validation": {"artifacts": wrong}, "stat_test": STAT})
    assert code == 200 and v["n_total"] == 3 and v["mismatch_nonces"] == [2]  # the empty one is skipped by the node
    assert "artifacts" not in v and isinstance(v["p_value"], float)
    # the queue: wait=false -> queued -> GET result; unknown id 404
    code, q = _call(s.url, "/api/v1/pow/generate", {**BODY, "nonces": [1, 2]})
    assert code == 200 and q["status"] == "queued" and q["queued_count"] == 2
    deadline = time.monotonic() + 120  # a busy machine computes slowly; the job is done long before
    while True:
        code, res = _call(s.url, f"/api/v1/pow/generate/{q['request_id']}")
        if res["status"] == "completed" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert res["status"] == "completed" and [a["nonce"] for a in res["artifacts"]] == [1, 2]
    assert _call(s.url, "/api/v1/pow/generate/00000000-0000-0000-0000-000000000000")[0] == 404


def test_init_generate_status_stop_and_nonce_iterator(engine, serving, monkeypatch):
    received, done = [], threading.Event()

    class Callback(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append((self.path, body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            done.set()

        def log_message(self, *a):
            pass

    cb = ThreadingHTTPServer(("127.0.0.1", 0), Callback)
    threading.Thread(target=cb.serve_forever, daemon=True).start()
    import mlvalidate.server as srv

    monkeypatch.setattr(srv, "CALLBACK_INTERVAL_SEC", 0.0)  # post each chunk's artifacts at once
    try:
        s = serving(engine)
        body = {**BODY, "group_id": 1, "n_groups": 2, "batch_size": 4, "url": f"http://127.0.0.1:{cb.server_port}"}
        code, r = _call(s.url, "/api/v1/pow/init/generate", body)
        assert code == 200 and r == {"status": "OK", "pow_status": {"status": "GENERATING"}}
        assert _call(s.url, "/api/v1/pow/init/generate", body)[0] == 409  # already generating
        assert _call(s.url, "/v1/chat/completions", {"messages": []})[0] == 503
        assert done.wait(60)
        code, st = _call(s.url, "/api/v1/pow/status")
        assert st["status"] == "GENERATING" and st["config"]["group_id"] == 1 and st["stats"]["total_processed"] >= 4
        code, r = _call(s.url, "/api/v1/pow/stop", {})
        assert r == {"status": "OK", "pow_status": {"status": "STOPPED"}}
        assert _call(s.url, "/api/v1/pow/status")[1] == {"status": "IDLE", "config": None, "stats": None}
    finally:
        cb.shutdown()
    path, first = received[0]
    assert path == "/generated"
    # node 0 of 1, group 1 of 2: the odd nonces 1, 3, 5, ... in order
    assert [a["nonce"] for a in first["artifacts"]][:4] == [1, 3, 5, 7]


# ---- throughput phase and the spot-check at full speed -----------------------------------
class _HonestOnlyWhenSlow:
    """Honest at the validation batch size, the 4-bit cheater at the throughput batch size."""

    def __init__(self, honest, cheat, fast_batch):
        self.honest, self.cheat, self.fast_batch = honest, cheat, fast_batch
        self.name = "sly"

    def describe(self):
        return self.honest.describe()

    def compute(self, nonces, params, batch_size=32, progress=None):
        engine = self.cheat if batch_size >= self.fast_batch else self.honest
        return engine.compute(nonces, params, batch_size=batch_size)


def _with_fast_callbacks(monkeypatch):
    import mlvalidate.server as srv

    monkeypatch.setattr(srv, "CALLBACK_INTERVAL_SEC", 0.0)


THROUGHPUT = ["--warmup-seconds", "1", "--measure-seconds", "3", "--sample-interval", "1",
              "--throughput-batch-size", "16", "--profile", "h100x4"]


def test_throughput_phase_and_spot_check_on_an_honest_node(engine, reference, serving, tmp_path, monkeypatch, capsys):
    _with_fast_callbacks(monkeypatch)
    s = serving(engine)
    rc = main(["validate", "--url", s.url, "--reference", str(reference), "--batch-size", "8",
               "--out", str(tmp_path / "bundle"), *THROUGHPUT])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "[2/3] throughput" in out and "[3/3] validate" in out
    t = _report(tmp_path)["throughput_phase"]
    assert t["stopped"] and t["summary"]["n_samples"] >= 3 and t["summary"]["steady_nonces_per_second"] > 0
    # read often enough to time the counter's changes on both sides of the window
    assert t["summary"]["method"] == "counter over the window" and 0 < t["summary"]["timing_error"] < 1
    assert t["spot_verdict"] == "PASS" and t["summary"]["spot_check_received"] > 0
    assert [(p["name"], p["status"]) for p in _report(tmp_path)["phases"]] == [("throughput", "OK"), ("validate", "PASS")]
    assert "of the published 2368 nonces/min for h100x4" in t["reference"] and "roofline" in t["reference"]
    assert _call(s.url, "/api/v1/pow/status")[1]["status"] == "IDLE"  # generation was stopped


def test_a_node_honest_only_when_measured_slowly_fails_the_spot_check(
        tiny_minimax_fp8, engine, reference, serving, tmp_path, monkeypatch, capsys):
    from mlvalidate.fixtures.quantize import write_quantized_copy

    _with_fast_callbacks(monkeypatch)
    cheat = ReferenceEngine(write_quantized_copy(tiny_minimax_fp8, tmp_path / "int4"), dtype="fp32", model_id=MODEL)
    s = serving(_HonestOnlyWhenSlow(engine, cheat, fast_batch=16))
    rc = main(["validate", "--url", s.url, "--reference", str(reference), "--batch-size", "8",
               "--out", str(tmp_path / "bundle"), *THROUGHPUT])
    out = capsys.readouterr().out
    r = _report(tmp_path)
    assert r["validation_verdict"] == "PASS"  # the slow validation alone would have passed it ...
    assert rc == 1 and r["verdict"] == "FAIL" and r["throughput_phase"]["spot_verdict"] == "FAIL"  # ... not the spot-check
    assert out.splitlines()[out.splitlines().index("") + 1].startswith("VERDICT: FAIL (the spot-check")
    assert (tmp_path / "bundle" / "report.txt").read_text().startswith("VERDICT: FAIL (the spot-check")
