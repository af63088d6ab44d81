"""Householder reflection, k-dim pick, Haar rotation and poc_vectors (spec §2.2, §3, §9)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import spec_oracle as oracle
from mlvalidate.poc import (
    apply_reflections,
    decode_vectors,
    finite_rows,
    haar_rotate,
    haar_vectors,
    householder_reflect,
    householder_vector,
    pick_indices,
    poc_vectors,
)
from mlvalidate.poc import transform

BH, PK = "TEST_BLOCK", "test_pub_keys_v2"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
FAST = settings(max_examples=25, deadline=None)


def fp16_ulp_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in fp16 ulps between finite fp16 arrays (monotone integer mapping of the bits)."""

    def ordered(x):
        i = np.asarray(x, dtype=np.float16).view(np.int16).astype(np.int32)
        return np.where(i < 0, -32768 - i, i)  # negative floats: reverse order below zero

    return np.abs(ordered(a) - ordered(b))


def hidden_states(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """Last-token hidden states with a few large outlier dims, like a real model's."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    x[:, :: max(d // 7, 1)] *= 20
    return x


# ----------------------------------------------------------------------------------------
# §3.6 pick
# ----------------------------------------------------------------------------------------
PICK_NONCE0 = [127, 602, 1332, 1335, 1515, 1619, 1667, 2186, 2213, 2784, 2851, 2671]  # spec §9


def test_pick_known_answer():
    got = pick_indices(BH, PK, [0], 3072, 12)
    assert got.dtype == torch.int64 and got.shape == (1, 12)
    assert got[0].tolist() == PICK_NONCE0


def test_pick_known_answer_oracle_agrees():
    assert oracle.pick_loop(BH, PK, 0, 3072, 12) == PICK_NONCE0
    scores = oracle.pick_scores_loop(BH, PK, 0, 3072, 12)
    assert max(scores[j] for j in PICK_NONCE0[:-1]) < scores[PICK_NONCE0[-1]]


def check_pick_properties(order: list[int], scores: list[int], k: int):
    assert len(order) == k and len(set(order)) == k
    ranked = sorted(range(len(scores)), key=lambda j: (scores[j], j))
    assert set(order) == set(ranked[:k])  # the k smallest scores, ties by lowest index
    top = max(scores[j] for j in order)
    assert scores[order[-1]] == top  # the largest-score index comes last
    below = [j for j in order if scores[j] < top]
    assert below == sorted(below) and order[: len(below)] == below  # the rest ascending, first


@FAST
@given(
    d=st.integers(1, 700),
    data=st.data(),
    nonces=st.lists(st.integers(0, 10**9), min_size=1, max_size=4, unique=True),
    bh=st.text(alphabet="ABCDEF0123456789_", min_size=1, max_size=12),
)
def test_pick_properties_and_oracle(d, data, nonces, bh):
    k = data.draw(st.integers(1, min(d, 40)), label="k")
    got = pick_indices(bh, PK, nonces, d, k)
    assert got.shape == (len(nonces), k)
    for i, n in enumerate(nonces):
        scores = oracle.pick_scores_loop(bh, PK, n, d, k)
        check_pick_properties(got[i].tolist(), scores, k)
        assert got[i].tolist() == oracle.pick_loop(bh, PK, n, d, k)


def test_pick_seed_uses_underscores_and_k():
    """seed(f"{bh}_{pk}_nonce_{n}_pick_{k}"): a different k gives a different draw."""
    a = pick_indices(BH, PK, [0], 3072, 12)[0].tolist()
    b = pick_indices(BH, PK, [0], 3072, 13)[0].tolist()
    assert set(a) != set(b[:12])
    assert b == oracle.pick_loop(BH, PK, 0, 3072, 13)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8, 9, 10, 20])
def test_pick_ties_at_the_boundary(monkeypatch, k):
    """Scores with many ties (hash replaced): lowest indices win the boundary, in index order.

    Real 32-bit scores almost never tie, so the tie rule is exercised with crafted scores.
    """
    d = 20

    def fake_mm3(keys, seeds):
        score = (keys * 7) % 4  # values 0..3, each held by 5 indices
        return score.to(torch.int64).reshape(1, -1).expand(len(seeds), -1) + seeds.reshape(-1, 1) * 0

    monkeypatch.setattr(transform, "mm3", fake_mm3)
    got = pick_indices(BH, PK, [0, 1], d, k)
    scores = [(j * 7) % 4 for j in range(d)]
    expected = oracle.production_order(scores, k)
    assert got[0].tolist() == expected and got[1].tolist() == expected
    check_pick_properties(expected, scores, k)


def test_pick_not_cpu_topk_order():
    """The production order is not the ascending-score order that CPU topk(sorted=False) gives."""
    idx = torch.arange(3072)
    seed = oracle.seed(f"{BH}_{PK}_nonce_0_pick_12")
    score = oracle.mm3_tensor(idx, seed)
    by_score = torch.topk(-score, 12, largest=True, sorted=True).indices.tolist()
    got = pick_indices(BH, PK, [0], 3072, 12)[0].tolist()
    assert sorted(got) == sorted(by_score) and got != by_score


@pytest.mark.parametrize("k", [0, 13])
def test_pick_k_out_of_range(k):
    with pytest.raises(ValueError):
        pick_indices(BH, PK, [0], 12, k)


# ----------------------------------------------------------------------------------------
# §3.7 Haar rotation
# ----------------------------------------------------------------------------------------
def test_haar_vectors_match_oracle():
    nonces = [0, 1, 199]
    u = haar_vectors(BH, PK, nonces, 12)
    assert u.shape == (3, 11, 12) and u.dtype == torch.float32
    for i, n in enumerate(nonces):
        expected = torch.stack(oracle.haar_vectors_loop(BH, PK, n, 12))
        np.testing.assert_allclose(u[i].numpy(), expected.numpy(), rtol=0, atol=2e-7)
    np.testing.assert_allclose(torch.linalg.vector_norm(u.double(), dim=-1).numpy(), 1.0, atol=1e-6)


@FAST
@given(st.integers(1, 16), st.lists(st.integers(0, 10**6), min_size=1, max_size=5, unique=True), st.integers(0, 2**31))
def test_haar_preserves_norm_and_inverts(k, nonces, seed):
    x = torch.randn(len(nonces), k, generator=torch.Generator().manual_seed(seed))
    y = haar_rotate(BH, PK, nonces, x)
    np.testing.assert_allclose(
        torch.linalg.vector_norm(y, dim=-1).numpy(), torch.linalg.vector_norm(x, dim=-1).numpy(), rtol=1e-5
    )
    back = apply_reflections(y, haar_vectors(BH, PK, nonces, k), reverse=True)
    np.testing.assert_allclose(back.numpy(), x.numpy(), rtol=0, atol=1e-5 * float(x.abs().max()) + 1e-7)
    for i, n in enumerate(nonces):
        np.testing.assert_allclose(y[i].numpy(), oracle.haar_loop(BH, PK, n, x[i]).numpy(), rtol=0, atol=1e-5)


def test_haar_step_order_matters():
    """Reflections are applied j = 0..k-2 in order; the reverse order is a different rotation."""
    x = torch.randn(4, 12, generator=torch.Generator().manual_seed(1))
    u = haar_vectors(BH, PK, [0, 1, 2, 3], 12)
    forward = apply_reflections(x, u)
    backward_order = apply_reflections(x, u.flip(1))
    assert (forward - backward_order).abs().max() > 1e-2
    np.testing.assert_allclose(forward.numpy(), haar_rotate(BH, PK, [0, 1, 2, 3], x).numpy(), atol=0)


# ----------------------------------------------------------------------------------------
# §3 steps 5-9: poc_vectors
# ----------------------------------------------------------------------------------------
def test_poc_vectors_match_oracle_and_are_unit():
    nonces = list(range(48))
    h = hidden_states(len(nonces), 3072)
    got = poc_vectors(h, BH, PK, nonces, k=12)
    assert got.dtype == np.float16 and got.shape == (48, 12)
    expected = np.stack([oracle.poc_vector_loop(h[i], BH, PK, n, 12) for i, n in enumerate(nonces)])
    ulps = fp16_ulp_diff(got, expected)
    assert ulps.max() <= 1
    assert (ulps == 0).mean() >= 0.95
    norms = np.linalg.norm(got.astype(np.float64), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-3)


def test_poc_vectors_scale_invariant_and_dtype():
    nonces = [3, 4]
    h = hidden_states(2, 512, seed=3)
    a = poc_vectors(h, BH, PK, nonces, k=12)
    # step 5 normalises first: a power-of-two scale changes nothing
    np.testing.assert_array_equal(poc_vectors(h * 4.0, BH, PK, nonces, k=12), a)
    # bf16 input is upcast to float32; only the bf16 rounding of the input (2**-9 relative) shows
    b = poc_vectors((h * 37.0).to(torch.bfloat16), BH, PK, nonces, k=12)
    assert b.dtype == np.float16
    np.testing.assert_allclose(b.astype(np.float32), a.astype(np.float32), atol=0.01)


def test_poc_vectors_nan_row():
    nonces = [0, 1, 2]
    h = hidden_states(3, 256, seed=5)
    h[1, 17] = float("nan")
    got = poc_vectors(h, BH, PK, nonces, k=12)
    assert np.isnan(got[1]).all()
    assert finite_rows(got).tolist() == [True, False, True]
    clean = poc_vectors(h[[0, 2]], BH, PK, [0, 2], k=12)
    np.testing.assert_array_equal(got[[0, 2]], clean)


def test_finite_rows_flags_any_nan_only():
    v = np.array([[0.5, np.nan, 0.5], [0.5, 0.5, 0.5], [np.inf, 0.0, 0.0], [np.nan] * 3], dtype=np.float16)
    # one NaN drops the row; Inf does not (the node tests isnan only, spec §3 step 4)
    assert finite_rows(v).tolist() == [False, True, True, False]


def test_poc_vectors_shape_check():
    with pytest.raises(ValueError):
        poc_vectors(torch.randn(3, 64), BH, PK, [0, 1], k=12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_poc_vectors_cuda_matches_cpu():
    nonces = list(range(32))
    h = hidden_states(32, 3072, seed=7)
    cpu = poc_vectors(h, BH, PK, nonces, k=12)
    gpu = poc_vectors(h.cuda(), BH, PK, nonces, k=12)
    assert fp16_ulp_diff(cpu, gpu).max() <= 1
    assert pick_indices(BH, PK, nonces, 3072, 12, device="cuda").cpu().tolist() == pick_indices(
        BH, PK, nonces, 3072, 12
    ).tolist()


# ----------------------------------------------------------------------------------------
# §2.2 the per-layer reflection
# ----------------------------------------------------------------------------------------
def test_householder_reflect_bf16_matches_float64():
    v = householder_vector(BH, 0, 3072)
    x = (torch.randn(8, 3072, generator=torch.Generator().manual_seed(2)) * 3).to(torch.bfloat16)
    got = householder_reflect(x, v)
    assert got.dtype == torch.bfloat16 and got.shape == x.shape
    exact = oracle.householder_reflect_f64(x, v)
    # bf16 has 8 mantissa bits: per element, error ~ a few bf16 ulps of the larger operand
    scale = torch.maximum(x.double().abs(), exact.abs()) + 2 * (x.double() @ v.double()).abs()[:, None] * v.abs()
    assert ((got.double() - exact).abs() <= 4 * 2.0**-8 * scale + 1e-30).all()


def test_householder_reflect_involution_and_norm():
    v = householder_vector(BH, 5, 1024)
    x32 = torch.randn(4, 1024, generator=torch.Generator().manual_seed(9))
    # float32: H is an involution and an isometry up to float32 rounding
    y32 = householder_reflect(x32, v)
    np.testing.assert_allclose(householder_reflect(y32, v).numpy(), x32.numpy(), atol=1e-5)
    np.testing.assert_allclose(
        torch.linalg.vector_norm(y32, dim=-1).numpy(), torch.linalg.vector_norm(x32, dim=-1).numpy(), rtol=1e-5
    )
    # bf16: involution up to a few bf16 roundings
    x = x32.to(torch.bfloat16)
    back = householder_reflect(householder_reflect(x, v), v)
    err = (back.double() - x.double()).abs()
    assert float(err.max()) <= 0.05 * float(x.double().abs().max())
    rel = torch.linalg.vector_norm(back.double() - x.double()) / torch.linalg.vector_norm(x.double())
    assert float(rel) <= 0.01


def test_householder_reflect_is_in_activation_dtype():
    """v is cast to bf16 first and the arithmetic is bf16: differs from a float32 reflection cast."""
    v = householder_vector(BH, 0, 3072)
    x = torch.randn(16, 3072, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16)
    got = householder_reflect(x, v)
    vb = v.to(torch.bfloat16)
    dot = (x * vb).sum(dim=-1, keepdim=True)
    assert dot.dtype == torch.bfloat16
    assert torch.equal(got, x - 2 * dot * vb)
    via_f32 = householder_reflect(x.float(), v).to(torch.bfloat16)
    assert not torch.equal(got, via_f32)


# ----------------------------------------------------------------------------------------
# The real MiniMax golden vectors: only the production pick order gives per-dim structure
# ----------------------------------------------------------------------------------------
def same_dim_sign_agreement(pre: np.ndarray, labels: np.ndarray) -> float:
    """Among all pairs of entries (from different nonces) labelled with the same hidden dim,
    the fraction whose pre-rotation values have the same sign."""
    order = np.argsort(labels.ravel(), kind="stable")
    dims = labels.ravel()[order]
    positive = pre.ravel()[order] > 0
    same = total = 0
    for group in np.split(positive, np.flatnonzero(np.diff(dims)) + 1):
        pos, m = int(group.sum()), group.size
        same += pos * (pos - 1) // 2 + (m - pos) * (m - pos - 1) // 2
        total += m * (m - 1) // 2
    return same / total


@pytest.mark.parametrize(
    "file, hidden",
    [
        ("minimaxai-minimax-m2.7.json", 3072),  # spec §6/§7
        ("moonshotai-kimi-k2.6.json", 7168),  # HF config hidden_size
        ("qwen-qwen3-235b-a22b-instruct-2507-fp8-deepgemm.json", 4096),  # HF config hidden_size
    ],
)
def test_golden_vectors_show_per_dim_structure_only_under_production_order(file, hidden):
    """Invert the Haar rotation of the published vectors: y' = the normalised picked dims.

    The final-norm hidden state of the last token has a per-dimension sign bias that is
    shared by all nonces (same weights, same final RMSNorm gain). Two nonces that happen
    to pick the same hidden dim therefore tend to see values of the same sign there; this
    is visible only if each entry of y' is labelled with the dim it really came from.
    Labelling by the production order (§3.6) gives ~0.69-0.79 same-sign pairs; ascending
    score (CPU topk) or descending score give ~0.5, as do random within-nonce permutations.
    Ascending index shares the production labels up to the position of the largest-score
    index (about half of them), so it lands in between (~0.56-0.59).
    """
    ref = json.loads((ARTIFACTS / file).read_text())
    bh, pk, k = ref["block_hash"], ref["public_key"], ref["k_dim"]
    nonces = [a["nonce"] for a in ref["artifacts"]]
    golden = torch.from_numpy(decode_vectors([a["vector_b64"] for a in ref["artifacts"]]))
    pre = apply_reflections(golden, haar_vectors(bh, pk, nonces, k), reverse=True).numpy()
    np.testing.assert_allclose(np.linalg.norm(pre, axis=1), 1.0, atol=1e-3)

    production = pick_indices(bh, pk, nonces, hidden, k).numpy()
    seeds = torch.tensor([oracle.seed(f"{bh}_{pk}_nonce_{n}_pick_{k}") for n in nonces])
    score = transform.mm3(torch.arange(hidden), seeds).numpy()
    by_score = np.take_along_axis(production, np.argsort(np.take_along_axis(score, production, 1), 1), 1)
    ascending_index = np.sort(production, axis=1)

    agree = same_dim_sign_agreement(pre, production)
    gen = np.random.default_rng(0)
    null = [same_dim_sign_agreement(pre, gen.permuted(production, axis=1)) for _ in range(30)]
    assert agree >= 0.65
    assert agree > max(null) + 0.1  # far outside the label-shuffled distribution
    assert same_dim_sign_agreement(pre, by_score) <= 0.56
    assert same_dim_sign_agreement(pre, by_score[:, ::-1]) <= 0.56
    assert same_dim_sign_agreement(pre, ascending_index) <= agree - 0.08
