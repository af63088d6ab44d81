"""The fuzz of tests/test_fuzz.py over what issue 26 added to what `compare` reads: a run bundle's
energy section (report.json's throughput_phase.energy, as serving/energy.py writes it over a
fake NVML) and the --prices file, each broken in one to three places. The invariant is the
README's: exit 0, 1 or 2 by the runs' verdicts, at most one `error: ...` line, never a traceback
or "internal error"."""

from __future__ import annotations

import json

from fake_nvml import THERMAL, FakeNVML, Script
from hypothesis import given

import report_fixtures as rf
from test_fuzz import broken, cli, dumps, fuzz, mutations, paths_of

import pytest


@pytest.fixture(scope="module")
def energy_bundle(tmp_path_factory):
    from mlvalidate.serving.profiles import load_profile

    ref = rf.reference()
    nv = FakeNVML("NVIDIA H100 80GB HBM3", 2, 81559, clock=rf.Clock(),
                  scripts={0: Script(power_w=[(0, 600.0)], reasons=[(0, THERMAL)]),
                           1: Script(power_w=[(0, 600.0)], energy_counter=False)})
    return rf.bundle(tmp_path_factory.mktemp("energy"), "h100", ref, rf.noisy(ref, 0.005, 1), nvml=nv,
                     profile=load_profile("h100x4"), per_min=2300.0, energy=rf.window_energy(nv, 2300.0))


PRICES = {"gpu_hour_usd": {"H100": 2.49, "A100 80GB": 1.39}, "kwh_usd": 0.12}


@fuzz(30)
@given(muts=mutations([("throughput_phase", "energy", *p) for p in paths_of({"x": 0}, 1)] + [
    ("throughput_phase", "energy", k) for k in ("measured", "why", "method", "window_s", "energy_j", "nonces",
                                                "joules_per_nonce", "nonces_per_kwh", "average_power_w",
                                                "average_power_w_per_gpu", "gpus", "method_notes", "throttled",
                                                "per_gpu", "source")] + [
    ("throughput_phase", "energy", "throttled", k) for k in ("thermal", "power", "flag")]))
def test_energy_sections(muts, energy_bundle, tmp_path_factory, capsys):
    base = json.loads((energy_bundle / "report.json").read_text())
    bad = tmp_path_factory.mktemp("cmp") / "bad"
    bad.mkdir()
    for f in ("config.json", "vectors.json", "environment.json", "report.txt"):
        (bad / f).write_bytes((energy_bundle / f).read_bytes())
    (bad / "report.json").write_bytes(dumps(broken(base, muts)))
    rc, _, _ = cli(capsys, "compare", energy_bundle, bad, "--out", bad.parent / "report")
    assert rc in (0, 2)


@fuzz(30)
@given(muts=mutations(paths_of(PRICES, 3)))
def test_prices_files(muts, energy_bundle, tmp_path_factory, capsys):
    path = tmp_path_factory.mktemp("prices") / "prices.yaml"
    doc = broken(PRICES, muts)
    path.write_bytes(dumps(doc))  # JSON is YAML
    rc, _, _ = cli(capsys, "compare", energy_bundle, "--prices", path, "--out", path.parent / "report")
    assert rc in (0, 2)
