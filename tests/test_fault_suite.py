"""The fault suite: `validate` against a hostile or broken node.

A loopback proxy (tests/fault_proxy.py) sits between `validate` and a real reference PoC
server and rewrites what the node says. Every scenario asserts the verdict, the exit code
(0 PASS, 1 only for proven fraud, 2 error/incomplete), that no traceback escaped, that the
bundle was written, and that the run ended within its --timeout. What the node "really" said
is judged here from the proxy's record with plain base64 + numpy, not with the harness's code.

No outcome depends on the machine's speed: a scenario whose node answers runs under a --timeout
it never reaches (ROOMY_TIMEOUT), so its verdict is the node's, not the clock's; only the scenarios
that run INTO the deadline (a node that hangs, trickles, keeps failing or never completes) get the
short TIMEOUT, and their verdict is INCOMPLETE however slow the machine is. Elapsed times are
bounded by the run's own --timeout plus SLACK (it once failed at load 6-11: the 503 burst's
back-off ate a 4 s budget).
"""

from __future__ import annotations

import base64
import json
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest

import mlvalidate.server as srv
from mlvalidate.cli import main
from mlvalidate.server import make_server

from fault_proxy import GENERATE, INIT, MODELS, STATUS, Conn, FaultProxy, Scenario
from tiny_nodes import BATCH, MODEL, N, STAT, honest_engine, small_reference

TIMEOUT = 4.0  # for the scenarios that end at the deadline (DEADLINE_BOUND)
ROOMY_TIMEOUT = 120.0  # for every run that should complete: never reached, whatever the load
SLACK = 20.0  # past the deadline: the model check, back-off granularity, the bundle, on a busy machine
THROUGHPUT = ["--warmup-seconds", "0.5", "--measure-seconds", "1.5", "--sample-interval", "0.5",
              "--throughput-batch-size", "8"]


# ---- fixtures: a real node behind the proxy ------------------------------------------------
@pytest.fixture(scope="module")
def engine(tiny_minimax_fp8):
    return honest_engine(tiny_minimax_fp8)


@pytest.fixture(scope="module")
def reference(engine, tmp_path_factory):
    return small_reference(engine, tmp_path_factory.mktemp("ref"))


@pytest.fixture(scope="module")
def node(engine):
    server = make_server(engine, MODEL)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def hostile(node, monkeypatch):
    monkeypatch.setattr(srv, "CALLBACK_INTERVAL_SEC", 0.3)
    proxies = []

    def start(scenario: Scenario | None = None) -> FaultProxy:
        p = FaultProxy(node.url, scenario)
        proxies.append(p)
        return p

    yield start
    for p in proxies:
        p.close()
    httpx.post(node.url + "/api/v1/pow/stop", json={}, timeout=10)  # leave the real node idle


def ref_vectors(reference) -> dict[int, np.ndarray]:
    doc = json.loads(reference.read_text())
    return {a["nonce"]: decode(a["vector_b64"]) for a in doc["artifacts"]}


def decode(b64) -> np.ndarray | None:
    """Plain base64 -> 12 little-endian fp16, or None when it is not exactly that."""
    try:
        raw = base64.b64decode(b64, validate=True)
    except Exception:
        return None
    if len(raw) != 24:
        return None
    return np.frombuffer(raw, "<f2").astype(np.float32)


def encode(values) -> str:
    return base64.b64encode(np.asarray(values, "<f2").tobytes()).decode()


def run_validate(url, reference, out, *extra, timeout=TIMEOUT, throughput=False):
    args = ["validate", "--url", url, "--reference", str(reference), "--batch-size", str(BATCH),
            "--timeout", str(timeout), "--connect-grace", "2", "--out", str(out)]
    args += THROUGHPUT if throughput else ["--skip-throughput"]
    t0 = time.monotonic()
    rc = main([*args, *extra])
    return rc, time.monotonic() - t0


def report(out) -> dict:
    return json.loads((out / "report.json").read_text())


# ---- scenarios -----------------------------------------------------------------------------
def arts(body) -> list:
    return body["artifacts"]


class Mutate(Scenario):
    """Rewrite each /generate answer's artifacts with fn(artifacts, request) (a new list)."""

    def __init__(self, fn):
        self.fn = fn

    def answer(self, path, request, status, body):
        if path == GENERATE and status == 200 and isinstance(body, dict) and "artifacts" in body:
            body = {**body, "artifacts": self.fn([dict(a) for a in body["artifacts"]], request)}
        return status, body


class Replace(Scenario):
    """Answer /generate with (status, body) in place of the node; `times` answers, then the real node."""

    def __init__(self, status, body, times: int | None = None, route_path=GENERATE, content_type="application/json"):
        self.status, self.body, self.times, self.path, self.ct = status, body, times, route_path, content_type
        self.n = 0

    def route(self, conn, method, path, request):
        if path != self.path or (self.times is not None and self.n >= self.times):
            return False
        self.n += 1
        conn.send(self.status, self.body, self.ct)
        return True


class Take(Scenario):
    """Take over /generate connections: hang, trickle, truncate, close, huge."""

    def __init__(self, how):
        self.how = how

    def route(self, conn: Conn, method, path, request):
        if path != GENERATE:
            return False
        if self.how == "truncate":
            conn.truncate({"status": "completed", "artifacts": [{"nonce": n, "vector_b64": "A" * 32}
                                                                 for n in request["nonces"]]})
        else:
            getattr(conn, self.how)()
        return True


def first(fn):
    """Apply fn to the first artifact of the first answer only."""
    state = {"done": False}

    def go(a, req):
        if not state["done"] and a:
            state["done"] = True
            return fn(a)
        return a

    return go


def conflicting(a):
    return a + [{"nonce": a[0]["nonce"], "vector_b64": encode(-decode(a[0]["vector_b64"]))}]


def conflicting_first(a):
    return [{"nonce": a[0]["nonce"], "vector_b64": encode(-decode(a[0]["vector_b64"]))}] + a


def set_first(key, value):
    def fn(a):
        a[0][key] = value
        return a
    return fn


def copied(a, req):
    return [{"nonce": x["nonce"], "vector_b64": a[0]["vector_b64"]} for x in a]


def shifted(a, req):
    return [{"nonce": x["nonce"], "vector_b64": a[(i + 1) % len(a)]["vector_b64"]} for i, x in enumerate(a)]


def negated(a, req):
    return [{"nonce": x["nonce"], "vector_b64": encode(-decode(x["vector_b64"]))} for x in a]


def two_wrong(a, req):
    if req["nonces"][0] == 0:
        for x in a[:2]:
            x["vector_b64"] = encode(-decode(x["vector_b64"]))
    return a


NAN = encode([float("nan")] + [0.0] * 11)
INF = encode([float("inf")] + [0.0] * 11)
ELEVEN_PADDED = encode([0.25] * 11)  # 32 characters ending in '=': the fast decode path's old blind spot
assert ELEVEN_PADDED.endswith("=") and len(ELEVEN_PADDED) == 32

# name: (scenario factory, expected verdict, expected exit, extra assertion on the report)
SCENARIOS = {
    "honest": (lambda: None, "PASS", 0, None),
    "conflicting duplicate, honest first": (lambda: Mutate(first(conflicting)), "INCOMPLETE", 2,
                                            lambda r: r["conflicting_nonces"] == [0]),
    "conflicting duplicate, wrong first": (lambda: Mutate(first(conflicting_first)), "INCOMPLETE", 2,
                                           lambda r: r["conflicting_nonces"] == [0]),
    "identical duplicate": (lambda: Mutate(first(lambda a: a + [dict(a[0])])), "PASS", 0,
                            lambda r: r["conflicting_nonces"] == []),
    "unrequested nonce outside the reference": (
        lambda: Mutate(first(lambda a: a + [{"nonce": 10**6, "vector_b64": a[0]["vector_b64"]}])), "PASS", 0,
        lambda r: r["extra_nonces"] == [10**6]),
    "unrequested reference nonce, wrong vector": (
        lambda: Mutate(first(lambda a: a + [{"nonce": 20, "vector_b64": a[0]["vector_b64"]}])), "INCOMPLETE", 2,
        lambda r: 20 in r["extra_nonces"] and r["conflicting_nonces"] == [20]),
    "nonce true": (lambda: Mutate(first(set_first("nonce", True))), "INCOMPLETE", 2,
                   lambda r: r["n_malformed"] == 1 and r["missing_nonces"] == [0]),
    "nonce 3.0": (lambda: Mutate(first(set_first("nonce", 0.0))), "INCOMPLETE", 2, lambda r: r["n_malformed"] == 1),
    "nonce '5'": (lambda: Mutate(first(set_first("nonce", "0"))), "INCOMPLETE", 2, lambda r: r["n_malformed"] == 1),
    "nonce [1]": (lambda: Mutate(first(set_first("nonce", [0]))), "INCOMPLETE", 2, lambda r: r["n_malformed"] == 1),
    "nonce 2^63": (lambda: Mutate(first(lambda a: a + [{"nonce": 2**63, "vector_b64": a[0]["vector_b64"]}])),
                   "INCOMPLETE", 2, lambda r: r["n_malformed"] == 1),
    "entry not an object": (lambda: Mutate(first(lambda a: a + ["junk"])), "INCOMPLETE", 2,
                            lambda r: r["n_malformed"] == 1),
    "11 values, padded, last": (lambda: Mutate(lambda a, req: a[:-1] + [{**a[-1], "vector_b64": ELEVEN_PADDED}]),
                                "INCOMPLETE", 2, lambda r: len(r["invalid_nonces"]) == 3),
    "13 values": (lambda: Mutate(first(set_first("vector_b64", encode([0.1] * 13)))), "INCOMPLETE", 2,
                  lambda r: r["invalid_nonces"] == [0]),
    "NaN vector": (lambda: Mutate(first(set_first("vector_b64", NAN))), "INCOMPLETE", 2,
                   lambda r: r["invalid_nonces"] == [0]),
    "Inf vector": (lambda: Mutate(first(set_first("vector_b64", INF))), "INCOMPLETE", 2,
                   lambda r: r["invalid_nonces"] == [0]),
    "bad base64": (lambda: Mutate(first(set_first("vector_b64", "!" * 32))), "INCOMPLETE", 2,
                   lambda r: r["invalid_nonces"] == [0]),
    "vector as a number": (lambda: Mutate(first(set_first("vector_b64", 12345))), "INCOMPLETE", 2,
                           lambda r: r["invalid_nonces"] == [0]),
    "artifacts not a list": (lambda: Mutate(lambda a, req: "lots"), "INCOMPLETE", 2,
                             lambda r: r["n_malformed"] == 3 and r["n_missing"] == N),
    "answer is a JSON list": (lambda: Replace(200, [1, 2, 3]), "INCOMPLETE", 2, lambda r: r["n_missing"] == N),
    "HTML body": (lambda: Replace(200, "<html><body>502 Bad Gateway</body></html>", content_type="text/html"),
                  "INCOMPLETE", 2, None),
    "copied vectors": (lambda: Mutate(copied), "FAIL", 1, None),
    "shifted vectors": (lambda: Mutate(shifted), "FAIL", 1, None),
    "negated vectors": (lambda: Mutate(negated), "FAIL", 1, None),
    "two wrong vectors (within tolerance)": (lambda: Mutate(two_wrong), "PASS-with-mismatches", 0,
                                             lambda r: r["mismatch_nonces"] == [0, 1]),
    "dropped nonces": (lambda: Mutate(lambda a, req: a[1:]), "INCOMPLETE", 2, lambda r: r["n_missing"] == 3),
    "truncated body": (lambda: Take("truncate"), "INCOMPLETE", 2, None),
    "closed without an answer": (lambda: Take("close"), "INCOMPLETE", 2, None),
    "503 storm": (lambda: Replace(503, {"detail": "Service Unavailable"}), "INCOMPLETE", 2, None),
    "503 burst that recovers": (lambda: Replace(503, {"detail": "busy"}, times=2), "PASS", 0, None),
    "Gonka's 503 engine timeout": (lambda: Replace(503, {"message": "Timeout after 60.0s"}), "INCOMPLETE", 2,
                                   lambda r: "Timeout after 60.0s" in json.dumps(r)),
    "Gonka's 400 model mismatch": (lambda: Replace(400, "a bytes-like object is required, not 'dict'"),
                                   "INCOMPLETE", 2, None),
    "400 malformed body": (lambda: Replace(400, {"detail": "There was an error parsing the body"}), "INCOMPLETE", 2,
                           None),
    "hang": (lambda: Take("hang"), "INCOMPLETE", 2, None),
    "trickling body": (lambda: Take("trickle"), "INCOMPLETE", 2, None),
    "huge body": (lambda: Take("huge"), "INCOMPLETE", 2, None),
}


class QueueAnswer(Scenario):
    """Answer GET /generate/{id} (the poll of a queued request) with (status, body)."""

    def __init__(self, status, body):
        self.status, self.body = status, body

    def route(self, conn, method, path, request):
        if method == "GET" and path.startswith(GENERATE + "/"):
            conn.send(self.status, self.body)
            return True
        return False


class QueueIds(Scenario):
    """Rewrite the request id of every queued acknowledgement with fn(id, count)."""

    def __init__(self, fn):
        self.fn, self.n = fn, 0

    def answer(self, path, request, status, body):
        if path == GENERATE and isinstance(body, dict) and body.get("status") == "queued":
            self.n += 1
            body = {**body, "request_id": self.fn(body["request_id"], self.n)}
        return status, body


class Replay(Scenario):
    """Every answer with vectors repeats the first one (an earlier job's result)."""

    def __init__(self):
        self.first = None

    def answer(self, path, request, status, body):
        if path == GENERATE and isinstance(body, dict) and "artifacts" in body:
            self.first = self.first or body
            body = self.first
        return status, body


class TakePoll(Scenario):
    def route(self, conn, method, path, request):
        if method == "GET" and path.startswith(GENERATE + "/"):
            conn.hang()
            return True
        return False


class IgnoresWait(Scenario):
    """A node without the queue: it computes a wait=false request at once and answers the vectors."""

    def route(self, conn, method, path, request):
        if method != "POST" or path != GENERATE:
            return False
        r = httpx.post(conn.proxy.upstream + GENERATE, json={**request, "wait": True}, timeout=60)
        conn.send(r.status_code, r.json())
        return True


# the node's /generate queue (validate's default: several wait=false requests in flight)
QUEUE_SCENARIOS = {
    "queue: a node that ignores wait=false and answers at once": (lambda: IgnoresWait(), "PASS", 0, None),
    "queue: submission not queued": (lambda: Replace(200, {"status": "OK"}), "INCOMPLETE", 2, None),
    "queue: request id repeated": (lambda: QueueIds(lambda rid, n: "same-id"), "INCOMPLETE", 2, None),
    "queue: request id not a string": (lambda: QueueIds(lambda rid, n: 12345), "INCOMPLETE", 2, None),
    "queue: request id with a path in it": (lambda: QueueIds(lambda rid, n: "../../stop"), "INCOMPLETE", 2, None),
    "queue: 404 on poll": (lambda: QueueAnswer(404, {"detail": "Request x not found"}), "INCOMPLETE", 2, None),
    "queue: job failed": (lambda: QueueAnswer(200, {"status": "failed", "request_id": "x", "error":
                                                   "Timeout waiting for engine RPC: chunk 0"}), "INCOMPLETE", 2,
                          lambda r: "Timeout waiting for engine" in json.dumps(r)),
    "queue: never completes": (lambda: QueueAnswer(200, {"status": "queued", "request_id": "x"}), "INCOMPLETE", 2,
                               None),
    "queue: completed without artifacts": (lambda: QueueAnswer(200, {"status": "completed", "request_id": "x"}),
                                           "INCOMPLETE", 2, None),
    "queue: cancelled": (lambda: QueueAnswer(200, {"status": "cancelled", "request_id": "x"}), "INCOMPLETE", 2, None),
    "queue: an earlier job's vectors again": (lambda: Replay(), "INCOMPLETE", 2,
                                              lambda r: r["n_missing"] == N - BATCH),
    "queue: poll hangs": (lambda: TakePoll(), "INCOMPLETE", 2, None),
}
MODES = {"queued": [], "wait=true": ["--in-flight", "0"]}
# the scenarios whose run ends only at its deadline: the node never gives every chunk back
DEADLINE_BOUND = {"503 storm", "Gonka's 503 engine timeout", "truncated body", "closed without an answer", "hang",
                  "trickling body", "queue: never completes", "queue: poll hangs"}
CASES = [(name, mode) for name in SCENARIOS for mode in MODES] + [(name, "queued") for name in QUEUE_SCENARIOS]


@pytest.mark.parametrize("name,mode", CASES)
def test_validate_against_a_hostile_node(name, mode, hostile, reference, tmp_path, capsys):
    factory, verdict, code, check = {**SCENARIOS, **QUEUE_SCENARIOS}[name]
    proxy = hostile(factory())
    timeout = TIMEOUT if name in DEADLINE_BOUND else ROOMY_TIMEOUT
    rc, seconds = run_validate(proxy.url, reference, tmp_path / "bundle", *MODES[mode], timeout=timeout)
    cap = capsys.readouterr()
    text = cap.out + cap.err
    assert "Traceback" not in text and "internal error" not in text, text
    r = report(tmp_path / "bundle")
    assert (r["verdict"], rc, r["exit_code"]) == (verdict, code, code), text[-3000:]
    assert text.splitlines()[[i for i, x in enumerate(text.splitlines()) if x.startswith("VERDICT")][0]]
    for f in ("config.json", "report.json", "vectors.json", "environment.json", "report.txt"):
        assert (tmp_path / "bundle" / f).is_file()
    assert (tmp_path / "bundle" / "report.txt").read_text().startswith("VERDICT: " + verdict.split("-")[0])
    assert seconds < timeout + SLACK, f"{name}: {seconds:.1f} s"
    if verdict != "FAIL":
        assert r["fraud_detected"] is False and (r["p_value"] is None or r["p_value"] >= STAT["fraud_threshold"])
    if check is not None:
        assert check(r), json.dumps({k: r.get(k) for k in ("conflicting_nonces", "extra_nonces", "n_malformed",
                                                            "malformed", "invalid_nonces", "missing_nonces")})


def test_no_vector_back_prints_no_rate(hostile, reference, tmp_path, capsys):
    """A run where nothing came back must not print a rate (it once said 37,057 nonces/s)."""
    proxy = hostile(Replace(503, {"detail": "down"}))
    rc, _ = run_validate(proxy.url, reference, tmp_path / "b", timeout=2)
    r = report(tmp_path / "b")
    assert rc == 2 and r["throughput"]["nonces"] == 0 and r["throughput"]["nonces_per_second"] is None
    assert "nonces/s" not in (tmp_path / "b" / "report.txt").read_text()


def test_a_request_id_is_polled_under_generate_only(hostile, reference, tmp_path, capsys):
    """A node's request id is data, not a path: "../../stop" is polled as one quoted segment under
    /generate/ (unquoted, the URL would resolve to another route)."""
    proxy = hostile(QueueIds(lambda rid, n: f"../../stop{n}"))
    rc, _ = run_validate(proxy.url, reference, tmp_path / "b", timeout=ROOMY_TIMEOUT)
    polls = [p for m, p in proxy.calls if m == "GET" and p.startswith(GENERATE + "/")]
    assert rc == 2 and polls and all(p.startswith(GENERATE + "/..%2F..%2Fstop") for p in polls), proxy.calls
    assert all(p.startswith(("/api/v1/pow/", "/v1/models")) for _, p in proxy.calls)


def test_the_model_is_checked_before_the_run(hostile, reference, tmp_path, capsys):
    models = {"object": "list", "data": [{"id": "other/model", "object": "model", "root": "/models/other"}]}
    proxy = hostile(Replace(200, models, route_path=MODELS))
    rc, _ = run_validate(proxy.url, reference, tmp_path / "b", timeout=ROOMY_TIMEOUT)  # it ends at the model check
    err = capsys.readouterr().err
    assert rc == 2 and "the node serves 'other/model', '/models/other', the reference is for 'test/tiny-minimax'" in err
    assert ("POST", GENERATE) not in proxy.calls and report(tmp_path / "b")["verdict"] == "ERROR"


def test_connection_refused_ends_after_the_grace(reference, tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc, seconds = run_validate(f"http://127.0.0.1:{port}", reference, tmp_path / "b", timeout=300)
    err = capsys.readouterr().err
    assert rc == 2 and seconds < 2 + SLACK and "cannot connect" in err and "Traceback" not in err  # --connect-grace 2
    assert report(tmp_path / "b")["verdict"] == "ERROR"


@pytest.mark.parametrize("url", ["localhost:8011", "127.0.0.1", "ftp://host/x", "http://:80", "http://h:99999"])
def test_a_url_that_is_not_http_is_a_usage_error_at_once(url, reference, tmp_path, capsys):
    """Refused before any connection: a run that tried would spend its --connect-grace (120 s) first."""
    t0 = time.monotonic()
    rc = main(["validate", "--url", url, "--reference", str(reference), "--out", str(tmp_path / "b"),
               "--connect-grace", "120"])
    err = capsys.readouterr().err
    assert rc == 2 and time.monotonic() - t0 < 60 and err.startswith("error: --url") and len(err.splitlines()) == 1
    assert not (tmp_path / "b").exists()


# ---- the throughput phase: status answers and callbacks -------------------------------------
class LotsStatus(Scenario):
    def answer(self, path, request, status, body):
        if path == STATUS and isinstance(body, dict) and isinstance(body.get("stats"), dict):
            body = {**body, "stats": {**body["stats"], "total_processed": "lots"}}
        return status, body


class JunkCallbacks(Scenario):
    """Forward init/generate, and post malformed callbacks to the harness's callback URL."""

    def __init__(self, posts):
        self.posts = posts

    def route(self, conn, method, path, request):
        if path == INIT and isinstance(request, dict) and request.get("url"):
            def post():
                time.sleep(0.2)
                for p in self.posts:
                    httpx.post(request["url"] + "/generated", content=p if isinstance(p, bytes) else json.dumps(p),
                               headers={"Content-Type": "application/json"}, timeout=5)
            threading.Thread(target=post, daemon=True).start()
        return False


THROUGHPUT_SCENARIOS = {
    "status total_processed 'lots'": (LotsStatus, "ERROR", 2),
    "callback that is not JSON": (lambda: JunkCallbacks([b"{not json"]), "INCOMPLETE", 2),
    "callback artifacts not a list": (lambda: JunkCallbacks([{"artifacts": "x"}]), "INCOMPLETE", 2),
    "callback with a bad golden vector": (lambda: JunkCallbacks([{"artifacts": [{"nonce": 3, "vector_b64": "!!"}]}]),
                                          "INCOMPLETE", 2),
    "callback with a list as nonce": (lambda: JunkCallbacks([{"artifacts": [{"nonce": [1], "vector_b64": "x"}]}]),
                                      "INCOMPLETE", 2),
    "honest throughput": (lambda: None, "PASS", 0),
}


@pytest.mark.parametrize("name", list(THROUGHPUT_SCENARIOS))
def test_throughput_phase_against_a_hostile_node(name, hostile, node, reference, tmp_path, capsys):
    factory, verdict, code = THROUGHPUT_SCENARIOS[name]
    proxy = hostile(factory())
    rc, seconds = run_validate(proxy.url, reference, tmp_path / "b", throughput=True, timeout=ROOMY_TIMEOUT)
    cap = capsys.readouterr()
    text = cap.out + cap.err
    assert "Traceback" not in text and "internal error" not in text, text[-3000:]
    r = report(tmp_path / "b")
    assert (r["verdict"], rc) == (verdict, code), text[-3000:]
    assert seconds < 0.5 + 1.5 + 2 * ROOMY_TIMEOUT + SLACK  # warm-up, window, each phase's --timeout
    assert httpx.get(node.url + STATUS).json()["status"] == "IDLE"  # the harness stopped the node's loop
    if verdict == "INCOMPLETE":
        assert r["throughput_phase"]["spot_verdict"] == "INCOMPLETE" and r["throughput_phase"]["spot_malformed"] or \
            r["throughput_phase"]["spot_verdict"] == "INCOMPLETE"


# ---- signals: a real `mlvalidate validate` process -----------------------------------------
def _spawn(url, reference, out, *extra):
    return subprocess.Popen([sys.executable, "-m", "mlvalidate", "validate", "--url", url, "--reference",
                             str(reference), "--batch-size", str(BATCH), "--timeout", "60", "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(proxy, call, limit=60):
    t0 = time.monotonic()
    while call not in proxy.calls:
        assert time.monotonic() - t0 < limit, f"never saw {call}"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_validation_writes_the_bundle(sig, hostile, reference, tmp_path):
    proxy = hostile(Take("hang"))
    p = _spawn(proxy.url, reference, tmp_path / "b", "--skip-throughput", "--junit", str(tmp_path / "j.xml"))
    _wait_for(proxy, ("POST", GENERATE))
    time.sleep(0.3)
    p.send_signal(sig)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 2 and "Traceback" not in err, err
    r = report(tmp_path / "b")
    name = "SIGTERM" if sig == signal.SIGTERM else "SIGINT"
    assert r["verdict"] == "ERROR" and name in r["error"] and r["missing_nonces"] == list(range(N))
    assert out.startswith("[1/2]") and "VERDICT: ERROR" in out
    junit = (tmp_path / "j.xml").read_text()
    assert 'errors="1"' in junit and name in junit  # the validate case is an error naming the signal


@pytest.mark.slow
def test_sigterm_during_throughput_stops_the_nodes_generation(hostile, node, reference, tmp_path):
    proxy = hostile()
    p = _spawn(proxy.url, reference, tmp_path / "b", "--warmup-seconds", "30", "--throughput-batch-size", "8")
    _wait_for(proxy, ("POST", INIT))
    deadline = time.monotonic() + 60  # the proxy forwards init/generate to the node: it starts generating
    while httpx.get(node.url + STATUS).json()["status"] != "GENERATING":
        assert time.monotonic() < deadline, "the node never started generating"
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "Traceback" not in err, err
    r = report(tmp_path / "b")
    assert r["verdict"] == "ERROR" and "SIGTERM" in r["error"]
    assert [(ph["name"], ph["status"]) for ph in r["phases"]] == [("throughput", "error"), ("validate", "not run")]
    assert httpx.get(node.url + STATUS).json()["status"] == "IDLE"


# ---- the property: exit 0 only when every nonce had exactly one usable vector ---------------
JUNK_NONCES = [True, 1.0, "1", [1], -1, 2**63, None]


@st.composite
def mutations(draw):
    """A list of (chunk index, operation) applied to the node's answers."""
    ops = st.one_of(
        st.tuples(st.just("drop"), st.integers(0, BATCH - 1)),
        st.tuples(st.just("dup_same"), st.integers(0, BATCH - 1)),
        st.tuples(st.just("dup_other"), st.integers(0, BATCH - 1)),
        st.tuples(st.just("negate"), st.integers(0, BATCH - 1)),
        st.tuples(st.just("noise"), st.integers(0, BATCH - 1)),
        st.tuples(st.just("junk_nonce"), st.integers(0, len(JUNK_NONCES) - 1)),
        st.tuples(st.just("junk_vector"), st.integers(0, BATCH - 1)),
        st.tuples(st.just("extra"), st.integers(0, 10**9)),
        st.tuples(st.just("shuffle"), st.integers(0, 1000)),
    )
    return draw(st.lists(st.tuples(st.integers(0, N // BATCH - 1), ops), max_size=4))


def apply(muts):
    def fn(a, req):
        chunk = req["nonces"][0] // BATCH
        for c, (op, x) in muts:
            if c != chunk or not a:
                continue
            i = x % len(a) if isinstance(x, int) else 0
            if op == "drop":
                a.pop(i)
            elif op == "dup_same":
                a.append(dict(a[i]))
            elif op == "dup_other":
                a.append({"nonce": a[i]["nonce"], "vector_b64": a[(i + 1) % len(a)]["vector_b64"]})
            elif op in ("negate", "noise"):
                v = decode(a[i]["vector_b64"])
                if v is not None:
                    v = -v if op == "negate" else v + np.float32(0.05) * np.sign(np.arange(12) - 5.5)
                    a[i] = {"nonce": a[i]["nonce"], "vector_b64": encode(v)}
            elif op == "junk_nonce":
                a.append({"nonce": JUNK_NONCES[x], "vector_b64": a[0]["vector_b64"]})
            elif op == "junk_vector":
                a[i] = {"nonce": a[i]["nonce"], "vector_b64": "@" * 32}
            elif op == "extra":
                a.append({"nonce": 10**6 + x, "vector_b64": a[0]["vector_b64"]})
            elif op == "shuffle":
                np.random.default_rng(x).shuffle(a)
        return a
    return fn


def judged_clean(proxy, refs) -> bool:
    """From what the node sent: every reference nonce has exactly one distinct usable vector, no
    entry is malformed, and the mismatches are within the stat test's tolerance."""
    answers: dict[int, set] = {n: set() for n in refs}
    for _asked, body in proxy.sent:
        if not isinstance(body, dict) or not isinstance(body.get("artifacts"), list):
            return False
        for e in body["artifacts"]:
            n = e.get("nonce") if isinstance(e, dict) else None
            if type(n) is not int or not 0 <= n < 2**63:
                return False
            if n in answers:
                v = decode(e.get("vector_b64"))
                answers[n].add(None if v is None or not np.isfinite(v).all() else v.tobytes())
    if any(len(s) != 1 or None in s for s in answers.values()):
        return False
    over = sum(float(np.linalg.norm(np.frombuffer(next(iter(answers[n])), np.float32) - refs[n]))
               > STAT["dist_threshold"] for n in refs)
    return binomtest(over, len(refs), STAT["p_mismatch"], alternative="greater").pvalue >= STAT["fraud_threshold"]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(muts=mutations())
def test_exit_0_only_when_every_nonce_had_one_usable_vector(muts, hostile, reference, tmp_path_factory, capsys):
    proxy = hostile(Mutate(apply(muts)))
    out = tmp_path_factory.mktemp("prop")
    rc, _ = run_validate(proxy.url, reference, out / "b", timeout=ROOMY_TIMEOUT)
    text = "".join(capsys.readouterr())
    assert "Traceback" not in text and rc in (0, 1, 2)
    clean = judged_clean(proxy, ref_vectors(reference))
    if rc == 0:
        assert clean, (muts, report(out / "b")["verdict"])
    if rc == 1:
        assert report(out / "b")["verdict"] == "FAIL"
    if not muts:
        assert rc == 0 and clean


def test_the_nodes_versions_are_recorded_when_it_answers_them(hostile, reference, tmp_path, capsys):
    """Newer Gonka builds answer GET /api/v1/pow/versions; older ones do not (404): both are fine."""
    proxy = hostile(Replace(200, {"vllm_version": "0.23.0", "poc_validation_inference": True},
                            route_path="/api/v1/pow/versions"))
    rc, _ = run_validate(proxy.url, reference, tmp_path / "a", timeout=ROOMY_TIMEOUT)
    assert rc == 0 and report(tmp_path / "a")["node_versions"] == {"vllm_version": "0.23.0",
                                                                    "poc_validation_inference": True}
    rc, _ = run_validate(hostile().url, reference, tmp_path / "b", timeout=ROOMY_TIMEOUT)  # no such route there
    assert rc == 0 and report(tmp_path / "b")["node_versions"] is None
