"""Golden references: shipped byte-for-byte, strict schema, lookup by model id, stat-test provenance."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from mlvalidate.artifacts import load_computed, load_reference, reference_document, resolve_stat_test, write_json
from mlvalidate.reference_lookup import PACKAGE_ARTIFACTS, find_reference, safe_id
from mlvalidate.errors import ReferenceError_
from mlvalidate.poc.codec import encode_vector

SHARED = Path(__file__).resolve().parents[2] / "shared" / "artifacts"
MINIMAX = PACKAGE_ARTIFACTS / "minimaxai-minimax-m2.7.json"


def test_minimax_reference_is_the_published_file():
    data = MINIMAX.read_bytes()
    assert len(data) == 18504
    assert hashlib.sha256(data).hexdigest() == "04862d18ee83d42fdfc39210570d1e9c4963c25537c801b62f0b836c64f1eb47"


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared/ not beside the checkout")
def test_every_shared_reference_is_shipped_byte_for_byte():
    names = sorted(p.name for p in SHARED.glob("*.json"))
    assert names, "no shared references found"
    for name in names:
        assert (PACKAGE_ARTIFACTS / name).read_bytes() == (SHARED / name).read_bytes(), name


@pytest.mark.parametrize(
    "model,stem",
    [
        ("MiniMaxAI/MiniMax-M2.7", "minimaxai-minimax-m2.7"),
        ("Qwen/Qwen3-0.6B", "qwen-qwen3-0.6b"),
        ("a\\b:c d//e", "a-b-c-d-e"),
    ],
)
def test_safe_id(model, stem):
    assert safe_id(model) == stem


@pytest.mark.parametrize("path", sorted(PACKAGE_ARTIFACTS.glob("*.json")), ids=lambda p: p.name)
def test_every_shipped_reference_loads_and_is_found_by_its_model_id(path):
    ref = load_reference(path)
    found = find_reference(ref.model)
    exact = path.parent / (safe_id(ref.model) + ".json")
    if exact.is_file():  # the file named after the model id wins (two Qwen-235B files share one id)
        assert found.resolve() == exact.resolve()
    else:  # e.g. zai-org-glm-5.3-flash-h100-tp8.json: the one <safe_id>-*.json naming this model
        assert found.resolve() == path.resolve()
    assert load_reference(found).model == ref.model
    resolve_stat_test(ref)  # every shipped stat test is one that can fail
    assert ref.vectors.shape == (ref.n, ref.k_dim)
    norms = np.linalg.norm(ref.vectors, axis=1)
    assert np.all(np.abs(norms - 1) < 2e-3)
    assert len(np.unique(ref.nonces)) == ref.n


def test_minimax_values():
    ref = load_reference("MiniMaxAI/MiniMax-M2.7", model="MiniMaxAI/MiniMax-M2.7")
    assert (ref.n, ref.seq_len, ref.k_dim) == (200, 1024, 12)
    assert (ref.block_hash, ref.public_key) == ("TEST_BLOCK", "test_pub_keys_v2")
    assert ref.nonces.tolist() == list(range(200))
    norms = np.linalg.norm(ref.vectors.astype(np.float64), axis=1)
    assert norms.min() == pytest.approx(0.99973, abs=1e-5) and norms.max() == pytest.approx(1.00028, abs=1e-5)


def test_stat_test_provenance_default_reference_cli():
    ref = load_reference("Qwen/Qwen3-0.6B")  # dist_threshold only, no stat_test
    st = resolve_stat_test(ref)
    assert st.values.as_dict() == {"dist_threshold": 0.2, "p_mismatch": 0.001, "fraud_threshold": 0.01}
    assert st.sources == {"dist_threshold": "reference", "p_mismatch": "server-default", "fraud_threshold": "server-default"}
    st = resolve_stat_test(ref, {"p_mismatch": 0.1, "fraud_threshold": None})
    assert st.values.p_mismatch == 0.1 and st.sources["p_mismatch"] == "cli"
    assert st.sources["fraud_threshold"] == "server-default"
    st = resolve_stat_test(None)
    assert set(st.sources.values()) == {"server-default"} and st.values.dist_threshold == 0.02


def test_stat_test_dist_threshold_inside_stat_test_is_ignored(tmp_path):
    doc = json.loads(MINIMAX.read_text())
    doc["stat_test"]["dist_threshold"] = 0.01
    p = write_json(tmp_path / "r.json", doc)
    st = resolve_stat_test(load_reference(p))
    assert st.values.dist_threshold == 0.75 and st.sources["dist_threshold"] == "reference"


def _doc(**changes):
    doc = json.loads(MINIMAX.read_text())
    doc.update(changes)
    return doc


def _nan_b64():
    return encode_vector(np.full(12, np.nan, dtype=np.float16))


MALFORMED = {
    "missing field": (lambda d: d.pop("block_hash"), "missing field(s): block_hash"),
    "k_dim != vector length": (
        lambda d: (d.update(k_dim=8), d["encoding"].update(k_dim=8)),
        "nonce 0: 24 bytes, expected 16 for k_dim=8",
    ),
    "encoding k_dim != k_dim": (lambda d: d.update(k_dim=8), "does not match the PoC v2 encoding"),
    "invalid base64": (lambda d: d["artifacts"][3].update(vector_b64="!!!!" * 8), "nonce 3: invalid base64"),
    "non-finite": (lambda d: d["artifacts"][5].update(vector_b64=_nan_b64()), "nonce 5: non-finite"),
    "duplicate nonces": (lambda d: d["artifacts"][7].update(nonce=6), "duplicate nonces: [6]"),
    "empty artifacts": (lambda d: d.update(artifacts=[]), "non-empty list"),
    "seq_len not int": (lambda d: d.update(seq_len="1024"), "'seq_len' must be an integer"),
    "bad nonce": (lambda d: d["artifacts"][0].update(nonce=-1), "non-negative integer"),
    "wrong encoding": (lambda d: d["encoding"].update(dtype="bf16"), "does not match the PoC v2 encoding"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_reference_is_one_clear_error(tmp_path, case):
    mutate, expected = MALFORMED[case]
    doc = json.loads(MINIMAX.read_text())
    mutate(doc)
    p = write_json(tmp_path / "bad.json", doc)
    with pytest.raises(ReferenceError_) as e:
        load_reference(p)
    msg = e.value.one_line()
    assert expected in msg and "\n" not in msg


def test_bad_json_and_missing_file(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{"model": ')
    with pytest.raises(ReferenceError_, match="not valid JSON"):
        load_reference(p)
    with pytest.raises(ReferenceError_, match="not found"):
        load_reference(tmp_path / "nope.json")
    with pytest.raises(ReferenceError_, match="no golden reference for model"):
        load_reference("nobody/no-such-model")


def test_model_must_match_the_requested_one():
    with pytest.raises(ReferenceError_, match="is for model 'MiniMaxAI/MiniMax-M2.7', not 'Qwen/Qwen3-0.6B'"):
        load_reference(MINIMAX, model="Qwen/Qwen3-0.6B")


def test_computed_file_marks_bad_vectors_invalid_instead_of_failing(tmp_path):
    doc = json.loads(MINIMAX.read_text())
    doc["artifacts"][1]["vector_b64"] = ""
    doc["artifacts"][2]["vector_b64"] = _nan_b64()
    doc["artifacts"][3]["vector_b64"] = "AAAA"
    got = load_computed(write_json(tmp_path / "c.json", doc))
    assert got.valid.tolist()[:5] == [True, False, False, False, True]
    assert set(got.problems) == {1, 2, 3}
    assert np.isnan(got.vectors[1:4]).all() and np.isfinite(got.vectors[[0, 4]]).all()


def test_reference_document_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    v = rng.standard_normal((5, 12)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    doc = reference_document(
        model="org/tiny", seq_len=16, k_dim=12, block_hash="B", public_key="P", nonces=[3, 1, 4, 15, 9],
        vectors=v.astype(np.float16), dist_threshold=0.5, stat_test={"p_mismatch": 0.1, "fraud_threshold": 0.05},
        source="test", collection_batch_size=2,
    )
    p = write_json(tmp_path / "x.json", doc)
    text = p.read_text()
    assert text.endswith("}\n") and text == json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    ref = load_reference(p)
    assert ref.nonces.tolist() == [3, 1, 4, 15, 9] and ref.collection_batch_size == 2
    np.testing.assert_array_equal(ref.vectors, v.astype(np.float16).astype(np.float32))


def test_inspect_without_a_reference_lists_every_shipped_one(capsys):
    from mlvalidate.cli import main

    assert main(["inspect"]) == 0
    out = capsys.readouterr().out
    for path in sorted(PACKAGE_ARTIFACTS.glob("*.json")):
        doc = json.loads(path.read_text())
        line = next(ln for ln in out.splitlines() if ln.endswith(path.name))
        assert line.startswith(doc["model"]) and f" {len(doc['artifacts'])} " in line
    assert "(unreadable)" not in out


@pytest.mark.parametrize("path", sorted(PACKAGE_ARTIFACTS.glob("*.json")), ids=lambda p: p.name)
def test_inspect_every_shipped_reference(path, capsys):
    from mlvalidate.cli import main

    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"model         {json.loads(path.read_text())['model']}" in out and "fraud declared at >=" in out


def test_a_stat_test_cannot_fail_exactly_when_it_has_no_fraud_cutoff():
    """stat_test_problem decides "even n/n mismatches are not fraud" in closed form (p**n, so reading a
    reference imports no scipy.stats) and by the binomial test near the threshold: it must agree with the
    fraud cutoff the verdict's test gives, thresholds placed exactly on p**n and one ulp either side included."""
    from mlvalidate.artifacts import stat_test_problem
    from mlvalidate.poc.stats import binomial_p_value, fraud_cutoff

    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(400):
        n = int(rng.choice([1, 2, 3, 5, 10, 32, 200, 2000]))
        p = float(rng.choice([0.001, 0.1, 0.5, 0.9, 0.99, rng.uniform(0.01, 0.999)]))
        f = binomial_p_value(n, n, p)
        f = float(rng.choice([f, np.nextafter(f, 0.0), np.nextafter(f, 1.0), 10 ** rng.uniform(-30, -0.01)]))
        if not 0 < f < 1:
            continue
        problem = stat_test_problem({"dist_threshold": 0.2, "p_mismatch": p, "fraud_threshold": f}, n)
        assert (problem is not None) == (fraud_cutoff(n, p, f) is None), (n, p, f, problem)
        checked += 1
    assert checked > 300
