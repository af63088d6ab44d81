"""`mlvalidate inspect` and `mlvalidate check` end to end: output, verdicts and exit codes."""

import json
import subprocess
import sys

import numpy as np
import pytest

from mlvalidate.artifacts import write_json
from mlvalidate.reference_lookup import PACKAGE_ARTIFACTS
from mlvalidate.cli import main
from mlvalidate.poc.codec import encode_vector

MINIMAX = PACKAGE_ARTIFACTS / "minimaxai-minimax-m2.7.json"


def _computed(tmp_path, mutate):
    doc = json.loads(MINIMAX.read_text())
    doc["source"] = "test: mutated copy of the golden reference"
    mutate(doc)
    return str(write_json(tmp_path / "computed.json", doc))


def _rotate_vectors(doc, nonces):
    """Give each listed nonce another nonce's vector (golden pairs are 0.397 to 1.951 apart)."""
    arts = {a["nonce"]: a for a in doc["artifacts"]}
    b64 = {n: arts[n]["vector_b64"] for n in nonces}
    for i, n in enumerate(nonces):
        arts[n]["vector_b64"] = b64[nonces[(i + 1) % len(nonces)]]


def _far(doc, nonces):
    """Replace vectors with their negation: L2 = 2 from the golden one."""
    for a in doc["artifacts"]:
        if a["nonce"] in nonces:
            v = np.frombuffer(__import__("base64").b64decode(a["vector_b64"]), "<f2")
            a["vector_b64"] = encode_vector(-v)


def test_inspect_minimax(capsys):
    assert main(["inspect", str(MINIMAX)]) == 0
    out = capsys.readouterr().out
    assert "MiniMaxAI/MiniMax-M2.7" in out
    assert "200, nonces 0..199 (contiguous)" in out
    assert "fraud declared at >= 28 mismatches of 200 (p(27)=0.0672, p(28)=0.0434 < 0.05)" in out
    assert "0.99973 .. 1.00028" in out
    assert "min 0.3966" in out and "max 1.9512" in out and "mean 1.3977" in out
    assert "seq_len 1024 · k_dim 12" in out


def test_inspect_json_by_model_id(capsys):
    assert main(["inspect", "MiniMaxAI/MiniMax-M2.7", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["fraud_cutoff"] == 28 and s["n_vectors"] == 200
    assert s["pairwise_l2"]["n_pairs"] == 19900
    assert s["stat_test"]["values"] == {"dist_threshold": 0.75, "p_mismatch": 0.1, "fraud_threshold": 0.05}


def test_check_identical_is_pass(tmp_path, capsys):
    assert main(["check", str(MINIMAX), _computed(tmp_path, lambda d: None)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "VERDICT: PASS"


def test_check_few_mismatches_pass_with_mismatches(tmp_path, capsys):
    path = _computed(tmp_path, lambda d: _far(d, [3, 50, 199]))
    assert main(["check", str(MINIMAX), path]) == 0
    out = capsys.readouterr().out
    assert out.startswith("VERDICT: PASS (with mismatches")
    assert "n_mismatch 3 (over threshold 3, missing 0, invalid 0)" in out
    assert "mismatches    3, 50, 199" in out


def test_check_fraud_at_the_cutoff_is_fail(tmp_path, capsys):
    path = _computed(tmp_path, lambda d: _far(d, list(range(27))))
    assert main(["check", str(MINIMAX), path]) == 0  # 27 of 200: p = 0.067, still tolerated
    assert "n_mismatch 27" in capsys.readouterr().out
    path = _computed(tmp_path, lambda d: _far(d, list(range(28))))
    assert main(["check", str(MINIMAX), path]) == 1  # 28 of 200: fraud
    out = capsys.readouterr().out
    assert out.startswith("VERDICT: FAIL") and "n_mismatch 28" in out


def test_check_other_nonces_vectors_are_mismatches(tmp_path, capsys):
    # a node that answers with vectors of the wrong nonces: every pair more than 0.75 apart
    ref = json.loads(MINIMAX.read_text())
    pairs = [(a, b) for a in range(0, 100, 2) for b in (a + 1,)]
    path = _computed(tmp_path, lambda d: [_rotate_vectors(d, list(p)) for p in pairs])
    assert main(["check", str(MINIMAX), path, "--json"]) == 1
    s = json.loads(capsys.readouterr().out)
    assert s["verdict"] == "FAIL" and s["n_mismatch"] >= 90 and len(ref["artifacts"]) == 200


def test_check_missing_nonce_is_never_pass(tmp_path, capsys):
    path = _computed(tmp_path, lambda d: d["artifacts"].pop(17))
    assert main(["check", str(MINIMAX), path]) == 2
    out = capsys.readouterr().out
    assert out.startswith("VERDICT: INCOMPLETE")
    assert "missing       17" in out


def test_check_nan_and_empty_vectors_are_invalid_and_never_pass(tmp_path, capsys):
    def mutate(d):
        d["artifacts"][4]["vector_b64"] = encode_vector(np.full(12, np.nan, np.float16))
        d["artifacts"][9]["vector_b64"] = ""

    assert main(["check", str(MINIMAX), _computed(tmp_path, mutate), "--json"]) == 2
    s = json.loads(capsys.readouterr().out)
    assert s["verdict"] == "INCOMPLETE" and s["invalid_nonces"] == [4, 9] and s["n_mismatch"] == 2
    assert s["distances"]["4"] is None and s["distances"]["0"] == 0.0


def test_check_extra_nonces_reported_and_ignored(tmp_path, capsys):
    def mutate(d):
        d["artifacts"].append({"nonce": 5000, "vector_b64": d["artifacts"][0]["vector_b64"]})

    assert main(["check", str(MINIMAX), _computed(tmp_path, mutate), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["extra_nonces"] == [5000] and s["n_total"] == 200 and s["verdict"] == "PASS"


def test_check_cli_overrides_change_the_verdict_and_say_so(tmp_path, capsys):
    path = _computed(tmp_path, lambda d: _far(d, [1, 2, 3]))
    # at the server defaults (p_mismatch 0.001, fraud 0.01) 3 of 200 is fraud
    assert main(["check", str(MINIMAX), path, "--p-mismatch", "0.001", "--fraud-threshold", "0.01", "--json"]) == 1
    s = json.loads(capsys.readouterr().out)
    assert s["stat_test_source"] == {"dist_threshold": "reference", "p_mismatch": "cli", "fraud_threshold": "cli"}
    assert s["fraud_cutoff"] == 3
    # a threshold above 2 would make even negated vectors match: a test that cannot fail is refused
    assert main(["check", str(MINIMAX), path, "--threshold", "2.5"]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and "dist_threshold 2.5 is >= 2" in cap.err and "cannot fail" in cap.err
    # a looser gate that can still fail: the negated vectors (L2 = 2) still mismatch
    assert main(["check", str(MINIMAX), path, "--threshold", "1.5"]) == 0
    assert "over threshold 3" in capsys.readouterr().out


def test_check_refuses_vectors_for_other_poc_params(tmp_path, capsys):
    path = _computed(tmp_path, lambda d: d.update(block_hash="OTHER"))
    assert main(["check", str(MINIMAX), path]) == 2
    err = capsys.readouterr().err
    assert "block_hash: 'TEST_BLOCK' vs 'OTHER'" in err


@pytest.mark.parametrize(
    "mutate,expected",
    [
        (lambda p: p.write_text("{not json"), "not valid JSON"),
        (lambda p: p.write_text(json.dumps({"model": "x"})), "missing field(s)"),
    ],
)
def test_console_script_errors_are_one_line_exit_2(tmp_path, mutate, expected):
    bad = tmp_path / "bad.json"
    mutate(bad)
    for argv in (["inspect", str(bad)], ["check", str(bad), str(MINIMAX)], ["check", str(MINIMAX), str(bad)]):
        r = subprocess.run([sys.executable, "-m", "mlvalidate", *argv], capture_output=True, text=True)
        assert r.returncode == 2, r
        assert "Traceback" not in r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]


def test_help_explains_exit_codes():
    r = subprocess.run([sys.executable, "-m", "mlvalidate", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "exit codes" in r.stdout and "check" in r.stdout and "inspect" in r.stdout


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "internal error" not in lines[0] and "Traceback" not in captured.err
    return lines[0]


def test_check_device_this_machine_lacks_is_one_line_exit_2(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: --device cuda works here")
    computed = _computed(tmp_path, lambda d: None)
    assert main(["check", "--device", "cuda", str(MINIMAX), computed]) == 2
    line = _one_error_line(capsys)
    assert "--device cuda" in line and "CUDA" in line and "drop --device" in line
    assert main(["check", "--device", "bogus", str(MINIMAX), computed]) == 2
    assert "'bogus' is not a torch device" in _one_error_line(capsys)
    assert main(["check", "--device", "cpu", str(MINIMAX), computed]) == 0  # cpu: numpy, as without --device


def test_check_device_without_torch_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    computed = _computed(tmp_path, lambda d: None)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError, as without torch
    assert main(["check", "--device", "cuda", str(MINIMAX), computed]) == 2
    assert "needs torch, which this Python does not have" in _one_error_line(capsys)
    assert main(["check", str(MINIMAX), computed]) == 0  # numpy alone needs no torch
