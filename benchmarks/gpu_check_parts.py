"""Parts 2-4 of benchmarks/gpu_check.py: the reference engine, `check --device`, and NVML (`hw`).

2. engine: the demo's tiny MiniMax-M2 (make-tiny, FP8 layout) and its 4-bit cheating copy, computed
   by the reference engine on the CPU (bf16: the CPU-baked reference, as the demo bakes it; fp32: the
   demo's honest node) and on CUDA (bf16, fp32); each run compared with the CPU-baked reference under
   the demo's stat test (gate 0.2, p_mismatch 0.1, fraud 0.05), and CUDA with the CPU in fp32.
3. check: `check_files` and the `mlvalidate check` command, numpy against --device cuda, on the
   engine's vectors (same verdict, same mismatches, the distances' largest difference), then the
   speed of the distances, of the comparison and of the whole command on N synthetic vectors.
4. hw: `mlvalidate hw --json` on this machine (name, memory, clocks, power), and NVML's energy
   counter read around the whole run (hw does not report it).

Each part returns a dict for the JSON; a figure with an expectation carries "expect" and "status"
("ok", "UNEXPECTED" or "measured"); a part that needs CUDA says "skipped: no CUDA" without it.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

NO_CUDA = "skipped: no CUDA"
REPO = Path(__file__).resolve().parents[1]


def _sync(device) -> None:
    if device is not None and str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def _cli(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m mlvalidate ARGV` in a child, this checkout first on its path (as PYTHONPATH=. does)."""
    import os

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "mlvalidate", *argv], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


def one_line_error(r: subprocess.CompletedProcess) -> dict:
    """A command that should refuse in one line (exit 2, 'error: ...', no traceback, not an internal error)."""
    lines = r.stderr.strip().splitlines()
    ok = (r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ")
          and "internal error" not in lines[0])
    return {"exit_code": r.returncode, "stderr": r.stderr.strip()[-600:], "expect": "one-line error, exit 2",
            "status": "ok" if ok else "UNEXPECTED"}


# ----------------------------------------------------------------------------------------
# 2. the reference engine
# ----------------------------------------------------------------------------------------
def _distances(ref, got, stat_test) -> dict:
    from mlvalidate.poc.stats import compare_vectors

    comp = compare_vectors(ref.nonces, ref.vectors, got.nonces, got.vectors, stat_test)
    d = comp.distances[np.isfinite(comp.distances)]
    same = {int(n): v for n, v in zip(got.nonces, np.asarray(got.vectors, np.float16).view(np.uint16))}
    identical = sum(int(n) in same and np.array_equal(same[int(n)], v)
                    for n, v in zip(ref.nonces, np.asarray(ref.vectors, np.float16).view(np.uint16)))
    return {"verdict": comp.verdict.value, "n": comp.n_total, "past_gate": int(comp.over_threshold.sum()),
            "fraud_cutoff": comp.summary()["fraud_cutoff"], "p_value": comp.p_value,
            "median": float(np.median(d)) if d.size else None, "p90": float(np.percentile(d, 90)) if d.size else None,
            "max": float(d.max()) if d.size else None, "identical_vectors": int(identical)}


ENGINE_COMPARISONS = (  # (computed run, reference run, expectation)
    ("cpu-fp32", "cpu-bf16", "not FAIL"),  # the demo's honest node against its reference
    ("cheater-cpu-bf16", "cpu-bf16", "FAIL"),
    ("cuda-bf16", "cpu-bf16", "not FAIL"),  # a host on this GPU against a CPU-baked reference
    ("cuda-fp32", "cpu-bf16", "not FAIL"),
    ("cuda-fp32", "cpu-fp32", "measured"),  # the same arithmetic on two devices
    ("cuda-bf16", "cuda-fp32", "measured"),  # bf16 noise on the GPU
    ("cheater-cuda-bf16", "cpu-bf16", "FAIL"),
)


def engine_part(work: Path, cuda, *, nonces: int, seq_len: int, log=print) -> tuple[dict, dict]:
    """(the part's JSON, the runs' results by name: the check part reuses them)."""
    from mlvalidate.demo import BAKE, CHEATER, DEMO_MODEL_ID, DEMO_STAT_TEST, HONEST
    from mlvalidate.engines.base import PocParams
    from mlvalidate.engines.reference import ReferenceEngine
    from mlvalidate.fixtures.quantize import write_quantized_copy
    from mlvalidate.fixtures.tiny import describe_checkpoint, make_tiny
    from mlvalidate.poc.stats import StatTest

    honest = make_tiny(work / "tiny-minimax-m2-fp8", fp8=True, seed=0, force=True)
    cheater = write_quantized_copy(honest, work / "tiny-minimax-m2-int4", bits=CHEATER["bits"],
                                   group_size=CHEATER["group_size"])
    params = PocParams(block_hash="TEST_BLOCK", public_key="test_pub_keys_v2", seq_len=seq_len)
    plan = {"cpu-bf16": (honest, "cpu", BAKE), "cpu-fp32": (honest, "cpu", HONEST),
            "cheater-cpu-bf16": (cheater, "cpu", CHEATER)}
    if cuda is not None:
        plan.update({"cuda-bf16": (honest, cuda, BAKE), "cuda-fp32": (honest, cuda, HONEST),
                     "cheater-cuda-bf16": (cheater, cuda, CHEATER)})
    runs, results = {}, {}
    for name, (ckpt, device, cfg) in plan.items():
        try:
            engine = ReferenceEngine(ckpt, device=str(device), dtype=cfg["dtype"], model_id=DEMO_MODEL_ID)
            engine.compute(range(min(2, nonces)), params, batch_size=cfg["batch_size"])  # warm-up (kernels, caches)
            _sync(device)
            res = engine.compute(range(nonces), params, batch_size=cfg["batch_size"])
            _sync(device)
        except Exception as e:  # one run's failure (a kernel this GPU lacks, say) is named; the others run
            runs[name] = {"device": str(device), "error": f"{type(e).__name__}: {' '.join(str(e).split())[:400]}"}
            log(f"  {name:<18} error: {runs[name]['error']}")
            continue
        cfg_ = engine.model.config
        runs[name] = {"device": str(device), "dtype": cfg["dtype"], "batch_size": cfg["batch_size"],
                      "vectors": int(len(res.nonces)), "seconds": round(res.elapsed_s, 3),
                      "load_seconds": round(engine.load_seconds, 3),
                      "attn_implementation": getattr(cfg_, "_attn_implementation", None),
                      "experts_implementation": getattr(cfg_, "_experts_implementation", None),
                      "engine": engine.describe()}
        results[name] = res
        log(f"  {name:<18} {len(res.nonces)} vectors in {res.elapsed_s:.2f} s")
        del engine
    st = StatTest(**DEMO_STAT_TEST)
    comparisons = {}
    for got, ref, expect in ENGINE_COMPARISONS:
        label = f"{got} vs {ref}"
        if got not in plan or ref not in plan:
            comparisons[label] = NO_CUDA
            continue
        if got not in results or ref not in results:
            comparisons[label] = {"error": f"the {got if got not in results else ref} run failed (runs)"}
            continue
        d = _distances(results[ref], results[got], st)
        ok = {"FAIL": d["verdict"] == "FAIL", "not FAIL": d["verdict"] in ("PASS", "PASS-with-mismatches")}.get(expect)
        comparisons[label] = {**d, "expect": expect, "status": "measured" if ok is None else ("ok" if ok else "UNEXPECTED")}
    part = {"checkpoint": describe_checkpoint(honest), "nonces": nonces, "seq_len": seq_len, "stat_test": DEMO_STAT_TEST,
            "runs": runs, "comparisons": comparisons}
    return part, results


# ----------------------------------------------------------------------------------------
# 3. check --device
# ----------------------------------------------------------------------------------------
def _reference_file(path: Path, nonces, vectors, seq_len: int, source: str) -> Path:
    from mlvalidate.artifacts import reference_document, write_json
    from mlvalidate.demo import DEMO_MODEL_ID, DEMO_STAT_TEST

    st = dict(DEMO_STAT_TEST)
    doc = reference_document(model=DEMO_MODEL_ID, seq_len=seq_len, k_dim=12, block_hash="TEST_BLOCK",
                             public_key="test_pub_keys_v2", nonces=nonces, vectors=vectors,
                             dist_threshold=st.pop("dist_threshold"), stat_test=st, source=source)
    return write_json(path, doc)


def _same_check(a, b) -> dict:
    """Two CheckResults (numpy, device): the same verdict and mismatches, the distances' largest difference."""
    ca, cb = a.comparison, b.comparison
    both = np.isfinite(ca.distances) & np.isfinite(cb.distances)
    diff = float(np.abs(ca.distances[both] - cb.distances[both]).max()) if both.any() else 0.0
    same = (ca.verdict == cb.verdict and ca.mismatch_nonces == cb.mismatch_nonces
            and np.array_equal(np.isfinite(ca.distances), np.isfinite(cb.distances)))
    return {"verdict": cb.verdict.value, "numpy_verdict": ca.verdict.value, "same_mismatches": same,
            "max_abs_distance_difference": diff, "expect": "same verdict and mismatches, distances within 1e-5",
            "status": "ok" if same and diff <= 1e-5 else "UNEXPECTED"}


def _timed(fn, device, reps: int) -> tuple[float, object]:
    """Median wall seconds of `reps` calls after one warm-up (the first CUDA call pays for its kernels)."""
    out = fn()
    ts = []
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        out = fn()
        _sync(device)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def check_part(work: Path, cuda, results: dict | None, *, n_vectors: int, seq_len: int, reps: int = 3,
               log=print) -> dict:
    from mlvalidate.check import check_files
    from mlvalidate.poc.stats import StatTest, compare_vectors, l2_distances

    part: dict = {}
    dev = str(cuda) if cuda is not None else "cuda"
    # (a) the engine's vectors: the CPU-baked reference and the GPU's (without CUDA: the CPU's fp32) run
    if results and "cpu-bf16" in results and ("cuda-bf16" in results or "cpu-fp32" in results):
        got_name = "cuda-bf16" if "cuda-bf16" in results else "cpu-fp32"
        ref_path = _reference_file(work / "engine-reference.json", results["cpu-bf16"].nonces,
                                   results["cpu-bf16"].vectors, seq_len, "gpu_check: cpu-bf16")
        got_path = _reference_file(work / f"engine-{got_name}.json", results[got_name].nonces,
                                   results[got_name].vectors, seq_len, f"gpu_check: {got_name}")
        numpy_res = check_files(str(ref_path), str(got_path))
        cli_numpy = _cli("check", "--json", str(ref_path), str(got_path))
        engine = {"computed": got_name, "numpy": {"verdict": numpy_res.comparison.verdict.value,
                                                  "n_mismatch": numpy_res.comparison.n_mismatch}}
        cli_dev = _cli("check", "--json", "--device", dev, str(ref_path), str(got_path))
        if cuda is None:
            engine["cuda"] = NO_CUDA
            engine["cli_device_cuda"] = one_line_error(cli_dev)
        else:
            engine["cuda"] = _same_check(numpy_res, check_files(str(ref_path), str(got_path), device=cuda))
            same_cli = (cli_dev.returncode == cli_numpy.returncode and cli_dev.returncode in (0, 1)
                        and json.loads(cli_dev.stdout)["mismatch_nonces"] == json.loads(cli_numpy.stdout)["mismatch_nonces"])
            engine["cli_device_cuda"] = {"exit_code": cli_dev.returncode, "numpy_exit_code": cli_numpy.returncode,
                                         "stderr": cli_dev.stderr.strip()[-600:], "expect": "the numpy run's exit code "
                                         "and mismatches", "status": "ok" if same_cli else "UNEXPECTED"}
        part["engine_vectors"] = engine
    # (b) speed on n_vectors synthetic vectors: 5 % of them far (a mismatch each)
    gen = np.random.default_rng(0)
    ref = gen.standard_normal((n_vectors, 12), dtype=np.float32)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    got = ref + gen.standard_normal(ref.shape, dtype=np.float32) * 0.02
    far = gen.random(n_vectors) < 0.05
    got[far] = -got[far]
    ref16, got16, nonces = ref.astype(np.float16), got.astype(np.float16), np.arange(n_vectors)
    st = StatTest(0.2, 0.1, 0.05)
    speed: dict = {"vectors": n_vectors, "reps": reps}
    for what, fn_for in (
        ("l2_distances", lambda d: (lambda: l2_distances(ref16, got16, device=d))),
        ("compare_vectors", lambda d: (lambda: compare_vectors(nonces, ref16, nonces, got16, st, device=d))),
    ):
        s_np, out_np = _timed(fn_for(None), None, reps)
        row = {"numpy_s": round(s_np, 5)}
        if cuda is not None:
            s_dev, out_dev = _timed(fn_for(cuda), cuda, reps)
            a = out_np if what == "l2_distances" else out_np.distances
            b = out_dev if what == "l2_distances" else out_dev.distances
            row.update(cuda_s=round(s_dev, 5), speedup=round(s_np / s_dev, 2),
                       max_abs_distance_difference=float(np.abs(a - b).max()))
        else:
            row["cuda"] = NO_CUDA
        speed[what] = row
    t = time.perf_counter()
    ref_path = _reference_file(work / "speed-reference.json", nonces, ref16, seq_len, "gpu_check: synthetic")
    got_path = _reference_file(work / "speed-computed.json", nonces, got16, seq_len, "gpu_check: synthetic")
    speed["write_files_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    res_np = check_files(str(ref_path), str(got_path))
    row = {"numpy_s": round(time.perf_counter() - t, 3), "verdict": res_np.comparison.verdict.value,
           "n_mismatch": res_np.comparison.n_mismatch, "far_planted": int(far.sum())}
    if cuda is not None:
        t = time.perf_counter()
        res_dev = check_files(str(ref_path), str(got_path), device=cuda)
        row.update(cuda_s=round(time.perf_counter() - t, 3), same=_same_check(res_np, res_dev))
    else:
        row["cuda"] = NO_CUDA
    row["expect"] = "every planted far vector is a mismatch"
    row["status"] = "ok" if res_np.comparison.mismatch_nonces == nonces[far].tolist() else "UNEXPECTED"
    speed["check_files"] = row
    part["speed"] = speed
    log(f"  {n_vectors:,} vectors: l2 numpy {speed['l2_distances']['numpy_s']:.4f} s"
        + (f", cuda {speed['l2_distances']['cuda_s']:.4f} s" if cuda is not None else "")
        + f"; check_files numpy {row['numpy_s']:.2f} s" + (f", cuda {row['cuda_s']:.2f} s" if cuda is not None else ""))
    return part


# ----------------------------------------------------------------------------------------
# 4. NVML
# ----------------------------------------------------------------------------------------
def energy_mj() -> dict[int, int] | None:
    """NVML's total energy counter per GPU (millijoules since the driver loaded); None without NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no library or no driver: the hw part says why
        return None
    try:
        out = {}
        for i in range(pynvml.nvmlDeviceGetCount()):
            try:
                out[i] = int(pynvml.nvmlDeviceGetTotalEnergyConsumption(pynvml.nvmlDeviceGetHandleByIndex(i)))
            except pynvml.NVMLError:
                pass  # this board or driver has no energy counter
        return out
    finally:
        pynvml.nvmlShutdown()


HW_FIELDS = ("name", "memory_total_gib", "sm_clock_mhz", "sm_clock_max_mhz", "mem_clock_mhz", "mem_clock_max_mhz",
             "power_w", "power_limit_w")


def hw_part(cuda, energy_before: dict | None, seconds: float) -> dict:
    r = _cli("hw", "--json", timeout=120)
    energy_after = energy_mj()
    if r.returncode != 0:
        out = one_line_error(r)
        if cuda is not None and cuda.type == "cuda":
            out["status"] = "UNEXPECTED"  # a GPU that NVML cannot read
        return {"hw": out}
    rep = json.loads(r.stdout)
    gpus = [{k: g.get(k) for k in HW_FIELDS} for g in rep.get("gpus", [])]
    missing = sorted({k for g in gpus for k in HW_FIELDS if g[k] is None})
    energy = None
    if energy_before and energy_after:
        energy = {str(i): {"joules": (energy_after[i] - energy_before[i]) / 1000, "over_s": round(seconds, 1)}
                  for i in energy_after if i in energy_before}
    return {"hw": {"exit_code": 0, "driver_version": rep.get("driver_version"), "cuda_version": rep.get("cuda_version"),
                   "gpus": gpus, "not_read": missing, "matched_profile": rep.get("matched_profile"),
                   "expect": "every GPU's name, memory, clocks and power read",
                   "status": "ok" if gpus and not missing else "UNEXPECTED"},
            "energy_counter": energy if energy else "not present (NVML gave no energy counter)",
            "hw_reports_energy": any("energy" in k for g in rep.get("gpus", []) for k in g)}
