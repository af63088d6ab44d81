"""Typed results of a run: what the pipeline produces and what report/ renders.

`RunRecord` holds one validation run (a live node's or an in-process engine's): its phases,
the comparison with the reference, the throughput phase (`ThroughputPhase`, its numbers in a
`ThroughputSummary`), the environment it ran in (`Environment`). The overall verdict and exit
code are derived here, in one place, from those parts. Each `as_dict()` is the bundle's JSON.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .artifacts import Reference, ResolvedStatTest
from .poc.fresh import Challenge, FreshAnswer
from .poc.stats import Comparison, Verdict


class PhaseStatus(str, enum.Enum):
    """How a phase ended. The values are what report.json and JUnit show."""

    OK = "OK"  # ran; no verdict of its own (download, deploy, a throughput phase without fraud)
    PASS = "PASS"
    PASS_WITH_MISMATCHES = "PASS-with-mismatches"
    FAIL = "FAIL"  # proven fraud
    INCOMPLETE = "INCOMPLETE"  # ran, but not everything could be checked
    ERROR = "error"  # could not run to its end (the run stops here)
    SKIPPED = "skipped"  # asked not to run
    NOT_RUN = "not run"  # an earlier phase ended the run

    def __str__(self) -> str:
        return self.value

    @property
    def passed(self) -> bool:
        return self in (PhaseStatus.OK, PhaseStatus.PASS, PhaseStatus.PASS_WITH_MISMATCHES)

    @property
    def skipped(self) -> bool:
        return self in (PhaseStatus.SKIPPED, PhaseStatus.NOT_RUN)


@dataclass
class Phase:
    name: str
    status: PhaseStatus
    elapsed_s: float | None = None
    detail: str = ""
    data: dict = field(default_factory=dict)  # what the phase found (the MLNode's answers, deploy args, ...)

    def as_dict(self) -> dict:
        return {**self.data, "name": self.name, "status": self.status.value, "elapsed_s": self.elapsed_s,
                "detail": self.detail}


class SpotVerdict(str, enum.Enum):
    """The throughput phase's spot-check of golden nonces computed at full speed."""

    PASS = "PASS"  # every golden nonce that arrived is usable and within tolerance (or the test says no fraud)
    FAIL = "FAIL"  # fraud proven at full speed
    INCOMPLETE = "INCOMPLETE"  # unusable or malformed callbacks: the run cannot PASS
    NOT_RUN = "not run"  # no golden nonce arrived, or nothing to check (an in-process engine)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class RateStats:
    """Nonces/s of one replica (or of the node, summed): the steady rate over the measuring
    window, the per-interval min / median / max, and what the node itself reported."""

    steady: float | None = None
    min: float | None = None
    median: float | None = None
    max: float | None = None
    node_cumulative: float | None = None  # the node's total_processed / time since its loop started
    total_processed: int | None = None

    def as_dict(self) -> dict:
        out = {"steady_nonces_per_second": self.steady, "min_nonces_per_second": self.min,
               "median_nonces_per_second": self.median, "max_nonces_per_second": self.max,
               "node_cumulative_nonces_per_second": self.node_cumulative}
        if self.total_processed is not None:
            out["total_processed"] = self.total_processed
        return out


@dataclass(frozen=True)
class ThroughputSummary:
    """The throughput phase's numbers. `rates` is the node's (the sum over its replicas for an
    MLNode); `replicas` per replica, keyed by port."""

    api: str
    n_samples: int
    warmup_s: float
    batch_size: int
    n_replicas: int
    rates: RateStats
    replicas: dict[str, RateStats] = field(default_factory=dict)
    spot_check_received: int = 0
    outside_forward_share: float | None = None  # an in-process engine: wall time outside vLLM's forward
    # how the steady rate was taken (rates.py): "counter over the window" | "counter changes" | "samples" |
    # "mixed" (replicas differ) | "timed rounds" (an in-process engine)
    method: str = "samples"
    window_s: float | None = None  # from the first sample to the last
    timing_error: float | None = None  # "counter changes": the steady rate's largest relative error from timing

    @property
    def steady_nonces_per_second(self) -> float | None:
        return self.rates.steady

    @property
    def steady_nonces_per_min(self) -> float | None:
        return None if self.rates.steady is None else self.rates.steady * 60

    def as_dict(self) -> dict:
        r = self.rates.as_dict()
        out = {"api": self.api, "n_samples": self.n_samples, "warmup_s": self.warmup_s, "batch_size": self.batch_size,
               "n_replicas": self.n_replicas,
               "steady_nonces_per_second": r["steady_nonces_per_second"],
               "steady_nonces_per_min": self.steady_nonces_per_min,
               **{k: v for k, v in r.items() if k != "steady_nonces_per_second"},
               "replicas": {k: v.as_dict() for k, v in self.replicas.items()},
               "spot_check_received": self.spot_check_received}
        out.update(method=self.method, window_s=self.window_s, timing_error=self.timing_error)
        if self.outside_forward_share is not None:
            out["outside_forward_share"] = self.outside_forward_share
        return out


@dataclass
class ThroughputPhase:
    """What the throughput phase found: the summary, the raw samples (the node's status readings,
    or an in-process engine's timed rounds), the spot-check, the rate set against the profile's
    published figure and roofline, and the window's energy where the node's GPUs are this host's."""

    summary: ThroughputSummary
    samples: list[dict]
    spot_verdict: SpotVerdict = SpotVerdict.NOT_RUN
    spot_check: str = ""  # one line: what the spot-check saw
    reference: str | None = None  # the rate against the profile's published figure and roofline
    profile: str | None = None
    spot_mismatch_nonces: list[int] | None = None
    spot_malformed: list[str] | None = None
    # a live node's generation loop
    callback_url: str | None = None
    stopped: bool | None = None  # None: not a node loop (in-process)
    callbacks: dict | None = None  # {"received", "malformed"}: callback POSTs
    start_answer: dict | None = None  # what an MLNode's init/generate answered
    # NVML over the measuring window (serving/energy.py): energy per nonce, power, throttling, or why not measured
    energy: dict | None = None

    def as_dict(self) -> dict:
        out: dict = {"summary": self.summary.as_dict(), "samples": self.samples}
        if self.energy is not None:
            out["energy"] = self.energy
        if self.stopped is not None:
            out.update(callback_url=self.callback_url, stopped=self.stopped, callbacks=self.callbacks or {})
        for k in ("start_answer", "reference", "profile"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        out.update(spot_verdict=self.spot_verdict.value, spot_check=self.spot_check)
        if self.spot_mismatch_nonces is not None:
            out["spot_mismatch_nonces"] = self.spot_mismatch_nonces
        if self.spot_malformed is not None:
            out["spot_malformed"] = self.spot_malformed
        return out


UNKNOWN_SOURCE = "unknown"


@dataclass
class NodeHardware:
    """The hardware of the node a run measured — never the harness machine's, unless the node
    ran on it (in this process, or on loopback). Every fact names where it came from: `source`
    for the GPUs, `sources` per fact ("node: MLNode GET /api/v1/gpu/devices", "this host: NVML",
    "operator: --gpus", "operator: profile h100x4", ...); `known` False with `why` when nothing
    said. `notes`: what the other sources said where it differs, or why they said nothing.
    Built by serving/node_hardware.py; hardware comparisons group runs by `group_key()`."""

    known: bool
    source: str = UNKNOWN_SOURCE
    gpu_model: str | None = None  # the device name(s) as the source gave them; None: no GPU, or unknown
    gpu_count: int | None = None  # 0: no GPU (a CPU node); None: unknown
    gpus: list[dict] = field(default_factory=list)  # per device as its source gave it (index, name, memory)
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    cpu_model: str | None = None  # this host's CPU (a node on this host)
    profile: str | None = None  # the profile the run named: a layout the operator claims
    layout: str | None = None  # that profile's layout, e.g. "TP 4 x PP 1"
    sources: dict[str, str] = field(default_factory=dict)  # fact -> where it came from
    why: str | None = None  # not known: why
    notes: list[str] = field(default_factory=list)

    def label(self) -> str:
        """"4× NVIDIA H100 80GB HBM3", "CPU", "unknown"."""
        if not self.known:
            return "unknown"
        if self.gpu_count == 0:
            return "CPU"
        return f"{self.gpu_count}× {self.gpu_model or 'unnamed GPU'}"

    def group_key(self) -> tuple[str, int | None, str]:
        """(GPU model, GPU count, profile or layout): what runs on the same hardware share."""
        model = self.gpu_model or ("CPU" if self.gpu_count == 0 else "unknown")
        return model, self.gpu_count, self.profile or self.layout or "no profile"

    def as_dict(self) -> dict:
        return {"known": self.known, "label": self.label(), "source": self.source, "gpu_model": self.gpu_model,
                "gpu_count": self.gpu_count, "gpus": self.gpus, "driver_version": self.driver_version,
                "cuda_driver_version": self.cuda_driver_version, "cpu_model": self.cpu_model,
                "profile": self.profile, "layout": self.layout, "sources": self.sources, "why": self.why,
                "notes": self.notes}


@dataclass
class NodeRecord:
    """The node a run measured (environment.json's "node"): `where` it ran ("this host": in this
    process or on loopback; "remote"), its URL, its hardware, and its software as far as it
    says (name -> {"value", "source"}: the node's /versions, its MLNode's state, this process)."""

    where: str
    url: str | None
    hardware: NodeHardware
    software: dict[str, dict] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"where": self.where, "url": self.url, "hardware": self.hardware.as_dict(), "software": self.software}


ENVIRONMENT_SCHEMA = "mlvalidate.environment/2"


@dataclass
class Environment:
    """What a run ran in (environment.json), in two parts kept apart: the harness machine (this
    host: versions, threads, its GPUs with the NVML samples taken while measuring, or why NVML
    could not answer) and the node it measured (`node`: a NodeRecord, whose hardware is this
    host's only when the node ran here); plus the run's profile, backends, batch size and model
    revision. Captured by serving.environment."""

    hostname: str
    platform: str
    python: str
    cpu_count: int | None
    torch: str | None
    torch_threads: int | None
    torch_cpu_capability: str | None  # the CPU kernel level (AVX2, AVX512...): it decides a CPU run's rounding
    cuda_available: bool
    transformers: str | None
    vllm: str | None
    vllm_distribution: str | None
    gpu_model: str | None
    gpu_count: int
    driver_version: str | None
    cuda_driver_version: str | None
    cuda: str | None  # the CUDA torch was built with
    nvml: dict  # {"available": False, "reason"} or the inventory and every sample
    gpus: list[str] | None = None  # torch's CUDA device names, when it sees any
    cpu_model: str | None = None
    mlvalidate: str | None = None  # the harness's version
    node: NodeRecord | None = None  # the node the run measured (None: captured without a run)
    # the run's (None when captured without a run)
    batch_size: int | None = None
    profile: str | None = None
    attention_backend: str | None = None
    moe_backend: str | None = None
    backend_env: dict | None = None
    model_revision: str | None = None

    def harness_dict(self) -> dict:
        keys = ["hostname", "platform", "python", "cpu_count", "cpu_model", "mlvalidate", "torch", "torch_threads",
                "torch_cpu_capability", "cuda_available", "transformers", *(["gpus"] if self.gpus is not None else []),
                "vllm", "vllm_distribution", "gpu_model", "gpu_count", "driver_version", "cuda_driver_version",
                "cuda", "nvml"]
        return {k: getattr(self, k) for k in keys}

    def as_dict(self) -> dict:
        out: dict = {"schema": ENVIRONMENT_SCHEMA, "harness": self.harness_dict(),
                     "node": self.node.as_dict() if self.node is not None else None}
        if self.batch_size is not None:  # captured with a run (a run always has a batch size)
            out["run"] = {k: getattr(self, k) for k in ("batch_size", "profile", "attention_backend", "moe_backend",
                                                         "backend_env", "model_revision")}
        return out


@dataclass(frozen=True)
class Outcome:
    verdict: str  # PASS, PASS-with-mismatches, FAIL, INCOMPLETE, ERROR, SKIPPED
    text: str  # the report's first line, after "VERDICT: "
    exit_code: int  # 0 PASS, 1 FAIL (fraud and nothing else), 2 error or incomplete


SKIPPED_TEXT = "validation skipped (no vector was compared with the reference)"


@dataclass
class FreshPhase:
    """The fresh challenge (`--fresh N`): what the node answered to work the harness drew itself,
    checked against a trusted computation (`comparison`) or, in a fleet, against the other
    nodes (`peers`). Its verdict stays INCOMPLETE until a comparison decides it."""

    challenge: Challenge
    node: FreshAnswer
    against: str  # "reference", "inprocess", a node's URL, or "the fleet"
    node_info: dict = field(default_factory=dict)  # requests sent, queue stats, seconds, error
    trusted: FreshAnswer | None = None
    trusted_engine: dict | None = None  # the trusted side's describe()
    comparison: Comparison | None = None  # the node against the trusted side
    verdict: str = "INCOMPLETE"  # PASS, PASS-with-mismatches, FAIL, INCOMPLETE
    reason: str = "not compared yet"
    peers: dict = field(default_factory=dict)  # fleet: peer id -> how the pair compared

    def outcome(self) -> Outcome:
        code = {"PASS": 0, "PASS-with-mismatches": 0, "FAIL": 1}.get(self.verdict, 2)
        return Outcome(self.verdict, f"{self.verdict} (fresh challenge: {self.reason})", code)


_SEVERITY = {"PASS": 0, "SKIPPED": 0, "PASS-with-mismatches": 1, "INCOMPLETE": 2, "ERROR": 2, "FAIL": 3}


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
    phases: list[Phase] = field(default_factory=list)
    timing: dict = field(default_factory=dict)
    throughput: ThroughputPhase | None = None  # the throughput phase: summary, samples, spot-check, references
    node_verdict: dict | None = None  # --server-side: the node's own answer, shown next to ours
    error: str | None = None  # what ended the run early (one line); the run is an error
    profile: Any = None  # the serving.profiles.Profile the run was given (--profile), else None
    nvml_samples: list[dict] = field(default_factory=list)  # NVML samples taken while measuring
    readiness: list[str] | None = None  # --chain-node: chain.readiness_lines(), shown in the report
    environment: Environment | None = None  # environment.json, captured when the run ends
    node_versions: dict | None = None  # GET /api/v1/pow/versions of newer Gonka builds, when answered
    fresh: FreshPhase | None = None  # --fresh N: the fresh challenge
    caveats: list[str] = field(default_factory=list)  # what the result depends on, one line each (the report says)
    # what the node said of itself once it answered the model check (its MLNode's GPU routes): None while it
    # has not (an HTTP node that never answered has no hardware: environment.json says unknown, and why)
    node_facts: dict | None = None
    started_at: str | None = None  # UTC, ISO 8601 (pipeline.new_run)

    def phase(self, name: str) -> Phase | None:
        return next((p for p in self.phases if p.name == name), None)


def outcome(run: RunRecord) -> Outcome:
    """The run's verdict: the worse of the golden validation's (`golden_outcome`) and the fresh
    challenge's, when there is one (FAIL over ERROR / INCOMPLETE over PASS-with-mismatches over
    PASS; on a tie the golden one's)."""
    gold = golden_outcome(run)
    if run.fresh is None:
        return gold
    fresh = run.fresh.outcome()
    return fresh if _SEVERITY[fresh.verdict] > _SEVERITY[gold.verdict] else gold


def golden_outcome(run: RunRecord) -> Outcome:
    """The golden validation's verdict: the comparison's, unless the full-speed spot-check proved
    fraud (FAIL) or could not be checked (a PASS becomes INCOMPLETE), or the run ended early (ERROR)."""
    spot = run.throughput.spot_verdict if run.throughput is not None else None
    if spot is SpotVerdict.FAIL:
        return Outcome("FAIL", "FAIL (the spot-check during throughput proves fraud)", 1)
    if run.comparison is not None and run.comparison.verdict is Verdict.FAIL:
        return Outcome(Verdict.FAIL.value, Verdict.FAIL.description, 1)  # proven by the vectors that came back
    if run.error:
        return Outcome("ERROR", f"ERROR ({run.error})", 2)
    if run.comparison is None:
        return Outcome("SKIPPED", SKIPPED_TEXT, 0)
    v = run.comparison.verdict
    if spot is SpotVerdict.INCOMPLETE and v.exit_code == 0:
        return Outcome("INCOMPLETE", "INCOMPLETE (the spot-check during throughput received unusable or malformed "
                                     "vectors)", 2)
    return Outcome(v.value, v.description, v.exit_code)


def returned_nonces(run: RunRecord) -> int:
    """Reference nonces the system under test answered (usable or not): what a rate may count."""
    comp = run.comparison
    return 0 if comp is None else int(comp.n_total - comp.missing.sum())
