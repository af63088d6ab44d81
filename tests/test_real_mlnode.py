"""`validate --api mlnode` against Gonka's real MLNode API (../shared/counterparts/gonka-mlnode,
unmodified; tests/real_mlnode.py starts it) in front of `mlvalidate serve` replicas on the tiny
MiniMax-M2, with a loopback hub for its download phase: download -> deploy -> throughput ->
validate, queued and wait=true, one and two replicas; and each MLNode state named at once (no
deployment, a deployment that fails, a replica whose status errors: MIXED, the 60 s proxy
timeout). The stub (tests/mlnode_stub.py) is checked against the same answers side by side.

Times are bounded by the harness's own deadlines with generous room (--timeout, --deploy-timeout
far above what a run takes) and, where the point is "at once", by what the node was asked
(one request, no retry), never by a stopwatch. Each test starts its own MLNode (~8 s to answer,
~12 s to deploy one replica here); without ../shared or the MLNode's venv they skip.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

import mlnode_setup

SKIP = mlnode_setup.missing()
if SKIP:
    pytest.skip(f"real MLNode: {SKIP}", allow_module_level=True)  # one line for the module
pytestmark = pytest.mark.slow

import mlvalidate.mlnode as mlnode  # noqa: E402
from mlvalidate.bake import bake_reference  # noqa: E402
from mlvalidate.cli import main  # noqa: E402
from mlvalidate.engines.base import PocParams  # noqa: E402
from mlvalidate.engines.reference import ReferenceEngine  # noqa: E402
from mlvalidate.server import make_server  # noqa: E402

from fake_hub import FakeHub  # noqa: E402
from mlnode_stub import MlnodeStub  # noqa: E402

MODEL = "test/tiny-minimax"
COMMIT = "1f2e3d4c5b6a79880716253443526170819aabbc"
SEQ, N = 64, 40
STAT = {"dist_threshold": 0.2, "p_mismatch": 0.1, "fraud_threshold": 0.05}
THROUGHPUT = ["--warmup-seconds", "1", "--measure-seconds", "3", "--sample-interval", "1",
              "--throughput-batch-size", "8"]
ONLY_VALIDATE = ["--skip-download", "--skip-deploy", "--skip-throughput"]
DEADLINE_S = 600  # --timeout / --deploy-timeout: what a run would wait out if it did not see the state


@pytest.fixture(scope="module")
def engine(tiny_minimax_fp8):
    return ReferenceEngine(tiny_minimax_fp8, dtype="fp32", model_id=MODEL)


def _bake(engine, out: Path, stronger: bool) -> Path:
    path, _ = bake_reference(engine, model_id=MODEL, out=out, n_nonces=N, batch_size=8, stat_test=STAT, progress=False,
                             params=PocParams("TEST_BLOCK", "test_pub_keys_v2", SEQ, stronger_rng=stronger))
    doc = json.loads(path.read_text())
    doc["additional_args"] = ["--max-model-len", "4096", "--trust-remote-code"]  # vLLM's own: the replica ignores them
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture(scope="module")
def reference(engine, tmp_path_factory):
    return _bake(engine, tmp_path_factory.mktemp("ref") / "ref.json", stronger=False)


@pytest.fixture(scope="module")
def stronger_reference(engine, tmp_path_factory):
    return _bake(engine, tmp_path_factory.mktemp("ref") / "stronger.json", stronger=True)


@pytest.fixture(scope="module")
def hub(tiny_minimax_fp8):
    """The tiny checkpoint as the hub serves it: no commit is pinned for it, so the MLNode asks for main."""
    with FakeHub.from_dir(tiny_minimax_fp8, MODEL, COMMIT, branches={"main"}) as h:
        yield h


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch):
    monkeypatch.setattr(mlnode, "POLL_S", 1.0)  # the phases' polls (5 s in a real run: spec "every <= 5 s")


@pytest.fixture
def attempts(monkeypatch):
    """Every HTTP attempt the harness makes, as (method, path): retries are seen here."""
    from mlvalidate import http_client as http

    seen, exchange = [], http.HttpClient._exchange

    def counted(self, method, url, *a, **kw):
        seen.append((method, httpx.URL(url).path))
        return exchange(self, method, url, *a, **kw)

    monkeypatch.setattr(http.HttpClient, "_exchange", counted)
    return seen


@pytest.fixture
def mlnodes(hub, tmp_path):
    from real_mlnode import RealMlnode

    made = []

    def start(replicas: int = 1, **kw):
        node = RealMlnode(tmp_path / f"mlnode{len(made)}", hub.endpoint, replicas=replicas, **kw)
        made.append(node)
        return node

    yield start
    for node in made:
        node.close()


def _validate(node, reference, tmp_path, *extra, out="bundle"):
    return main(["validate", "--api", "mlnode", "--url", node.url, "--reference", str(reference), "--batch-size", "8",
                 "--dtype", "float32", "--timeout", str(DEADLINE_S), "--deploy-timeout", str(DEADLINE_S),
                 "--out", str(tmp_path / out), *extra])


def _report(tmp_path, out="bundle"):
    return json.loads((tmp_path / out / "report.json").read_text())


def _errors(err: str) -> list[str]:
    return [x for x in err.splitlines() if x.startswith("error:")]


def _deploy(node, replicas: int) -> None:
    """Download and deploy through the MLNode's own API, then wait until its PoC status lists every
    replica (it says running when the first one is up)."""
    c = httpx.Client(base_url=node.url, timeout=60, trust_env=False)
    with c:
        assert c.post("/api/v1/models/download", json={"hf_repo": MODEL, "hf_commit": None}).status_code == 202
        end = time.monotonic() + DEADLINE_S
        while c.post("/api/v1/models/status", json={"hf_repo": MODEL, "hf_commit": None}).json()["status"] != "DOWNLOADED":
            assert time.monotonic() < end, node.log()[-3000:]
            time.sleep(0.3)
        r = c.post("/api/v1/inference/up/async", json={"model": MODEL, "dtype": "float32", "additional_args": []})
        assert r.status_code == 200, r.text
        _wait_for_replicas(node, replicas, c)


def _wait_for_replicas(node, replicas: int, c=None) -> None:
    c = c or httpx.Client(base_url=node.url, timeout=60, trust_env=False)
    end = time.monotonic() + DEADLINE_S
    while len(c.get("/api/v1/inference/pow/status").json().get("backends", [])) < replicas:
        assert time.monotonic() < end, node.log()[-3000:]
        time.sleep(0.3)


# ---- side by side with the stub ----------------------------------------------------------------------
def _answers(url: str, ports: list[int]) -> dict:
    """The answers to the requests whose shapes the harness reads, with the replicas' ports and ids taken out."""
    body = {"block_hash": "X", "block_height": 1, "public_key": "pk", "node_id": 0, "node_count": 1, "batch_size": 8,
            "params": {"model": MODEL, "seq_len": SEQ, "k_dim": 12}}
    free = max(ports or [1024]) + 100  # nothing listens there

    def norm(x):
        if isinstance(x, dict):
            return {k: ("<port>" if k == "port" else "<float>" if isinstance(v, float) else norm(v))
                    for k, v in sorted(x.items())}
        if isinstance(x, list):
            return sorted((norm(v) for v in x), key=json.dumps)  # the MLNode lists backends as they answer
        return x

    out = {}
    with httpx.Client(base_url=url, timeout=60, trust_env=False) as c:
        for name, method, path, payload in [
            ("up/status", "GET", "/api/v1/inference/up/status", None),
            ("status", "GET", "/api/v1/inference/pow/status", None),
            ("stop", "POST", "/api/v1/inference/pow/stop", {}),
            ("v1/models 503", "GET", "/v1/models", None),
            ("versions", "GET", "/api/v1/inference/pow/versions", None),
            ("gpu devices", "GET", "/api/v1/gpu/devices", None),
            ("gpu driver", "GET", "/api/v1/gpu/driver", None),
            ("poll: no port", "GET", "/api/v1/inference/pow/generate/abc", None),
            ("poll: bad port", "GET", "/api/v1/inference/pow/generate/x:abc", None),
            ("poll: nothing there", "GET", f"/api/v1/inference/pow/generate/{free}:abc", None),
            ("poll: unknown id", "GET", f"/api/v1/inference/pow/generate/{(ports or [free])[0]}:abc", None),
            ("generate: no replica", "POST", "/api/v1/inference/pow/generate", {**body, "nonces": [1]}),
            ("init: no replica", "POST", "/api/v1/inference/pow/init/generate", body),
        ]:
            if ports and name.endswith(("no replica", "503")):
                continue
            r = c.request(method, path, json=payload)
            try:
                answer = norm(r.json())
            except ValueError:
                answer = r.text
            if name == "up/status":
                answer = {k: type(v).__name__ for k, v in answer.items()}  # its elapsed time moves
            out[name] = (r.status_code, answer)
    return out


def _stub_beside(node, engine, **kw) -> tuple[MlnodeStub, list]:
    """A stub in front of as many reference servers as the real MLNode has replicas."""
    backends = [make_server(engine, MODEL) for _ in node.backend_ports] if kw.pop("with_backends", True) else []
    for b in backends:
        threading.Thread(target=b.serve_forever, daemon=True).start()
    return MlnodeStub([b.url for b in backends], **kw), backends


def _close(stub, backends) -> None:
    stub.close()
    for b in backends:
        b.shutdown()
        b.server_close()


# ---- the four phases ----------------------------------------------------------------------------------
def test_download_deploy_throughput_validate_one_replica_queued_then_wait_true(mlnodes, engine, reference,
                                                                               stronger_reference, hub, tmp_path,
                                                                               capsys):
    node = mlnodes(replicas=1)
    before = len(hub.gets())
    rc = _validate(node, reference, tmp_path, *THROUGHPUT)
    out = capsys.readouterr().out
    assert rc == 0, out + node.log()[-3000:]
    r = _report(tmp_path)
    assert r["verdict"] == "PASS" and r["n_total"] == N and r["n_mismatch"] == 0 and r["n_missing"] == 0
    assert [p["status"] for p in r["phases"]] == ["OK", "OK", "OK", "PASS"]
    phases = {p["name"]: p for p in r["phases"]}
    assert phases["download"]["action"] == "downloaded" and phases["download"]["last_status"]["status"] == "DOWNLOADED"
    fetched = sorted(path.rsplit("/", 1)[1] for _, path, _ in hub.gets()[before:])
    assert fetched == sorted(hub.files)  # the MLNode fetched every file of the checkpoint, once, from the hub
    assert phases["deploy"]["action"] == "deployed" and phases["deploy"]["up_status"]["status"] == "completed"
    assert phases["deploy"]["replicas"] == node.backend_ports
    s = r["throughput_phase"]["summary"]
    assert s["n_replicas"] == 1 and s["steady_nonces_per_second"] > 0
    assert r["throughput_phase"]["stopped"] and r["throughput_phase"]["spot_verdict"] == "PASS"
    # after the throughput phase's stop ({} POSTed to the replica over the MLNode's pooled keep-alive client),
    # the validation's requests on the same connections were answered: every chunk came back, queued
    assert node.backend_requests("POST", "/api/v1/pow/stop") >= 1
    assert node.backend_requests("POST", "/api/v1/pow/generate") == N // 8
    assert "up to 4 queued at a time" in out and '" 501 ' not in node.log()
    # its GPU routes answered, without NVML here ({"devices": [], "count": 0} and 503): they say nothing, so
    # the node (on loopback) is this host, a CPU, and the record says what the MLNode said
    hw = json.loads((tmp_path / "bundle" / "environment.json").read_text())["node"]["hardware"]
    assert hw["label"] == "CPU" and hw["source"].startswith("this host: NVML")
    assert any("lists no GPU and its NVML is not running" in n and "NVML not initialized" in n for n in hw["notes"])

    # wait=true on the same deployment, with a reference made with poc_stronger_rng: this MLNode carries it
    rc = _validate(node, stronger_reference, tmp_path, *ONLY_VALIDATE, "--in-flight", "0", out="wait")
    out = capsys.readouterr().out
    assert rc == 0, out
    w = _report(tmp_path, "wait")
    assert w["verdict"] == "PASS" and w["n_mismatch"] == 0
    assert len(w["caveats"]) == 1 and "depends on the MLNode carrying the flag" in w["caveats"][0]

    # the stub answers as the real one does, a deployed one-replica node
    stub, backends = _stub_beside(node, engine)
    try:
        assert _answers(stub.url, [b.server_address[1] for b in backends]) == _answers(node.url, node.backend_ports)
    finally:
        _close(stub, backends)


def test_the_nodes_gpus_from_the_real_mlnodes_gpu_routes(mlnodes, reference, tmp_path, capsys):
    """The real MLNode's GPU routes (api/gpu/) over an NVML that says 4 H100s (tests/fake_nvml.py in its
    process: MLNODE_FAKE_GPUS): `validate` records them as the node's, each fact with its route, while this
    host (no NVIDIA driver) stays the harness's alone."""
    node = mlnodes(replicas=1, env={"MLNODE_FAKE_GPUS": "NVIDIA H100 80GB HBM3|4|81559"})
    rc = _validate(node, reference, tmp_path, "--skip-throughput")
    out = capsys.readouterr().out
    assert rc == 0, out + node.log()[-3000:]
    env = json.loads((tmp_path / "bundle" / "environment.json").read_text())
    hw = env["node"]["hardware"]
    assert hw["label"] == "4× NVIDIA H100 80GB HBM3" and hw["source"] == "node: MLNode GET /api/v1/gpu/devices"
    assert [g["memory_total_mib"] for g in hw["gpus"]] == [81559] * 4
    assert hw["driver_version"] == "570.124.06" and hw["cuda_driver_version"] == "12.8"
    assert hw["sources"]["driver_version"] == "node: MLNode GET /api/v1/gpu/driver"
    assert hw["notes"] == ["this host: NVML (no NVIDIA driver on this machine) says CPU"]  # on loopback this host
    # measured as well: what it saw is kept beside
    assert env["harness"]["nvml"]["available"] is False and env["harness"]["gpu_count"] == 0


def test_two_replicas_throughput_per_replica_and_validation_over_both(mlnodes, reference, tmp_path, capsys,
                                                                      attempts):
    node = mlnodes(replicas=2)
    rc = _validate(node, reference, tmp_path, "--skip-throughput", "--skip-validate", out="deploy")
    out = capsys.readouterr().out
    assert rc == 0, out + node.log()[-3000:]
    deploy = {p["name"]: p for p in _report(tmp_path, "deploy")["phases"]}["deploy"]
    assert deploy["action"] == "deployed" and set(deploy["replicas"]) <= set(node.backend_ports)
    # the MLNode says running when its first replica answers; its second starts 5 s later (runner.py)
    assert "the MLNode says running when its first replica is up" in out
    _wait_for_replicas(node, 2)

    rc = _validate(node, reference, tmp_path, "--skip-download", "--skip-deploy", *THROUGHPUT)
    out = capsys.readouterr().out
    assert rc == 0, out + node.log()[-3000:]
    r = _report(tmp_path)
    assert r["verdict"] == "PASS" and r["n_mismatch"] == 0
    s = r["throughput_phase"]["summary"]
    assert s["n_replicas"] == 2 and set(s["replicas"]) == {str(p) for p in node.backend_ports}
    assert all(v["steady_nonces_per_second"] > 0 for v in s["replicas"].values())
    start = r["throughput_phase"]["start_answer"]
    assert start["backends"] == 2 and start["n_groups"] == 2 and start["errors"] is None
    assert node.backend_requests("POST", "/api/v1/pow/generate") == N // 8
    polled = {path.rsplit("/", 1)[1].split(":")[0] for m, path in attempts
              if m == "GET" and path.startswith("/api/v1/inference/pow/generate/")}
    assert polled == {str(p) for p in node.backend_ports}  # queued round-robin, polled back by "{port}:{uuid}"

    rc = _validate(node, reference, tmp_path, *ONLY_VALIDATE, "--in-flight", "0", out="wait")
    assert rc == 0 and _report(tmp_path, "wait")["verdict"] == "PASS", capsys.readouterr().out


# ---- each MLNode state, named at once -------------------------------------------------------------------
def test_no_deployment_is_said_at_once(mlnodes, engine, reference, tmp_path, capsys, attempts):
    node = mlnodes(replicas=1)
    t0 = time.monotonic()
    assert _validate(node, reference, tmp_path, *ONLY_VALIDATE) == 2
    elapsed = time.monotonic() - t0
    cap = capsys.readouterr()
    errors = _errors(cap.err)
    assert len(errors) == 1 and "no vLLM runs behind the MLNode" in errors[0]
    assert "HTTP 503 'No vLLM backend available'" in errors[0] and "deployment is not_started" in errors[0]
    assert "run without --skip-deploy" in errors[0]
    # asked once, not retried until --timeout (the MLNode logs each /v1 request it has no replica for)
    assert node.log().count("No vLLM backend available. Ports: [], Healthy: {}") == 1
    assert attempts.count(("GET", "/v1/models")) == 1
    assert elapsed < DEADLINE_S / 4
    r = _report(tmp_path)
    assert r["verdict"] == "ERROR" and r["exit_code"] == 2

    # the stub answers as the real one does, with nothing deployed
    stub, backends = _stub_beside(node, engine, with_backends=False, running=False)
    try:
        real = _answers(node.url, [])
        assert real["versions"] == (404, {"detail": "Not Found"})  # no build says what it carries (poc_stronger_rng)
        assert real["v1/models 503"] == (503, "No vLLM backend available")
        assert _answers(stub.url, []) == real
    finally:
        _close(stub, backends)


def test_a_failed_deployment_is_said_at_once_under_a_restarting_supervisor(mlnodes, reference, tmp_path, capsys,
                                                                           monkeypatch, attempts):
    """The model is not on the node (--skip-download): the replica exits at once and the MLNode
    reports `failed` ("vLLM process exited prematurely: None"); its watcher then finds it unhealthy
    3 times, 2 s apart, and stops it, which blocks the MLNode's event loop for 35 s (it accepts
    connections and answers nothing), then exits (1). The supervisor starts it again: `not_started`.
    Measured here: `failed` from ~3 s to ~8 s after the deploy request, silent until ~43 s. At the
    real run's 5 s pace the poll meets `failed` (tests/test_mlnode_validate.py has that answer);
    polled every 15 s it meets the silence (on a machine slow enough, still `failed`). Either ends
    the deploy phase at that poll with its cause, long before --deploy-timeout."""
    monkeypatch.setattr(mlnode, "POLL_S", 15.0)
    node = mlnodes(replicas=1, restart=True)
    t0 = time.monotonic()
    assert _validate(node, reference, tmp_path, "--skip-download", "--skip-throughput") == 2
    elapsed = time.monotonic() - t0
    errors = _errors(capsys.readouterr().err)
    assert len(errors) == 1, errors
    assert ("the MLNode stopped answering its deploy status" in errors[0]
            or "the deployment failed after" in errors[0] and "vLLM process exited prematurely: None" in errors[0]), \
        errors[0]
    # the deploy request, then one status poll per 15 s: none was retried or waited out
    polls = attempts.count(("GET", "/api/v1/inference/up/status"))
    assert attempts.count(("POST", "/api/v1/inference/up/async")) == 1 and polls <= 1 + elapsed // 15 + 1
    assert elapsed < DEADLINE_S / 4
    r = _report(tmp_path)
    assert [p["status"] for p in r["phases"]] == ["skipped", "error", "not run", "not run"]
    end = time.monotonic() + DEADLINE_S
    while not node.exits and time.monotonic() < end:  # the MLNode's own exit, as its watcher does it
        time.sleep(0.2)
    assert node.exits == [1], node.log()[-3000:]
    assert "has been unhealthy 3 times in a row. Shutting down the application." in node.log()
    node.wait_ready()
    assert httpx.get(node.url + "/api/v1/inference/up/status", trust_env=False).json()["status"] == "not_started"


def test_a_replica_whose_status_errors_is_named_not_taken_for_running(mlnodes, engine, reference, tmp_path, capsys):
    """Two replicas, the second one's PoC status broken (it answers /health): the MLNode says MIXED,
    its entry for that replica {"port", "status": "ERROR", "detail": the replica's answer}."""
    from mlnode_backend import BROKEN_STATUS

    node = mlnodes(replicas=2, env={"MLNODE_TEST_BROKEN_STATUS": "1"})
    _deploy(node, 2)
    assert httpx.get(node.url + "/api/v1/inference/pow/status", trust_env=False).json()["status"] == "MIXED"
    assert _validate(node, reference, tmp_path, *ONLY_VALIDATE) == 2
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("node error")]
    assert len(lines) == 1, lines
    assert f"the MLNode's status is MIXED: its vLLM replica on port {node.backend_ports[1]}: ERROR ({BROKEN_STATUS})" \
        in lines[0]
    assert node.backend_requests("POST", "/api/v1/pow/stop") == 0  # not taken for a running loop to stop
    assert node.backend_requests("POST", "/api/v1/pow/generate") == 0
    r = _report(tmp_path)
    assert r["verdict"] == "INCOMPLETE" and r["exit_code"] == 2 and r["n_missing"] == N

    # the stub answers as the real one does, with the same replica broken
    stub, backends = _stub_beside(node, engine)
    try:
        from mlvalidate.server import ApiError

        def broken():
            raise ApiError(500, BROKEN_STATUS)

        backends[1].service.status = broken
        assert _answers(stub.url, [b.server_address[1] for b in backends]) == _answers(node.url, node.backend_ports)
    finally:
        _close(stub, backends)


def test_the_proxy_timeout_is_named_after_its_60_s(mlnodes, reference, tmp_path, capsys, attempts):
    """A replica that takes 61 s for a request: the MLNode gives up at 60 s with 502 {"detail": ""}.
    The run ends then, with the cause, after one request (no retry until --timeout)."""
    node = mlnodes(replicas=1, env={"MLNODE_TEST_DELAY_S": "61"})
    _deploy(node, 1)
    assert _validate(node, reference, tmp_path, *ONLY_VALIDATE, "--in-flight", "0", "--batch-size", "40") == 2
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("node error"))
    assert "the MLNode's 60 s proxy timeout" in line and 'HTTP 502 {"detail": ""}' in line
    assert "lower --batch-size or use the queued mode" in line
    assert attempts.count(("POST", "/api/v1/inference/pow/generate")) == 1  # not retried
    r = _report(tmp_path)
    assert r["verdict"] == "INCOMPLETE" and r["exit_code"] == 2 and r["n_missing"] == N
