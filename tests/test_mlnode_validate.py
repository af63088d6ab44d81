"""`mlvalidate validate --api mlnode` against an MLNode-shaped stub (tests/mlnode_stub.py) that
proxies to one or two real reference PoC servers, over loopback: what is about the harness
rather than the MLNode (per-replica throughput worked out, an already-running deployment,
cheating / dropping backends, a generation loop left running before the validation), and what
Gonka's real MLNode (tests/test_real_mlnode.py) cannot be made to do cheaply: a download that
fails after it ran, the proxy's timeout in 0.3 s instead of 60 (queued requests escape it), a
build older than v0.2.12 that drops poc_stronger_rng. The stub answers as the real one does."""

import copy
import json
import threading
import time
import urllib.request

import numpy as np
import pytest

import mlvalidate.mlnode as mlnode
import mlvalidate.server as srv
from mlvalidate.bake import bake_reference
from mlvalidate.cli import main
from mlvalidate.engines.base import PocParams
from mlvalidate.http_client import Response
from mlvalidate.engines.mlnode_api import proxy_timed_out
from mlvalidate.engines.poc_http import replica_stats
from mlvalidate.engines.reference import ReferenceEngine
from mlvalidate.server import make_server

from mlnode_stub import MlnodeStub

MODEL = "test/tiny-minimax"
SEQ = 64
N = 40
STAT = {"dist_threshold": 0.2, "p_mismatch": 0.1, "fraud_threshold": 0.05}
REF_ARGS = ["--max-model-len", "4096", "--trust-remote-code"]
SKIP_ALL_BUT_VALIDATE = ["--skip-download", "--skip-deploy", "--skip-throughput"]
THROUGHPUT = ["--warmup-seconds", "1", "--measure-seconds", "2", "--sample-interval", "1",
              "--throughput-batch-size", "8"]


@pytest.fixture(scope="module")
def engine(tiny_minimax_fp8):
    return ReferenceEngine(tiny_minimax_fp8, dtype="fp32", model_id=MODEL)


@pytest.fixture(scope="module")
def engine2(engine):
    """A second replica: its own model object (PoC hooks are installed per forward)."""
    return ReferenceEngine(model=copy.deepcopy(engine.model), dtype="fp32", model_id=MODEL)


@pytest.fixture(scope="module")
def cheat(tiny_minimax_fp8, tmp_path_factory):
    from mlvalidate.fixtures.quantize import write_quantized_copy

    path = write_quantized_copy(tiny_minimax_fp8, tmp_path_factory.mktemp("cheat") / "int4", bits=4, group_size=32)
    return ReferenceEngine(path, dtype="fp32", model_id=MODEL)


@pytest.fixture(scope="module")
def reference(engine, tmp_path_factory):
    path, _ = bake_reference(engine, model_id=MODEL, out=tmp_path_factory.mktemp("ref") / "ref.json", n_nonces=N,
                             batch_size=8, params=PocParams("TEST_BLOCK", "test_pub_keys_v2", SEQ),
                             stat_test=STAT, progress=False)
    doc = json.loads(path.read_text())
    doc["additional_args"] = REF_ARGS
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture(scope="module")
def stronger_reference(engine, tmp_path_factory):
    """Baked with poc_stronger_rng (spec §1.5): the field is written, and every request asks for it."""
    path, _ = bake_reference(engine, model_id=MODEL, out=tmp_path_factory.mktemp("ref") / "stronger.json", n_nonces=N,
                             batch_size=8, params=PocParams("TEST_BLOCK", "test_pub_keys_v2", SEQ, stronger_rng=True),
                             stat_test=STAT, progress=False)
    assert json.loads(path.read_text())["poc_stronger_rng"] is True
    return path


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(mlnode, "POLL_S", 0.05)
    monkeypatch.setattr(srv, "CALLBACK_INTERVAL_SEC", 0.0)  # spot-check callbacks at once


@pytest.fixture
def stack():
    """stack(*engines, **stub options) -> an MlnodeStub in front of one real PoC server per engine."""
    made = []

    def start(*engines, model_id=MODEL, **kw):
        backends = []
        for e in engines:
            b = make_server(e, model_id)
            threading.Thread(target=b.serve_forever, daemon=True).start()
            backends.append(b)
        stub = MlnodeStub([b.url for b in backends], **kw)
        made.append((stub, backends))
        return stub

    yield start
    for stub, backends in made:
        stub.close()
        for b in backends:
            b.shutdown()
            b.server_close()
            with b.service.engine_lock:  # a request the stub gave up on may still be computing on a shared
                pass  # engine: let it finish, or the next test's forward would run beside it on the same model


ROOMY_TIMEOUT = "120"  # every phase's bound: never reached by a stub that answers, however busy the machine


def _validate(stub, reference, tmp_path, *extra):
    return main(["validate", "--api", "mlnode", "--url", stub.url, "--reference", str(reference), "--batch-size", "8",
                 "--timeout", ROOMY_TIMEOUT, "--out", str(tmp_path / "bundle"), *extra])


def _report(tmp_path):
    return json.loads((tmp_path / "bundle" / "report.json").read_text())


def _phases(report):
    return {p["name"]: p for p in report["phases"]}


def _call(url, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method="POST" if data else "GET",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


class _Faulty:
    """Wraps an honest engine: drops some nonces, or is slow; the HTTP around it is real."""

    def __init__(self, inner, drop=(), delay_s=0.0):
        self.inner, self.drop, self.delay_s = inner, set(drop), delay_s
        self.name = "faulty"

    def describe(self):
        return self.inner.describe()

    def compute(self, nonces, params, batch_size=32, progress=None):
        time.sleep(self.delay_s)
        res = self.inner.compute(nonces, params, batch_size=batch_size)
        keep = np.array([n not in self.drop for n in res.nonces.tolist()], dtype=bool)
        res.nonces, res.vectors = res.nonces[keep], res.vectors[keep]
        return res


# ---- the full stack --------------------------------------------------------------------
def test_full_run_passes_with_all_four_phases_and_per_replica_throughput(engine, engine2, reference, stack,
                                                                         tmp_path, capsys):
    stub = stack(engine, engine2, model_status="NOT_FOUND", running=False)
    rc = _validate(stub, reference, tmp_path, *THROUGHPUT)
    out = capsys.readouterr().out
    assert rc == 0, out
    for i, name in enumerate(["plan", "download", "deploy", "throughput", "validate"], 1):
        assert f"[{i}/5] {name}" in out
    assert out.split("\n\n", 1)[1].startswith("VERDICT: PASS")  # the verdict first when it ends
    r = _report(tmp_path)
    assert r["verdict"] == "PASS" and r["n_total"] == N and r["n_missing"] == 0
    ph = _phases(r)
    assert [p["status"] for p in r["phases"]] == ["OK", "OK", "OK", "PASS"]
    assert ph["download"]["action"] == "downloaded" and ph["download"]["hf_repo"] == MODEL
    assert ph["deploy"]["action"] == "deployed" and ph["deploy"]["args_applied"] is True
    # the node got the reference's args, once; the weights were asked for by model id (no chain, no commit)
    deploys = stub.calls("POST", "/api/v1/inference/up/async")
    assert deploys == [{"model": MODEL, "dtype": "auto", "additional_args": REF_ARGS}]
    assert stub.calls("POST", "/api/v1/models/download") == [{"hf_repo": MODEL, "hf_commit": None}]
    # throughput: one group per replica, each replica measured on its own, the sum is their sum
    assert [(b["group_id"], b["n_groups"]) for b in stub.fanout[0]] == [(0, 2), (1, 2)]
    assert "group_id" not in stub.calls("POST", "/api/v1/inference/pow/init/generate")[0]
    t = r["throughput_phase"]
    s = t["summary"]
    assert s["n_replicas"] == 2 and set(s["replicas"]) == {u.rsplit(":", 1)[1] for u in stub.backends}
    steady = [v["steady_nonces_per_second"] for v in s["replicas"].values()]
    assert all(x > 0 for x in steady)
    assert s["steady_nonces_per_second"] == pytest.approx(sum(steady))
    assert all(v["node_cumulative_nonces_per_second"] > 0 for v in s["replicas"].values())
    assert t["stopped"] and t["spot_verdict"] == "PASS" and s["spot_check_received"] > 0
    assert _call(stub.url, "/api/v1/inference/pow/status")["status"] == "IDLE"  # stopped at the end
    txt = (tmp_path / "bundle" / "report.txt").read_text()
    assert "steady (sum of 2 replicas)" in txt and txt.count("  replica ") == 2
    # validation: one batch per request, queued (wait=false), no group fields, spread over both replicas and
    # polled by the MLNode's "{port}:{uuid}" ids
    gens = stub.calls("POST", "/api/v1/inference/pow/generate")
    assert len(gens) == N // 8
    assert all(len(g["nonces"]) == 8 and g["wait"] is False and "group_id" not in g for g in gens)
    polled = {path.rsplit("/", 1)[1].split(":")[0] for m, path, _ in stub.requests
              if m == "GET" and path.startswith("/api/v1/inference/pow/generate/")}
    assert len(polled) == 2 and all(p.isdigit() for p in polled)
    assert "requests of 8 nonces (one batch each), up to 4 queued at a time" in out


def test_already_running_deployment_is_reported_and_its_args_not_applied(engine, reference, stack, tmp_path, capsys):
    stub = stack(engine, running=True)
    rc = _validate(stub, reference, tmp_path, "--skip-download", "--skip-throughput")
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "already running on the node: deploy args NOT applied" in out
    ph = _phases(_report(tmp_path))
    assert ph["deploy"]["action"] == "already_running" and ph["deploy"]["args_applied"] is False
    assert "NOT applied" in ph["deploy"]["detail"]
    assert ph["download"]["status"] == "skipped" and ph["throughput"]["status"] == "skipped"
    assert stub.calls("POST", "/api/v1/inference/up/async") == []


def test_a_cheating_backend_fails(engine, cheat, reference, stack, tmp_path, capsys):
    stub = stack(engine, cheat)  # one honest replica, one 4-bit one: half the requests go to each
    assert _validate(stub, reference, tmp_path, *SKIP_ALL_BUT_VALIDATE) == 1
    assert "VERDICT: FAIL" in capsys.readouterr().out
    r = _report(tmp_path)
    assert r["verdict"] == "FAIL" and r["fraud_detected"] is True


def test_a_backend_that_drops_nonces_is_never_pass(engine, reference, stack, tmp_path, capsys):
    stub = stack(_Faulty(engine, drop={3, 17}))
    assert _validate(stub, reference, tmp_path, *SKIP_ALL_BUT_VALIDATE) == 2
    out = capsys.readouterr().out
    assert "VERDICT: INCOMPLETE" in out and "PASS" not in out.split("VERDICT:")[1].splitlines()[0]
    assert _report(tmp_path)["missing_nonces"] == [3, 17]


def test_a_download_that_falls_back_to_not_found_is_an_error(engine, reference, stack, tmp_path, capsys):
    stub = stack(engine, model_status="NOT_FOUND", download_result="NOT_FOUND", running=False)
    assert _validate(stub, reference, tmp_path, *THROUGHPUT) == 2
    cap = capsys.readouterr()
    errors = [line for line in cap.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "download: the download of test/tiny-minimax (no commit pinned) failed: status back " \
                                "to NOT_FOUND" in errors[0] and "repository not accessible" in errors[0]
    assert "VERDICT: ERROR (download:" in cap.out
    r = _report(tmp_path)
    assert r["verdict"] == "ERROR" and r["exit_code"] == 2
    assert [p["status"] for p in r["phases"]] == ["error", "not run", "not run", "not run"]
    assert stub.calls("POST", "/api/v1/inference/up/async") == []  # nothing after the failed phase
    assert stub.calls("POST", "/api/v1/inference/pow/init/generate") == []


def test_a_download_that_fails_between_two_polls_ends_at_once(engine, reference, stack, tmp_path, capsys,
                                                               monkeypatch):
    """The real MLNode sets error_message when its download task ends in failure (status PARTIAL or
    NOT_FOUND): that ends the phase even if DOWNLOADING was never seen between two polls."""
    monkeypatch.setattr(mlnode, "NOT_FOUND_GRACE_S", 3600.0)  # only the error message can end it in time
    stub = stack(engine, model_status="NOT_FOUND", download_polls=1, download_result="PARTIAL", running=False)
    assert _validate(stub, reference, tmp_path, "--skip-deploy", "--skip-throughput", "--skip-validate",
                     "--download-timeout", "30") == 2
    err = capsys.readouterr().err
    assert "status back to PARTIAL" in err and "repository not accessible" in err
    assert len(stub.calls("POST", "/api/v1/models/status")) == 2  # the first answer after the download: PARTIAL


def test_a_failed_deployment_is_an_error_with_the_nodes_message(engine, reference, stack, tmp_path, capsys):
    stub = stack(engine, running=False, deploy_result="failed")
    assert _validate(stub, reference, tmp_path, "--skip-download", "--skip-throughput") == 2
    err = capsys.readouterr().err
    assert "error: deploy: the deployment failed after" in err and "vLLM process exited prematurely: None" in err


@pytest.mark.parametrize("after", ["hang", "exit", "not_started"])
def test_a_deployment_that_vanishes_is_a_failure_and_a_restart_at_once(engine, reference, stack, tmp_path, capsys,
                                                                       monkeypatch, after):
    """After a failed deployment the real MLNode shows `failed` for ~5 s, answers nothing for 35 s
    (its watcher's stop blocks its event loop), exits, and under a restarting supervisor comes back
    `not_started`. A poll that misses `failed` meets one of the others (tests/test_real_mlnode.py
    meets the silence): each ends the phase at that poll, not at --deploy-timeout."""
    if after == "hang":  # the stub's silence lasts 5 s (gone: a pooled connection's reset is retried within SILENT_S);
        # 2 s: the answered polls before it take milliseconds, even on a busy machine
        monkeypatch.setattr(mlnode, "SILENT_S", 2.0)
    stub = stack(engine, running=False, deploy_polls=2, deploy_result=after)
    assert _validate(stub, reference, tmp_path, "--skip-download", "--skip-throughput", "--deploy-timeout", "20",
                     "--connect-grace", "20") == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert len(err) == 1 and "deploy: the deployment failed" in err[0]
    assert {"hang": "the MLNode stopped answering its deploy status", "exit": "restarted: it stopped answering "
            "(connection refused)", "not_started": "restarted: it came back not_started"}[after] in err[0]
    # the first look, in_progress, the last answer (not_started, or in_progress before it closed); then no more
    assert len(stub.calls("GET", "/api/v1/inference/up/status")) == 3 + (after == "hang")
    assert _report(tmp_path)["phases"][1]["status"] == "error"


def test_the_proxy_timeout_is_answered_at_once_not_retried(engine, reference, stack, tmp_path, capsys):
    """The real one's 60 s (tests/test_real_mlnode.py) in 0.3 s: one request, no retry."""
    stub = stack(_Faulty(engine, delay_s=1.5), proxy_timeout_s=0.3)  # the stub's proxy gives up first
    assert _validate(stub, reference, tmp_path, *SKIP_ALL_BUT_VALIDATE, "--in-flight", "0") == 2  # wait=true
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("node error"))
    assert "the MLNode's 60 s proxy timeout" in line and 'HTTP 502 {"detail": ""}' in line
    assert "lower --batch-size or use the queued mode" in line
    assert len(stub.calls("POST", "/api/v1/inference/pow/generate")) == 1
    assert _report(tmp_path)["verdict"] == "INCOMPLETE"


def test_queued_requests_are_not_cut_by_the_proxys_timeout(engine, reference, stack, tmp_path, capsys):
    """Queued, the MLNode's call to its backend returns at once: a batch slower than the proxy's
    timeout still comes back (the same node fails with wait=true, above)."""
    stub = stack(_Faulty(engine, delay_s=1.5), proxy_timeout_s=0.3)
    rc = main(["validate", "--api", "mlnode", "--url", stub.url, "--reference", str(reference), "--batch-size", "8",
               "--timeout", "60", "--out", str(tmp_path / "bundle"), *SKIP_ALL_BUT_VALIDATE])
    out = capsys.readouterr().out
    assert rc == 0 and _report(tmp_path)["verdict"] == "PASS", out
    assert "proxy timeout" not in out.split("requests of 8 nonces", 1)[1]


def test_a_generation_loop_left_running_is_stopped_before_validating(engine, engine2, reference, stack, tmp_path,
                                                                     capsys):
    stub = stack(engine, engine2)
    body = {"block_hash": "X", "block_height": 1, "public_key": "pk", "node_id": 0, "node_count": 1,
            "batch_size": 8, "params": {"model": MODEL, "seq_len": SEQ, "k_dim": 12}}
    assert _call(stub.url, "/api/v1/inference/pow/init/generate", body)["backends"] == 2
    assert _call(stub.url, "/api/v1/inference/pow/status")["status"] == "GENERATING"
    rc = _validate(stub, reference, tmp_path, *SKIP_ALL_BUT_VALIDATE)
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "a PoC generation loop is running on the node (status GENERATING): stopping it first" in out
    assert _report(tmp_path)["verdict"] == "PASS"
    stop_at = stub.requests.index(("POST", "/api/v1/inference/pow/stop", None))
    first_gen = next(i for i, (m, p, _) in enumerate(stub.requests) if p == "/api/v1/inference/pow/generate")
    assert stop_at < first_gen


def test_skip_validate_reports_validation_skipped_never_pass(engine, reference, stack, tmp_path, capsys):
    stub = stack(engine)
    rc = _validate(stub, reference, tmp_path, *SKIP_ALL_BUT_VALIDATE, "--skip-validate")
    out = capsys.readouterr().out
    assert rc == 0 and "validation skipped" in out and "PASS" not in out
    r = _report(tmp_path)
    assert r["verdict"] == "SKIPPED" and r["n_total"] is None and "PASS" not in json.dumps(r)
    assert "PASS" not in (tmp_path / "bundle" / "report.txt").read_text()
    assert stub.calls("POST", "/api/v1/inference/pow/generate") == []


def test_a_model_mismatch_behind_the_proxy_is_explained_in_one_line(engine, reference, stack, tmp_path, capsys):
    stub = stack(engine, model_id="other/model")  # the MLNode proxies /v1/models to a replica
    assert _validate(stub, reference, tmp_path, *SKIP_ALL_BUT_VALIDATE) == 2
    err = capsys.readouterr().err
    assert f"the node serves 'other/model', the reference is for '{MODEL}' (GET /v1/models)" in err
    assert stub.calls("POST", "/api/v1/inference/pow/generate") == []  # said before the first PoC request


# ---- small pieces ----------------------------------------------------------------------------
def test_proxy_timeout_is_told_from_a_backend_that_is_down():
    assert proxy_timed_out(Response(502, {"detail": ""}), 0.5)  # the MLNode's own shape (empty ReadTimeout text)
    assert proxy_timed_out(Response(502, {"detail": "Bad Gateway"}), 60.2)  # the proxy's clock ran out
    assert proxy_timed_out(Response(502, {"detail": "ReadTimeout"}), 0.1)
    assert not proxy_timed_out(Response(502, {"detail": "All connection attempts failed"}), 0.1)  # backend down
    assert not proxy_timed_out(Response(502, "vLLM connection failed"), 0.1)
    assert not proxy_timed_out(Response(503, {"detail": "timed out"}), 70)


def test_replica_stats_reads_both_status_shapes():
    vllm = {"status": "GENERATING", "config": {}, "stats": {"total_processed": 64, "nonces_per_second": 3.5}}
    assert replica_stats(vllm) == {"node": {"status": "GENERATING", "total_processed": 64, "nonces_per_second": 3.5}}
    assert replica_stats({"status": "IDLE", "config": None, "stats": None}) == {}
    mln = {"status": "MIXED", "backends": [{"port": 5001, "status": "GENERATING", "stats": {"total_processed": 8,
                                                                                            "nonces_per_second": 1.0}},
                                           {"port": 5002, "status": "ERROR", "error": "refused"}]}
    assert list(replica_stats(mln)) == ["5001"]


def test_mlnode_only_flags_are_refused_with_the_vllm_api(reference, tmp_path, capsys):
    rc = main(["validate", "--url", "http://127.0.0.1:9", "--reference", str(reference), "--skip-validate"])
    assert rc == 2 and "only with --api mlnode" in capsys.readouterr().err


def test_chain_node_adds_the_readiness_section_to_an_mlnode_run(engine, reference, stack, tmp_path, capsys):
    from test_chain import _Chain  # the recorded chain responses, served over loopback

    chain = _Chain()
    try:
        stub = stack(engine, running=True)
        rc = _validate(stub, reference, tmp_path, "--skip-download", "--skip-throughput", "--chain-node", chain.url)
    finally:
        chain.close()
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "snapshot at block 1004891, ≈ 8.2 h from now" in out
    assert "snapshot at block 1004891" in (tmp_path / "bundle" / "report.txt").read_text()


# ---- poc_stronger_rng through an MLNode ----------------------------------------------------
def test_an_mlnode_that_drops_poc_stronger_rng_fails_and_the_report_names_it(engine, stronger_reference, stack,
                                                                             tmp_path, capsys):
    """MLNode builds older than v0.2.12 drop the flag without a word: their replicas compute the
    default RNG's inputs, and the run FAILs. The report says what the result depends on, and names
    the dropped flag as a possible cause of the FAIL."""
    stub = stack(engine, drops_stronger_rng=True)
    assert _validate(stub, stronger_reference, tmp_path, *SKIP_ALL_BUT_VALIDATE) == 1
    gens = stub.calls("POST", "/api/v1/inference/pow/generate")
    assert gens and all(g["poc_stronger_rng"] is True for g in gens)  # the harness asked for it every time
    r = _report(tmp_path)
    assert r["verdict"] == "FAIL" and len(r["caveats"]) == 2
    assert "depends on the MLNode carrying the flag" in r["caveats"][0]
    assert "possible cause of this FAIL: an MLNode that dropped poc_stronger_rng" in r["caveats"][1]
    txt = (tmp_path / "bundle" / "report.txt").read_text()
    assert txt.count("caveat ") == 2 and "possible cause of this FAIL" in txt


def test_an_mlnode_that_carries_poc_stronger_rng_passes_with_the_caveat(engine, stronger_reference, reference, stack,
                                                                        tmp_path, capsys):
    stub = stack(engine)
    assert _validate(stub, stronger_reference, tmp_path, *SKIP_ALL_BUT_VALIDATE) == 0
    r = _report(tmp_path)
    assert r["verdict"] == "PASS" and len(r["caveats"]) == 1 and "poc_stronger_rng" in r["caveats"][0]
    assert _validate(stub, reference, tmp_path, *SKIP_ALL_BUT_VALIDATE) == 0  # a default-RNG reference: nothing to say
    assert _report(tmp_path)["caveats"] == []
