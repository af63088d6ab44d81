"""`mlvalidate fleet` over loopback: four reference PoC servers behind a stub admin API that
answers GET /admin/v1/nodes in the documented shape (docs/chain-api.md, last section) —
an honest node, a 4-bit cheater, one killed mid-run and one that never answers. Verdicts, the
fleet's exit code, one bundle per node, the fleet report (rendered in headless Chromium where
installed), Ctrl-C/SIGTERM stopping every node, and node lists without an admin API.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
import time
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest

import mlvalidate.server as srv
from mlvalidate.cli import main
from mlvalidate.fleet import NodeResult, NodeTarget, fleet_exit_code
from mlvalidate.server import make_server

from fault_proxy import GENERATE, FaultProxy, Scenario
from tiny_nodes import BATCH, MODEL, N, Serialized, cheat_engine, honest_engine, small_reference

TIMEOUT = 30.0  # each node's --timeout: never reached by a node that answers, however busy; the silent one ends at it
SLACK = 20.0  # past a deadline: the bundle, the report, a busy machine
THROUGHPUT = ["--warmup-seconds", "0.5", "--measure-seconds", "1.5", "--sample-interval", "0.5",
              "--throughput-batch-size", "8"]
CHROMIUM = Path("/usr/bin/chromium")


# ---- nodes ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine(tiny_minimax_fp8):
    return honest_engine(tiny_minimax_fp8)


@pytest.fixture(scope="module")
def cheat(tiny_minimax_fp8, tmp_path_factory):
    return cheat_engine(tiny_minimax_fp8, tmp_path_factory.mktemp("cheat"))


@pytest.fixture(scope="module")
def reference(engine, tmp_path_factory):
    return small_reference(engine, tmp_path_factory.mktemp("ref"))


class Node:
    def __init__(self, engine):
        self.server = make_server(Serialized(engine), MODEL)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = self.server.url

    def status(self) -> str:
        return httpx.get(self.url + "/api/v1/pow/status", timeout=10).json()["status"]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Hang(Scenario):
    """The node accepts every connection and never answers."""

    def route(self, conn, method, path, request):
        conn.hang()
        return True


class DieAfterFirstChunk(Scenario):
    """The node answers the first /generate chunk, then dies: the open connection is dropped
    without an answer and the port refuses new ones."""

    def __init__(self):
        self.answered, self.proxy = 0, None

    def answer(self, path, request, status, body):
        if path == GENERATE and isinstance(body, dict) and "artifacts" in body:  # vectors came back (once)
            self.answered += 1
        return status, body

    def route(self, conn, method, path, request):
        if self.answered >= 1:
            if not self.proxy.closing.is_set():
                self.proxy.closing.set()
                threading.Thread(target=self._kill, daemon=True).start()
            conn.close()
            return True
        return False

    def _kill(self):
        self.proxy.server.shutdown()
        self.proxy.server.server_close()


class AdminStub:
    """GET /admin/v1/nodes in the documented shape; anything else 404."""

    def __init__(self, entries: list[dict]):
        self.entries, self.calls = entries, []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                stub.calls.append(self.path)
                ok = self.path.rstrip("/") == "/admin/v1/nodes"
                data = json.dumps(stub.entries if ok else {"detail": "not found"}).encode()
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def entry(node_id: str, url: str) -> dict:
    """An admin entry as the network node registers it; the vLLM PoC API is on inference_port."""
    port = int(url.rsplit(":", 1)[1])
    return {"id": node_id, "host": "127.0.0.1", "inference_port": port, "poc_port": 9,  # nothing listens on 9
            "max_concurrent": 500, "models": {MODEL: {"args": ["--tensor-parallel-size", "1", "--dtype", "float32"]}}}


@pytest.fixture
def fleet_nodes(engine, cheat, monkeypatch):
    monkeypatch.setattr(srv, "CALLBACK_INTERVAL_SEC", 0.3)
    honest, cheater, upstream = Node(engine), Node(cheat), Node(engine)
    dying = DieAfterFirstChunk()
    killed = FaultProxy(upstream.url, dying)
    dying.proxy = killed
    hang = FaultProxy(honest.url, Hang())
    admin = AdminStub([entry("honest", honest.url), entry("cheater", cheater.url), entry("killed", killed.url),
                       entry("silent", hang.url)])
    yield {"admin": admin, "honest": honest, "cheater": cheater, "upstream": upstream, "hang": hang, "killed": killed}
    admin.close()
    hang.close()
    if not killed.closing.is_set():
        killed.close()
    else:
        killed.client.close()
    for n in (honest, cheater, upstream):
        n.close()


def fleet_args(reference, out, *extra, timeout=TIMEOUT):
    return ["fleet", "--reference", str(reference), "--batch-size", str(BATCH), "--timeout", str(timeout),
            "--connect-grace", "2", "--out", str(out), *extra]


def nodes_of(out: Path) -> dict:
    return {n["id"]: n for n in json.loads((out / "fleet.json").read_text())["nodes"]}


# ---- the four nodes behind the admin API -----------------------------------------------------
@pytest.mark.slow
def test_fleet_behind_admin_api(fleet_nodes, reference, tmp_path, capsys):
    out = tmp_path / "fleet"
    t0 = time.monotonic()
    rc = main(fleet_args(reference, out, "--admin", fleet_nodes["admin"].url, "--concurrency", "4",
                         "--junit", str(tmp_path / "junit.xml"), *THROUGHPUT))
    wall = time.monotonic() - t0
    cap = capsys.readouterr()
    assert rc == 1, cap.out[-3000:] + cap.err[-2000:]  # a FAIL anywhere: exit 1
    assert fleet_nodes["admin"].calls == ["/admin/v1/nodes"]
    nodes = nodes_of(out)
    assert set(nodes) == {"honest", "cheater", "killed", "silent"}
    assert nodes["honest"]["verdict"] == "PASS" and nodes["honest"]["n_mismatch"] == 0
    assert nodes["cheater"]["verdict"] == "FAIL" and nodes["cheater"]["n_mismatch"] > N // 2
    assert nodes["cheater"]["p_value"] < 0.05
    assert nodes["killed"]["verdict"] in ("INCOMPLETE", "ERROR") and nodes["killed"]["exit_code"] == 2
    assert nodes["silent"]["verdict"] == "ERROR" and nodes["silent"]["exit_code"] == 2
    # the URL came from inference_port, not poc_port
    assert nodes["honest"]["url"] == fleet_nodes["honest"].url and nodes["honest"]["api"] == "vllm"
    # each node within its own deadline: the silent one (model check, then nothing) ran to its --timeout and did
    # not hold the others (the honest node is done long before: it never needs the --timeout)
    assert nodes["silent"]["wall_s"] >= TIMEOUT - 1 and nodes["honest"]["wall_s"] < nodes["silent"]["wall_s"]
    assert nodes["silent"]["wall_s"] < TIMEOUT + SLACK
    assert wall < TIMEOUT + 2 * SLACK  # side by side: the fleet lasts about its slowest node
    # one bundle per node, with the node's verdict
    for nid, n in nodes.items():
        rep = json.loads((Path(n["bundle"]) / "report.json").read_text())
        assert rep["verdict"] == n["verdict"] and rep["name"] == nid
        assert (Path(n["bundle"]) / "vectors.json").is_file()
    killed = json.loads((Path(nodes["killed"]["bundle"]) / "report.json").read_text())
    assert 0 < len(killed["missing_nonces"]) < N  # the first chunk came back, the rest is listed missing
    # throughput: every answering node measured a rate; the fleet's total counts only the nodes that passed
    summary = json.loads((out / "fleet.json").read_text())
    rates = [nodes[k]["steady_nonces_per_min"] for k in ("honest", "cheater")]
    assert all(r and r > 0 for r in rates)
    assert summary["fleet_nonces_per_min"] == pytest.approx(nodes["honest"]["steady_nonces_per_min"])
    apart = {n["id"] for n in summary["not_counted"]}  # the cheater, and the killed node if it measured a rate
    assert "cheater" in apart and apart <= {"cheater", "killed"} and "honest" not in apart
    # the cheater's vectors sit far from its peers': flagged
    assert any("vectors far from every peer" in f for f in nodes["cheater"]["outlier"])
    assert not any("vectors" in f for f in nodes["honest"]["outlier"])
    # the generation loops were stopped
    for k in ("honest", "cheater"):
        assert fleet_nodes[k].status() == "IDLE"
    # the report and JUnit
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert "FAIL 1" in md and "PASS 1" in md and "## Outliers" in md and "**cheater**" in md
    assert 'verdict v-fail">FAIL' in page and 'verdict v-pass">PASS' in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I) and "<script" not in page.lower()
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert set(cases) == set(nodes) and cases["cheater"].find("failure") is not None
    assert cases["silent"].find("error") is not None and len(list(cases["honest"])) == 1  # system-out only
    assert "FLEET: 4 node(s)" in cap.out and "Traceback" not in cap.out + cap.err
    keep = Path("/tmp/mlvalidate-fleet-report")
    shutil.rmtree(keep, ignore_errors=True)
    shutil.copytree(out, keep, ignore=shutil.ignore_patterns("nodes"))  # for the render test and a person


# ---- the fleet report: figures, JUnit, the page at 1280 x 900 (synthetic bundles, no node run) ----------
def _synthetic_fleet(root: Path, n_nodes: int = 5, wall_s: float = 21.0):
    """A fleet as run_fleet returns it, over bundles written by write_bundle (tests/report_fixtures.py)
    for a 200-nonce reference: an honest node whose MLNode says 4x H100 (2,368/min), one declared
    "A100 x4" (1,100/min), a cheater that FAILs at 1,557/min with 187 of 200 past the gate (p-value
    2.26e-168, the demo's), a node killed mid-run (INCOMPLETE) and one that never answered (ERROR,
    a long error); past 5, more honest nodes. The nodes ran side by side (each ~20 s, `wall_s` in all)."""
    import report_fixtures as rf
    from mlvalidate.fleet import FleetResult
    from mlvalidate.serving.profiles import load_profile

    ref, h100 = rf.reference(200), load_profile("h100x4")
    mlnode = rf.mlnode_answers("http://10.0.0.1:8080", rf.H100_DEVICES, rf.H100_DRIVER)
    long_error = ("validate: POST http://10.0.0.5:5000/api/v1/pow/generate failed after 12 attempt(s) within the "
                  "deadline: cannot connect: [Errno 111] Connection refused (for 30 s) — is the node running, and are "
                  "the URL's host and port right? (--timeout bounds the whole wait; the node's last answer was HTTP 503 "
                  "\"No vLLM backends available\" before it went away)")
    kinds = [("honest", dict(vectors=0.005, node_facts={"mlnode": mlnode}, profile=h100, per_min=2368.0)),
             ("declared", dict(vectors=0.01, node_facts={}, gpus="A100 x4", per_min=1100.0)),
             ("cheater", dict(vectors=0.3, rows=187, node_facts={}, profile=h100, per_min=1557.0)),
             ("killed", dict(vectors=0.005, node_facts={}, keep=80)),  # went away mid-run: INCOMPLETE
             ("silent", dict(vectors=0.005, keep=0, error=long_error))]
    kinds += [(f"honest-{i}", dict(vectors=0.005, node_facts={"mlnode": mlnode}, profile=h100, per_min=2300.0 + i))
              for i in range(n_nodes - len(kinds))]
    results = []
    for i, (name, kw) in enumerate(kinds[:n_nodes]):
        url = f"http://10.0.0.{i + 1}:5000"
        path = rf.bundle(root, name, ref, rf.noisy(ref, kw.pop("vectors"), i, kw.pop("rows", None)), url=url, **kw)
        rep = json.loads((path / "report.json").read_text())
        results.append(NodeResult(NodeTarget(name, url), rep["verdict"], rep["exit_code"], bundle=path,
                                  error=rep.get("error"), wall_s=20.0 + i / 10, started=True))
    return FleetResult(results, wall_s, started_at="2026-12-07T08:00:00+00:00")


def test_fleet_total_counts_only_nodes_that_passed_and_junit_time_is_the_wall_time(tmp_path):
    from mlvalidate.commands.compare import profile_or_none
    from mlvalidate.commands.fleet import write_fleet_junit
    from mlvalidate.report.fleet_report import write_fleet_report

    fleet = _synthetic_fleet(tmp_path / "bundles")
    paths = write_fleet_report(fleet, tmp_path / "out", profiles=profile_or_none)
    summary = json.loads(paths["json"].read_text())
    verdicts = {n["id"]: n["verdict"] for n in summary["nodes"]}
    assert verdicts == {"honest": "PASS", "declared": "PASS", "cheater": "FAIL", "killed": "INCOMPLETE",
                        "silent": "ERROR"}
    assert summary["fleet_nonces_per_min"] == pytest.approx(2368.0 + 1100.0)  # not the cheater's 1,557
    assert summary["nodes_counted"] == 2 and summary["nodes_measured"] == 3
    assert summary["not_counted"] == [{"id": "cheater", "verdict": "FAIL", "steady_nonces_per_min": pytest.approx(1557.0)}]
    cheater = next(n for n in summary["nodes"] if n["id"] == "cheater")
    assert cheater["n_mismatch"] == 187 and f"{cheater['p_value']:.3g}" == "2.26e-168"  # the demo's cheater
    assert summary["fleet_published_nonces_per_min"] == pytest.approx(2368.0)  # only the honest node has a profile
    md = paths["markdown"].read_text()
    assert "3,468.0 nonces/min summed over the 2 node(s) whose vectors passed (the 1 with a profile figure: 100 % " \
        "of the published 2,368/min)" in md
    assert "not counted (vectors did not pass): cheater 1,557.0/min (FAIL)" in md
    hw = {n["id"]: n["hardware_cell"] for n in summary["nodes"]}
    assert hw["honest"] == "4× NVIDIA H100 80GB HBM3 [the node]" and hw["declared"] == "4× A100 [--gpus]"
    assert hw["cheater"] == "4× NVIDIA H100 80GB [profile h100x4]" and hw["silent"] == "unknown [the node never answered]"
    suite = ET.parse(write_fleet_junit(tmp_path / "junit.xml", fleet)).getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert sum(float(c.get("time")) for c in cases) > 100  # five nodes of ~20 s each...
    assert float(suite.get("time")) == pytest.approx(21.0)  # ...side by side in 21 s


@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless render needs Debian's chromium (/usr/bin/chromium)")
@pytest.mark.parametrize("n_nodes", [5, 16])
def test_fleet_report_at_1280_by_900_in_chromium(n_nodes, tmp_path):
    from mlvalidate.report.fleet_report import write_fleet_report
    from render_check import check_page_at_1280

    from mlvalidate.commands.compare import profile_or_none

    paths = write_fleet_report(_synthetic_fleet(tmp_path / "bundles", n_nodes), tmp_path / "out",
                               profiles=profile_or_none)
    lay = check_page_at_1280(paths["html"], tmp_path, f"fleet-{n_nodes}")
    assert {"PASS", "FAIL", "INCOMPLETE", "ERROR"} <= {v["text"] for v in lay["verdicts"]}
    page = paths["html"].read_text()
    assert "Connection refused (for 30 s)" in page and "before it went away" in page  # the long error is whole


# ---- Ctrl-C / SIGTERM --------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_stops_every_node_and_writes_every_bundle(engine, reference, tmp_path, monkeypatch, capsys):
    """SIGTERM (to the main thread) while three nodes generate for a long throughput window and a
    fourth never answers; concurrency 3, so one node has not started: every run ends within
    seconds, every generation loop is stopped, every node has a bundle, the report is written."""
    monkeypatch.setattr(srv, "CALLBACK_INTERVAL_SEC", 0.3)
    nodes = [Node(engine) for _ in range(3)]
    hang = FaultProxy(nodes[0].url, Hang())
    urls = [n.url for n in nodes[:2]] + [hang.url, nodes[2].url]
    out = tmp_path / "fleet"
    fired, stop = [], threading.Event()

    def signal_when_busy():  # once two nodes generate and the silent one was asked: the moment the test is about
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            if hang.calls and all(n.status() == "GENERATING" for n in nodes[:2]):
                fired.append(time.monotonic())
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=signal_when_busy, daemon=True)
    try:
        watcher.start()
        rc = main(fleet_args(reference, out, *sum((["--url", u] for u in urls), []), "--concurrency", "3",
                             "--warmup-seconds", "60", "--measure-seconds", "60", "--throughput-batch-size", "8",
                             timeout=120))
        ended = time.monotonic()
    finally:
        stop.set()
        watcher.join(timeout=10)
        hang.close()
    cap = capsys.readouterr()
    try:
        assert fired, "the nodes never were all busy: " + cap.out[-3000:]
        assert rc == 2, cap.out[-3000:]
        # the interrupt reaches every worker at its next wait (0.2 s) and each stops its node (1 s): well within
        # SLACK; without it, the runs would last their 60 s windows or the 120 s --timeout
        assert ended - fired[0] < SLACK, f"{ended - fired[0]:.1f} s: the interrupt did not reach every worker"
        summary = json.loads((out / "fleet.json").read_text())
        assert summary["interrupted"] == "SIGTERM"
        by_url = {n["url"]: n for n in summary["nodes"]}
        for u in urls:
            n = by_url[u]
            assert n["verdict"] == "ERROR" and "SIGTERM" in n["error"], n
            assert (Path(n["bundle"]) / "report.json").is_file()
        assert "not started" in by_url[nodes[2].url]["error"]
        for n in nodes:
            assert n.status() == "IDLE"  # generation stopped on the way out
        assert (out / "report.html").is_file() and "interrupted by SIGTERM" in (out / "report.md").read_text()
    finally:
        for n in nodes:
            n.close()


# ---- without an admin API -----------------------------------------------------------------
def test_nodes_file_and_urls(engine, reference, tmp_path, capsys):
    a, b = Node(engine), Node(engine)
    try:
        listed = tmp_path / "nodes.yaml"
        listed.write_text(f"- {a.url}\n- id: b\n  host: 127.0.0.1\n  inference_port: {b.url.rsplit(':', 1)[1]}\n"
                          f"  models: {{{MODEL}: {{args: []}}}}\n")
        out = tmp_path / "ok"
        assert main(fleet_args(reference, out, "--nodes", str(listed), "--url", b.url, "--skip-throughput")) == 0
        nodes = nodes_of(out)
        assert len(nodes) == 3 and {n["verdict"] for n in nodes.values()} == {"PASS"}
        assert nodes["b"]["source"] == "nodes-file" and any(n["source"] == "--url" for n in nodes.values())
        # a malformed entry is an ERROR of its own (exit 2), the others still run
        listed.write_text(json.dumps([a.url, {"id": "noport", "host": "127.0.0.1"}]))
        out = tmp_path / "bad"
        assert main(fleet_args(reference, out, "--nodes", str(listed), "--skip-throughput")) == 2
        nodes = nodes_of(out)
        assert nodes["noport"]["verdict"] == "ERROR" and "inference_port" in nodes["noport"]["error"]
        assert [n for n in nodes.values() if n["verdict"] == "PASS"]
    finally:
        a.close()
        b.close()
    capsys.readouterr()


def test_no_nodes_or_unreachable_admin_is_one_line(reference, tmp_path, capsys):
    assert main(["fleet", "--reference", str(reference), "--out", str(tmp_path / "x")]) == 2
    assert "--admin" in capsys.readouterr().err
    assert main(["fleet", "--reference", str(reference), "--admin", "http://127.0.0.1:9", "--timeout", "3",
                 "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the admin API") and "\n" not in err


def test_exit_codes():
    t = NodeTarget("n", "http://x:1")

    def r(v, code):
        return NodeResult(t, v, code)

    assert fleet_exit_code([r("PASS", 0), r("PASS-with-mismatches", 0)]) == 0
    assert fleet_exit_code([r("PASS", 0), r("FAIL", 1), r("ERROR", 2)]) == 1
    assert fleet_exit_code([r("PASS", 0), r("INCOMPLETE", 2)]) == 2
    assert fleet_exit_code([r("PASS", 0), r("SKIPPED", 0)]) == 0
    assert fleet_exit_code([r("SKIPPED", 0)]) == 2  # nothing validated is not a pass


def test_port_field_and_entries():
    from mlvalidate.fleet import target_from_entry

    e = {"id": "n1", "host": "10.0.0.5", "inference_port": 5050, "poc_port": 8080, "max_concurrent": 500,
         "models": {"MiniMaxAI/MiniMax-M2.7": {"args": []}}}
    t = target_from_entry(e, 0, "inference_port", "admin")
    assert (t.url, t.api, t.models) == ("http://10.0.0.5:5050", "vllm", ["MiniMaxAI/MiniMax-M2.7"])
    t = target_from_entry(e, 0, "poc_port", "admin")
    assert (t.url, t.api) == ("http://10.0.0.5:8080", "mlnode")
    assert target_from_entry({**e, "host": "fd00::1"}, 0, "inference_port", "admin").url == "http://[fd00::1]:5050"
    assert target_from_entry({**e, "inference_port": "5050"}, 0, "inference_port", "admin").problem
    assert target_from_entry(42, 3, "inference_port", "admin").problem.startswith("entry #4")


def test_speed_and_vector_outliers():
    from mlvalidate.report.fleet_report import speed_outliers, vector_outliers

    class B:
        def __init__(self, name, rate, pub=None):
            self.name, self._rate, self._pub, self.threshold = name, rate, pub, 0.2

        def steady_per_min(self):
            return self._rate

        def published_per_min(self):
            return self._pub

    runs = [B("a", 1000, 1000), B("b", 1050, 1000), B("c", 300, 1000), B("d", 980)]
    flags = speed_outliers(runs)
    assert set(flags) == {"c"} and "30 % of its profile's published" in flags["c"] and "median" in flags["c"]
    d = np.array([[0, 0.01, 0.02, 0.9], [0.01, 0, 0.015, 0.9], [0.02, 0.015, 0, 0.9], [0.9, 0.9, 0.9, 0]])
    m = [[(float(x), 24, None) for x in row] for row in d]
    assert set(vector_outliers(runs, m)) == {"d"}
    assert vector_outliers(runs[:2], [row[:2] for row in m[:2]]) == {}  # two nodes: no one to blame


# ---- issue 22: a bundle folder per node, a node without its bundle never PASS, malformed entries --
def _entries_file(path: Path, entries: list) -> Path:
    path.write_text(json.dumps(entries))
    return path


def test_every_node_has_its_own_bundle_folder(engine, reference, tmp_path, capsys):
    """Ids a file name cannot tell apart ("a#2" and "a_2", "..", ".", "node", "a" twice) each get
    their own folder, and each bundle holds its own node's run."""
    a = Node(engine)
    try:
        port = int(a.url.rsplit(":", 1)[1])
        ids = ["a#2", "a_2", "..", ".", "node", "a", "a"]
        listed = _entries_file(tmp_path / "nodes.json", [{"id": i, "host": "127.0.0.1", "inference_port": port,
                                                         "models": {MODEL: {"args": []}}} for i in ids])
        out = tmp_path / "out"
        rc = main(fleet_args(reference, out, "--nodes", str(listed), "--skip-throughput", "--concurrency", "3"))
    finally:
        a.close()
    cap = capsys.readouterr()
    assert rc == 0 and "Traceback" not in cap.out + cap.err, cap.err[-2000:]
    nodes = json.loads((out / "fleet.json").read_text())["nodes"]
    assert len({n["id"] for n in nodes}) == len(ids) == len({n["bundle"] for n in nodes})
    assert [n["id"] for n in nodes][-2:] == ["a", "a#3"]  # "a#2" is taken by the node of that name
    for n in nodes:
        b = Path(n["bundle"])
        assert b.parent == out / "nodes" and n["verdict"] == "PASS"
        rep = json.loads((b / "report.json").read_text())
        config = json.loads((b / "config.json").read_text())
        assert rep["name"] == n["id"] == config["inputs"]["node_id"]["value"]


def test_a_node_whose_bundle_cannot_be_written_is_never_pass(engine, reference, tmp_path, capsys):
    a = Node(engine)
    out = tmp_path / "out"
    (out / "nodes").mkdir(parents=True)
    for name in ("x", "1-x"):  # a file where the node's bundle folder would go (the old name and the new)
        (out / "nodes" / name).write_text("in the way")
    try:
        port = int(a.url.rsplit(":", 1)[1])
        listed = _entries_file(tmp_path / "nodes.json", [{"id": "x", "host": "127.0.0.1", "inference_port": port,
                                                         "models": {MODEL: {"args": []}}}])
        rc = main(fleet_args(reference, out, "--nodes", str(listed), "--skip-throughput"))
    finally:
        a.close()
    cap = capsys.readouterr()
    n = nodes_of(out)["x"]
    assert rc == 2 and n["verdict"] == "ERROR" and n["exit_code"] == 2 and n["bundle"] is None
    assert "PASS reached, but the bundle could not be written" in n["error"]
    assert "Traceback" not in cap.out + cap.err


def test_malformed_admin_entries_are_one_error_row_each(engine, reference, tmp_path, monkeypatch, capsys):
    """A host with a port of its own, a host with a path, a broken [IPv6] host, a model id with a NUL
    byte: each its own ERROR row with a message; the good node is validated; no traceback."""
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "test-tiny-minimax.json").write_text(reference.read_text())  # MODEL's reference, found by its id
    monkeypatch.setenv("MLVALIDATE_ARTIFACTS", str(refs))
    a = Node(engine)
    port = int(a.url.rsplit(":", 1)[1])
    models = {MODEL: {"args": []}}
    admin = AdminStub([
        {"id": "good", "host": "127.0.0.1", "inference_port": port, "models": models},
        {"id": "hostport", "host": f"127.0.0.1:{port}", "inference_port": port, "models": models},
        {"id": "hostpath", "host": "localhost/x#", "inference_port": port, "models": models},
        {"id": "ipv6", "host": "http://[127.0.0.1:5]", "inference_port": port, "models": models},
        {"id": "nul", "host": "127.0.0.1", "inference_port": port, "models": {"test/tiny\x00minimax": {"args": []}}},
    ])
    try:
        out = tmp_path / "out"
        rc = main(["fleet", "--admin", admin.url, "--batch-size", str(BATCH), "--timeout", str(TIMEOUT),
                   "--skip-throughput", "--out", str(out)])
    finally:
        admin.close()
        a.close()
    cap = capsys.readouterr()
    assert rc == 2 and "Traceback" not in cap.out + cap.err and "internal error" not in cap.out + cap.err, cap.err
    nodes = nodes_of(out)
    assert nodes["good"]["verdict"] == "PASS"
    for bad in ("hostport", "hostpath", "ipv6", "nul"):
        assert nodes[bad]["verdict"] == "ERROR" and nodes[bad]["error"], (bad, nodes[bad])
    assert "the port comes from the entry's port field" in nodes["hostport"]["error"]
    assert "not printable" in nodes["nul"]["error"]
