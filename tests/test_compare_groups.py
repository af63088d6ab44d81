"""`compare`'s hardware comparison: runs grouped by the node's hardware (GPU model x count x
profile), each group's median and spread, ranked by nonces/s, per GPU, per kWh and per $
(`--prices`), the published figure beside each group, FAIL runs and unchecked ones apart, unknown
hardware a group of its own that never ranks, the plot of throughput vs energy per nonce, and each
run's energy (or why none) and cost; the page measured in headless Chromium at 1280 x 900.

Bundles are written by write_bundle from synthetic vectors (tests/report_fixtures.py); each
node's energy section is what serving/energy.py makes of a fake NVML over a 60 s window on a
clock the test moves, so every figure below is exact:
  h100-1..3   4x H100 on this host (an engine in process), 600 W each; h100-3 throttled (thermal)
  h100-remote the same hardware by its MLNode's word, remote: no energy
  a100-1..2   8x A100 on this host, 350 W each
  b200-1      2x B200 on this host, 1000 W each, no energy counter (its power integrated)
  a100-cheat  8x A100, fast, FAIL: never ranked
  mystery     a remote node that says nothing of itself: hardware unknown, PASS
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fake_nvml import THERMAL, FakeNVML, Script

import report_fixtures as rf
from mlvalidate.cli import main
from mlvalidate.errors import MlvalidateError
from mlvalidate.report.bundles import VERDICT_COLOR, load_bundles
from mlvalidate.report.cost import Prices, gpu_price, read_prices
from mlvalidate.report.groups import GROUP_COLORS, UNKNOWN_COLOR, hardware_groups, run_figures

CHROMIUM = Path("/usr/bin/chromium")
H100, A100, B200 = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB", "NVIDIA B200"
PRICES = "gpu_hour_usd:\n  H100: 2.49\n  A100 80GB: 1.39\n  B200: 5.99\nkwh_usd: 0.12\n"


def _nvml(name: str, count: int, watts: float, *, counter: bool = True, reasons: int = 0) -> FakeNVML:
    return FakeNVML(name, count, 81559, clock=rf.Clock(), scripts={
        i: Script(power_w=[(0, watts)], energy_counter=counter, reasons=[(0, reasons if i == 1 else 0)])
        for i in range(count)})


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    from mlvalidate.serving.profiles import load_profile

    root = tmp_path_factory.mktemp("groups")
    ref = rf.reference()
    good = rf.noisy(ref, 0.005, 1)
    profs = {p: load_profile(p) for p in ("h100x4", "a100x8", "b200x2")}

    def local(name, gpu, count, watts, prof, per_min, vectors=good, **kw):
        nv = _nvml(gpu, count, watts, **kw)
        return rf.bundle(root, name, ref, vectors, nvml=nv, profile=profs[prof], per_min=per_min,
                         energy=rf.window_energy(nv, per_min))

    out = {
        "h100-1": local("h100-1", H100, 4, 600.0, "h100x4", 2300.0),
        "h100-2": local("h100-2", H100, 4, 600.0, "h100x4", 2400.0),
        "h100-3": local("h100-3", H100, 4, 600.0, "h100x4", 2350.0, reasons=THERMAL),
        "a100-1": local("a100-1", A100, 8, 350.0, "a100x8", 2000.0),
        "a100-2": local("a100-2", A100, 8, 350.0, "a100x8", 2100.0),
        "b200-1": local("b200-1", B200, 2, 1000.0, "b200x2", 2600.0, counter=False),
        "a100-cheat": local("a100-cheat", A100, 8, 350.0, "a100x8", 3000.0, vectors=rf.noisy(ref, 0.3, 2)),
    }
    mlnode = rf.mlnode_answers("http://10.0.0.5:8080", rf.H100_DEVICES, rf.H100_DRIVER)
    remote = {"measured": False, "why": "the node at http://10.0.0.5:5000 is remote: this host's NVML does not see "
                                        "its GPUs (--nvml INDICES when it computes on this host's GPUs)"}
    out["h100-remote"] = rf.bundle(root, "h100-remote", ref, good, url="http://10.0.0.5:5000",
                                   node_facts={"mlnode": mlnode}, profile=profs["h100x4"], per_min=2250.0,
                                   energy=remote, nvml=FakeNVML("NVIDIA GeForce RTX 4090", 1, 24564))
    out["mystery"] = rf.bundle(root, "mystery", ref, good, url="http://10.0.0.9:5000", node_facts={}, per_min=1500.0,
                               energy={**remote, "why": remote["why"].replace("10.0.0.5", "10.0.0.9")})
    return out


def _figures(bundles, prices=None):
    from mlvalidate.serving.profiles import load_profile

    return hardware_groups(run_figures(load_bundles(list(bundles.values()), load_profile), prices))


def test_groups_by_hardware_medians_and_ranks(bundles):
    groups, apart = _figures(bundles)
    labels = [g.label for g in groups]
    assert labels == [f"2× {B200} · b200x2", f"4× {H100} · h100x4", f"8× {A100} · a100x8", "unknown"]
    b200, h100, a100, unknown = groups
    assert [f.run.name for f in h100.runs] == ["h100-1", "h100-2", "h100-3", "h100-remote"]  # the node's word joins
    assert h100.median("rate") == pytest.approx(2325 / 60) and h100.values("rate") == pytest.approx(
        [2300 / 60, 2400 / 60, 2350 / 60, 2250 / 60])
    # joules per nonce: the window's energy over its nonces (600 W x 4 / rate), median over the 3 measured runs
    assert h100.median("joules_per_nonce") == pytest.approx(2400 / (2350 / 60))
    assert b200.median("joules_per_nonce") == pytest.approx(2000 / (2600 / 60))  # its power, integrated
    assert a100.median("per_gpu") == pytest.approx(2050 / 60 / 8)
    ranks = {g.label.split(" · ")[1] if g.known else "unknown": g.ranks for g in groups}
    assert ranks["b200x2"] == {"rate": 1, "per_gpu": 1, "per_kwh": 1, "per_usd": None}  # no prices: no $ rank
    assert ranks["h100x4"] == {"rate": 2, "per_gpu": 2, "per_kwh": 2, "per_usd": None}
    assert ranks["a100x8"] == {"rate": 3, "per_gpu": 3, "per_kwh": 3, "per_usd": None}
    assert ranks["unknown"] == {"rate": None, "per_gpu": None, "per_kwh": None, "per_usd": None}
    assert not unknown.known and [f.run.name for f in unknown.runs] == ["mystery"]
    assert [(f.run.name, why) for f, why in apart] == [("a100-cheat", "FAIL: fraud proven, its speed is no capacity")]
    assert [f.throttled for f in h100.runs] == [False, False, True, False]


def test_prices_rank_by_nonces_per_dollar_with_rental_and_energy_apart(bundles, tmp_path):
    path = tmp_path / "prices.yaml"
    path.write_text(PRICES)
    groups, _ = _figures(bundles, read_prices(path))
    b200, h100, a100, unknown = groups
    rate = 2350 / 60  # h100-3's; the group's medians below are over runs
    f = next(f for f in h100.runs if f.run.name == "h100-3")
    assert f.costs["rental_usd_per_m"] == pytest.approx(2.49 * 4 / (rate * 3600) * 1e6)
    assert f.costs["energy_usd_per_m"] == pytest.approx(2400 / rate * 1e6 / 3.6e6 * 0.12)
    assert f.costs["usd_per_m"] == pytest.approx(f.costs["rental_usd_per_m"] + f.costs["energy_usd_per_m"])
    assert f.costs["per_usd"] == pytest.approx(1e6 / f.costs["usd_per_m"])
    assert f.costs["per_usd_rental"] == pytest.approx(rate * 3600 / (2.49 * 4)) and f.costs["gpu_price_key"] == "H100"
    remote = next(f for f in h100.runs if f.run.name == "h100-remote")
    assert remote.costs["usd_per_m"] is None and remote.costs["why_usd"] == "no energy measured"  # never cheaper
    assert remote.costs["rental_usd_per_m"] is not None
    # H100 rents cheapest per nonce here although the B200 is faster, per GPU and per kWh
    assert (h100.ranks["per_usd"], b200.ranks["per_usd"], a100.ranks["per_usd"]) == (1, 2, 3)
    assert unknown.ranks["per_usd"] is None


@pytest.mark.parametrize("model, want", [(H100, (2.49, "H100")), ("H100", (2.49, "H100")),
                                         (A100, (1.39, "A100 80GB")), ("NVIDIA A100-SXM4-40GB", None),
                                         ("NVIDIA H100 NVL", (3.1, "H100 NVL")), ("H100, A100", None), (None, None)])
def test_a_gpu_model_takes_the_price_whose_words_it_has_the_most_of(model, want):
    prices = Prices("p.yaml", {"H100": 2.49, "A100 80GB": 1.39, "H100 NVL": 3.1})
    usd, key = gpu_price(prices, model)
    assert (usd, key) == want if want else usd is None and key


@pytest.mark.parametrize("text, says", [
    ("gpu_hour_usd: {H100: -1}\n", "`gpu_hour_usd.H100` must be a positive number of $, got '-1'"),
    ("gpu_hour_usd: {H100: .nan}\n", "`gpu_hour_usd.H100` must be a positive number"),
    ("kwh_usd: .inf\n", "`kwh_usd` must be a positive number of $"),
    ("kwh_usd: '0.1'\n", "`kwh_usd` must be a positive number of $, got '0.1'"),
    ("kwh_usd: 1" + "0" * 400 + "\n", "`kwh_usd` must be a positive number of $, got '1000000000"),
    ("gpu_hour_usd: {H100: 0}\n", "`gpu_hour_usd.H100` must be a positive number of $, got '0'"),
    ("gpu_hour_usd: {7: 1.0}\n", "`gpu_hour_usd` key '7' is not a GPU model name"),
    ("gpu_hour_usd: [2.49]\n", "`gpu_hour_usd` must be a mapping"),
    ("gpu_hours_usd: {H100: 2}\n", "unknown key(s) gpu_hours_usd"),
    ("{}\n", "sets no price"),
    ("gpu_hour_usd: {H100: 2\n", "is not valid YAML"),
    ("- 1\n", "is not a YAML mapping"),
])
def test_a_bad_prices_file_is_one_line_and_nothing_is_written(text, says, bundles, tmp_path, capsys):
    path = tmp_path / "prices.yaml"
    path.write_text(text)
    with pytest.raises(MlvalidateError) as e:
        read_prices(path)
    assert says in e.value.one_line() and str(path) in e.value.one_line()
    rc = main(["compare", str(bundles["h100-1"]), "--prices", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and says in err
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def report(bundles, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    prices = out / "prices.yaml"
    prices.write_text(PRICES)
    rc = main(["compare", *map(str, bundles.values()), "--prices", str(prices), "--out", str(out / "report")])
    assert rc == 1  # a FAIL among the runs
    return out / "report"


def _md_rows(md: str, section: str) -> list[list[str]]:
    part = md.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in part.splitlines()
            if ln.startswith("| ") and not ln.startswith("| ---")][1:]


def test_the_report_ranks_groups_with_their_spread_and_published_figure(report):
    md = (report / "report.md").read_text()
    rows = {r[0].split(" (")[0]: r for r in _md_rows(md, "Hardware comparison")}
    h100 = rows[f"4× {H100} · h100x4"]
    assert h100[1] == "4"  # runs
    assert h100[2] == "38.8 (#2 · ±3.2 % of 4; 37.5–40.0)"  # nonces/s: median, rank, half-range over 4 runs, min–max
    assert h100[9] == "2,368/min (median at 98 %)"  # the profile's published figure beside the group
    assert h100[10] == "1 of 4: thermal"  # throttled windows
    assert h100[8].endswith("(#1)")  # nonces/$
    unknown = rows["unknown"]
    assert "hardware unknown" in unknown[0] and "not ranked" in unknown[0] and "not ranked" in unknown[2]
    assert rows[f"2× {B200} · b200x2"][2].startswith("43.3 (#1")
    assert "* not ranked: **a100-cheat** — FAIL: fraud proven, its speed is no capacity" in md
    assert "Prices " in md and "$0.12/kWh" in md


def test_each_runs_energy_and_cost_or_why_none(report):
    md = (report / "report.md").read_text()
    rows = {r[0]: r for r in _md_rows(md, "Energy and cost per run")}
    h3 = rows["h100-3"]
    assert h3[1] == "PASS" and h3[4] == f"{2400 / (2350 / 60):.1f} (600.0 W/GPU)"  # J/nonce, W per GPU
    rental, energy = 2.49 * 4 / (2350 / 60 * 3600) * 1e6, 2400 / (2350 / 60) / 3.6 * 0.12
    assert h3[7] == f"${rental + energy:.2f} (rental ${rental:.2f}; energy ${energy:.2f})"
    assert h3[8] == f"{1e6 / (rental + energy):,.0f}" and h3[5] == f"{3.6e6 / (2400 / (2350 / 60)):,.0f}"
    assert "NVML's energy counter [this host: NVML (test)]" in h3[9]
    assert "THROTTLED: thermal throttling on GPU 1 (100 % of readings)" in h3[9]
    assert "power readings integrated" in rows["b200-1"][9]
    remote = rows["h100-remote"]
    assert remote[4] == "n/a" and remote[9].startswith("not measured: the node at http://10.0.0.5:5000 is remote")
    assert remote[7].startswith("n/a (rental $") and remote[9].endswith("($ n/a: no energy measured)")
    assert rows["a100-cheat"][1] == "FAIL"  # listed with its figures, never ranked


def test_the_plot_colours_each_group_and_marks_fail_runs_in_their_verdict_colour(bundles):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mlvalidate.report.group_plot import energy_figure

    groups, apart = _figures(bundles)
    fig, ax = energy_figure(plt, groups, apart)
    try:
        colors = {}
        for coll in ax.collections:
            label = coll.get_label()
            rgba = coll.get_facecolor()[0] if len(coll.get_facecolor()) else coll.get_edgecolor()[0]
            colors.setdefault(label, "#" + "".join(f"{round(255 * x):02x}" for x in rgba[:3]))
        known = [g for g in groups if g.known]
        for g in known:
            assert colors[g.label] == g.color
        assert len({g.color for g in known}) == len(known)
        assert colors["not ranked: FAIL"] == VERDICT_COLOR["FAIL"]
        assert not (set(GROUP_COLORS) | {UNKNOWN_COLOR}) & set(VERDICT_COLOR.values())
        n_points = sum(len(c.get_offsets()) for c in ax.collections)
        assert n_points == 7  # every run with energy: h100 x3, a100 x2, b200, the cheater (x); the others have none
        pub = [ln for ln in ax.get_lines() if ln.get_label().startswith("published")]
        assert {ln.get_label() for ln in pub} >= {f"published: 4× {H100} · h100x4 (2,368/min)"}
        fig.canvas.draw()
        assert ax.get_legend().get_window_extent().y1 <= ax.get_window_extent().y0  # below the axes
    finally:
        plt.close(fig)


@pytest.mark.parametrize("value", ["lots", 10**400, float("nan"), [1]])
def test_an_edited_energy_section_is_one_line(value, bundles, tmp_path, capsys):
    import shutil

    d = shutil.copytree(bundles["h100-1"], tmp_path / "edited")
    doc = json.loads((d / "report.json").read_text())
    doc["throughput_phase"]["energy"]["joules_per_nonce"] = value
    (d / "report.json").write_text(json.dumps(doc))
    rc = main(["compare", str(d), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "throughput_phase.energy.joules_per_nonce must be a number" in err and "\n" not in err


def test_with_no_run_to_rank_the_report_says_so(bundles, tmp_path):
    from mlvalidate.report.compare import write_compare
    from mlvalidate.report.groups import NO_GROUP

    paths = write_compare([bundles["a100-cheat"]], tmp_path)
    md, page = paths["markdown"].read_text(), paths["html"].read_text()
    assert NO_GROUP in md and NO_GROUP in page and "not ranked: **a100-cheat**" in md
    assert paths["exit_code"] == 1


def test_an_older_bundle_without_energy_says_not_recorded(bundles, tmp_path):
    import shutil

    d = shutil.copytree(bundles["a100-1"], tmp_path / "older")
    doc = json.loads((d / "report.json").read_text())
    del doc["throughput_phase"]["energy"]
    (d / "report.json").write_text(json.dumps(doc))
    figs = run_figures(load_bundles([d]), None)
    assert figs[0].energy == {"why": "not recorded (a bundle from before energy was measured)"}


@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless render needs Debian's chromium (/usr/bin/chromium)")
def test_the_hardware_sections_at_1280_by_900_in_chromium(report, tmp_path):
    from render_check import check_page_at_1280

    lay = check_page_at_1280(report / "report.html", tmp_path, "compare-groups")
    tables = [t for t in lay["tables"] if t["cls"] == "figures"]
    assert len(tables) == 2 and all(t["right"] <= 1280 for t in tables)
    plot = [i for i in lay["images"] if i["alt"].startswith("throughput vs energy per nonce")]
    assert plot and plot[0]["natural"][0] > 1000
    assert {v["text"] for v in lay["verdicts"]} >= {"PASS", "FAIL"}
    page = (report / "report.html").read_text()
    assert re.search(r'<span class="sub tok">#1 · ', page)  # a rank line, kept whole (render_check: not broken)
