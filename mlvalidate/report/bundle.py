"""The run bundle: every validation writes one folder that says what ran, on what, and how it went.

  config.json       every resolved input with its source
  report.json       versioned: verdict, counts, mismatch/missing nonces, p-value, per-nonce distances, timing
  vectors.json      the computed vectors in the golden schema (any two runs can be compared later)
  environment.json  host, torch/transformers versions, device, threads
  report.txt        first line is the verdict
"""

from __future__ import annotations

import json
import os
import platform
import socket
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..artifacts import Reference, ResolvedStatTest, reference_document, write_json
from ..poc.stats import Comparison
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


SKIPPED_TEXT = "validation skipped (no vector was compared with the reference)"


def overall_verdict(run: RunRecord) -> tuple[str, str, int]:
    """(verdict, text, exit code): the validation's, unless the full-speed spot-check proved fraud."""
    if run.throughput and run.throughput.get("spot_verdict") == "FAIL":
        return "FAIL", "FAIL (the spot-check during throughput proves fraud)", 1
    if run.error:
        return "ERROR", f"ERROR ({run.error})", 2
    if run.comparison is None:
        return "SKIPPED", SKIPPED_TEXT, 0
    v = run.comparison.verdict
    return v.value, v.description, v.exit_code


def environment() -> dict:
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
    return env


def _json_float(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


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
        "phases": run.phases,
        **{k: s.get(k) for k in ("n_total", "n_mismatch", "n_over_threshold", "n_missing", "n_invalid",
                              "p_value", "fraud_detected", "fraud_cutoff", "mismatch_nonces",
                              "missing_nonces", "invalid_nonces", "extra_nonces", "distance_percentiles")},
        "stat_test": run.stat_test.as_dict(),
        "batch_size": run.batch_size,
        "distances": ({str(int(n)): _json_float(d) for n, d in zip(comp.nonces, comp.distances)}
                      if comp is not None else {}),
        "throughput_phase": run.throughput,
        "node_verdict": run.node_verdict,
        "throughput": {
            "elapsed_s": run.elapsed_s,
            "nonces": int(comp.n_total) if comp is not None else 0,
            "nonces_per_second": comp.n_total / run.elapsed_s if comp is not None and run.elapsed_s > 0 else None,
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
        lines += [*comparison_block(comp, run.stat_test),
                  f"time          {run.elapsed_s:.2f} s for {comp.n_total} nonces"
                  + (f" ({comp.n_total / run.elapsed_s:.2f} nonces/s)" if run.elapsed_s > 0 else "")]
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


def write_bundle(out_dir: str | Path, run: RunRecord) -> Path:
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
    write_json(out / "environment.json", {**environment(), "engine": run.engine, "batch_size": run.batch_size})
    (out / "report.txt").write_text(report_text(run), encoding="utf-8")
    return out
