"""`mlvalidate hw`: what GPUs this host has (NVML), which profile matches, what fits in VRAM.

Two steps, the second pure:
* `read_inventory(nvml)` asks NVML (`import pynvml`, from nvidia-ml-py) for the driver, CUDA
  version and per-GPU name, memory, clocks, power and the processes holding GPU memory. `nvml`
  is the pynvml module by default; tests pass an object with the same functions.
* `build_report(inventory, profiles)` matches the GPUs to a profile (NVML name pattern and GPU
  count), estimates the VRAM fit for every profile and, for the matched one, checks that
  vLLM can claim its share of memory now.

`hw_report(...)` runs both for the command, which prints the report as text (commands/hw.py)
or, with `hw --json`, as the dict.

The fit estimate, per GPU of one vLLM instance (docs/minimax-m2.md §4):

    weights   = (FP8 checkpoint - replicated parts) / TP + replicated parts
    KV cache  = max-model-len x layers x 2 x (KV heads / TP) x head_dim x bytes  (fp8: 1 byte;
                124 KiB per token for the whole model) — vLLM refuses to start unless one
                full-length sequence fits
    headroom  = activations of the PoC batch, CUDA graphs, NCCL buffers, CUDA context (a flat
                allowance, --headroom-gib)
    fits      when weights + KV cache + headroom <= GPU memory x --gpu-memory-utilization

`hw --profiles-only` prints the fit table for every profile from the profiles' own GPU memory
figures, without NVML (e.g. to size a host before renting it).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import MlvalidateError
from .profiles import Profile, list_profiles, load_profile
from .vllm_flags import flag_value

GIB = 1024**3
DEFAULT_HEADROOM_GIB = 4.0
VLLM_DEFAULT_GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default when the args do not set it


class HardwareError(MlvalidateError):
    """NVML cannot report this host's GPUs (no driver, no library, no GPU)."""


class NoGpu(HardwareError):
    """NVML says this host has no usable GPU: no NVIDIA driver, the driver not loaded, or no device."""


# ----------------------------------------------------------------------------------------
# inventory
# ----------------------------------------------------------------------------------------
@dataclass
class GpuProcess:
    pid: int
    name: str | None
    used_bytes: int | None  # None where NVML cannot tell (e.g. under some MIG / WDDM set-ups)


@dataclass
class Gpu:
    index: int
    name: str
    uuid: str | None
    memory_total_bytes: int
    memory_used_bytes: int
    sm_clock_mhz: int | None = None
    sm_clock_max_mhz: int | None = None
    mem_clock_mhz: int | None = None
    mem_clock_max_mhz: int | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    processes: list[GpuProcess] = field(default_factory=list)

    @property
    def memory_total_gib(self) -> float:
        return self.memory_total_bytes / GIB

    @property
    def memory_used_gib(self) -> float:
        return self.memory_used_bytes / GIB


@dataclass
class Inventory:
    driver_version: str | None
    cuda_version: str | None  # the driver's CUDA version, e.g. "12.8"
    nvml_version: str | None
    gpus: list[Gpu]


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _cuda_version(v: int | None) -> str | None:
    """NVML's integer (e.g. 12080) -> '12.8'."""
    return None if v is None else f"{v // 1000}.{(v % 1000) // 10}"


def read_inventory(nvml: Any = None) -> Inventory:
    """Ask NVML. Raises HardwareError (one line, with the next step) when NVML cannot start."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError as e:
            raise HardwareError(
                "pynvml is not importable", "pip install nvidia-ml-py (the maintained package that provides pynvml)"
            ) from e
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as e:
        raise _init_error(nvml, e) from None
    try:

        def opt(fn, *a):
            """An optional query: None where this board or driver does not support it."""
            try:
                return fn(*a)
            except nvml.NVMLError:
                return None

        count = nvml.nvmlDeviceGetCount()
        if count == 0:
            raise NoGpu("NVML started but reports no GPUs", "check that the GPUs are visible (nvidia-smi, "
                                "CUDA_VISIBLE_DEVICES, container runtime)")  # fmt: skip
        gpus = []
        for i in range(count):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            mem = nvml.nvmlDeviceGetMemoryInfo(h)
            procs: dict[int, GpuProcess] = {}
            for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
                fn = getattr(nvml, getter, None)
                for p in (opt(fn, h) if fn else None) or []:
                    pid = int(p.pid)
                    used = getattr(p, "usedGpuMemory", None)
                    name = opt(nvml.nvmlSystemGetProcessName, pid)
                    procs.setdefault(pid, GpuProcess(pid, _text(name) if name is not None else None,
                                                     int(used) if used is not None else None))  # fmt: skip
            power = opt(nvml.nvmlDeviceGetPowerUsage, h)
            limit = opt(nvml.nvmlDeviceGetEnforcedPowerLimit, h)
            uuid = opt(nvml.nvmlDeviceGetUUID, h)
            gpus.append(
                Gpu(
                    index=i,
                    name=_text(nvml.nvmlDeviceGetName(h)),
                    uuid=_text(uuid) if uuid is not None else None,
                    memory_total_bytes=int(mem.total),
                    memory_used_bytes=int(mem.used),
                    sm_clock_mhz=opt(nvml.nvmlDeviceGetClockInfo, h, nvml.NVML_CLOCK_SM),
                    sm_clock_max_mhz=opt(nvml.nvmlDeviceGetMaxClockInfo, h, nvml.NVML_CLOCK_SM),
                    mem_clock_mhz=opt(nvml.nvmlDeviceGetClockInfo, h, nvml.NVML_CLOCK_MEM),
                    mem_clock_max_mhz=opt(nvml.nvmlDeviceGetMaxClockInfo, h, nvml.NVML_CLOCK_MEM),
                    power_w=power / 1000 if power is not None else None,  # NVML reports milliwatts
                    power_limit_w=limit / 1000 if limit is not None else None,
                    processes=sorted(procs.values(), key=lambda p: p.pid),
                )
            )
        driver = opt(nvml.nvmlSystemGetDriverVersion)
        nv = opt(nvml.nvmlSystemGetNVMLVersion)
        return Inventory(
            driver_version=_text(driver) if driver is not None else None,
            cuda_version=_cuda_version(opt(nvml.nvmlSystemGetCudaDriverVersion)),
            nvml_version=_text(nv) if nv is not None else None,
            gpus=gpus,
        )
    except nvml.NVMLError as e:
        raise HardwareError(f"NVML query failed: {e}", "check the driver with nvidia-smi") from None
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError:
            pass


def _init_error(nvml: Any, e: Exception) -> HardwareError:
    hint = ("run `mlvalidate hw` on the GPU host (nvidia-smi must work there); "
            "`mlvalidate hw --profiles-only` prints the VRAM fit table without a GPU")  # fmt: skip
    value = getattr(e, "value", None)
    if value == getattr(nvml, "NVML_ERROR_LIBRARY_NOT_FOUND", 12):
        return NoGpu(f"no NVIDIA driver on this machine (NVML: {e})", hint)
    if value == getattr(nvml, "NVML_ERROR_DRIVER_NOT_LOADED", 9):
        return NoGpu(f"the NVIDIA driver is not loaded (NVML: {e})", hint)
    return HardwareError(f"NVML could not start ({e.__class__.__name__}: {e})", hint)


# ----------------------------------------------------------------------------------------
# VRAM fit
# ----------------------------------------------------------------------------------------
@dataclass
class FitEstimate:
    profile: str
    memory_source: str  # "profile" (its gpu_memory_gib) or "measured" (NVML memory.total)
    gpu_memory_gib: float
    gpu_memory_utilization: float
    budget_gib: float  # what vLLM may use per GPU
    tensor_parallel_size: int
    weights_gib: float  # per GPU
    kv_bytes_per_token: int  # per GPU
    max_model_len: int
    kv_max_len_gib: float  # one max-model-len sequence, per GPU
    headroom_gib: float
    needed_gib: float
    spare_gib: float  # budget - needed (negative: does not fit)
    fits: bool
    kv_capacity_tokens: int  # KV cache tokens that fit after weights and headroom
    kv_capacity_sequences: float  # the same in max-model-len sequences

    def as_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def fit_estimate(profile: Profile, *, gpu_memory_gib: float | None = None,
                 headroom_gib: float = DEFAULT_HEADROOM_GIB) -> FitEstimate | None:  # fmt: skip
    """The per-GPU VRAM estimate (module docstring). None for a profile without the chain's
    weight facts (a non-chain profile) or without a memory figure."""
    chain = profile.chain
    mem = gpu_memory_gib if gpu_memory_gib is not None else profile.gpu_memory_gib
    if chain is None or not mem or "size_gib" not in chain.weights:
        return None
    w = chain.weights
    args = profile.vllm_args()
    tp = int(flag_value(args, "--tensor-parallel-size") or profile.tensor_parallel_size)
    util = float(flag_value(args, "--gpu-memory-utilization") or VLLM_DEFAULT_GPU_MEMORY_UTILIZATION)
    replicated = float(w.get("replicated_gib", 0.0))
    weights = (float(w["size_gib"]) - replicated) / tp + replicated
    kv_dtype = flag_value(args, "--kv-cache-dtype") or "auto"
    bytes_per_el = int(w.get("kv_cache_bytes_per_element", 1)) if kv_dtype.startswith("fp8") else 2
    kv_heads = max(1, int(w["num_kv_heads"]) // tp)  # vLLM splits KV heads, replicating past one per GPU
    kv_per_token = int(w["num_layers"]) * 2 * kv_heads * int(w["head_dim"]) * bytes_per_el
    max_len = int(flag_value(args, "--max-model-len") or 0)
    kv_max = max_len * kv_per_token / GIB
    budget = mem * util
    needed = weights + kv_max + headroom_gib
    free_for_kv = max(0.0, budget - weights - headroom_gib)
    tokens = int(free_for_kv * GIB // kv_per_token)
    return FitEstimate(
        profile=profile.name, memory_source="profile" if gpu_memory_gib is None else "measured",
        gpu_memory_gib=mem, gpu_memory_utilization=util, budget_gib=budget, tensor_parallel_size=tp,
        weights_gib=weights, kv_bytes_per_token=kv_per_token, max_model_len=max_len, kv_max_len_gib=kv_max,
        headroom_gib=headroom_gib, needed_gib=needed, spare_gib=budget - needed, fits=needed <= budget,
        kv_capacity_tokens=tokens, kv_capacity_sequences=tokens / max_len if max_len else 0.0,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------
# report (pure: inventory + profiles -> dict)
# ----------------------------------------------------------------------------------------
def match_profile(inv: Inventory, profile: Profile) -> tuple[bool, str]:
    """(matches, why): every GPU's NVML name matches the profile's pattern and the count is the
    profile's GPUs per machine (gpu_count / nodes: a layout over several machines, vLLM's Ray
    executor, has gpu_count / nodes of them on each)."""
    if not profile.gpu_name_pattern or not profile.gpu_count:
        return False, "profile names no GPU"
    pat = re.compile(profile.gpu_name_pattern)
    names = sorted({g.name for g in inv.gpus})
    if not all(pat.search(g.name) for g in inv.gpus):
        return False, f"GPU model {', '.join(names)} is not {profile.gpu_model}"
    want = profile.gpu_count // profile.nodes
    per = f" per machine ({profile.gpu_count} over {profile.nodes} machines)" if profile.nodes > 1 else ""
    if len(inv.gpus) != want:
        return False, f"{len(inv.gpus)} GPUs here, the profile is for {want}{per}"
    return True, f"{len(inv.gpus)}x {names[0]} = {profile.gpu_model} x {want}{per}"


def startup_check(inv: Inventory, fit: FitEstimate) -> list[dict]:
    """vLLM refuses to start unless every GPU has memory x utilization free: per GPU, is it?"""
    out = []
    for g in inv.gpus:
        free = g.memory_total_gib - g.memory_used_gib
        want = g.memory_total_gib * fit.gpu_memory_utilization
        holders = [f"pid {p.pid} {p.name or '?'}" + (f" ({p.used_bytes / GIB:.1f} GiB)" if p.used_bytes else "")
                   for p in g.processes]  # fmt: skip
        out.append({"gpu": g.index, "free_gib": round(free, 2), "wanted_gib": round(want, 2), "ok": free >= want,
                    "holders": holders})  # fmt: skip
    return out


def gpu_dict(g: Gpu) -> dict:
    d = asdict(g)
    d["memory_total_gib"] = round(g.memory_total_gib, 2)
    d["memory_used_gib"] = round(g.memory_used_gib, 2)
    return d


def fit_table(profiles: list[Profile], *, headroom_gib: float = DEFAULT_HEADROOM_GIB) -> list[dict]:
    rows = []
    for p in profiles:
        est = fit_estimate(p, headroom_gib=headroom_gib)
        row = est.as_dict() if est else {"profile": p.name, "fits": None, "note": "no chain weights to size"}
        row.update(gpu_model=p.gpu_model, gpu_count=p.gpu_count)
        if p.chain is not None and p.chain.vram_per_instance_gb and p.gpu_memory_gib:
            row["layout_vram_gb"] = round(p.gpu_memory_gib * p.gpu_count / p.instances_per_host * GIB / 1e9, 1)
            row["chain_vram_per_instance_gb"] = p.chain.vram_per_instance_gb
        rows.append(row)
    return rows


def build_report(inv: Inventory | None, profiles: list[Profile], *,
                 headroom_gib: float = DEFAULT_HEADROOM_GIB) -> dict:  # fmt: skip
    """Everything `hw` says, as plain data. inv None: the profiles-only fit table."""
    report: dict[str, Any] = {"headroom_gib": headroom_gib, "fit": fit_table(profiles, headroom_gib=headroom_gib)}
    if inv is None:
        return report
    report.update(
        driver_version=inv.driver_version, cuda_version=inv.cuda_version, nvml_version=inv.nvml_version,
        gpus=[gpu_dict(g) for g in inv.gpus], matches=[], matched_profile=None,
    )  # fmt: skip
    for p in profiles:
        ok, why = match_profile(inv, p)
        report["matches"].append({"profile": p.name, "match": ok, "why": why})
        if ok and report["matched_profile"] is None:
            report["matched_profile"] = p.name
            measured = min(g.memory_total_gib for g in inv.gpus)
            est = fit_estimate(p, gpu_memory_gib=measured, headroom_gib=headroom_gib)
            report["fit_measured"] = est.as_dict() if est else None
            report["startup"] = startup_check(inv, est) if est else []
    return report


def hw_report(profiles: list[str] | None = None, *, profiles_only: bool = False,
              headroom_gib: float = DEFAULT_HEADROOM_GIB, nvml: Any = None) -> dict:  # fmt: skip
    """What `mlvalidate hw` reports: NVML's inventory (unless `profiles_only`) matched against
    `profiles` (default: every profile under configs/). HardwareError when NVML cannot start."""
    if headroom_gib < 0:
        raise MlvalidateError("--headroom-gib must be >= 0")
    profs = [load_profile(n) for n in (profiles or list_profiles())]
    inv = None if profiles_only else read_inventory(nvml)
    return build_report(inv, profs, headroom_gib=headroom_gib)
