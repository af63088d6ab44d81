"""`mlvalidate hw`: the no-driver path for real, the NVML -> inventory -> report logic with an
NVML stand-in built from pynvml's own structs and errors (this machine has no GPU), and the
VRAM fit estimates."""

import json
import subprocess
import sys

import pynvml
import pytest
import yaml
from fake_nvml import MIB, FakeNVML  # noqa: F401 (test_environment imports FakeNVML from here too)

from mlvalidate.cli import main
from mlvalidate.commands.hw import render_report
from mlvalidate.serving.hardware import (
    GIB,
    HardwareError,
    build_report,
    fit_estimate,
    read_inventory,
)
from mlvalidate.serving.profiles import list_profiles, load_profile



def _nvml_works() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


def profiles():
    return [load_profile(n) for n in list_profiles()]


# ----------------------------------------------------------------------------------------
# this machine: no NVIDIA driver
# ----------------------------------------------------------------------------------------
@pytest.mark.skipif(_nvml_works(), reason="this machine has a working NVIDIA driver")
@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_hw_without_driver_is_one_line_exit_2(extra):
    r = subprocess.run([sys.executable, "-m", "mlvalidate", "hw", *extra], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert lines[0].startswith("error: no NVIDIA driver on this machine (NVML: NVML Shared Library Not Found)")
    assert "--profiles-only" in lines[0]  # the next step


@pytest.mark.skipif(_nvml_works(), reason="this machine has a working NVIDIA driver")
def test_read_inventory_with_real_pynvml_raises_hardware_error():
    with pytest.raises(HardwareError, match="no NVIDIA driver"):
        read_inventory()


def test_driver_not_loaded_is_named():
    with pytest.raises(HardwareError, match="NVIDIA driver is not loaded") as e:
        read_inventory(FakeNVML("NVIDIA H100 80GB HBM3", 4, 81559, init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
    assert "\n" not in e.value.one_line()


# ----------------------------------------------------------------------------------------
# inventory -> report
# ----------------------------------------------------------------------------------------
def test_inventory_fields_from_nvml():
    nvml = FakeNVML("NVIDIA H100 80GB HBM3", 4, 81559, used_mib={0: 71_000}, procs={0: [(4242, 70_400), (17, 100)]})
    inv = read_inventory(nvml)
    assert not nvml.live  # shut down again
    assert (inv.driver_version, inv.cuda_version, inv.nvml_version) == ("570.124.06", "12.8", "12.570.124.06")
    assert [g.name for g in inv.gpus] == ["NVIDIA H100 80GB HBM3"] * 4
    g0 = inv.gpus[0]
    assert g0.memory_total_gib == pytest.approx(79.65, abs=0.01) and g0.memory_used_bytes == 71_000 * MIB
    assert (g0.sm_clock_mhz, g0.sm_clock_max_mhz, g0.mem_clock_mhz, g0.mem_clock_max_mhz) == (1755, 1980, 2619, 2619)
    assert (g0.power_w, g0.power_limit_w) == (pytest.approx(113.456), 700.0)
    procs = [(p.pid, p.name, p.used_bytes) for p in g0.processes]
    assert procs == [(17, "python3", 100 * MIB), (4242, "/usr/bin/vllm", 70_400 * MIB)]
    assert inv.gpus[1].processes == []


def test_unsupported_queries_are_none_not_errors():
    inv = read_inventory(FakeNVML("NVIDIA A100-SXM4-80GB", 4, 81920, power=False))
    assert inv.gpus[0].power_w is None and inv.gpus[0].power_limit_w is None
    assert "power ?" in render_report(build_report(inv, profiles()))


def test_report_matches_profile_and_flags_memory_held_at_start():
    inv = read_inventory(FakeNVML("NVIDIA H100 80GB HBM3", 4, 81559, used_mib={0: 71_000}, procs={0: [(4242, 70_400)]}))
    rep = build_report(inv, profiles())
    assert rep["matched_profile"] == "h100x4"
    assert {m["profile"]: m["match"] for m in rep["matches"]} == {
        "a100x4": False, "a100x8": False, "b200x2": False, "b200x4": False, "b300x1": False,
        "h100x4": True, "h200x2": False}  # fmt: skip
    assert rep["fit_measured"]["memory_source"] == "measured" and rep["fit_measured"]["fits"]
    start = {s["gpu"]: s for s in rep["startup"]}
    assert not start[0]["ok"] and start[1]["ok"]  # vLLM wants 0.92 x total free on every GPU
    assert start[0]["holders"] == ["pid 4242 /usr/bin/vllm (68.8 GiB)"]
    text = render_report(rep)
    assert "matching profile: h100x4" in text
    assert "GPU 0: only 10.3 GiB free, vLLM wants 73.3 GiB at start and will refuse to start" in text
    assert "CUDA 12.8" in text and "SM 1755/1980 MHz" in text
    assert json.loads(json.dumps(rep)) == rep  # --json output is plain data


@pytest.mark.parametrize(
    "name, count, mib, expect, why",
    [
        ("NVIDIA H100 80GB HBM3", 8, 81559, None, "8 GPUs here, the profile is for 4"),
        ("NVIDIA A100-SXM4-40GB", 4, 40960, None, "is not NVIDIA A100 80GB"),
        ("NVIDIA A100-SXM4-80GB", 4, 81920, "a100x4", None),
        ("NVIDIA A100-SXM4-80GB", 8, 81920, "a100x8", None),
        ("NVIDIA B200", 4, 183359, "b200x4", None),
        ("NVIDIA B300 SXM6 AC", 1, 274_000, "b300x1", None),
        ("NVIDIA GB300", 1, 274_000, None, "is not NVIDIA B300"),
        ("NVIDIA H200", 2, 143771, "h200x2", None),
        ("NVIDIA B200", 2, 183359, "b200x2", None),
        ("NVIDIA GB200", 2, 189471, None, "is not NVIDIA B200"),
    ],
)
def test_profile_matching(name, count, mib, expect, why):
    rep = build_report(read_inventory(FakeNVML(name, count, mib)), profiles())
    assert rep["matched_profile"] == expect
    if why:
        assert any(why in m["why"] for m in rep["matches"])


# ----------------------------------------------------------------------------------------
# VRAM fit
# ----------------------------------------------------------------------------------------
def test_fit_weights_per_gpu_match_minimax_m2_md():
    a100, h200 = fit_estimate(load_profile("a100x4")), fit_estimate(load_profile("h200x2"))
    # (214.3 GiB - 0.18 GiB replicated router gates) / TP + 0.18
    assert a100.weights_gib == pytest.approx((214.3 - 0.18) / 4 + 0.18)
    assert h200.weights_gib == pytest.approx((214.3 - 0.18) / 2 + 0.18)
    # MINIMAX_M2.md §4 quotes ~54.6 and ~107 GiB per GPU
    assert a100.weights_gib == pytest.approx(54.6, rel=0.02)
    assert h200.weights_gib == pytest.approx(107, rel=0.02)


def test_fit_kv_cache_and_budget():
    est = fit_estimate(load_profile("h200x2"))
    assert est.kv_bytes_per_token == 124 * 1024 // 2  # 124 KiB per token over TP 2
    assert est.kv_max_len_gib == pytest.approx(180_000 * 62 * 1024 / GIB)
    assert est.budget_gib == pytest.approx(140.4 * 0.92)
    assert est.needed_gib == pytest.approx(est.weights_gib + est.kv_max_len_gib + 4.0)
    assert est.fits and est.spare_gib == pytest.approx(est.budget_gib - est.needed_gib)
    assert est.kv_capacity_tokens == int((est.budget_gib - est.weights_gib - 4.0) * GIB // est.kv_bytes_per_token)
    for p in profiles():
        assert fit_estimate(p).fits, p.name


def test_fit_does_not_fit_on_smaller_gpus(tmp_path):
    d = tmp_path / "a100x4-40g"
    d.mkdir()
    doc = yaml.safe_load(open(load_profile("a100x4").path))
    doc["gpu_memory_gib"] = 40.0
    (d / "profile.yaml").write_text(yaml.safe_dump(doc))
    est = fit_estimate(load_profile(d))
    assert not est.fits and est.spare_gib < 0 and est.kv_capacity_tokens == 0
    assert not fit_estimate(load_profile("h100x4"), headroom_gib=20.0).fits  # 53.7 + 5.3 + 20 > 73.2


def test_hw_profiles_only_needs_no_gpu(capsys):
    assert main(["hw", "--profiles-only"]) == 0
    out = capsys.readouterr().out
    for name in list_profiles():
        assert name in out
    assert "a100x4" in out and " 53.7 " in out and " 107.2 " in out
    assert main(["hw", "--profiles-only", "--json", "--profile", "h200x2"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert [r["profile"] for r in rep["fit"]] == ["h200x2"] and rep["fit"][0]["fits"] is True
    assert "gpus" not in rep


def test_hw_profiles_only_fit_rows_for_the_further_layouts(capsys):
    """8x A100 TP 8, 4x B200 TP 4, 1x B300 TP 1 (MINIMAX_M2.md §4): each fits at 0.92."""
    assert main(["hw", "--profiles-only", "--json", "--profile", "a100x8", "--profile", "b200x4",
                 "--profile", "b300x1"]) == 0  # fmt: skip
    fit = {r["profile"]: r for r in json.loads(capsys.readouterr().out)["fit"]}
    assert sorted(fit) == ["a100x8", "b200x4", "b300x1"]
    for name, tp in [("a100x8", 8), ("b200x4", 4), ("b300x1", 1)]:
        row = fit[name]
        assert row["fits"] is True and row["spare_gib"] > 0 and row["tensor_parallel_size"] == tp, name
        assert row["weights_gib"] == pytest.approx((214.3 - 0.18) / tp + 0.18, abs=1e-3)
        assert row["gpu_memory_utilization"] == 0.92
    # KV heads: 8 over TP 8 is one per GPU; B300 keeps all 8 (124 KiB per token)
    assert fit["a100x8"]["kv_bytes_per_token"] == 124 * 1024 // 8
    assert fit["b300x1"]["kv_bytes_per_token"] == 124 * 1024
    # B300: 214.3 + 21.3 (one 180000-token fp8 sequence) + 4 <= 268.2 x 0.92 — only ~7 GiB spare
    assert fit["b300x1"]["needed_gib"] == pytest.approx(239.6, abs=0.1) and fit["b300x1"]["spare_gib"] < 10
    assert fit["b300x1"]["layout_vram_gb"] < fit["b300x1"]["chain_vram_per_instance_gb"]  # 288 GB < 320 GB
    assert main(["hw", "--profiles-only"]) == 0
    text = capsys.readouterr().out
    assert all(n in text for n in fit)
