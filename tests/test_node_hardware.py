"""The node's hardware, kept apart from the harness machine's (serving/node_hardware.py): what a
node says of itself through its MLNode's GPU routes (asked over real HTTP: tests/mlnode_stub.py
answers them with the real MLNode's shapes, and test_real_mlnode.py asks the real one), this
host's NVML only where the node ran here, the operator's --gpus / --profile, and unknown for a
node that never answered — each fact with its source. This host's NVML is a FakeNVML that says
one RTX 4090, so a record that took the harness machine's hardware for a node's would show it.
"""

from __future__ import annotations

import json
import sys
import threading

import numpy as np
import pynvml
import pytest

import report_fixtures as rf
from fake_nvml import FakeNVML
from mlnode_stub import MlnodeStub
from mlvalidate.artifacts import load_reference, resolve_stat_test
from mlvalidate.cli import main
from mlvalidate.engines.mlnode_api import gpu_answers
from mlvalidate.errors import MlvalidateError
from mlvalidate.results import RunRecord
from mlvalidate.server import make_server
from mlvalidate.serving.environment import environment, nvml_sample
from mlvalidate.serving.node_hardware import parse_gpus
from mlvalidate.serving.profiles import load_profile
from tiny_nodes import MODEL, honest_engine, small_reference

HOST_GPU = "NVIDIA GeForce RTX 4090"
REMOTE = "http://192.0.2.10:5000"  # TEST-NET-1: never contacted, only named as a remote node's URL


def rtx4090():
    return FakeNVML(HOST_GPU, 1, 24564)


@pytest.mark.parametrize("text, want", [("H100 x4", ("H100", 4)), ("4x H100", ("H100", 4)),
                                        ("NVIDIA H100 80GB HBM3 x 4", ("NVIDIA H100 80GB HBM3", 4)),
                                        ("2 × B200", ("B200", 2)), ("RTX PRO 6000 x8", ("RTX PRO 6000", 8)),
                                        ("CPU", (None, 0)), ("none", (None, 0))])
def test_gpus_option_parses(text, want):
    assert parse_gpus(text) == want


@pytest.mark.parametrize("text", ["H100", "x4", "H100 x0", "4", "H100 x 99999", "H\x00100 x4", ""])
def test_gpus_option_refuses_in_one_line(text):
    with pytest.raises(MlvalidateError) as e:
        parse_gpus(text)
    assert e.value.one_line() == f"--gpus {text!r} is not a GPU model and count — write it as MODEL x COUNT, e.g. " \
        '--gpus "H100 x4" (or "CPU")'


def _run(url: str | None, node_facts=None, *, gpus=None, profile=None, error=None) -> RunRecord:
    ref = load_reference("MiniMaxAI/MiniMax-M2.7")
    return RunRecord(name="r", reference=ref, stat_test=resolve_stat_test(ref), comparison=None,
                     engine={"engine": "vllm-api", "url": url} if url else {"engine": "vllm-inprocess"},
                     computed_nonces=np.zeros(0, np.int64), computed_vectors=np.zeros((0, ref.k_dim), np.float16),
                     batch_size=32, elapsed_s=0.0, error=error, profile=profile, node_facts=node_facts,
                     inputs={"gpus": {"value": gpus, "source": "cli"}} if gpus else {},
                     nvml_samples=[nvml_sample("validate start", rtx4090())])  # fmt: skip


@pytest.fixture
def stub_h100():
    stub = MlnodeStub([], gpus=rf.H100_DEVICES, driver=rf.H100_DRIVER)
    yield stub
    stub.close()


@pytest.fixture
def stub_cpu():
    stub = MlnodeStub([])  # the real MLNode's answers on a machine without NVML
    yield stub
    stub.close()


def test_a_remote_node_is_what_its_mlnode_says_never_this_host(stub_h100):
    answers = gpu_answers(stub_h100.url, 10.0)  # over HTTP, as the pipeline asks
    env = environment(_run(REMOTE, {"mlnode": answers}, profile=load_profile("a100x4")))
    node = env.node
    assert env.gpu_model == HOST_GPU and node.where == "remote" and node.url == REMOTE
    hw = node.hardware
    assert hw.label() == "4× NVIDIA H100 80GB HBM3" and hw.source == "node: MLNode GET /api/v1/gpu/devices"
    assert hw.driver_version == "570.124.06" and hw.cuda_driver_version == "12.8"
    assert hw.sources["driver_version"] == "node: MLNode GET /api/v1/gpu/driver"
    assert [g["memory_total_mib"] for g in hw.gpus] == [81559] * 4
    assert hw.notes == ["operator: profile a100x4 says 4× NVIDIA A100 80GB"]  # the claim that disagrees
    assert hw.group_key() == ("NVIDIA H100 80GB HBM3", 4, "a100x4")
    assert HOST_GPU not in json.dumps(node.as_dict()) and node.software == {}


def test_an_mlnode_without_nvml_says_nothing_and_the_operator_decides(stub_cpu):
    answers = gpu_answers(stub_cpu.url, 10.0)
    assert answers["devices"] == {"status": 200, "body": {"devices": [], "count": 0}}
    assert answers["driver"]["status"] == 503
    hw = environment(_run(REMOTE, {"mlnode": answers}, gpus="H100 x4")).node.hardware
    assert hw.label() == "4× H100" and hw.source == "operator: --gpus"
    assert "lists no GPU and its NVML is not running" in hw.notes[0] and "NVML not initialized" in hw.notes[0]
    nothing = environment(_run(REMOTE, {"mlnode": answers})).node.hardware
    assert not nothing.known and "NVML is not running" in nothing.why and "--gpus" in nothing.why


def test_a_node_that_never_answered_has_no_hardware_even_with_gpus_declared():
    hw = environment(_run(REMOTE, None, gpus="H100 x4", profile=load_profile("h100x4"),
                          error="validate: POST ... failed: cannot connect — is the node running?")).node.hardware
    assert not hw.known and hw.label() == "unknown" and hw.gpu_count is None
    assert hw.why == "the node never answered: validate: POST ... failed: cannot connect"


def test_a_remote_node_without_routes_takes_the_operators_word_then_its_profile():
    assert environment(_run(REMOTE, {}, profile=load_profile("b200x2"))).node.hardware.source == \
        "operator: profile b200x2"
    hw = environment(_run(REMOTE, {"mlnode": {"url": "http://192.0.2.10:8080", "devices": None, "driver": None}},
                          gpus="B200 x2", profile=load_profile("b200x2"))).node.hardware
    assert hw.source == "operator: --gpus" and hw.notes == [
        "the MLNode at http://192.0.2.10:8080 said nothing of its GPUs: GET /api/v1/gpu/devices: no answer"]


def test_an_engine_in_this_process_is_this_host_and_says_so():
    node = environment(_run(None, None, profile=load_profile("h100x4"))).node
    assert node.where == "this host" and node.hardware.label() == f"1× {HOST_GPU}"
    assert node.hardware.source == "this host: NVML"
    assert node.hardware.notes == ["operator: profile h100x4 says 4× NVIDIA H100 80GB"]
    assert node.software["torch"]["source"] == "this process (package metadata)"


# ---- end to end: `validate` and `fleet` over real HTTP ------------------------------------------------
@pytest.fixture(scope="module")
def backend(tiny_minimax_fp8, tmp_path_factory):
    engine = honest_engine(tiny_minimax_fp8)
    ref = small_reference(engine, tmp_path_factory.mktemp("ref"))
    server = make_server(engine, MODEL)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, ref
    server.shutdown()
    server.server_close()


def test_validate_through_an_mlnode_records_the_nodes_gpus_and_this_host_apart(backend, tmp_path, monkeypatch):
    server, ref = backend
    monkeypatch.setitem(sys.modules, "pynvml", rtx4090())  # this host's NVML
    stub = MlnodeStub([server.url], gpus=rf.H100_DEVICES, driver=rf.H100_DRIVER)
    try:
        rc = main(["validate", "--api", "mlnode", "--url", stub.url, "--reference", str(ref), "--batch-size", "8",
                   "--skip-download", "--skip-deploy", "--skip-throughput", "--out", str(tmp_path / "b")])
    finally:
        stub.close()
    assert rc == 0
    env = json.loads((tmp_path / "b" / "environment.json").read_text())
    assert env["harness"]["gpu_model"] == HOST_GPU and env["harness"]["gpu_count"] == 1
    hw = env["node"]["hardware"]
    assert hw["label"] == "4× NVIDIA H100 80GB HBM3" and hw["source"] == "node: MLNode GET /api/v1/gpu/devices"
    assert hw["notes"] == [f"this host: NVML says 1× {HOST_GPU}"]  # on loopback, this host measured too
    text = (tmp_path / "b" / "report.txt").read_text()
    assert "hardware      4× NVIDIA H100 80GB HBM3 (node: MLNode GET /api/v1/gpu/devices)" in text


def test_fleet_asks_each_entrys_mlnode_and_refuses_a_bad_gpus_field(backend, tmp_path, monkeypatch, capsys):
    server, ref = backend
    monkeypatch.setitem(sys.modules, "pynvml", FakeNVML("none", 0, 0, init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    port = int(server.url.rsplit(":", 1)[1])
    stub = MlnodeStub([server.url], gpus=rf.H100_DEVICES[:2], driver=rf.H100_DRIVER)
    entries = [{"id": "with-mlnode", "host": "127.0.0.1", "inference_port": port,
                "poc_port": int(stub.url.rsplit(":", 1)[1])},
               {"id": "declared", "url": server.url, "gpus": "A100 x8"},
               {"id": "bad-gpus", "url": server.url, "gpus": "lots"}]
    nodes = tmp_path / "nodes.json"
    nodes.write_text(json.dumps(entries))
    try:
        rc = main(["fleet", "--nodes", str(nodes), "--reference", str(ref), "--batch-size", "8", "--skip-throughput",
                   "--timeout", "120", "--out", str(tmp_path / "fleet")])
    finally:
        stub.close()
    out = capsys.readouterr()
    assert rc == 2, out.out[-2000:]  # the bad entry is an ERROR row; the others passed
    summary = json.loads((tmp_path / "fleet" / "fleet.json").read_text())
    by = {n["id"]: n for n in summary["nodes"]}
    assert by["with-mlnode"]["verdict"] == "PASS" and by["declared"]["verdict"] == "PASS"
    assert by["with-mlnode"]["hardware"]["label"] == "2× NVIDIA H100 80GB HBM3"
    assert by["with-mlnode"]["hardware_cell"] == "2× NVIDIA H100 80GB HBM3 [the node]"
    # on loopback without an MLNode: this host measured (a CPU here); the operator's word is kept beside it
    assert by["declared"]["hardware"]["label"] == "CPU"
    assert by["declared"]["hardware"]["notes"] == ["operator: nodes-file entry says 8× A100"]
    assert by["bad-gpus"]["verdict"] == "ERROR" and "gpus 'lots' is not a GPU model and count" in by["bad-gpus"]["error"]
