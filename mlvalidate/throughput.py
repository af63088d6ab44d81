"""Steady-state PoC throughput of a live node, with a spot-check at full speed.

The node's own `nonces_per_second` is total_processed / time since the loop started: a
cumulative average that includes warm-up. The harness waits out a warm-up, then samples the
node's status at fixed times (at least three intervals) and reads `total_processed` often in
between. The counter moves in whole batches, so the steady rate is taken between the moments
it changed (rates.py): exact counts over exact spans, with a stated timing error. The
per-interval min / median / max and the node's own figure are reported next to it.
Generation is always stopped at the end, also on Ctrl-C or an error.

One sampler for both APIs: a vLLM node is one replica; an MLNode fans init/generate out to
its vLLM replicas (each its own nonce group) and its status lists them per port, so rates are
computed per replica (from that replica's counter) and summed.

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
from .http_client import HttpClient, MAX_BODY_BYTES, parse_json
from .engines.poc_http import STOP_GRACE_S, VLLM, PocApi, check_backends, explain, replica_stats, stop, stop_if_running
from .errors import EngineError
from .poc.intake import Intake, IntakeResult, nonce_problem
from .rates import Reading, interval_rates, sample_rate, steady_rate, timing_error_bound, window_rate
from .results import RateStats, SpotVerdict, ThroughputPhase, ThroughputSummary
from .serving.energy import EnergyPlan, WindowMeter, sample_interval


@dataclass
class ThroughputResult:
    # samples: {elapsed_s, status, total_processed, node_nonces_per_second (both summed over replicas),
    #           replicas: {key: {status, total_processed, nonces_per_second}}}
    samples: list[dict] = field(default_factory=list)
    # every status reading in the measuring window, per replica: (elapsed_s, total_processed)
    readings: dict[str, list[Reading]] = field(default_factory=dict)
    warmup_s: float = 0.0
    batch_size: int = 0
    api: str = "vllm"
    started_at: float | None = None  # time.monotonic() when the loop started: elapsed_s counts from it
    last_read: float = 0.0  # elapsed_s of the latest status reading
    spot: IntakeResult | None = None  # the golden nonces that arrived by callback (the intake rule)
    callbacks: dict = field(default_factory=dict)  # {"received", "malformed"}: callback POSTs
    callback_url: str | None = None
    stopped: bool = False
    start_answer: dict | None = None  # what init/generate answered (the MLNode: backends, n_groups, errors)
    meter: WindowMeter | None = None  # NVML over the measuring window (serving/energy.py), where asked

    def replica_keys(self) -> list[str]:
        keys = {k for s in self.samples for k in s["replicas"]} | set(self.readings)
        return sorted(keys, key=lambda k: (len(k), k))

    def _sampled(self, key: str) -> list[Reading]:
        return [(s["elapsed_s"], s["replicas"][key]["total_processed"]) for s in self.samples if key in s["replicas"]]

    def _by_changes(self, key: str) -> bool:
        """Whether the replica's rate comes from the moments its counter changed (rates.py): it
        needs the frequent readings and at least two changes among them."""
        fine = self.readings.get(key) or []
        return steady_rate(fine) is not None

    def interval_rates(self, key: str) -> list[float | None]:
        """The replica's nonces/s over each sampling interval (None where it was not read at both
        ends): from its interpolated counter where the changes span the interval, else the plain
        difference of the two samples (quantised to whole batches)."""
        times = [s["elapsed_s"] for s in self.samples]
        smooth = interval_rates(self.readings[key], times) if self._by_changes(key) else [None] * len(times)
        out = []
        for k, (a, b) in enumerate(zip(self.samples, self.samples[1:])):
            if key not in a["replicas"] or key not in b["replicas"]:
                out.append(None)
            elif smooth[k] is not None:
                out.append(smooth[k])
            else:
                out.append(sample_rate((a["elapsed_s"], a["replicas"][key]["total_processed"]),
                                       (b["elapsed_s"], b["replicas"][key]["total_processed"])))
        return out

    def rates(self) -> list[float]:
        """Summed nonces/s per sampling interval (over the replicas read at both ends)."""
        per = [self.interval_rates(k) for k in self.replica_keys()]
        return [sum(x for x in col if x is not None) for col in zip(*per) if any(x is not None for x in col)]

    def steady(self, key: str) -> tuple[float | None, float | None, str]:
        """(steady rate, its timing error, method) of a replica: over the window from its first
        sample to its last, from the counter interpolated between its changes (rates.py); else
        between the counter's first and last change; else between the first and last sample."""
        r = self._sampled(key)
        if self._by_changes(key):
            fine = self.readings[key]
            w = window_rate(fine, r[0][0], r[-1][0]) if len(r) >= 2 else None
            if w is not None:
                return w[0], w[1], "counter over the window"
            return steady_rate(fine), timing_error_bound(fine), "counter changes"
        return (sample_rate(r[0], r[-1]) if len(r) >= 2 else None), None, "samples"

    def sampled_steady(self, key: str) -> float | None:
        """The plain rate between the replica's first and last sample (what the harness reported
        before it read the counter often): for comparison."""
        r = self._sampled(key)
        return sample_rate(r[0], r[-1]) if len(r) >= 2 else None

    def summary(self) -> ThroughputSummary:
        s = self.samples
        r = self.rates()
        replicas = {}
        how = {key: self.steady(key) for key in self.replica_keys()}  # (rate, timing error, method)
        for key, (rate, _, _) in how.items():
            rr = [x for x in self.interval_rates(key) if x is not None]
            last = next((x["replicas"][key] for x in reversed(s) if key in x["replicas"]), None)
            replicas[key] = RateStats(
                steady=rate, min=min(rr) if rr else None,
                median=statistics.median(rr) if rr else None, max=max(rr) if rr else None,
                node_cumulative=last["nonces_per_second"] if last else None,
                total_processed=last["total_processed"] if last else None)  # fmt: skip
        steady = [v.steady for v in replicas.values() if v.steady is not None]
        methods = {m for _, _, m in how.values()}
        bounds = [e for _, e, _ in how.values()]
        return ThroughputSummary(
            api=self.api, n_samples=len(s), warmup_s=self.warmup_s, batch_size=self.batch_size,
            n_replicas=len(replicas),
            rates=RateStats(steady=sum(steady) if steady else None, min=min(r) if r else None,
                            median=statistics.median(r) if r else None, max=max(r) if r else None,
                            node_cumulative=s[-1]["node_nonces_per_second"] if s else None),
            replicas=replicas, spot_check_received=self.spot.n if self.spot is not None else 0,
            method=methods.pop() if len(methods) == 1 else "mixed" if methods else "samples",
            window_s=round(s[-1]["elapsed_s"] - s[0]["elapsed_s"], 3) if len(s) >= 2 else None,
            timing_error=max(bounds) if bounds and all(b is not None for b in bounds) else None)  # fmt: skip


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


MIN_INTERVALS = 3
READING_PERIOD_S = (0.02, 0.25)  # the counter is read this often (at most, at least) between samples


def schedule(measure_s: float, sample_interval_s: float) -> tuple[int, float]:
    """(intervals, seconds each) of a measuring window: about `sample_interval_s` apart, never
    fewer than MIN_INTERVALS, and the window exactly `measure_s` long."""
    n = max(MIN_INTERVALS, int(measure_s / sample_interval_s + 1e-9))
    return n, measure_s / n


def reading_period(every_s: float) -> float:
    """How often the counter is read between samples: 1/40 of an interval, within READING_PERIOD_S."""
    lo, hi = READING_PERIOD_S
    return min(hi, max(lo, every_s / 40))


def _read(http: HttpClient, api: PocApi, model: str, res: ThroughputResult, t0: float):
    """One status reading, recorded per replica; the node must still be generating."""
    r = http.request("GET", api.path("/status"))
    res.last_read = round(time.monotonic() - t0, 4)
    check_backends(r)  # an MLNode replica whose status errors: its rate would silently be missing
    reps = replica_stats(r.body) if r.status == 200 else {}
    if not reps:
        raise EngineError(f"the node stopped generating during the measurement: {explain(r, model, api)}")
    for key, v in reps.items():
        res.readings.setdefault(key, []).append((res.last_read, v["total_processed"]))
    return reps, (r.body.get("status") if isinstance(r.body, dict) else None), r.body


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
    energy: EnergyPlan | None = None,
) -> ThroughputResult:
    """Run the node's generation loop and measure it: after the warm-up, samples at fixed times
    (schedule(): at least MIN_INTERVALS intervals) and the counter read often in between, so
    the steady rate is the counter interpolated between its changes over the window (rates.py),
    the timing error known. `body` carries the PoC
    request fields (block_hash, block_height, public_key, node_id, node_count, params); `api`
    says where they go (a vLLM node: one group of one; an MLNode assigns a group per replica).
    `energy`: whose GPUs NVML reads from the window's first sample to its last (serving/energy.py)."""
    http.until = time.monotonic() + warmup_s + measure_s + deadline_s  # the phase's own deadline
    sink = _CallbackSink(callback_host, set(spot_nonces or ()), k_dim) if callback_host and spot_nonces else None
    res = ThroughputResult(warmup_s=warmup_s, batch_size=batch_size, api=api.name,
                           callback_url=sink.url if sink else None)
    res.meter = WindowMeter(energy, interval_s=sample_interval(measure_s)) if energy is not None else None
    start = {**body, "batch_size": batch_size}
    if api.group_fields:
        start.update(group_id=0, n_groups=1)
    if sink:
        start["url"] = sink.url
    model = body["params"]["model"]
    interrupted = False
    try:
        stop_if_running(http, api, model, log, why="to start one of ours")
        r = http.request("POST", api.path("/init/generate"), start)
        if r.status != 200:
            raise EngineError(f"could not start generation: {explain(r, model, api)}")
        t0 = res.started_at = time.monotonic()
        if isinstance(r.body, dict) and "backends" in r.body:  # the MLNode's fan-out answer
            res.start_answer = r.body
            log(f"    {r.body.get('backends')} replica(s) generating, n_groups {r.body.get('n_groups')}"
                + (f"; refused by: {json.dumps(r.body['errors'])[:300]}" if r.body.get("errors") else ""))
        n_int, every = schedule(measure_s, sample_interval_s)
        fine = reading_period(every)
        log(f"    generating (batch {batch_size}); warm-up {warmup_s:g} s, then {measure_s:g} s of samples every "
            f"{every:.3g} s ({n_int} intervals; the counter read every {fine:.3g} s in between)")
        def read_often_until(due: float) -> None:  # the counter, every `fine` s: when did it move?
            while (left := due - time.monotonic()) > fine / 2:
                interrupts.sleep(min(fine, left - fine / 2))
                _read(http, api, model, res, t0)
            interrupts.sleep(max(0.0, due - time.monotonic()))

        lead = min(warmup_s, every)  # read from the warm-up's last interval on: changes before the window
        interrupts.sleep(warmup_s - lead)
        w0 = time.monotonic() + lead
        said_mixed = False
        for k in range(n_int + 1):
            read_often_until(w0 + k * every)
            reps, agg, raw = _read(http, api, model, res, t0)
            if res.meter is not None and k in (0, n_int):  # the energy counter at the window's two ends
                (res.meter.begin if k == 0 else res.meter.end)()
            if agg == "MIXED" and not said_mixed:
                log("    warning: not every replica is generating (status MIXED): "
                    + ", ".join(f"{b.get('port')} {b.get('status')}" for b in raw.get("backends") or []
                            if isinstance(b, dict)))
                said_mixed = True
            res.samples.append({"elapsed_s": res.last_read, "status": agg,
                                "total_processed": sum(v["total_processed"] for v in reps.values()),
                                "node_nonces_per_second": sum(v["nonces_per_second"] for v in reps.values()),
                                "replicas": reps})
            rates = res.rates()
            log(f"    t={res.samples[-1]['elapsed_s']:.0f} s  total {res.samples[-1]['total_processed']}"
                + (f" over {len(reps)} replicas" if len(reps) > 1 else "")
                + (f"  {rates[-1]:.2f} nonces/s since the last sample" if rates else ""))
        # and after the window, until every replica's counter has moved once more (at most an interval)
        at_end = {k: v[-1][1] for k, v in res.readings.items()}
        until = time.monotonic() + every
        while time.monotonic() < until and any(v[-1][1] == at_end[k] for k, v in res.readings.items()):
            interrupts.sleep(fine)
            _read(http, api, model, res, t0)
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        if res.meter is not None:
            res.meter.close()  # the sampler thread ends with the window, also on Ctrl-C or an error
        http.until = None  # stopping the node's loop gets its own short deadline, also after the phase's
        try:  # after Ctrl-C/SIGTERM the run must end now: the stop gets STOP_GRACE_S
            stop(http, api, model, deadline_s=STOP_GRACE_S if interrupted else min(30.0, deadline_s))
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


def throughput_phase(engine, ref, st, prof, opts, *, deadline_s: float, log=print,
                     energy: EnergyPlan | None = None) -> ThroughputPhase:
    """The throughput phase of a run: the node's generation loop measured (`opts`: a
    pipeline.ThroughputOptions), the spot-check of golden nonces that arrived by callback
    compared with the reference (the intake rule), and the rate set against the profile's
    published figure and roofline."""
    from .engines.base import PocParams
    from .poc.stats import compare_intake

    body = {k: v for k, v in engine.body(PocParams.from_reference(ref)).items()
            if k != "poc_stronger_rng" or ref.stronger_rng}  # sent when the reference needs it
    res = measure_throughput(engine.http, body, batch_size=opts.batch_size, warmup_s=opts.warmup_s,
                             measure_s=opts.measure_s, sample_interval_s=opts.sample_interval_s,
                             spot_nonces=set(ref.nonces.tolist()), k_dim=ref.k_dim, callback_host=opts.callback_host,
                             deadline_s=deadline_s, api=engine.api, log=log, energy=energy)
    out = ThroughputPhase(summary=res.summary(), samples=res.samples, callback_url=res.callback_url,
                          stopped=res.stopped, callbacks=res.callbacks, start_answer=res.start_answer)
    if res.meter is not None:
        out.energy = res.meter.result(rate=out.summary.steady_nonces_per_second)
    set_profile_reference(out, prof)
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


def set_profile_reference(out: ThroughputPhase, prof) -> None:
    """The measured rate against the profile's published figure and roofline, when there is a profile."""
    per_min = out.summary.steady_nonces_per_min
    if prof is not None and per_min is not None:
        out.reference = profile_reference_text(prof, per_min) or None
        out.profile = prof.name
