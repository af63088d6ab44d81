"""`mlvalidate fleet`: validate every ML node of a host at once, then one fleet report.

Discovery (the admin API, a node list, URLs) is fleet_nodes.py.

Which port. The Gonka vLLM PoC API (POST /api/v1/pow/generate, /init/generate, /status, /stop)
is served by the node's vLLM, i.e. on its `inference_port`; `poc_port` is the MLNode API (the
proxy in front of the replicas). The default is `inference_port` with the vLLM API; `poc_port`
switches to the MLNode API (`validate --api mlnode`, with download and deploy skipped: a fleet
check never redeploys a node).

Running. Each node is one `pipeline.run_live` in its own worker thread (at most `concurrency`
at a time), with its own `--timeout`: a dead or hostile node ends on its own deadline and never
holds the others. Signals reach Python's main thread only, so the main thread only waits; on
Ctrl-C or SIGTERM it hands every worker an interrupt that the worker raises at its next wait
(an HTTP request in flight or a sleep, checked every few tenths of a second), so each node's run ends the way a
Ctrl-C ends `validate`: the node's generation loop is stopped, what came back is kept and the
bundle is written. Nodes not started yet get a bundle saying so.

Bundles. Each node's bundle is OUT/nodes/NN-slug/ (bundle_dir_name: its position in the node
list and a readable slug of its id), so two ids a file name cannot tell apart never share a
folder; fleet.json names every node's folder. A node whose bundle could not be written is
ERROR, never PASS.

The hand-over is mlvalidate/interrupts.py: each worker binds a Token, which the HTTP client's
waits and the pipeline's sleeps check.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import interrupts
from .engines.poc_http import DEFAULT_IN_FLIGHT
from .errors import MlvalidateError
from .fleet_nodes import (  # noqa: F401 (discovery is re-exported: fleet.X keeps working)
    API_OF_PORT,
    PORT_FIELDS,
    FleetError,
    NodeTarget,
    discover_admin,
    load_nodes_file,
    node_url,
    target_from_entry,
    unique_ids,
)
from .interrupts import Token
from .serving.energy import EnergyPlan


# ----------------------------------------------------------------------------------------
# one node
# ----------------------------------------------------------------------------------------
@dataclass
class FleetOptions:
    reference: str | None = None  # a file; else --model; else each node's only model
    model: str | None = None
    batch_size: int = 32
    timeout_s: float = 300.0
    connect_grace_s: float = 30.0
    concurrency: int = 16
    profile: str | None = None
    throughput: object = None  # pipeline.ThroughputOptions, None: no throughput phase
    stat: object = None  # pipeline.StatOverrides
    out: Path = Path("mlvalidate-fleet")
    in_flight: int = DEFAULT_IN_FLIGHT  # queued /generate chunks per node
    fresh: object = None  # fresh.FreshPlan (--fresh N): one challenge per reference; fresh_fleet.py compares the nodes
    stop_on_exit: bool = False  # POST /pow/stop on a node whose run ends early with chunks queued
    gpus: str | None = None  # --gpus for every node (an entry's own `gpus` wins)


@dataclass
class NodeResult:
    target: NodeTarget
    verdict: str  # PASS, PASS-with-mismatches, FAIL, INCOMPLETE, ERROR, SKIPPED
    exit_code: int
    bundle: Path | None = None
    error: str | None = None
    wall_s: float = 0.0
    started: bool = False
    interrupted: str | None = None


def bundle_dir_name(index: int, node_id: str, count: int) -> str:
    """A node's bundle folder under OUT/nodes/: its position in the fleet (1-based, zero-padded:
    unique, and in the node list's order) and a readable slug of its id (ids differ in ways a
    file name cannot show: "a#2" and "a_2", "..", "."). fleet.json names each node's folder."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", node_id).strip("._")[:60] or "node"
    return f"{index + 1:0{len(str(max(count, 1)))}d}-{slug}"


class _NoEngine:
    def __init__(self, url):
        self.url = url

    def describe(self) -> dict:
        return {"engine": "none (not started)", "url": self.url}


def not_started_run(target: NodeTarget, reference: str, opts: FleetOptions, reason: str):
    """A RunRecord for a node that never ran (interrupted first), so it still gets a bundle."""
    from .pipeline import RunOptions, load_inputs, new_run
    from .results import Phase, PhaseStatus

    ref, st, prof = load_inputs(RunOptions(url=target.url or "", reference=reference, stat=opts.stat,
                                           profile=target.profile or opts.profile))
    run = new_run(target.id, ref, st, _NoEngine(target.url), opts.batch_size,
                  {"url": {"value": target.url, "source": target.source}}, prof)
    run.phases.append(Phase("validate", PhaseStatus.NOT_RUN, None, reason))
    run.error = reason
    return run


def reference_for(target: NodeTarget, opts: FleetOptions) -> tuple[str | None, str | None]:
    """(reference to validate against, why the node is skipped)."""
    if opts.reference:
        return opts.reference, None
    if opts.model:
        if target.models and opts.model not in target.models:
            return None, f"serves {', '.join(target.models)}, not {opts.model}"
        return opts.model, None
    if len(target.models) == 1:
        return target.models[0], None
    return None, ("lists no model" if not target.models else f"lists {len(target.models)} models") + \
        ": pass --model ID or --reference FILE"


# nodes measured side by side: one node's share of this host's GPU energy cannot be told (serving/energy.py)
SIDE_BY_SIDE = EnergyPlan(None, None, "a fleet measures its nodes side by side: this host's GPU energy cannot be told "
                                      "apart between them (validate one node with --nvml for its energy)")


def run_node(target: NodeTarget, reference: str, opts: FleetOptions, token: Token, log, out: Path) -> NodeResult:
    """Validate one node in this (worker) thread and write its bundle to `out`; never raises. A
    node whose bundle could not be written is ERROR (exit 2) whatever its run said, as
    `validate` exits 2 then: a verdict without its evidence is never a PASS."""
    from .pipeline import RunOptions, run_live
    from .report.bundle import write_bundle
    from .results import outcome
    from .serving.environment import environment

    t0 = time.monotonic()
    res = NodeResult(target, "ERROR", 2, started=True)
    interrupts.bind(token)
    try:
        run = run_live(RunOptions(
            url=target.url, reference=reference, api=target.api, model=None, batch_size=opts.batch_size,
            stat=opts.stat, timeout_s=opts.timeout_s, connect_grace_s=opts.connect_grace_s,
            profile=target.profile or opts.profile, throughput=opts.throughput, skip_download=True,
            skip_deploy=True, progress=False, in_flight=opts.in_flight, stop_on_exit=opts.stop_on_exit,
            fresh=opts.fresh, gpus=target.gpus or opts.gpus, mlnode_url=target.mlnode_url,
            gpus_source=f"{target.source} entry" if target.gpus else "cli",
            energy=SIDE_BY_SIDE), log=log)  # fmt: skip
    except MlvalidateError as e:  # the reference or profile named for this node does not load
        res.error = e.one_line()
        res.wall_s = time.monotonic() - t0
        return res
    except KeyboardInterrupt as e:  # only if it escaped every phase (it should not)
        res.error = f"interrupted by {getattr(e, 'signal_name', 'SIGINT')}"
        res.wall_s = time.monotonic() - t0
        return res
    finally:
        interrupts.bind(None)
    run.name = target.id
    run.inputs["node_id"] = {"value": target.id, "source": target.source}
    if token.delivered:
        res.interrupted = token.signal_name
    o = outcome(run)
    try:
        run.environment = environment(run)
        write_bundle(out, run)
        res.bundle = out
        res.verdict, res.exit_code = o.verdict, o.exit_code
        res.error = run.error or run.engine.get("error")
    except OSError as e:
        res.error = f"{o.verdict} reached, but the bundle could not be written to {out}: {e.strerror or e}"
    res.wall_s = time.monotonic() - t0
    return res


# ----------------------------------------------------------------------------------------
# the fleet
# ----------------------------------------------------------------------------------------
@dataclass
class FleetResult:
    results: list[NodeResult]
    wall_s: float
    interrupted: str | None = None
    report: dict | None = None  # paths of report.md / report.html / fleet.json
    started_at: str | None = None  # UTC, ISO 8601

    @property
    def exit_code(self) -> int:
        code = fleet_exit_code(self.results)
        return 2 if code == 0 and self.interrupted else code  # an interrupted fleet never says "every node passed"


def fleet_exit_code(results: list[NodeResult]) -> int:
    """0 only if every node passed; 1 if any FAILed; else 2 (INCOMPLETE/ERROR somewhere, or no node)."""
    ran = [r for r in results if r.verdict != "SKIPPED"]
    if any(r.verdict == "FAIL" for r in ran):
        return 1
    if not ran or any(r.exit_code != 0 or r.verdict not in ("PASS", "PASS-with-mismatches") for r in ran):
        return 2
    return 0


class _Printer:
    def __init__(self, echo=print):
        self.lock = threading.Lock()
        self.echo = echo

    def for_node(self, node_id: str):
        def log(msg: str) -> None:
            with self.lock:
                for line in str(msg).splitlines() or [""]:
                    if line.strip():
                        self.echo(f"[{node_id}] {line.strip()}")

        return log

    def __call__(self, msg: str) -> None:
        with self.lock:
            self.echo(msg)


def run_fleet(targets: list[NodeTarget], opts: FleetOptions, echo=print, *, wait_hook=None) -> FleetResult:
    """Validate every target (at most opts.concurrency at a time); returns when every node's
    run has ended and its bundle is written. Ctrl-C / SIGTERM in the calling (main) thread
    interrupts every running node (each stops its node's generation and writes its bundle) and
    marks the nodes not started yet. `wait_hook()` is called in the waiting loop (tests)."""
    import datetime as _dt

    say = _Printer(echo)
    opts.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    results: dict[int, NodeResult] = {}
    tokens: dict[int, Token] = {}
    slots = threading.Semaphore(max(1, opts.concurrency))
    stop_all = threading.Event()
    lock = threading.Lock()
    plan: list[tuple[int, NodeTarget, str]] = []
    for i, t in enumerate(targets):
        ref, why = reference_for(t, opts)
        if t.problem or why:
            results[i] = NodeResult(t, "ERROR" if t.problem else "SKIPPED", 2 if t.problem else 0,
                                    error=t.problem or why)
            say(f"[{t.id}] {'cannot be validated: ' + t.problem if t.problem else 'skipped: ' + why}")
        else:
            plan.append((i, t, ref))
            tokens[i] = Token()

    finished: set[int] = set()  # workers that have returned (never Thread.join: an interrupt inside
    # join can leave a live thread looking finished on Python 3.11)
    folders = {i: opts.out / "nodes" / bundle_dir_name(i, t.id, len(targets)) for i, t in enumerate(targets)}

    def worker(i: int, t: NodeTarget, ref: str) -> None:
        try:
            with slots:
                with lock:
                    if stop_all.is_set():
                        return  # recorded by the main thread
                    results[i] = NodeResult(t, "ERROR", 2, started=True)  # placeholder while it runs
                say(f"[{t.id}] validating {t.url} ({t.api} API)")
                try:
                    r = run_node(t, ref, opts, tokens[i], say.for_node(t.id), folders[i])
                except Exception as e:  # noqa: BLE001 — a bug must cost one row, never the fleet or a traceback
                    r = NodeResult(t, "ERROR", 2, started=True, error=f"internal error: {type(e).__name__}: "
                                   f"{' '.join(str(e).split())[:200]} (a bug in mlvalidate: please report it)")
                with lock:
                    results[i] = r
                say(f"[{t.id}] {r.verdict} in {r.wall_s:.1f} s" + (f" — {r.error}" if r.error else ""))
        finally:
            with lock:
                finished.add(i)

    interrupted: str | None = None

    def interrupt(sig: str) -> None:
        say(f"interrupted by {sig}: stopping every node's run; each bundle is still written")
        with lock:
            stop_all.set()
            for i, _t, _ref in plan:
                tokens[i].request(sig)

    with interrupts.held() as hold:  # every worker starts (a signal meanwhile stops them all just after)
        for i, t, ref in plan:
            threading.Thread(target=worker, args=(i, t, ref), name=f"fleet-{t.id}", daemon=True).start()
    if hold.signal:
        interrupted = hold.signal
        interrupt(interrupted)
    while True:
        try:
            with lock:
                if len(finished) == len(plan):
                    break
            time.sleep(0.1)  # the main thread has no token: a plain sleep, where signals land
            if wait_hook is not None:
                wait_hook()
        except KeyboardInterrupt as e:
            sig = getattr(e, "signal_name", "SIGINT (Ctrl-C)")
            if interrupted is None:
                interrupted = sig
                interrupt(sig)
            else:
                say("still stopping the nodes (each within its own deadline)")
    with interrupts.held():  # the runs are over: what is left is writing, which a signal must not cut
        for i, t, ref in plan:
            if i not in results:  # never started: the fleet was interrupted first
                reason = f"not started: the fleet was interrupted by {interrupted}"
                r = NodeResult(t, "ERROR", 2, error=reason, interrupted=interrupted)
                try:
                    from .report.bundle import write_bundle
                    from .serving.environment import environment

                    run = not_started_run(t, ref, opts, reason)
                    run.environment = environment(run)
                    r.bundle = write_bundle(folders[i], run)
                except (MlvalidateError, OSError) as e:
                    r.error += f" (no bundle: {e})"
                results[i] = r
    ordered = [results[i] for i in range(len(targets))]
    return FleetResult(ordered, time.monotonic() - t0, interrupted, started_at=started)
