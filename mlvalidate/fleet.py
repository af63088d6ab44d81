"""`mlvalidate fleet`: validate every ML node of a host at once, then one fleet report.

Discovery. A host's network node lists its ML nodes on its admin API
(GET http://HOST:9200/admin/v1/nodes, docs/chain-api.md, last section): entries with `id`, `host`,
`inference_port`, `poc_port`, `max_concurrent` and `models` (model id -> {"args": [...]}).
Hosts without an admin API give a file of URLs or admin-shaped entries, or URLs one by one.

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

The hand-over is mlvalidate/interrupts.py: each worker binds a Token, which the HTTP client's
waits and the pipeline's sleeps check.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from . import interrupts
from .engines.poc_http import DEFAULT_IN_FLIGHT
from .errors import MlvalidateError
from .interrupts import Token

PORT_FIELDS = ("inference_port", "poc_port")
API_OF_PORT = {"inference_port": "vllm", "poc_port": "mlnode"}


class FleetError(MlvalidateError):
    """The fleet's node list cannot be had or read."""


# ----------------------------------------------------------------------------------------
# discovery
# ----------------------------------------------------------------------------------------
@dataclass
class NodeTarget:
    id: str
    url: str | None  # None: the entry could not give one (see `problem`)
    api: str = "vllm"
    models: list[str] = field(default_factory=list)
    profile: str | None = None
    source: str = "--url"
    entry: dict | None = None  # the admin-shaped entry it came from
    problem: str | None = None  # why it cannot be validated (a malformed entry)


def node_url(host: str, port: int) -> str:
    host = host.strip()
    if "://" in host:  # a host written as a URL: keep its scheme and address, use the chosen port
        parts = urllib.parse.urlsplit(host)
        scheme, host = parts.scheme, parts.hostname or ""
    else:
        scheme = "http"
    if ":" in host and not host.startswith("["):  # IPv6
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def _port(v) -> int | None:
    return v if type(v) is int and 0 < v < 65536 else None


def target_from_entry(entry, index: int, port_field: str, source: str, api: str | None = None) -> NodeTarget:
    """One admin-shaped entry (or a URL string) -> a NodeTarget; a malformed entry keeps its problem."""
    from .engines.http import check_url

    api_default = api or API_OF_PORT[port_field]
    if isinstance(entry, str):
        try:
            url = check_url(entry, f"node #{index + 1}")
        except MlvalidateError as e:
            return NodeTarget(id=f"node-{index + 1}", url=None, source=source, problem=e.one_line(), api=api_default)
        return NodeTarget(id=urllib.parse.urlsplit(url).netloc, url=url, api=api_default, source=source)
    if not isinstance(entry, dict):
        return NodeTarget(id=f"node-{index + 1}", url=None, source=source, api=api_default,
                          problem=f"entry #{index + 1} is a {type(entry).__name__}, not an object or a URL")
    nid = entry.get("id")
    nid = str(nid) if isinstance(nid, (str, int)) and str(nid).strip() else f"node-{index + 1}"
    models = entry.get("models")
    model_ids = [str(m) for m in models] if isinstance(models, dict) else []
    profile = entry.get("profile") if isinstance(entry.get("profile"), str) else None
    t = NodeTarget(id=nid, url=None, api=api_default, models=model_ids, profile=profile, source=source, entry=entry)
    if isinstance(entry.get("url"), str):  # our own shorthand in a --nodes file
        try:
            t.url = check_url(entry["url"], f"node {nid}")
        except MlvalidateError as e:
            t.problem = e.one_line()
        return t
    host, port = entry.get("host"), _port(entry.get(port_field))
    if not isinstance(host, str) or not host.strip():
        t.problem = f"entry {nid!r} has no host"
    elif port is None:
        t.problem = f"entry {nid!r} has no valid {port_field} (got {entry.get(port_field)!r})"
    else:
        try:
            t.url = check_url(node_url(host, port), f"node {nid}")
        except MlvalidateError as e:
            t.problem = e.one_line()
    return t


def _entries(doc, where: str) -> list:
    if isinstance(doc, dict):
        for key in ("nodes", "items", "data"):  # a list wrapped in an object
            if isinstance(doc.get(key), list):
                return doc[key]
        raise FleetError(f"{where}: an object without a list of nodes", "expected a JSON list of node entries")
    if not isinstance(doc, list):
        raise FleetError(f"{where}: not a list of nodes (a {type(doc).__name__})", "expected a JSON list of node entries")
    return doc


def unique_ids(targets: list[NodeTarget]) -> list[NodeTarget]:
    seen: dict[str, int] = {}
    for t in targets:
        seen[t.id] = seen.get(t.id, 0) + 1
        if seen[t.id] > 1:
            t.id = f"{t.id}#{seen[t.id]}"
    return targets


def discover_admin(admin_url: str, port_field: str = "inference_port", *, api: str | None = None,
                   timeout_s: float = 30.0) -> list[NodeTarget]:
    """GET ADMIN/admin/v1/nodes -> one target per entry."""
    from .engines.http import HttpClient, check_url

    base = check_url(admin_url, "--admin")
    path = "" if base.endswith("/admin/v1/nodes") else "/admin/v1/nodes"
    http = HttpClient(base, request_timeout=timeout_s, deadline_s=timeout_s, connect_grace_s=min(10.0, timeout_s))
    try:
        r = http.request("GET", path)
    except MlvalidateError as e:
        raise FleetError(f"the admin API at {base} did not answer: {e.one_line()}",
                         "is the network node's admin API (port 9200) reachable from here? or pass --nodes/--url") from None
    if r.status != 200:
        raise FleetError(f"GET {base}{path} answered HTTP {r.status}: {r.detail()}",
                         "check the admin URL (http://HOST:9200)")
    where = f"GET {base}{path}"
    return unique_ids([target_from_entry(e, i, port_field, "admin", api) for i, e in enumerate(_entries(r.body, where))])


def load_nodes_file(path: str | Path, port_field: str = "inference_port", *, api: str | None = None) -> list[NodeTarget]:
    """A JSON or YAML list of URLs or admin-shaped entries (also {"nodes": [...]})."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FleetError(f"--nodes {p}: cannot read it ({getattr(e, 'strerror', None) or e})",
                         "pass a JSON or YAML list of node URLs or admin entries") from None
    try:
        doc = json.loads(text)
    except ValueError:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise FleetError(f"--nodes {p}: neither JSON nor YAML ({' '.join(str(e).split())[:200]})",
                             "pass a JSON or YAML list of node URLs or admin entries") from None
    return unique_ids([target_from_entry(e, i, port_field, "nodes-file", api)
                       for i, e in enumerate(_entries(doc, f"--nodes {p}"))])


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


def bundle_dir_name(node_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", node_id).strip("._") or "node"


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


def run_node(target: NodeTarget, reference: str, opts: FleetOptions, token: Token, log) -> NodeResult:
    """Validate one node in this (worker) thread and write its bundle; never raises."""
    from .pipeline import RunOptions, run_live
    from .report.bundle import write_bundle
    from .results import outcome
    from .serving.environment import environment

    t0 = time.monotonic()
    out = opts.out / "nodes" / bundle_dir_name(target.id)
    res = NodeResult(target, "ERROR", 2, started=True)
    interrupts.bind(token)
    try:
        run = run_live(RunOptions(
            url=target.url, reference=reference, api=target.api, model=None, batch_size=opts.batch_size,
            stat=opts.stat, timeout_s=opts.timeout_s, connect_grace_s=opts.connect_grace_s,
            profile=target.profile or opts.profile, throughput=opts.throughput, skip_download=True,
            skip_deploy=True, progress=False, in_flight=opts.in_flight, fresh=opts.fresh), log=log)  # fmt: skip
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
    try:
        run.environment = environment(run)
        write_bundle(out, run)
        res.bundle = out
    except OSError as e:
        res.error = f"could not write the bundle to {out}: {e.strerror or e}"
    o = outcome(run)
    res.verdict, res.exit_code = o.verdict, o.exit_code
    res.error = res.error or run.error or run.engine.get("error")
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

    @property
    def exit_code(self) -> int:
        return fleet_exit_code(self.results)


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
    say = _Printer(echo)
    opts.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
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

    def worker(i: int, t: NodeTarget, ref: str) -> None:
        try:
            with slots:
                with lock:
                    if stop_all.is_set():
                        return  # recorded by the main thread
                    results[i] = NodeResult(t, "ERROR", 2, started=True)  # placeholder while it runs
                say(f"[{t.id}] validating {t.url} ({t.api} API)")
                r = run_node(t, ref, opts, tokens[i], say.for_node(t.id))
                with lock:
                    results[i] = r
                say(f"[{t.id}] {r.verdict} in {r.wall_s:.1f} s" + (f" — {r.error}" if r.error else ""))
        finally:
            with lock:
                finished.add(i)

    interrupted: str | None = None
    for i, t, ref in plan:
        threading.Thread(target=worker, args=(i, t, ref), name=f"fleet-{t.id}", daemon=True).start()
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
                say(f"interrupted by {sig}: stopping every node's run; each bundle is still written")
                with lock:
                    stop_all.set()
                    for i, _t, _ref in plan:
                        tokens[i].request(sig)
            else:
                say("still stopping the nodes (each within its own deadline)")
    for i, t, ref in plan:
        if i not in results:  # never started: the fleet was interrupted first
            reason = f"not started: the fleet was interrupted by {interrupted}"
            r = NodeResult(t, "ERROR", 2, error=reason, interrupted=interrupted)
            try:
                from .report.bundle import write_bundle
                from .serving.environment import environment

                run = not_started_run(t, ref, opts, reason)
                run.environment = environment(run)
                r.bundle = write_bundle(opts.out / "nodes" / bundle_dir_name(t.id), run)
            except (MlvalidateError, OSError) as e:
                r.error += f" (no bundle: {e})"
            results[i] = r
    ordered = [results[i] for i in range(len(targets))]
    return FleetResult(ordered, time.monotonic() - t0, interrupted)
