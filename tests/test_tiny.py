"""mlvalidate.fixtures.tiny: tiny MiniMax-M2 checkpoints in the released checkpoint's layout,
their tokenizer, determinism, the output-directory policy, and the make-tiny command."""

import hashlib
import json
import math

import pytest
import torch
from safetensors import safe_open

from mlvalidate.cli import build_parser, main
from mlvalidate.weights import checkpoint as ck
from mlvalidate.weights import loader
from mlvalidate.fixtures import tiny
from mlvalidate.errors import CheckpointError

H, L, E, I, HEADS, KV, HD, V = 128, 4, 8, 128, 4, 2, 64, 512  # make_tiny's defaults


def _expected_layout(fp8: bool) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Every tensor of the released checkpoint, scaled down: name -> (dtype, shape)."""
    proj = "F8_E4M3" if fp8 else "BF16"
    out = {
        "model.embed_tokens.weight": ("BF16", (V, H)),
        "model.norm.weight": ("BF16", (H,)),
        "lm_head.weight": ("BF16", (V, H)),
    }

    def projection(name, rows, cols):
        out[name] = (proj, (rows, cols))
        if fp8:
            out[name + "_scale_inv"] = ("F32", (math.ceil(rows / 128), math.ceil(cols / 128)))

    for layer in range(L):
        p = f"model.layers.{layer}."
        out[p + "input_layernorm.weight"] = ("BF16", (H,))
        out[p + "post_attention_layernorm.weight"] = ("BF16", (H,))
        out[p + "self_attn.q_norm.weight"] = ("BF16", (HEADS * HD,))
        out[p + "self_attn.k_norm.weight"] = ("BF16", (KV * HD,))
        projection(p + "self_attn.q_proj.weight", HEADS * HD, H)
        projection(p + "self_attn.k_proj.weight", KV * HD, H)
        projection(p + "self_attn.v_proj.weight", KV * HD, H)
        projection(p + "self_attn.o_proj.weight", H, HEADS * HD)
        out[p + "block_sparse_moe.gate.weight"] = ("F32", (E, H))
        out[p + "block_sparse_moe.e_score_correction_bias"] = ("F32", (E,))
        for e in range(E):
            projection(p + f"block_sparse_moe.experts.{e}.w1.weight", I, H)
            projection(p + f"block_sparse_moe.experts.{e}.w2.weight", H, I)
            projection(p + f"block_sparse_moe.experts.{e}.w3.weight", I, H)
    return out


@pytest.mark.parametrize("fp8", [False, True])
def test_layout_names_dtypes_shapes(tiny_minimax_bf16, tiny_minimax_fp8, fp8):
    d = tiny_minimax_fp8 if fp8 else tiny_minimax_bf16
    assert ck.tensor_headers(d) == _expected_layout(fp8)


@pytest.mark.parametrize("fp8", [False, True])
def test_sharded_with_a_consistent_index(tiny_minimax_bf16, tiny_minimax_fp8, fp8):
    d = tiny_minimax_fp8 if fp8 else tiny_minimax_bf16
    index = json.loads((d / ck.INDEX_FILE).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert shards == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert sorted(p.name for p in d.glob("*.safetensors")) == shards
    total = 0
    for shard in shards:
        with safe_open(str(d / shard), framework="pt") as f:
            names = set(f.keys())
            assert names == {n for n, s in index["weight_map"].items() if s == shard}  # every entry in its shard
            assert f.metadata() == {"format": "pt"}
            total += sum(f.get_tensor(n).numel() * f.get_tensor(n).element_size() for n in names)
    assert index["metadata"]["total_size"] == total


@pytest.mark.parametrize("fp8", [False, True])
def test_config_has_the_released_fields(tiny_minimax_bf16, tiny_minimax_fp8, fp8):
    cfg = ck.read_config(tiny_minimax_fp8 if fp8 else tiny_minimax_bf16)
    expected = {
        "architectures": ["MiniMaxM2ForCausalLM"],
        "model_type": "minimax_m2",
        "hidden_size": H,
        "intermediate_size": I,
        "num_hidden_layers": L,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV,
        "head_dim": HD,
        "num_local_experts": E,
        "num_experts_per_tok": 2,
        "vocab_size": V,
        "rotary_dim": HD // 2,  # real: 64 of 128
        "partial_rotary_factor": 0.5,
        "rope_theta": 5000000,
        "rms_norm_eps": 1e-6,
        "use_qk_norm": True,
        "qk_norm_type": "per_layer",
        "scoring_func": "sigmoid",
        "use_routing_bias": True,
        "use_mtp": True,
        "num_mtp_modules": 3,
        "mtp_transformer_layers": 1,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "hidden_act": "silu",
        "shared_intermediate_size": 0,
        "attn_type_list": [1] * L,
    }
    assert {k: cfg.get(k) for k in expected} == expected
    if fp8:
        assert cfg["quantization_config"] == {
            "quant_method": "fp8",
            "fmt": "float8_e4m3fn",
            "activation_scheme": "dynamic",
            "weight_block_size": [128, 128],
            "modules_to_not_convert": ["gate", "e_score_correction_bias", "lm_head"],
        }
    else:
        assert "quantization_config" not in cfg
    assert "auto_map" not in cfg  # no remote code is shipped


def test_transformers_reads_partial_rope_from_the_config(tiny_minimax_fp8):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(tiny_minimax_fp8)
    assert cfg.rope_parameters["partial_rotary_factor"] == 0.5
    assert cfg.rope_parameters["rope_theta"] == 5000000


def test_no_feature_is_invisible(tiny_minimax_bf16):
    """Norm gains are not all ones and the routing bias is not zero."""
    sd = loader.load_state_dict(tiny_minimax_bf16, torch.float32)
    for name, t in sd.items():
        if name.endswith("norm.weight"):
            assert t.min() < 0.8 and t.max() > 1.2 and t.min() >= 0.5 and t.max() <= 1.5, name
        if name.endswith("e_score_correction_bias"):
            assert t.abs().min() > 0 and 0.03 < t.std() < 0.3, name


def test_weights_scale_with_gain(tmp_path):
    def q_std(gain):
        d = tiny.make_tiny(tmp_path / f"g{gain}", gain=gain, num_layers=1, num_experts=2)
        sd = loader.load_state_dict(d, torch.float32)
        q = sd["model.layers.0.self_attn.q_proj.weight"]
        w2 = sd["model.layers.0.block_sparse_moe.experts.0.w2.weight"]
        return q.std().item(), w2.std().item()

    for gain in (1.0, 2.0):
        q, w2 = q_std(gain)
        assert q == pytest.approx(gain / math.sqrt(H), rel=0.05)
        assert w2 == pytest.approx(gain / math.sqrt(I), rel=0.05)


def test_fp8_quantization_scales_are_amax_over_448():
    w = torch.randn(256, 200, generator=torch.Generator().manual_seed(0))
    w[:128, :128] *= 10
    q, s = tiny.quantize_fp8_block(w)
    assert q.dtype == torch.float8_e4m3fn and s.dtype == torch.float32 and s.shape == (2, 2)
    assert torch.equal(s[0, 0], w[:128, :128].abs().max() / 448)
    assert torch.equal(s[1, 1], w[128:, 128:].abs().max() / 448)  # partial last block column
    back = loader.dequantize_fp8_block(q, s)
    assert ((back - w).abs() <= 2**-4 * s.repeat_interleave(128, 0).repeat_interleave(128, 1)[:, :200] * 448).all()
    zero_q, zero_s = tiny.quantize_fp8_block(torch.zeros(128, 128))
    assert torch.equal(zero_s, torch.ones(1, 1)) and not zero_q.float().any()


def _digest(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def test_deterministic_for_a_seed(tiny_minimax_fp8, tmp_path):
    again = tiny.make_tiny(tmp_path / "again", fp8=True, seed=0)
    assert _digest(again) == _digest(tiny_minimax_fp8)
    other = tiny.make_tiny(tmp_path / "other", fp8=True, seed=1)
    differ = {n for n, h in _digest(other).items() if h != _digest(tiny_minimax_fp8)[n]}
    assert {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"} <= differ


def test_tokenizer_loads_offline(tiny_minimax_bf16, monkeypatch):
    from transformers import AutoTokenizer, GenerationConfig

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = AutoTokenizer.from_pretrained(tiny_minimax_bf16)
    cfg = ck.read_config(tiny_minimax_bf16)
    text = "PoC v2 — Grüße, 你好!"
    ids = tok(text).input_ids
    assert tok.decode(ids) == text and max(ids) < cfg["vocab_size"]
    assert (tok.bos_token_id, tok.eos_token_id) == (cfg["bos_token_id"], cfg["eos_token_id"])
    assert len(tok) <= cfg["vocab_size"]
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt.startswith(tok.bos_token) and prompt.endswith("]~b]ai\n")
    gen = GenerationConfig.from_pretrained(tiny_minimax_bf16)
    assert gen.eos_token_id == cfg["eos_token_id"]


def test_output_directory_policy(tmp_path):
    target = tmp_path / "out"
    (target / "keep").mkdir(parents=True)
    (target / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not empty") as e:
        tiny.make_tiny(target, num_layers=1, num_experts=2)
    assert "--force" in e.value.one_line()
    # force: earlier shards are replaced (no stale shard survives), unrelated files stay
    tiny.make_tiny(target, num_layers=1, num_experts=2, shards=3, force=True)
    tiny.make_tiny(target, num_layers=1, num_experts=2, shards=2, force=True)
    assert sorted(p.name for p in target.glob("*.safetensors")) == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    assert (target / "notes.txt").read_text() == "mine" and (target / "keep").is_dir()
    loader.load_state_dict(target)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(CheckpointError, match="not a directory"):
        tiny.make_tiny(a_file, force=True)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"fp8": True, "hidden_size": 96}, "multiple of 128"),
        ({"top_k": 9}, "top_k"),
        ({"num_heads": 3}, "num_kv_heads"),
        ({"vocab_size": 100}, "vocab_size"),
        ({"gain": 0}, "gain"),
        ({"shards": 0}, "shards"),
    ],
)
def test_invalid_parameters(tmp_path, kwargs, match):
    with pytest.raises(CheckpointError, match=match):
        tiny.make_tiny(tmp_path / "x", **kwargs)


def test_cli_make_tiny(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["make-tiny", str(out), "--fp8", "--layers", "1", "--experts", "2", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    params = sum(math.prod(s) for n, (_, s) in ck.tensor_headers(out).items() if not n.endswith("_scale_inv"))
    assert str(out) in printed and f"{params:,} parameters" in printed and "block-FP8" in printed
    assert "model.safetensors.index.json" in printed and "tokenizer.json" in printed
    assert ck.read_config(out)["num_hidden_layers"] == 1


def test_cli_make_tiny_refuses_a_non_empty_directory(tmp_path, capsys):
    (tmp_path / "something").write_text("x")
    assert main(["make-tiny", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "--force" in err


def test_cli_defaults_are_make_tiny_defaults():
    args = build_parser().parse_args(["make-tiny", "x"])
    assert (args.layers, args.gain, args.hidden_size, args.experts) == (
        tiny.DEFAULT_LAYERS, tiny.DEFAULT_GAIN, 128, 8
    )
