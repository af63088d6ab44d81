"""The queued fetch against the answers Gonka's own PoC vLLM gave (tests/gonka_queue_answers.json,
captured from the fork running on CPU; see its `source`). A loopback server replays them
verbatim, so the client is checked against the real shapes, not against our server's:
the acknowledgement, a poll while running, the completed answer, a failed job, an unknown id.
Run against the fork itself, `validate` fetched 40/40 nonces queued and with wait=true, with
byte-identical vectors (note of 2026-11-29)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlvalidate.artifacts import reference_document, write_json
from mlvalidate.cli import main
from mlvalidate.poc import decode_vectors

from fault_proxy import FaultProxy, Scenario

REAL = json.loads((Path(__file__).with_name("gonka_queue_answers.json")).read_text())
MODEL = "test/tiny-qwen3"
GEN = "/api/v1/pow/generate"


class Replay(Scenario):
    """Answers like the fork did, in place of any node: the ack, `running` on the first poll, then
    `then` (status, body). Served by the fault suite's loopback proxy, which forwards nothing here."""

    def __init__(self, then):
        self.then, self.polls, self.posts = then, 0, []

    def route(self, conn, method, path, request):
        if path == "/v1/models":
            conn.send(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
        elif path == "/api/v1/pow/status":
            conn.send(200, {"status": "IDLE", "config": None, "stats": None})
        elif method == "GET" and path.startswith(GEN + "/"):
            self.polls += 1
            conn.send(*((200, REAL["get_running"]) if self.polls == 1 else self.then))
        elif method == "POST" and path == GEN:
            self.posts.append(request)
            conn.send(200, REAL["post_wait_false"])
        else:
            conn.send(404, {"error": {"message": "Not Found", "type": "Not Found", "param": None, "code": 404}})
        return True


@pytest.fixture
def reference(tmp_path) -> Path:
    """A reference holding the fork's own vectors for nonces 0..7 (so an honest replay passes)."""
    arts = REAL["get_completed"]["artifacts"]
    doc = reference_document(model=MODEL, seq_len=64, k_dim=12, block_hash="TEST_BLOCK", public_key="test_pub_keys_v2",
                             nonces=np.array([a["nonce"] for a in arts]),
                             vectors=decode_vectors([a["vector_b64"] for a in arts]).astype(np.float16),
                             dist_threshold=0.2,
                             stat_test={"dist_threshold": 0.2, "p_mismatch": 0.1, "fraud_threshold": 0.05},
                             source="tests/gonka_queue_answers.json")
    path = tmp_path / "ref.json"
    write_json(path, doc)
    return path


@pytest.mark.parametrize("then,verdict,code,said", [
    ((200, REAL["get_completed"]), "PASS", 0, None),
    ((200, REAL["get_failed"]), "INCOMPLETE", 2, "Timeout waiting for engine: chunk 0"),
    ((404, REAL["get_unknown_404"]), "INCOMPLETE", 2, "no longer knows request"),
])  # fmt: skip
def test_the_forks_own_answers(then, verdict, code, said, reference, tmp_path, capsys):
    node = Replay(then)
    proxy = FaultProxy("http://127.0.0.1:9", node)  # nothing is forwarded: every route is answered above
    try:
        rc = main(["validate", "--url", proxy.url, "--reference", str(reference), "--batch-size", "8",
                   "--skip-throughput", "--timeout", "20", "--out", str(tmp_path / "b")])
    finally:
        proxy.close()
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert (rc, report["verdict"]) == (code, verdict), out
    assert node.posts and all(p["wait"] is False and len(p["nonces"]) == 8 for p in node.posts)
    assert node.polls >= 2  # polled while it ran, then once more
    if said:
        assert said in out
