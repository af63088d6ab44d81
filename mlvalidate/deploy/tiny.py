"""Tiny random checkpoints in the REAL on-disk layout, for tests and demos without a hub.

`make_tiny` writes a MiniMax-M2 (the architecture of MiniMaxAI/MiniMax-M2.7) that differs
from the real one only in its sizes: the same config.json fields, tensor names, dtypes,
sharding through model.safetensors.index.json, block-FP8 pairs when `fp8=True`, plus a
byte-level tokenizer and generation_config.json so that tools expecting a complete model
directory (AutoTokenizer, vLLM) accept it. `make_tiny_dense` writes a tiny Qwen3 (dense).

Initialisation (the reason this module is not `from_config(...).save_pretrained`):
transformers' default init (std 0.02) leaves the residual stream almost untouched by the
layers, so a 4-bit-quantized copy of such a model lands at PoC L2 ~0.002 from the original,
as close as honest bf16-vs-fp32 noise: a fixture on which a validator cannot tell fraud
from honesty. Here every matrix is drawn N(0, 1) * gain / sqrt(fan_in), so each layer moves
the stream by O(gain); norm gains are U(0.5, 1.5) and the routing correction bias is
N(0, 0.1^2) (it changes the chosen experts of 35-55 % of tokens), so that neither looks like
an identity and a loader that drops one changes the output.

Defaults gain 1.5, 4 layers (DEFAULT_GAIN, DEFAULT_LAYERS). Measured with the reference
engine (hidden 128, 8 experts top-2, 60 nonces, k 12, seq_len 128 and 256, distances to a
float32 run of the same checkpoint; 4-bit copy = symmetric round-to-nearest, groups of 32
or 128 along the input dim, of every attention and expert matrix):

    gain layers | honest bf16: median L2, share > 0.75 | 4-bit: median L2, share > 0.75
    1.0   4     | 0.014, 0-2 %                         | 0.20-0.23, 0-3 %
    1.5   4     | 0.024-0.028, 0-2 %                   | 0.50-0.70, 27-40 %
    2.0   4     | 0.038, 2 %                           | 0.73-0.93, 48-67 %
    1.5   6     | 0.047, 2 %                           | 0.75-0.77, 50-52 %

At gain 1 the 4-bit copy almost never crosses the chain's 0.75 gate, so the binomial test
(fraud at >= ~14 % mismatches) cannot catch it; at gain >= 2 or with more layers the honest
tail grows (max honest L2 0.86-1.4). Gain 1.5 with 4 layers keeps honest runs at 0-2 %
mismatches and a 4-bit copy at ~30 %, on either side of the fraud cutoff.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from ..errors import CheckpointError
from .checkpoint import CONFIG_FILE, INDEX_FILE, SCALE_SUFFIX, dequantize_fp8_block, read_config, tensor_headers

DEFAULT_GAIN = 1.5
DEFAULT_LAYERS = 4
FP8_MAX = 448.0  # largest finite float8_e4m3fn
FP8_BLOCK = (128, 128)

# docs/minimax-m2.md §3, verbatim in meaning
FP8_QUANTIZATION_CONFIG = {
    "quant_method": "fp8",
    "fmt": "float8_e4m3fn",
    "activation_scheme": "dynamic",
    "weight_block_size": [128, 128],
    "modules_to_not_convert": ["gate", "e_score_correction_bias", "lm_head"],
}

# tokenizer: 256 byte-level symbols (ids 0..255), then MiniMax's special tokens
BOS, EOS, ROLE = "]~!b[", "[e~[", "]~b]"
SPECIAL_TOKENS = [BOS, EOS, ROLE]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ ']~b]' + m['role'] + '\\n' + m['content'] + eos_token + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ ']~b]ai\\n' }}{% endif %}"
)

# files make_tiny writes besides the shards (removed first with force=True)
_OWN_FILES = (
    CONFIG_FILE,
    INDEX_FILE,
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",  # what transformers' save_pretrained writes (make_tiny_dense)
)


# ----------------------------------------------------------------------------------------
# block-FP8 quantization (the writing side of checkpoint.dequantize_fp8_block)
# ----------------------------------------------------------------------------------------
def quantize_fp8_block(w: torch.Tensor, block: tuple[int, int] = FP8_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """w [out, in] -> (q float8_e4m3fn [out, in], scale_inv float32 [ceil(out/b0), ceil(in/b1)]).

    Per block: scale = amax / 448 (float32; 1 for an all-zero block), q = w / scale rounded
    to e4m3. dequantize_fp8_block(q, scale_inv) = q * scale_inv reconstructs w.
    """
    b0, b1 = block
    rows, cols = w.shape
    nb0, nb1 = -(-rows // b0), -(-cols // b1)
    w = w.to(torch.float32)
    padded = torch.zeros(nb0 * b0, nb1 * b1, dtype=torch.float32)
    padded[:rows, :cols] = w
    amax = padded.abs().reshape(nb0, b0, nb1, b1).amax(dim=(1, 3))  # [nb0, nb1]
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    expanded = scale.repeat_interleave(b0, dim=0)[:rows].repeat_interleave(b1, dim=1)[:, :cols]
    q = (w / expanded).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q, scale


# ----------------------------------------------------------------------------------------
# output directory
# ----------------------------------------------------------------------------------------
def _prepare_out_dir(out_dir: str | os.PathLike, force: bool) -> Path:
    """OUT_DIR must not exist or be empty; with force, an existing directory is reused after
    removing the files a previous make_tiny wrote (shards, index, config, tokenizer) — other
    files are left alone, so a mistyped path never loses unrelated data."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"output path {out} exists and is not a directory", hint="choose a new directory")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise CheckpointError(
                f"output directory {out} exists and is not empty",
                hint="choose a new directory, or pass --force to replace a checkpoint written there before",
            )
    try:
        if out.is_dir() and force:
            for p in out.iterdir():
                if p.is_file() and (p.name in _OWN_FILES or p.name.endswith(".safetensors")):
                    p.unlink()
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(
            f"cannot prepare output directory {out}: {e.strerror or e}", hint="choose a writable path"
        ) from e
    return out


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def _write_shards(out: Path, tensors: dict[str, torch.Tensor], shards: int) -> None:
    """Split `tensors` (in insertion order) into `shards` contiguous groups of about equal
    bytes, named like the hub's shards, and write model.safetensors.index.json."""
    from safetensors.torch import save_file

    names = list(tensors)
    if shards > len(names):
        raise CheckpointError(f"cannot split {len(names)} tensors into {shards} shards", hint="use fewer shards")
    sizes = [tensors[n].numel() * tensors[n].element_size() for n in names]
    total = sum(sizes)
    groups: list[list[str]] = [[] for _ in range(shards)]
    running = 0
    for name, size in zip(names, sizes):
        # the group this tensor's midpoint falls in; every group gets at least one tensor below
        g = min(shards - 1, int((running + size / 2) * shards / total))
        groups[g].append(name)
        running += size
    # guarantee no empty shard (possible only for tiny tensor counts): borrow from neighbours
    for g in range(shards):
        if not groups[g]:
            donor = max(range(shards), key=lambda i: len(groups[i]))
            groups[g].append(groups[donor].pop(-1 if donor < g else 0))
    weight_map: dict[str, str] = {}
    for g, group in enumerate(groups):
        file_name = f"model-{g + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: tensors[n].contiguous() for n in group}, str(out / file_name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(group, file_name))
    _write_json(out / INDEX_FILE, {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})


def _write_tokenizer(out: Path, vocab_size: int) -> dict[str, int]:
    """A byte-level BPE without merges (every byte is a token, any text round-trips) plus the
    special tokens; saved as tokenizer.json, tokenizer_config.json (with a chat template)
    and special_tokens_map.json. Returns the special token ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {sym: i for i, sym in enumerate(alphabet)}
    for tok in SPECIAL_TOKENS:
        vocab[tok] = len(vocab)
    if len(vocab) > vocab_size:
        raise CheckpointError(
            f"vocab_size {vocab_size} is smaller than the tokenizer's {len(vocab)} tokens",
            hint=f"use vocab_size >= {len(vocab)}",
        )
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(SPECIAL_TOKENS)
    backend.save(str(out / "tokenizer.json"))
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS}
    # PreTrainedTokenizerFast: a class name transformers 4.x (vLLM images) and 5.x both resolve
    _write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **special,
            "model_max_length": 196608,
            "clean_up_tokenization_spaces": False,
            "chat_template": CHAT_TEMPLATE,
        },
    )
    _write_json(out / "special_tokens_map.json", special)
    return {"bos": vocab[BOS], "eos": vocab[EOS]}


def _generation_config(ids: dict[str, int]) -> dict:
    import transformers

    return {
        "bos_token_id": ids["bos"],
        "eos_token_id": ids["eos"],
        "do_sample": True,
        "temperature": 1.0,
        "top_p": 0.95,
        "top_k": 40,
        "transformers_version": transformers.__version__,
    }


# ----------------------------------------------------------------------------------------
# MiniMax-M2
# ----------------------------------------------------------------------------------------
def minimax_m2_config(
    *,
    hidden_size: int,
    num_layers: int,
    num_experts: int,
    top_k: int,
    intermediate_size: int,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    vocab_size: int,
    bos_token_id: int,
    eos_token_id: int,
    fp8: bool,
) -> dict:
    """config.json in the released checkpoint's form: the fields of transformers'
    MiniMaxM2Config plus the remote-code fields the released config carries (rotary_dim,
    use_qk_norm / qk_norm_type, scoring_func, use_routing_bias, MTP fields, attention-type
    list, legacy rope_theta, torch_dtype) — no auto_map, since no remote code is shipped."""
    import transformers

    config = {
        "architectures": ["MiniMaxM2ForCausalLM"],
        "attn_type_list": [1] * num_layers,  # 1 = full attention, every layer
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "hidden_size": hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": intermediate_size,
        "layernorm_full_attention_beta": 1.0,
        "layernorm_linear_attention_beta": 1.0,
        "layernorm_mlp_beta": 1.0,
        "max_position_embeddings": 196608,
        "model_type": "minimax_m2",
        "mtp_transformer_layers": 1,
        "num_attention_heads": num_heads,
        "num_experts_per_tok": top_k,
        "num_hidden_layers": num_layers,
        "num_key_value_heads": num_kv_heads,
        "num_local_experts": num_experts,
        "num_mtp_modules": 3,
        "output_router_logits": False,
        "partial_rotary_factor": 0.5,
        "qk_norm_type": "per_layer",
        "rms_norm_eps": 1e-06,
        "rope_theta": 5000000,
        "rotary_dim": head_dim // 2,
        "router_aux_loss_coef": 0.001,
        "router_jitter_noise": 0.0,
        "scoring_func": "sigmoid",
        "shared_intermediate_size": 0,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": transformers.__version__,
        "use_cache": True,
        "use_mtp": True,
        "use_qk_norm": True,
        "use_routing_bias": True,
        "vocab_size": vocab_size,
    }
    if fp8:
        config["quantization_config"] = dict(FP8_QUANTIZATION_CONFIG)
    return config


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise CheckpointError(
                f"{name} must be a positive integer, got {value!r}", hint="fix the make-tiny arguments"
            )


def make_tiny(
    out_dir: str | os.PathLike,
    fp8: bool = False,
    seed: int = 0,
    *,
    hidden_size: int = 128,
    num_layers: int = DEFAULT_LAYERS,
    num_experts: int = 8,
    top_k: int = 2,
    intermediate_size: int = 128,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    head_dim: int = 64,
    vocab_size: int = 512,
    gain: float = DEFAULT_GAIN,
    shards: int = 2,
    force: bool = False,
) -> Path:
    """Write a random MiniMax-M2 in the released checkpoint's layout to `out_dir`; returns it.

    Tensors (per layer l): self_attn.{q,k,v,o}_proj.weight and
    block_sparse_moe.experts.{e}.{w1,w2,w3}.weight are bf16, or with `fp8` F8_E4M3 plus F32
    `.weight_scale_inv` [ceil(out/128), ceil(in/128)]; block_sparse_moe.gate.weight [E, H] and
    block_sparse_moe.e_score_correction_bias [E] are F32; input_layernorm,
    post_attention_layernorm, self_attn.q_norm [heads*head_dim], self_attn.k_norm
    [kv_heads*head_dim], model.norm, model.embed_tokens and lm_head are bf16.

    The same seed gives the same weights with and without `fp8`: projection weights always
    pass through FP8 quantization, and the bf16 checkpoint stores their dequantized values
    (which bf16 holds exactly as the FP8 loader produces them). `out_dir` must be new or
    empty unless `force` (see _prepare_out_dir). rotary_dim = head_dim / 2, as in the real
    model (64 of 128). With fp8, every projection dim must be a multiple of 128.
    """
    _check_sizes(
        hidden_size=hidden_size, num_layers=num_layers, num_experts=num_experts, top_k=top_k,
        intermediate_size=intermediate_size, num_heads=num_heads, num_kv_heads=num_kv_heads,
        head_dim=head_dim, vocab_size=vocab_size, shards=shards,
    )  # fmt: skip
    if top_k > num_experts:
        raise CheckpointError(f"top_k {top_k} exceeds num_experts {num_experts}", hint="choose top_k <= experts")
    if num_heads % num_kv_heads:
        raise CheckpointError(
            f"num_heads {num_heads} is not a multiple of num_kv_heads {num_kv_heads}", hint="fix the head counts"
        )
    if head_dim % 4:
        raise CheckpointError(
            f"head_dim {head_dim} must be a multiple of 4 (rotary_dim = head_dim/2 is rotated in pairs)",
            hint="use e.g. 64 or 128",
        )
    if not (isinstance(gain, (int, float)) and math.isfinite(gain) and gain > 0):
        raise CheckpointError(f"gain must be a positive number, got {gain!r}", hint="e.g. 1.0 to 2.0")
    if fp8:
        widths = {
            "hidden_size": hidden_size,
            "intermediate_size": intermediate_size,
            "num_heads*head_dim": num_heads * head_dim,
            "num_kv_heads*head_dim": num_kv_heads * head_dim,
        }
        bad = {k: v for k, v in widths.items() if v % FP8_BLOCK[0]}
        if bad:
            raise CheckpointError(
                f"with fp8 every projection dim must be a multiple of 128, got {bad}",
                hint="the released checkpoint's dims all are; vLLM and transformers mis-handle partial blocks",
            )

    out = _prepare_out_dir(out_dir, force)
    ids = _write_tokenizer(out, vocab_size)

    gen = torch.Generator().manual_seed(int(seed))
    H, I, E = hidden_size, intermediate_size, num_experts
    q_width, kv_width = num_heads * head_dim, num_kv_heads * head_dim

    def matrix(rows: int, cols: int) -> torch.Tensor:  # [out, in], fan_in = cols
        return torch.randn(rows, cols, generator=gen) * (gain / math.sqrt(cols))

    def norm_gain(n: int) -> torch.Tensor:
        return (0.5 + torch.rand(n, generator=gen)).to(torch.bfloat16)

    tensors: dict[str, torch.Tensor] = {}

    def projection(name: str, w: torch.Tensor) -> None:
        q, scale = quantize_fp8_block(w)
        if fp8:
            tensors[name] = q
            tensors[name + SCALE_SUFFIX] = scale
        else:
            tensors[name] = dequantize_fp8_block(q, scale).to(torch.bfloat16)

    tensors["model.embed_tokens.weight"] = torch.randn(vocab_size, H, generator=gen).to(torch.bfloat16)
    for layer in range(num_layers):
        p = f"model.layers.{layer}."
        tensors[p + "input_layernorm.weight"] = norm_gain(H)
        projection(p + "self_attn.q_proj.weight", matrix(q_width, H))
        projection(p + "self_attn.k_proj.weight", matrix(kv_width, H))
        projection(p + "self_attn.v_proj.weight", matrix(kv_width, H))
        projection(p + "self_attn.o_proj.weight", matrix(H, q_width))
        tensors[p + "self_attn.q_norm.weight"] = norm_gain(q_width)
        tensors[p + "self_attn.k_norm.weight"] = norm_gain(kv_width)
        tensors[p + "post_attention_layernorm.weight"] = norm_gain(H)
        tensors[p + "block_sparse_moe.gate.weight"] = matrix(E, H).to(torch.float32)
        tensors[p + "block_sparse_moe.e_score_correction_bias"] = torch.randn(E, generator=gen) * 0.1
        for e in range(E):
            pe = p + f"block_sparse_moe.experts.{e}."
            projection(pe + "w1.weight", matrix(I, H))
            projection(pe + "w2.weight", matrix(H, I))
            projection(pe + "w3.weight", matrix(I, H))
    tensors["model.norm.weight"] = norm_gain(H)
    tensors["lm_head.weight"] = matrix(vocab_size, H).to(torch.bfloat16)

    _write_shards(out, tensors, shards)
    config = minimax_m2_config(
        hidden_size=H, num_layers=num_layers, num_experts=E, top_k=top_k, intermediate_size=I,
        num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim, vocab_size=vocab_size,
        bos_token_id=ids["bos"], eos_token_id=ids["eos"], fp8=fp8,
    )  # fmt: skip
    _write_json(out / CONFIG_FILE, config)
    _write_json(out / "generation_config.json", _generation_config(ids))
    return out


# ----------------------------------------------------------------------------------------
# a dense model (loader tests, vLLM-on-CPU smoke runs)
# ----------------------------------------------------------------------------------------
def make_tiny_dense(
    out_dir: str | os.PathLike,
    arch: str = "qwen3",
    seed: int = 0,
    *,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    head_dim: int = 32,
    intermediate_size: int = 256,
    vocab_size: int = 512,
    gain: float = DEFAULT_GAIN,
    shards: int = 2,
    force: bool = False,
) -> Path:
    """Write a random Qwen3 (dense, tied embeddings like Qwen3-0.6B) with transformers' own
    save_pretrained layout, the same init as make_tiny and the same tokenizer."""
    if arch != "qwen3":
        raise CheckpointError(f"make_tiny_dense knows arch 'qwen3' only, got {arch!r}", hint="use arch='qwen3'")
    _check_sizes(
        hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads, num_kv_heads=num_kv_heads,
        head_dim=head_dim, intermediate_size=intermediate_size, vocab_size=vocab_size, shards=shards,
    )  # fmt: skip
    from transformers import Qwen3Config, Qwen3ForCausalLM
    from transformers.utils import logging as hf_logging

    out = _prepare_out_dir(out_dir, force)
    ids = _write_tokenizer(out, vocab_size)
    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=head_dim,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"],
    )
    gen = torch.Generator().manual_seed(int(seed))
    model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    with torch.no_grad():
        for name, param in model.named_parameters():  # deterministic order
            if name.endswith("norm.weight"):
                param.copy_(0.5 + torch.rand(param.shape, generator=gen))
            elif name == "model.embed_tokens.weight":
                param.copy_(torch.randn(param.shape, generator=gen) * (gain / math.sqrt(hidden_size)))
            else:
                param.copy_(torch.randn(param.shape, generator=gen) * (gain / math.sqrt(param.shape[-1])))
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    progress = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(str(out), max_shard_size=max(1, total // shards + 1))
    finally:
        if progress:
            hf_logging.enable_progress_bar()
    _write_json(out / "generation_config.json", _generation_config(ids))
    return out


def describe_checkpoint(model_dir: str | os.PathLike) -> dict:
    """What a checkpoint directory holds: parameter count (FP8 scales excluded), tensor
    count, and every file with its size — for the make-tiny command's summary."""
    root = Path(model_dir)
    headers = tensor_headers(root)
    params = sum(math.prod(shape) for name, (_, shape) in headers.items() if not name.endswith(SCALE_SUFFIX))
    files = {p.name: p.stat().st_size for p in sorted(root.iterdir()) if p.is_file()}
    config = read_config(root)
    return {
        "path": str(root),
        "model_type": config.get("model_type"),
        "fp8": "quantization_config" in config,
        "params": params,
        "tensors": len(headers),
        "files": files,
        "bytes": sum(files.values()),
    }

