"""The window's energy in real runs, with the fake NVML module in place of pynvml (this machine
has no GPU): `validate` of a node on loopback (this host's GPUs: the whole host, or those
--nvml names), an engine in this process (`run`'s throughput), a remote node (never this host's
figures), a fleet (nodes side by side: none), and Ctrl-C in the middle of the window (the
sampler thread ends with the run). The node is the reference PoC server over the tiny MiniMax-M2
on loopback; the figures are checked against the fake's script."""

from __future__ import annotations

import json
import sys
import threading

import pytest
from fake_nvml import FakeNVML, Script, THERMAL

from mlvalidate import interrupts
from mlvalidate.artifacts import load_reference, resolve_stat_test
from mlvalidate.cli import main
from mlvalidate.errors import Interrupted
from mlvalidate.server import make_server
from tiny_nodes import MODEL, honest_engine, small_reference

H100 = "NVIDIA H100 80GB HBM3"
WATTS = 300.0


@pytest.fixture(scope="module")
def engine(tiny_minimax_fp8):
    return honest_engine(tiny_minimax_fp8)


@pytest.fixture(scope="module")
def node(engine, tmp_path_factory):
    ref = small_reference(engine, tmp_path_factory.mktemp("ref"))
    server = make_server(engine, MODEL)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.url, ref
    server.shutdown()
    server.server_close()


@pytest.fixture
def host_nvml(monkeypatch):
    """This host's NVML: 4 H100s at 300 W each, GPU 2 thermally throttled throughout."""
    import mlvalidate.server as srv

    monkeypatch.setattr(srv, "CALLBACK_INTERVAL_SEC", 0.0)
    nv = FakeNVML(H100, 4, 81559, scripts={i: Script(power_w=[(0, WATTS)], reasons=[(0, THERMAL if i == 2 else 0)])
                                           for i in range(4)})
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    return nv


THROUGHPUT = ["--warmup-seconds", "0.5", "--measure-seconds", "2", "--sample-interval", "0.5",
              "--throughput-batch-size", "8"]


def _validate(url, ref, out, *extra) -> tuple[dict, str]:
    rc = main(["validate", "--url", url, "--reference", str(ref), "--batch-size", "8", "--out", str(out),
               *THROUGHPUT, *extra])
    assert rc == 0
    return json.loads((out / "report.json").read_text()), (out / "report.txt").read_text()


def _consistent(e: dict, tp: dict, n_gpus: int) -> None:
    """The figures are the window's own: energy the GPUs' sum, nonces the steady rate's count over
    the window, J/nonce their ratio; the average power the fake's 300 W per GPU, within what the
    gap between the meter's timestamp and the fake's own clock read can move it."""
    assert e["measured"] and e["method"] == "energy counter" and len(e["per_gpu"]) == n_gpus
    assert e["energy_j"] == pytest.approx(sum(g["energy_j"] for g in e["per_gpu"]), abs=0.01)
    rate = tp["summary"]["steady_nonces_per_second"]
    assert e["nonces"] == pytest.approx(rate * e["window_s"], rel=1e-3, abs=0.1)
    assert e["joules_per_nonce"] == pytest.approx(e["energy_j"] / e["nonces"], rel=1e-3)
    assert WATTS / 2 < e["average_power_w_per_gpu"] < WATTS * 2
    assert e["window_s"] == pytest.approx(tp["summary"]["window_s"], abs=0.5)  # the rate's window


def test_validate_of_a_loopback_node_measures_this_hosts_gpus_and_flags_throttling(node, host_nvml, tmp_path):
    url, ref = node
    report, text = _validate(url, ref, tmp_path / "b")
    tp = report["throughput_phase"]
    e = tp["energy"]
    _consistent(e, tp, 4)
    assert e["source"].startswith("this host: NVML (the node answers on loopback") and e["gpus"] == [0, 1, 2, 3]
    assert e["throttled"]["thermal"] and not e["throttled"]["power"]
    assert e["throttled"]["flag"] == "thermal throttling on GPU 2 (100 % of readings)"
    assert e["n_readings"] >= 3 and 0.1 <= e["sample_interval_s"] <= 1.0
    assert host_nvml.refs == 0  # NVML shut down with the window
    line = next(ln for ln in text.splitlines() if ln.startswith("energy "))
    assert f"{e['joules_per_nonce']:.4g} J/nonce" in line and "4 GPUs" in line and "NVML's energy counter" in line
    assert "THROTTLED: thermal throttling on GPU 2" in text


def test_nvml_names_the_nodes_gpus_on_this_host(node, host_nvml, tmp_path):
    url, ref = node
    report, _ = _validate(url, ref, tmp_path / "b", "--nvml", "0,1")
    e = report["throughput_phase"]["energy"]
    _consistent(e, report["throughput_phase"], 2)
    assert e["gpus"] == [0, 1] and e["source"] == "operator: --nvml 0,1 (the node's GPUs on this host)"
    assert not e["throttled"]["thermal"]  # GPU 2, the throttled one, is not the node's
    hw = json.loads((tmp_path / "b" / "environment.json").read_text())["node"]["hardware"]
    assert hw["label"] == f"2× {H100}" and hw["source"] == "this host: NVML (--nvml 0,1)"
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["inputs"]["nvml"] == {"value": "0,1", "source": "cli"}


def test_nvml_none_and_a_bad_list(node, host_nvml, tmp_path, capsys):
    url, ref = node
    report, text = _validate(url, ref, tmp_path / "b", "--nvml", "none")
    assert report["throughput_phase"]["energy"] == {"measured": False, "why": "not asked (--nvml none)"}
    assert "energy        not measured: not asked (--nvml none)" in text
    capsys.readouterr()
    assert main(["validate", "--url", url, "--reference", str(ref), "--nvml", "0,x", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --nvml '0,x' is not a list of GPU indices or UUIDs") and "\n" not in err


def test_a_remote_nodes_window_has_no_energy_and_this_hosts_nvml_is_not_asked(node, host_nvml):
    """The plan decides by the node's URL (nothing but loopback is reachable in the tests): the
    same node measured as a remote one reads no GPU of this host."""
    from mlvalidate.engines.vllm_api import VllmPocApiEngine
    from mlvalidate.pipeline import ThroughputOptions
    from mlvalidate.serving.energy import energy_plan
    from mlvalidate.throughput import throughput_phase

    url, ref_path = node
    ref = load_reference(str(ref_path))
    eng = VllmPocApiEngine(url, MODEL, deadline_s=60, log=lambda m: None)
    plan = energy_plan("http://192.0.2.10:5000", None)
    tp = throughput_phase(eng, ref, resolve_stat_test(ref), None, ThroughputOptions(8, 0.2, 1.0, 0.5),
                          deadline_s=60, log=lambda m: None, energy=plan)
    assert tp.summary.steady_nonces_per_second > 0
    assert tp.energy == {"measured": False, "why": plan.why_not} and "is remote" in plan.why_not
    assert host_nvml.calls == {} and host_nvml.refs == 0


def test_a_fleets_nodes_side_by_side_have_no_energy(node, host_nvml, tmp_path):
    url, ref = node
    rc = main(["fleet", "--url", url, "--reference", str(ref), "--batch-size", "8", *THROUGHPUT,
               "--out", str(tmp_path / "f")])
    assert rc == 0
    bundle = next((tmp_path / "f" / "nodes").iterdir())
    e = json.loads((bundle / "report.json").read_text())["throughput_phase"]["energy"]
    assert e["measured"] is False and e["why"].startswith("a fleet measures its nodes side by side")


def test_an_engine_in_this_process_counts_the_windows_own_nonces(engine, node, host_nvml):
    from mlvalidate.pipeline_inprocess import inprocess_throughput
    from mlvalidate.serving.energy import energy_plan

    ref = load_reference(str(node[1]))
    tp = inprocess_throughput(engine, ref, None, 8, warmup_rounds=0, measure_s=0.5, min_rounds=3,
                              log=lambda m: None, energy=energy_plan(None, "1"))
    e = tp.energy
    assert e["measured"] and e["gpus"] == [1] and e["nonces"] == 8 * tp.summary.n_samples  # every timed round's
    assert e["joules_per_nonce"] == pytest.approx(e["energy_j"] / e["nonces"])
    assert WATTS / 2 < e["average_power_w"] < WATTS * 2 and host_nvml.refs == 0


def _samplers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "mlvalidate-nvml-sampler" and t.is_alive()]


def test_an_interrupt_in_the_window_ends_the_run_and_its_sampler_at_once(node, host_nvml):
    """A worker's token (what Ctrl-C / SIGTERM hand a fleet's workers) lands mid-window: the phase
    ends with Interrupted, the node's loop is stopped and no sampler thread is left."""
    from mlvalidate.engines.vllm_api import VllmPocApiEngine
    from mlvalidate.pipeline import ThroughputOptions
    from mlvalidate.serving.energy import energy_plan
    from mlvalidate.throughput import throughput_phase

    url, ref_path = node
    ref = load_reference(str(ref_path))
    eng = VllmPocApiEngine(url, MODEL, deadline_s=60, log=lambda m: None)
    token, seen = interrupts.Token(), {}

    def worker():
        interrupts.bind(token)
        try:
            throughput_phase(eng, ref, resolve_stat_test(ref), None, ThroughputOptions(8, 0.2, 600.0, 10.0),
                             deadline_s=60, log=lambda m: None, energy=energy_plan(url, None))
        except BaseException as e:  # noqa: BLE001 — what the worker ended with
            seen["error"] = e

    t = threading.Thread(target=worker)
    t.start()
    waited = threading.Event()
    for _ in range(1200):  # until the window's sampler reads (60 s of room on a busy machine)
        if host_nvml.calls.get("energy", 0) >= 8 and _samplers():
            break
        waited.wait(0.05)
    assert _samplers(), "the window never started"
    token.request("SIGTERM")
    t.join(60)  # the phase's own bound: its stop gets STOP_GRACE_S
    assert not t.is_alive() and isinstance(seen.get("error"), Interrupted)
    assert not _samplers() and host_nvml.refs == 0
