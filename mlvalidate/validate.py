"""Validation of one system under test against one golden reference.

The engine is asked for every reference nonce (in the reference's order, in chunks of the
batch size); what comes back goes through the intake rule (poc/intake.py) and is compared in
one batched operation. The harness never trusts an engine's own verdict, and a nonce with no
usable vector is a mismatch.

A live run is a list of phases run by one `_Runner`: a phase that fails ends the run (the
rest is "not run"), Ctrl-C and SIGTERM end it the same way (the node's generation is stopped
on the way out), and the bundle — with its verdict and the reason — is written however the
run ends. `--timeout` bounds every phase: the validation's fetches and retries together, the
throughput phase beyond its warm-up and measuring window, each request within them.
"""

from __future__ import annotations

import time

import numpy as np

from .artifacts import Reference, ResolvedStatTest
from .engines.base import Engine, PocParams
from .errors import EngineError, Interrupted, MlvalidateError
from .poc.stats import compare_intake, compare_vectors
from .progress import Progress
from .report.bundle import RunRecord, nvml_sample


def run_validation(
    engine: Engine,
    ref: Reference,
    stat_test: ResolvedStatTest,
    *,
    batch_size: int,
    name: str,
    inputs: dict | None = None,
    progress: bool = True,
) -> RunRecord:
    params = PocParams.from_reference(ref)
    start = nvml_sample("validate start")  # clocks and power while measuring (environment.json)
    t0 = time.perf_counter()
    res = engine.compute(ref.nonces.tolist(), params, batch_size=batch_size,
                         progress=Progress(name) if progress else None)
    compute_s = time.perf_counter() - t0
    end = nvml_sample("validate end")
    if res.intake is not None:  # answers of a system under test: conflicts, malformed entries, unrequested nonces
        comp = compare_intake(ref.nonces, ref.vectors, res.intake, stat_test.values)
    else:
        comp = compare_vectors(ref.nonces, ref.vectors, res.nonces, res.vectors, stat_test.values)
    timing = {k: v for k, v in res.info.items() if k.endswith("_s")}
    return RunRecord(
        name=name,
        reference=ref,
        stat_test=stat_test,
        comparison=comp,
        engine={k: v for k, v in res.info.items() if not k.endswith("_s")},
        computed_nonces=res.nonces,
        computed_vectors=res.vectors,
        batch_size=batch_size,
        elapsed_s=res.elapsed_s,
        inputs=inputs or {},
        phases=[{"name": "validate", "status": comp.verdict.value, "elapsed_s": round(compute_s, 3),
                 "detail": f"{comp.n_mismatch}/{comp.n_total} mismatches"}],
        timing={"batch_seconds": res.batch_seconds, **timing},
        nvml_samples=[start, end],
    )


# ----------------------------------------------------------------------------------------
# the phase runner
# ----------------------------------------------------------------------------------------
class _Runner:
    """Runs the phases of one live run in order. A phase is a callable returning its bundle
    entry ({"status", "detail", ...}); MlvalidateError or an interrupt ends the run with a
    one-line reason in `run.error`, and later phases are recorded as not run."""

    def __init__(self, run: RunRecord, order: tuple[str, ...]):
        self.run, self.order = run, order
        self.stopped: str | None = None

    def header(self, name: str, text: str) -> None:
        print(f"[{self.order.index(name) + 1}/{len(self.order)}] {name}: {text}", flush=True)

    def skip(self, name: str, why: str) -> None:
        if self.stopped:
            return self._not_run(name)
        self.header(name, f"skipped ({why})")
        self.run.phases.append({"name": name, "status": "skipped", "elapsed_s": None, "detail": why})

    def _not_run(self, name: str) -> None:
        self.run.phases.append({"name": name, "status": "not run", "elapsed_s": None, "detail": self.stopped})

    def phase(self, name: str, text: str, fn) -> bool:
        """Run one phase; True if it ran to the end (whatever its verdict)."""
        if self.stopped:
            self._not_run(name)
            return False
        self.header(name, text)
        t0 = time.perf_counter()
        try:
            entry = fn()
        except MlvalidateError as e:
            entry = {"status": "error", "detail": e.one_line()}
            print(f"      {name} failed: {e.one_line()}", flush=True)
            self.fail(f"{name}: {e.one_line()}", "an earlier phase failed")
        except KeyboardInterrupt as e:
            what = interrupt_text(e)
            entry = {"status": "error", "detail": what}
            print(f"\n      {name}: {what}", flush=True)
            self.fail(f"{name}: {what}", what)
        self.run.phases.append({"name": name, "elapsed_s": round(time.perf_counter() - t0, 3), **entry})
        return entry["status"] != "error"

    def step(self, what: str, fn) -> None:
        """A step that is not a phase (the node's own verdict, readiness): only an interrupt ends the run."""
        if self.stopped:
            return
        try:
            fn()
        except KeyboardInterrupt as e:
            self.fail(f"{what}: {interrupt_text(e)}", interrupt_text(e))

    def fail(self, reason: str, later: str) -> None:
        self.run.error = self.run.error or reason
        self.stopped = self.stopped or later


def interrupt_text(e: BaseException) -> str:
    sig = e.signal_name if isinstance(e, Interrupted) else "SIGINT (Ctrl-C)"
    return f"interrupted by {sig}: the run is incomplete"


def _empty_run(ref: Reference, st: ResolvedStatTest, engine, batch_size: int, inputs: dict, prof) -> RunRecord:
    return RunRecord(name="validate", reference=ref, stat_test=st, comparison=None, engine=engine.describe(),
                     computed_nonces=np.zeros(0, np.int64), computed_vectors=np.zeros((0, ref.k_dim), np.float16),
                     batch_size=batch_size, elapsed_s=0.0, inputs=inputs, profile=prof)


def _validate_phase(run: RunRecord, engine, ref, st, batch_size: int, deadline_s: float, progress: bool) -> dict:
    """Fetch and compare every reference nonce within deadline_s; fold the result into `run`."""
    engine.http.until = time.monotonic() + deadline_s
    try:
        got = run_validation(engine, ref, st, batch_size=batch_size, name="validate", progress=progress,
                             inputs=run.inputs)
    finally:
        engine.http.until = None
    run.comparison, run.engine = got.comparison, got.engine
    run.computed_nonces, run.computed_vectors = got.computed_nonces, got.computed_vectors
    run.elapsed_s, run.timing = got.elapsed_s, got.timing
    run.nvml_samples += got.nvml_samples
    entry = got.phases[-1]
    if got.engine.get("error"):
        entry["detail"] += f"; node error: {got.engine['error']}"
    if got.engine.get("interrupted"):  # the vectors that came back are kept; the run ends here
        raise Interrupted(got.engine["interrupted"])
    return {k: v for k, v in entry.items() if k != "name"}


def _model_check(engine):
    """A callable that checks the served model against the reference's once, before the first
    PoC request (GET /v1/models; a node that does not list its models is let through)."""
    done = []

    def check() -> None:
        if not done:
            served = engine.check_model()
            print(f"      the node serves {', '.join(served)}" if served else
                  "      the node does not list its models: not checked before the run", flush=True)
            done.append(True)

    return check


def _throughput_entry(tp: dict) -> dict:
    s = tp["summary"]
    rate = s["steady_nonces_per_second"]
    spot = tp["spot_verdict"]
    return {"status": "FAIL" if spot == "FAIL" else ("INCOMPLETE" if spot == "INCOMPLETE" else "OK"),
            "detail": (f"{rate:.2f} nonces/s" if rate is not None else "no steady rate")
            + (f" summed over {s['n_replicas']} replica(s)" if s.get("api") == "mlnode" else "")
            + f"; {tp['spot_check']}"}


def _finish(run: RunRecord, out_dir, junit=None) -> int:
    """Write the bundle (and JUnit XML if asked), print the report (its first line is the
    verdict), return the exit code."""
    import datetime as _dt
    import sys
    from pathlib import Path

    from .report.bundle import overall_verdict, report_text, write_bundle

    verdict, _text, code = overall_verdict(run)
    out = Path(out_dir) if out_dir else Path("mlvalidate-runs") / f"validate-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    try:
        write_bundle(out, run)
    except OSError as e:
        print(f"error: could not write the run bundle to {out}: {e.strerror or e} — pass --out a writable folder",
              file=sys.stderr)
        return 2
    if junit:
        from .report.junit import write_junit

        write_junit(junit, "validate", run.phases, {"model": run.reference.model, "verdict": verdict,
                                                    "bundle": str(out)})
    print()
    print(report_text(run), end="")
    error = run.engine.get("error")
    if error:
        print(f"node error    {error}")
    print(f"bundle        {out}", flush=True)
    if run.error:
        print(f"error: {run.error}", file=sys.stderr)
    return code


# ----------------------------------------------------------------------------------------
# a live node over HTTP
# ----------------------------------------------------------------------------------------
def _load_inputs(reference: str, model: str | None, overrides: dict | None, profile: str | None):
    from .artifacts import load_reference, resolve_stat_test

    ref = load_reference(reference, model=model)
    st = resolve_stat_test(ref, overrides)
    prof = None
    if profile:
        from .deploy.profiles import load_profile

        prof = load_profile(profile)
    return ref, st, prof


def validate_node(
    url: str,
    *,
    reference: str,
    model: str | None = None,
    batch_size: int = 32,
    overrides: dict | None = None,
    out_dir=None,
    junit=None,
    deadline_s: float = 300.0,
    profile: str | None = None,
    throughput: dict | None = None,
    server_side: bool = False,
    progress: bool = True,
    chain_node: str | None = None,
    connect_grace_s: float | None = None,
) -> int:
    """`mlvalidate validate --api vllm`: the served model checked against the reference's, an
    optional throughput phase (steady-state rate and a spot-check of golden nonces computed at
    full speed), then every reference nonce's vector fetched from the node and compared
    locally. Prints phases while running and the verdict first when done; writes a run bundle
    however the run ends. Returns the exit code (0 PASS, 1 FAIL, 2 error or incomplete)."""
    from .engines.vllm_api import VllmPocApiEngine
    from .report.text import stat_test_line

    ref, st, prof = _load_inputs(reference, model, overrides, profile)
    engine = VllmPocApiEngine(url, ref.model, deadline_s=deadline_s)
    if connect_grace_s is not None:
        engine.http.connect_grace_s = connect_grace_s
    inputs = {"url": {"value": url, "source": "cli"},
              "reference": {"value": str(ref.path), "source": "cli"},
              "batch_size": {"value": batch_size, "source": "cli"},
              "profile": {"value": prof.name if prof else None, "source": "cli"},
              "timeout_s": {"value": deadline_s, "source": "cli"},
              "stat_test": st.as_dict()}
    run = _empty_run(ref, st, engine, batch_size, inputs, prof)
    order = ("plan", *(("throughput",) if throughput is not None else ()), "validate")
    r = _Runner(run, order)
    r.header("plan", f"{ref.n} reference nonces of {ref.model} from {ref.label()}, batch size {batch_size}"
             + (f", profile {prof.name}" if prof else ""))
    print(f"      stat test {stat_test_line(st)}")
    check_model = _model_check(engine)

    if throughput is not None:
        def tp_phase() -> dict:
            check_model()
            run.nvml_samples.append(nvml_sample("throughput start"))
            run.throughput = _throughput_phase(url, ref, st, engine, prof, deadline_s=deadline_s, **throughput)
            return _throughput_entry(run.throughput)

        r.phase("throughput", f"the node's generation loop at batch {throughput.get('batch_size', batch_size)}",
                tp_phase)

    def validate_phase() -> dict:
        check_model()
        return _validate_phase(run, engine, ref, st, batch_size, deadline_s, progress)

    r.phase("validate", f"fetching vectors from {url} (wait=true, chunks of {batch_size}); comparing locally",
            validate_phase)
    if server_side:
        def ask_node() -> None:
            print("      --server-side: asking the node to validate the reference itself, for comparison")
            engine.http.until = time.monotonic() + deadline_s
            try:
                run.node_verdict = engine.node_verdict(ref.nonces.tolist(), ref.vectors_b64,
                                                       PocParams.from_reference(ref), batch_size, st.values.as_dict())
            except EngineError as e:
                run.node_verdict = {"error": e.one_line()}
            finally:
                engine.http.until = None

        r.step("--server-side", ask_node)
    if chain_node:
        r.step("readiness", lambda: setattr(run, "readiness", chain_readiness(chain_node, ref.model)))
    return _finish(run, out_dir, junit)


def chain_readiness(chain_node: str, model: str) -> list[str]:
    """--chain-node: the snapshot countdown, thresholds and pre-eligibility (no intent coverage:
    one lookup per participant is `mlvalidate chain status`'s job). A chain that cannot answer is
    one line in the report, never the verdict."""
    from .chain import chain_status, readiness_lines

    print(f"      readiness: asking {chain_node} where the bootstrap stands")
    try:
        return readiness_lines(chain_status(chain_node, model, intents=False))
    except MlvalidateError as e:
        return [f"readiness     unavailable: {e.one_line()}"]


# ----------------------------------------------------------------------------------------
# a host's MLNode (the full stack)
# ----------------------------------------------------------------------------------------
MLNODE_PHASES = ("plan", "download", "deploy", "throughput", "validate")


def _model_source(ref, prof) -> tuple[str, str | None, str]:
    """hf_repo, hf_commit and where they came from: the chain definition of the reference's
    model (the profile's, or configs/chain/), else the model id itself with no commit."""
    from .deploy.profiles import load_chain
    from .errors import MlvalidateError

    chains = [prof.chain] if prof is not None and prof.chain is not None else []
    try:
        chains.append(load_chain(ref.model))
    except MlvalidateError:
        pass
    for chain in chains:
        if chain.model_id == ref.model:
            return chain.hf_repo, chain.hf_commit, f"chain {chain.id}"
    return ref.model, None, "the reference's model id (no chain definition, so no commit)"


def _deploy_args(ref, prof, commit: str | None) -> tuple[list[str], str]:
    if prof is not None:
        return prof.vllm_args(), f"profile {prof.name}"
    args, source = list(ref.additional_args), "the reference's additional_args"
    if commit and not any(a == "--revision" or a.startswith("--revision=") for a in args):
        args += ["--revision", commit]  # serve the commit the download phase fetched, not whatever 'main' is
        source += " + --revision from the chain"
    return args, source


def validate_mlnode(
    url: str,
    *,
    reference: str,
    model: str | None = None,
    batch_size: int = 32,
    overrides: dict | None = None,
    out_dir=None,
    junit=None,
    deadline_s: float = 300.0,
    profile: str | None = None,
    throughput: dict | None = None,
    skip_download: bool = False,
    skip_deploy: bool = False,
    skip_validate: bool = False,
    download_timeout: float = 7200.0,
    deploy_timeout: float = 1800.0,
    dtype: str = "auto",
    chain_node: str | None = None,
    progress: bool = True,
    connect_grace_s: float | None = None,
) -> int:
    """`mlvalidate validate --api mlnode`: the host's full stack at `url` (MLNode API, port 8080).

    Phases (spec §5.3), each skippable: download (the model at the chain's commit), deploy
    (vLLM with the reference's or the profile's args), throughput (every replica's generation
    loop: per-replica and summed steady-state rates, spot-check by callback), validate (every
    reference nonce's vector through the MLNode's /generate proxy, compared locally). A phase
    that fails ends the run: the rest is not run, the bundle is written, exit 2. Returns the
    exit code (0 PASS or validation skipped, 1 FAIL, 2 error or incomplete)."""
    from .engines.mlnode_api import MlnodeApiEngine
    from .mlnode import ensure_deployed, ensure_downloaded
    from .report.text import stat_test_line

    ref, st, prof = _load_inputs(reference, model, overrides, profile)
    hf_repo, hf_commit, repo_source = _model_source(ref, prof)
    args, args_source = _deploy_args(ref, prof, hf_commit)
    engine = MlnodeApiEngine(url, ref.model, deadline_s=deadline_s)
    if connect_grace_s is not None:
        engine.http.connect_grace_s = connect_grace_s
    skip = {"download": skip_download, "deploy": skip_deploy, "throughput": throughput is None,
            "validate": skip_validate}
    inputs = {
        "url": {"value": url, "source": "cli"}, "api": {"value": "mlnode", "source": "cli"},
        "reference": {"value": str(ref.path), "source": "cli"},
        "batch_size": {"value": batch_size, "source": "cli"},
        "profile": {"value": prof.name if prof else None, "source": "cli"},
        "hf_repo": {"value": hf_repo, "source": repo_source}, "hf_commit": {"value": hf_commit, "source": repo_source},
        "deploy": {"value": {"model": ref.model, "dtype": dtype, "additional_args": args}, "source": args_source},
        "skipped": {"value": [k for k, v in skip.items() if v], "source": "cli"},
        "download_timeout_s": {"value": download_timeout, "source": "cli"},
        "deploy_timeout_s": {"value": deploy_timeout, "source": "cli"},
        "timeout_s": {"value": deadline_s, "source": "cli"},
        "stat_test": st.as_dict(),
    }
    run = _empty_run(ref, st, engine, batch_size, inputs, prof)
    r = _Runner(run, MLNODE_PHASES)
    r.header("plan", f"{ref.n} reference nonces of {ref.model} from {ref.label()}, batch size {batch_size}, "
                     f"MLNode API at {url}" + (f", profile {prof.name}" if prof else ""))
    print(f"      stat test {stat_test_line(st)}")
    print(f"      weights {hf_repo}" + (f"@{hf_commit}" if hf_commit else "") + f" [{repo_source}]")
    print(f"      deploy args [{args_source}]: {' '.join(args) or '(none)'}", flush=True)
    if prof is not None and prof.model_id and prof.model_id != ref.model:
        print(f"      warning: profile {prof.name} is for {prof.model_id}, the reference for {ref.model}")

    def download() -> dict:
        d = ensure_downloaded(engine.http, hf_repo, hf_commit, timeout_s=download_timeout)
        return {**d, "status": "OK", "detail": d["action"], "hf_repo": hf_repo, "hf_commit": hf_commit}

    def deploy() -> dict:
        d = ensure_deployed(engine.http, ref.model, dtype=dtype, additional_args=args, timeout_s=deploy_timeout)
        detail = d["action"] + ("" if d["args_applied"] else " (deploy args NOT applied)")
        return {**d, "status": "OK", "detail": detail, "dtype": dtype, "additional_args": args,
                "args_source": args_source}

    check_model = _model_check(engine)  # after the deploy phase: the MLNode proxies /v1/* to its vLLM

    def tp_phase() -> dict:
        check_model()
        run.throughput = _throughput_phase(url, ref, st, engine, prof, deadline_s=deadline_s, **throughput)
        return _throughput_entry(run.throughput)

    def validate_phase() -> dict:
        check_model()
        return _validate_phase(run, engine, ref, st, batch_size, deadline_s, progress)

    for name, text, fn in (
        ("download", f"{hf_repo}" + (f"@{hf_commit}" if hf_commit else "") + " on the node", download),
        ("deploy", f"{ref.model} (dtype {dtype})", deploy),
        ("throughput", f"every replica's generation loop at batch {(throughput or {}).get('batch_size', batch_size)}",
         tp_phase),
    ):
        if skip[name]:
            r.skip(name, f"--skip-{name}")
        else:
            r.phase(name, text, fn)
    if skip_validate:
        if not r.stopped:
            print("      (--skip-validate: no vector is compared, so there is no verdict)")
        r.skip("validate", "--skip-validate")
    else:
        r.phase("validate", f"fetching vectors through {url} (wait=true, requests of {batch_size}); comparing locally",
                validate_phase)
    if chain_node:
        r.step("readiness", lambda: setattr(run, "readiness", chain_readiness(chain_node, ref.model)))
    return _finish(run, out_dir, junit)


def _throughput_phase(url, ref, st, engine, prof, *, deadline_s, batch_size=32, warmup_s=30.0, measure_s=60.0,
                      sample_interval_s=10.0, callback_host="127.0.0.1") -> dict:
    from .throughput import measure_throughput

    body = {k: v for k, v in engine.body(PocParams.from_reference(ref)).items() if k != "poc_stronger_rng"}
    res = measure_throughput(url, body, batch_size=batch_size, warmup_s=warmup_s, measure_s=measure_s,
                             sample_interval_s=sample_interval_s, spot_nonces=set(ref.nonces.tolist()),
                             k_dim=ref.k_dim, callback_host=callback_host, deadline_s=deadline_s, api=engine.api)
    summary = res.summary()
    out = {"summary": summary, "samples": res.samples, "callback_url": res.callback_url, "stopped": res.stopped,
           "callbacks": res.callbacks}
    if res.start_answer is not None:
        out["start_answer"] = res.start_answer
    per_min = summary["steady_nonces_per_min"]
    if prof is not None and per_min is not None:
        bits = []
        if prof.throughput_reference and prof.throughput_reference.get("nonces_per_min"):
            want = prof.throughput_reference["nonces_per_min"]
            bits.append(f"{per_min / want:.0%} of the published {want} nonces/min for {prof.name} "
                        f"(batch {prof.throughput_reference.get('batch')})")
        roof = prof.roofline_nonces_per_min_per_gpu()
        if roof:
            bits.append(f"{per_min / (roof * prof.gpu_count):.1%} of the {prof.gpu_count}-GPU roofline "
                        f"({roof * prof.gpu_count:,.0f} nonces/min)")
        out["reference"] = "; ".join(bits)
        out["profile"] = prof.name
    spot = res.spot
    if spot is not None and (spot.n or spot.n_malformed):
        idx = np.isin(ref.nonces, spot.nonces)
        comp = compare_intake(ref.nonces[idx], ref.vectors[idx], spot, st.values)
        v = comp.verdict.value if comp.n_total else "INCOMPLETE"
        out["spot_verdict"] = {"PASS-with-mismatches": "PASS"}.get(v, v)
        bits = [f"{comp.n_total} golden nonces computed at full speed: {comp.n_mismatch} mismatches"]
        if comp.conflicting_nonces:
            bits.append(f"{len(comp.conflicting_nonces)} answered twice differently")
        if comp.n_malformed:
            bits.append(f"{comp.n_malformed} malformed callback entr{'y' if comp.n_malformed == 1 else 'ies'}: "
                        f"{'; '.join(comp.malformed[:2])}")
        verdict_text = {"FAIL": "FAIL (fraud proven at full speed)",
                        "INCOMPLETE": "INCOMPLETE (unusable or malformed callbacks: the run cannot PASS)"}
        out["spot_check"] = (", ".join(bits) + f", p_value {comp.p_value:.3g} -> "
                             + verdict_text.get(out["spot_verdict"], "no fraud seen"))
        out["spot_mismatch_nonces"] = comp.mismatch_nonces
        out["spot_malformed"] = comp.malformed
    else:
        out["spot_verdict"] = "not run"
        out["spot_check"] = ("no golden nonce arrived by callback (can the node reach "
                             f"{res.callback_url}?): not checked at full speed")
    return out
