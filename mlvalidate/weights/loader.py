"""Loading a checkpoint's tensors: block-FP8 dequantization, the state dict (router kept in
float32, MTP layers skipped), and the transformers causal LM the reference engine runs.

Block FP8 (docs/minimax-m2.md §3): W[r, c] = float(q[r, c]) * scale_inv[r // b0, c // b1],
computed in float32 (see layout.py for the tensor pairs).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from ..errors import CheckpointError
from .checkpoint import CONFIG_FILE, model_dir_path, read_config, read_index, tensor_headers
from .headers import NEXT_PULL
from .layout import DEFAULT_BLOCK, SCALE_SUFFIX, beyond_layers, fp8_block_size, stays_fp32


# ----------------------------------------------------------------------------------------
# block FP8
# ----------------------------------------------------------------------------------------
def dequantize_fp8_block(
    weight_fp8: torch.Tensor, scale_inv: torch.Tensor, block: tuple[int, int] = DEFAULT_BLOCK
) -> torch.Tensor:
    """W[r, c] = float(q[r, c]) * scale_inv[r // b0, c // b1], in float32.

    weight_fp8: [out, in] float8_e4m3fn; scale_inv: [ceil(out/b0), ceil(in/b1)] float32.
    The last block row/column may be partial (out or in not a multiple of the block).
    """
    b0, b1 = int(block[0]), int(block[1])
    if b0 <= 0 or b1 <= 0:
        raise CheckpointError(
            f"FP8 block size {tuple(block)} must be positive", hint="check quantization_config.weight_block_size"
        )
    if weight_fp8.dim() != 2 or scale_inv.dim() != 2:
        raise CheckpointError(
            f"block FP8 needs a 2-D weight and 2-D scales, got {list(weight_fp8.shape)} and {list(scale_inv.shape)}",
            hint=NEXT_PULL,
        )
    rows, cols = weight_fp8.shape
    want = (-(-rows // b0), -(-cols // b1))
    if tuple(scale_inv.shape) != want:
        raise CheckpointError(
            f"FP8 weight {list(weight_fp8.shape)} with block {b0}x{b1} needs scales {list(want)}, "
            f"got {list(scale_inv.shape)}",
            hint="quantization_config.weight_block_size does not match the checkpoint; " + NEXT_PULL,
        )
    scale = scale_inv.to(torch.float32)
    # expand each scale over its block, then crop the partial last block row/column
    scale = scale.repeat_interleave(b0, dim=0)[:rows].repeat_interleave(b1, dim=1)[:, :cols]  # [out, in]
    return weight_fp8.to(torch.float32) * scale


# ----------------------------------------------------------------------------------------
# state dict
# ----------------------------------------------------------------------------------------
def _float_dtype(dtype: torch.dtype) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point or dtype.itemsize < 2:
        raise CheckpointError(
            f"dtype {dtype!r} is not a float dtype to load weights in",
            hint="use torch.bfloat16, float16, float32 or float64",
        )
    return dtype


def _keep_dtype(dtype: torch.dtype) -> torch.dtype:
    """What a float32-kept tensor (router) becomes: float32, or the run dtype when wider."""
    return dtype if dtype.itemsize >= 4 else torch.float32


def fp32_tensor_names(model_dir: str | os.PathLike) -> set[str]:
    """Names that load_state_dict keeps in float32: stored F32 and either a router tensor
    (`*.gate.weight` of an MoE block, `*e_score_correction_bias`) or inside a module listed
    in quantization_config.modules_to_not_convert."""
    config = read_config(model_dir)
    quant = config.get("quantization_config")
    not_convert = (quant.get("modules_to_not_convert") or []) if isinstance(quant, dict) else []
    return {name for name, (dt, _) in tensor_headers(model_dir).items() if stays_fp32(name, dt, not_convert)}


def load_state_dict(model_dir: str | os.PathLike, dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint under its checkpoint name, ready for a `dtype` model.

    * FP8 pairs (`X.weight` F8_E4M3 + `X.weight_scale_inv` F32) become one `X.weight`,
      dequantized in float32 and then cast to `dtype`;
    * router tensors stored F32 (`*.block_sparse_moe.gate.weight`, `*e_score_correction_bias`)
      and F32 tensors of modules in quantization_config.modules_to_not_convert stay float32
      (or `dtype` when that is wider, e.g. float64);
    * everything else is cast to `dtype`;
    * `model.layers.{L}+` tensors (L = num_hidden_layers: MTP modules) are skipped.
    """
    from safetensors import safe_open

    dtype = _float_dtype(dtype)
    root = model_dir_path(model_dir)
    config = read_config(root)
    block = fp8_block_size(config)
    quant = config.get("quantization_config") or {}
    not_convert = quant.get("modules_to_not_convert") or []
    num_layers = config.get("num_hidden_layers")
    num_layers = num_layers if isinstance(num_layers, int) and not isinstance(num_layers, bool) else None

    headers = {n: h for n, h in tensor_headers(root).items() if not beyond_layers(n, num_layers)}
    index = read_index(root)

    # pair every FP8 weight with its scales before reading any data
    for name, (dt, _) in headers.items():
        if dt in ("F8_E5M2", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2"):
            raise CheckpointError(
                f"tensor {name} is {dt}, which the reference loader cannot dequantize",
                hint="only block-FP8 E4M3 checkpoints are supported",
            )
        if dt == "F8_E4M3":
            if block is None:
                raise CheckpointError(
                    f"tensor {name} is F8_E4M3 but config.json has no fp8 quantization_config",
                    hint="the config does not belong to these weights; " + NEXT_PULL,
                )
            if name + SCALE_SUFFIX not in headers:
                raise CheckpointError(f"FP8 tensor {name} has no {name + SCALE_SUFFIX}", hint=NEXT_PULL)
        if name.endswith(SCALE_SUFFIX):
            base = name[: -len(SCALE_SUFFIX)]
            if headers.get(base, ("",))[0] != "F8_E4M3":
                raise CheckpointError(f"scale tensor {name} has no F8_E4M3 tensor {base} beside it", hint=NEXT_PULL)

    keep = _keep_dtype(dtype)
    by_shard: dict[str, list[str]] = {}
    for name in headers:
        by_shard.setdefault(index[name], []).append(name)
    out: dict[str, torch.Tensor] = {}
    with contextlib.ExitStack() as stack:
        handles: dict[str, object] = {}

        def shard_file(shard: str):
            if shard not in handles:
                handles[shard] = stack.enter_context(safe_open(str(root / shard), framework="pt", device="cpu"))
            return handles[shard]

        for shard, names in by_shard.items():
            f = shard_file(shard)
            for name in names:
                dt, _ = headers[name]
                if name.endswith(SCALE_SUFFIX):
                    continue
                if dt == "F8_E4M3":
                    scale_name = name + SCALE_SUFFIX
                    scale = shard_file(index[scale_name]).get_tensor(scale_name)
                    out[name] = dequantize_fp8_block(f.get_tensor(name), scale, block).to(dtype)
                elif stays_fp32(name, dt, not_convert):
                    out[name] = f.get_tensor(name).to(keep)
                else:
                    t = f.get_tensor(name)
                    out[name] = t.to(dtype) if t.is_floating_point() else t
    return out


# ----------------------------------------------------------------------------------------
# transformers model
# ----------------------------------------------------------------------------------------
def _auto_config(root: Path, raw: dict):
    from transformers import AutoConfig

    model_type = raw.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise CheckpointError(
            f"{root / CONFIG_FILE} has no model_type", hint="this is not a transformers checkpoint config"
        )
    try:
        # never run code shipped with a checkpoint: the reference uses transformers' own classes
        return AutoConfig.from_pretrained(str(root), trust_remote_code=False, local_files_only=True)
    except (ValueError, KeyError) as e:
        import transformers

        raise CheckpointError(
            f"transformers {transformers.__version__} does not know model_type {model_type!r} "
            f"(architectures {raw.get('architectures')})",
            hint="upgrade transformers (MiniMax-M2 needs >= 5.18) or use a checkpoint of an architecture it ships",
        ) from e


def load_causal_lm(
    model_dir: str | os.PathLike,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    *,
    experts_implementation: str | None = None,
    attn_implementation: str | None = None,
):
    """A transformers causal LM (eval mode) with the checkpoint's weights from `load_state_dict`.

    * Weight names go through transformers' own checkpoint conversions (`from_pretrained`
      with a state dict), e.g. MiniMax-M2's `block_sparse_moe.experts.N.w1/w3/w2` are fused
      into `mlp.experts.gate_up_proj` / `down_proj` exactly as for a bf16 checkpoint.
    * `quantization_config` is removed from the runtime config (weights are dequantized).
    * Tensors `load_state_dict` keeps in float32 (router gate weight and
      e_score_correction_bias) are float32 in the model too; MiniMax-M2's router casts the
      hidden state to its weight's dtype, so its logits are computed in float32 like vLLM.
    * `experts_implementation`: default transformers' choice for bf16/fp16, "eager" for
      float32/float64 runs.
    * `model.model.layers` are the decoder layers, `model.model.norm` the final norm.
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING
    from transformers.utils import logging as hf_logging

    dtype = _float_dtype(dtype)
    root = model_dir_path(model_dir)
    raw = read_config(root)
    config = _auto_config(root, raw)
    try:
        model_cls = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    except KeyError:
        raise CheckpointError(
            f"model_type {raw.get('model_type')!r} (architectures {raw.get('architectures')}) is not a causal LM "
            "that transformers can build",
            hint="the reference engine needs a decoder-only causal LM checkpoint",
        ) from None

    state_dict = load_state_dict(root, dtype)
    fp32_names = {n for n, t in state_dict.items() if t.is_floating_point() and t.dtype != dtype}

    if hasattr(config, "quantization_config"):
        del config.quantization_config  # weights are dequantized; no quantizer at run time
    kwargs = {}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation

    # quiet: a mismatch is reported below as one CheckpointError, not as transformers' table
    progress, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        model, info = model_cls.from_pretrained(
            None, config=config, state_dict=state_dict, dtype=dtype, output_loading_info=True, **kwargs
        )
    except (RuntimeError, ValueError) as e:
        raise CheckpointError(
            f"transformers could not build {model_cls.__name__} from {root}: {e}", hint=NEXT_PULL
        ) from e
    finally:
        hf_logging.set_verbosity(verbosity)
        if progress:
            hf_logging.enable_progress_bar()
    kinds = ("missing_keys", "unexpected_keys", "mismatched_keys")
    problems = {k: sorted(map(str, info[k])) for k in kinds if info.get(k)}
    if problems or info.get("error_msgs"):
        first = next(iter(problems.items()), ("error_msgs", info.get("error_msgs")))
        raise CheckpointError(
            f"{root} does not fit {model_cls.__name__}: {first[0]} {first[1][:3]}",
            hint="the weights do not match config.json; " + NEXT_PULL,
        )

    inner = getattr(model, "model", None)
    layers, norm = getattr(inner, "layers", None), getattr(inner, "norm", None)
    if not (isinstance(layers, torch.nn.ModuleList) and isinstance(norm, torch.nn.Module)):
        raise CheckpointError(
            f"{model_cls.__name__} does not expose its decoder layers as model.model.layers and its final norm "
            "as model.model.norm",
            hint="the reference engine supports Llama-style decoder-only LMs (MiniMax-M2, Qwen3, DeepSeek-V3, ...)",
        )
    _restore_wide_tensors(model, state_dict, fp32_names)

    if experts_implementation is None and dtype not in (torch.bfloat16, torch.float16):
        experts_implementation = "eager"
    if experts_implementation is not None and model._can_set_experts_implementation():
        model.set_experts_implementation(experts_implementation)
    model.eval()
    return model.to(device)


def _restore_wide_tensors(model, state_dict: dict[str, torch.Tensor], names: set[str]) -> None:
    """from_pretrained casts every tensor to the run dtype; put the float32-kept ones (router)
    back at full precision. Router tensors are never fused by transformers' conversions,
    only renamed (MiniMax-M2: block_sparse_moe -> mlp), so the model name is found directly."""
    if not names:
        return
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    for name in sorted(names):
        candidates = [name, name.replace(".block_sparse_moe.", ".mlp.")]
        target = next((c for c in candidates if c in params or c in buffers), None)
        if target is None:
            raise CheckpointError(
                f"cannot find where {name} landed in {type(model).__name__} to keep it in float32",
                hint="this architecture renames its router tensors; extend _restore_wide_tensors",
            )
        value = state_dict[name]
        module_name, _, attr = target.rpartition(".")
        module = model.get_submodule(module_name)
        current = getattr(module, attr)
        if tuple(current.shape) != tuple(value.shape):
            raise CheckpointError(
                f"{name} has shape {list(value.shape)}, the model expects {list(current.shape)}", hint=NEXT_PULL
            )
        value = value.to(device=current.device)
        if target in params:
            setattr(module, attr, torch.nn.Parameter(value, requires_grad=False))
        else:
            persistent = attr not in module._non_persistent_buffers_set
            module.register_buffer(attr, value, persistent=persistent)
