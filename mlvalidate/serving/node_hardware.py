"""The node's hardware, kept apart from the harness machine's (environment.json's "node"; a
results.NodeHardware inside a results.NodeRecord).

Where the facts come from, first that says wins; what another source says differently is kept
in `notes`, and every fact names its source:

1. the node itself. Gonka's MLNode answers GET /api/v1/gpu/devices (index, name and memory of
   each CUDA device its NVML sees) and GET /api/v1/gpu/driver (driver and CUDA versions): spec
   §5.2 (docs/poc-v2.md), measured against the real one. Without NVML (no NVIDIA driver: a CPU
   machine) it answers `{"devices": [], "count": 0}` and 503 "NVML not initialized": that says
   nothing of its GPUs, and the next source decides. An MLNode that has no such routes (404)
   or does not answer says nothing either.
2. this host, when the node is this host: an engine in this process (`run`, `demo`) or a node
   on loopback. The harness's own NVML inventory (or torch's CUDA devices, when the run
   imported torch); no NVIDIA driver or no device means a CPU node.
3. the operator: --gpus "H100 x4" (a fleet entry's `gpus`), then the --profile's GPU model and
   count (a claim, not a measurement: the report says which).

An HTTP node that never answered (a dead node, or a run that ended before its model check) has
no hardware at all: unknown, with why. Reading bundles back (`hardware_of_environment`): a bundle
written before the node was recorded (environment.json without "node") describes only the
harness machine; its hardware is the node's only where the node was this host (an engine in
process, or a loopback URL), labelled as such, and unknown otherwise.
"""

from __future__ import annotations

import re

from ..errors import MlvalidateError
from ..http_client import is_loopback
from ..results import UNKNOWN_SOURCE, Environment, NodeHardware, NodeRecord

SOURCE_DEVICES = "node: MLNode GET /api/v1/gpu/devices"
SOURCE_DRIVER = "node: MLNode GET /api/v1/gpu/driver"
SOURCE_NVML = "this host: NVML"
SOURCE_TORCH = "this host: torch.cuda"
SOURCE_CPU = "this host: /proc/cpuinfo"
SOURCE_OLD = "older bundle: the harness machine's record (the node ran on it)"
THIS_HOST, REMOTE = "this host", "remote"
_GPUS = re.compile(r"^\s*(?:(\d+)\s*[x×*]\s*(\S.*?)|(\S.*?)\s*[x×*]\s*(\d+))\s*$", re.IGNORECASE)
_NO_GPU_WORDS = ("cpu", "none", "no gpu", "0")


def parse_gpus(text: str, what: str = "--gpus") -> tuple[str | None, int]:
    """'H100 x4', '4x H100', 'NVIDIA H100 80GB HBM3 x 4' -> (model, count); 'CPU' or 'none' ->
    (None, 0). Anything else is one line naming `what`."""
    t = " ".join(str(text).split())
    if t.lower() in _NO_GPU_WORDS:
        return None, 0
    m = _GPUS.match(t)
    count = int(m.group(1) or m.group(4)) if m else 0
    model = (m.group(2) or m.group(3)).strip() if m else ""
    if not m or not 1 <= count <= 4096 or not model.isprintable() or len(model) > 100 or model.isdigit():
        raise MlvalidateError(f"{what} {text!r} is not a GPU model and count",
                              f'write it as MODEL x COUNT, e.g. {what} "H100 x4" (or "CPU")')
    return model, count


def on_this_host(url: str | None) -> bool:
    """An engine in this process (no URL) or a node on loopback runs on this host."""
    return url is None or is_loopback(url)


# ----------------------------------------------------------------------------------------
# each source
# ----------------------------------------------------------------------------------------
def _said(answer: dict | None) -> str:
    """What a route answered, in a few words."""
    if answer is None:
        return "no answer"
    body = answer.get("body")
    detail = body.get("detail") if isinstance(body, dict) else body
    text = detail if isinstance(detail, str) else repr(detail)
    return f"HTTP {answer.get('status')} " + " ".join("".join(c if c.isprintable() else "?" for c in text).split())[:160]


def _text(v, limit: int = 100) -> str | None:
    return " ".join(v.split())[:limit] if isinstance(v, str) and v.strip() and v.isprintable() else None


def mlnode_hardware(answers: dict) -> tuple[NodeHardware | None, list[str]]:
    """The MLNode's own statement (engines/mlnode_api.gpu_answers), or None and why it says nothing."""
    where = f"the MLNode at {answers.get('url')}"
    dev, drv = answers.get("devices"), answers.get("driver")
    if dev is None or dev.get("status") != 200:
        return None, [f"{where} said nothing of its GPUs: GET /api/v1/gpu/devices: {_said(dev)}"]
    devices = dev["body"].get("devices") if isinstance(dev.get("body"), dict) else None
    if not isinstance(devices, list) or len(devices) > 4096 or not all(isinstance(d, dict) for d in devices):
        return None, [f"{where} answered GET /api/v1/gpu/devices with something else than a device list"]
    driver = drv.get("body") if drv is not None and drv.get("status") == 200 and isinstance(drv.get("body"), dict) \
        else None
    if not devices and driver is None:  # its NVML is not running: it cannot say what it computes on
        return None, [f"{where} lists no GPU and its NVML is not running (GET /api/v1/gpu/driver: {_said(drv)}): "
                      "it cannot say what it computes on"]
    gpus = []
    for i, d in enumerate(devices):
        mem = d.get("total_memory_mb")
        gpus.append({"index": d["index"] if type(d.get("index")) is int else i, "name": _text(d.get("name")),
                     "memory_total_mib": mem if type(mem) is int and mem >= 0 else None,
                     "available": d.get("is_available") is True})
    names = sorted({g["name"] for g in gpus if g["name"] and g["available"]})
    hw = NodeHardware(known=True, source=SOURCE_DEVICES, gpu_model=", ".join(names) or None, gpu_count=len(gpus),
                      gpus=gpus, sources={"gpu_model": SOURCE_DEVICES, "gpu_count": SOURCE_DEVICES})
    bad = [g for g in gpus if not g["available"]]
    if bad:
        hw.notes.append(f"{len(bad)} of the node's {len(gpus)} GPU(s) could not be read by its NVML")
    if driver is not None:
        hw.driver_version, hw.cuda_driver_version = _text(driver.get("driver_version")), \
            _text(driver.get("cuda_driver_version"))
        hw.sources.update(driver_version=SOURCE_DRIVER, cuda_driver_version=SOURCE_DRIVER)
    else:
        hw.notes.append(f"{where}: GET /api/v1/gpu/driver: {_said(drv)}")
    return hw, []


def this_host_hardware(env: Environment, only: list[str] | None = None) -> tuple[NodeHardware | None, list[str]]:
    """This host's GPUs from the harness's own NVML (or torch's CUDA devices); no NVIDIA driver
    or no device: a CPU node. `only`: the node's GPUs among them (--nvml: indices or UUIDs)."""
    nv = env.nvml or {}
    hw = NodeHardware(known=True, cpu_model=env.cpu_model, sources={"cpu_model": SOURCE_CPU} if env.cpu_model else {})
    if nv.get("available"):
        gpus = [g for g in nv.get("gpus", []) if only is None or any(
            str(g.get("index")) == t or str(g.get("uuid") or "-").startswith(t) for t in only)]
        names = sorted({str(g.get("name")) for g in gpus})
        hw.source = SOURCE_NVML if only is None else f"{SOURCE_NVML} (--nvml {','.join(only)})"
        hw.gpu_model, hw.gpu_count = (env.gpu_model, env.gpu_count) if only is None else (", ".join(names), len(gpus))
        hw.gpus = [{"index": g.get("index"), "name": g.get("name"), "memory_total_mib":
                    round(g["memory_total_gib"] * 1024) if isinstance(g.get("memory_total_gib"), (int, float)) else None}
                   for g in gpus]
        hw.driver_version, hw.cuda_driver_version = env.driver_version, env.cuda_driver_version
        hw.sources.update({k: hw.source for k in ("gpu_model", "gpu_count", "driver_version", "cuda_driver_version")})
    elif env.gpus:
        hw.source, hw.gpu_count = SOURCE_TORCH, len(env.gpus)
        hw.gpu_model = ", ".join(sorted(set(env.gpus)))
        hw.gpus = [{"index": i, "name": n} for i, n in enumerate(env.gpus)]
        hw.sources.update(gpu_model=SOURCE_TORCH, gpu_count=SOURCE_TORCH)
    elif nv.get("no_gpu"):
        reason = str(nv.get("reason")).split(" — ")[0].split(" (NVML:")[0]  # "no NVIDIA driver on this machine"
        hw.source, hw.gpu_count = f"{SOURCE_NVML} ({reason})", 0
        hw.sources["gpu_count"] = hw.source
    else:
        return None, [f"this host's NVML could not answer: {nv.get('reason') or 'not sampled'}"]
    if env.torch_cpu_capability:
        hw.sources["torch_cpu_capability"] = f"this process: torch ({env.torch_cpu_capability})"
    return hw, []


def declared_hardware(text: str, source: str) -> NodeHardware:
    model, count = parse_gpus(text)
    return NodeHardware(known=True, source=source, gpu_model=model, gpu_count=count,
                        sources={"gpu_model": source, "gpu_count": source})


def profile_hardware(profile) -> NodeHardware | None:
    """The profile's GPU model and count (a claim), or None when it names none (a CPU test profile)."""
    if profile is None or not getattr(profile, "gpu_model", None) or not getattr(profile, "gpu_count", 0):
        return None
    src = f"operator: profile {profile.name}"
    return NodeHardware(known=True, source=src, gpu_model=profile.gpu_model, gpu_count=profile.gpu_count,
                        sources={"gpu_model": src, "gpu_count": src})


def _agrees(chosen: NodeHardware, other: NodeHardware, pattern: str | None = None) -> bool:
    if chosen.gpu_count != other.gpu_count:
        return False
    if not chosen.gpu_model or not other.gpu_model:
        return chosen.gpu_model == other.gpu_model
    if pattern:
        try:
            return re.search(pattern, chosen.gpu_model) is not None
        except re.error:
            pass
    a, b = chosen.gpu_model.lower(), other.gpu_model.lower()
    return a in b or b in a


def _layout(profile) -> str | None:
    if profile is None:
        return None
    tp, pp = getattr(profile, "tensor_parallel_size", 1) or 1, getattr(profile, "pipeline_parallel_size", 1) or 1
    return f"TP {tp} x PP {pp}"


# ----------------------------------------------------------------------------------------
# the record
# ----------------------------------------------------------------------------------------
def node_record(run, harness: Environment) -> NodeRecord:
    """The node `run` (a results.RunRecord) measured, its hardware from the first source that
    says (module docstring), the others' differing word kept in its notes."""
    url = run.engine.get("url") if isinstance(run.engine, dict) and isinstance(run.engine.get("url"), str) else None
    nvml = (run.inputs.get("nvml") or {}).get("value") if isinstance(run.inputs, dict) else None
    only = None if nvml in (None, "all", "none") else str(nvml).split(",")  # --nvml: the node's GPUs are these here
    here = on_this_host(url) or nvml not in (None, "none")
    where = THIS_HOST if here else REMOTE
    facts = run.node_facts
    software = _software(run, harness, url)
    if url is not None and facts is None:
        why = (run.error or "the run ended before the node answered its model check").split(" — ")[0]
        why = why if len(why) <= 160 else why[:159] + "…"
        return NodeRecord(where, url, NodeHardware(known=False, why=f"the node never answered: {why}"), software)
    notes: list[str] = []
    said: list[NodeHardware] = []
    if facts and isinstance(facts.get("mlnode"), dict):
        hw, why = mlnode_hardware(facts["mlnode"])
        notes += why
        said += [hw] if hw else []
    if here:
        hw, why = this_host_hardware(harness, only)
        notes += why
        said += [hw] if hw else []
    declared = run.inputs.get("gpus") if isinstance(run.inputs, dict) else None
    if isinstance(declared, dict) and isinstance(declared.get("value"), str):
        src = "operator: " + ("--gpus" if declared.get("source") == "cli" else str(declared.get("source")))
        said.append(declared_hardware(declared["value"], src))
    prof = profile_hardware(run.profile)
    said += [prof] if prof else []
    if not said:
        hw = NodeHardware(known=False, why="nothing said what it computes on: " + "; ".join(
            notes or ["a remote node without an MLNode's GPU routes"]) + ' (pass --gpus "MODEL x COUNT" or --profile)')
    else:
        hw = said[0]
        pattern = getattr(run.profile, "gpu_name_pattern", None)
        for other in said[1:]:
            if not _agrees(hw, other, pattern if other is prof else None):
                notes.append(f"{other.source} says {other.label()}")
        hw.notes = [*notes, *hw.notes]
    if run.profile is not None:
        hw.profile, hw.layout = getattr(run.profile, "name", None), _layout(run.profile)
        hw.sources.update(profile="operator: --profile", layout=f"operator: profile {hw.profile}")
    return NodeRecord(where, url, hw, software)


def _software(run, harness: Environment, url: str | None) -> dict:
    """The node's software as far as something says: this process's packages (an engine here),
    the node's GET /api/v1/pow/versions (newer Gonka builds)."""
    out: dict = {}
    if url is None:
        for name in ("torch", "transformers", "vllm"):
            if getattr(harness, name):
                out[name] = {"value": getattr(harness, name), "source": "this process (package metadata)"}
    versions = run.node_versions if isinstance(run.node_versions, dict) else {}
    for key, name in (("vllm_version", "vllm"), ("poc_validation_inference", "poc_validation_inference")):
        if key in versions:
            out[name] = {"value": versions[key], "source": "node: GET /api/v1/pow/versions"}
    return out


# ----------------------------------------------------------------------------------------
# reading bundles back
# ----------------------------------------------------------------------------------------
def hardware_from_dict(d) -> NodeHardware | None:
    """environment.json's node.hardware read back; None when it is not one (an edited or broken
    bundle: its hardware is then unknown, never guessed)."""
    if not isinstance(d, dict) or not isinstance(d.get("known"), bool):
        return None
    text = {k: _text(d.get(k), 300) for k in ("source", "gpu_model", "driver_version", "cuda_driver_version",
                                               "cpu_model", "profile", "layout", "why")}
    count = d.get("gpu_count")
    count = count if type(count) is int and 0 <= count < 2**20 else None
    sources = d.get("sources") if isinstance(d.get("sources"), dict) else {}
    notes = d.get("notes") if isinstance(d.get("notes"), list) else []
    return NodeHardware(known=d["known"] and count is not None, **{**text, "source": text["source"] or UNKNOWN_SOURCE},
                        gpu_count=count, gpus=[g for g in d.get("gpus") or [] if isinstance(g, dict)]
                        if isinstance(d.get("gpus"), list) else [],
                        sources={str(k): str(v) for k, v in sources.items()}, notes=[n for n in notes if isinstance(n, str)])


def hardware_of_environment(env: dict | None, engine_url: str | None) -> NodeHardware:
    """The node's hardware as a bundle's environment.json records it. A bundle from before the
    node was recorded ("node" absent) describes the harness machine: that is the node's only
    where the node was this host (`engine_url` None or loopback), and said so; else unknown."""
    if env is None:
        return NodeHardware(known=False, why="the bundle has no environment.json")
    if "node" in env or "schema" in env:
        node = env.get("node") if isinstance(env.get("node"), dict) else {}
        hw = hardware_from_dict(node.get("hardware"))
        return hw or NodeHardware(known=False, why="environment.json's node.hardware is missing or unreadable")
    if not on_this_host(engine_url):
        return NodeHardware(known=False, why=f"an older bundle: its environment.json describes the harness machine, "
                                             f"not the node at {engine_url}")
    gpus = env.get("gpus") if isinstance(env.get("gpus"), list) else []
    nv = env.get("nvml") if isinstance(env.get("nvml"), dict) else {}
    count, model = env.get("gpu_count"), _text(env.get("gpu_model"))
    if nv.get("available") is True and type(count) is int and count > 0 and model:
        return NodeHardware(known=True, source=SOURCE_OLD, gpu_model=model, gpu_count=count)
    if gpus:
        return NodeHardware(known=True, source=SOURCE_OLD, gpu_count=len(gpus),
                            gpu_model=", ".join(sorted({str(g) for g in gpus})))
    reason = nv.get("reason") if isinstance(nv.get("reason"), str) else ""
    if env.get("cuda_available") is False and (not nv or "NVIDIA driver" in reason or "no GPUs" in reason):
        return NodeHardware(known=True, source=SOURCE_OLD, gpu_count=0)
    return NodeHardware(known=False, why="an older bundle whose harness record names no GPU and no CPU-only machine")
