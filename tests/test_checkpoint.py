"""mlvalidate.weights (checkpoint, headers, loader): strict config/index/header reading,
block-FP8 dequantization, state dicts, and the transformers model the reference engine runs
(incl. MiniMax-M2 forward semantics checked against an independent implementation of
MINIMAX_M2.md §2)."""

import json
import math
import shutil
import struct

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from mlvalidate.weights import checkpoint as ck
from mlvalidate.weights import headers
from mlvalidate.weights import loader
from mlvalidate.errors import CheckpointError


def _one_line(e: CheckpointError) -> str:
    line = e.one_line()
    assert "\n" not in line and " — " in line, line  # what happened — what to do next
    return line


def _copy(src, tmp_path, name="ckpt"):
    return shutil.copytree(src, tmp_path / name)


# ----------------------------------------------------------------------------------------
# config / index / headers
# ----------------------------------------------------------------------------------------
def test_read_config_errors(tmp_path):
    with pytest.raises(CheckpointError) as e:
        ck.read_config(tmp_path / "nope")
    assert "does not exist" in _one_line(e.value)
    with pytest.raises(CheckpointError) as e:
        ck.read_config(tmp_path)
    assert "config.json" in _one_line(e.value)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError) as e:
        ck.read_config(tmp_path)
    assert "not valid JSON" in _one_line(e.value)
    (tmp_path / "config.json").write_text('{"a": 1, "a": 2}')
    with pytest.raises(CheckpointError, match="duplicate key"):
        ck.read_config(tmp_path)


def test_read_index_single_file_without_index(tmp_path):
    save_file({"a": torch.zeros(2, 3), "b": torch.ones(4, dtype=torch.bfloat16)}, str(tmp_path / "model.safetensors"))
    assert ck.read_index(tmp_path) == {"a": "model.safetensors", "b": "model.safetensors"}
    assert ck.tensor_headers(tmp_path) == {"a": ("F32", (2, 3)), "b": ("BF16", (4,))}


def test_read_index_no_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="neither"):
        ck.read_index(tmp_path)


def test_read_index_missing_shard_is_named(tiny_minimax_bf16, tmp_path):
    d = _copy(tiny_minimax_bf16, tmp_path)
    (d / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError) as e:
        ck.read_index(d)
    assert "missing" in _one_line(e.value) and "model-00002-of-00002.safetensors" in str(e.value)


@pytest.mark.parametrize("shard", ["../evil.safetensors", "/abs/x.safetensors", "sub/x.safetensors", "", 7])
def test_read_index_rejects_non_plain_shard_names(tmp_path, shard):
    (tmp_path / ck.INDEX_FILE).write_text(json.dumps({"weight_map": {"a": shard}}))
    with pytest.raises(CheckpointError, match="plain file name"):
        ck.read_index(tmp_path)


def test_read_index_rejects_bad_weight_map(tmp_path):
    (tmp_path / ck.INDEX_FILE).write_text(json.dumps({"metadata": {}}))
    with pytest.raises(CheckpointError, match="weight_map"):
        ck.read_index(tmp_path)


def test_tensor_headers_agree_with_safetensors(tiny_minimax_fp8):
    headers = ck.tensor_headers(tiny_minimax_fp8)
    index = ck.read_index(tiny_minimax_fp8)
    assert set(headers) == set(index)
    names = {"F8_E4M3": torch.float8_e4m3fn, "F32": torch.float32, "BF16": torch.bfloat16}
    for shard in set(index.values()):
        with safe_open(str(tiny_minimax_fp8 / shard), framework="pt") as f:
            for name in f.keys():
                t = f.get_slice(name)
                assert headers[name] == (t.get_dtype(), tuple(t.get_shape()))
                assert names[headers[name][0]] == f.get_tensor(name).dtype


def _write_raw(path, header: dict, data: bytes):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


@pytest.mark.parametrize(
    "header, data, match",
    [
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, "truncated"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 12, "padded"),
        ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "expected 12"),
        ({"a": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, "unknown dtype"),
        ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8, "invalid shape"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8]}}, b"\0" * 8, "data_offsets"),
        (
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            b"\0" * 12,
            "overlapping",
        ),
        ({"__metadata__": {"x": 1}}, b"", "__metadata__"),
    ],
)
def test_safetensors_header_is_strict(tmp_path, header, data, match):
    path = tmp_path / "x.safetensors"
    _write_raw(path, header, data)
    with pytest.raises(CheckpointError, match=match) as e:
        headers.safetensors_header(path)
    _one_line(e.value)


def test_safetensors_header_garbage(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 5) + b"{abc}")
    with pytest.raises(CheckpointError, match="unparseable"):
        headers.safetensors_header(path)
    path.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(CheckpointError, match="header"):
        headers.safetensors_header(path)
    path.write_bytes(b"abc")
    with pytest.raises(CheckpointError, match="too short"):
        headers.safetensors_header(path)


def test_safetensors_header_quotes_the_library_when_it_finds_no_reason(tmp_path, monkeypatch):
    """safe_open decides; when the Python re-read names nothing, the library's words are the message."""
    path = tmp_path / "x.safetensors"
    _write_raw(path, {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8)
    monkeypatch.setattr(headers, "_explain", lambda p: None)
    with pytest.raises(CheckpointError) as e:
        headers.safetensors_header(path)
    line = _one_line(e.value)
    assert line.startswith(f"{path} is not a valid safetensors file (safetensors: ") and "Error while" not in line


def test_reading_headers_and_verify_weights_need_no_torch(tiny_minimax_fp8):
    import subprocess
    import sys

    code = (
        "import sys; from mlvalidate.weights.checkpoint import tensor_headers; "
        "from mlvalidate.hub.verify import verify_weights; "
        f"tensor_headers({str(tiny_minimax_fp8)!r}); verify_weights({str(tiny_minimax_fp8)!r}, revision='0' * 40); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_truncated_shard_is_caught(tiny_minimax_bf16, tmp_path):
    d = _copy(tiny_minimax_bf16, tmp_path)
    shard = d / "model-00001-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        ck.tensor_headers(d)


def test_index_and_shards_must_agree(tiny_minimax_bf16, tmp_path):
    d = _copy(tiny_minimax_bf16, tmp_path)
    index = json.loads((d / ck.INDEX_FILE).read_text())
    name = "model.norm.weight"
    right = index["weight_map"][name]
    wrong = next(s for s in set(index["weight_map"].values()) if s != right)
    index["weight_map"][name] = wrong
    (d / ck.INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="not in it"):
        ck.tensor_headers(d)
    del index["weight_map"][name]
    (d / ck.INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="does not place there"):
        ck.tensor_headers(d)


# ----------------------------------------------------------------------------------------
# block FP8
# ----------------------------------------------------------------------------------------
def _dequant_by_definition(q, s, b0, b1):
    rows, cols = q.shape
    r = torch.arange(rows)[:, None] // b0
    c = torch.arange(cols)[None, :] // b1
    return q.to(torch.float32) * s[r, c]


def _random_fp8(rows, cols, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, cols, generator=g) * 100).clamp(-448, 448).to(torch.float8_e4m3fn)


@pytest.mark.parametrize("shape", [(256, 128), (192, 320), (130, 200), (100, 50), (1, 129)])
def test_dequantize_fp8_block_matches_definition(shape):
    rows, cols = shape
    q = _random_fp8(rows, cols, 1)
    s = torch.rand(math.ceil(rows / 128), math.ceil(cols / 128), generator=torch.Generator().manual_seed(2)) + 0.01
    w = loader.dequantize_fp8_block(q, s)
    assert w.dtype == torch.float32 and w.shape == q.shape
    assert torch.equal(w, _dequant_by_definition(q, s, 128, 128))
    # partial last block: its elements use the last scale row/column, not a neighbour's
    assert torch.equal(w[-1, -1], q[-1, -1].float() * s[-1, -1])


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 40), b0=st.integers(1, 9), b1=st.integers(1, 9))
def test_dequantize_fp8_block_property(rows, cols, b0, b1):
    q = _random_fp8(rows, cols, rows * 100 + cols)
    s = torch.rand(-(-rows // b0), -(-cols // b1), generator=torch.Generator().manual_seed(b0 * 10 + b1)) + 0.01
    assert torch.equal(loader.dequantize_fp8_block(q, s, (b0, b1)), _dequant_by_definition(q, s, b0, b1))


def test_dequantize_fp8_block_rejects_wrong_scale_shape():
    q = _random_fp8(192, 320, 0)
    with pytest.raises(CheckpointError, match=r"needs scales \[2, 3\]"):
        loader.dequantize_fp8_block(q, torch.ones(1, 3))


# ----------------------------------------------------------------------------------------
# state dict
# ----------------------------------------------------------------------------------------
def test_fp8_and_bf16_checkpoints_load_to_identical_weights(tiny_minimax_bf16, tiny_minimax_fp8):
    a = loader.load_state_dict(tiny_minimax_bf16)
    b = loader.load_state_dict(tiny_minimax_fp8)
    assert set(a) == set(b)
    assert not any(n.endswith("_scale_inv") for n in b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert torch.equal(a[name], b[name]), name
        router = name.endswith("block_sparse_moe.gate.weight") or name.endswith("e_score_correction_bias")
        assert a[name].dtype == (torch.float32 if router else torch.bfloat16), name


def test_load_state_dict_dequantizes_fp8_in_fp32_before_the_cast(tiny_minimax_fp8):
    name = "model.layers.1.self_attn.q_proj.weight"
    shard = ck.read_index(tiny_minimax_fp8)[name]
    with safe_open(str(tiny_minimax_fp8 / shard), framework="pt") as f:
        q, s = f.get_tensor(name), f.get_tensor(name + "_scale_inv")
    want = _dequant_by_definition(q, s, 128, 128)
    assert torch.equal(loader.load_state_dict(tiny_minimax_fp8, torch.float32)[name], want)
    assert torch.equal(loader.load_state_dict(tiny_minimax_fp8, torch.bfloat16)[name], want.to(torch.bfloat16))


def test_router_dtype_follows_the_run_dtype_when_wider(tiny_minimax_fp8):
    sd = loader.load_state_dict(tiny_minimax_fp8, torch.float64)
    assert {t.dtype for t in sd.values()} == {torch.float64}
    assert loader.fp32_tensor_names(tiny_minimax_fp8) == {
        n for n in sd if n.endswith("gate.weight") or n.endswith("e_score_correction_bias")
    }


def _add_tensors(ckpt, tensors: dict, shard="model-extra.safetensors"):
    save_file(tensors, str(ckpt / shard))
    index = json.loads((ckpt / ck.INDEX_FILE).read_text())
    index["weight_map"].update(dict.fromkeys(tensors, shard))
    (ckpt / ck.INDEX_FILE).write_text(json.dumps(index))


def test_mtp_layers_beyond_num_hidden_layers_are_ignored(tiny_minimax_bf16, tmp_path):
    d = _copy(tiny_minimax_bf16, tmp_path)
    layers = ck.read_config(d)["num_hidden_layers"]
    mtp = {
        f"model.layers.{layers}.enorm.weight": torch.ones(128, dtype=torch.bfloat16),
        f"model.layers.{layers + 2}.eh_proj.weight": torch.ones(128, 256, dtype=torch.bfloat16),
    }
    _add_tensors(d, mtp)
    sd = loader.load_state_dict(d)
    assert not any(n.startswith(f"model.layers.{layers}.") or n.startswith(f"model.layers.{layers + 2}.") for n in sd)
    assert sd.keys() == loader.load_state_dict(tiny_minimax_bf16).keys()
    loader.load_causal_lm(d)  # and the model sees no unexpected keys


def test_fp8_weight_without_scale_is_refused(tiny_minimax_fp8, tmp_path):
    d = _copy(tiny_minimax_fp8, tmp_path)
    _add_tensors(d, {"model.layers.0.self_attn.extra.weight": torch.zeros(128, 128).to(torch.float8_e4m3fn)})
    with pytest.raises(CheckpointError, match="has no model.layers.0.self_attn.extra.weight_scale_inv"):
        loader.load_state_dict(d)


def test_fp8_tensors_without_quantization_config_are_refused(tiny_minimax_fp8, tmp_path):
    d = _copy(tiny_minimax_fp8, tmp_path)
    cfg = ck.read_config(d)
    del cfg["quantization_config"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="no fp8 quantization_config"):
        loader.load_state_dict(d)


@pytest.mark.parametrize(
    "quant, match",
    [
        ({"quant_method": "awq", "bits": 4}, "not supported"),
        ({"quant_method": "compressed-tensors"}, "not supported"),
        ({"quant_method": "fp8", "weight_block_size": [128]}, "weight_block_size"),
        ({"quant_method": "fp8", "fmt": "float8_e5m2", "weight_block_size": [128, 128]}, "format"),
    ],
)
def test_unsupported_quantization_is_refused(tiny_minimax_bf16, tmp_path, quant, match):
    d = _copy(tiny_minimax_bf16, tmp_path)
    cfg = ck.read_config(d)
    cfg["quantization_config"] = quant
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=match):
        loader.load_state_dict(d)


# ----------------------------------------------------------------------------------------
# the transformers model
# ----------------------------------------------------------------------------------------
def _embeds(cfg_hidden, seed=0, batch=2, seq=24, dtype=torch.bfloat16):
    return torch.randn(batch, seq, cfg_hidden, generator=torch.Generator().manual_seed(seed)).to(dtype)


@pytest.fixture(scope="module")
def minimax_fp8_model(tiny_minimax_fp8):
    return loader.load_causal_lm(tiny_minimax_fp8)


def test_model_shape_and_runtime_config(minimax_fp8_model, tiny_minimax_fp8):
    m = minimax_fp8_model
    cfg = ck.read_config(tiny_minimax_fp8)
    assert type(m).__name__ == "MiniMaxM2ForCausalLM" and not m.training
    assert len(m.model.layers) == cfg["num_hidden_layers"]
    assert isinstance(m.model.norm, torch.nn.Module)
    assert not hasattr(m.config, "quantization_config")
    assert m.config.rope_parameters["partial_rotary_factor"] == 0.5
    assert m.model.embed_tokens.weight.dtype == torch.bfloat16


def test_router_is_float32_and_its_logits_are_computed_in_float32(minimax_fp8_model, tiny_minimax_fp8):
    m = minimax_fp8_model
    sd = loader.load_state_dict(tiny_minimax_fp8)
    seen = []
    hooks = []
    for i, layer in enumerate(m.model.layers):
        assert layer.mlp.gate.weight.dtype == torch.float32
        assert layer.mlp.e_score_correction_bias.dtype == torch.float32
        # the exact F32 checkpoint values, not a bf16 round trip
        assert torch.equal(layer.mlp.gate.weight, sd[f"model.layers.{i}.block_sparse_moe.gate.weight"])
        bias = sd[f"model.layers.{i}.block_sparse_moe.e_score_correction_bias"]
        assert torch.equal(layer.mlp.e_score_correction_bias, bias)
        hook = layer.mlp.gate.register_forward_hook(lambda mod, args, out: seen.append((args[0], out[0], mod.weight)))
        hooks.append(hook)
    try:
        with torch.no_grad():
            m.model(inputs_embeds=_embeds(m.config.hidden_size))
    finally:
        for h in hooks:
            h.remove()
    assert len(seen) == len(m.model.layers)
    for hidden, logits, weight in seen:
        assert hidden.dtype == torch.bfloat16 and logits.dtype == torch.float32
        want = F.linear(hidden.reshape(-1, hidden.shape[-1]).float(), weight)  # hidden cast to fp32 first
        assert torch.equal(logits, want)


def test_fp8_and_bf16_checkpoints_give_the_same_forward(minimax_fp8_model, tiny_minimax_bf16):
    bf16 = loader.load_causal_lm(tiny_minimax_bf16)
    x = _embeds(bf16.config.hidden_size, seed=3)
    with torch.no_grad():
        a = minimax_fp8_model(inputs_embeds=x, output_hidden_states=True)
        b = bf16(inputs_embeds=x, output_hidden_states=True)
    assert len(a.hidden_states) == len(b.hidden_states) == bf16.config.num_hidden_layers + 1
    for ha, hb in zip(a.hidden_states, b.hidden_states):
        torch.testing.assert_close(ha, hb, rtol=1.6e-2, atol=1e-2)  # bf16 tolerance (identical weights: exact)
    torch.testing.assert_close(a.logits, b.logits, rtol=1.6e-2, atol=1e-2)


def _assert_same_model(ours, theirs, router_rounded_to=None):
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        x = a[name]
        if router_rounded_to is not None and x.dtype != b[name].dtype:
            assert name.endswith("gate.weight") or name.endswith("e_score_correction_bias"), name
            x = x.to(router_rounded_to)
        assert x.dtype == b[name].dtype, name
        assert torch.equal(x, b[name]), name


def test_loader_equals_transformers_from_pretrained_minimax(tiny_minimax_bf16):
    from transformers import AutoModelForCausalLM

    # bf16: identical weights, except that transformers rounds the F32 router to bf16
    ours = loader.load_causal_lm(tiny_minimax_bf16)
    theirs = AutoModelForCausalLM.from_pretrained(tiny_minimax_bf16, dtype=torch.bfloat16)
    _assert_same_model(ours, theirs, router_rounded_to=torch.bfloat16)
    # float32: nothing is rounded, so the models and their forwards are identical
    ours = loader.load_causal_lm(tiny_minimax_bf16, dtype=torch.float32)
    theirs = AutoModelForCausalLM.from_pretrained(
        tiny_minimax_bf16, dtype=torch.float32, experts_implementation="eager"
    )
    _assert_same_model(ours, theirs)
    assert ours.config._experts_implementation == "eager"
    x = _embeds(ours.config.hidden_size, seed=4, dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(ours(inputs_embeds=x).logits, theirs.eval()(inputs_embeds=x).logits, rtol=0, atol=0)


def test_loader_equals_transformers_from_pretrained_qwen3(tiny_qwen3):
    from transformers import AutoModelForCausalLM

    ours = loader.load_causal_lm(tiny_qwen3)
    theirs = AutoModelForCausalLM.from_pretrained(tiny_qwen3, dtype=torch.bfloat16).eval()
    assert type(ours).__name__ == "Qwen3ForCausalLM"
    _assert_same_model(ours, theirs)
    assert ours.lm_head.weight.data_ptr() == ours.model.embed_tokens.weight.data_ptr()  # tied, as saved
    x = _embeds(ours.config.hidden_size, seed=5)
    with torch.no_grad():
        assert torch.equal(ours(inputs_embeds=x).logits, theirs(inputs_embeds=x).logits)


def test_load_causal_lm_errors(tiny_minimax_bf16, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist") as e:
        loader.load_causal_lm(tmp_path / "missing")
    assert "make-tiny" in _one_line(e.value)
    with pytest.raises(CheckpointError, match="no config.json"):
        loader.load_causal_lm(tmp_path)
    d = _copy(tiny_minimax_bf16, tmp_path)
    cfg = ck.read_config(d)
    (d / "config.json").write_text(json.dumps({**cfg, "model_type": "not_a_real_arch", "architectures": ["NotReal"]}))
    with pytest.raises(CheckpointError, match="does not know model_type 'not_a_real_arch'") as e:
        loader.load_causal_lm(d)
    assert "upgrade transformers" in _one_line(e.value)
    (d / "config.json").write_text(json.dumps({"model_type": "vit", "architectures": ["ViTModel"]}))
    with pytest.raises(CheckpointError, match="not a causal LM"):
        loader.load_causal_lm(d)


def test_weights_that_do_not_fit_the_config_are_refused(tiny_minimax_bf16, tmp_path):
    d = _copy(tiny_minimax_bf16, tmp_path)
    cfg = ck.read_config(d)
    (d / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": cfg["num_hidden_layers"] + 1}))
    with pytest.raises(CheckpointError, match="does not fit MiniMaxM2ForCausalLM: missing_keys"):
        loader.load_causal_lm(d)


def test_remote_code_pointer_is_ignored(tiny_minimax_bf16, tmp_path):
    """The released config.json has an auto_map to remote code; the loader uses transformers' class."""
    d = _copy(tiny_minimax_bf16, tmp_path)
    cfg = ck.read_config(d)
    cfg["auto_map"] = {"AutoConfig": "configuration_minimax_m2.MiniMaxM2Config",
                       "AutoModelForCausalLM": "modeling_minimax_m2.MiniMaxM2ForCausalLM"}  # fmt: skip
    (d / "config.json").write_text(json.dumps(cfg))
    assert type(loader.load_causal_lm(d)).__module__.startswith("transformers.models.minimax_m2")


# ----------------------------------------------------------------------------------------
# MiniMax-M2 forward semantics (MINIMAX_M2.md §2), from the raw checkpoint tensors
# ----------------------------------------------------------------------------------------
def _spec_forward(sd, cfg, x, deviation=None):
    """Independent float64 MiniMax-M2 forward -> hidden after the final norm.

    deviation (for the negative checks): 'per_head_qk_norm', 'full_rope', 'bias_ignored',
    'bias_in_weights', 'no_renorm', 'softmax', 'interleaved_rope'.
    """
    B, S, H = x.shape
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    rd = hd if deviation == "full_rope" else cfg["rotary_dim"]
    eps, k_top = cfg["rms_norm_eps"], cfg["num_experts_per_tok"]
    W = {n: t.to(torch.float64) for n, t in sd.items()}

    def rms(v, w):
        return v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + eps) * w

    inv = float(cfg["rope_theta"]) ** (-torch.arange(0, rd, 2, dtype=torch.float64) / rd)  # θ^(−2i/rd)
    ang = torch.arange(S, dtype=torch.float64)[:, None] * inv[None, :]  # [S, rd/2]
    cos, sin = ang.cos(), ang.sin()

    def rope(t):  # [B, heads, S, hd]; rotate pairs (i, i + rd/2) of the first rd dims
        r, rest = t[..., :rd], t[..., rd:]
        if deviation == "interleaved_rope":  # pairs (2i, 2i+1) instead
            a, b = r[..., 0::2], r[..., 1::2]
            out = torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1).flatten(-2)
        else:
            a, b = r[..., : rd // 2], r[..., rd // 2 :]
            out = torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)
        return torch.cat((out, rest), dim=-1)

    def qk_norm(t, w, heads):  # [B, S, heads*hd]
        if deviation == "per_head_qk_norm":
            return rms(t.view(B, S, heads, hd), w.view(heads, hd)).reshape(B, S, heads * hd)
        return rms(t, w)  # ONE norm over the whole projection

    causal = torch.full((S, S), float("-inf"), dtype=torch.float64).triu(1)
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = rms(x, W[p + "input_layernorm.weight"])
        q = qk_norm(h @ W[p + "self_attn.q_proj.weight"].T, W[p + "self_attn.q_norm.weight"], nh)
        k = qk_norm(h @ W[p + "self_attn.k_proj.weight"].T, W[p + "self_attn.k_norm.weight"], nkv)
        v = h @ W[p + "self_attn.v_proj.weight"].T
        q = rope(q.view(B, S, nh, hd).transpose(1, 2))
        k = rope(k.view(B, S, nkv, hd).transpose(1, 2)).repeat_interleave(nh // nkv, dim=1)
        v = v.view(B, S, nkv, hd).transpose(1, 2).repeat_interleave(nh // nkv, dim=1)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + causal, dim=-1)
        o = (att @ v).transpose(1, 2).reshape(B, S, nh * hd)
        x = x + o @ W[p + "self_attn.o_proj.weight"].T

        h = rms(x, W[p + "post_attention_layernorm.weight"]).reshape(B * S, H)
        logits = h @ W[p + "block_sparse_moe.gate.weight"].T  # [T, E]
        bias = W[p + "block_sparse_moe.e_score_correction_bias"]
        scores = torch.softmax(logits, -1) if deviation == "softmax" else torch.sigmoid(logits)
        choice = scores if deviation == "bias_ignored" else scores + bias
        idx = torch.topk(choice, k_top, dim=-1).indices
        weights = (scores + bias if deviation == "bias_in_weights" else scores).gather(1, idx)
        if deviation != "no_renorm":
            weights = weights / weights.sum(-1, keepdim=True)
        moe = torch.zeros_like(h)
        for j in range(k_top):
            for e in idx[:, j].unique().tolist():
                rows = idx[:, j] == e
                pe = p + f"block_sparse_moe.experts.{e}."
                hr = h[rows]
                y = (F.silu(hr @ W[pe + "w1.weight"].T) * (hr @ W[pe + "w3.weight"].T)) @ W[pe + "w2.weight"].T
                moe[rows] += weights[rows, j, None] * y
        x = x + moe.view(B, S, H)
    return rms(x, W["model.norm.weight"])


@pytest.fixture(scope="module")
def minimax_float64(tiny_minimax_fp8):
    sd = loader.load_state_dict(tiny_minimax_fp8, torch.float64)
    model = loader.load_causal_lm(tiny_minimax_fp8, dtype=torch.float64)
    x = _embeds(model.config.hidden_size, seed=7, dtype=torch.float64)
    with torch.no_grad():
        got = model.model(inputs_embeds=x).last_hidden_state
    return sd, ck.read_config(tiny_minimax_fp8), x, got


def test_transformers_minimax_m2_matches_the_spec(minimax_float64):
    sd, cfg, x, got = minimax_float64
    want = _spec_forward(sd, cfg, x)
    # transformers computes RoPE cos/sin in float32 even for a float64 model: ~1e-6 relative
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "deviation",
    ["per_head_qk_norm", "full_rope", "interleaved_rope", "bias_ignored", "bias_in_weights", "no_renorm", "softmax"],
)
def test_every_spec_feature_is_visible_in_the_tiny_model(minimax_float64, deviation):
    """Each deviation from §2 moves the output far beyond the tolerance above, so the test
    above would catch it (the fixture has non-unit norms and a non-zero routing bias)."""
    sd, cfg, x, got = minimax_float64
    assert (_spec_forward(sd, cfg, x, deviation) - got).abs().max() > 1e-2
