"""`mlvalidate compare`: tables, the cross-run distance matrix, a self-contained HTML page
(rendered in headless Chromium where it is installed), and one-line errors on bad input.

Bundles are built directly with write_bundle from synthetic vectors (no model run):
  refcopy  the reference's own vectors                 -> PASS
  honest   reference + small noise                     -> PASS (or with mismatches)
  cheater  reference + large noise, profile h100x4 with a throughput phase -> FAIL
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from mlvalidate.artifacts import parse_reference, reference_document, resolve_stat_test
from mlvalidate.cli import main
from mlvalidate.poc.stats import compare_vectors
from mlvalidate.serving.environment import environment
from mlvalidate.report.bundle import write_bundle
from mlvalidate.results import RateStats, RunRecord, ThroughputPhase, ThroughputSummary
from mlvalidate.report.bundles import NO_PLOTS, distance_matrix, load_bundles
from mlvalidate.report.compare import write_compare

N, K = 40, 64
CHROMIUM = Path("/usr/bin/chromium")


def _reference():
    rng = np.random.default_rng(7)
    nonces = np.arange(N, dtype=np.int64)
    vecs = rng.standard_normal((N, K)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    doc = reference_document(model="test/tiny", seq_len=16, k_dim=K, block_hash="H", public_key="P",
                             nonces=nonces, vectors=vecs.astype(np.float16), dist_threshold=0.2,
                             stat_test={"p_mismatch": 0.1, "fraud_threshold": 0.05})  # fmt: skip
    return parse_reference(doc, where="test reference")


def _bundle(out: Path, name: str, ref, vectors, *, throughput=None, profile=None) -> Path:
    st = resolve_stat_test(ref)
    comp = compare_vectors(ref.nonces, ref.vectors, ref.nonces, vectors.astype(np.float32), st.values)
    run = RunRecord(name=name, reference=ref, stat_test=st, comparison=comp, engine={"engine": "synthetic"},
                    computed_nonces=ref.nonces, computed_vectors=vectors.astype(np.float16), batch_size=8,
                    elapsed_s=1.0, throughput=throughput, profile=profile,
                    nvml_samples=[{"label": "t", "time": "now", "available": False, "reason": "test"}])  # fmt: skip
    run.environment = environment(run)
    return write_bundle(out / name, run)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    from mlvalidate.serving.profiles import load_profile

    root = tmp_path_factory.mktemp("bundles")
    ref = _reference()
    rng = np.random.default_rng(1)
    honest = ref.vectors + 0.005 * rng.standard_normal(ref.vectors.shape)
    cheater = ref.vectors + 0.3 * rng.standard_normal(ref.vectors.shape)
    prof = load_profile("h100x4")
    summary = ThroughputSummary(api="vllm", n_samples=4, warmup_s=30.0, batch_size=32, n_replicas=1,
                                rates=RateStats(steady=1184.0 / 60, min=19.0, median=19.7, max=20.1,
                                                node_cumulative=18.5))
    tp = ThroughputPhase(summary=summary, samples=[], reference="synthetic", profile="h100x4")
    return {
        "refcopy": _bundle(root, "refcopy", ref, ref.vectors),
        "honest": _bundle(root, "honest", ref, honest),
        "cheater": _bundle(root, "cheater", ref, cheater, throughput=tp, profile=prof),
        "profile": prof,
    }


@pytest.fixture(scope="module")
def report(bundles, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    rc = main(["compare", str(bundles["refcopy"]), str(bundles["honest"]), str(bundles["cheater"]), "--out", str(out)])
    assert rc == 0
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
    assert honest[2] in ("CPU", "n/a") or "×" in honest[2]
    assert "## Throughput per profile" in md and "### h100x4" in md


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
def test_html_renders_in_chromium(report, tmp_path):
    shot = tmp_path / "shot.png"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2000",
           (report / "report.html").resolve().as_uri()]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert shot.exists(), f"no screenshot (rc {proc.returncode}): {proc.stderr[-800:]}"
    data = shot.read_bytes()
    w, h, distinct = _png_stats(data)
    assert (w, h) == (1280, 2000)
    assert len(data) > 20_000, "a near-empty PNG: the page rendered blank"
    assert distinct > 16, "uniform pixels: the page rendered blank"
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(shot) as im:
        colors = im.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colors is None or len(colors) > 50
    keep = Path("/tmp/mlvalidate-compare-shot.png")
    try:
        shutil.copyfile(shot, keep)  # for a person to look at after the run
    except OSError:
        pass
