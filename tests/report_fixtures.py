"""Run bundles and fleets for the report tests, written by the real write_bundle from synthetic
vectors (no model run): a reference of unit vectors, nodes that answer it closely or not, and
what each node's record says of its hardware (an MLNode's GPU routes, the operator's --gpus, a
node that never answered, an engine in this process)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlvalidate.artifacts import parse_reference, reference_document, resolve_stat_test
from mlvalidate.poc.stats import compare_vectors
from mlvalidate.report.bundle import write_bundle
from mlvalidate.results import RateStats, RunRecord, ThroughputPhase, ThroughputSummary
from mlvalidate.serving.environment import environment, nvml_sample

N, K = 40, 64

# what a real MLNode's GPU routes answer (api/gpu/types.py: GPUDevice, DriverInfo) on 4 H100s
H100_DEVICES = [{"index": i, "name": "NVIDIA H100 80GB HBM3", "total_memory_mb": 81559, "free_memory_mb": 80000,
                 "used_memory_mb": 1559, "utilization_percent": 0, "temperature_c": 35, "is_available": True,
                 "error_message": None} for i in range(4)]
H100_DRIVER = {"driver_version": "570.124.06", "cuda_driver_version": "12.8", "nvml_version": "12.570.124.06"}


def mlnode_answers(url: str, devices: list[dict] | None, driver: dict | None) -> dict:
    """engines/mlnode_api.gpu_answers' shape: devices None = the CPU MLNode's empty list, driver None = its 503."""
    return {"url": url, "devices": {"status": 200, "body": {"devices": devices or [], "count": len(devices or [])}},
            "driver": {"status": 200, "body": driver} if driver else
            {"status": 503, "body": {"detail": "NVML not initialized. GPU features are not available."}}}


def reference(n: int = N, seed: int = 7):
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, K)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    doc = reference_document(model="test/tiny", seq_len=16, k_dim=K, block_hash="H", public_key="P",
                             nonces=np.arange(n, dtype=np.int64), vectors=vecs.astype(np.float16), dist_threshold=0.2,
                             stat_test={"p_mismatch": 0.1, "fraud_threshold": 0.05})  # fmt: skip
    return parse_reference(doc, where="test reference")


def throughput(per_min: float, profile: str | None = None, energy: dict | None = None) -> ThroughputPhase:
    s = per_min / 60
    summary = ThroughputSummary(api="vllm", n_samples=4, warmup_s=30.0, batch_size=32, n_replicas=1,
                                rates=RateStats(steady=s, min=0.95 * s, median=s, max=1.05 * s, node_cumulative=0.9 * s),
                                window_s=60.0)
    return ThroughputPhase(summary=summary, samples=[], reference="synthetic", profile=profile, energy=energy)


def window_energy(nvml, per_min: float, *, window_s: float = 60.0, source: str = "this host: NVML (test)") -> dict:
    """The energy section serving/energy.py writes for a 60 s window of `nvml` (a FakeNVML whose
    clock is a tests.Clock-like object with a settable `t`) at `per_min`, read every 2 s."""
    from mlvalidate.serving.energy import EnergyPlan, WindowMeter

    clock = nvml.clock
    m = WindowMeter(EnergyPlan(None, source), nvml=nvml, clock=clock, interval_s=3600)
    m.begin()
    for _ in range(int(window_s // 2)):
        clock.t += 2.0
        m.sample()
    m.end()
    return m.result(rate=per_min / 60)


class Clock:
    """A clock a test moves by hand (the fake NVML and the meter read the same one)."""

    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def bundle(out: Path, name: str, ref, vectors, *, url: str | None = None, node_facts: dict | None = None,
           gpus: str | None = None, profile=None, per_min: float | None = None, error: str | None = None,
           keep: int | None = None, nvml=None, energy: dict | None = None) -> Path:
    """One run bundle. `url` None: an engine in this process (this host); else an HTTP node, which
    answered its model check when `node_facts` is given ({} without an MLNode beside it). `keep`:
    only the first `keep` vectors came back. `nvml`: this host's NVML (a FakeNVML), else none.
    `energy`: the throughput window's energy section (window_energy)."""
    st = resolve_stat_test(ref)
    n = len(ref.nonces) if keep is None else keep
    comp = compare_vectors(ref.nonces, ref.vectors, ref.nonces[:n], vectors[:n].astype(np.float32), st.values)
    engine = {"engine": "vllm-api", "url": url} if url else {"engine": "synthetic"}
    run = RunRecord(name=name, reference=ref, stat_test=st, comparison=comp, engine=engine,
                    computed_nonces=ref.nonces[:n], computed_vectors=vectors[:n].astype(np.float16), batch_size=8,
                    elapsed_s=1.0,
                    throughput=throughput(per_min, getattr(profile, "name", None), energy) if per_min else None,
                    profile=profile, nvml_samples=[nvml_sample("validate start", nvml)], error=error,
                    node_facts=node_facts, started_at="2026-12-07T08:00:00+00:00",
                    inputs={"gpus": {"value": gpus, "source": "cli"}} if gpus else {})  # fmt: skip
    run.environment = environment(run)
    return write_bundle(out / name, run)


def noisy(ref, scale: float, seed: int, rows: int | None = None) -> np.ndarray:
    """The reference's vectors with noise of `scale` on the first `rows` of them (all by default)."""
    out = ref.vectors.astype(np.float32)
    rows = len(out) if rows is None else rows
    out[:rows] += scale * np.random.default_rng(seed).standard_normal((rows, out.shape[1]))
    return out
