"""The run bundle: every validation writes one folder that says what ran, on what, and how it went.

  config.json       every resolved input with its source
  report.json       versioned: verdict, counts, mismatch/missing nonces, p-value, per-nonce distances, timing
  vectors.json      the computed vectors in the golden schema (any two runs can be compared later)
  environment.json  "harness": this machine (GPU model/count, driver, CUDA and NVML samples of clocks
                    and power taken while measuring, or why NVML was unavailable; torch/transformers/
                    vLLM versions); "node": the node measured, its hardware with each fact's source
                    (this machine's only when the node ran on it); "run": the profile's attention/MoE
                    backends, batch size, profile, model revision
  report.txt        first line is the verdict
  (report.json's throughput_phase.energy: the window's energy per nonce, power and throttling where the
   node's GPUs are this machine's, serving/energy.py; else why not)
  fresh/            with --fresh: the challenge and both sides' vectors (report/fresh.py)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..artifacts import reference_document, write_json
from ..results import RateStats, RunRecord, ThroughputPhase, outcome, returned_nonces
from .energy import energy_lines
from .fresh import fresh_document, fresh_lines, identical_lines, identical_to_reference, write_fresh_files
from .text import comparison_block

REPORT_SCHEMA = "mlvalidate.report/1"


def _json_float(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def report_document(run: RunRecord, written_at: str | None = None) -> dict:
    from .. import __version__

    comp = run.comparison
    s = comp.summary() if comp is not None else {}
    out = outcome(run)
    return {
        "schema": REPORT_SCHEMA,
        "name": run.name,
        "harness_version": __version__,
        "started_at": run.started_at,
        "written_at": written_at,
        "verdict": out.verdict,
        "verdict_text": out.text,
        "exit_code": out.exit_code,
        "validation_verdict": s.get("verdict", "SKIPPED" if not run.error else None),
        "model": run.reference.model,
        "reference": str(run.reference.path) if run.reference.path else None,
        "error": run.error,
        "phases": [p.as_dict() for p in run.phases],
        **{k: s.get(k) for k in ("n_total", "n_mismatch", "n_over_threshold", "n_missing", "n_invalid",
                              "p_value", "fraud_detected", "fraud_cutoff", "mismatch_nonces",
                              "missing_nonces", "invalid_nonces", "extra_nonces", "conflicting_nonces",
                              "n_unchecked", "n_malformed", "malformed", "distance_percentiles")},
        "stat_test": run.stat_test.as_dict(),
        "batch_size": run.batch_size,
        "distances": ({str(int(n)): _json_float(d) for n, d in zip(comp.nonces, comp.distances)}
                      if comp is not None else {}),
        "throughput_phase": run.throughput.as_dict() if run.throughput is not None else None,
        "node_verdict": run.node_verdict,
        "node_versions": run.node_versions,
        "caveats": list(run.caveats),
        "golden_identical_to_reference": identical_to_reference(run),
        "fresh": fresh_document(run),
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
        f"VERDICT: {outcome(run).text}",
        f"run           {run.name}",
        f"model         {run.reference.model}  (reference {run.reference.label()})",
        f"engine        {', '.join(f'{k}={v}' for k, v in run.engine.items() if k in ('engine', 'model', 'device', 'dtype', 'url'))}",
        f"batch size    {run.batch_size}",
        *hardware_lines(run),
    ]
    if comp is not None:
        n = returned_nonces(run)
        lines += [*comparison_block(comp, run.stat_test),
                  f"time          {run.elapsed_s:.2f} s; {n} of {comp.n_total} reference nonces came back"
                  + (f" ({n / run.elapsed_s:.2f} nonces/s)" if n and run.elapsed_s > 0 else "")]
    else:
        lines.append("validation    " + ("not reached" if run.error else "skipped") + ": no vector was compared")
    lines += identical_lines(run)
    if run.throughput is not None:
        lines += throughput_lines(run.throughput)
    lines += fresh_lines(run)
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
    lines += [f"caveat        {c}" for c in run.caveats]
    for ph in run.phases:
        lines.append(f"phase         {ph.name}: {ph.status}"
                     + (f" ({ph.elapsed_s:.2f} s)" if ph.elapsed_s is not None else "")
                     + (f" — {ph.detail}" if ph.detail else ""))
    return "\n".join(lines) + "\n"


def hardware_lines(run: RunRecord) -> list[str]:
    """The node's hardware and where it came from (environment.json's node), one line or two."""
    node = run.environment.node if run.environment is not None else None
    if node is None:
        return []
    hw = node.hardware
    said = f"{hw.label()} ({hw.source})" if hw.known else f"unknown ({hw.why})"
    if hw.profile:
        said += f"; profile {hw.profile} ({hw.layout})"
    return [f"hardware      {said}"] + [f"              {n}" for n in hw.notes[:3]]


def throughput_lines(t: ThroughputPhase) -> list[str]:
    s = t.summary

    def f(x, unit=""):
        return "n/a" if x is None else f"{x:.2f}{unit}"

    def spread(r: RateStats) -> str:
        return (f"min {f(r.min)} / median {f(r.median)} / max {f(r.max)}; the node's cumulative average says "
                f"{f(r.node_cumulative)}")

    head = "steady " if len(s.replicas) <= 1 and s.api != "mlnode" else \
        f"steady (sum of {len(s.replicas)} replica{'s' if len(s.replicas) != 1 else ''}) "
    window = f"{s.window_s:.0f} s " if s.window_s else ""
    how = {"counter over the window": f"the node's counter over the {window}window",
           "counter changes": f"between the node's counter's first and last change in the {window}window",
           "samples": f"between the first and last sample of the {window}window",
           "timed rounds": "over timed batches"}.get(s.method, f"{s.method}, {window}window")
    err = f", ±{100 * s.timing_error:.2g} % from timing" if s.timing_error is not None else ""
    lines = [f"throughput    {head}{f(s.steady_nonces_per_second, ' nonces/s')} = "
             f"{f(s.steady_nonces_per_min, ' nonces/min')} (batch {s.batch_size}, after {s.warmup_s:.0f} s "
             f"warm-up, {how}{err}; per-interval {spread(s.rates)})"]
    if head != "steady ":
        for key, r in s.replicas.items():
            lines.append(f"  replica {key}: steady {f(r.steady, ' nonces/s')} ({spread(r)}; {r.total_processed} "
                         "processed)")
    if t.reference:
        lines.append(f"              {t.reference}")
    lines += energy_lines(t.energy)
    if t.spot_check:
        lines.append(f"spot-check    {t.spot_check}")
    return lines


def write_bundle(out_dir: str | Path, run: RunRecord) -> Path:
    """Write the bundle's five files; environment.json is `run.environment` as captured by the
    run (serving.environment), with the engine's description."""
    import datetime as _dt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ref = run.reference
    write_json(out / "config.json", {"name": run.name, "inputs": run.inputs, "engine": run.engine,
                                     "stat_test": run.stat_test.as_dict(), "batch_size": run.batch_size})
    written = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    write_json(out / "report.json", report_document(run, written))
    write_json(out / "vectors.json", reference_document(
        model=ref.model, seq_len=ref.seq_len, k_dim=ref.k_dim, block_hash=ref.block_hash,
        public_key=ref.public_key, block_height=ref.block_height, node_id=ref.node_id,
        node_count=ref.node_count, nonces=run.computed_nonces, vectors=run.computed_vectors,
        dist_threshold=ref.dist_threshold, stat_test={k: v for k, v in ref.stat_test.items()},
        source=f"computed by mlvalidate run {run.name!r}: " + json.dumps(
            {k: run.engine.get(k) for k in ("engine", "model", "device", "dtype")}),
        collection_batch_size=run.batch_size, stronger_rng=ref.stronger_rng,
    ))
    env = run.environment.as_dict() if run.environment is not None else {"captured": False}
    write_json(out / "environment.json", {**env, "engine": run.engine})
    (out / "report.txt").write_text(report_text(run), encoding="utf-8")
    write_fresh_files(out, run)
    return out
