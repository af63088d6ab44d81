"""Validation of one system under test against one golden reference.

The engine is asked for every reference nonce (in the reference's order, in chunks of the
batch size); what comes back is compared in one batched operation. The harness never
trusts an engine's own verdict, and a nonce with no usable vector is a mismatch.
"""

from __future__ import annotations

import time

from .artifacts import Reference, ResolvedStatTest
from .engines.base import Engine, PocParams
from .errors import EngineError
from .poc.stats import compare_vectors
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


def _finish(run: RunRecord, out_dir, junit=None) -> int:
    """Write the bundle (and JUnit XML if asked), print the report (its first line is the
    verdict), return the exit code."""
    import datetime as _dt
    import sys
    from pathlib import Path

    from .report.bundle import overall_verdict, report_text, write_bundle

    code = overall_verdict(run)[2]
    out = Path(out_dir) if out_dir else Path("mlvalidate-runs") / f"validate-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    write_bundle(out, run)
    if junit:
        from .report.junit import write_junit

        write_junit(junit, "validate", run.phases, {"model": run.reference.model, "verdict": overall_verdict(run)[0],
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
) -> int:
    """`mlvalidate validate --api vllm`: an optional throughput phase (steady-state rate and a
    spot-check of golden nonces computed at full speed), then every reference nonce's vector
    fetched from the node and compared locally. Prints phases while running and the verdict
    first when done; writes a run bundle. Returns the exit code (0 PASS, 1 FAIL, 2 error)."""
    from .engines.vllm_api import VllmPocApiEngine
    from .report.text import stat_test_line

    ref, st, prof = _load_inputs(reference, model, overrides, profile)
    n_phases = 3 if throughput is not None else 2
    print(f"[1/{n_phases}] plan: {ref.n} reference nonces of {ref.model} from {ref.label()}, batch size {batch_size}"
          + (f", profile {prof.name}" if prof else ""))
    print(f"      stat test {stat_test_line(st)}")
    engine = VllmPocApiEngine(url, ref.model, deadline_s=deadline_s)
    tp = None
    if throughput is not None:
        print(f"[2/{n_phases}] throughput: the node's generation loop at batch {throughput.get('batch_size', batch_size)}")
        tp_sample = nvml_sample("throughput start")
        tp = _throughput_phase(url, ref, st, engine, prof, deadline_s=deadline_s, **throughput)
    print(f"[{n_phases}/{n_phases}] validate: fetching vectors from {url} (wait=true, chunks of {batch_size}); comparing locally")
    run = run_validation(engine, ref, st, batch_size=batch_size, name="validate", progress=progress,
                         inputs={"url": {"value": url, "source": "cli"},
                                 "reference": {"value": str(ref.path), "source": "cli"},
                                 "batch_size": {"value": batch_size, "source": "cli"},
                                 "profile": {"value": prof.name if prof else None, "source": "cli"},
                                 "stat_test": st.as_dict()})
    error = run.engine.get("error")
    if error:
        run.phases[-1]["detail"] += f"; node error: {error}"
    if tp is not None:
        run.throughput = tp  # a spot-check FAIL outranks anything the slow validation found
        run.nvml_samples.insert(0, tp_sample)
        # the same phase statuses as the MLNode path: the phase ran (OK) unless the spot-check proved fraud
        run.phases.insert(0, {"name": "throughput", "status": "FAIL" if tp["spot_verdict"] == "FAIL" else "OK",
                              "elapsed_s": None,
                              "detail": tp.get("spot_check", "")})
    if server_side:
        print("      --server-side: asking the node to validate the reference itself, for comparison")
        try:
            run.node_verdict = engine.node_verdict(ref.nonces.tolist(), ref.vectors_b64, PocParams.from_reference(ref),
                                                   batch_size, st.values.as_dict())
        except EngineError as e:
            run.node_verdict = {"error": e.one_line()}
    run.profile = prof
    if chain_node:
        run.readiness = chain_readiness(chain_node, ref.model)
    return _finish(run, out_dir, junit)


def chain_readiness(chain_node: str, model: str) -> list[str]:
    """--chain-node: the snapshot countdown, thresholds and pre-eligibility (no intent coverage:
    one lookup per participant is `mlvalidate chain status`'s job). A chain that cannot answer is
    one line in the report, never the verdict."""
    from .chain import chain_status, readiness_lines
    from .errors import MlvalidateError

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
) -> int:
    """`mlvalidate validate --api mlnode`: the host's full stack at `url` (MLNode API, port 8080).

    Phases (spec §5.3), each skippable: download (the model at the chain's commit), deploy
    (vLLM with the reference's or the profile's args), throughput (every replica's generation
    loop: per-replica and summed steady-state rates, spot-check by callback), validate (every
    reference nonce's vector through the MLNode's /generate proxy, compared locally). A phase
    that fails ends the run: the rest is not run, the bundle is written, exit 2. Returns the
    exit code (0 PASS or validation skipped, 1 FAIL, 2 error or incomplete)."""
    import numpy as np

    from .engines.mlnode_api import MlnodeApiEngine
    from .errors import MlvalidateError
    from .mlnode import ensure_deployed, ensure_downloaded
    from .report.text import stat_test_line

    ref, st, prof = _load_inputs(reference, model, overrides, profile)
    hf_repo, hf_commit, repo_source = _model_source(ref, prof)
    args, args_source = _deploy_args(ref, prof, hf_commit)
    engine = MlnodeApiEngine(url, ref.model, deadline_s=deadline_s)
    n = len(MLNODE_PHASES)
    skip = {"download": skip_download, "deploy": skip_deploy, "throughput": throughput is None,
            "validate": skip_validate}

    def header(name: str, text: str) -> None:
        print(f"[{MLNODE_PHASES.index(name) + 1}/{n}] {name}: {text}", flush=True)

    header("plan", f"{ref.n} reference nonces of {ref.model} from {ref.label()}, batch size {batch_size}, "
                   f"MLNode API at {url}" + (f", profile {prof.name}" if prof else ""))
    print(f"      stat test {stat_test_line(st)}")
    print(f"      weights {hf_repo}" + (f"@{hf_commit}" if hf_commit else "") + f" [{repo_source}]")
    print(f"      deploy args [{args_source}]: {' '.join(args) or '(none)'}", flush=True)
    if prof is not None and prof.model_id and prof.model_id != ref.model:
        print(f"      warning: profile {prof.name} is for {prof.model_id}, the reference for {ref.model}")
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
        "stat_test": st.as_dict(),
    }
    phases: list[dict] = []
    tp, error = None, None
    for name in ("download", "deploy", "throughput"):
        if error is not None:
            phases.append({"name": name, "status": "not run", "elapsed_s": None, "detail": "an earlier phase failed"})
            continue
        if skip[name]:
            header(name, f"skipped (--skip-{name})")
            phases.append({"name": name, "status": "skipped", "elapsed_s": None, "detail": f"--skip-{name}"})
            continue
        t0 = time.perf_counter()
        try:
            if name == "download":
                header(name, f"{hf_repo}" + (f"@{hf_commit}" if hf_commit else "") + " on the node")
                d = ensure_downloaded(engine.http, hf_repo, hf_commit, timeout_s=download_timeout)
                entry = {**d, "status": "OK", "detail": d["action"], "hf_repo": hf_repo, "hf_commit": hf_commit}
            elif name == "deploy":
                header(name, f"{ref.model} (dtype {dtype})")
                d = ensure_deployed(engine.http, ref.model, dtype=dtype, additional_args=args, timeout_s=deploy_timeout)
                detail = d["action"] + ("" if d["args_applied"] else " (deploy args NOT applied)")
                entry = {**d, "status": "OK", "detail": detail, "dtype": dtype, "additional_args": args,
                         "args_source": args_source}
            else:
                header(name, f"every replica's generation loop at batch {throughput.get('batch_size', batch_size)}")
                tp = _throughput_phase(url, ref, st, engine, prof, deadline_s=deadline_s, **throughput)
                s = tp["summary"]
                rate = s["steady_nonces_per_second"]
                entry = {"status": "FAIL" if tp["spot_verdict"] == "FAIL" else "OK",
                         "detail": (f"{rate:.2f} nonces/s" if rate is not None else "no steady rate")
                         + f" summed over {s['n_replicas']} replica(s); {tp['spot_check']}"}
        except MlvalidateError as e:
            error = f"{name}: {e.one_line()}"
            entry = {"status": "error", "detail": e.one_line()}
            print(f"      {name} failed: {e.one_line()}", flush=True)
        phases.append({"name": name, "elapsed_s": round(time.perf_counter() - t0, 3), **entry})

    if error is None and not skip_validate:
        header("validate", f"fetching vectors through {url} (wait=true, requests of {batch_size}); comparing locally")
        run = run_validation(engine, ref, st, batch_size=batch_size, name="validate", progress=progress, inputs=inputs)
        if run.engine.get("error"):
            run.phases[-1]["detail"] += f"; node error: {run.engine['error']}"
        run.phases = phases + run.phases
    else:
        if error is None:
            header("validate", "skipped (--skip-validate): no vector is compared, so there is no verdict")
        phases.append({"name": "validate", "status": "not run" if error else "skipped", "elapsed_s": None,
                       "detail": "an earlier phase failed" if error else "--skip-validate"})
        run = RunRecord(name="validate", reference=ref, stat_test=st, comparison=None, engine=engine.describe(),
                        computed_nonces=np.zeros(0, np.int64), computed_vectors=np.zeros((0, ref.k_dim), np.float16),
                        batch_size=batch_size, elapsed_s=0.0, inputs=inputs, phases=phases, error=error)
    run.throughput = tp
    run.profile = prof
    if chain_node:
        run.readiness = chain_readiness(chain_node, ref.model)
    return _finish(run, out_dir, junit)


def _throughput_phase(url, ref, st, engine, prof, *, deadline_s, batch_size=32, warmup_s=30.0, measure_s=60.0,
                      sample_interval_s=10.0, callback_host="127.0.0.1") -> dict:
    import numpy as np

    from .throughput import measure_throughput

    body = {k: v for k, v in engine.body(PocParams.from_reference(ref)).items() if k != "poc_stronger_rng"}
    res = measure_throughput(url, body, batch_size=batch_size, warmup_s=warmup_s, measure_s=measure_s,
                             sample_interval_s=sample_interval_s, spot_nonces=set(ref.nonces.tolist()),
                             k_dim=ref.k_dim, callback_host=callback_host, deadline_s=deadline_s, api=engine.api)
    summary = res.summary()
    out = {"summary": summary, "samples": res.samples, "callback_url": res.callback_url, "stopped": res.stopped}
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
    if res.spot_nonces.size:
        idx = np.isin(ref.nonces, res.spot_nonces)
        spot = compare_vectors(ref.nonces[idx], ref.vectors[idx], res.spot_nonces, res.spot_vectors, st.values)
        out["spot_verdict"] = "FAIL" if spot.fraud_proven else "PASS"
        out["spot_check"] = (f"{spot.n_total} golden nonces computed at full speed: {spot.n_mismatch} mismatches, "
                             f"p_value {spot.p_value:.3g} -> "
                             + ("FAIL (fraud proven at full speed)" if spot.fraud_proven else "no fraud seen"))
        out["spot_mismatch_nonces"] = spot.mismatch_nonces
    else:
        out["spot_verdict"] = "not run"
        out["spot_check"] = ("no golden nonce arrived by callback (can the node reach "
                             f"{res.callback_url}?): not checked at full speed")
    return out
