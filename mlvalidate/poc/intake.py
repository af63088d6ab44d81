"""One rule for every set of PoC artifacts that comes in from a system under test.

Vectors reach the harness three ways: a node's `/generate` answers, the throughput phase's
`/generated` callbacks, and a `check` input file. All of them go through `Intake`, so a
hostile or broken node is treated the same wherever it speaks:

* an entry is `{"nonce": n, "vector_b64": s}`; the nonce must be a JSON integer in
  [0, 2^63) — `true`, `3.0`, `"5"`, `[1]` or an absent nonce make the entry *malformed*
  (listed with the reason, never coerced);
* a vector that does not decode to k fp16 values, or holds NaN/Inf, is *unusable*: its nonce
  stays answered but counts as a mismatch (a NaN row here, the reason in `problems`);
* a nonce answered twice with the same vector is harmless; answered with different vectors
  (or one usable and one not) it is *conflicting*: the node gave two answers, so the nonce is
  unusable and listed;
* a nonce the request did not ask for is *unrequested*: listed, and still an answer for that
  nonce (a second, different answer for it later is a conflict).

Nothing is dropped without a trace: every entry ends up in `vectors`, `malformed` or both
`vectors` and `unrequested`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .codec import VectorDecodeError, decode_vectors

NONCE_LIMIT = 2**63  # nonces are int64 on the wire and on the chain
MAX_LISTED = 50  # reasons kept per category (counts are always exact)


def nonce_problem(n) -> str | None:
    """Why `n` (a decoded JSON value) is not a valid nonce, or None if it is one."""
    if type(n) is not int:  # bool is a subclass of int: excluded by the exact type check
        return f"nonce must be a JSON integer, got {_short(n)}"
    if not 0 <= n < NONCE_LIMIT:
        return f"nonce {n} is outside [0, 2^63)"
    return None


def _short(x, limit: int = 60) -> str:
    text = repr(x)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class IntakeResult:
    """What a system under test answered, one row per distinct nonce."""

    k: int
    nonces: np.ndarray  # int64 [M], sorted
    vectors: np.ndarray  # float32 [M, k] (the fp16 values); NaN rows are unusable
    problems: dict[int, str] = field(default_factory=dict)  # nonce -> why its row is unusable
    conflicting: list[int] = field(default_factory=list)  # nonces answered with different vectors
    unrequested: list[int] = field(default_factory=list)  # nonces answered without being asked
    malformed: list[str] = field(default_factory=list)  # first MAX_LISTED reasons
    n_malformed: int = 0
    answered: frozenset[int] | None = None  # the nonces asked by answers that came back as lists (None: no `asked`)

    @property
    def n(self) -> int:
        return int(self.nonces.size)


class Intake:
    """Collects entries over many answers (chunks, callbacks) and resolves them once."""

    def __init__(self, k: int):
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        self.k = k
        self._nonces: list[int] = []
        self._b64: list = []
        self._unrequested: list[int] = []
        self._malformed: list[str] = []
        self.n_malformed = 0
        self.n_entries = 0
        self._answered: set[int] | None = None

    def malformed(self, reason: str) -> None:
        """Record something that names no nonce (an entry, or a whole answer that is not a list)."""
        self.n_malformed += 1
        if len(self._malformed) < MAX_LISTED:
            self._malformed.append(reason)

    def add(self, entries, asked: set[int] | None = None, where: str = "answer") -> None:
        """Entries of one answer (any decoded JSON value). `asked`: the nonces that answer was
        for (None: no request, e.g. a file)."""
        if not isinstance(entries, list):
            self.malformed(f"{where}: artifacts must be a list, got {_short(entries)}")
            return
        if asked is not None:
            self._answered = (self._answered or set()) | set(asked)
        for i, a in enumerate(entries):
            self.n_entries += 1
            if not isinstance(a, dict):
                self.malformed(f"{where}: entry #{i} is not an object: {_short(a)}")
                continue
            why = nonce_problem(a.get("nonce")) if "nonce" in a else "no 'nonce' field"
            if why:
                self.malformed(f"{where}: entry #{i}: {why}")
                continue
            n = a["nonce"]
            if asked is not None and n not in asked:
                self._unrequested.append(n)
            self._nonces.append(n)
            self._b64.append(a.get("vector_b64"))

    def result(self) -> IntakeResult:
        k = self.k
        answered = None if self._answered is None else frozenset(self._answered)
        if not self._nonces:
            return IntakeResult(k, np.zeros(0, np.int64), np.zeros((0, k), np.float32),
                                unrequested=[], malformed=list(self._malformed), n_malformed=self.n_malformed,
                                answered=answered)
        rows, row_problems = decode_rows(self._b64, k)
        nonces = np.asarray(self._nonces, dtype=np.int64)
        uniq, first, inverse, counts = np.unique(nonces, return_index=True, return_inverse=True, return_counts=True)
        vectors = rows[first].copy()
        problems = {int(nonces[i]): why for i, why in row_problems.items()}
        conflicting = []
        for j in np.nonzero(counts > 1)[0]:  # rare: only nonces answered more than once
            idx = np.nonzero(inverse == j)[0]
            answers = {_answer_key(rows[i], row_problems.get(int(i)), self._b64[i]) for i in idx}
            n = int(uniq[j])
            if len(answers) > 1:
                conflicting.append(n)
                vectors[j] = np.nan
                problems[n] = f"{len(answers)} different answers for this nonce"
        return IntakeResult(k, uniq, vectors, problems, conflicting,
                            sorted(set(self._unrequested)), list(self._malformed), self.n_malformed, answered)


def _answer_key(row: np.ndarray, problem: str | None, raw) -> tuple:
    if problem is None:
        return ("vector", row.tobytes())
    return ("unusable", _short(raw, 200))


def decode_rows(b64: list, k: int) -> tuple[np.ndarray, dict[int, str]]:
    """float32 [N, k] rows of N base64 strings, NaN where a row is unusable, and the reasons
    {row index: why}. One batched decode when every row is good; per row otherwise."""
    n = len(b64)
    try:
        rows = decode_vectors(b64, k)
        problems: dict[int, str] = {}
    except VectorDecodeError:
        rows = np.full((n, k), np.nan, dtype=np.float32)
        problems = {}
        for i, s in enumerate(b64):
            try:
                rows[i] = decode_vectors([s], k)[0]
            except VectorDecodeError as e:
                problems[i] = e.reason
    bad = ~np.isfinite(rows).all(axis=1)
    for i in np.nonzero(bad)[0]:
        problems.setdefault(int(i), "non-finite value(s)")
    rows[bad] = np.nan
    return rows, problems
