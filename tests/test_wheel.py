"""The wheel a host installs: built from this checkout, installed WITHOUT extras into a fresh
virtual environment made here (no system site-packages), and run from a folder that is not
the checkout. It must carry the golden references and the profiles, work without torch, and
say in one line which extra a torch command needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp / "dist"), str(ROOT)], check=True, capture_output=True, text=True, timeout=600)
    wheel = next((tmp / "dist").glob("mlvalidate-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", str(tmp / "venv")], check=True, timeout=300)
    py = tmp / "venv" / "bin" / "python"
    # without PYTHONPATH: a checkout on it (and the egg-info the wheel's build left there) would make pip
    # in the venv see mlvalidate as installed already and install nothing
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], capture_output=True, text=True,
                       timeout=900, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return {"python": py, "bin": tmp / "venv" / "bin", "wheel": wheel, "cwd": tmp}


def run(venv, *args, check_rc: int | None = 0):
    r = subprocess.run([str(venv["bin"] / "mlvalidate"), *args], cwd=venv["cwd"], capture_output=True, text=True,
                       timeout=300, env={"PATH": "/usr/bin:/bin", "HOME": str(venv["cwd"])})
    assert "Traceback" not in r.stderr, r.stderr
    if check_rc is not None:
        assert r.returncode == check_rc, (args, r.stdout[-2000:], r.stderr[-2000:])
    return r


def test_the_core_installs_without_torch_or_transformers(venv):
    for module in ("torch", "transformers", "vllm"):
        r = subprocess.run([str(venv["python"]), "-c", f"import {module}"], capture_output=True, text=True)
        assert r.returncode != 0, f"{module} is importable in the core-only venv"
    meta = subprocess.run([str(venv["python"]), "-c", "from importlib.metadata import requires; "
                           "import json; print(json.dumps(requires('mlvalidate')))"],
                          capture_output=True, text=True, check=True)
    reqs = json.loads(meta.stdout)
    core = [r for r in reqs if "extra ==" not in r]
    assert not [r for r in core if r.split(">")[0].split("=")[0].strip() in ("torch", "transformers")], core
    assert not [r for r in reqs if "==" in r.split(";")[0]], f"exact pins in the metadata: {reqs}"


def test_the_wheel_carries_the_references_and_the_profiles(venv):
    import zipfile

    names = zipfile.ZipFile(venv["wheel"]).namelist()
    shipped = sorted(p.name for p in (ROOT / "artifacts").glob("*.json"))
    assert sorted(Path(n).name for n in names if n.startswith("mlvalidate/data/artifacts/")) == shipped
    assert "mlvalidate/data/configs/h200x2/profile.yaml" in names
    assert "mlvalidate/data/configs/chain/minimaxai-minimax-m2.7.yaml" in names
    assert "mlvalidate/data/configs/multi-machine/a100-40gb-2x4-ray/profile.yaml" in names  # the Ray example
    out = run(venv, "config", "list").stdout
    for profile in ("a100x4", "h100x4", "h200x2", "b200x2"):
        assert profile in out
    args = run(venv, "config", "show", "h200x2", "--format", "args").stdout
    assert "--revision" in args and "--tensor-parallel-size" in args
    node = json.loads(run(venv, "config", "show", "h200x2", "--format", "node-json").stdout)
    assert node["models"]["MiniMaxAI/MiniMax-M2.7"]["args"] and node["poc_port"] == 8080


def test_what_config_list_cites_is_in_the_wheel(venv):
    """The wheel's `config list` cited docs/minimax-m2.md, which only a checkout has (issue 25, point 10): the
    wheel ships docs/ and the commands cite the installed document's path."""
    import re
    import zipfile

    names = zipfile.ZipFile(venv["wheel"]).namelist()
    shipped = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert sorted(Path(n).name for n in names if n.startswith("mlvalidate/data/docs/")) == shipped
    out = run(venv, "config", "list").stdout
    cited = re.findall(r"([^\s(]*docs/[\w.-]+\.md)", out)
    assert len(cited) == 3, out  # a100x8, b200x4, b300x1: no published figure
    for c in cited:
        path = Path(c)
        assert path.is_file() and path.is_relative_to(venv["cwd"] / "venv"), (c, out)  # the wheel's own copy
        assert "§5" in out and "## 5. Throughput references" in path.read_text()
    assert str(venv["cwd"] / "venv") in run(venv, "chain", "--help").stdout  # its description cites docs/ too


def test_inspect_and_check_of_the_shipped_minimax_reference(venv, tmp_path):
    out = run(venv, "inspect", "MiniMaxAI/MiniMax-M2.7").stdout
    assert "200" in out and "fraud declared at >= 28 mismatches of 200" in out
    copy = tmp_path / "computed.json"
    copy.write_bytes((ROOT / "artifacts" / "minimaxai-minimax-m2.7.json").read_bytes())
    r = run(venv, "check", "MiniMaxAI/MiniMax-M2.7", str(copy))
    assert r.stdout.startswith("VERDICT: PASS")


def test_validate_help_and_version_work_without_torch(venv):
    assert "--timeout" in run(venv, "validate", "--help").stdout
    v = run(venv, "--version").stdout
    assert v.startswith("mlvalidate ") and "torch not installed" in v and "vLLM not installed" in v


@pytest.mark.parametrize("command", [["demo"], ["make-tiny", "x"], ["bake", "--model", "m", "--model-id", "i",
                                                                       "--out", "o.json"]])
def test_a_command_that_needs_the_reference_extra_says_so(venv, command):
    r = run(venv, *command, check_rc=2)
    assert r.stderr.count("\n") == 1 and "pip install 'mlvalidate[reference]'" in r.stderr


def test_the_core_validates_a_node_served_from_the_main_environment(venv, tiny_minimax_fp8, tmp_path):
    """The core-only install talks to a node: `validate` from the venv against a reference PoC
    server started from the main environment (which has the reference extra)."""
    import socket

    from mlvalidate.bake import bake_reference
    from mlvalidate.engines.base import PocParams
    from mlvalidate.engines.reference import ReferenceEngine

    ref, _ = bake_reference(ReferenceEngine(tiny_minimax_fp8, dtype="fp32", model_id="test/tiny"), model_id="test/tiny",
                            out=tmp_path / "ref.json", n_nonces=16, batch_size=8,
                            params=PocParams("TEST_BLOCK", "test_pub_keys_v2", 32),
                            stat_test={"dist_threshold": 0.2, "p_mismatch": 0.1, "fraud_threshold": 0.05},
                            progress=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "mlvalidate", "serve", "--model", str(tiny_minimax_fp8),
                               "--model-id", "test/tiny", "--dtype", "fp32", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "serving" in server.stdout.readline()
        r = run(venv, "validate", "--url", f"http://127.0.0.1:{port}", "--reference", str(ref), "--batch-size", "8",
                "--skip-throughput", "--timeout", "60", "--out", str(tmp_path / "bundle"))
        assert r.stdout.splitlines()[-1].startswith("bundle") and "VERDICT: PASS" in r.stdout
        report = json.loads((tmp_path / "bundle" / "report.json").read_text())
        env = json.loads((tmp_path / "bundle" / "environment.json").read_text())
        assert report["verdict"] == "PASS" and env["harness"]["torch"] is None  # the venv has no torch
        assert env["node"]["where"] == "this host" and env["node"]["hardware"]["label"] == "CPU"  # loopback, no driver
    finally:
        server.terminate()
        server.wait(timeout=30)
