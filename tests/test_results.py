"""The typed results: the verdict a run derives from its validation and its throughput phase's
spot-check, and the throughput summary computed from a node's status readings (two replicas,
one of which restarts) — numbers worked out by hand here, not by the code under test."""

import numpy as np
import pytest

from mlvalidate.artifacts import parse_reference, reference_document, resolve_stat_test
from mlvalidate.poc.stats import compare_vectors
from mlvalidate.results import RateStats, RunRecord, SpotVerdict, ThroughputPhase, ThroughputSummary, outcome
from mlvalidate.throughput import ThroughputResult

K = 12


def _run(shift: float, spot: SpotVerdict | None) -> RunRecord:
    rng = np.random.default_rng(0)
    v = rng.standard_normal((40, K)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ref = parse_reference(reference_document(
        model="t/m", seq_len=16, k_dim=K, block_hash="H", public_key="P", block_height=1, node_id=0, node_count=1,
        nonces=np.arange(40), vectors=v.astype(np.float16),
        stat_test={"dist_threshold": 0.2, "p_mismatch": 0.1, "fraud_threshold": 0.05}))  # fmt: skip
    st = resolve_stat_test(ref)
    got = (v + shift).astype(np.float16)
    comp = compare_vectors(ref.nonces, ref.vectors, ref.nonces, got, st.values)
    tp = None
    if spot is not None:
        summary = ThroughputSummary(api="vllm", n_samples=3, warmup_s=1.0, batch_size=8, n_replicas=1,
                                    rates=RateStats(steady=10.0))
        tp = ThroughputPhase(summary=summary, samples=[], spot_verdict=spot, spot_check="x")
    return RunRecord(name="t", reference=ref, stat_test=st, comparison=comp, engine={}, computed_nonces=ref.nonces,
                     computed_vectors=got, batch_size=8, elapsed_s=1.0, throughput=tp)


@pytest.mark.parametrize("shift,spot,verdict,code", [
    (0.0, None, "PASS", 0),
    (0.0, SpotVerdict.PASS, "PASS", 0),
    (0.0, SpotVerdict.NOT_RUN, "PASS", 0),
    (0.0, SpotVerdict.FAIL, "FAIL", 1),  # honest when measured slowly, caught at full speed
    (0.0, SpotVerdict.INCOMPLETE, "INCOMPLETE", 2),  # a PASS that the spot-check could not back
    (1.0, SpotVerdict.INCOMPLETE, "FAIL", 1),  # proven fraud stays fraud
])  # fmt: skip
def test_the_spot_check_can_only_take_a_pass_away(shift, spot, verdict, code):
    o = outcome(_run(shift, spot))
    assert (o.verdict, o.exit_code) == (verdict, code)


def _sample(t, replicas):
    return {"elapsed_s": t, "status": "GENERATING",
            "total_processed": sum(r["total_processed"] for r in replicas.values()),
            "node_nonces_per_second": sum(r["nonces_per_second"] for r in replicas.values()), "replicas": replicas}


def test_summary_of_two_replicas_one_restarting():
    def rep(n, cum):
        return {"status": "GENERATING", "total_processed": n, "nonces_per_second": cum}

    res = ThroughputResult(warmup_s=5.0, batch_size=4, api="mlnode", samples=[
        _sample(0.0, {"5001": rep(100, 9.0), "5002": rep(50, 4.0)}),
        _sample(10.0, {"5001": rep(200, 9.5), "5002": rep(100, 4.5)}),  # 10/s and 5/s
        _sample(20.0, {"5001": rep(320, 9.8), "5002": rep(10, 1.0)}),  # 12/s; 5002 restarted: not comparable
    ])
    s = res.summary()
    assert s.n_replicas == 2 and s.n_samples == 3
    assert s.replicas["5001"].steady == pytest.approx(22.0 / 2)  # (320 - 100) / 20
    assert s.replicas["5001"].min == pytest.approx(10.0) and s.replicas["5001"].max == pytest.approx(12.0)
    assert s.replicas["5002"].steady is None  # its first and last readings straddle a restart
    assert s.replicas["5002"].total_processed == 10
    assert s.steady_nonces_per_second == pytest.approx(11.0)  # only the replica with a steady rate
    assert s.rates.min == pytest.approx(12.0) and s.rates.max == pytest.approx(15.0)  # per interval: 15, then 12
    d = s.as_dict()
    assert d["steady_nonces_per_min"] == pytest.approx(660.0) and d["n_replicas"] == 2
    assert d["replicas"]["5002"]["node_cumulative_nonces_per_second"] == 1.0
    assert d["node_cumulative_nonces_per_second"] == pytest.approx(10.8)


def test_in_process_and_live_phases_keep_their_own_keys():
    summary = ThroughputSummary(api="in-process", n_samples=2, warmup_s=0.5, batch_size=8, n_replicas=1,
                                rates=RateStats(steady=3.0), outside_forward_share=0.08)
    inproc = ThroughputPhase(summary=summary, samples=[{"round": 0, "seconds": 1.0, "nonces": 8}]).as_dict()
    assert "stopped" not in inproc and "callbacks" not in inproc and inproc["spot_verdict"] == "not run"
    assert inproc["summary"]["outside_forward_share"] == 0.08
    live = ThroughputPhase(summary=summary, samples=[], stopped=False, callback_url=None).as_dict()
    assert live["stopped"] is False and live["callbacks"] == {}
