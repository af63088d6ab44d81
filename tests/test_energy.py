"""Energy, power and throttling over the measuring window (serving/energy.py), against the fake
NVML module (tests/fake_nvml.py: scripted energy counter, power, clocks, temperature and
clock-event reasons, on a clock the test moves by hand, so every figure is exact): the counter's
two ends, its wrap past 2^64, a driver reload, a GPU without the counter (power integrated, and
said so), throttle reasons named and flagged, whose GPUs are measured (in process, loopback,
--nvml, a remote node: none), and the sampler thread that never outlives its window."""

from __future__ import annotations

import threading

import pynvml
import pytest
from fake_nvml import POWER_CAP, THERMAL, FakeNVML, Script

from mlvalidate.errors import MlvalidateError
from mlvalidate.serving.energy import (
    REASON_KINDS,
    EnergyPlan,
    WindowMeter,
    energy_plan,
    parse_nvml_option,
    reason_bits,
)

H100 = "NVIDIA H100 80GB HBM3"
ALL = EnergyPlan(None, "this host: NVML (test)")


class Clock:
    """A clock the test moves: the fake NVML and the meter read the same one."""

    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def window(nvml: FakeNVML, clock: Clock, *, start: float, end: float, every: float = 0.5, plan=ALL) -> WindowMeter:
    """A window from `start` to `end` (seconds on the fake's clock) read every `every` s, the
    sampler thread idle (its interval is an hour: the test takes the readings itself)."""
    m = WindowMeter(plan, nvml=nvml, clock=clock, interval_s=3600)
    clock.t = nvml.t0 + start
    m.begin()
    while clock.t + every < nvml.t0 + end - 1e-9:
        clock.t += every
        m.sample()
    clock.t = nvml.t0 + end
    m.end()
    return m


def fake(count: int, clock: Clock, **scripts) -> FakeNVML:
    return FakeNVML(H100, count, 81559, clock=clock, scripts={int(k[1:]): v for k, v in scripts.items()})


def test_the_counter_at_both_ends_gives_joules_per_nonce_and_average_power():
    clock = Clock()
    nv = fake(4, clock, **{f"g{i}": Script(power_w=[(0, 300.0 + 100 * i)]) for i in range(4)})
    e = window(nv, clock, start=10, end=20).result(rate=100.0)
    assert e["measured"] and e["method"] == "energy counter" and e["method_notes"] == []
    assert e["window_s"] == 10 and e["gpus"] == [0, 1, 2, 3]
    assert [g["energy_j"] for g in e["per_gpu"]] == [3000, 4000, 5000, 6000]
    assert e["energy_j"] == 18000 and e["nonces"] == 1000  # 100 nonces/s over the 10 s window
    assert e["joules_per_nonce"] == pytest.approx(18.0) and e["nonces_per_kwh"] == pytest.approx(3.6e6 / 18)
    assert e["average_power_w"] == 1800 and e["average_power_w_per_gpu"] == 450
    assert e["per_gpu"][3]["power_w"] == {"min": 600, "median": 600, "max": 600}
    assert e["per_gpu"][0]["sm_clock_mhz"]["median"] == 1755 and e["per_gpu"][0]["temperature_c"]["max"] == 41
    assert e["throttled"] == {"thermal": False, "power": False, "flag": None}
    assert e["n_readings"] == 21 and len(e["trace"]["t_s"]) == 21 and e["trace"]["power_w"]["2"][0] == 500
    assert not nv.live  # NVML shut down with the window


def test_a_counter_that_wraps_past_2_to_the_64_still_counts():
    clock = Clock()
    start = 2**64 - 1_000_000  # 1 kJ before the unsigned 64-bit counter wraps; 3 kJ pass in the window
    nv = fake(1, clock, g0=Script(power_w=[(0, 300.0)], energy_start_mj=start - 300 * 10 * 1000))
    m = window(nv, clock, start=10, end=20)
    first, last = m.readings[0][0]["energy_mj"], m.readings[-1][0]["energy_mj"]
    assert last < first  # it did wrap
    e = m.result(rate=50.0)
    assert e["method"] == "energy counter" and e["energy_j"] == 3000 and e["joules_per_nonce"] == pytest.approx(6.0)


def test_a_gpu_without_the_energy_counter_integrates_its_power_and_says_so():
    clock = Clock()
    steps = [(0, 200.0), (15, 400.0)]  # 200 W, then 400 W from the window's middle
    nv = fake(2, clock, g0=Script(power_w=steps), g1=Script(power_w=steps, energy_counter=False))
    e = window(nv, clock, start=10, end=20).result(rate=10.0)
    g0, g1 = e["per_gpu"]
    assert g0["method"] == "energy counter" and g0["energy_j"] == 3000  # exact
    # trapezoids over readings 0.5 s apart: exact but for the one that spans the step (+50 J)
    assert g1["method"] == "power samples" and g1["energy_j"] == 3050
    assert "NVMLError_NotSupported" in g1["why"] and "power readings integrated" in g1["why"]
    assert e["method"] == "energy counter (GPU 0); power samples (GPU 1)"
    assert e["method_notes"] == [f"GPU 1: {g1['why']}"]
    assert e["energy_j"] == 6050 and e["joules_per_nonce"] == pytest.approx(6050 / 100)


def test_every_gpu_without_the_counter_is_power_samples_alone():
    clock = Clock()
    nv = fake(2, clock, g0=Script(power_w=[(0, 250.0)], energy_counter=False),
              g1=Script(power_w=[(0, 250.0)], energy_counter=False))
    e = window(nv, clock, start=0, end=8).result(rate=20.0)
    assert e["method"] == "power samples" and e["energy_j"] == 4000 and e["average_power_w_per_gpu"] == 250


def test_a_driver_reload_in_the_window_is_not_taken_for_energy():
    clock = Clock()
    nv = fake(1, clock, g0=Script(power_w=[(0, 300.0)], reload_at_s=14.2))
    e = window(nv, clock, start=10, end=20).result(rate=10.0)
    g = e["per_gpu"][0]
    assert g["method"] == "power samples" and g["energy_j"] == 3000 and "reset" in g["why"]


def test_no_rate_or_no_energy_gives_no_joules_per_nonce_and_says_why():
    clock = Clock()
    e = window(fake(1, clock), clock, start=0, end=4).result(rate=None)
    assert e["energy_j"] == pytest.approx(4 * 113.456) and e["joules_per_nonce"] is None
    assert e["why"] == "no steady rate: joules per nonce cannot be computed"
    idle = window(fake(1, clock, g0=Script(power_w=[(0, 0.0)])), clock, start=0, end=4).result(rate=5.0)
    assert idle["joules_per_nonce"] is None and idle["why"] == "no energy counted over the window (0 J)"


def test_a_gpu_with_neither_counter_nor_power_gives_no_figure_rather_than_a_partial_one():
    clock = Clock()
    nv = FakeNVML(H100, 2, 81559, clock=clock, power=False, scripts={1: Script(energy_counter=False)})
    e = window(nv, clock, start=0, end=5).result(rate=10.0)
    assert e["per_gpu"][0]["energy_j"] is not None and e["per_gpu"][1]["energy_j"] is None
    assert e["joules_per_nonce"] is None and e["energy_j"] is None and e["why"] == "no energy figure for GPU 1"


def test_throttle_reasons_are_named_shared_and_flagged_thermal_apart_from_power():
    clock = Clock()
    idle = pynvml.nvmlClocksEventReasonGpuIdle
    nv = fake(3, clock, g0=Script(reasons=[(0, POWER_CAP)]),
              g1=Script(reasons=[(0, 0), (15, pynvml.nvmlClocksEventReasonHwThermalSlowdown)]),
              g2=Script(reasons=[(0, idle | 1 << 40)]))
    e = window(nv, clock, start=10, end=20).result(rate=10.0)
    g0, g1, g2 = e["per_gpu"]
    assert g0["reasons"] == {"SwPowerCap": 1.0} and g0["power"] and not g0["thermal"]
    assert g1["reasons"] == {"HwThermalSlowdown": round(11 / 21, 4)} and g1["thermal"] and not g1["power"]
    assert g2["reasons"] == {"GpuIdle": 1.0, "bit 0x10000000000": 1.0} and not (g2["thermal"] or g2["power"])
    t = e["throttled"]
    assert t["thermal"] and t["power"]
    assert t["flag"] == "thermal throttling on GPU 1 (52 % of readings); power capping on GPU 0 (100 % of readings)"


def test_a_driver_without_the_clocks_event_reasons_is_read_through_the_throttle_reasons():
    clock = Clock()
    nv = FakeNVML(H100, 1, 81559, clock=clock, event_reasons=False, scripts={0: Script(reasons=[(0, THERMAL)])})
    e = window(nv, clock, start=0, end=3).result(rate=10.0)
    assert e["per_gpu"][0]["reasons"] == {"SwThermalSlowdown": 1.0, "HwThermalSlowdown": 1.0}
    assert e["throttled"]["thermal"]


def test_the_reason_names_are_nvidia_ml_pys_bits():
    bits = reason_bits(pynvml)
    assert bits["SwThermalSlowdown"] == 0x20 and bits["HwThermalSlowdown"] == 0x40 and bits["SwPowerCap"] == 0x4
    assert bits["HwPowerBrakeSlowdown"] == 0x80 and bits["HwSlowdown"] == 0x8 and bits["GpuIdle"] == 0x1
    assert set(bits) <= set(REASON_KINDS) and len(set(bits.values())) == len(bits)


# ---- whose GPUs --------------------------------------------------------------------------------
def test_a_remote_node_is_never_measured_with_this_hosts_gpus():
    plan = energy_plan("http://192.0.2.10:5000", None)
    assert plan.gpus is None and plan.source is None
    assert plan.why_not.startswith("the node at http://192.0.2.10:5000 is remote: this host's NVML does not see")
    clock = Clock()
    nv = fake(4, clock)
    m = WindowMeter(plan, nvml=nv, clock=clock)
    m.begin()
    m.end()
    m.close()
    assert m.result(rate=10.0) == {"measured": False, "why": plan.why_not}
    assert nv.calls == {} and nv.refs == 0  # this host's NVML was not even asked


def test_in_process_loopback_and_the_operators_word():
    assert energy_plan(None, None).source == "this host: NVML (the engine runs in this process)"
    assert energy_plan("http://127.0.0.1:5000", None).source.startswith("this host: NVML (the node answers on loopback")
    assert energy_plan("http://[::1]:5000", None).gpus is None
    remote_named = energy_plan("http://10.0.0.5:5000", "2, 3")
    assert remote_named.gpus == ("2", "3") and remote_named.option == "2,3"
    assert remote_named.source == "operator: --nvml 2,3 (the node's GPUs on this host)"
    assert energy_plan("http://127.0.0.1:5000", "none").why_not == "not asked (--nvml none)"
    assert energy_plan("http://10.0.0.5:5000", "all").gpus is None


def test_cuda_visible_devices_names_an_in_process_engines_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    assert energy_plan(None, None).gpus == ("1", "3")
    assert energy_plan("http://127.0.0.1:1", None).gpus is None  # a node's process, not ours


@pytest.mark.parametrize("text", ["", "0,0", "x", "0;1", "-1", "GPU-", "0,"])
def test_a_bad_nvml_option_is_one_line(text):
    with pytest.raises(MlvalidateError) as e:
        parse_nvml_option(text)
    assert "\n" not in e.value.one_line() and "--nvml 0,1,2,3" in e.value.one_line()


def test_named_gpus_by_index_or_uuid_and_one_that_is_not_there():
    clock = Clock()
    nv = fake(4, clock, **{f"g{i}": Script(power_w=[(0, 100.0 * (i + 1))]) for i in range(4)})
    uuid = nv.nvmlDeviceGetUUID(("handle", 3))
    e = window(nv, clock, start=0, end=2, plan=EnergyPlan(("1", uuid[:12]), "operator: --nvml")).result(rate=1.0)
    assert e["gpus"] == [1, 3] and e["energy_j"] == 2 * (200 + 400)
    nv2 = fake(4, clock)
    gone = window(nv2, clock, start=0, end=2, plan=EnergyPlan(("7",), "operator: --nvml 7")).result(rate=1.0)
    assert gone == {"measured": False, "why": "GPU 7 is not one of the 4 GPU(s) NVML sees here: nothing measured",
                    "source": "operator: --nvml 7"}
    assert nv2.refs == 0


def test_no_nvidia_driver_is_not_measured_with_why():
    nv = FakeNVML("none", 0, 0, init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    m = WindowMeter(ALL, nvml=nv)
    m.begin()
    m.end()
    m.close()
    e = m.result(rate=10.0)
    assert e["measured"] is False
    assert e["why"] == "no NVIDIA driver on this host: no GPU energy to read (NVMLError_LibraryNotFound: NVML Shared " \
        "Library Not Found)"
    broken = FakeNVML(H100, 1, 81559, init_error=pynvml.NVML_ERROR_UNKNOWN)
    m = WindowMeter(ALL, nvml=broken)
    m.begin()
    m.end()
    assert m.result(rate=1.0)["why"].startswith("this host's NVML could not answer (NVMLError_Unknown")


def test_a_window_that_never_ended_has_no_figure():
    clock = Clock()
    nv = fake(1, clock)
    m = WindowMeter(ALL, nvml=nv, clock=clock, interval_s=3600)
    m.begin()
    m.close()  # the phase stopped (Ctrl-C, a node error) before the window's end
    assert m.result(rate=10.0)["why"] == "the window did not end (the phase stopped early)"
    assert nv.refs == 0


# ---- the sampler thread -------------------------------------------------------------------------
def _samplers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "mlvalidate-nvml-sampler" and t.is_alive()]


def test_the_sampler_reads_through_the_window_and_stops_with_it():
    clock = Clock()
    nv = fake(2, clock, g0=Script(power_w=[(0, 300.0)]), g1=Script(power_w=[(0, 300.0)]))
    m = WindowMeter(ALL, nvml=nv, clock=clock, interval_s=0.05)
    clock.t = nv.t0 + 10
    m.begin()
    assert len(_samplers()) == 1
    waited = threading.Event()
    for _ in range(1200):  # the thread's own readings, every 0.05 s (60 s of room on a busy machine)
        if len(m.readings) >= 4:
            break
        waited.wait(0.05)
    assert len(m.readings) >= 4
    clock.t = nv.t0 + 16
    m.end()
    assert not _samplers() and not nv.live
    e = m.result(rate=10.0)
    assert e["method"] == "energy counter" and e["energy_j"] == 2 * 300 * 6 and e["average_power_w_per_gpu"] == 300
    assert e["n_readings"] == len(m.readings) >= 5


def test_close_stops_the_sampler_at_once_when_the_window_is_cut_short():
    nv = fake(1, Clock())
    m = WindowMeter(ALL, nvml=nv, interval_s=0.05)
    m.begin()
    assert len(_samplers()) == 1
    m.close()  # what the throughput phase's finally does on Ctrl-C, SIGTERM or a node error
    assert not _samplers() and nv.refs == 0
