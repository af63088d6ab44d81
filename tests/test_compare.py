"""`mlvalidate compare`: tables, the node's hardware from its own record (never this host's for
a remote node), the cross-run distance matrix, a self-contained HTML page laid out for a 1280 x
900 window (measured in headless Chromium where it is installed), exit codes by the runs'
verdicts, and one-line errors on bad input.

Bundles are written by write_bundle from synthetic vectors (tests/report_fixtures.py, no model
run), while this host's NVML says it has one RTX 4090 (a FakeNVML), so that a report which
took the harness machine's hardware for a node's would show it:
  refcopy  the reference's own vectors, an engine in this process      -> PASS, this host's GPU
  honest   reference + small noise, a remote node whose MLNode's GPU routes say 4x H100 -> PASS
  cheater  reference + large noise, a remote node without GPU routes, --gpus "H100 x4", profile
           h100x4, a throughput phase                                  -> FAIL
  dead     a remote node that never answered                           -> ERROR, hardware unknown
"""

from __future__ import annotations

import json
import re
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest

import report_fixtures as rf
from fake_nvml import FakeNVML
from mlvalidate.cli import main
from mlvalidate.report.bundles import NO_PLOTS, VERDICT_COLOR, distance_matrix, load_bundles
from mlvalidate.report.compare import write_compare

N = rf.N
CHROMIUM = Path("/usr/bin/chromium")
HOST_GPU = "NVIDIA GeForce RTX 4090"


def _bundle(out: Path, name: str, ref, vectors, **kw) -> Path:
    return rf.bundle(out, name, ref, vectors, nvml=FakeNVML(HOST_GPU, 1, 24564), **kw)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    from mlvalidate.serving.profiles import load_profile

    root = tmp_path_factory.mktemp("bundles")
    ref = rf.reference()
    prof = load_profile("h100x4")
    mlnode = rf.mlnode_answers("http://10.0.0.5:8080", rf.H100_DEVICES, rf.H100_DRIVER)
    return {
        "refcopy": _bundle(root, "refcopy", ref, ref.vectors),
        "honest": _bundle(root, "honest", ref, rf.noisy(ref, 0.005, 1), url="http://10.0.0.5:5000",
                          node_facts={"mlnode": mlnode}),
        "cheater": _bundle(root, "cheater", ref, rf.noisy(ref, 0.3, 2), url="http://10.0.0.6:5000", node_facts={},
                           gpus="H100 x4", profile=prof, per_min=1184.0),
        "dead": _bundle(root, "dead", ref, ref.vectors, url="http://10.0.0.7:5000", keep=0,
                        error="validate: POST http://10.0.0.7:5000/api/v1/pow/generate failed after 9 attempt(s) "
                        "within the deadline: cannot connect: [Errno 111] Connection refused (for 30 s) — is the "
                        "node running, and are the URL's host and port right?"),
        "profile": prof,
    }


@pytest.fixture(scope="module")
def report(bundles, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    rc = main(["compare", *(str(bundles[k]) for k in ("refcopy", "honest", "cheater", "dead")), "--out", str(out)])
    assert rc == 1  # a FAIL among the runs
    return out


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _md_row(md: str, name: str) -> list[str]:
    line = next(ln for ln in md.splitlines() if ln.startswith(f"| {name} |"))
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_verdict_table(report, bundles):
    md = (report / "report.md").read_text()
    honest, cheater, refcopy = _md_row(md, "honest"), _md_row(md, "cheater"), _md_row(md, "refcopy")
    assert refcopy[3] == "PASS" and refcopy[4] == "0 / 40"
    assert honest[3].startswith("PASS")
    assert cheater[3] == "FAIL"
    n_mis = json.loads((bundles["cheater"] / "report.json").read_text())["n_mismatch"]
    assert cheater[4] == f"{n_mis} / 40" and n_mis > 30
    # the throughput run: profile, steady figure, % of the published 2368/min, % of roofline
    prof = bundles["profile"]
    assert cheater[1] == "h100x4" and cheater[6] == "1,184.0"
    assert cheater[7] == f"{100 * 1184 / prof.throughput_reference['nonces_per_min']:.0f} %" == "50 %"
    roof = prof.roofline_nonces_per_min_per_gpu() * prof.gpu_count
    assert cheater[8] == f"{100 * 1184 / roof:.1f} %"
    assert honest[1] == "n/a" and honest[6:] == ["n/a", "n/a", "n/a"]
    assert "## Throughput per profile" in md and "### h100x4" in md


def test_each_run_shows_its_own_nodes_hardware_never_this_hosts(report, bundles):
    """The harness machine (one RTX 4090 here) is the node only for the engine that ran in this
    process; each remote node shows what it said itself, what the operator declared, or unknown."""
    md = (report / "report.md").read_text()
    hw = {k: _md_row(md, k)[2] for k in ("refcopy", "honest", "cheater", "dead")}
    assert hw == {"refcopy": f"1× {HOST_GPU} [this host]", "honest": "4× NVIDIA H100 80GB HBM3 [the node]",
                  "cheater": "4× H100 [--gpus]", "dead": "unknown [the node never answered]"}
    assert _md_row(md, "dead")[3] == "ERROR"
    for k in ("honest", "cheater", "dead"):  # every bundle keeps the harness machine apart, under "harness"
        env = json.loads((bundles[k] / "environment.json").read_text())
        assert env["harness"]["gpu_model"] == HOST_GPU and env["node"]["where"] == "remote"
        assert HOST_GPU not in json.dumps(env["node"])
    node = json.loads((bundles["honest"] / "environment.json").read_text())["node"]["hardware"]
    assert node["sources"]["gpu_model"] == "node: MLNode GET /api/v1/gpu/devices"
    assert node["driver_version"] == "570.124.06" and node["sources"]["driver_version"].endswith("/api/v1/gpu/driver")
    cheat = json.loads((bundles["cheater"] / "environment.json").read_text())["node"]["hardware"]
    assert cheat["source"] == "operator: --gpus" and cheat["profile"] == "h100x4" and cheat["layout"] == "TP 4 x PP 1"
    assert cheat["notes"] == []  # the profile's 4x H100 agrees with --gpus


def test_an_older_bundle_is_the_harness_machine_only_where_the_node_ran_on_it(bundles, tmp_path):
    """Bundles written before the node was recorded have the harness's record at the top level:
    their hardware is the node's only for an engine in process or a loopback node (labelled so)."""
    flat = {"hostname": "h", "gpu_model": "NVIDIA A100-SXM4-80GB", "gpu_count": 8, "cuda_available": True,
            "nvml": {"available": True}, "profile": "a100x8"}
    olds = {}
    for name, engine in (("old-remote", {"engine": "vllm-api", "url": "http://10.1.1.1:5000"}),
                         ("old-inprocess", {"engine": "vllm-inprocess"}),
                         ("old-loopback", {"engine": "vllm-api", "url": "http://127.0.0.1:5000"})):
        d = shutil.copytree(bundles["honest"], tmp_path / name)
        (d / "environment.json").write_text(json.dumps({**flat, "engine": engine}))
        olds[name] = d
    runs = {r.path.name: r for r in load_bundles(list(olds.values()))}
    assert not runs["old-remote"].hardware().known
    assert "older bundle" in runs["old-remote"].hardware().why and "10.1.1.1" in runs["old-remote"].hardware().why
    for k in ("old-inprocess", "old-loopback"):
        hw = runs[k].hardware()
        assert hw.label() == "8× NVIDIA A100-SXM4-80GB" and hw.source.startswith("older bundle")
    assert runs["old-remote"].profile_name == "a100x8"  # read from the old top level


def test_distance_matrix(bundles):
    runs = load_bundles([bundles["refcopy"], bundles["honest"], bundles["cheater"]])
    m = distance_matrix(runs)
    for i in range(3):
        med, n, why = m[i][i]
        assert med == 0.0 and n == N and why is None
    ref_honest, ref_cheat, honest_cheat = m[0][1][0], m[0][2][0], m[1][2][0]
    assert m[1][0] == m[0][1]
    assert honest_cheat > 10 * ref_honest and ref_cheat > 10 * ref_honest
    assert ref_honest < 0.2 < honest_cheat


def test_matrix_in_report(report):
    md = (report / "report.md").read_text().split("## Distance matrix", 1)[1]
    row = _md_row(md, "refcopy")
    assert row[1] == "0 (40)"  # refcopy vs itself, 40 shared nonces


def test_html_is_self_contained(report):
    page = (report / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<link" not in page.lower() and "<script" not in page.lower()
    for name in ("refcopy", "honest", "cheater", "FAIL", "Distance matrix"):
        assert name in page
    if not _has_matplotlib():
        assert NO_PLOTS in page
        pytest.skip("matplotlib not importable: embedded images not checked (install the `plots` extra)")
    imgs = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(imgs) == 2  # ONE overlaid ECDF of every run + one throughput chart
    assert all(src.startswith("data:image/png;base64,") for src in imgs)
    assert 'alt="distance distributions' in page and 'alt="throughput per run"' in page


def test_without_matplotlib_tables_only(bundles, tmp_path, monkeypatch):
    import mlvalidate.report.compare as compare

    monkeypatch.setattr(compare, "pyplot", lambda: None)
    paths = write_compare([bundles["honest"], bundles["cheater"]], tmp_path)
    md, page = paths["markdown"].read_text(), paths["html"].read_text()
    assert NO_PLOTS in md and NO_PLOTS in page
    assert "<img" not in page and "threshold" in page and "◀ threshold" in md
    assert _md_row(md, "cheater")[3] == "FAIL"
    assert not (tmp_path / "plots").exists()


@pytest.mark.parametrize("case", ["missing_dir", "no_report", "bad_schema", "bad_json"])
def test_bad_input_exits_2(case, bundles, tmp_path, capsys):
    d = tmp_path / "run"
    if case != "missing_dir":
        d.mkdir()
    if case == "bad_schema":
        (d / "report.json").write_text(json.dumps({"schema": "other/9", "verdict": "PASS"}))
    if case == "bad_json":
        (d / "report.json").write_text("{not json")
    rc = main(["compare", str(bundles["honest"]), str(d), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error: ") and "\n" not in err and str(d) in err
    assert not (tmp_path / "out" / "report.html").exists()


def _png_stats(data: bytes) -> tuple[int, int, int]:
    """(width, height, distinct byte values in the decoded scanlines): enough to tell a blank page."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, w, h = 8, b"", 0, 0
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            w, h = int.from_bytes(body[:4], "big"), int.from_bytes(body[4:8], "big")
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return w, h, len(set(zlib.decompress(idat)))


@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless render needs Debian's chromium (/usr/bin/chromium)")
def test_html_at_1280_by_900_in_chromium(report, tmp_path):
    from render_check import check_page_at_1280

    lay = check_page_at_1280(report / "report.html", tmp_path, "compare")
    assert {v["text"] for v in lay["verdicts"]} >= {"PASS", "FAIL", "ERROR"}
    data = (Path(__import__("os").environ.get("MLVALIDATE_SHOTS") or tmp_path) / "compare-1280x900.png").read_bytes()
    w, h, distinct = _png_stats(data)
    assert w == 1280 and distinct > 16, "the page rendered blank"


def test_ecdf_plot_verdict_colours_axis_near_the_data_and_a_legend_that_covers_no_curve(report, bundles):
    pytest.importorskip("matplotlib")
    from mlvalidate.report.plots import ecdf_figure, pyplot

    plt = pyplot()
    runs = load_bundles([bundles[k] for k in ("refcopy", "honest", "cheater", "dead")])
    fig, ax = ecdf_figure(plt, runs)
    try:
        lines = {ln.get_label().split(" — ")[0]: ln for ln in ax.get_lines()}
        for r in runs:
            assert lines[r.name].get_color() == VERDICT_COLOR[r.verdict], r.name  # one colour per verdict
        gate = lines["gate 0.2 (L2 threshold)"]
        assert gate.get_color() not in VERDICT_COLOR.values()
        smallest = min(float(np.min(r.distances()[r.distances() > 0])) for r in runs if (r.distances() > 0).any())
        x0 = ax.get_xlim()[0]
        assert smallest / 5 < x0 < smallest  # the axis starts at the data, not decades before it
        fig.canvas.draw()
        legend, axes = ax.get_legend().get_window_extent(), ax.get_window_extent()
        assert legend.y1 <= axes.y0  # below the axes: it covers no curve
        assert not any(t.get_text().startswith("gate") for t in ax.texts)  # no label drawn over the plot
    finally:
        plt.close(fig)


def test_one_palette_for_verdicts_and_a_heat_scale_that_uses_none_of_it(report):
    from mlvalidate.report.bundles import VERDICT_CLASS, heat_color

    page = (report / "report.html").read_text()
    css = re.findall(r"\.(v-[a-z]+)\{background:(#[0-9a-f]{6})\}", page)
    assert dict(css) == {VERDICT_CLASS[v]: c for v, c in VERDICT_COLOR.items()}  # the CSS is the palette
    heat = {heat_color(x, 1.0) for x in np.linspace(0, 2.5, 26)}
    assert not heat & set(VERDICT_COLOR.values())
    cells = re.findall(r'<td class="tok[^"]*" style="background:(#[0-9a-f]{6})"', page)
    assert cells and not set(cells) & set(VERDICT_COLOR.values())


@pytest.mark.parametrize("which, code", [(("refcopy", "honest"), 0), (("refcopy", "dead"), 2),
                                         (("honest", "cheater", "dead"), 1)])
def test_compare_exit_code_follows_the_runs_verdicts(which, code, bundles, tmp_path, capsys):
    rc = main(["compare", *(str(bundles[k]) for k in which), "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == code and f"(exit {code})" in out
    assert (tmp_path / "report.html").is_file()  # the report is written whatever the runs' verdicts
