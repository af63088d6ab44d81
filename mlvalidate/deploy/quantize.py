"""A cheating node's checkpoint: the same model with its weights rounded to 4 bits.

Community INT4 / NVFP4 / MXFP4 quantizations of MiniMax-M2.7 run faster than the FP8
checkpoint, and a host serving one in its place must FAIL. To show (and test) that the
harness catches this, `write_quantized_copy` writes a copy of a checkpoint in which every
projection and expert matrix is fake-quantized: symmetric round-to-nearest integers in
[-2**(bits-1), 2**(bits-1)-1] with one absmax scale per group of `group_size` input columns,
stored back as bf16. Norms, embeddings, the LM head and the router stay untouched — only
the weights a real low-bit quantization would touch change.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..errors import CheckpointError
from .checkpoint import load_state_dict, read_config

_QUANTIZED = (".q_proj.weight", ".k_proj.weight", ".v_proj.weight", ".o_proj.weight",
              ".w1.weight", ".w2.weight", ".w3.weight",
              ".gate_proj.weight", ".up_proj.weight", ".down_proj.weight")


def fake_quantize(w: torch.Tensor, bits: int = 4, group_size: int = 32) -> torch.Tensor:
    """Round [out, in] weights to `bits`-bit integers times a per-(row, column group) absmax scale."""
    out_f, in_f = w.shape
    g = min(group_size, in_f)
    if in_f % g:
        raise ValueError(f"input width {in_f} is not a multiple of the group size {g}")
    qmax = 2 ** (bits - 1) - 1
    x = w.to(torch.float32).reshape(out_f, in_f // g, g)
    scale = x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / qmax
    q = torch.clamp(torch.round(x / scale), -qmax - 1, qmax)
    return (q * scale).reshape(out_f, in_f)


def write_quantized_copy(src: str | Path, dst: str | Path, bits: int = 4, group_size: int = 32) -> Path:
    """Write `dst`: `src`'s checkpoint (bf16 or FP8) with its projection/expert weights fake-quantized, as bf16."""
    src, dst = Path(src), Path(dst)
    cfg = read_config(src)
    state = load_state_dict(src, dtype=torch.bfloat16)
    n_q = 0
    for name, t in state.items():
        if name.endswith(_QUANTIZED) and t.ndim == 2:
            state[name] = fake_quantize(t, bits, group_size).to(torch.bfloat16)
            n_q += 1
    if n_q == 0:
        raise CheckpointError(f"{src}: found no projection or expert weights to quantize")
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():  # tokenizer and generation files travel along
        if f.is_file() and not f.name.endswith(".safetensors") and f.name not in ("config.json", "model.safetensors.index.json"):
            shutil.copy2(f, dst / f.name)
    cfg.pop("quantization_config", None)
    cfg["mlvalidate_note"] = f"weights fake-quantized to {bits} bits (group {group_size}) by mlvalidate: a cheating node for tests"
    (dst / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in state.items()}, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst
