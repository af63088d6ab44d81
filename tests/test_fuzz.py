"""A property-based fuzz of every reader and every answer (issue 22).

Each test takes a well-formed document or answer — a reference, a run bundle, a node-config, a
profile, an admin API answer, the chain's answers, a node's /generate answers, polls and status,
the throughput phase's callbacks — and breaks it with hypothesis: one to three places set to junk
(wrong types, huge or negative numbers, NaN, strings with lone surrogates or NUL, "." and ".."),
deleted, or given an extra key; some values are spliced in as raw JSON text (nested thousands of
levels deep, a 5000-digit integer, a lone-surrogate escape). The invariant is the README's:

* exit 0, 1 or 2 as documented: 1 only with a FAIL verdict, 0 and 2 otherwise;
* at most one line on stderr besides progress, and it is `error: ...`; never a traceback, never
  "internal error" (tests/invariants.py);
* a run that started writes its bundle, and the bundle's exit code is the process's.

Examples are bounded (max_examples, deadline=None, no example database) so the whole file runs in
about a minute on 2 busy cores; MLVALIDATE_FUZZ_SCALE=N multiplies them for a longer hunt. Nodes are the fault suite's: a real reference PoC server behind
tests/fault_proxy.py; the chain is test_chain's loopback chain.
"""

from __future__ import annotations

import copy
import json
import os
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlvalidate.cli import main

from fault_proxy import GENERATE, INIT, MODELS, STATUS, Scenario
from invariants import assert_clean
from test_chain import DELEGATION, DOCUMENTED, EVENT_QUERY, PARAMS, PARTICIPANTS, _Chain
from test_fault_suite import BATCH, MODEL, THROUGHPUT, engine, hostile, node, reference  # noqa: F401 (fixtures)
from test_node_config import CHAIN, H200, entry

REPO = Path(__file__).resolve().parents[1]
BUNDLE_FILES = ("config.json", "report.json", "vectors.json", "environment.json", "report.txt")
FUZZ = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                     HealthCheck.too_slow, HealthCheck.data_too_large])


def fuzz(examples: int) -> settings:
    """CI's bound; MLVALIDATE_FUZZ_SCALE=N runs N times as many examples (a longer hunt, by hand)."""
    return settings(FUZZ, max_examples=examples * max(1, int(os.environ.get("MLVALIDATE_FUZZ_SCALE", "1"))))


# ---- junk ---------------------------------------------------------------------------------------
class Raw:
    """JSON text spliced in where a value goes (what json.dumps cannot write: 5000 levels deep...)."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text[:30]!r}{'…' if len(self.text) > 30 else ''})"


TEXTS = ["\ud800", "a\udfffb", "", " ", ".", "..", "../../stop", "1e309", "NaN", "Infinity", "-1", "0", "a\x00b",
         "a\nb", "x" * 300, "🙂", "http://[::1", "127.0.0.1:5000", "localhost/x#"]
NUMBERS = [0, -1, 1, 2**31, 2**63, 2**64, -(2**63), 10**30, 10**400, 1e309 * 0, 0.5, -0.0, 1e300]
KEYS = ["nonce", "vector_b64", "artifacts", "status", "request_id", "id", "host", "models", "args", "weight", "value",
        "exponent", "verdict", "distances"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from(NUMBERS),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.sampled_from(TEXTS))
junk = st.recursive(scalars, lambda c: st.lists(c, max_size=3)
                    | st.dictionaries(st.text(max_size=6) | st.sampled_from(KEYS), c, max_size=3), max_leaves=8)
raws = st.sampled_from([Raw("[" * 300 + "]" * 300), Raw("[" * 5000 + "]" * 5000), Raw('"\\ud800"'),
                        Raw('{"\\udc00": 1}'), Raw("1" + "0" * 5000), Raw("NaN"), Raw("-Infinity"), Raw("1e400"),
                        Raw('{"a": ' * 250 + "1" + "}" * 250)])
values = st.one_of(junk, junk, raws)


def dumps(doc) -> bytes:
    """JSON bytes of `doc`, Raw values spliced in as their text (NaN and infinities as Python writes them)."""
    spliced: list[str] = []

    def mark(v):
        if isinstance(v, Raw):
            spliced.append(v.text)
            return f"@@RAW{len(spliced) - 1}@@"
        if isinstance(v, dict):
            return {k: mark(x) for k, x in v.items()}
        if isinstance(v, list):
            return [mark(x) for x in v]
        return v

    text = json.dumps(mark(doc))  # ensure_ascii: a lone surrogate becomes its \\ud800 escape
    for i, t in enumerate(spliced):
        text = text.replace(f'"@@RAW{i}@@"', t)
    return text.encode("utf-8")


def paths_of(doc, depth: int = 4) -> list[tuple]:
    """Every place in `doc` down to `depth` (a list's first two and last items)."""
    out: list[tuple] = [()]

    def walk(node, prefix):
        if len(prefix) >= depth:
            return
        if isinstance(node, dict):
            items = list(node.items())
        elif isinstance(node, list):
            items = [(i, node[i]) for i in sorted({0, 1, len(node) - 1}) if 0 <= i < len(node)]
        else:
            return
        for k, v in items:
            out.append((*prefix, k))
            walk(v, (*prefix, k))

    walk(doc, ())
    return out


def apply(doc, path: tuple, op: str, value):
    """`doc` with `value` set at `path` (op "set"), the place deleted ("delete"), or `value` added
    beside it ("add"); a path that no longer exists changes nothing. Returns the new document."""
    if not path:
        return value if op == "set" else doc
    node = doc
    for k in path[:-1]:
        try:
            node = node[k]
        except (KeyError, IndexError, TypeError):
            return doc
    last = path[-1]
    if not isinstance(node, (dict, list)) or isinstance(node, list) and not (isinstance(last, int) and last < len(node)):
        return doc
    if isinstance(node, dict) and last not in node:
        return doc
    if op == "set":
        node[last] = value
    elif op == "delete":
        del node[last]
    elif isinstance(node, dict):
        node[f"extra_{len(node)}"] = value
    else:
        node.append(value)
    return doc


def mutations(paths: list[tuple], most: int = 3):
    return st.lists(st.tuples(st.sampled_from(paths), st.sampled_from(["set", "set", "delete", "add"]), values),
                    min_size=1, max_size=most)


def broken(base, muts):
    doc = copy.deepcopy(base)
    for path, op, value in muts:
        doc = apply(doc, path, op, value)
    return doc


def cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert_clean(out, err)
    assert rc in (0, 1, 2), rc
    return rc, out, err


def assert_bundle(out: Path, rc: int) -> dict:
    """The bundle is whole and says what the process said."""
    for f in BUNDLE_FILES:
        assert (out / f).is_file(), f"{f} missing from the bundle"
    r = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert r["exit_code"] == rc and (rc != 1 or r["verdict"] == "FAIL"), (rc, r["verdict"])
    assert (out / "report.txt").read_text(encoding="utf-8").startswith("VERDICT: ")
    return r


# ---- files ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def golden(reference) -> dict:
    return json.loads(reference.read_text())


REF_PATHS = paths_of(json.loads((REPO / "artifacts" / "minimaxai-minimax-m2.7.json").read_text()))


@fuzz(40)
@given(muts=mutations(REF_PATHS))
def test_reference_and_computed_files(muts, golden, reference, tmp_path_factory, capsys):
    path = tmp_path_factory.mktemp("ref") / "fuzzed.json"
    path.write_bytes(dumps(broken(golden, muts)))
    rc, _, _ = cli(capsys, "inspect", path)
    assert rc in (0, 2)
    rc, _, _ = cli(capsys, "check", reference, path)  # as computed vectors
    rc2, _, _ = cli(capsys, "check", path, reference)  # as the reference
    assert rc2 in (0, 1, 2)


@pytest.fixture(scope="module")
def a_bundle(node, reference, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "good"
    assert main(["validate", "--url", node.url, "--reference", str(reference), "--batch-size", str(BATCH),
                 "--skip-throughput", "--out", str(out)]) == 0
    return out


@fuzz(25)
@given(which=st.sampled_from(["report.json", "report.json", "environment.json", "config.json"]), data=st.data())
def test_run_bundles(which, data, a_bundle, tmp_path_factory, capsys):
    base = json.loads((a_bundle / which).read_text())
    muts = data.draw(mutations(paths_of(base, 3)))
    bad = tmp_path_factory.mktemp("cmp") / "bad"
    bad.mkdir()
    for f in BUNDLE_FILES:
        (bad / f).write_bytes((a_bundle / f).read_bytes())
    (bad / which).write_bytes(dumps(broken(base, muts)))
    rc, _, _ = cli(capsys, "compare", a_bundle, bad, "--out", bad.parent / "report")
    if rc == 1:  # 1 only where the (mutated) bundle itself says FAIL: compare exits by the runs' verdicts
        assert which == "report.json" and json.loads((bad / "report.json").read_text()).get("verdict") == "FAIL"
    else:
        assert rc in (0, 2)


NODE_CONFIG = [entry(CHAIN + H200)]


@fuzz(30)
@given(muts=mutations(paths_of(NODE_CONFIG, 5)), profile=st.sampled_from([[], ["--profile", "h200x2"]]))
def test_node_configs(muts, profile, tmp_path_factory, capsys):
    path = tmp_path_factory.mktemp("nc") / "node-config.json"
    path.write_bytes(dumps(broken(NODE_CONFIG, muts)))
    rc, _, _ = cli(capsys, "config", "check", "--node-config", path, "--no-vllm", *profile)
    assert rc in (0, 2)


PROFILE = yaml.safe_load((REPO / "configs" / "h200x2" / "profile.yaml").read_text())


@fuzz(30)
@given(muts=mutations(paths_of(PROFILE, 3)))
def test_profiles(muts, tmp_path_factory, capsys):
    folder = tmp_path_factory.mktemp("prof") / "fuzzed"
    folder.mkdir()
    (folder / "profile.yaml").write_bytes(dumps(broken(PROFILE, muts)))  # JSON is YAML
    (folder.parent / "chain").mkdir()
    (folder.parent / "chain" / "minimaxai-minimax-m2.7.yaml").write_bytes(
        (REPO / "configs" / "chain" / "minimaxai-minimax-m2.7.yaml").read_bytes())
    rc, _, _ = cli(capsys, "config", "show", folder / "profile.yaml")
    assert rc in (0, 2)
    rc, _, _ = cli(capsys, "config", "check", folder / "profile.yaml", "--no-vllm")
    assert rc in (0, 2)


# ---- answers: the admin API ---------------------------------------------------------------------
class Admin:
    """GET /admin/v1/nodes answers `raw` bytes."""

    def __init__(self, raw: bytes):
        stub = self
        self.raw = raw

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(stub.raw)))
                self.end_headers()
                self.wfile.write(stub.raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


ADMIN = [{"id": "one", "host": "127.0.0.1", "inference_port": 1, "poc_port": 9, "max_concurrent": 500,
          "models": {MODEL: {"args": ["--dtype", "float32"]}}},
         {"id": "two", "host": "127.0.0.1", "inference_port": 1, "poc_port": 9, "max_concurrent": 500,
          "models": {MODEL: {"args": []}}}]


@fuzz(10)
@given(muts=mutations(paths_of(ADMIN, 4)))
def test_admin_answers(muts, node, reference, tmp_path_factory, capsys):
    port = int(node.url.rsplit(":", 1)[1])
    base = [{**e, "inference_port": port} for e in ADMIN]
    admin = Admin(dumps(broken(base, muts)))
    out = tmp_path_factory.mktemp("fleet") / "out"
    try:
        rc, _, _ = cli(capsys, "fleet", "--admin", admin.url, "--reference", reference, "--batch-size", BATCH,
                       "--timeout", "3", "--connect-grace", "1", "--skip-throughput", "--out", out)
    finally:
        admin.close()
    if (out / "fleet.json").is_file():
        summary = json.loads((out / "fleet.json").read_text())
        assert summary["exit_code"] == rc
        for n in summary["nodes"]:
            if n["verdict"] in ("PASS", "PASS-with-mismatches", "FAIL", "INCOMPLETE"):  # it ran: its bundle is there
                assert_bundle(Path(n["bundle"]), n["exit_code"])
    else:
        assert rc == 2  # the admin answer itself was unusable: one line, nothing ran


# ---- answers: the chain -----------------------------------------------------------------------------
CHAIN_BASES = {
    "/chain-rpc/status": DOCUMENTED["get"]["/chain-rpc/status"],
    PARAMS: DOCUMENTED["get"][PARAMS],
    PARTICIPANTS: DOCUMENTED["get"][PARTICIPANTS],
    "/chain-rpc/block_search": DOCUMENTED["block_search"][EVENT_QUERY],
    "/chain-rpc/block_results": DOCUMENTED["block_results"]["984500"],
    DELEGATION + "gonka1alpha": DOCUMENTED["poc_delegation"]["gonka1alpha"],
}


@fuzz(40)
@given(where=st.sampled_from(sorted(CHAIN_BASES)), data=st.data())
def test_chain_answers(where, data, capsys):
    muts = data.draw(mutations(paths_of(CHAIN_BASES[where], 6)))
    c = _Chain(overrides={where: dumps(broken(CHAIN_BASES[where], muts))})
    try:
        rc, _, _ = cli(capsys, "chain", "status", "--node", c.url, "--timeout", "20")
    finally:
        c.close()
    assert rc in (0, 2)


# ---- answers: the node's /generate, its polls, /v1/models and /status; callbacks ----------------
ACK = {"status": "queued", "request_id": "0f5f3c9e-0000-4000-8000-000000000000", "queued_count": BATCH}
DONE = {"status": "completed", "request_id": "0f5f3c9e-0000-4000-8000-000000000000",
        "artifacts": [{"nonce": 0, "vector_b64": "ZrpmKjUkry4mM7iumDMUN9sma6w5MJIu"},
                      {"nonce": 1, "vector_b64": "PbhZrhOhcrhGszqyjKliMzY1NLJItQir"}],
        "encoding": {"dtype": "f16", "k_dim": 12, "endian": "le"}}
KINDS = {"ack": paths_of(ACK), "poll": paths_of(DONE), "answer": paths_of(DONE),
         "models": paths_of({"object": "list", "data": [{"id": MODEL, "root": MODEL}]}),
         "status": paths_of({"status": "GENERATING", "config": {"seq_len": 32}, "stats": {"total_processed": 8,
                                                                                          "nonces_per_second": 1.0}})}


def answer_mutations(kinds, most: int = 3):
    """(kind, nth answer of that kind, path, op, value) lists."""
    one = st.tuples(st.sampled_from(kinds), st.integers(1, 4), st.integers(0, 10**6),
                    st.sampled_from(["set", "set", "delete", "add"]), values)
    return st.lists(one.map(lambda t: (t[0], t[1], KINDS[t[0]][t[2] % len(KINDS[t[0]])], t[3], t[4])),
                    min_size=1, max_size=most)


class Fuzz(Scenario):
    """Forward every request to the real node, then break the n-th answer of a kind as drawn:
    "ack" (a queued submission's answer), "poll" (GET /generate/{id}), "answer" (a wait=true
    answer), "models" (GET /v1/models), "status" (GET /status). `callbacks`: bodies posted to the
    harness's callback URL when the throughput phase starts."""

    def __init__(self, muts, callbacks=()):
        self.muts, self.callbacks, self.seen = muts, list(callbacks), Counter()
        self.lock = threading.Lock()

    def route(self, conn, method, path, request):
        if method == "POST" and path == INIT and isinstance(request, dict) and request.get("url") and self.callbacks:
            threading.Thread(target=self._post, args=(request["url"],), daemon=True).start()
        wait = isinstance(request, dict) and request.get("wait") is True
        kind = {("POST", GENERATE): "answer" if wait else "ack", ("GET", MODELS): "models",
                ("GET", STATUS): "status"}.get((method, path))
        if method == "GET" and path.startswith(GENERATE + "/"):
            kind = "poll"
        if kind is None:
            return False
        r = conn.proxy.client.request(method, conn.proxy.upstream + conn.h.path,
                                      content=json.dumps(request).encode() if request is not None else None,
                                      headers={"Content-Type": "application/json"} if request is not None else {})
        try:
            body = r.json()
        except ValueError:
            body = r.text
        with self.lock:
            self.seen[kind] += 1
            n = self.seen[kind]
        for k, nth, p, op, value in self.muts:
            if k == kind and nth == n:
                body = apply(body, p, op, value)
        conn.send(r.status_code, dumps(body))
        return True

    def _post(self, url):
        import time

        time.sleep(0.2)
        for raw in self.callbacks:
            try:
                httpx.post(url + "/generated", content=raw, headers={"Content-Type": "application/json"}, timeout=5)
            except httpx.HTTPError:
                pass


def validate(url, reference, out, *extra) -> int:
    return main(["validate", "--url", url, "--reference", str(reference), "--batch-size", str(BATCH),
                 "--timeout", "2", "--connect-grace", "1", "--out", str(out), *extra])


@fuzz(30)
@given(muts=answer_mutations(["ack", "poll", "poll", "models"]))
def test_generate_answers_queued(muts, hostile, reference, tmp_path_factory, capsys):
    out = tmp_path_factory.mktemp("v") / "b"
    rc = validate(hostile(Fuzz(muts)).url, reference, out, "--skip-throughput")
    o, e = capsys.readouterr()
    assert_clean(o, e)
    assert_bundle(out, rc)


@fuzz(12)
@given(muts=answer_mutations(["answer", "answer", "models"]))
def test_generate_answers_wait_true(muts, hostile, reference, tmp_path_factory, capsys):
    out = tmp_path_factory.mktemp("v") / "b"
    rc = validate(hostile(Fuzz(muts)).url, reference, out, "--skip-throughput", "--in-flight", "0")
    o, e = capsys.readouterr()
    assert_clean(o, e)
    assert_bundle(out, rc)


CALLBACK = {"request_id": "x", "block_hash": "TEST_BLOCK", "block_height": 100, "public_key": "test_pub_keys_v2",
            "node_id": 0, "artifacts": [{"nonce": 3, "vector_b64": "ZrpmKjUkry4mM7iumDMUN9sma6w5MJIu"}],
            "encoding": {"dtype": "f16", "k_dim": 12, "endian": "le"}}


@fuzz(5)
@given(muts=answer_mutations(["status"], most=2), posts=st.lists(mutations(paths_of(CALLBACK)), min_size=1, max_size=3))
def test_status_answers_and_callbacks(muts, posts, hostile, reference, tmp_path_factory, capsys):
    callbacks = [dumps(broken(CALLBACK, m)) for m in posts]
    out = tmp_path_factory.mktemp("t") / "b"
    rc = validate(hostile(Fuzz(muts, callbacks)).url, reference, out, *THROUGHPUT)
    o, e = capsys.readouterr()
    assert_clean(o, e)
    assert_bundle(out, rc)
