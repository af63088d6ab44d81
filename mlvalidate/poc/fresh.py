"""Fresh challenges: PoC work the harness draws itself, so that no node can answer it from the
public golden reference (docs/poc-v2.md §4, "Fresh challenges").

* `draw_challenge`: a block hash and a public key from the operating system's CSPRNG
  (`secrets`), never the reference's, and N distinct nonces from the whole range the intake
  rule accepts, [0, 2^63); the reference's model, seq_len, k_dim, block height and node layout.
* `FreshAnswer`: one side's answer aligned to the challenge's nonces. Each nonce is USABLE (one
  usable vector), BAD (answered without a usable vector: left out of an answer that came back,
  undecodable, non-finite, or answered twice with different vectors) or MISSING (the request
  that asked for it never came back). Entries for nonces nobody asked for are kept apart.
* `compare_fresh` (a node against a trusted computation) and `compare_pair` (two nodes, neither
  trusted) give a `stats.Comparison` under the golden phase's gate and binomial test. Failing
  closed: a BAD nonce is a proven mismatch (and blocks a PASS), a MISSING one is unchecked,
  and an entry for a nonce that was not asked is malformed (it blocks a PASS too).
* `fleet_verdicts`: with no trusted side, each node of a fleet against the others (the
  majority rule is in its docstring).
"""

from __future__ import annotations

import base64
import itertools
import secrets
from dataclasses import dataclass, field

import numpy as np

from .intake import NONCE_LIMIT
from .stats import Comparison, StatTest, Verdict, l2_distances

USABLE, BAD, MISSING = 0, 1, 2
MAX_NONCES = 100_000  # a fresh challenge is a spot-check, not a second reference


@dataclass(frozen=True)
class Challenge:
    model: str
    seq_len: int
    k_dim: int
    block_hash: str
    public_key: str
    nonces: tuple[int, ...]
    block_height: int = 100
    node_id: int = 0
    node_count: int = 1

    @property
    def n(self) -> int:
        return len(self.nonces)

    def as_dict(self) -> dict:
        return {"model": self.model, "seq_len": self.seq_len, "k_dim": self.k_dim, "block_hash": self.block_hash,
                "public_key": self.public_key, "block_height": self.block_height, "node_id": self.node_id,
                "node_count": self.node_count, "nonces": list(self.nonces)}


def draw_challenge(model: str, seq_len: int, k_dim: int, n: int, *, block_height: int = 100, node_id: int = 0,
                   node_count: int = 1, avoid: tuple[str, ...] = ()) -> Challenge:
    """A challenge no one could have computed before the harness sends it: 256-bit block hash
    (64 upper-case hex digits, as a chain block hash), a 33-byte compressed-key-shaped public key
    (base64), `n` distinct nonces in [0, 2^63) in ascending order; none of `avoid`'s strings."""
    if not isinstance(n, int) or not 1 <= n <= MAX_NONCES:
        raise ValueError(f"a fresh challenge has 1..{MAX_NONCES} nonces, got {n!r}")
    while True:
        block_hash = secrets.token_hex(32).upper()
        public_key = base64.b64encode(bytes([2 + secrets.randbelow(2)]) + secrets.token_bytes(32)).decode("ascii")
        if block_hash not in avoid and public_key not in avoid:
            break
    nonces: set[int] = set()
    while len(nonces) < n:
        nonces.add(secrets.randbelow(NONCE_LIMIT))
    return Challenge(model, int(seq_len), int(k_dim), block_hash, public_key, tuple(sorted(nonces)),
                     int(block_height), int(node_id), int(node_count))


@dataclass
class FreshAnswer:
    """One side's answer to a challenge, one row per challenge nonce (challenge order)."""

    nonces: np.ndarray  # int64 [N]
    vectors: np.ndarray  # float32 [N, k]; NaN unless USABLE
    state: np.ndarray  # int8 [N]: USABLE, BAD or MISSING
    problems: dict[int, str] = field(default_factory=dict)  # nonce -> why it is BAD
    unrequested: list[int] = field(default_factory=list)  # nonces answered that were not asked
    malformed: list[str] = field(default_factory=list)
    n_malformed: int = 0
    error: str | None = None  # why the answer ended early

    @property
    def complete(self) -> bool:
        """Every nonce was answered (well or badly): the answer can vote in a fleet."""
        return not bool((self.state == MISSING).any())

    def counts(self) -> dict:
        return {"usable": int((self.state == USABLE).sum()), "bad": int((self.state == BAD).sum()),
                "missing": int((self.state == MISSING).sum()), "unrequested": len(self.unrequested),
                "malformed": self.n_malformed}

    def usable_rows(self) -> tuple[np.ndarray, np.ndarray]:
        ok = self.state == USABLE
        return self.nonces[ok], self.vectors[ok]


def fresh_answer(challenge_nonces, k: int, got_nonces, got_vectors, *, answered=None, problems=None,
                 unrequested=(), malformed=(), n_malformed: int = 0, error: str | None = None) -> FreshAnswer:
    """Align what came back to the challenge. `answered`: the nonces whose request came back
    (None: all of them, e.g. an in-process computation that ran to its end); a nonce answered
    but absent was left out of that answer (BAD), one not answered is MISSING. Rows that are
    not finite are BAD; nonces outside the challenge are unrequested."""
    cn = np.asarray(challenge_nonces, dtype=np.int64).reshape(-1)
    index = {int(x): i for i, x in enumerate(cn)}
    vec = np.full((cn.size, k), np.nan, dtype=np.float32)
    state = np.full(cn.size, MISSING, dtype=np.int8)
    why: dict[int, str] = {}
    extra = {int(x) for x in unrequested}
    gv = np.asarray(got_vectors, dtype=np.float32).reshape(-1, k) if len(got_nonces) else np.zeros((0, k), np.float32)
    for x, row in zip((int(x) for x in got_nonces), gv):
        i = index.get(x)
        if i is None:
            extra.add(x)
        elif np.isfinite(row).all():
            vec[i], state[i] = row, USABLE
        else:
            state[i] = BAD
            why[x] = (problems or {}).get(x, "unusable vector")
    came_back = None if answered is None else {int(x) for x in answered}
    for i in np.nonzero(state == MISSING)[0]:
        x = int(cn[i])
        if came_back is None or x in came_back:
            state[i] = BAD
            why[x] = "left out of an answer that came back"
    return FreshAnswer(cn, vec, state, why, sorted(extra), list(malformed), int(n_malformed), error)


def _comparison(nonces, a: FreshAnswer, b: FreshAnswer, missing, invalid, st: StatTest,
                sides: tuple[FreshAnswer, ...]) -> Comparison:
    both = (a.state == USABLE) & (b.state == USABLE)
    dist = np.full(nonces.size, np.nan, dtype=np.float32)
    if both.any():
        dist[both] = l2_distances(a.vectors[both], b.vectors[both])
    extra = sorted({x for s in sides for x in s.unrequested})
    malformed = [m for s in sides for m in s.malformed][:50]
    malformed += [f"an entry for nonce {x}, which was not asked" for x in extra][: max(0, 50 - len(malformed))]
    return Comparison(st, nonces, dist, missing, invalid, extra_nonces=extra, malformed=malformed,
                      n_malformed=sum(s.n_malformed for s in sides) + len(extra))


def compare_fresh(trusted: FreshAnswer, node: FreshAnswer, st: StatTest) -> Comparison:
    """The node against a trusted computation of the same challenge. A nonce the trusted side
    has no usable vector for cannot be checked (missing); the node's BAD nonces are proven
    mismatches, its MISSING ones unchecked; its unrequested entries are malformed."""
    _same_nonces(trusted, node)
    ok = trusted.state == USABLE
    missing = ~ok | (node.state == MISSING)
    invalid = ok & (node.state == BAD)
    return _comparison(node.nonces, trusted, node, missing, invalid, st, (node,))


def compare_pair(a: FreshAnswer, b: FreshAnswer, st: StatTest) -> Comparison:
    """Two answers, neither trusted (symmetric): a nonce either side never answered is
    unchecked; one either side answered badly is a mismatch between them."""
    _same_nonces(a, b)
    missing = (a.state == MISSING) | (b.state == MISSING)
    invalid = ~missing & ((a.state == BAD) | (b.state == BAD))
    return _comparison(a.nonces, a, b, missing, invalid, st, (a, b))


def _same_nonces(a: FreshAnswer, b: FreshAnswer) -> None:
    if a.nonces.shape != b.nonces.shape or not np.array_equal(a.nonces, b.nonces):
        raise ValueError("the two answers are not for the same challenge")


def relation(comp: Comparison) -> str:
    """What a pair's comparison says: 'agree' (PASS / PASS-with-mismatches), 'disagree'
    (the binomial test proves they differ), 'unknown' (not everything could be compared)."""
    v = comp.verdict
    return "disagree" if v is Verdict.FAIL else "unknown" if v is Verdict.INCOMPLETE else "agree"


def median_distance(comp: Comparison) -> float | None:
    d = comp.distances[np.isfinite(comp.distances)]
    return float(np.median(d)) if d.size else None


@dataclass(frozen=True)
class NodeFreshVerdict:
    verdict: str  # PASS, PASS-with-mismatches, FAIL, INCOMPLETE
    reason: str


def fleet_verdicts(answers: dict[str, FreshAnswer], st: StatTest
                   ) -> tuple[dict[str, NodeFreshVerdict], dict[tuple[str, str], Comparison]]:
    """Each node's verdict from the pairwise comparisons, no side trusted.

    Voters are the nodes that answered every nonce (well or badly). A voter's support is itself
    plus the voters it agrees with; the majority is every voter supported by more than half of
    the voters. A majority node that agrees with every other majority node PASSes (with
    mismatches if some pair had any); one that does not is INCOMPLETE (the majority is split).
    A node outside it FAILs when it disagrees with every majority node, and is INCOMPLETE
    otherwise. Without a majority (two nodes that disagree, a tie), every node is INCOMPLETE:
    nothing says which one is right."""
    names = list(answers)
    pairs = {(a, b): compare_pair(answers[a], answers[b], st) for a, b in itertools.combinations(names, 2)}

    def rel(a: str, b: str) -> str:
        return relation(pairs[(a, b)] if (a, b) in pairs else pairs[(b, a)])

    def comp(a: str, b: str) -> Comparison:
        return pairs[(a, b)] if (a, b) in pairs else pairs[(b, a)]

    voters = [n for n in names if answers[n].complete]
    out: dict[str, NodeFreshVerdict] = {}
    if len(voters) < 2:
        why = ("no other node answered the same challenge in full: nothing to compare with (a trusted computation, "
               "--against, decides alone)")
        return {n: NodeFreshVerdict("INCOMPLETE", why) for n in names}, pairs
    support = {v: 1 + sum(rel(v, w) == "agree" for w in voters if w != v) for v in voters}
    majority = [v for v in voters if 2 * support[v] > len(voters)]
    if not majority:
        why = (f"the {len(voters)} nodes that answered in full disagree and none has a majority: cannot tell which "
               "is right (a third node or --against decides)")
        return {n: NodeFreshVerdict("INCOMPLETE", why) for n in names}, pairs
    for n in names:
        others = [m for m in majority if m != n]
        if n in majority:
            split = [m for m in others if rel(n, m) != "agree"]
            if split:
                out[n] = NodeFreshVerdict("INCOMPLETE", f"in the majority, but not in agreement with "
                                                        f"{', '.join(split)}: the majority is split")
            else:
                pwm = any(comp(n, m).n_mismatch for m in others)
                out[n] = NodeFreshVerdict("PASS-with-mismatches" if pwm else "PASS",
                                          f"agrees with {', '.join(others) or 'no other node'} "
                                          f"({len(majority)} of {len(voters)} nodes that answered in full)")
        elif all(rel(n, m) == "disagree" for m in majority):
            worst = max(comp(n, m).p_value for m in majority)
            out[n] = NodeFreshVerdict("FAIL", f"disagrees with the majority ({', '.join(majority)}, {len(majority)} of "
                                              f"{len(voters)}): fraud proven against each (p_value <= {worst:.3g})")
        else:
            out[n] = NodeFreshVerdict("INCOMPLETE", "outside the majority "
                                      f"({', '.join(majority)}) without disagreeing with all of it")
    return out, pairs
