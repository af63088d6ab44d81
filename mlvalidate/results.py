"""Typed results of a run: what the pipeline produces and what report/ renders.

`RunRecord` holds one validation run (a live node's or an in-process engine's): its phases,
the comparison with the reference, the throughput phase, the environment it ran in. The
overall verdict and exit code are derived here, in one place, from those parts.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .artifacts import Reference, ResolvedStatTest
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


@dataclass(frozen=True)
class Outcome:
    verdict: str  # PASS, PASS-with-mismatches, FAIL, INCOMPLETE, ERROR, SKIPPED
    text: str  # the report's first line, after "VERDICT: "
    exit_code: int  # 0 PASS, 1 FAIL (fraud and nothing else), 2 error or incomplete


SKIPPED_TEXT = "validation skipped (no vector was compared with the reference)"


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
    throughput: dict | None = None  # the throughput phase: summary, samples, spot-check, references
    node_verdict: dict | None = None  # --server-side: the node's own answer, shown next to ours
    error: str | None = None  # what ended the run early (one line); the run is an error
    profile: Any = None  # the serving.profiles.Profile the run was given (--profile), else None
    nvml_samples: list[dict] = field(default_factory=list)  # NVML samples taken while measuring
    readiness: list[str] | None = None  # --chain-node: chain.readiness_lines(), shown in the report
    environment: dict | None = None  # environment.json, captured when the run ends
    node_versions: dict | None = None  # GET /api/v1/pow/versions of newer Gonka builds, when answered

    def phase(self, name: str) -> Phase | None:
        return next((p for p in self.phases if p.name == name), None)


def outcome(run: RunRecord) -> Outcome:
    """The run's verdict: the validation's, unless the full-speed spot-check proved fraud (FAIL)
    or could not be checked (a PASS becomes INCOMPLETE), or the run ended early (ERROR)."""
    spot = (run.throughput or {}).get("spot_verdict")
    if spot == "FAIL":
        return Outcome("FAIL", "FAIL (the spot-check during throughput proves fraud)", 1)
    if run.comparison is not None and run.comparison.verdict is Verdict.FAIL:
        return Outcome(Verdict.FAIL.value, Verdict.FAIL.description, 1)  # proven by the vectors that came back
    if run.error:
        return Outcome("ERROR", f"ERROR ({run.error})", 2)
    if run.comparison is None:
        return Outcome("SKIPPED", SKIPPED_TEXT, 0)
    v = run.comparison.verdict
    if spot == "INCOMPLETE" and v.exit_code == 0:
        return Outcome("INCOMPLETE", "INCOMPLETE (the spot-check during throughput received unusable or malformed "
                                     "vectors)", 2)
    return Outcome(v.value, v.description, v.exit_code)


def returned_nonces(run: RunRecord) -> int:
    """Reference nonces the system under test answered (usable or not): what a rate may count."""
    comp = run.comparison
    return 0 if comp is None else int(comp.n_total - comp.missing.sum())
