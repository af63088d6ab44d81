"""`mlvalidate demo`: the whole harness on a CPU in well under a minute, with nothing downloaded.

1. make a tiny MiniMax-M2 in the real FP8 checkpoint layout, and a cheating copy of it
   whose weights are rounded to 4 bits (what a host serving an INT4 quantization runs);
2. bake a 200-nonce golden reference with the honest model (bf16, batch 32, like production);
3. validate an honest node that differs numerically (float32, batch 16)  -> must PASS;
4. validate the cheating node (4-bit weights, bf16, batch 32)            -> must FAIL.

The command exits 0 only if the honest node passed and the cheater failed, else 2 (the
harness did not tell them apart: an error of the set-up, not a fraud verdict).

The three computations of steps 2-4 (bake, honest node, cheater) need nothing from each other:
they start together once the checkpoints exist, one per core, at most three (engines/ahead.py), one
torch thread each; the bake and the two validations then take their results through the same
code as one after another (bake_reference, the run pipeline's validate phase). Their vectors
are bit-identical to a sequential run's at 1 or 2 torch threads and any of the batch sizes
tried; what does move them is the CPU's kernel level (README, "What the demo shows").

Why these sizes (measured on the 2-core CPU machine, 200 nonces, seq_len 256, make_tiny's
defaults: hidden 128, 4 layers, 8 experts top-2, gain 1.5): honest bf16-vs-fp32 L2 has
median 0.026 and p90 0.063, with a tail of ~7 % of nonces whose top-2 expert choice flips
(up to ~1.2); the 4-bit copy has median 0.50 and min 0.11, and >= 93 % of its nonces lie
past 0.2. The demo's gate, 0.2, sits between the two bodies, and the chain's own p_mismatch
0.1 / fraud 0.05 absorb the honest tail the way they absorb cross-hardware variation on
the real model (3-7 % of nonces past its 0.75 gate).
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .artifacts import ResolvedStatTest, load_reference, resolve_stat_test
from .bake import bake_reference
from .engines.ahead import Ahead, AheadPool, torch_threads
from .engines.base import PocParams
from .engines.reference import ReferenceEngine
from .errors import MlvalidateError
from .fixtures.quantize import write_quantized_copy
from .fixtures.tiny import make_tiny
from .pipeline import Runner, new_run, validate_phase
from .poc.stats import load_binomial_test
from .progress import Progress
from .report.bundle import write_bundle
from .report.text import percentiles_line
from .results import Phase, PhaseStatus, RunRecord
from .serving.environment import environment

DEMO_MODEL_ID = "mlvalidate/tiny-minimax-m2-fp8"
DEMO_SEQ_LEN = 256
DEMO_NONCES = 200
DEMO_STAT_TEST = {"dist_threshold": 0.2, "p_mismatch": 0.1, "fraud_threshold": 0.05}
BAKE = {"dtype": "bf16", "batch_size": 32}
HONEST = {"dtype": "fp32", "batch_size": 16}
CHEATER = {"dtype": "bf16", "batch_size": 32, "bits": 4, "group_size": 32}
# One intra-op thread per computation, the parallelism being the computations side by side:
# on a 2-core machine shared with other work, torch's 2 OpenMP threads per op cost 2-4x the CPU
# time of 1 (threads spin at each op's barrier while the other core is taken; measured, README).
DEMO_TORCH_THREADS = 1


def default_out_dir() -> Path:
    return Path("mlvalidate-runs") / f"demo-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _step(i: int, n: int, text: str) -> float:
    print(f"[{i}/{n}] {text}", flush=True)
    return time.perf_counter()


def _done(t: float) -> float:
    s = time.perf_counter() - t
    print(f"      done in {s:.1f} s")
    return s


@dataclass
class DemoResult:
    ok: bool  # the honest node passed and the cheater failed
    runs: dict[str, RunRecord]  # "honest", "cheater"
    stat_test: ResolvedStatTest
    reference: Path
    out: Path
    seconds: float
    steps: dict[str, float] = field(default_factory=dict)  # wall seconds per step ("load": the three models)
    compute: dict[str, dict] = field(default_factory=dict)  # per computation: its wall_s and cpu_s (worker thread)
    workers: int = 1


def demo_workers() -> int:
    """Workers for the demo's three computations: one per core this process may run on, at most 3."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(3, cores))


def run_demo(out_dir: str | Path | None = None, *, seq_len: int | None = None, n_nonces: int | None = None,
             seed: int = 0, progress: bool = True, workers: int | None = None,
             threads: int | None = None) -> DemoResult:
    """Steps 1-5 with a progress line each; the bundles are written under `out_dir`.

    The three computations (bake, honest node, cheater) need nothing from each other, so they
    start together after step 2, on `workers` threads (default: one per core, at most 3) with
    torch pinned to `threads` intra-op thread(s) (default DEMO_TORCH_THREADS); steps 3-5 then
    take their results in order. The vectors are the same as computed one after another with
    any thread count (measured, README)."""
    seq_len = DEMO_SEQ_LEN if seq_len is None else seq_len
    n_nonces = DEMO_NONCES if n_nonces is None else n_nonces
    workers = demo_workers() if workers is None else workers
    threads = DEMO_TORCH_THREADS if threads is None else threads
    out = Path(out_dir) if out_dir else default_out_dir()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    steps: dict[str, float] = {}
    N = 5
    t = _step(1, N, f"tiny MiniMax-M2 checkpoint (FP8 layout, seed {seed}) -> {out / 'checkpoints'}")
    honest_dir = make_tiny(out / "checkpoints" / "tiny-minimax-m2-fp8", fp8=True, seed=seed, force=True)
    steps["checkpoint"] = _done(t)

    t = _step(2, N, f"cheating copy: weights rounded to {CHEATER['bits']} bits (group {CHEATER['group_size']})")
    cheat_dir = write_quantized_copy(honest_dir, out / "checkpoints" / "tiny-minimax-m2-int4",
                                     bits=CHEATER["bits"], group_size=CHEATER["group_size"])
    steps["cheater_copy"] = _done(t)

    params = PocParams(block_hash="TEST_BLOCK", public_key="test_pub_keys_v2", seq_len=seq_len)
    nonces = range(n_nonces)
    plan = {  # name: (checkpoint, settings); submitted in this order, the longest first
        "bake": (honest_dir, BAKE), "cheater": (cheat_dir, CHEATER), "honest": (honest_dir, HONEST)}
    t = time.perf_counter()
    engines = {name: ReferenceEngine(d, dtype=cfg["dtype"], model_id=DEMO_MODEL_ID) for name, (d, cfg) in plan.items()}
    steps["load"] = time.perf_counter() - t
    runs: dict[str, RunRecord] = {}
    with torch_threads(threads), AheadPool(workers) as pool:
        ahead = {name: Ahead(engines[name], pool, nonces, params, plan[name][1]["batch_size"],
                             progress=Progress(f"bake {DEMO_MODEL_ID}") if progress and name == "bake" else None)
                 for name in plan}
        t = _step(3, N, f"bake a {n_nonces}-nonce reference (seq_len {seq_len}, {BAKE['dtype']}, batch {BAKE['batch_size']}); "
                        f"the honest and cheating nodes compute alongside ({pool.workers} worker(s), "
                        f"{threads} torch thread(s) each)")
        ref_path, _ = bake_reference(
            ahead["bake"], model_id=DEMO_MODEL_ID, out=out / "reference.json", n_nonces=n_nonces,
            batch_size=BAKE["batch_size"], params=params, stat_test=DEMO_STAT_TEST, progress=False,
        )
        ref = load_reference(ref_path, model=DEMO_MODEL_ID)
        st = resolve_stat_test(ref)
        load_binomial_test()  # before the validations' verdicts (poc.stats.load_binomial_test)
        steps["bake"] = time.perf_counter() - t
        print(f"      {ref_path} in {steps['bake']:.1f} s")

        for i, (name, model_dir, cfg, what) in enumerate(
            [
                ("honest", honest_dir, HONEST, "honest node: same checkpoint, float32, batch 16"),
                ("cheater", cheat_dir, CHEATER, f"cheating node: {CHEATER['bits']}-bit weights, bf16, batch 32"),
            ],
            start=4,
        ):
            t = _step(i, N, f"validate the {what}")
            engine = ahead[name]
            run = new_run(name, ref, st, engine, cfg["batch_size"], inputs={
                "reference": {"value": str(ref_path), "source": "demo bake"},
                "model_dir": {"value": str(model_dir), "source": "demo"},
                "dtype": {"value": cfg["dtype"], "source": "demo"},
                "batch_size": {"value": cfg["batch_size"], "source": "demo"},
            })
            Runner(run, ("validate",), log=None).phase(
                "validate", what, lambda: validate_phase(run, engine, progress=False))  # fmt: skip
            if run.error:  # the phase failed or was interrupted: keep what there is, then stop with the reason
                write_bundle(out / name, run)
                raise MlvalidateError(f"the demo's {name} validation did not finish: {run.error}",
                                      f"its bundle is {out / name}")
            run.environment = environment(run)
            bundle = write_bundle(out / name, run)
            runs[name] = run
            steps[name] = time.perf_counter() - t
            print(f"      {run.comparison.verdict.value}: {run.comparison.n_mismatch}/{run.comparison.n_total} "
                  f"mismatches (computed in {run.elapsed_s:.1f} s), bundle {bundle}")

    ok = runs["honest"].comparison.verdict.exit_code == 0 and runs["cheater"].comparison.verdict.value == "FAIL"
    compute = {name: {"wall_s": a.result().elapsed_s, "cpu_s": a.cpu_s} for name, a in ahead.items()}
    return DemoResult(ok, runs, st, Path(ref_path), out, time.perf_counter() - t_start, steps, compute, pool.workers)


def junit_phases(res: DemoResult) -> list[Phase]:
    """One JUnit case per expectation of the demo."""
    def expect(name: str, run: RunRecord, ok: bool) -> Phase:
        c = run.comparison
        return Phase(name, PhaseStatus.PASS if ok else PhaseStatus.FAIL, run.elapsed_s,
                     f"{c.verdict.value}: {c.n_mismatch}/{c.n_total} mismatches")

    h, c = res.runs["honest"], res.runs["cheater"]
    return [expect("honest node passes", h, h.comparison.verdict.exit_code == 0),
            expect("4-bit cheater fails", c, c.comparison.verdict.value == "FAIL")]


def summary_lines(runs: dict[str, RunRecord], st) -> list[str]:
    head = f"{'run':<9}{'verdict':<22}{'n_total':>8}{'n_mismatch':>11}{'p_value':>10}{'p50 L2':>9}{'p90 L2':>9}{'max L2':>9}{'nonces/s':>10}"
    lines = ["", head, "-" * len(head)]
    for name, r in runs.items():
        c = r.comparison
        d = c.distances[np.isfinite(c.distances)]
        q = np.percentile(d, [50, 90, 100]) if d.size else [float("nan")] * 3
        lines.append(f"{name:<9}{c.verdict.value:<22}{c.n_total:>8}{c.n_mismatch:>11}{c.p_value:>10.3g}"
                     f"{q[0]:>9.4f}{q[1]:>9.4f}{q[2]:>9.4f}{c.n_total / r.elapsed_s:>10.1f}")
    v = st.values
    lines += ["", f"gate: L2 > {v.dist_threshold:g} is a mismatch; fraud when P(>= n_mismatch | p={v.p_mismatch:g}) < {v.fraud_threshold:g}",
              "", "L2 distance to the reference (share of nonces per bin)"]
    edges = [0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.01]
    names = list(runs)
    lines.append(f"  {'bin':<14}" + "".join(f"{n:>24}" for n in names))
    hists = {}
    for n in names:
        d = runs[n].comparison.distances
        d = d[np.isfinite(d)]
        hists[n] = np.histogram(d, bins=edges)[0] / max(d.size, 1)
    for b in range(len(edges) - 1):
        label = f"[{edges[b]:.2f}, {edges[b + 1]:.2f})"
        mark = " ◀ gate" if edges[b] <= v.dist_threshold < edges[b + 1] else ""
        cells = "".join(f"{'█' * int(round(16 * hists[n][b])):>17}{hists[n][b]:>6.1%} " for n in names)
        lines.append(f"  {label:<14}{cells}{mark}")
    for n in names:
        lines.append(f"  {n:<8} {percentiles_line(runs[n].comparison.distances)}")
    return lines
