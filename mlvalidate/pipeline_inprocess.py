"""`mlvalidate run`: the same pipeline with stock vLLM started in this process
(engines/vllm_inprocess.py): plan, start, validate, throughput, on `pipeline.Runner`."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from .artifacts import load_reference, resolve_stat_test
from .errors import MlvalidateError
from .pipeline import Runner, StatOverrides, new_run, throughput_status, validate_phase
from .results import PhaseStatus, RateStats, RunRecord, ThroughputPhase, ThroughputSummary
from .throughput import set_profile_reference


@dataclass(frozen=True)
class InprocessOptions:
    """Everything `run` is asked to do."""

    profile: str  # a profile name or a profile YAML path
    model_dir: str
    reference: str | None = None  # a reference file or model id; None: the profile's model id
    batch_size: int = 32
    stat: StatOverrides = field(default_factory=StatOverrides)
    throughput: bool = True
    warmup_rounds: int = 1
    measure_s: float = 60.0
    min_rounds: int = 3
    progress: bool = True
    fresh: object = None  # fresh.FreshPlan: --fresh N after the validation
    nvml: str | None = None  # --nvml: which of this host's GPUs the window's energy reads (None: every one)


def run_inprocess(opts: InprocessOptions, log=print) -> RunRecord:
    """Validate a deployment by running stock vLLM in this process with the profile's engine
    args: [start] vLLM, [validate] every reference nonce computed inside vLLM's model runner and
    compared here, [throughput] steady nonces/s at the profile's batch. Returns the record
    however the run ended (errors of the inputs, before anything ran, raise instead)."""
    from .report.text import stat_test_line
    from .serving.profiles import load_profile
    from .serving.vllm_flags import parallel_layout

    prof = load_profile(opts.profile)
    ref_arg = opts.reference or prof.model_id
    if not ref_arg:
        raise MlvalidateError(f"profile {prof.name} names no model, so no reference can be looked up",
                              "pass --reference FILE")
    ref = load_reference(ref_arg)
    st = resolve_stat_test(ref, opts.stat.as_dict())
    from .poc.stats import load_binomial_test

    load_binomial_test()  # before the run, not at its verdict (poc.stats.load_binomial_test)
    args = prof.vllm_args()
    from .engines.vllm_inprocess import POC_ENGINE_SETTINGS, vllm_version

    inputs = {"model_dir": opts.model_dir, "reference": str(ref.path), "batch_size": opts.batch_size,
              "profile": prof.name, "throughput_batch_size": prof.effective_batch() if opts.throughput else None}
    inputs = {k: {"value": v, "source": "cli"} for k, v in inputs.items()}
    inputs["profile"]["source"] = str(prof.path) if prof.path else "cli"
    inputs["vllm_args"] = {"value": args, "source": f"profile {prof.name} (config show --format args)"}
    inputs["env"] = {"value": dict(prof.env), "source": f"profile {prof.name}"}
    inputs["poc_engine_settings"] = {"value": dict(POC_ENGINE_SETTINGS), "source": "engines/vllm_inprocess.py"}
    inputs["stat_test"] = st.as_dict()
    if opts.nvml is not None:
        inputs["nvml"] = {"value": opts.nvml, "source": "cli"}

    class _Pending:  # describe() before the engine exists (a start that fails still writes a bundle)
        name = "vllm-inprocess"

        def describe(self):
            return {"engine": self.name, "model": ref.model, "model_dir": opts.model_dir, "vllm": vllm_version(),
                    "vllm_args": args}

    run = new_run("run", ref, st, _Pending(), opts.batch_size, inputs, prof)
    order = ("plan", "start", "validate", *(("fresh",) if opts.fresh else ()),
             *(("throughput",) if opts.throughput else ()))
    r = Runner(run, order, log)
    r.header("plan", f"{ref.n} reference nonces of {ref.model} from {ref.label()}, batch size {opts.batch_size}, "
                     f"profile {prof.name}, stock vLLM {vllm_version()} in this process")
    if ref.found is not None and ref.found.choice_line():
        log(f"      {ref.found.choice_line()}")
    log(f"      stat test {stat_test_line(st)}")
    log(f"      vLLM args [{prof.name}]: {' '.join(args) or '(none)'}")
    log(f"      layout [{prof.name}]: {parallel_layout(args, prof.env)}")
    if prof.env:
        log(f"      env [{prof.name}]: {' '.join(f'{k}={v}' for k, v in prof.env.items())}")
    if prof.model_id and prof.model_id != ref.model:
        log(f"      warning: profile {prof.name} is for {prof.model_id}, the reference for {ref.model}")
    holder: dict = {}

    def start():
        from .engines.vllm_inprocess import VllmInProcessEngine

        eng = VllmInProcessEngine(opts.model_dir, args, env=prof.env, model_id=ref.model, log=log)
        holder["engine"] = eng
        run.engine = eng.describe()
        if eng.overridden:
            log(f"      the PoC settings override {eng.overridden}")
        if eng.serve_only:
            log(f"      not used in process (read by vLLM's HTTP server only): {' '.join(eng.serve_only)}")
        d = run.engine
        layout = (f"tensor {d['tensor_parallel_size']} x pipeline {d['pipeline_parallel_size']}, {eng.workers} "
                  f"worker(s), executor {d['distributed_executor_backend'] or 'uni'}")
        return PhaseStatus.OK, f"vLLM {eng.version} up in {eng.start_seconds:.1f} s ({layout})", {
            "start_seconds": round(eng.start_seconds, 3), "overridden": {k: str(v) for k, v in eng.overridden.items()}}

    def validate():
        return validate_phase(run, holder["engine"], progress=opts.progress)

    def throughput():
        from .serving.energy import energy_plan

        batch = prof.effective_batch()
        run.throughput = inprocess_throughput(holder["engine"], ref, prof, batch, warmup_rounds=opts.warmup_rounds,
                                              measure_s=opts.measure_s, min_rounds=opts.min_rounds, log=log,
                                              energy=energy_plan(None, opts.nvml))
        return throughput_status(run.throughput)

    try:
        r.phase("start", f"vLLM in this process on {opts.model_dir}", start)
        r.phase("validate", f"every reference nonce inside vLLM's model runner (chunks of {opts.batch_size}); "
                            "comparing here", validate)
        if opts.fresh:
            from .fresh import fresh_phase

            r.phase("fresh", opts.fresh.header(opts.batch_size),
                    lambda: fresh_phase(run, holder["engine"], opts.fresh, progress=opts.progress, log=log))
        if opts.throughput:
            r.phase("throughput", f"steady rate at the profile's batch {prof.effective_batch()}", throughput)
    finally:
        eng = holder.get("engine")
        if eng is not None:
            eng.close()
            if run.engine is not None:  # what the close removed from /dev/shm (vLLM's workers' queues)
                run.engine["shm_removed"] = list(eng.shm_removed)
    return run


# ----------------------------------------------------------------------------------------
# its throughput: no node loop to sample, batches timed here
# ----------------------------------------------------------------------------------------
THROUGHPUT_NONCE_BASE = 1_000_000_000  # throughput rounds use nonces no reference holds


def inprocess_throughput(engine, ref, prof, batch: int, *, warmup_rounds: int, measure_s: float,
                         min_rounds: int, log, energy=None) -> ThroughputPhase:
    """Steady-state nonces/s of an in-process engine at `batch`: `warmup_rounds` computes of one
    batch each are thrown away, then batches are computed until `measure_s` has passed (at least
    `min_rounds`). `energy` (a serving/energy.EnergyPlan): NVML over the timed rounds, their
    nonces the energy's count."""
    from .engines.base import PocParams
    from .serving.energy import WindowMeter, sample_interval

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
    meter = WindowMeter(energy, interval_s=sample_interval(measure_s)) if energy is not None else None
    try:
        if meter is not None:
            meter.begin()
        t1 = time.perf_counter()
        while len(rounds) < min_rounds or time.perf_counter() - t1 < measure_s:
            s, info = one_round()
            rounds.append(s)
            infos.append(info)
        if meter is not None:
            meter.end()
    finally:
        if meter is not None:
            meter.close()  # the sampler thread never outlives the window (Ctrl-C, an engine error)
    rates = [batch / s for s in rounds if s > 0]
    steady = batch * len(rounds) / sum(rounds) if sum(rounds) > 0 else None
    fwd = sum(i.get("vllm_forward_s", 0.0) for i in infos)
    summary = ThroughputSummary(
        api=getattr(engine, "name", "in-process"), n_samples=len(rounds), warmup_s=warm, batch_size=batch,
        n_replicas=1,
        rates=RateStats(steady=steady, min=min(rates) if rates else None,
                        median=statistics.median(rates) if rates else None, max=max(rates) if rates else None),
        outside_forward_share=round(1 - fwd / sum(rounds), 4) if sum(rounds) > 0 and fwd else None,
        method="timed rounds", window_s=round(sum(rounds), 3))  # fmt: skip
    out = ThroughputPhase(summary=summary,
                          samples=[{"round": i, "seconds": s, "nonces": batch} for i, s in enumerate(rounds)],
                          spot_check="not needed: every vector is computed in this process and compared here")
    if meter is not None:
        out.energy = meter.result(rate=steady, nonces=batch * len(rounds))
    set_profile_reference(out, prof)
    log(f"      {steady:.2f} nonces/s over {len(rounds)} batches of {batch} after {warm:.1f} s warm-up"
        if steady is not None else "      no steady rate")
    return out
