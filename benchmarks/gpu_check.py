"""On a GPU: prove the CUDA side of the PoC math and of the reference engine against the CPU, in one run.

    PYTHONPATH=. python benchmarks/gpu_check.py --out gpu_check.json [--gonka PATH/vllm/poc/gpu_random.py]

No install and no network: it runs from a checkout. Four parts (--only picks some), each compared
side by side in the same run, CUDA against the CPU:

1. poc     the PoC math, ours (mlvalidate.poc) and Gonka's (its fork's vllm/poc/gpu_random.py, imported
           by path: --gonka, $MLVALIDATE_GONKA_POC, or shared/counterparts/ in or above the checkout), on
           the CPU and on CUDA, at the MiniMax shape and a small one: input embeddings (both RNGs),
           target, Householder vectors, one reflection, pick indices, Haar rotation, whole vectors;
           each pair of sources compared bit for bit, what differs named (gpu_check_poc.py);
2. engine  the tiny MiniMax-M2 of make-tiny and its 4-bit cheater, reference engine on CPU and CUDA,
           bf16 and fp32, against a CPU-baked bf16 reference under the demo's gate;
3. check   `check --device cuda` against numpy: verdict, mismatches, distances, and the speed on
           --check-vectors vectors;
4. hw      `mlvalidate hw` reads the card; NVML's energy counter around the run.
(parts 2-4: gpu_check_parts.py). Without CUDA every CUDA figure says "skipped: no CUDA" and every
CPU figure is still computed and checked (tests/test_gpu_check.py runs it so in CI, at small sizes).

Writes one JSON (--out, rewritten after each part, so a run cut short keeps what it finished) and
prints a table. Exit 0 when every expectation held (and, with --require-cuda, CUDA was there);
2 when one did not, a part failed, or --require-cuda found no CUDA.

On a GPU host, from a checkout: PYTHONPATH=. python benchmarks/gpu_check.py --require-cuda --gonka PATH.
On this workplace's lent GPU machine (no network; its python3 is 3.12 with a CUDA torch, but its
transformers, 5.17, is older than the 5.18 that MiniMax-M2 needs): first, here, put Gonka's file and a
transformers wheel in a folder git ignores,
    echo /.gpu/ >> "$(git rev-parse --git-common-dir)/info/exclude"; mkdir -p .gpu
    cp /work/shared/counterparts/gonka-vllm-poc/vllm/poc/gpu_random.py .gpu/
    python -m pip download --no-deps --only-binary=:all: -d .gpu transformers==5.19.0
then one device run with carry [".gpu"] and a timeout_s that leaves time for a rerun (the CPU side of
the defaults took 102-129 s on the 2-core CPU machine; the whole run is estimated at 2-4 minutes there):
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/*.whl && PYTHONPATH=.:/tmp/site \
    python3 benchmarks/gpu_check.py --gonka .gpu/gpu_random.py --require-cuda --out $OUT/gpu_check.json
and commit the JSON as benchmarks/results/gpu_check-<gpu>.json. Should transformers refuse one of the
machine's packages at import, carry that package's wheel too (the device README says how).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

import gpu_check_parts as parts
import gpu_check_poc as poc
from mlvalidate.jsonio import write_json

REPO = Path(__file__).resolve().parents[1]
PARTS = ("poc", "engine", "check", "hw")
DRY_RUN = ("dry run: the CPU stands in for CUDA (--device cpu), so every device path runs; its 'cuda' figures "
           "say nothing about a GPU")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="gpu_check.json", help="the JSON written (after each part)")
    p.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts to run, of {', '.join(PARTS)}")
    p.add_argument("--device", default="cuda", help="the torch device checked against the CPU; cpu: a dry run of "
                   "every device path with the CPU standing in (tests)")
    p.add_argument("--require-cuda", action="store_true", help="exit 2 without a CUDA device (on a GPU host)")
    p.add_argument("--gonka", default=None, help="Gonka's vllm/poc/gpu_random.py; without it $MLVALIDATE_GONKA_POC, "
                   "else shared/counterparts/gonka-vllm-poc/... in or above the checkout")
    p.add_argument("--shapes", default="minimax,small", help=f"PoC shapes, of {', '.join(poc.SHAPES)}")
    p.add_argument("--nonces", type=int, default=256, help="nonces 0..N-1 for every PoC quantity")
    p.add_argument("--embed-nonces", type=int, default=None,
                   help="how many of them get input embeddings computed; without it all")
    p.add_argument("--gonka-cpu-embed-nonces", type=int, default=8,
                   help="how many of those Gonka's code computes on the CPU too (its per-nonce int64 loop is slow there)")
    p.add_argument("--embed-batch", type=int, default=16, help="nonces per input-embedding batch (bounds memory)")
    p.add_argument("--pick-batches", default="1,32,256",
                   help="nonces per pick call, each compared (CUDA's topk may choose its kernel by the rows)")
    p.add_argument("--vector-batch", type=int, default=32,
                   help="nonces per post-processing batch (MLNode's and vLLM's default PoC batch)")
    p.add_argument("--engine-nonces", type=int, default=200, help="nonces per engine run (the demo's 200)")
    p.add_argument("--engine-seq-len", type=int, default=256, help="seq_len of the engine runs (the demo's 256)")
    p.add_argument("--check-vectors", type=int, default=1_000_000, help="synthetic vectors for the check's speed")
    p.add_argument("--work", default=None, help="folder for checkpoints and files; without it a temporary one")
    args = p.parse_args(argv)
    args.only = [x for x in args.only.split(",") if x]
    args.shapes = [x for x in args.shapes.split(",") if x]
    args.pick_batches = [int(x) for x in args.pick_batches.split(",") if x]
    bad = [x for x in args.only if x not in PARTS] + [x for x in args.shapes if x not in poc.SHAPES]
    if bad:
        p.error(f"unknown part or shape: {', '.join(bad)}")
    args.embed_nonces = args.nonces if args.embed_nonces is None else min(args.embed_nonces, args.nonces)
    return args


def cuda_device(name: str) -> tuple[torch.device | None, str]:
    """(the device, or None; a line that says which, or why not)."""
    dev = torch.device(name)
    if dev.type == "cpu":
        return dev, DRY_RUN
    if dev.type != "cuda":
        return None, f"skipped: --device {name} is not a CUDA device"
    if not torch.cuda.is_available():
        built = torch.version.cuda or "none"
        return None, f"skipped: no CUDA (torch {torch.__version__}, built with CUDA {built}, sees no GPU)"
    try:
        torch.zeros(1, device=dev)
    except (RuntimeError, AssertionError) as e:
        return None, f"skipped: no CUDA ({' '.join(str(e).split())[:160]})"
    return dev, f"{torch.cuda.get_device_name(dev)} (capability {'.'.join(map(str, torch.cuda.get_device_capability(dev)))})"


def environment(cuda, cuda_line: str, gonka_path, looked) -> dict:
    def version(mod: str):
        try:
            return __import__(mod).__version__
        except Exception as e:  # absent or broken: say which
            return f"unavailable ({type(e).__name__})"

    env = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
           "load_average": list(os.getloadavg()), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
           "torch_threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "transformers": version("transformers"), "numpy": version("numpy"), "cuda": cuda_line,
           "gonka_gpu_random": {"path": str(gonka_path) if gonka_path else None,
                                "sha256": hashlib.sha256(gonka_path.read_bytes()).hexdigest() if gonka_path else None,
                                "looked": looked}}
    env["dry_run"] = cuda_line == DRY_RUN
    if cuda is not None and cuda.type == "cuda":
        env.update(matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
                   cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                   gpu_memory_gib=round(torch.cuda.get_device_properties(cuda).total_memory / 2**30, 1))
    return env


def findings(node, path="") -> tuple[list[str], list[str]]:
    """(UNEXPECTED results, skipped ones) anywhere in the JSON, each as 'where: what'."""
    unexpected, skipped = [], []
    if isinstance(node, dict):
        if node.get("status") == "UNEXPECTED":
            unexpected.append(f"{path}: expected {node.get('expect')}")
        if isinstance(node.get("error"), str):
            unexpected.append(f"{path}: error: {node['error']}")
        for k, v in node.items():
            u, s = findings(v, f"{path}.{k}" if path else str(k))
            unexpected += u
            skipped += s
    elif isinstance(node, str) and node.startswith("skipped"):
        skipped.append(f"{path}: {node}")
    return unexpected, skipped


# ----------------------------------------------------------------------------------------
# the table
# ----------------------------------------------------------------------------------------
def _rows(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]


def _f(v, spec=".4f") -> str:
    return "-" if v is None else format(v, spec)


def table(doc: dict) -> list[str]:
    out = [f"gpu_check · {doc['environment']['cuda']} · torch {doc['environment']['torch']} · "
           f"{doc.get('seconds', 0):.0f} s"]
    res = doc["results"]
    if isinstance(res.get("poc"), dict):
        out.append("\n1. PoC math, pair by pair ('equal' = bit-identical; x/y = elements or rows that differ; "
                   "'!' = not what was expected)")
        for name, shape in res["poc"]["shapes"].items():
            out.append(f"{name}: D {shape['D']}, seq_len {shape['S']}, k {shape['k']}, {shape['layers']} layers; "
                       f"{shape['nonces']} nonces, {shape['embed_nonces']} with inputs "
                       f"({shape['gonka_cpu_embed_nonces']} by Gonka on the CPU)")
            labels = [poc.pair_label(p) for p in poc.PAIRS]
            rows = [[q] + [poc.cell_text(cells[lb]) for lb in labels] for q, cells in shape["quantities"].items()]
            out += _rows(["quantity", *labels], rows)
            out += poc.first_differences(shape)
    if isinstance(res.get("engine"), dict):
        e = res["engine"]
        out.append(f"\n2. Reference engine, tiny MiniMax-M2, {e['nonces']} nonces, seq_len {e['seq_len']}, "
                   f"gate {e['stat_test']['dist_threshold']}")
        rows = []
        for label, c in e["comparisons"].items():
            if isinstance(c, str) or "error" in c:
                rows.append([label, c if isinstance(c, str) else f"error: {c['error']}"] + [""] * 7)
            else:
                rows.append([label, c["verdict"], f"{c['past_gate']}/{c['n']}", _f(c["median"]), _f(c["p90"]),
                             _f(c["max"]), str(c["identical_vectors"]), c["expect"], c["status"]])
        out += _rows(["computed vs reference", "verdict", "past gate", "median", "p90", "max", "identical",
                      "expect", "status"], rows)
        out += [f"  {n}: error on {r['device']}: {r['error']}" if "error" in r else
                f"  {n}: {r['vectors']} vectors in {r['seconds']:.2f} s on {r['device']} "
                f"({r['attn_implementation']}, experts {r['experts_implementation']})" for n, r in e["runs"].items()]
    if isinstance(res.get("check"), dict):
        c = res["check"]
        out.append("\n3. check --device cuda against numpy")
        ev = c.get("engine_vectors")
        if ev:
            cu = ev["cuda"] if isinstance(ev["cuda"], str) else (
                f"{ev['cuda']['verdict']}, max |Δd| {ev['cuda']['max_abs_distance_difference']:.2g}, {ev['cuda']['status']}")
            out.append(f"  engine vectors ({ev['computed']}): numpy {ev['numpy']['verdict']}; cuda {cu}; "
                       f"CLI --device cuda exit {ev['cli_device_cuda']['exit_code']} ({ev['cli_device_cuda']['status']})")
        s = c["speed"]
        for what in ("l2_distances", "compare_vectors", "check_files"):
            r = s[what]
            cu = r.get("cuda") or f"cuda {r['cuda_s']} s ({r['numpy_s'] / max(r['cuda_s'], 1e-6):.1f}x)"
            out.append(f"  {what:<16} {s['vectors']:,} vectors: numpy {r['numpy_s']} s, {cu}")
    if isinstance(res.get("hw"), dict):
        h = res["hw"]["hw"]
        out.append("\n4. hw (NVML)")
        if "gpus" in h:
            out += [f"  {g['name']}, {g['memory_total_gib']} GiB, SM {g['sm_clock_mhz']}/{g['sm_clock_max_mhz']} MHz, "
                    f"mem {g['mem_clock_mhz']}/{g['mem_clock_max_mhz']} MHz, "
                    f"{g['power_w']}/{g['power_limit_w']} W" for g in h["gpus"]]
            out.append(f"  energy counter: {res['hw']['energy_counter']} (hw reports it: {res['hw']['hw_reports_energy']})")
        else:
            out.append(f"  hw: exit {h['exit_code']}: {h['stderr']} ({h['status']})")
    for k in ("errors", "unexpected"):
        if doc.get(k):
            out.append(f"\n{k.upper()}:")
            out += [f"  {x}" for x in (doc[k].items() if isinstance(doc[k], dict) else doc[k])]
    out.append(f"\nskipped: {len(doc.get('skipped', []))} figure(s); exit {doc.get('exit_code')}")
    return out


# ----------------------------------------------------------------------------------------
def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    energy_before = parts.energy_mj()
    cuda, cuda_line = cuda_device(args.device)
    gonka_path, looked = poc.find_gonka(args.gonka, REPO)
    doc = {"script": "benchmarks/gpu_check.py", "argv": sys.argv[1:] if argv is None else list(argv),
           "started": _dt.datetime.now().isoformat(timespec="seconds"),
           "environment": environment(cuda, cuda_line, gonka_path, looked), "results": {}, "errors": {}}
    out = Path(args.out)
    print(f"gpu_check: {cuda_line}; Gonka's gpu_random.py: {gonka_path or 'not found'}", flush=True)

    def log(line: str) -> None:
        print(line, flush=True)

    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        engine_results = None
        for part in args.only:
            log(f"[{part}] ...")
            t = time.perf_counter()
            try:
                if part == "poc":
                    gonka = poc.load_gonka(gonka_path) if gonka_path else None
                    res = {"gonka": str(gonka_path) if gonka else f"absent: looked in {', '.join(looked)}",
                           "shapes": {name: poc.run_shape(name, poc.SHAPES[name], gonka=gonka, cuda=cuda,
                                                          nonces=args.nonces, embed_nonces=args.embed_nonces,
                                                          gonka_cpu_embed_nonces=args.gonka_cpu_embed_nonces,
                                                          batch=args.embed_batch, pick_batches=args.pick_batches,
                                                          vector_batch=args.vector_batch, log=log)
                                      for name in args.shapes}}
                elif part == "engine":
                    res, engine_results = parts.engine_part(work, cuda, nonces=args.engine_nonces,
                                                            seq_len=args.engine_seq_len, log=log)
                elif part == "check":
                    res = parts.check_part(work, cuda, engine_results, n_vectors=args.check_vectors,
                                           seq_len=args.engine_seq_len, log=log)
                else:
                    res = parts.hw_part(cuda, energy_before, time.perf_counter() - t0)
                res["seconds"] = round(time.perf_counter() - t, 2)
                doc["results"][part] = json.loads(json.dumps(res, default=str))  # a library's odd type never stops the JSON
            except Exception as e:  # one part's failure is recorded; the others still run
                doc["errors"][part] = f"{type(e).__name__}: {' '.join(str(e).split())[:400]}"
                doc["results"][part] = {"error": doc["errors"][part], "traceback": traceback.format_exc()[-3000:]}
            log(f"[{part}] {time.perf_counter() - t:.1f} s")
            doc["seconds"] = round(time.perf_counter() - t0, 1)
            write_json(out, doc)
    doc["unexpected"], doc["skipped"] = findings(doc["results"])
    if args.require_cuda and (cuda is None or cuda.type != "cuda"):
        doc["errors"]["cuda"] = cuda_line
    doc["exit_code"] = 2 if doc["unexpected"] or doc["errors"] else 0
    doc["environment"]["load_average_end"] = list(os.getloadavg())
    doc["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(out, doc)
    print("\n".join(table(doc)))
    print(f"JSON: {out}")
    return doc["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
