"""The reference engine: the PoC v2 forward of a transformers causal LM, in process.

spec §1.4  inputs_embeds from the nonce seeds (token embedding bypassed)
spec §2.3  one Householder reflection of each decoder layer's output stream (HF layers
           return the full residual stream s = h + r, so reflecting s once equals vLLM's
           reflection of h and r separately; element 1 of an HF tuple is NOT a residual)
spec §3    causal attention over positions 0..S-1 per nonce, final norm, last position,
           then `poc_vectors` (normalise, pick, Haar, normalise, fp16)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ..poc import finite_rows, householder_reflect, householder_vector, input_embeddings, poc_vectors
from .base import EngineResult, PocParams

DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use one of {sorted(DTYPES)}") from None


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float32: "fp32"}.get(dtype, str(dtype))


def decoder_layers(model) -> torch.nn.ModuleList:
    """The full list of decoder layers (global indices) of an HF causal LM."""
    return model.model.layers


def _reflect_output(output, v: torch.Tensor):
    """Reflect a layer's output stream: a bare tensor, or element 0 of a tuple."""
    if isinstance(output, tuple):
        return (householder_reflect(output[0], v), *output[1:])
    return householder_reflect(output, v)


@contextmanager
def householder_hooks(model, block_hash: str):
    """Install the per-layer reflections of `block_hash` for the duration of one PoC forward."""
    layers = decoder_layers(model)
    D = model.config.hidden_size
    handles = []
    try:
        for i, layer in enumerate(layers):
            v = householder_vector(block_hash, i, D, device=next(model.parameters()).device)
            handles.append(layer.register_forward_hook(lambda mod, args, out, v=v: _reflect_output(out, v)))
        yield
    finally:
        for h in handles:
            h.remove()


@torch.inference_mode()
def poc_last_hidden(model, inputs_embeds: torch.Tensor, block_hash: str) -> torch.Tensor:
    """Hooked forward of [B, S, D] inputs -> hidden state after the final norm at position S-1, float32 [B, D]."""
    with householder_hooks(model, block_hash):
        out = model.model(inputs_embeds=inputs_embeds, use_cache=False)
    return out.last_hidden_state[:, -1, :].to(torch.float32)


class ReferenceEngine:
    """Computes PoC vectors with a local checkpoint (or an already-loaded model)."""

    name = "reference"

    def __init__(self, model_dir: str | Path | None = None, *, model=None, device: str = "cpu", dtype="bf16", model_id: str | None = None):
        self.dtype = parse_dtype(dtype)
        self.device = torch.device(device)
        self.model_dir = Path(model_dir) if model_dir is not None else None
        if model is None:
            if self.model_dir is None:
                raise ValueError("give a model_dir or a loaded model")
            from ..weights.loader import load_causal_lm

            t = time.perf_counter()
            # eager experts on CPU: measured fastest there (32 nonces x 256 tokens, tiny MiniMax-M2:
            # eager 0.5 s, grouped_mm 2.0 s, batched_mm 39 s in fp32)
            experts = "eager" if self.device.type == "cpu" else None
            model = load_causal_lm(self.model_dir, dtype=self.dtype, device=str(self.device),
                                   experts_implementation=experts)
            self.load_seconds = time.perf_counter() - t
        else:
            self.load_seconds = 0.0
        self.model = model.eval()
        self.model_id = model_id or (str(self.model_dir) if self.model_dir else type(model).__name__)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def describe(self) -> dict:
        cfg = self.model.config
        return {
            "engine": self.name,
            "model": self.model_id,
            "model_dir": str(self.model_dir) if self.model_dir else None,
            "architecture": (getattr(cfg, "architectures", None) or [type(self.model).__name__])[0],
            "hidden_size": self.hidden_size,
            "num_layers": len(decoder_layers(self.model)),
            "device": str(self.device),
            "dtype": dtype_name(self.dtype),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        }

    def compute(self, nonces: Sequence[int], params: PocParams, batch_size: int = 32, progress=None) -> EngineResult:
        """Vectors for `nonces` in chunks of `batch_size`, request order; NaN rows dropped (spec §3.4)."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        nonces = [int(n) for n in nonces]
        kept_nonces, kept_vecs, chunk_s = [], [], []
        timing = {"inputs_s": 0.0, "forward_s": 0.0, "post_s": 0.0}
        t0 = time.perf_counter()
        for a in range(0, len(nonces), batch_size):
            chunk = nonces[a : a + batch_size]
            tc = time.perf_counter()
            x = input_embeddings(
                params.block_hash, params.public_key, chunk, params.seq_len, self.hidden_size,
                dtype=self.dtype, device=self.device, stronger_rng=params.stronger_rng,
            )  # [B, S, D]
            t1 = time.perf_counter()
            last = poc_last_hidden(self.model, x, params.block_hash)  # [B, D] float32
            t2 = time.perf_counter()
            keep = ~torch.isnan(last).any(dim=-1)  # §3.4: a NaN row is dropped with its nonce
            alive = [n for n, k in zip(chunk, keep.tolist()) if k]
            if alive:
                vecs = poc_vectors(last[keep], params.block_hash, params.public_key, alive, params.k_dim)
                fin = finite_rows(vecs)  # and again after the fp16 conversion
                kept_nonces += [n for n, f in zip(alive, fin) if f]
                kept_vecs.append(vecs[fin])
            t3 = time.perf_counter()
            timing["inputs_s"] += t1 - tc
            timing["forward_s"] += t2 - t1
            timing["post_s"] += t3 - t2
            chunk_s.append(t3 - tc)
            if progress is not None:
                progress(min(a + batch_size, len(nonces)), len(nonces))
        elapsed = time.perf_counter() - t0
        vectors = np.concatenate(kept_vecs) if kept_vecs else np.zeros((0, params.k_dim), np.float16)
        return EngineResult(
            nonces=np.asarray(kept_nonces, dtype=np.int64),
            vectors=vectors.astype(np.float16),
            requested=nonces,
            batch_size=batch_size,
            elapsed_s=elapsed,
            batch_seconds=chunk_s,
            info={**self.describe(), **{k: round(v, 6) for k, v in timing.items()}},
        )
