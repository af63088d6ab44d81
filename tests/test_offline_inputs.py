"""Hostile or broken offline inputs (issue 10): `check`, `inspect` and `verify-weights` never
print a traceback, exit 2 for every error or incomplete result (1 only for proven fraud),
and say in one `error:` line what happened.

Every fixture is built here in tmp_path from the golden schema (POC_V2_SPEC.md §6): the
shipped MiniMax reference is loaded as plain JSON and mutated.
"""

import base64
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mlvalidate.cli import main
from mlvalidate.reference_lookup import lookup_reference

REPO = Path(__file__).resolve().parents[1]
MINIMAX = REPO / "artifacts" / "minimaxai-minimax-m2.7.json"
DEEP = "[" * 100000  # RecursionError in json.loads


def _golden() -> dict:
    return json.loads(MINIMAX.read_text(encoding="utf-8"))


def _write(path: Path, doc) -> str:
    if isinstance(doc, bytes):
        path.write_bytes(doc)
    elif isinstance(doc, str):
        path.write_text(doc, encoding="utf-8")
    else:
        path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return str(path)


def _b64(values) -> str:
    """base64 of little-endian fp16 values (spec §3 step 9), written out here, not by the codec."""
    return base64.b64encode(np.asarray(values, dtype="<f2").tobytes()).decode("ascii")


def _vec(doc: dict, nonce: int) -> np.ndarray:
    entry = next(a for a in doc["artifacts"] if a["nonce"] == nonce)
    return np.frombuffer(base64.b64decode(entry["vector_b64"]), dtype="<f2").astype(np.float32)


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def _assert_error(capsys, argv, *needles) -> str:
    code, out, err = _cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _subprocess(*argv, timeout=120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "mlvalidate.cli", *map(str, argv)], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=REPO)


def _assert_subprocess_error(argv, *needles) -> str:
    r = _subprocess(*argv)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr[-2000:]
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-500:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ----------------------------------------------------------------------------------------
# 1. the computed file goes through the intake rule; the reference stays strict
# ----------------------------------------------------------------------------------------
def test_check_conflicting_duplicate_is_a_listed_mismatch(tmp_path, capsys):
    doc = _golden()
    doc["artifacts"].append({"nonce": 7, "vector_b64": doc["artifacts"][8]["vector_b64"]})  # 7 answered twice
    computed = _write(tmp_path / "computed.json", doc)
    code, out, _ = _cli(capsys, "check", MINIMAX, computed, "--json")
    s = json.loads(out)
    assert code == 2 and s["verdict"] == "INCOMPLETE"
    assert s["conflicting_nonces"] == [7] and s["invalid_nonces"] == [7] and s["n_mismatch"] == 1
    assert s["distances"]["7"] is None and s["distances"]["8"] == 0.0
    code, out, _ = _cli(capsys, "check", MINIMAX, computed)
    assert code == 2 and out.startswith("VERDICT: INCOMPLETE")
    assert "conflicting   7  (answered twice with different vectors" in out


def test_check_identical_duplicate_is_harmless(tmp_path, capsys):
    doc = _golden()
    doc["artifacts"].insert(0, dict(doc["artifacts"][42]))
    code, out, _ = _cli(capsys, "check", MINIMAX, _write(tmp_path / "computed.json", doc))
    assert code == 0 and out.startswith("VERDICT: PASS\n")


# entry index == the nonce the bad value would be coerced to: coercion would hide the defect
BAD_NONCES = {
    "true": (1, True, "nonce must be a JSON integer, got True"),
    "float": (3, 3.0, "nonce must be a JSON integer, got 3.0"),
    "string": (5, "5", "nonce must be a JSON integer, got '5'"),
    "list": (1, [1], "nonce must be a JSON integer, got [1]"),
    "negative": (0, -1, "nonce -1 is outside [0, 2^63)"),
    "2^63": (0, 2**63, f"nonce {2**63} is outside [0, 2^63)"),
}


@pytest.mark.parametrize("case", sorted(BAD_NONCES))
def test_check_malformed_nonce_is_listed_never_coerced(tmp_path, capsys, case):
    index, value, reason = BAD_NONCES[case]
    doc = _golden()
    doc["artifacts"][index]["nonce"] = value
    computed = _write(tmp_path / "computed.json", doc)
    code, out, _ = _cli(capsys, "check", MINIMAX, computed, "--json")
    s = json.loads(out)
    assert code == 2 and s["verdict"] == "INCOMPLETE"
    assert s["n_malformed"] == 1 and s["malformed"] == [f"artifacts: entry #{index}: {reason}"]
    assert s["missing_nonces"] == [index]
    code, out, _ = _cli(capsys, "check", MINIMAX, computed)
    assert code == 2 and "malformed     1 entry naming no valid nonce" in out and reason in out


def test_check_lists_conflicting_malformed_and_unrequested_together(tmp_path, capsys):
    doc = _golden()
    doc["artifacts"] += [
        {"nonce": 9, "vector_b64": _b64(-_vec(doc, 9))},  # a second, different answer for 9
        {"nonce": "10", "vector_b64": doc["artifacts"][10]["vector_b64"]},  # malformed
        {"nonce": 777, "vector_b64": doc["artifacts"][0]["vector_b64"]},  # not in the reference
    ]
    code, out, _ = _cli(capsys, "check", MINIMAX, _write(tmp_path / "computed.json", doc))
    assert code == 2 and out.startswith("VERDICT: INCOMPLETE")
    assert "conflicting   9" in out and "malformed     1 entry" in out
    assert "unrequested   1 nonce(s) answered without being asked — 1 not in the reference (not compared): 777" in out


def test_check_malformed_entries_alone_never_pass(tmp_path, capsys):
    doc = _golden()
    doc["artifacts"].append({"nonce": None, "vector_b64": doc["artifacts"][0]["vector_b64"]})
    code, out, _ = _cli(capsys, "check", MINIMAX, _write(tmp_path / "computed.json", doc), "--json")
    s = json.loads(out)
    assert code == 2 and s["verdict"] == "INCOMPLETE" and s["n_mismatch"] == 0 and s["n_malformed"] == 1


@pytest.mark.parametrize("case", sorted(BAD_NONCES))
def test_reference_with_bad_nonce_is_one_line_error(tmp_path, case):
    index, value, _ = BAD_NONCES[case]
    doc = _golden()
    doc["artifacts"][index]["nonce"] = value
    ref = _write(tmp_path / "ref.json", doc)
    for argv in (["inspect", ref], ["check", ref, MINIMAX]):
        _assert_subprocess_error(argv, f"artifact #{index}: nonce must be a non-negative integer below 2^63")


def test_reference_with_duplicates_stays_strict(tmp_path, capsys):
    doc = _golden()
    doc["artifacts"].append(dict(doc["artifacts"][3]))  # even an identical duplicate
    ref = _write(tmp_path / "ref.json", doc)
    _assert_error(capsys, ["check", ref, MINIMAX], "duplicate nonces: [3]")


# ----------------------------------------------------------------------------------------
# 2. no traceback, exit 2, for files that cannot be parsed or would exhaust memory
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ["inspect", "check-reference", "check-computed"])
def test_deeply_nested_json_is_one_line_error(tmp_path, role):
    bad = _write(tmp_path / "deep.json", DEEP)
    argv = {"inspect": ["inspect", bad], "check-reference": ["check", bad, MINIMAX],
            "check-computed": ["check", MINIMAX, bad]}[role]
    _assert_subprocess_error(argv, "deep.json", "nested too deeply")


def _verify_dir(tmp_path: Path, header: bytes | None = None, config: str | None = None,
                record: str | None = None, index: str | None = None) -> Path:
    """A checkpoint directory with one model.safetensors whose JSON header is `header`."""
    root = tmp_path / "ckpt"
    root.mkdir()
    (root / "config.json").write_text(config if config is not None else json.dumps({"model_type": "other"}))
    if header is None:
        header = json.dumps({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    (root / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    if record is not None:
        (root / ".mlvalidate-pull.json").write_text(record)
    if index is not None:
        (root / "model.safetensors.index.json").write_text(index)
    return root


@pytest.mark.parametrize("where", ["safetensors header", "config.json", "pull record", "index"])
def test_verify_weights_deeply_nested_json_is_a_problem_not_a_traceback(tmp_path, where):
    kwargs = {"safetensors header": {"header": DEEP.encode()}, "config.json": {"config": DEEP},
              "pull record": {"record": DEEP}, "index": {"index": DEEP}}[where]
    root = _verify_dir(tmp_path, **kwargs)
    r = _subprocess("verify-weights", root)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr[-2000:]
    assert r.returncode == 2
    problems = [line for line in r.stdout.splitlines() if line.startswith("  - ")]
    assert any("nested too deeply" in line for line in problems), r.stdout
    assert r.stderr.strip().startswith("error: ") and len(r.stderr.strip().splitlines()) == 1


def _huge_k(doc: dict) -> dict:
    doc["k_dim"] = 10**12
    doc["encoding"]["k_dim"] = 10**12
    return doc


def test_huge_k_dim_reference_is_one_line_error(tmp_path):
    ref = _write(tmp_path / "ref.json", _huge_k(_golden()))
    for argv in (["inspect", ref], ["check", ref, MINIMAX]):
        _assert_subprocess_error(argv, "field 'k_dim' must be <= 4096, got 1000000000000")


def test_huge_k_dim_computed_file_is_one_line_error(tmp_path):
    computed = _write(tmp_path / "computed.json", _huge_k(_golden()))
    _assert_subprocess_error(["check", MINIMAX, computed], "computed.json", "'k_dim' must be <= 4096")


def test_computed_k_dim_must_equal_the_reference_before_decoding(tmp_path, capsys):
    doc = _golden()
    doc["k_dim"], doc["encoding"]["k_dim"] = 16, 16
    for a in doc["artifacts"]:  # 16 values each: would decode cleanly at k_dim 16
        a["vector_b64"] = _b64(np.concatenate([_vec(doc, a["nonce"]), np.zeros(4, np.float32)]))
    computed = _write(tmp_path / "computed.json", doc)
    _assert_error(capsys, ["check", MINIMAX, computed], "was not computed with the reference's PoC params",
                  "k_dim: 12 vs 16")


def _eleven(doc: dict, nonce: int) -> str:
    b64 = _b64(_vec(doc, nonce)[:11])  # 22 bytes: 32 characters ending in '=='
    assert len(b64) == 32 and b64.endswith("=")
    return b64


def test_eleven_value_vector_in_reference_is_one_line_error(tmp_path, capsys):
    doc = _golden()
    doc["artifacts"][199]["vector_b64"] = _eleven(doc, 199)  # the last row: the batched decode's blind spot
    ref = _write(tmp_path / "ref.json", doc)
    _assert_error(capsys, ["inspect", ref], "nonce 199: 22 bytes, expected 24")
    _assert_error(capsys, ["check", ref, MINIMAX], "nonce 199: 22 bytes, expected 24")


def test_eleven_value_vector_in_computed_file_is_an_invalid_nonce(tmp_path, capsys):
    doc = _golden()
    doc["artifacts"][199]["vector_b64"] = _eleven(doc, 199)
    code, out, _ = _cli(capsys, "check", MINIMAX, _write(tmp_path / "computed.json", doc), "--json")
    s = json.loads(out)
    assert code == 2 and s["verdict"] == "INCOMPLETE" and s["invalid_nonces"] == [199]
    assert "22 bytes, expected 24" in s["invalid_reasons"]["199"]


@pytest.mark.parametrize("role", ["inspect", "check-reference", "check-computed"])
@pytest.mark.parametrize(
    "content,needle",
    [
        (b'{"model": "caf\xe9"}', "not UTF-8 text (byte 0xe9 at offset 14)"),
        ("[1, 2]", "top level must be a JSON object, got a list"),
        ("42", "top level must be a JSON object, got a number"),
        ("1" * 5000, "not a usable JSON document"),  # past Python's integer digit limit
    ],
    ids=["latin1", "list", "number", "huge-int"],
)
def test_unusable_file_is_one_line_error(tmp_path, capsys, role, content, needle):
    bad = _write(tmp_path / "bad.json", content)
    argv = {"inspect": ["inspect", bad], "check-reference": ["check", bad, MINIMAX],
            "check-computed": ["check", MINIMAX, bad]}[role]
    _assert_error(capsys, argv, "bad.json", needle)


def test_huge_numbers_in_fields_are_one_line_errors(tmp_path, capsys):
    doc = _golden()
    doc["dist_threshold"] = 10**400  # float() of it overflows
    _assert_error(capsys, ["inspect", _write(tmp_path / "r1.json", doc)], "'dist_threshold' must be a finite number")
    doc = _golden()
    doc["stat_test"]["p_mismatch"] = 10**400
    _assert_error(capsys, ["inspect", _write(tmp_path / "r2.json", doc)], "'p_mismatch' must be a finite number")


# ----------------------------------------------------------------------------------------
# 3. messages say what happened
# ----------------------------------------------------------------------------------------
def _odd_path(tmp_path: Path, kind: str) -> Path:
    p = tmp_path / f"{kind}.json"
    if kind == "directory":
        p.mkdir()
    elif kind == "loop":
        os.symlink(tmp_path / "loop-b.json", p)
        os.symlink(p, tmp_path / "loop-b.json")
    elif kind == "dangling":
        os.symlink(tmp_path / "gone.json", p)
    return p


ODD = {"directory": "is a directory", "loop": "is a symbolic link loop", "dangling": "is a dangling symbolic link"}


@pytest.mark.parametrize("kind", sorted(ODD))
def test_odd_paths_say_what_they_are(tmp_path, capsys, kind):
    p = _odd_path(tmp_path, kind)
    _assert_error(capsys, ["inspect", p], str(p), ODD[kind])
    _assert_error(capsys, ["check", p, MINIMAX], str(p), ODD[kind])
    _assert_error(capsys, ["check", MINIMAX, p], str(p), ODD[kind])


def test_directory_named_like_a_model_id_still_finds_the_reference(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "MiniMaxAI" / "MiniMax-M2.7").mkdir(parents=True)
    code, out, _ = _cli(capsys, "inspect", "MiniMaxAI/MiniMax-M2.7")
    assert code == 0 and "MiniMaxAI/MiniMax-M2.7" in out


def test_additional_args_must_be_a_list_of_strings(tmp_path, capsys):
    doc = _golden()
    doc["additional_args"] = "--foo"
    ref = _write(tmp_path / "ref.json", doc)
    _assert_error(capsys, ["inspect", ref], "field 'additional_args' must be a list of strings, got '--foo'")
    doc["additional_args"] = ["--tp", 2]
    _assert_error(capsys, ["inspect", _write(tmp_path / "ref2.json", doc)], "'additional_args' must be a list of strings")


# ----------------------------------------------------------------------------------------
# 4. a stat test that cannot fail is refused
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "override,needle",
    [
        (["--threshold", "inf"], "dist_threshold must be a finite number > 0, got inf"),
        (["--threshold", "nan"], "dist_threshold must be a finite number > 0, got nan"),
        (["--threshold", "0"], "dist_threshold must be a finite number > 0, got 0"),
        (["--threshold", "2"], "dist_threshold 2 is >= 2"),
        (["--p-mismatch", "1"], "p_mismatch must be a number in (0, 1), got 1"),
        (["--fraud-threshold", "inf"], "fraud_threshold must be a number in (0, 1), got inf"),
        (["--fraud-threshold", "1e-300"], "even 200/200 mismatches give p=1e-200 >= fraud_threshold 1e-300"),
        (["--p-mismatch", "0.99"], "with p_mismatch 0.99 even 200/200 mismatches give p=0.134 >= fraud_threshold 0.05"),
    ],
)
def test_check_refuses_cli_stat_test_that_cannot_fail(tmp_path, capsys, override, needle):
    doc = _golden()
    for a in doc["artifacts"]:  # every vector negated: L2 = 2 from the golden one
        a["vector_b64"] = _b64(-_vec(doc, a["nonce"]))
    computed = _write(tmp_path / "computed.json", doc)
    assert _cli(capsys, "check", MINIMAX, computed)[0] == 1  # proven fraud under the reference's own test
    line = _assert_error(capsys, ["check", MINIMAX, computed, *override], "stat test refused", needle)
    assert "from cli" in line


@pytest.mark.parametrize(
    "mutate,needle",
    [
        (lambda d: d.update(dist_threshold=2.5), "dist_threshold 2.5 is >= 2"),
        (lambda d: d["stat_test"].update(p_mismatch=0.99), "with p_mismatch 0.99 even 200/200 mismatches"),
        (lambda d: d["stat_test"].update(fraud_threshold=1e-300), "give p=1e-200 >= fraud_threshold 1e-300"),
        (lambda d: d["stat_test"].update(fraud_threshold=1.0), "fraud_threshold must be a number in (0, 1)"),
    ],
)
def test_reference_stat_test_that_cannot_fail_is_refused(tmp_path, capsys, mutate, needle):
    doc = _golden()
    mutate(doc)
    ref = _write(tmp_path / "ref.json", doc)
    _assert_error(capsys, ["inspect", ref], "stat test refused", needle, "from reference")
    _assert_error(capsys, ["check", ref, MINIMAX], "stat test refused", needle)


# ----------------------------------------------------------------------------------------
# 5. inspect's pairwise statistics come from a bounded sample
# ----------------------------------------------------------------------------------------
def _big_doc(n: int, seed: int = 0) -> tuple[dict, np.ndarray]:
    """The MiniMax reference's header with n random unit vectors (fp16), nonces 0..n-1."""
    doc = _golden()
    v = np.random.default_rng(seed).standard_normal((n, 12))
    v = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype("<f2")
    return doc, v


def _rows_b64(v: np.ndarray) -> list[str]:
    text = base64.b64encode(np.ascontiguousarray(v, dtype="<f2").tobytes()).decode("ascii")
    step = 32  # 24 bytes per 12-value row: no padding, so rows can be cut out of one encoding
    return [text[i : i + step] for i in range(0, len(text), step)]


def test_inspect_samples_pairwise_distances_of_a_large_reference(tmp_path, capsys):
    doc, v = _big_doc(2500)
    doc["artifacts"] = [{"nonce": i, "vector_b64": s} for i, s in enumerate(_rows_b64(v))]
    ref = _write(tmp_path / "big.json", doc)
    code, out, _ = _cli(capsys, "inspect", ref)
    assert code == 0 and "pairwise L2 over a sample of 2000 of 2500 vectors" in out
    assert "1999000 pairs" in out
    code, out, _ = _cli(capsys, "inspect", ref, "--json")
    s = json.loads(out)
    assert s["pairwise_l2"]["n_pairs"] == 1999000 and s["pairwise_l2"]["sampled"] is True
    assert 1.3 < s["pairwise_l2"]["mean"] < 1.5


def test_inspect_module_does_not_use_torch():
    source = (REPO / "mlvalidate" / "inspect_ref.py").read_text()
    assert "import torch" not in source


def _write_big(path: Path, header: dict, nonces, rows: list[str], extra: str = "") -> None:
    head = json.dumps({k: v for k, v in header.items() if k != "artifacts"}, indent=2)[:-2]
    with path.open("w", encoding="utf-8") as f:
        f.write(head + ',\n  "artifacts": [\n')
        f.write(",\n".join(f'    {{"nonce": {n}, "vector_b64": "{s}"}}' for n, s in zip(nonces, rows)))
        f.write(extra + "\n  ]\n}\n")


_PEAK = (
    "import resource, subprocess, sys, time; t = time.time(); "
    "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
    "sys.stdout.write(r.stdout[-4000:]); sys.stderr.write(r.stderr[-4000:]); "
    "print('PEAK_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, 'WALL', time.time() - t); "
    "sys.exit(r.returncode)"
)


def _peak(*argv) -> tuple[int, str, int, float]:
    """(exit code, output, peak RSS in KiB, wall seconds) of one `python -m mlvalidate.cli` run."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", _PEAK, sys.executable, "-m", "mlvalidate.cli", *map(str, argv)],
                       capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    tail = r.stdout.strip().splitlines()[-1].split()
    assert tail[0] == "PEAK_KIB", r.stdout[-2000:] + r.stderr[-2000:]
    return r.returncode, r.stdout + r.stderr, int(tail[1]), float(tail[3])


@pytest.mark.slow
def test_inspect_and_check_of_a_million_vectors_stay_under_2_gib(tmp_path):
    n = 1_000_000
    t0 = time.time()
    doc, v = _big_doc(n, seed=1)
    rows = _rows_b64(v)
    ref = tmp_path / "ref.json"
    _write_big(ref, doc, range(n), rows)
    far = set(range(0, n, 1000))  # 1000 negated vectors: L2 = 2, far below the fraud cutoff (~100k)
    got_rows = list(rows)
    neg = _rows_b64(-v[sorted(far)])
    for i, s in zip(sorted(far), neg):
        got_rows[i] = s
    computed = tmp_path / "computed.json"
    dup = f',\n    {{"nonce": 5, "vector_b64": "{neg[1]}"}},\n    {{"nonce": true, "vector_b64": "{rows[0]}"}}'
    _write_big(computed, doc, range(n), got_rows, extra=dup)
    del rows, got_rows, v
    print(f"\nfixtures written in {time.time() - t0:.1f} s ({ref.stat().st_size / 2**20:.0f} MiB each)")

    code, out, peak, wall = _peak("inspect", ref)
    print(f"inspect: exit {code}, peak RSS {peak / 2**20:.2f} GiB, {wall:.1f} s")
    assert code == 0 and "Traceback" not in out, out
    assert f"vectors       {n}, nonces 0..{n - 1} (contiguous)" in out
    assert f"pairwise L2 over a sample of 2000 of {n} vectors" in out
    assert peak < 2 * 2**20

    code, out, peak, wall = _peak("check", ref, computed)
    print(f"check: exit {code}, peak RSS {peak / 2**20:.2f} GiB, {wall:.1f} s")
    assert "Traceback" not in out, out
    assert code == 2 and out.startswith("VERDICT: INCOMPLETE"), out  # a conflict and a malformed entry
    assert f"n_total {n}  n_mismatch {len(far) + 1} (over threshold {len(far)}, missing 0, invalid 1)" in out
    assert "conflicting   5" in out and "malformed     1 entry" in out
    assert peak < 2 * 2**20


# ----------------------------------------------------------------------------------------
# 6. lookup by model id: <safe_id>.json, else the one <safe_id>-*.json naming the model
# ----------------------------------------------------------------------------------------
def test_model_id_finds_a_reference_with_a_longer_file_name(capsys):
    code, out, _ = _cli(capsys, "inspect", "zai-org/GLM-5.3-Flash")
    assert code == 0 and "zai-org-glm-5.3-flash-h100-tp8.json" in out and "zai-org/GLM-5.3-Flash" in out


def _lookup_dir(tmp_path: Path, monkeypatch, files: dict[str, str]) -> Path:
    folder = tmp_path / "refs"
    folder.mkdir()
    for name, model in files.items():
        doc = _golden()
        doc["model"] = model
        _write(folder / name, doc)
    monkeypatch.setenv("MLVALIDATE_ARTIFACTS", str(folder))
    monkeypatch.chdir(tmp_path)
    return folder


def test_model_id_lookup_with_several_candidates_is_one_line_error(tmp_path, monkeypatch, capsys):
    folder = _lookup_dir(tmp_path, monkeypatch, {"acme-m1-h100.json": "acme/M1", "acme-m1-h200.json": "acme/M1",
                                                 "acme-m1-other.json": "acme/M1-other"})
    line = _assert_error(capsys, ["inspect", "acme/M1"], "2 golden references for model 'acme/M1'",
                         str(folder / "acme-m1-h100.json"), str(folder / "acme-m1-h200.json"), "pass the file path")
    assert "acme-m1-other.json" not in line  # its model field names another model


def test_model_id_lookup_exact_name_wins_and_model_field_must_match(tmp_path, monkeypatch, capsys):
    _lookup_dir(tmp_path, monkeypatch, {"acme-m1.json": "acme/M1", "acme-m1-h100.json": "acme/M1",
                                        "acme-m2-h100.json": "acme/M2-h100"})
    code, out, _ = _cli(capsys, "inspect", "acme/M1")
    assert code == 0 and "refs/acme-m1.json" in out
    _assert_error(capsys, ["inspect", "acme/M2"], "no golden reference for model 'acme/M2'")


def test_a_model_id_with_two_references_says_which_it_opened_and_lists_the_other(capsys):
    """Qwen3-235B ships two references (2000 and 32 nonces); `inspect MODEL` opened the 32-nonce one silently
    (issue 25, point 9). It says which one, why, and the other with its size; --json the same."""
    model = "Qwen/Qwen3-235B-A22B-Instruct-2507-FP8"
    code, out, _ = _cli(capsys, "inspect", model)
    lines = out.splitlines()
    assert code == 0 and lines[0].endswith("qwen-qwen3-235b-a22b-instruct-2507-fp8.json")
    assert lines[1].strip().startswith(f"chosen for {model}: its file name is the model id's")
    assert lines[2].strip().startswith("also for this model: ") and lines[2].endswith(
        "qwen-qwen3-235b-a22b-instruct-2507-fp8-deepgemm.json (2000 vectors): pass its path to inspect it")
    assert "vectors       32," in out
    code, out, _ = _cli(capsys, "inspect", model, "--json")
    doc = json.loads(out)
    assert [(Path(o["file"]).name, o["n_vectors"]) for o in doc["other_references"]] == [
        ("qwen-qwen3-235b-a22b-instruct-2507-fp8-deepgemm.json", 2000)]
    code, out, _ = _cli(capsys, "inspect", "MiniMaxAI/MiniMax-M2.7")  # one reference: nothing more to say
    assert code == 0 and "also for this model" not in out and "chosen for" not in out


def test_the_listing_marks_the_reference_a_model_id_does_not_open(capsys):
    code, out, _ = _cli(capsys, "inspect")
    marked = [line for line in out.splitlines() if "* /" in line]
    assert code == 0 and len(marked) == 1 and marked[0].endswith("-fp8-deepgemm.json")
    assert out.splitlines()[-1].startswith("* not opened by its model id")
    rows = json.loads(_cli(capsys, "inspect", "--json")[1])
    qwen = [r for r in rows if r.get("model") == "Qwen/Qwen3-235B-A22B-Instruct-2507-FP8"]
    assert sorted(r["opened_by_model_id"] for r in qwen) == [False, True]


def test_a_copy_in_a_later_folder_and_a_longer_name_are_listed_beside_the_exact_name(tmp_path, monkeypatch, capsys):
    folder = _lookup_dir(tmp_path, monkeypatch, {"acme-m1.json": "acme/M1", "acme-m1-h100.json": "acme/M1",
                                                 "acme-m1-x.json": "acme/M1-x"})
    later = tmp_path / "later"
    later.mkdir()
    (later / "acme-m1.json").write_text((folder / "acme-m1.json").read_text())
    monkeypatch.setenv("MLVALIDATE_ARTIFACTS", f"{folder}{os.pathsep}{later}")
    found = lookup_reference("acme/M1")
    assert found.path == folder / "acme-m1.json"
    assert sorted(found.others) == sorted([folder / "acme-m1-h100.json", later / "acme-m1.json"])
    assert "acme-m1-x.json" not in str(found.others)  # its model field names another model


def test_validate_by_model_id_says_which_reference_it_opened(tmp_path, capsys):
    """The run's plan names the choice too (here the node is unreachable: the plan is printed first)."""
    code, out, _ = _cli(capsys, "validate", "--url", "http://127.0.0.1:9", "--model",
                        "Qwen/Qwen3-235B-A22B-Instruct-2507-FP8", "--connect-grace", "0.5", "--skip-throughput",
                        "--out", tmp_path / "bundle")
    assert code == 2
    line = next(line for line in out.splitlines() if "chosen: its file name" in line)
    assert "qwen-qwen3-235b-a22b-instruct-2507-fp8-deepgemm.json (pass its path to use it)" in line


# ----------------------------------------------------------------------------------------
# issue 22: files that parse but cannot be used — deep, lone surrogates, wrong field types
# ----------------------------------------------------------------------------------------
SURROGATE = '"\\ud800"'  # valid JSON, not text: it cannot be written back as UTF-8 or printed


def _with_raw(doc: dict, key: str, raw: str) -> str:
    """The document's JSON with `key`'s value replaced by the raw JSON text `raw`."""
    doc = dict(doc)
    doc[key] = "@@RAW@@"
    return json.dumps(doc).replace('"@@RAW@@"', raw)


@pytest.mark.parametrize("key", ["model", "block_hash", "public_key"])
def test_a_lone_surrogate_in_a_reference_is_one_line(tmp_path, capsys, key):
    bad = _write(tmp_path / "sur.json", _with_raw(_golden(), key, SURROGATE))
    _assert_error(capsys, ["inspect", bad], f"field '{key}' holds a lone UTF-16 surrogate")
    # validate refuses it before any run (it used to fail after the run, losing the bundle)
    line = _assert_error(capsys, ["validate", "--url", "http://127.0.0.1:9", "--reference", bad, "--skip-throughput",
                                  "--out", str(tmp_path / "b")], "lone UTF-16 surrogate")
    assert "internal error" not in line and not (tmp_path / "b").exists()


@pytest.mark.parametrize("field, value, needle", [
    ("seq_len", 10**30, "'seq_len' must be <= 1048576"),
    ("block_height", 2**64, "'block_height' must be <="),
    ("node_count", 10**30, "'node_count' must be <="),
])
def test_out_of_range_reference_integers_are_refused(tmp_path, capsys, field, value, needle):
    doc = _golden()
    doc[field] = value
    _assert_error(capsys, ["inspect", _write(tmp_path / "r.json", doc)], needle)


def _bundle(path: Path, **report) -> Path:
    path.mkdir(parents=True)
    doc = {"schema": "mlvalidate.report/1", "name": path.name, "verdict": "PASS", "distances": {"1": 0.01},
           "stat_test": {"values": {"dist_threshold": 0.2}}, "n_total": 1, "n_mismatch": 0, "p_value": 1.0, **report}
    (path / "report.json").write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("report, needle", [
    ({"p_value": "x"}, "field 'p_value' must be a number"),
    ({"n_total": "lots"}, "field 'n_total' must be a count"),
    ({"n_mismatch": 10**30}, "field 'n_mismatch' must be a count"),
    ({"distances": {"1": "x"}}, "field 'distances' must be an object of numbers"),
    ({"distances": [0.1]}, "field 'distances' must be an object of numbers"),
    ({"verdict": ["PASS"]}, "field 'verdict' must be a string"),
    ({"throughput_phase": {"summary": {"steady_nonces_per_min": "fast"}}}, "field 'throughput_phase'"),
])
def test_compare_on_a_bundle_with_a_wrong_field_is_one_line(tmp_path, capsys, report, needle):
    good, bad = _bundle(tmp_path / "good"), _bundle(tmp_path / "bad", **report)
    _assert_error(capsys, ["compare", good, bad, "--out", tmp_path / "cmp"], "bad/report.json", needle)


@pytest.mark.parametrize("which", ["report.json", "environment.json", "config.json"])
@pytest.mark.parametrize("content, needle", [("[" * 50000 + "]" * 50000, "nested too deeply"),
                                             ('{"name": "\\udfff"}', "lone UTF-16 surrogate"),
                                             ("[" * 300 + "]" * 300, "nested too deeply")])
def test_compare_on_an_unusable_bundle_file_is_one_line(tmp_path, capsys, which, content, needle):
    good, bad = _bundle(tmp_path / "good"), _bundle(tmp_path / "bad")
    (bad / which).write_text(content)
    _assert_error(capsys, ["compare", good, bad, "--out", tmp_path / "cmp"], f"bad/{which}", needle)


@pytest.mark.parametrize("content, needle", [("[" * 100000 + "]" * 100000, "nested too deeply"),
                                             ('[{"id": "\\ud800", "models": {}}]', "lone UTF-16 surrogate"),
                                             (b'[{"id": "caf\xe9"}]', "not UTF-8 text")])
def test_config_check_on_an_unusable_node_config_is_one_line(tmp_path, capsys, content, needle):
    bad = _write(tmp_path / "node-config.json", content)
    _assert_error(capsys, ["config", "check", "--profile", "h100x4", "--node-config", bad, "--no-vllm"],
                  "node-config.json", needle)
