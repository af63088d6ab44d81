"""`--fresh N`: after the golden phase, ask the node for work no one could have computed before.

The golden reference is public, so a node that serves the reference's own vectors passes the
golden phase with L2 0. The fresh phase draws a challenge (poc/fresh.py: a block hash and a
public key from the CSPRNG, N random nonces, the reference's model, seq_len and k_dim), asks the
node for it exactly as the golden phase asks (the same engine, the same queued chunks of the
batch size, the same request body but for block_hash, public_key and nonces, the same intake
rule), and checks the answer against a trusted computation of the same challenge (`--against`):

  URL        another node the operator trusts (vLLM PoC API or, with --against-api mlnode, an MLNode)
  inprocess  stock vLLM in this process with --against-profile's engine args (the `run` engine)
  reference  the reference engine (transformers) on --against-model, for small models

under the golden phase's gate and binomial test (the reference's stat test and the command
line's overrides). In a fleet every node gets the same challenge and the nodes are compared
with each other (fresh_fleet.py). Docs: docs/poc-v2.md §4, "Fresh challenges".
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .engines.base import EngineResult, PocParams
from .engines.poc_http import DEFAULT_IN_FLIGHT
from .errors import EngineError, Interrupted, MlvalidateError
from .poc.fresh import Challenge, FreshAnswer, compare_fresh, draw_challenge, fresh_answer, median_distance
from .progress import Progress
from .results import FreshPhase, PhaseStatus, RunRecord

AGAINST_KINDS = ("inprocess", "reference")  # or a URL


@dataclass(frozen=True)
class TrustedSpec:
    """What `--against` names: the computation the node's fresh vectors are checked against."""

    kind: str  # "url" | "inprocess" | "reference"
    url: str | None = None
    api: str = "vllm"
    model_dir: str | None = None
    profile: str | None = None
    dtype: str = "fp32"
    timeout_s: float = 300.0
    connect_grace_s: float = 30.0
    in_flight: int = DEFAULT_IN_FLIGHT

    def label(self) -> str:
        if self.kind == "url":
            return f"the trusted node {self.url}" + (" (MLNode API)" if self.api == "mlnode" else "")
        if self.kind == "inprocess":
            return f"stock vLLM in this process (profile {self.profile}, {self.model_dir})"
        return f"the reference engine ({self.dtype}, {self.model_dir})"

    def compute(self, ch: Challenge, batch_size: int, log=print) -> tuple[FreshAnswer, dict]:
        """The trusted side's answer to `ch` and its describe(); MlvalidateError when it cannot
        compute (a trusted node that stops half-way gives an answer with MISSING nonces)."""
        params = challenge_params(ch)
        nonces = list(ch.nonces)
        if self.kind == "url":
            return self._node(ch, nonces, params, batch_size, log)
        if self.kind == "inprocess":
            from .engines.vllm_inprocess import VllmInProcessEngine
            from .serving.profiles import load_profile

            prof = load_profile(self.profile)
            eng = VllmInProcessEngine(self.model_dir, prof.vllm_args(), env=prof.env, model_id=ch.model, log=log)
            try:
                res = eng.compute(nonces, params, batch_size=batch_size)
                return answer_of(res, ch), eng.describe()
            finally:
                eng.close()
        from .engines.reference import ReferenceEngine

        try:
            eng = ReferenceEngine(self.model_dir, dtype=self.dtype, model_id=ch.model)
        except (OSError, ValueError) as e:
            raise EngineError(f"--against reference: cannot load {self.model_dir}: {' '.join(str(e).split())[:200]}",
                              "pass --against-model a checkpoint directory of the reference's model") from None
        res = eng.compute(nonces, params, batch_size=batch_size)
        return answer_of(res, ch), eng.describe()

    def _node(self, ch, nonces, params, batch_size, log) -> tuple[FreshAnswer, dict]:
        from .engines.mlnode_api import MlnodeApiEngine
        from .engines.vllm_api import VllmPocApiEngine

        cls = MlnodeApiEngine if self.api == "mlnode" else VllmPocApiEngine
        eng = cls(self.url, ch.model, deadline_s=self.timeout_s, in_flight=self.in_flight, log=log)
        eng.http.connect_grace_s = self.connect_grace_s
        eng.http.until = time.monotonic() + self.timeout_s
        try:
            eng.check_model()
            res = eng.compute(nonces, params, batch_size=batch_size)
        finally:
            eng.http.until = None
        if res.info.get("interrupted"):
            raise Interrupted(res.info["interrupted"])
        return answer_of(res, ch), {**eng.describe(), **({"error": res.info["error"]} if res.info.get("error") else {})}


class FleetChallenges:
    """A fleet's fresh challenges: one per reference, drawn when a node first needs it, shared by
    every node of that reference; each node's run is collected for the cross-check. Thread-safe."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by_reference: dict[str, Challenge] = {}
        self.runs: list[RunRecord] = []

    def challenge(self, ref, n: int) -> Challenge:
        with self.lock:
            key = str(ref.path or ref.model)
            if key not in self.by_reference:
                self.by_reference[key] = draw_for(ref, n)
            return self.by_reference[key]

    def collect(self, run: RunRecord) -> None:
        with self.lock:
            self.runs.append(run)


@dataclass
class FreshPlan:
    """`--fresh N` with its trusted side; `fleet` when the nodes of a fleet are compared together."""

    n: int
    against: TrustedSpec | None = None
    fleet: FleetChallenges | None = None

    def as_dict(self) -> dict:
        a = self.against
        return {"n": self.n, "against": None if a is None else {k: getattr(a, k) for k in (
            "kind", "url", "api", "model_dir", "profile", "dtype")}, "fleet": self.fleet is not None}

    def challenge_for(self, ref) -> Challenge:
        """Drawn now, after the golden phase: no one could have computed it before (a fleet's:
        drawn when its first node needs it, the same for every node of that reference)."""
        if self.fleet is not None:
            return self.fleet.challenge(ref, self.n)
        return draw_for(ref, self.n)

    def header(self, batch_size: int) -> str:
        what = self.against.label() if self.fleet is None and self.against else (
            "the other nodes" + (f" and {self.against.label()}" if self.against else ""))
        return (f"{self.n} fresh nonces at a block hash and key never sent before (chunks of {batch_size}, as the "
                f"golden phase); checked against {what}")


def against_name(plan: FreshPlan) -> str:
    """What the bundle says the node was checked against."""
    if plan.fleet is not None:
        return "the fleet" + (f" and {plan.against.url or plan.against.kind}" if plan.against else "")
    return plan.against.url or plan.against.kind


def draw_for(ref, n: int) -> Challenge:
    """A fresh challenge for a reference: its model, seq_len, k_dim and node layout."""
    return draw_challenge(ref.model, ref.seq_len, ref.k_dim, n, block_height=ref.block_height, node_id=ref.node_id,
                          node_count=ref.node_count, avoid=(ref.block_hash, ref.public_key))


def challenge_params(ch: Challenge) -> PocParams:
    return PocParams(block_hash=ch.block_hash, public_key=ch.public_key, seq_len=ch.seq_len, k_dim=ch.k_dim,
                     block_height=ch.block_height, node_id=ch.node_id, node_count=ch.node_count)


def answer_of(res: EngineResult, ch: Challenge) -> FreshAnswer:
    """An engine's result as an answer to `ch`: an HTTP engine's through its intake (the nonces
    of the requests that came back are its answered ones); an in-process engine that returned
    answered every nonce (a nonce it dropped for NaN was left out)."""
    got = res.intake
    error = res.info.get("error")
    if got is None:
        return fresh_answer(ch.nonces, ch.k_dim, res.nonces, res.vectors, error=error)
    answered = got.answered if got.answered is not None else frozenset()
    return fresh_answer(ch.nonces, ch.k_dim, got.nonces, got.vectors, answered=answered, problems=got.problems,
                        unrequested=got.unrequested, malformed=got.malformed, n_malformed=got.n_malformed,
                        error=error)


def node_info(res: EngineResult) -> dict:
    queue = res.info.get("queue")
    requests = queue["submitted"] if isinstance(queue, dict) else len(res.batch_seconds)
    out = {"requests": requests, "elapsed_s": round(res.elapsed_s, 3), "batch_size": res.batch_size,
           "chunk_size": res.info.get("chunk_size", res.batch_size)}
    if isinstance(queue, dict):
        out["queue"] = queue
    if res.info.get("error"):
        out["error"] = res.info["error"]
    return out


def fresh_phase(run: RunRecord, engine, plan: FreshPlan, *, progress: bool = True, log=print):
    """The node's answer to a fresh challenge, judged against the trusted side (or, in a fleet,
    collected for the cross-check); fills `run.fresh`. A Runner phase: (status, detail, data)."""
    ch = plan.challenge_for(run.reference)
    run.inputs["fresh"] = {"value": plan.as_dict(), "source": "cli"}
    res = engine.compute(list(ch.nonces), challenge_params(ch), batch_size=run.batch_size,
                         progress=Progress(f"{run.name} fresh") if progress else None)
    run.fresh = FreshPhase(ch, answer_of(res, ch), against_name(plan), node_info(res))
    if plan.fleet is not None:
        plan.fleet.collect(run)
    if res.info.get("interrupted"):
        raise Interrupted(res.info["interrupted"])
    got = run.fresh.node.counts()
    came = (f"{got['usable']} of {ch.n} usable vectors in {run.fresh.node_info['requests']} request(s)"
            + (f"; node error: {res.info['error']}" if res.info.get("error") else ""))
    if plan.fleet is not None:
        run.fresh.reason = "not compared yet: the fleet compares every node's answer when all have answered"
        return PhaseStatus.OK, came + "; compared with the other nodes when all have answered", {}
    log(f"      the node: {came}; now {plan.against.label()}")
    trusted, desc = plan.against.compute(ch, run.batch_size, log)
    judge(run.fresh, trusted, desc, run.stat_test.values)
    return PhaseStatus(run.fresh.verdict), run.fresh.reason, {}


def judge(f: FreshPhase, trusted: FreshAnswer, desc: dict, st) -> None:
    """The node's answer against the trusted one: the verdict and its one-line reason."""
    comp = compare_fresh(trusted, f.node, st)
    f.trusted, f.trusted_engine, f.comparison = trusted, desc, comp
    f.verdict = comp.verdict.value
    f.reason = verdict_reason(comp, f.node, trusted, "the trusted computation")


def verdict_reason(comp, node: FreshAnswer, trusted: FreshAnswer, whom: str) -> str:
    s = comp.summary()
    proven = s["n_over_threshold"] + s["n_invalid"]
    med = median_distance(comp)
    med_text = f"median L2 {med:.4g}" if med is not None else "no distance"
    if s["verdict"] == "FAIL":
        return (f"{proven} of {s['n_total']} fresh nonces differ from {whom} (past the gate "
                f"{comp.stat_test.dist_threshold:g} or answered without a usable vector), p_value {s['p_value']:.3g}: "
                "fraud proven")
    if s["verdict"] == "INCOMPLETE":
        c, t = node.counts(), trusted.counts()
        parts = [f"{c['missing']} nonce(s) never answered" + (f" ({node.error})" if node.error else "")
                 if c["missing"] else "", f"{c['bad']} answered without a usable vector" if c["bad"] else "",
                 f"{c['unrequested']} entr(ies) for nonces not asked" if c["unrequested"] else "",
                 f"{c['malformed']} malformed entr(ies)" if c["malformed"] else "",
                 f"{whom} has no usable vector for {t['missing'] + t['bad']} nonce(s)"
                 + (f" ({trusted.error})" if trusted.error else "") if t["missing"] + t["bad"] else ""]
        return "not every fresh nonce could be checked: " + "; ".join(p for p in parts if p)
    if s["n_mismatch"]:
        return (f"{s['n_mismatch']} of {s['n_total']} fresh nonces past the gate, within the binomial tolerance "
                f"({med_text})")
    return f"all {s['n_total']} fresh nonces within the gate of {whom} ({med_text})"


def check_trusted(spec: TrustedSpec) -> None:
    """Before anything runs: the trusted side can be had (one line otherwise)."""
    from pathlib import Path

    if spec.kind in AGAINST_KINDS and not (spec.model_dir and Path(spec.model_dir).is_dir()):
        raise MlvalidateError(f"--against {spec.kind}: --against-model {spec.model_dir!r} is not a directory",
                              "pass the checkpoint directory the trusted side computes with")
    if spec.kind == "inprocess":
        if not spec.profile:
            raise MlvalidateError("--against inprocess needs --against-profile P",
                                  "the profile's engine args start vLLM in this process")
        from .serving.profiles import load_profile

        load_profile(spec.profile)
