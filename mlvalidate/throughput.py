"""Steady-state PoC throughput of a live node, with a spot-check at full speed.

The node's own `nonces_per_second` is total_processed / time since the loop started: a
cumulative average that includes warm-up. The harness samples `total_processed` and reports
the rate between samples taken after a warm-up (min / median / max), next to the node's
figure. Generation is always stopped at the end, also on Ctrl-C or an error.

One sampler for both APIs: a vLLM node is one replica; an MLNode fans init/generate out to
its vLLM replicas (each its own nonce group) and its status lists them per port, so rates are
computed per replica (from that replica's total_processed deltas) and summed.

Spot-check (the MLPerf TEST01 idea): the loop is started with the reference's block hash,
public key and node layout and with a callback URL served by the harness, so the first
nonces the node generates at full speed are the golden ones. Those that arrive are compared
with the reference: a node cannot be honest only when it is measured slowly.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from . import interrupts
from .engines.http import HttpClient, MAX_BODY_BYTES, parse_json
from .engines.poc_http import VLLM, PocApi, explain, replica_stats, stop, stop_if_running
from .errors import EngineError
from .poc.intake import Intake, IntakeResult, nonce_problem
from .results import RateStats, SpotVerdict, ThroughputPhase, ThroughputSummary


def _rate(a: dict, b: dict) -> float | None:
    """Nonces/s of one replica between two of its readings; None when not comparable (a restart)."""
    dt = b["elapsed_s"] - a["elapsed_s"]
    dn = b["total_processed"] - a["total_processed"]
    return dn / dt if dt > 0 and dn >= 0 else None


@dataclass
class ThroughputResult:
    # samples: {elapsed_s, status, total_processed, node_nonces_per_second (both summed over replicas),
    #           replicas: {key: {status, total_processed, nonces_per_second}}}
    samples: list[dict] = field(default_factory=list)
    warmup_s: float = 0.0
    batch_size: int = 0
    api: str = "vllm"
    spot: IntakeResult | None = None  # the golden nonces that arrived by callback (the intake rule)
    callbacks: dict = field(default_factory=dict)  # {"received", "malformed"}: callback POSTs
    callback_url: str | None = None
    stopped: bool = False
    start_answer: dict | None = None  # what init/generate answered (the MLNode: backends, n_groups, errors)

    def replica_keys(self) -> list[str]:
        return sorted({k for s in self.samples for k in s["replicas"]}, key=lambda k: (len(k), k))

    def _readings(self, key: str) -> list[dict]:
        return [{"elapsed_s": s["elapsed_s"], **s["replicas"][key]} for s in self.samples if key in s["replicas"]]

    def replica_rates(self, key: str) -> list[float]:
        r = self._readings(key)
        return [x for x in (_rate(a, b) for a, b in zip(r, r[1:])) if x is not None]

    def rates(self) -> list[float]:
        """Summed nonces/s per sampling interval (over the replicas read at both ends)."""
        out = []
        for a, b in zip(self.samples, self.samples[1:]):
            parts = [_rate({"elapsed_s": a["elapsed_s"], **a["replicas"][k]},
                           {"elapsed_s": b["elapsed_s"], **b["replicas"][k]})
                     for k in a["replicas"] if k in b["replicas"]]
            parts = [x for x in parts if x is not None]
            if parts:
                out.append(sum(parts))
        return out

    def _steady(self, key: str) -> float | None:
        r = self._readings(key)
        return _rate(r[0], r[-1]) if len(r) >= 2 else None

    def summary(self) -> ThroughputSummary:
        s = self.samples
        r = self.rates()
        replicas = {}
        for key in self.replica_keys():
            rr = self.replica_rates(key)
            last = self._readings(key)[-1]
            replicas[key] = RateStats(
                steady=self._steady(key), min=min(rr) if rr else None,
                median=statistics.median(rr) if rr else None, max=max(rr) if rr else None,
                node_cumulative=last["nonces_per_second"], total_processed=last["total_processed"])  # fmt: skip
        steady = [v.steady for v in replicas.values() if v.steady is not None]
        return ThroughputSummary(
            api=self.api, n_samples=len(s), warmup_s=self.warmup_s, batch_size=self.batch_size,
            n_replicas=len(replicas),
            rates=RateStats(steady=sum(steady) if steady else None, min=min(r) if r else None,
                            median=statistics.median(r) if r else None, max=max(r) if r else None,
                            node_cumulative=s[-1]["node_nonces_per_second"] if s else None),
            replicas=replicas, spot_check_received=self.spot.n if self.spot is not None else 0)  # fmt: skip


class _CallbackSink:
    """A loopback receiver for the node's `{url}/generated` callbacks. Entries for golden
    nonces go through the intake rule; an entry or a whole callback that is malformed is
    recorded as such (it blocks a PASS of the spot-check), never dropped, never a traceback."""

    def __init__(self, host: str, keep: set[int], k: int):
        sink = self
        self.lock = threading.Lock()
        self.intake = Intake(k)
        self.keep = keep
        self.received = 0

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                    if not 0 <= length <= MAX_BODY_BYTES:
                        raise ValueError(f"Content-Length {length}")
                    sink.add(parse_json(self.rfile.read(length)))
                except Exception as e:  # a callback that cannot even be read
                    with sink.lock:
                        sink.intake.malformed(f"callback: unreadable ({type(e).__name__}: {e})")
                finally:
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://{host}:{self.server.server_port}"

    def add(self, body) -> None:
        with self.lock:
            self.received += 1
            where = f"callback {self.received}"
            arts = body.get("artifacts") if isinstance(body, dict) else None
            if not isinstance(arts, list):
                self.intake.malformed(f"{where}: not a JSON object with an 'artifacts' list: {str(body)[:120]}")
                return
            golden = []
            for i, a in enumerate(arts):
                n = a.get("nonce") if isinstance(a, dict) else None
                if not isinstance(a, dict) or nonce_problem(n):
                    self.intake.add([a], where=f"{where}, entry #{i}")  # records why it is malformed
                elif n in self.keep:
                    golden.append(a)
            self.intake.add(golden, where=where)

    def close(self) -> IntakeResult:
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            return self.intake.result()


def measure_throughput(
    http: HttpClient,
    body: dict,
    *,
    batch_size: int,
    warmup_s: float = 30.0,
    measure_s: float = 60.0,
    sample_interval_s: float = 10.0,
    spot_nonces: set[int] | None = None,
    k_dim: int = 12,
    callback_host: str | None = "127.0.0.1",
    deadline_s: float = 120.0,
    api: PocApi = VLLM,
    log=print,
) -> ThroughputResult:
    """Run the node's generation loop and sample it. `body` carries the PoC request fields
    (block_hash, block_height, public_key, node_id, node_count, params); `api` says where they
    go (a vLLM node: one group of one; an MLNode assigns a group per replica itself)."""
    http.until = time.monotonic() + warmup_s + measure_s + deadline_s  # the phase's own deadline
    sink = _CallbackSink(callback_host, set(spot_nonces or ()), k_dim) if callback_host and spot_nonces else None
    res = ThroughputResult(warmup_s=warmup_s, batch_size=batch_size, api=api.name,
                           callback_url=sink.url if sink else None)
    start = {**body, "batch_size": batch_size}
    if api.group_fields:
        start.update(group_id=0, n_groups=1)
    if sink:
        start["url"] = sink.url
    model = body["params"]["model"]
    try:
        stop_if_running(http, api, model, log, why="to start one of ours")
        r = http.request("POST", api.path("/init/generate"), start)
        if r.status != 200:
            raise EngineError(f"could not start generation: {explain(r, model, api)}")
        t0 = time.monotonic()
        if isinstance(r.body, dict) and "backends" in r.body:  # the MLNode's fan-out answer
            res.start_answer = r.body
            log(f"    {r.body.get('backends')} replica(s) generating, n_groups {r.body.get('n_groups')}"
                + (f"; refused by: {json.dumps(r.body['errors'])[:300]}" if r.body.get("errors") else ""))
        log(f"    generating (batch {batch_size}); warm-up {warmup_s:g} s, then {measure_s:g} s of samples "
            f"every {sample_interval_s:g} s")
        interrupts.sleep(warmup_s)
        end = time.monotonic() + measure_s
        said_mixed = False
        while True:
            r = http.request("GET", api.path("/status"))
            reps = replica_stats(r.body) if r.status == 200 else {}
            if not reps:
                raise EngineError(f"the node stopped generating during the measurement: {explain(r, model, api)}")
            agg = r.body.get("status") if isinstance(r.body, dict) else None
            if agg == "MIXED" and not said_mixed:
                log("    warning: not every replica is generating (status MIXED): "
                    + ", ".join(f"{b.get('port')} {b.get('status')}" for b in r.body.get("backends") or []
                            if isinstance(b, dict)))
                said_mixed = True
            res.samples.append({"elapsed_s": round(time.monotonic() - t0, 3), "status": agg,
                                "total_processed": sum(v["total_processed"] for v in reps.values()),
                                "node_nonces_per_second": sum(v["nonces_per_second"] for v in reps.values()),
                                "replicas": reps})
            rates = res.rates()
            log(f"    t={res.samples[-1]['elapsed_s']:.0f} s  total {res.samples[-1]['total_processed']}"
                + (f" over {len(reps)} replicas" if len(reps) > 1 else "")
                + (f"  {rates[-1]:.2f} nonces/s since the last sample" if rates else ""))
            if time.monotonic() + sample_interval_s > end:
                break
            interrupts.sleep(sample_interval_s)
    finally:
        http.until = None  # stopping the node's loop gets its own short deadline, also after the phase's
        try:
            stop(http, api, model, deadline_s=min(30.0, deadline_s))
            res.stopped = True
        except EngineError as e:
            log(f"    could not stop generation: {e.one_line()}")
        if sink:
            time.sleep(0.5)  # a callback posted just before the stop
            res.spot = sink.close()
            res.callbacks = {"received": sink.received, "malformed": res.spot.n_malformed}
    return res


def profile_reference_text(prof, per_min: float) -> str:
    """A measured rate against the profile's published figure and its roofline ('' if it has neither)."""
    bits = []
    if prof.throughput_reference and prof.throughput_reference.get("nonces_per_min"):
        want = prof.throughput_reference["nonces_per_min"]
        bits.append(f"{per_min / want:.0%} of the published {want} nonces/min for {prof.name} "
                    f"(batch {prof.throughput_reference.get('batch')})")
    roof = prof.roofline_nonces_per_min_per_gpu()
    if roof:
        bits.append(f"{per_min / (roof * prof.gpu_count):.1%} of the {prof.gpu_count}-GPU roofline "
                    f"({roof * prof.gpu_count:,.0f} nonces/min)")
    return "; ".join(bits)


def throughput_phase(engine, ref, st, prof, opts, *, deadline_s: float, log=print) -> ThroughputPhase:
    """The throughput phase of a run: the node's generation loop measured (`opts`: a
    pipeline.ThroughputOptions), the spot-check of golden nonces that arrived by callback
    compared with the reference (the intake rule), and the rate set against the profile's
    published figure and roofline."""
    from .engines.base import PocParams
    from .poc.stats import compare_intake

    body = {k: v for k, v in engine.body(PocParams.from_reference(ref)).items() if k != "poc_stronger_rng"}
    res = measure_throughput(engine.http, body, batch_size=opts.batch_size, warmup_s=opts.warmup_s,
                             measure_s=opts.measure_s, sample_interval_s=opts.sample_interval_s,
                             spot_nonces=set(ref.nonces.tolist()), k_dim=ref.k_dim, callback_host=opts.callback_host,
                             deadline_s=deadline_s, api=engine.api, log=log)
    out = ThroughputPhase(summary=res.summary(), samples=res.samples, callback_url=res.callback_url,
                          stopped=res.stopped, callbacks=res.callbacks, start_answer=res.start_answer)
    _set_reference(out, prof)
    spot = res.spot
    if spot is not None and (spot.n or spot.n_malformed):
        idx = np.isin(ref.nonces, spot.nonces)
        comp = compare_intake(ref.nonces[idx], ref.vectors[idx], spot, st.values)
        v = comp.verdict.value if comp.n_total else "INCOMPLETE"
        out.spot_verdict = SpotVerdict({"PASS-with-mismatches": "PASS"}.get(v, v))
        bits = [f"{comp.n_total} golden nonces computed at full speed: {comp.n_mismatch} mismatches"]
        if comp.conflicting_nonces:
            bits.append(f"{len(comp.conflicting_nonces)} answered twice differently")
        if comp.n_malformed:
            bits.append(f"{comp.n_malformed} malformed callback entr{'y' if comp.n_malformed == 1 else 'ies'}: "
                        f"{'; '.join(comp.malformed[:2])}")
        verdict_text = {SpotVerdict.FAIL: "FAIL (fraud proven at full speed)",
                        SpotVerdict.INCOMPLETE: "INCOMPLETE (unusable or malformed callbacks: the run cannot PASS)"}
        out.spot_check = (", ".join(bits) + f", p_value {comp.p_value:.3g} -> "
                          + verdict_text.get(out.spot_verdict, "no fraud seen"))
        out.spot_mismatch_nonces = comp.mismatch_nonces
        out.spot_malformed = comp.malformed
    else:
        out.spot_check = ("no golden nonce arrived by callback (can the node reach "
                          f"{res.callback_url}?): not checked at full speed")
    return out


def _set_reference(out: ThroughputPhase, prof) -> None:
    """The measured rate against the profile's published figure and roofline, when there is a profile."""
    per_min = out.summary.steady_nonces_per_min
    if prof is not None and per_min is not None:
        out.reference = profile_reference_text(prof, per_min) or None
        out.profile = prof.name


# ----------------------------------------------------------------------------------------
# an in-process engine (`mlvalidate run`): no node loop to sample, batches timed here
# ----------------------------------------------------------------------------------------
THROUGHPUT_NONCE_BASE = 1_000_000_000  # throughput rounds use nonces no reference holds


def inprocess_throughput(engine, ref, prof, batch: int, *, warmup_rounds: int, measure_s: float,
                         min_rounds: int, log) -> ThroughputPhase:
    """Steady-state nonces/s of an in-process engine at `batch`: `warmup_rounds` computes of one
    batch each are thrown away, then batches are computed until `measure_s` has passed (at least
    `min_rounds`)."""
    from .engines.base import PocParams

    params = PocParams.from_reference(ref)
    nxt = THROUGHPUT_NONCE_BASE

    def one_round() -> tuple[float, dict]:
        nonlocal nxt
        nonces = list(range(nxt, nxt + batch))
        nxt += batch
        res = engine.compute(nonces, params, batch_size=batch)
        return res.elapsed_s, res.info

    t0 = time.perf_counter()
    for _ in range(warmup_rounds):
        one_round()
    warm = time.perf_counter() - t0
    rounds, infos = [], []
    t1 = time.perf_counter()
    while len(rounds) < min_rounds or time.perf_counter() - t1 < measure_s:
        s, info = one_round()
        rounds.append(s)
        infos.append(info)
    rates = [batch / s for s in rounds if s > 0]
    steady = batch * len(rounds) / sum(rounds) if sum(rounds) > 0 else None
    fwd = sum(i.get("vllm_forward_s", 0.0) for i in infos)
    summary = ThroughputSummary(
        api=getattr(engine, "name", "in-process"), n_samples=len(rounds), warmup_s=warm, batch_size=batch,
        n_replicas=1,
        rates=RateStats(steady=steady, min=min(rates) if rates else None,
                        median=statistics.median(rates) if rates else None, max=max(rates) if rates else None),
        outside_forward_share=round(1 - fwd / sum(rounds), 4) if sum(rounds) > 0 and fwd else None)  # fmt: skip
    out = ThroughputPhase(summary=summary,
                          samples=[{"round": i, "seconds": s, "nonces": batch} for i, s in enumerate(rounds)],
                          spot_check="not needed: every vector is computed in this process and compared here")
    _set_reference(out, prof)
    log(f"      {steady:.2f} nonces/s over {len(rounds)} batches of {batch} after {warm:.1f} s warm-up"
        if steady is not None else "      no steady rate")
    return out
