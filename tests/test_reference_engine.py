"""The reference engine: hook placement, batch/dtype stability, FP8 round trip, other causal LMs,
NaN dropping, and that the tiny model separates honest variation from a 4-bit cheater."""

import numpy as np
import pytest
import torch

from mlvalidate.engines.base import PocParams
from mlvalidate.engines.reference import ReferenceEngine, poc_last_hidden
from mlvalidate.poc import householder_reflect, householder_vector, input_embeddings, poc_vectors

PARAMS = PocParams(block_hash="TEST_BLOCK", public_key="test_pub_keys_v2", seq_len=64)


def l2(a, b):
    return np.linalg.norm(a.astype(np.float32) - b.astype(np.float32), axis=1)


@pytest.fixture(scope="module")
def fp32_engine(tiny_minimax_fp8):
    return ReferenceEngine(tiny_minimax_fp8, dtype="fp32")


@pytest.fixture(scope="module")
def bf16_engine(tiny_minimax_fp8):
    return ReferenceEngine(tiny_minimax_fp8, dtype="bf16")


def _by_hand(model, x, block_hash, reflect_before=False):
    """Run the decoder layers one by one, reflecting the stream between them (spec §2.3)."""
    m = model.model
    S, D = x.shape[1], x.shape[2]
    pos = torch.arange(S).unsqueeze(0)
    pe = m.rotary_emb(x, position_ids=pos)
    h = x
    with torch.inference_mode():
        for i, layer in enumerate(m.layers):
            v = householder_vector(block_hash, i, D)
            if reflect_before:
                h = householder_reflect(h, v)
            h = layer(h, attention_mask=None, position_ids=pos, position_embeddings=pe)
            h = h[0] if isinstance(h, tuple) else h
            if not reflect_before:
                h = householder_reflect(h, v)
        return m.norm(h)[:, -1, :].float()


def test_hooked_forward_equals_layer_by_layer_by_hand(fp32_engine):
    model = fp32_engine.model
    x = input_embeddings("TEST_BLOCK", "pk", [0, 1, 2], 32, model.config.hidden_size, dtype=torch.float32)
    hooked = poc_last_hidden(model, x, "TEST_BLOCK")
    by_hand = _by_hand(model, x, "TEST_BLOCK")
    torch.testing.assert_close(hooked, by_hand, rtol=1e-5, atol=1e-5)
    # the comparison can fail: the same reflections placed before each layer give other states
    wrong = _by_hand(model, x, "TEST_BLOCK", reflect_before=True)
    assert (wrong - by_hand).norm() > 1e-2 * by_hand.norm()
    # and the hooks are gone after the PoC forward: a plain forward differs from the hooked one
    with torch.inference_mode():
        plain = model.model(inputs_embeds=x, use_cache=False).last_hidden_state[:, -1].float()
    assert (plain - hooked).norm() > 1e-2 * hooked.norm()
    assert all(not layer._forward_hooks for layer in model.model.layers)


def test_hooked_forward_by_hand_in_bf16(bf16_engine):
    model = bf16_engine.model
    x = input_embeddings("TEST_BLOCK", "pk", [5, 6], 32, model.config.hidden_size, dtype=torch.bfloat16)
    torch.testing.assert_close(poc_last_hidden(model, x, "TEST_BLOCK"), _by_hand(model, x, "TEST_BLOCK"))


def test_router_stays_fp32_in_a_bf16_engine(bf16_engine):
    mlp = bf16_engine.model.model.layers[0].mlp
    assert mlp.gate.weight.dtype == torch.float32
    assert mlp.e_score_correction_bias.dtype == torch.float32
    assert mlp.experts.down_proj.dtype == torch.bfloat16


def test_fp32_batch_sizes_agree(fp32_engine):
    nonces = list(range(12))
    a = fp32_engine.compute(nonces, PARAMS, batch_size=12)
    b = fp32_engine.compute(nonces, PARAMS, batch_size=5)
    assert a.nonces.tolist() == b.nonces.tolist() == nonces
    assert l2(a.vectors, b.vectors).max() < 1e-3
    assert len(a.batch_seconds) == 1 and len(b.batch_seconds) == 3  # chunks of 5, 5, 2


def test_bf16_batch_sizes_stay_under_the_threshold(bf16_engine):
    nonces = list(range(12))
    a = bf16_engine.compute(nonces, PARAMS, batch_size=12)
    b = bf16_engine.compute(nonces, PARAMS, batch_size=4)
    assert l2(a.vectors, b.vectors).max() < 0.2  # the demo's gate; on CPU they are in fact equal


def test_vectors_are_poc_vectors_of_the_last_hidden_state(fp32_engine):
    nonces = [3, 9]
    res = fp32_engine.compute(nonces, PARAMS, batch_size=2)
    x = input_embeddings(PARAMS.block_hash, PARAMS.public_key, nonces, PARAMS.seq_len,
                         fp32_engine.hidden_size, dtype=torch.float32)
    want = poc_vectors(poc_last_hidden(fp32_engine.model, x, PARAMS.block_hash),
                       PARAMS.block_hash, PARAMS.public_key, nonces)
    np.testing.assert_array_equal(res.vectors, want)
    assert res.vectors.dtype == np.float16 and res.vectors.shape == (2, 12)
    assert np.allclose(np.linalg.norm(res.vectors.astype(np.float32), axis=1), 1, atol=2e-3)


def test_fp8_checkpoint_matches_its_dequantized_bf16_twin(tiny_minimax_fp8, tiny_minimax_bf16):
    # in bf16 (production's activation dtype) both load the same bf16 weights: FP8 x scale
    # dequantized in fp32, then rounded to bf16 — which is what the bf16 twin stores
    nonces = list(range(6))
    a = ReferenceEngine(tiny_minimax_fp8, dtype="bf16").compute(nonces, PARAMS, batch_size=6)
    b = ReferenceEngine(tiny_minimax_bf16, dtype="bf16").compute(nonces, PARAMS, batch_size=6)
    assert l2(a.vectors, b.vectors).max() < 1e-3


def test_other_params_give_other_vectors(fp32_engine):
    base = fp32_engine.compute([0, 1], PARAMS, batch_size=2).vectors
    for other in (
        PocParams("OTHER_BLOCK", PARAMS.public_key, PARAMS.seq_len),
        PocParams(PARAMS.block_hash, "other_key", PARAMS.seq_len),
        PocParams(PARAMS.block_hash, PARAMS.public_key, PARAMS.seq_len, stronger_rng=True),
    ):
        assert l2(base, fp32_engine.compute([0, 1], other, batch_size=2).vectors).min() > 0.05


def test_a_dense_qwen3_runs_too(tiny_qwen3):
    res = ReferenceEngine(tiny_qwen3, dtype="fp32").compute([0, 1, 2], PARAMS, batch_size=2)
    assert res.vectors.shape == (3, 12) and np.isfinite(res.vectors.astype(np.float32)).all()
    assert res.info["architecture"] == "Qwen3ForCausalLM"


def test_nan_rows_are_dropped_with_their_nonce(fp32_engine, monkeypatch):
    import mlvalidate.engines.reference as ref_mod

    real = ref_mod.poc_last_hidden

    def poisoned(model, x, block_hash):
        h = real(model, x, block_hash).clone()
        h[1, 0] = float("nan")  # the second nonce of every chunk
        return h

    monkeypatch.setattr(ref_mod, "poc_last_hidden", poisoned)
    res = fp32_engine.compute([10, 11, 12, 13], PARAMS, batch_size=2)
    assert res.nonces.tolist() == [10, 12]
    assert res.requested == [10, 11, 12, 13] and res.vectors.shape == (2, 12)


@pytest.mark.slow
def test_tiny_model_separates_honest_variation_from_a_4bit_cheater(tiny_minimax_fp8, tmp_path):
    """The property the demo relies on, at the demo's seq_len on fewer nonces."""
    from mlvalidate.fixtures.quantize import write_quantized_copy

    params = PocParams("TEST_BLOCK", "test_pub_keys_v2", seq_len=256)
    nonces = list(range(64))
    ref = ReferenceEngine(tiny_minimax_fp8, dtype="bf16").compute(nonces, params, batch_size=32).vectors
    honest = ReferenceEngine(tiny_minimax_fp8, dtype="fp32").compute(nonces, params, batch_size=16).vectors
    cheat_dir = write_quantized_copy(tiny_minimax_fp8, tmp_path / "int4", bits=4, group_size=32)
    cheat = ReferenceEngine(cheat_dir, dtype="fp32").compute(nonces, params, batch_size=32).vectors
    d_honest, d_cheat = l2(ref, honest), l2(ref, cheat)
    assert 0 < np.median(d_honest) < 0.05
    assert np.median(d_cheat) > 0.3
    gate = 0.2  # the demo's
    assert (d_honest > gate).mean() < 0.12  # the chain's p_mismatch 0.1 tolerates ~13 % at 200 nonces
    assert (d_cheat > gate).mean() > 0.8


def _save_tiny(kind, path):
    """A tiny DeepSeek-V3 (Kimi-K2 style MLA + MoE) or Qwen3-MoE, in transformers' own layout."""
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

    common = dict(vocab_size=64, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                  num_hidden_layers=2, num_experts_per_tok=2, bos_token_id=0, eos_token_id=1)
    if kind == "deepseek_v3":
        cfg, cls = DeepseekV3Config(**common, first_k_dense_replace=1, num_attention_heads=4, num_key_value_heads=4,
                                    n_routed_experts=4, n_group=1, topk_group=1, q_lora_rank=32, kv_lora_rank=16,
                                    qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16), DeepseekV3ForCausalLM
    else:
        cfg, cls = Qwen3MoeConfig(**common, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                  num_experts=4), Qwen3MoeForCausalLM
    torch.manual_seed(0)
    cls(cfg).save_pretrained(path)
    return path, cls.__name__


@pytest.mark.parametrize("kind", ["deepseek_v3", "qwen3_moe"])
def test_other_moe_architectures_run(kind, tmp_path):
    path, arch = _save_tiny(kind, tmp_path / kind)
    engine = ReferenceEngine(path, dtype="fp32")
    a = engine.compute([0, 1, 2], PARAMS, batch_size=3)
    b = engine.compute([0, 1, 2], PARAMS, batch_size=1)
    assert engine.describe()["architecture"] == arch
    assert a.vectors.shape == (3, 12) and l2(a.vectors, b.vectors).max() < 1e-3
