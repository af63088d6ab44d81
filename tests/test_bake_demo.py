"""`bake` writes a reference in the golden schema; `demo` runs the whole harness and its exit
code says whether the honest node passed and the cheater failed."""

import json
import shutil
import subprocess
import sys

import pytest

from mlvalidate.artifacts import load_computed, load_reference
from mlvalidate.cli import main


def test_bake_writes_a_golden_schema_reference(tiny_minimax_fp8, tmp_path, capsys):
    out = tmp_path / "ref.json"
    rc = main(["bake", "--model", str(tiny_minimax_fp8), "--model-id", "test/tiny", "--out", str(out),
               "--nonces", "6", "--batch-size", "4", "--seq-len", "32", "--dtype", "fp32"])
    assert rc == 0 and "wrote" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert list(doc)[:8] == ["model", "seq_len", "k_dim", "block_hash", "block_height", "public_key", "node_id", "node_count"]
    assert doc["encoding"] == {"dtype": "f16", "k_dim": 12, "endian": "le"}
    assert doc["collection_batch_size"] == 4
    assert "dtype fp32" in doc["source"] and "batch size 4" in doc["source"] and "cpu" in doc["source"]
    ref = load_reference(out, model="test/tiny")
    assert ref.nonces.tolist() == list(range(6)) and ref.seq_len == 32
    assert ref.dist_threshold == 0.75 and ref.stat_test == {"p_mismatch": 0.1, "fraud_threshold": 0.05}
    # a re-computation in the same dtype and batch size checks out exactly
    assert main(["check", str(out), str(out)]) == 0


def test_bake_stronger_rng_is_written_read_and_changes_the_vectors(tiny_minimax_fp8, tmp_path, capsys):
    args = ["bake", "--model", str(tiny_minimax_fp8), "--model-id", "test/tiny", "--nonces", "4", "--batch-size", "4",
            "--seq-len", "32", "--dtype", "fp32"]
    assert main([*args, "--out", str(tmp_path / "default.json")]) == 0
    assert main([*args, "--out", str(tmp_path / "stronger.json"), "--stronger-rng"]) == 0
    default, stronger = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("default", "stronger"))
    assert "poc_stronger_rng" not in default and stronger["poc_stronger_rng"] is True
    assert load_reference(tmp_path / "stronger.json").stronger_rng is True
    assert load_reference(tmp_path / "default.json").stronger_rng is False
    assert [a["vector_b64"] for a in default["artifacts"]] != [a["vector_b64"] for a in stronger["artifacts"]]
    stronger["poc_stronger_rng"] = "yes"
    (tmp_path / "bad.json").write_text(json.dumps(stronger))
    with pytest.raises(Exception, match="'poc_stronger_rng' must be true or false"):
        load_reference(tmp_path / "bad.json")


def test_bake_on_a_missing_checkpoint_is_a_one_line_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mlvalidate", "bake", "--model", str(tmp_path / "nope"),
                        "--model-id", "x/y", "--out", str(tmp_path / "r.json")], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error: ")


def test_demo_fails_when_the_cheater_is_not_caught(tmp_path, monkeypatch, capsys):
    """A 'cheater' that is in fact the honest checkpoint passes, so the demo fails: exit 2 (the
    set-up did not separate them; exit 1 is kept for fraud)."""
    import mlvalidate.demo as demo

    def honest_copy(src, dst, **kw):
        shutil.copytree(src, dst)
        return dst

    monkeypatch.setattr(demo, "write_quantized_copy", honest_copy)
    monkeypatch.setattr(demo, "DEMO_SEQ_LEN", 32)
    monkeypatch.setattr(demo, "DEMO_NONCES", 20)
    assert main(["demo", "--out", str(tmp_path / "d"), "--junit", str(tmp_path / "j.xml")]) == 2
    assert "DEMO FAILED" in capsys.readouterr().out
    import xml.etree.ElementTree as ET

    cases = {c.get("name"): c for c in ET.parse(tmp_path / "j.xml").getroot().iter("testcase")}
    assert cases["honest node passes"].find("failure") is None
    assert cases["4-bit cheater fails"].find("failure") is not None


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "mlvalidate", "demo", "--out", str(out)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "DEMO OK: honest node PASS" in r.stdout and "cheating node FAIL" in r.stdout
    for name, first in (("honest", "VERDICT: PASS"), ("cheater", "VERDICT: FAIL")):
        b = out / name
        assert sorted(p.name for p in b.iterdir()) == [
            "config.json", "environment.json", "report.json", "report.txt", "vectors.json"]
        assert (b / "report.txt").read_text().splitlines()[0].startswith(first)
        report = json.loads((b / "report.json").read_text())
        assert report["schema"] == "mlvalidate.report/1" and report["n_total"] == 200
        assert len(report["distances"]) == 200
        assert load_computed(b / "vectors.json").n == 200
        env = json.loads((b / "environment.json").read_text())
        assert {"gpu_model", "gpu_count", "driver_version", "cuda", "nvml", "torch", "transformers",
                "vllm"} <= env["harness"].keys()
        assert {"attention_backend", "moe_backend", "batch_size", "profile", "model_revision"} <= env["run"].keys()
        assert env["run"]["batch_size"] == (16 if name == "honest" else 32) and env["run"]["profile"] is None
        samples = env["harness"]["nvml"].get("samples", [])
        assert [s["label"] for s in samples] in ([], ["validate start", "validate end"])
        # the demo's engines ran in this process: the node is this host, and its record says so
        assert env["node"]["where"] == "this host" and env["node"]["url"] is None
        assert env["node"]["hardware"]["source"].startswith("this host")
    # the bundles' vectors re-check offline to the same verdicts
    ref = out / "reference.json"
    assert load_reference(ref).collection_batch_size == 32
    assert main(["check", str(ref), str(out / "honest" / "vectors.json")]) == 0
    assert main(["check", str(ref), str(out / "cheater" / "vectors.json")]) == 1


def test_a_demo_validation_that_fails_is_one_line_with_its_bundle_not_an_interrupt(tmp_path, monkeypatch, capsys):
    """A phase error inside the demo (here: the engine fails) ends it with that reason, exit 2,
    and the run's bundle is still written; it is not reported as Ctrl-C."""
    import mlvalidate.demo as demo
    from mlvalidate.errors import EngineError

    def broken(run, engine, progress=True):
        raise EngineError("the engine fell over")

    monkeypatch.setattr(demo, "DEMO_SEQ_LEN", 32)
    monkeypatch.setattr(demo, "DEMO_NONCES", 20)
    monkeypatch.setattr(demo, "validate_phase", broken)
    assert main(["demo", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "did not finish" in err and "the engine fell over" in err and "interrupted" not in err
    assert (tmp_path / "d" / "honest" / "report.json").is_file()
