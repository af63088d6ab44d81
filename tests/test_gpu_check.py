"""benchmarks/gpu_check.py on the CPU, as CI runs it: the CUDA parts say "skipped: no CUDA" and every
CPU figure is checked here, so the script cannot rot between the sessions that have a GPU.

The script runs as a user runs it (a child process, PYTHONPATH = the checkout), at small sizes.
Gonka's gpu_random.py is RUN from /work/shared/counterparts where it lies (found above the
checkout, as the script finds it); the tests that need it skip with one line when it is absent.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
GONKA = next((d / "shared/counterparts/gonka-vllm-poc/vllm/poc/gpu_random.py" for d in (REPO, *REPO.parents)
              if (d / "shared/counterparts/gonka-vllm-poc/vllm/poc/gpu_random.py").is_file()), None)
needs_gonka = pytest.mark.skipif(GONKA is None, reason="Gonka's gpu_random.py (shared/counterparts) not above the checkout")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the CPU-only figures differ")

CI_SIZES = ["--nonces", "48", "--embed-nonces", "2", "--gonka-cpu-embed-nonces", "2", "--pick-batches", "1,48",
            "--vector-batch", "16", "--engine-nonces", "24", "--engine-seq-len", "64", "--check-vectors", "20000"]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nvml_works() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:  # no pynvml, or NVMLError: no driver (our CPU machines)
        return False


def run_script(tmp: Path, *args: str) -> tuple[dict, subprocess.CompletedProcess]:
    out = tmp / "gpu_check.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MLVALIDATE_GONKA_POC", None)
    r = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *args], capture_output=True, text=True,
                       cwd=REPO, env=env, timeout=1800)
    assert out.is_file(), r.stderr[-3000:]
    return json.loads(out.read_text()), r


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    pytest.importorskip("transformers")
    return run_script(tmp_path_factory.mktemp("gpu_check"), *CI_SIZES)


def _cells(doc):
    for shape_name, shape in doc["results"]["poc"]["shapes"].items():
        for q, cells in shape["quantities"].items():
            for pair, cell in cells.items():
                yield shape_name, q, pair, cell


@pytest.mark.slow
@no_cuda
def test_cpu_run_skips_every_cuda_figure_and_passes(cpu_run):
    doc, r = cpu_run
    assert r.returncode == 0 and doc["exit_code"] == 0, (doc.get("errors"), doc.get("unexpected"), r.stderr[-2000:])
    assert doc["environment"]["cuda"].startswith("skipped: no CUDA") and not doc["errors"]
    cuda_cells = [c for _, _, pair, c in _cells(doc) if "cuda" in pair]
    assert cuda_cells and all(c == "skipped: no CUDA" for c in cuda_cells)
    engine = doc["results"]["engine"]
    assert set(engine["runs"]) == {"cpu-bf16", "cpu-fp32", "cheater-cpu-bf16"}
    assert all(c == "skipped: no CUDA" for label, c in engine["comparisons"].items() if "cuda" in label)
    speed = doc["results"]["check"]["speed"]
    assert all(speed[w]["cuda"] == "skipped: no CUDA" for w in ("l2_distances", "compare_vectors", "check_files"))
    assert any("skipped: no CUDA" in s for s in doc["skipped"])
    # the table printed what the JSON holds
    assert "1. PoC math" in r.stdout and "cheater-cpu-bf16 vs cpu-bf16" in r.stdout and "exit 0" in r.stdout


@pytest.mark.slow
@needs_gonka
def test_ours_on_cpu_equals_gonkas_on_cpu_but_the_pick_order(cpu_run):
    """Same device, same arithmetic: every float bit-identical; the picks the same sets, in another
    order (CPU topk), named nonce by nonce, and that order is what makes the vectors differ."""
    doc, _ = cpu_run
    from mlvalidate.poc.transform import pick_indices

    gonka = _load("gonka_gpu_random_test", GONKA)
    assert doc["results"]["poc"]["gonka"] == str(GONKA)
    for name, shape in doc["results"]["poc"]["shapes"].items():
        D, S, k, layers = shape["D"], shape["S"], shape["k"], shape["layers"]
        cells = {q: c["ours-cpu vs gonka-cpu"] for q, c in shape["quantities"].items()}
        sizes = {"inputs": 2 * S * D, "inputs_stronger": 2 * S * D, "target": D, "householder": layers * D,
                 "reflect": 2 * S * D, "haar": 48 * k}
        for q, n in sizes.items():
            assert cells[q]["compared"] == n and cells[q]["differ"] == 0, (name, q, cells[q])
            assert cells[q]["status"] == "ok" and cells[q]["expect"] == "equal"
        for q in ("pick@1", "pick@48"):
            c = cells[q]
            assert c["rows"] == 48 and c["rows_set_differ"] == 0 and c["status"] == "ok", (name, q, c)
            assert c["rows_order_differ"] > 0 and c["first_order"], (name, q, c)
            for f in c["first_order"]:  # what the JSON names is what each side really computes
                assert f["a"] == pick_indices("TEST_BLOCK", "test_pub_keys_v2", [f["nonce"]], D, k)[0].tolist()
                theirs = gonka.random_pick_indices("TEST_BLOCK", "test_pub_keys_v2", [f["nonce"]], D, k,
                                                   torch.device("cpu"))
                assert f["b"] == theirs[0].tolist() and sorted(f["a"]) == sorted(f["b"]) and f["a"] != f["b"]
        vec = cells["vectors@16"]
        assert vec["status"] == "measured" and vec["rows_differ"] > 0 and vec["max_row_l2"] > 0.1, (name, vec)


@pytest.mark.slow
def test_engine_and_check_cpu_figures(cpu_run):
    doc, _ = cpu_run
    e = doc["results"]["engine"]
    assert all(r["vectors"] == 24 and r["device"] == "cpu" for r in e["runs"].values())
    honest, cheater = e["comparisons"]["cpu-fp32 vs cpu-bf16"], e["comparisons"]["cheater-cpu-bf16 vs cpu-bf16"]
    assert honest["verdict"] in ("PASS", "PASS-with-mismatches") and honest["status"] == "ok"
    assert cheater["verdict"] == "FAIL" and cheater["status"] == "ok" and cheater["past_gate"] > 20
    assert honest["median"] < e["stat_test"]["dist_threshold"] < cheater["median"]
    c = doc["results"]["check"]
    ev = c["engine_vectors"]
    if not torch.cuda.is_available():
        # `check` on the files written from the engine's vectors agrees with the engine part's own comparison
        assert ev["computed"] == "cpu-fp32" and ev["numpy"]["verdict"] == honest["verdict"]
        assert ev["numpy"]["n_mismatch"] == honest["past_gate"]
        cli = ev["cli_device_cuda"]  # check --device cuda without CUDA: one line, exit 2
        assert cli["exit_code"] == 2 and cli["status"] == "ok" and "CUDA" in cli["stderr"], cli
    files = c["speed"]["check_files"]
    assert files["status"] == "ok" and files["n_mismatch"] == files["far_planted"] > 0
    assert files["verdict"] == "PASS-with-mismatches"  # 5 % far under the demo's p_mismatch 0.1


@pytest.mark.slow
@no_cuda
def test_hw_without_a_driver_is_one_line(cpu_run):
    doc, _ = cpu_run
    if _nvml_works():
        pytest.skip("NVML reads a GPU on this machine")
    hw = doc["results"]["hw"]["hw"]
    assert hw["exit_code"] == 2 and hw["status"] == "ok" and hw["stderr"].startswith("error: "), hw


@pytest.mark.slow
@needs_gonka
def test_dry_run_takes_every_device_path_and_names_what_differs(tmp_path):
    """--device cpu: the CPU stands in for CUDA, so the code that only a GPU session runs runs here.
    Gonka's code "on the device" is then Gonka's on the CPU: its pick order is CPU topk's, and the
    script must report exactly that (and what follows from it) as not what a GPU should show."""
    pytest.importorskip("transformers")
    doc, r = run_script(tmp_path, "--device", "cpu", "--only", "poc,engine,check", "--shapes", "small",
                        "--nonces", "24", "--embed-nonces", "2", "--pick-batches", "1,24", "--vector-batch", "8",
                        "--engine-nonces", "8", "--engine-seq-len", "16", "--check-vectors", "5000")
    assert doc["environment"]["dry_run"] and not doc["errors"], doc["errors"]
    assert r.returncode == 2 and doc["exit_code"] == 2  # something UNEXPECTED: exit 2
    base = "poc.shapes.small.quantities"
    assert sorted(doc["unexpected"]) == sorted(
        [f"{base}.pick@{b}.{pair}: expected equal" for b in (1, 24) for pair in ("ours-cpu vs gonka-cuda",
                                                                                 "ours-cuda vs gonka-cuda")]
        + [f"{base}.vectors@8.ours-cuda vs gonka-cuda: expected equal"])
    cells = doc["results"]["poc"]["shapes"]["small"]["quantities"]
    for q, c in cells.items():  # the same code on the same CPU: every quantity identical
        assert c["ours-cpu vs ours-cuda"]["differ" if "rows_differ" in c["ours-cpu vs ours-cuda"] else
                                          "rows_order_differ"] == 0, q
    e = doc["results"]["engine"]
    assert e["comparisons"]["cuda-bf16 vs cpu-bf16"]["identical_vectors"] == 8
    assert e["comparisons"]["cheater-cuda-bf16 vs cpu-bf16"]["verdict"] == "FAIL"
    ev = doc["results"]["check"]["engine_vectors"]
    assert ev["cuda"]["status"] == "ok" and ev["cli_device_cuda"]["status"] == "ok"
    speed = doc["results"]["check"]["speed"]
    assert speed["l2_distances"]["max_abs_distance_difference"] == 0 and speed["check_files"]["same"]["status"] == "ok"
    assert "UNEXPECTED" in r.stdout and "pick@1 (ours-cpu vs gonka-cuda, UNEXPECTED): first at nonce" in r.stdout


@no_cuda
def test_without_gonkas_file_the_comparison_says_so_and_the_rest_runs(tmp_path):
    doc, r = run_script(tmp_path, "--gonka", str(tmp_path / "absent" / "gpu_random.py"), "--only", "poc",
                        "--shapes", "small", "--nonces", "8", "--embed-nonces", "1", "--pick-batches", "8",
                        "--vector-batch", "8")
    assert r.returncode == 0 and doc["exit_code"] == 0, r.stderr[-2000:]
    poc = doc["results"]["poc"]
    assert poc["gonka"].startswith("absent: looked in ") and str(tmp_path / "absent") in poc["gonka"]
    for _, q, pair, cell in _cells(doc):
        if pair == "ours-cpu vs gonka-cpu":
            assert cell == "skipped: Gonka's gpu_random.py not found", (q, cell)
        elif "cuda" in pair:
            assert cell == "skipped: no CUDA", (q, pair, cell)
    assert poc["shapes"]["small"]["sources"] == ["ours-cpu"]


# ----------------------------------------------------------------------------------------
# the comparisons themselves, on planted differences
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def poc_module():
    return _load("gpu_check_poc_test", REPO / "benchmarks" / "gpu_check_poc.py")


def test_float_diff_names_exactly_the_planted_elements(poc_module):
    a = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(1))
    b = a.clone()
    b[1, 2, 3] = torch.nextafter(a[1, 2, 3], torch.tensor(float("inf")))  # one ulp up
    b[2, 0, 1] = a[2, 0, 1] + 0.5
    d = poc_module.FloatDiff(("nonce", "position", "dim"), bf16=True)
    d.add(a[:2], b[:2], [10, 11])  # added in blocks of rows, as the embeddings are
    d.add(a[2:], b[2:], [12])
    out = d.as_dict()
    assert out["compared"] == 60 and out["rows"] == 3 and out["differ"] == 2 and out["rows_differ"] == 2
    assert out["max_ulp"] >= 1 and out["max_abs"] == pytest.approx(0.5, rel=1e-6)
    assert [(f["nonce"], f["position"], f["dim"]) for f in out["first"]] == [(11, 2, 3), (12, 0, 1)]
    assert out["first"][0]["a"] == float(a[1, 2, 3]) and out["first"][0]["b"] == float(b[1, 2, 3])
    bf16 = int((a.to(torch.bfloat16).view(torch.int16) != b.to(torch.bfloat16).view(torch.int16)).sum())
    assert out["differ_after_bf16_cast"] == bf16 >= 1
    same = poc_module.FloatDiff(("layer", "dim"))
    same.add(a[0], a[0].clone(), range(4))
    assert same.as_dict()["differ"] == 0 and poc_module.judge("equal", same.as_dict()) == "ok"
    assert poc_module.judge("equal", out) == "UNEXPECTED" and poc_module.judge("measured", out) == "measured"
    one_ulp = poc_module.FloatDiff(("nonce", "dim"))
    x = torch.tensor([[1.0, -2.0]])
    one_ulp.add(x, torch.nextafter(x, torch.zeros_like(x)), [0])  # both one ulp towards zero, either sign
    assert one_ulp.as_dict()["max_ulp"] == 1 and one_ulp.as_dict()["differ"] == 2


def test_pick_diff_tells_order_from_set(poc_module):
    a = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    b = torch.tensor([[1, 2, 3], [6, 5, 4], [7, 8, 10]])
    d = poc_module.PickDiff()
    d.add(a, b, [100, 101, 102])
    out = d.as_dict()
    assert out["rows"] == 3 and out["rows_order_differ"] == 2 and out["rows_set_differ"] == 1
    assert out["first_order"] == [{"nonce": 101, "a": [4, 5, 6], "b": [6, 5, 4]}]
    assert out["first_set"] == [{"nonce": 102, "a": [7, 8, 9], "b": [7, 8, 10]}]
    assert poc_module.judge("same sets", out) == "UNEXPECTED" and poc_module.judge("equal", out) == "UNEXPECTED"
    d2 = poc_module.PickDiff()
    d2.add(a[:2], b[:2], [0, 1])
    assert poc_module.judge("same sets", d2.as_dict()) == "ok" and poc_module.judge("equal", d2.as_dict()) == "UNEXPECTED"


def test_hw_part_reads_a_gpu_report_and_the_energy_counter(monkeypatch):
    """The GPU branch of part 4 without a GPU: `hw --json` as the real report code writes it for
    NVML's stand-in (tests/test_hardware.py), and the energy counter read before and after."""
    from test_hardware import FakeNVML

    from mlvalidate.serving.hardware import hw_report

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    parts = _load("gpu_check_parts_test", REPO / "benchmarks" / "gpu_check_parts.py")
    gpu_check = _load("gpu_check_test", SCRIPT)
    report = json.dumps(hw_report(nvml=FakeNVML("NVIDIA H100 80GB HBM3", 1, 81559)))
    monkeypatch.setattr(parts, "_cli", lambda *a, **k: subprocess.CompletedProcess(a, 0, report, ""))
    monkeypatch.setattr(parts, "energy_mj", lambda: {0: 5_000_000})
    res = parts.hw_part(torch.device("cuda"), {0: 1_000_000}, 80.0)
    hw = res["hw"]
    assert hw["status"] == "ok" and hw["not_read"] == [] and hw["matched_profile"] is None
    g = hw["gpus"][0]
    assert g["name"] == "NVIDIA H100 80GB HBM3" and g["memory_total_gib"] == round(81559 / 1024, 2)
    assert (g["sm_clock_mhz"], g["sm_clock_max_mhz"], g["mem_clock_mhz"]) == (1755, 1980, 2619)
    assert res["energy_counter"] == {"0": {"joules": 4000.0, "over_s": 80.0}} and res["hw_reports_energy"] is False
    no_power = json.dumps(hw_report(nvml=FakeNVML("NVIDIA A100-SXM4-80GB", 1, 81920, power=False)))
    monkeypatch.setattr(parts, "_cli", lambda *a, **k: subprocess.CompletedProcess(a, 0, no_power, ""))
    hw = parts.hw_part(torch.device("cuda"), None, 1.0)["hw"]
    assert hw["status"] == "UNEXPECTED" and hw["not_read"] == ["power_limit_w", "power_w"]
    doc = {"environment": {"cuda": "NVIDIA H100 80GB HBM3", "torch": "2.11.0+cu130"}, "seconds": 1,
           "results": {"hw": res}, "exit_code": 0}
    lines = gpu_check.table(doc)
    assert any("NVIDIA H100 80GB HBM3, 79.65 GiB, SM 1755/1980 MHz, mem 2619/2619 MHz" in x for x in lines), lines
    assert any("energy counter: {'0': {'joules': 4000.0" in x for x in lines)
