"""What a checkpoint's tensors are, from their names and config.json: block-FP8 pairs, the
tensors kept in float32 (MoE router), MTP layers beyond num_hidden_layers, and every tensor
(name, dtype, shape) a MiniMax-M2 checkpoint holds (docs/minimax-m2.md §3). No torch, no files.

Block FP8 (docs/minimax-m2.md §3): `X.weight` is F8_E4M3 [out, in] with `X.weight_scale_inv` F32
[ceil(out/128), ceil(in/128)], and W[r, c] = float(q[r, c]) * scale_inv[r // 128, c // 128]
(a multiply, despite the name).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from ..errors import CheckpointError
from .headers import NEXT_PULL

SCALE_SUFFIX = "_scale_inv"  # X.weight -> X.weight_scale_inv
DEFAULT_BLOCK = (128, 128)

# tensors that stay float32 (router) when stored F32, whatever modules_to_not_convert says
_ROUTER_PATTERN = re.compile(r"(^|\.)(block_sparse_moe|mlp)\.gate\.weight$|(^|\.)e_score_correction_bias$")
_LAYER_PATTERN = re.compile(r"^model\.layers\.(\d+)\.")

Expected = dict[str, tuple[str, tuple[int, ...], str]]  # name -> (dtype, shape, what it is)


def fp8_block_size(config: Mapping) -> tuple[int, int] | None:
    """The FP8 block size from config.json's quantization_config; None for an unquantized
    checkpoint. Quantization methods this loader cannot dequantize are refused."""
    quant = config.get("quantization_config")
    if quant is None:
        return None
    if not isinstance(quant, dict):
        raise CheckpointError("config.json quantization_config is not an object", hint=NEXT_PULL)
    method = quant.get("quant_method")
    if method != "fp8":
        raise CheckpointError(
            f"quantization method {method!r} is not supported by the reference loader",
            hint="it loads bf16/fp16/fp32 and block-FP8 (quant_method 'fp8') checkpoints only",
        )
    fmt = quant.get("fmt", "float8_e4m3fn")
    if fmt not in ("float8_e4m3fn", "e4m3"):
        raise CheckpointError(f"FP8 format {fmt!r} is not supported", hint="only float8_e4m3fn block-FP8 is")
    block = quant.get("weight_block_size", list(DEFAULT_BLOCK))
    if (
        not isinstance(block, list)
        or len(block) != 2
        or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)
    ):
        raise CheckpointError(
            f"quantization_config.weight_block_size {block!r} is not two positive integers",
            hint="per-tensor FP8 (no weight_block_size) is not supported by the reference loader",
        )
    return block[0], block[1]


def _in_modules(name: str, modules: list[str]) -> bool:
    """Whether tensor `name` belongs to a module listed in modules_to_not_convert: a listed
    entry matches whole dotted components ('gate' matches '...moe.gate.weight', not
    '...gate_proj.weight'), or a dotted path inside the name."""
    parts = name.split(".")
    for m in modules:
        if not isinstance(m, str) or not m:
            continue
        m_parts = m.split(".")
        k = len(m_parts)
        if any(parts[i : i + k] == m_parts for i in range(len(parts) - k + 1)):
            return True
    return False


def stays_fp32(name: str, stored_dtype: str, not_convert: list[str]) -> bool:
    return stored_dtype == "F32" and bool(_ROUTER_PATTERN.search(name) or _in_modules(name, not_convert))


def beyond_layers(name: str, num_layers: int | None) -> bool:
    m = _LAYER_PATTERN.match(name)
    return num_layers is not None and m is not None and int(m.group(1)) >= num_layers


# ----------------------------------------------------------------------------------------
# MiniMax-M2: the tensors config.json implies
# ----------------------------------------------------------------------------------------
def _positive_int(config: dict, key: str, default: int | None = None) -> int:
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise CheckpointError(f"config.json {key} is {value!r}, not a positive integer")
    return value


def expected_minimax_m2(config: dict) -> tuple[Expected, tuple[int, int] | None]:
    """Every tensor a MiniMax-M2 checkpoint with this config.json holds (without MTP layers),
    and the FP8 block size (None: bf16 projections). Raises CheckpointError for a config
    these cannot be derived from."""
    H = _positive_int(config, "hidden_size")
    V = _positive_int(config, "vocab_size")
    L = _positive_int(config, "num_hidden_layers")
    n_heads = _positive_int(config, "num_attention_heads")
    n_kv = _positive_int(config, "num_key_value_heads")
    hd = _positive_int(config, "head_dim", H // n_heads if H >= n_heads else None)
    inter = _positive_int(config, "intermediate_size")
    E = _positive_int(config, "num_local_experts")
    block = fp8_block_size(config)
    q_width, kv_width = n_heads * hd, n_kv * hd

    out: Expected = {}

    def projection(name: str, rows: int, cols: int, what: str) -> None:  # [out, in]
        if block is None:
            out[name] = ("BF16", (rows, cols), what)
            return
        out[name] = ("F8_E4M3", (rows, cols), what + " (FP8)")
        out[name + SCALE_SUFFIX] = ("F32", (math.ceil(rows / block[0]), math.ceil(cols / block[1])), what + " scales")

    out["model.embed_tokens.weight"] = ("BF16", (V, H), "embedding")
    out["lm_head.weight"] = ("BF16", (V, H), "lm_head")
    out["model.norm.weight"] = ("BF16", (H,), "final norm")
    for layer in range(L):
        p = f"model.layers.{layer}."
        out[p + "input_layernorm.weight"] = ("BF16", (H,), "input norm")
        out[p + "post_attention_layernorm.weight"] = ("BF16", (H,), "post-attention norm")
        projection(p + "self_attn.q_proj.weight", q_width, H, "q_proj")
        projection(p + "self_attn.k_proj.weight", kv_width, H, "k_proj")
        projection(p + "self_attn.v_proj.weight", kv_width, H, "v_proj")
        projection(p + "self_attn.o_proj.weight", H, q_width, "o_proj")
        if config.get("use_qk_norm", True):
            out[p + "self_attn.q_norm.weight"] = ("BF16", (q_width,), "q_norm")
            out[p + "self_attn.k_norm.weight"] = ("BF16", (kv_width,), "k_norm")
        out[p + "block_sparse_moe.gate.weight"] = ("F32", (E, H), "router gate")
        if config.get("use_routing_bias", True):
            out[p + "block_sparse_moe.e_score_correction_bias"] = ("F32", (E,), "routing bias")
        for e in range(E):
            pe = p + f"block_sparse_moe.experts.{e}."
            projection(pe + "w1.weight", inter, H, "expert w1")
            projection(pe + "w3.weight", inter, H, "expert w3")
            projection(pe + "w2.weight", H, inter, "expert w2")
    return out, block
