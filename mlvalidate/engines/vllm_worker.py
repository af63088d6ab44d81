"""The worker side of the in-process vLLM engine: PoC v2 hooks inside vLLM's model runner.

`PocWorkerExtension` is handed to vLLM as `worker_extension_cls`; vLLM mixes it into its
worker class, in the worker process (spawned: this module must be importable there, which it
is whenever `mlvalidate` is). The driver (`engines/vllm_inprocess.py`) calls its methods through
`LLM.collective_rpc`:

    poc_install(block_hash, seq_len, fp_dims)  hooks on; returns what the worker sees (its model,
                                               the layout vLLM gave it, its process and the
                                               /dev/shm files it maps: vLLM's queues)
    poc_fetch()                                the rows captured since install, as bytes
    poc_remove()                               hooks off (also done by poc_install)

What the hooks do (spec §2.2, §3.2, §3.3):

* a forward hook on every decoder layer `model.model.layers[i]` (global index i, so pipeline
  stages keep their numbering) reflects BOTH elements of vLLM's `(hidden_states, residual)`
  with v_i — the reflection is linear, so H h + H r = H (h + r), the stream the next fused
  add+norm sees;
* a forward pre-hook on the model (the CausalLM) reads `positions` and `inputs_embeds` of each forward
  step;
* a forward hook on `model.model.norm` (called as `norm(h, residual)`) keeps the normed rows
  whose position is S−1, together with the first `fp_dims` values of the same rows' input
  embedding: the fingerprint by which the driver maps a row to its nonce. The scheduler
  splits, reorders and chunks prefills freely; a row at position S−1 exists exactly once per
  sequence, in whatever step finishes that sequence's prefill, and its input row is
  x_nonce[S−1], which identifies the nonce whatever the scheduling.

Only public module attributes are used, but they are internals of vLLM all the same; when one
is missing the call raises a RuntimeError whose text the driver turns into one EngineError line.
Nothing here imports vLLM.
"""

from __future__ import annotations

import inspect
import os
import time

import torch

# spec §2.1 (v_i), §2.2 (the reflection, in the activations' dtype)
from ..poc import householder_reflect, householder_vector
from .vllm_setup import mapped_shm_files, shm_identity


class _PocHooks:
    """The hooks of one PoC run in one worker; `remove()` takes every one of them off."""

    def __init__(self, model, block_hash: str, seq_len: int, fp_dims: int):
        inner = getattr(model, "model", None)
        layers = getattr(inner, "layers", None)
        norm = getattr(inner, "norm", None)
        if inner is None or layers is None or norm is None:
            raise RuntimeError(f"{type(model).__name__} has no model.model.layers / model.model.norm")
        self.seq_len, self.fp_dims = int(seq_len), int(fp_dims)
        self.rows: list[torch.Tensor] = []  # [n, D] float32, normed hidden state at position S-1
        self.fps: list[torch.Tensor] = []  # [n, fp_dims] float32, input embedding at position S-1
        self.forwards = 0
        self.forward_s = 0.0  # wall time inside the model's forward (pre-hook to forward hook)
        self._t0: float | None = None
        self.layer_calls = 0
        self._sel: torch.Tensor | None = None
        self._handles = []
        D = int(model.config.hidden_size) if hasattr(model, "config") else None
        start = int(getattr(inner, "start_layer", 0))
        end = int(getattr(inner, "end_layer", len(layers)))
        self.layer_range = (start, end)
        try:
            # the pre-hook sits on the outer model: vLLM's compile decorator calls the inner
            # model's forward directly, so hooks on model.model itself never run
            self._sig = inspect.signature(model.forward)
            for i in range(start, end):
                layer = layers[i]
                dim = D or int(next(p for p in layer.parameters()).shape[-1])
                v = householder_vector(block_hash, i, dim)
                self._handles.append(layer.register_forward_hook(self._layer_hook(v)))
            self._handles.append(model.register_forward_pre_hook(self._pre_hook, with_kwargs=True))
            self._handles.append(model.register_forward_hook(self._post_hook))
            if type(norm).__name__ != "PPMissingLayer":
                self._handles.append(norm.register_forward_hook(self._norm_hook))
                self.last_stage = True
            else:
                self.last_stage = False
        except BaseException:
            self.remove()
            raise

    def _layer_hook(self, v: torch.Tensor):
        cache: dict = {}

        def hook(module, args, output):
            self.layer_calls += 1
            ref = output[0] if isinstance(output, tuple) else output
            key = (ref.device, ref.dtype)
            vv = cache.get(key)
            if vv is None:
                vv = cache[key] = v.to(device=ref.device, dtype=ref.dtype)
            if isinstance(output, tuple):
                if len(output) >= 2:
                    return (householder_reflect(output[0], vv), householder_reflect(output[1], vv), *output[2:])
                return (householder_reflect(output[0], vv),)
            return householder_reflect(output, vv)

        return hook

    def _post_hook(self, module, args, output):
        if self._t0 is not None:
            self.forward_s += time.perf_counter() - self._t0
            self._t0 = None

    def _pre_hook(self, module, args, kwargs):
        self.forwards += 1
        self._t0 = time.perf_counter()
        bound = self._sig.bind_partial(*args, **kwargs).arguments
        positions, embeds = bound.get("positions"), bound.get("inputs_embeds")
        self._sel = None
        if positions is None:
            return
        pos = positions[-1] if positions.dim() > 1 else positions  # M-RoPE [3, T]: any row holds the text position
        sel = (pos == self.seq_len - 1).nonzero().flatten()
        self._sel = sel
        if sel.numel() and self.last_stage:
            if embeds is None:
                raise RuntimeError("the model was called without inputs_embeds: the prompt embeddings cannot be "
                                   "matched to their nonces (pipeline parallelism is not supported)")
            self.fps.append(embeds[sel, : self.fp_dims].detach().to("cpu", torch.float32))

    def _norm_hook(self, module, args, output):
        out = output[0] if isinstance(output, tuple) else output
        sel = self._sel
        if sel is not None and sel.numel():
            self.rows.append(out[sel].detach().to("cpu", torch.float32))

    def fetch(self) -> dict:
        """The rows captured since the last fetch (float32 bytes + shape: tensors sent through
        collective_rpc lose their data unless vLLM's insecure serialization is on), then reset."""
        rows = torch.cat(self.rows) if self.rows else torch.zeros((0, 0), dtype=torch.float32)
        fps = torch.cat(self.fps) if self.fps else torch.zeros((0, self.fp_dims), dtype=torch.float32)
        out = {
            "rows": rows.contiguous().numpy().tobytes(), "rows_shape": list(rows.shape),
            "fps": fps.contiguous().numpy().tobytes(), "fps_shape": list(fps.shape),
            "dtype": "float32", "forwards": self.forwards, "forward_s": self.forward_s,
            "layer_calls": self.layer_calls, "last_stage": self.last_stage,
        }
        self.rows, self.fps = [], []
        self.forwards, self.layer_calls, self.forward_s = 0, 0, 0.0
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def _parallel_layout(worker) -> dict:
    """The layout as vLLM's parallel config has it in this worker."""
    pc = getattr(worker, "parallel_config", None) or getattr(getattr(worker, "vllm_config", None),
                                                             "parallel_config", None)
    if pc is None:
        return {}
    backend = getattr(pc, "distributed_executor_backend", None)
    return {"tensor_parallel_size": int(getattr(pc, "tensor_parallel_size", 1)),
            "pipeline_parallel_size": int(getattr(pc, "pipeline_parallel_size", 1)),
            "data_parallel_size": int(getattr(pc, "data_parallel_size", 1)),
            "expert_parallel": bool(getattr(pc, "enable_expert_parallel", False)),
            "distributed_executor_backend": backend if isinstance(backend, str) or backend is None
            else getattr(backend, "__name__", str(backend))}


class PocWorkerExtension:
    """Mixed into vLLM's worker class (`worker_extension_cls`); `self` is the worker."""

    _poc_hooks: _PocHooks | None = None

    def _poc_model(self):
        runner = getattr(self, "model_runner", None)
        model = getattr(runner, "model", None)
        if model is None:
            raise RuntimeError(f"{type(self).__name__} has no model_runner.model")
        # some runners wrap the model (e.g. CUDA-graph wrappers) and keep it as .model / .runnable
        for _ in range(3):
            if hasattr(getattr(model, "model", None), "layers"):
                return model
            nxt = getattr(model, "runnable", None) or getattr(model, "model", None)
            if nxt is None:
                break
            model = nxt
        return model

    def poc_install(self, block_hash: str, seq_len: int, fp_dims: int = 16) -> dict:
        self.poc_remove()
        model = self._poc_model()
        hooks = _PocHooks(model, block_hash, seq_len, fp_dims)
        self._poc_hooks = hooks
        p = next(model.parameters())
        rank = getattr(self, "rank", None)
        return {"rank": rank, "pid": os.getpid(), "parallel": _parallel_layout(self), "shm": shm_identity(),
                "shm_files": mapped_shm_files(),
                "layers": list(hooks.layer_range), "dtype": str(p.dtype).replace("torch.", ""),
                "device": str(p.device), "model_class": type(model).__name__, "last_stage": hooks.last_stage,
                "hidden_size": int(getattr(getattr(model, "config", None), "hidden_size", 0) or 0),
                "moe_layers": sorted({type(m).__name__ for m in model.modules() if "MoE" in type(m).__name__})}

    def poc_fetch(self) -> dict:
        if self._poc_hooks is None:
            raise RuntimeError("poc_fetch before poc_install")
        out = self._poc_hooks.fetch()
        out["rank"] = getattr(self, "rank", None)
        return out

    def poc_remove(self) -> bool:
        had = self._poc_hooks is not None
        if had:
            self._poc_hooks.remove()
            self._poc_hooks = None
        return had
