"""The one run pipeline: typed phases, one runner, one record.

A run is a list of phases run in order by `Runner`: a phase that fails ends the run (the rest
is "not run"), Ctrl-C and SIGTERM end it the same way (the node's generation is stopped on the
way out), and the `RunRecord` carries the reason. What the pipeline runs:

  live node, vLLM PoC API   plan, [throughput], validate           (+ --server-side, readiness)
  live node, MLNode API     plan, download, deploy, throughput, validate   (each skippable)
  in-process engine         validate                               (the demo)
  stock vLLM in process     plan, start, validate, [throughput]    (`run`: pipeline_inprocess.py)

The vLLM-API run is the MLNode run without download and deploy. `--timeout` bounds every
phase: the validation's fetches and retries together, the throughput phase beyond its warm-up
and measuring window, each request within them.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import numpy as np

from . import interrupts
from .artifacts import Reference, ResolvedStatTest, load_reference, resolve_stat_test
from .engines.base import Engine, PocParams
from .engines.poc_http import DEFAULT_IN_FLIGHT
from .errors import EngineError, Interrupted, MlvalidateError
from .poc.stats import compare_intake, compare_vectors
from .progress import Progress
from .results import Phase, PhaseStatus, RunRecord, SpotVerdict, ThroughputPhase, outcome
from .serving.energy import EnergyPlan, energy_plan


@dataclass(frozen=True)
class StatOverrides:
    dist_threshold: float | None = None
    p_mismatch: float | None = None
    fraud_threshold: float | None = None

    def as_dict(self) -> dict:
        return {"dist_threshold": self.dist_threshold, "p_mismatch": self.p_mismatch,
                "fraud_threshold": self.fraud_threshold}


@dataclass(frozen=True)
class ThroughputOptions:
    batch_size: int
    warmup_s: float = 30.0
    measure_s: float = 60.0
    sample_interval_s: float = 10.0
    callback_host: str | None = "127.0.0.1"


@dataclass(frozen=True)
class RunOptions:
    """Everything `validate` is asked to do."""

    url: str
    reference: str  # a reference file, or a model id looked up in artifacts/
    api: str = "vllm"  # "vllm" (a Gonka vLLM node) | "mlnode" (a host's MLNode API)
    model: str | None = None  # the model the reference must be for
    batch_size: int = 32
    stat: StatOverrides = field(default_factory=StatOverrides)
    timeout_s: float = 300.0
    connect_grace_s: float = 30.0
    profile: str | None = None
    throughput: ThroughputOptions | None = None  # None: no throughput phase
    server_side: bool = False
    chain_node: str | None = None
    skip_download: bool = False
    skip_deploy: bool = False
    skip_validate: bool = False
    download_timeout_s: float = 7200.0
    deploy_timeout_s: float = 1800.0
    dtype: str = "auto"
    progress: bool = True
    in_flight: int = DEFAULT_IN_FLIGHT  # queued /generate chunks at a time; 0: one wait=true request at a time
    stop_on_exit: bool = False  # POST /pow/stop when the fetch ends early with chunks still queued on the node
    fresh: object = None  # fresh.FreshPlan: --fresh N, a challenge the harness draws, after the validation
    gpus: str | None = None  # --gpus "H100 x4": the operator's word for the node's GPUs (serving/node_hardware.py)
    gpus_source: str = "cli"  # where `gpus` came from ("cli", or a fleet entry's field)
    mlnode_url: str | None = None  # a host's MLNode API whose GPU routes describe the node (--api mlnode: the URL)
    energy: EnergyPlan | None = None  # whose GPUs NVML reads in the window (None: decided by the node's URL)


# ----------------------------------------------------------------------------------------
# the runner
# ----------------------------------------------------------------------------------------
def interrupt_text(e: BaseException) -> str:
    sig = e.signal_name if isinstance(e, Interrupted) else "SIGINT (Ctrl-C)"
    return f"interrupted by {sig}: the run is incomplete"


class Runner:
    """Runs the phases of one run in order. A phase is a callable returning
    (status, detail, data); MlvalidateError or an interrupt ends the run with a one-line reason
    in `run.error`, and later phases are recorded as not run."""

    def __init__(self, run: RunRecord, order: tuple[str, ...], log=print):
        self.run, self.order = run, order
        self.log = log or (lambda msg: None)
        self.stopped: str | None = None

    def header(self, name: str, text: str) -> None:
        self.log(f"[{self.order.index(name) + 1}/{len(self.order)}] {name}: {text}")

    def skip(self, name: str, why: str) -> None:
        if self.stopped:
            return self._record(name, PhaseStatus.NOT_RUN, None, self.stopped)
        self.header(name, f"skipped ({why})")
        self._record(name, PhaseStatus.SKIPPED, None, why)

    def phase(self, name: str, text: str, fn) -> bool:
        """Run one phase; True if it ran to its end (whatever its verdict)."""
        if self.stopped:
            self._record(name, PhaseStatus.NOT_RUN, None, self.stopped)
            return False
        self.header(name, text)
        t0 = time.perf_counter()
        data: dict = {}
        try:
            status, detail, data = fn()
        except MlvalidateError as e:
            status, detail = PhaseStatus.ERROR, e.one_line()
            self.log(f"      {name} failed: {detail}")
            self.fail(f"{name}: {detail}", "an earlier phase failed")
        except KeyboardInterrupt as e:
            status, detail = PhaseStatus.ERROR, interrupt_text(e)
            self.log(f"\n      {name}: {detail}")
            self.fail(f"{name}: {detail}", detail)
        except Exception as e:  # a bug in mlvalidate: the run still ends with its bundle, exit 2
            status = PhaseStatus.ERROR
            detail = f"internal error: {type(e).__name__}: {' '.join(str(e).split())[:200]} (a bug in mlvalidate)"
            self.log(f"      {name} failed: {detail}")
            self.fail(f"{name}: {detail}", "an earlier phase failed")
        self._record(name, status, round(time.perf_counter() - t0, 3), detail, data)
        return status is not PhaseStatus.ERROR

    def step(self, what: str, fn) -> None:
        """A step that is not a phase (the node's own verdict, readiness): only an interrupt ends the run."""
        if self.stopped:
            return
        try:
            fn()
        except KeyboardInterrupt as e:
            self.fail(f"{what}: {interrupt_text(e)}", interrupt_text(e))

    @contextlib.contextmanager
    def guard(self):
        """Around the phases: an interrupt between two phases ends the run as one inside a
        phase does, and a bug outside every phase still leaves the record (and so the bundle)."""
        try:
            yield
        except KeyboardInterrupt as e:
            self.log(f"\n      {interrupt_text(e)}")
            self.fail(interrupt_text(e), interrupt_text(e))
        except MlvalidateError as e:
            self.fail(e.one_line(), "an earlier step failed")
        except Exception as e:  # noqa: BLE001 — a bug in mlvalidate: the run still ends with its bundle, exit 2
            self.fail(f"internal error: {type(e).__name__}: {' '.join(str(e).split())[:200]} (a bug in mlvalidate)",
                      "an earlier step failed")

    def fail(self, reason: str, later: str) -> None:
        self.run.error = self.run.error or reason
        self.stopped = self.stopped or later

    def _record(self, name, status, elapsed_s, detail, data=None) -> None:
        self.run.phases.append(Phase(name, status, elapsed_s, detail, dict(data or {})))


def new_run(name: str, ref: Reference, st: ResolvedStatTest, engine, batch_size: int, inputs: dict,
            profile=None) -> RunRecord:
    import datetime as _dt

    return RunRecord(name=name, reference=ref, stat_test=st, comparison=None, engine=engine.describe(),
                     computed_nonces=np.zeros(0, np.int64), computed_vectors=np.zeros((0, ref.k_dim), np.float16),
                     batch_size=batch_size, elapsed_s=0.0, inputs=inputs, profile=profile,
                     started_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))


@contextlib.contextmanager
def _deadline(engine, seconds: float | None):
    """Bound an HTTP engine's requests to `seconds` from now (an in-process engine has none)."""
    http = getattr(engine, "http", None)
    if http is None or seconds is None:
        yield
        return
    http.until = time.monotonic() + seconds
    try:
        yield
    finally:
        http.until = None


def validate_phase(run: RunRecord, engine: Engine, *, progress: bool = True):
    """Fetch and compare every reference nonce; fold the result into `run`. The engine's
    answers go through the intake rule when it reports one (systems under test). A live run
    bounds it with `_deadline`."""
    ref, st = run.reference, run.stat_test
    from .serving.environment import nvml_sample

    start = nvml_sample("validate start")  # clocks and power while measuring (environment.json)
    res = engine.compute(ref.nonces.tolist(), PocParams.from_reference(ref), batch_size=run.batch_size,
                         progress=Progress(run.name) if progress else None)
    run.nvml_samples += [start, nvml_sample("validate end")]
    if res.intake is not None:
        comp = compare_intake(ref.nonces, ref.vectors, res.intake, st.values)
    else:
        comp = compare_vectors(ref.nonces, ref.vectors, res.nonces, res.vectors, st.values)
    run.comparison = comp
    run.engine = {k: v for k, v in res.info.items() if not k.endswith("_s")}
    run.computed_nonces, run.computed_vectors = res.nonces, res.vectors
    run.elapsed_s = res.elapsed_s
    run.timing = {"batch_seconds": res.batch_seconds, **{k: v for k, v in res.info.items() if k.endswith("_s")}}
    detail = f"{comp.n_mismatch}/{comp.n_total} mismatches"
    if res.info.get("error"):
        detail += f"; node error: {res.info['error']}"
    if res.info.get("interrupted"):  # the vectors that came back are kept; the run ends here
        raise Interrupted(res.info["interrupted"])
    return PhaseStatus(comp.verdict.value), detail, {}


# ----------------------------------------------------------------------------------------
# a live node
# ----------------------------------------------------------------------------------------
def load_inputs(opts: RunOptions):
    from .poc.stats import load_binomial_test

    ref = load_reference(opts.reference, model=opts.model)
    st = resolve_stat_test(ref, opts.stat.as_dict())
    load_binomial_test()  # here, not at the verdict: a signal while it imports is held (see run_validate)
    prof = None
    if opts.profile:
        from .serving.profiles import load_profile

        prof = load_profile(opts.profile)
    return ref, st, prof


def _model_check(engine, run: RunRecord, log, mlnode_url: str | None = None):
    """A callable that checks the served model against the reference's once, before the first
    PoC request (GET /v1/models; a node that does not list its models is let through), and
    records what the node says of itself: its versions where it answers them (newer Gonka
    builds) and, with an MLNode API at `mlnode_url`, its GPU routes (serving/node_hardware.py)."""
    done = []

    def check() -> None:
        if not done:
            served = engine.check_model()
            log(f"      the node serves {', '.join(served)}" if served else
                "      the node does not list its models: not checked before the run")
            versions = engine.versions()
            if versions:
                run.node_versions = versions
                log(f"      the node's versions: {versions}")
            run.node_facts = {}
            if mlnode_url:
                from .engines.mlnode_api import gpu_answers

                run.node_facts["mlnode"] = gpu_answers(mlnode_url, min(10.0, engine.http.deadline_s))
            done.append(True)

    return check


def run_live(opts: RunOptions, log=print) -> RunRecord:
    """Validate a live node as `opts` says; returns the record however the run ended (errors
    of the inputs, before anything ran, raise instead)."""
    from .engines.mlnode_api import MlnodeApiEngine
    from .engines.vllm_api import VllmPocApiEngine
    from .mlnode import deploy_args, ensure_deployed, ensure_downloaded, model_source, stronger_rng_caveats
    from .report.text import stat_test_line
    from .throughput import throughput_phase

    with interrupts.held() as starting:  # the inputs load whole; a signal meanwhile ends the run right after
        ref, st, prof = load_inputs(opts)
        mlnode = opts.api == "mlnode"
        engine = (MlnodeApiEngine if mlnode else VllmPocApiEngine)(opts.url, ref.model, deadline_s=opts.timeout_s,
                                                                   in_flight=opts.in_flight, log=log)
        engine.stop_on_exit = opts.stop_on_exit
        engine.http.connect_grace_s = opts.connect_grace_s
        inputs = {"url": opts.url, "api": opts.api, "reference": str(ref.path), "batch_size": opts.batch_size, "in_flight":
                  opts.in_flight, "stop_on_exit": opts.stop_on_exit, "profile": prof and prof.name, "timeout_s": opts.timeout_s}
        inputs = {k: {"value": v, "source": "cli"} for k, v in inputs.items()}
        if opts.gpus is not None:
            inputs["gpus"] = {"value": opts.gpus, "source": opts.gpus_source}
        if opts.energy is not None and opts.energy.option is not None:  # --nvml: the node's GPUs on this host
            inputs["nvml"] = {"value": opts.energy.option, "source": "cli"}
        inputs["stat_test"] = st.as_dict()
        if mlnode:
            hf_repo, hf_commit, repo_source = model_source(ref, prof)
            args, args_source = deploy_args(ref, prof, hf_commit)
            skipped = [n for n, on in (("download", opts.skip_download), ("deploy", opts.skip_deploy),
                                       ("throughput", opts.throughput is None), ("validate", opts.skip_validate)) if on]
            inputs.update({
                "hf_repo": {"value": hf_repo, "source": repo_source}, "hf_commit": {"value": hf_commit, "source": repo_source},
                "deploy": {"value": {"model": ref.model, "dtype": opts.dtype, "additional_args": args}, "source": args_source},
                "skipped": {"value": skipped, "source": "cli"},
                "download_timeout_s": {"value": opts.download_timeout_s, "source": "cli"},
                "deploy_timeout_s": {"value": opts.deploy_timeout_s, "source": "cli"},
            })  # fmt: skip
            order = ("plan", "download", "deploy", "throughput", "validate")
        else:
            order = ("plan", *(("throughput",) if opts.throughput is not None else ()), "validate")
        order += ("fresh",) if opts.fresh is not None else ()
        run = new_run("validate", ref, st, engine, opts.batch_size, inputs, prof)
        r = Runner(run, order, log)
    if starting.signal:
        r.fail(f"start-up: interrupted by {starting.signal}: the run is incomplete",
               f"interrupted by {starting.signal}: the run is incomplete")
    with r.guard():  # an interrupt between phases, or a bug outside them, still ends with the record
        r.header("plan", f"{ref.n} reference nonces of {ref.model} from {ref.label()}, batch size {opts.batch_size}"
                 + (", MLNode API at " + opts.url if mlnode else "") + (f", profile {prof.name}" if prof else ""))
        if ref.found is not None and ref.found.choice_line():
            log(f"      {ref.found.choice_line()}")
        log(f"      stat test {stat_test_line(st)}")
        if mlnode:
            log(f"      weights {hf_repo}" + (f"@{hf_commit}" if hf_commit else "") + f" [{repo_source}]")
            log(f"      deploy args [{args_source}]: {' '.join(args) or '(none)'}")
            if prof is not None and prof.model_id and prof.model_id != ref.model:
                log(f"      warning: profile {prof.name} is for {prof.model_id}, the reference for {ref.model}")
        check_model = _model_check(engine, run, log, opts.url if mlnode else opts.mlnode_url)

        def download():
            d = ensure_downloaded(engine.http, hf_repo, hf_commit, timeout_s=opts.download_timeout_s, log=log)
            return PhaseStatus.OK, d["action"], {**d, "hf_repo": hf_repo, "hf_commit": hf_commit}

        def deploy():
            d = ensure_deployed(engine.http, ref.model, dtype=opts.dtype, additional_args=args,
                                timeout_s=opts.deploy_timeout_s, log=log)
            detail = d["action"] + ("" if d["args_applied"] else " (deploy args NOT applied)")
            return PhaseStatus.OK, detail, {**d, "dtype": opts.dtype, "additional_args": args, "args_source": args_source}

        def throughput():
            from .serving.environment import nvml_sample

            with _deadline(engine, opts.timeout_s):
                check_model()
            run.nvml_samples.append(nvml_sample("throughput start"))
            run.throughput = throughput_phase(engine, ref, st, prof, opts.throughput, deadline_s=opts.timeout_s, log=log,
                                              energy=opts.energy or energy_plan(opts.url, None))
            return throughput_status(run.throughput)

        def validate():
            with _deadline(engine, opts.timeout_s):  # the model check and every fetch, retries included
                check_model()
                return validate_phase(run, engine, progress=opts.progress)

        if mlnode:
            for name, text, fn, skip in (
                ("download", f"{hf_repo}" + (f"@{hf_commit}" if hf_commit else "") + " on the node", download,
                 opts.skip_download),
                ("deploy", f"{ref.model} (dtype {opts.dtype})", deploy, opts.skip_deploy),
            ):
                if skip:
                    r.skip(name, f"--skip-{name}")
                else:
                    r.phase(name, text, fn)
        if opts.throughput is not None:
            what = "every replica's generation loop" if mlnode else "the node's generation loop"
            r.phase("throughput", f"{what} at batch {opts.throughput.batch_size}", throughput)
        elif mlnode:
            r.skip("throughput", "--skip-throughput")
        if opts.skip_validate:
            if not r.stopped:
                log("      (--skip-validate: no vector is compared, so there is no verdict)")
            r.skip("validate", "--skip-validate")
        else:
            how = "requests" if mlnode else "chunks"
            how = (f"{how} of {opts.batch_size}, {opts.in_flight} queued at a time" if opts.in_flight
                   else f"wait=true, {how} of {opts.batch_size}")
            r.phase("validate", f"fetching vectors {'through' if mlnode else 'from'} {opts.url} ({how}); comparing locally",
                    validate)
        if opts.fresh is not None:
            from .fresh import fresh_phase

            def fresh():  # the same engine, queue and deadline as the validation
                with _deadline(engine, opts.timeout_s):
                    return fresh_phase(run, engine, opts.fresh, progress=opts.progress, log=log)

            r.phase("fresh", opts.fresh.header(opts.batch_size), fresh)
        if opts.server_side:
            r.step("--server-side", lambda: _ask_node(run, engine, opts, log))
        if opts.chain_node:
            from .chain import chain_readiness

            r.step("readiness", lambda: setattr(run, "readiness", chain_readiness(opts.chain_node, ref.model, log=log,
                                                                                       timeout_s=opts.timeout_s)))
    if mlnode:
        run.caveats += stronger_rng_caveats(ref, outcome(run).verdict)
    return run


def throughput_status(tp: ThroughputPhase) -> tuple[PhaseStatus, str, dict]:
    s = tp.summary
    rate = s.steady_nonces_per_second
    status = {SpotVerdict.FAIL: PhaseStatus.FAIL, SpotVerdict.INCOMPLETE: PhaseStatus.INCOMPLETE}.get(
        tp.spot_verdict, PhaseStatus.OK)
    detail = ((f"{rate:.2f} nonces/s" if rate is not None else "no steady rate")
              + (f" summed over {s.n_replicas} replica(s)" if s.api == "mlnode" else "")
              + f"; {tp.spot_check}")
    return status, detail, {}


def _ask_node(run: RunRecord, engine, opts: RunOptions, log) -> None:
    """--server-side: the node's own verdict on the reference, shown next to ours (never trusted)."""
    log("      --server-side: asking the node to validate the reference itself, for comparison")
    ref = run.reference
    with _deadline(engine, opts.timeout_s):
        try:
            run.node_verdict = engine.node_verdict(ref.nonces.tolist(), ref.vectors_b64, PocParams.from_reference(ref),
                                                   opts.batch_size, run.stat_test.values.as_dict())
        except EngineError as e:
            run.node_verdict = {"error": e.one_line()}


# ----------------------------------------------------------------------------------------
# stock vLLM, in this process (`mlvalidate run`)
