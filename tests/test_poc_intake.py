"""The intake rule (mlvalidate/poc/intake.py), piece by piece; the fault suite checks it end to end."""

import base64

import numpy as np
import pytest

from mlvalidate.poc.intake import NONCE_LIMIT, Intake, nonce_problem


def b64(values) -> str:
    return base64.b64encode(np.asarray(values, "<f2").tobytes()).decode()


V1, V2 = b64(np.full(12, 0.25)), b64(np.full(12, -0.25))


@pytest.mark.parametrize("nonce", [True, False, 3.0, "5", [1], None, -1, NONCE_LIMIT, {"n": 1}])
def test_only_json_integers_in_range_are_nonces(nonce):
    assert nonce_problem(nonce) is not None
    assert nonce_problem(0) is None and nonce_problem(NONCE_LIMIT - 1) is None


def test_identical_answers_are_harmless_and_different_ones_conflict_across_answers():
    it = Intake(12)
    it.add([{"nonce": 1, "vector_b64": V1}, {"nonce": 2, "vector_b64": V1}], asked={1, 2})
    it.add([{"nonce": 1, "vector_b64": V1}, {"nonce": 2, "vector_b64": V2}], asked={3})  # a later answer
    got = it.result()
    assert got.nonces.tolist() == [1, 2] and got.conflicting == [2] and got.unrequested == [1, 2]
    assert np.isfinite(got.vectors[0]).all() and np.isnan(got.vectors[1]).all()
    assert "2 different answers" in got.problems[2] and 1 not in got.problems


def test_an_unusable_and_a_usable_answer_for_one_nonce_conflict():
    it = Intake(12)
    it.add([{"nonce": 7, "vector_b64": "!" * 32}, {"nonce": 7, "vector_b64": V1}])
    assert it.result().conflicting == [7]


def test_malformed_entries_are_counted_and_listed_never_coerced():
    it = Intake(12)
    it.add([{"nonce": "5", "vector_b64": V1}, ["x"], {"vector_b64": V1}, {"nonce": 5, "vector_b64": V1}])
    it.add("not a list", where="request 2")
    got = it.result()
    assert got.n_malformed == 4 and got.nonces.tolist() == [5] and got.conflicting == []
    assert any("request 2" in m for m in got.malformed) and any("'5'" in m for m in got.malformed)


def test_unusable_vectors_keep_their_nonce_with_a_reason():
    nan = b64([np.nan] + [0.0] * 11)
    it = Intake(12)
    it.add([{"nonce": 1, "vector_b64": nan}, {"nonce": 2, "vector_b64": b64([0.1] * 11)},
            {"nonce": 3, "vector_b64": 5}, {"nonce": 4, "vector_b64": V1}])
    got = it.result()
    assert got.nonces.tolist() == [1, 2, 3, 4] and sorted(got.problems) == [1, 2, 3]
    assert np.isnan(got.vectors[:3]).all() and np.isfinite(got.vectors[3]).all()


@pytest.mark.parametrize("bad", ["!" * 32, b64([0.1] * 11), None, b64([np.inf] + [0.0] * 11)])
def test_one_unusable_vector_among_ten_thousand_is_the_only_one_flagged(bad):
    """Many rows go through the batched decoder; one bad row sends them to the per-row path
    (or, for a non-finite value, is caught after it): either way only that nonce is flagged."""
    rng = np.random.default_rng(4)
    values = (rng.standard_normal((10_000, 12)) / 4).astype("<f2")
    entries = [{"nonce": i, "vector_b64": b64(v)} for i, v in enumerate(values)]
    entries[6_000]["vector_b64"] = bad
    it = Intake(12)
    it.add(entries)
    got = it.result()
    assert list(got.problems) == [6_000] and got.nonces.size == 10_000
    assert np.isnan(got.vectors[6_000]).all()
    keep = np.arange(10_000) != 6_000
    np.testing.assert_array_equal(got.vectors[keep], values[keep].astype(np.float32))
