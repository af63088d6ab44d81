"""Golden PoC v2 references (spec §6): strict loading, stat-test resolution, writing (finding the
file: reference_lookup.py).

A reference file is also the format of any set of computed vectors (a run's vectors.json,
a `check` input), so any two runs can be compared later. Two readers share one parser:
* `load_reference`: strict — the file is the yardstick, so every defect is an error.
* `load_computed`: the file is the system under test's output, so per-vector defects
  (empty, undecodable, wrong length, non-finite) are not errors but 'invalid' vectors that
  the comparison counts against the node; only structural defects are errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ReferenceError_
from .poc.codec import VectorDecodeError, b64_length, decode_vectors, encode_vectors, encoding_for
from .poc.intake import NONCE_LIMIT, Intake, IntakeResult
from .poc.stats import SERVER_DEFAULTS, StatTest, binomial_p_value
from .reference_lookup import Found, read_json_file, resolve_reference

REQUIRED = ("model", "seq_len", "k_dim", "block_hash", "public_key", "artifacts")
DEFAULTS = {"block_height": 100, "node_id": 0, "node_count": 1}  # validate.py's defaults when absent
K_DIM_MAX = 4096  # PoC v2 uses k = 12; a bound keeps a hostile k_dim from allocating N x 10^12 floats
SEQ_LEN_MAX = 1 << 20  # PoC sequences are 256-4096 tokens; a bound keeps a hostile seq_len from sizing a node's inputs
INT64_MAX = 2**63 - 1  # block heights and node ids are int64 on the chain and the wire


@dataclass
class Reference:
    """A parsed reference or set of computed vectors."""

    path: Path | None
    model: str
    seq_len: int
    k_dim: int
    block_hash: str
    public_key: str
    block_height: int
    node_id: int
    node_count: int
    nonces: np.ndarray  # int64 [N]
    vectors: np.ndarray  # float32 [N, k]; NaN rows where a computed vector is invalid
    vectors_b64: list[str]  # a strict reference's strings, file order; empty for a computed file
    valid: np.ndarray  # bool [N]; always all True for a strict reference
    problems: dict[int, str] = field(default_factory=dict)  # nonce -> why invalid
    dist_threshold: float | None = None
    stat_test: dict = field(default_factory=dict)
    additional_args: list[str] = field(default_factory=list)
    source: str | None = None
    generated_at: str | None = None
    notes: str | None = None
    collection_batch_size: int | None = None
    stronger_rng: bool = False  # poc_stronger_rng: the inputs come from the stronger RNG (spec §1.5)
    raw: dict = field(default_factory=dict, repr=False)  # the document without its artifacts
    intake: IntakeResult | None = field(default=None, repr=False)  # a computed file's intake (strict=False)
    found: Found | None = field(default=None, repr=False)  # how load_reference found the file (a model id: why)

    @property
    def n(self) -> int:
        return int(self.nonces.size)

    def label(self) -> str:
        return str(self.path) if self.path else self.model


def _fail(where: str, msg: str, hint: str | None = None) -> ReferenceError_:
    return ReferenceError_(f"{where}: {msg}", hint)


def _int_field(doc: dict, key: str, where: str, minimum: int | None = None, maximum: int | None = None) -> int:
    v = doc.get(key, DEFAULTS.get(key))
    if isinstance(v, bool) or not isinstance(v, int):
        raise _fail(where, f"field {key!r} must be an integer, got {_short(v)}")
    if minimum is not None and v < minimum:
        raise _fail(where, f"field {key!r} must be >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise _fail(where, f"field {key!r} must be <= {maximum}, got {_short(v)}")
    return v


def _short(v, limit: int = 60) -> str:
    try:
        text = repr(v)
    except ValueError:  # an int past Python's digit limit
        text = f"an integer of about {v.bit_length() * 3 // 10} digits" if isinstance(v, int) else type(v).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _str_field(doc: dict, key: str, where: str) -> str:
    v = doc.get(key)
    if not isinstance(v, str) or not v:
        raise _fail(where, f"field {key!r} must be a non-empty string, got {_short(v)}")
    return v


def _finite(v) -> float | None:
    """float(v) for a finite JSON number (bool excluded), else None (an int too large for a float too)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _float_or_none(doc: dict, key: str, where: str) -> float | None:
    v = doc.get(key)
    if v is None:
        return None
    f = _finite(v)
    if f is None:
        raise _fail(where, f"field {key!r} must be a finite number, got {_short(v)}")
    return f


def _str_list(doc: dict, key: str, where: str) -> list[str]:
    v = doc.get(key)
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _fail(where, f"field {key!r} must be a list of strings, got {_short(v)}",
                    'e.g. "additional_args": ["--tensor-parallel-size", "2"]')
    return list(v)


def parse_reference(doc, where: str = "reference", strict: bool = True, path: Path | None = None,
                    against: Reference | None = None) -> Reference:
    """Validate a decoded JSON document against the golden schema (spec §6).

    strict (a reference): every defect is an error, duplicate or invalid nonces included.
    strict=False (computed vectors): the artifacts go through the intake rule
    (`poc.intake.Intake`): malformed entries, unusable rows and conflicting duplicates are
    recorded for the comparison, not raised. `against`: the reference these vectors must
    have been computed for; its PoC params (k_dim included) are checked before anything
    is decoded."""
    if not isinstance(doc, dict):
        raise _fail(where, f"top level must be a JSON object, got {_json_type(doc)}",
                    "is this a golden-reference JSON (spec §6)?")
    missing = [k for k in REQUIRED if k not in doc]
    if missing:
        raise _fail(where, f"missing field(s): {', '.join(missing)}", "is this a golden-reference JSON (spec §6)?")
    model = _str_field(doc, "model", where)
    seq_len = _int_field(doc, "seq_len", where, 1, SEQ_LEN_MAX)
    k = _int_field(doc, "k_dim", where, 1, K_DIM_MAX)
    enc = doc.get("encoding")
    if enc is not None:
        if not isinstance(enc, dict):
            raise _fail(where, f"field 'encoding' must be an object, got {_short(enc)}")
        want = encoding_for(k)
        bad = {key: enc.get(key) for key in want if key in enc and enc[key] != want[key]}
        if bad:
            raise _fail(where, f"encoding {_short(bad, 120)} does not match the PoC v2 encoding {want}")
    stat_doc = doc.get("stat_test")
    if stat_doc is None:
        stat_doc = {}
    if not isinstance(stat_doc, dict):
        raise _fail(where, f"field 'stat_test' must be an object, got {_short(stat_doc)}")
    for key in ("p_mismatch", "fraud_threshold", "dist_threshold"):
        _float_or_none(stat_doc, key, f"{where}: stat_test")
    stronger = doc.get("poc_stronger_rng", False)
    if not isinstance(stronger, bool):
        raise _fail(where, f"field 'poc_stronger_rng' must be true or false, got {_short(stronger)}")
    cbs = doc.get("collection_batch_size")
    if cbs is not None and (isinstance(cbs, bool) or not isinstance(cbs, int) or cbs < 1):
        raise _fail(where, f"field 'collection_batch_size' must be a positive integer or null, got {_short(cbs)}")
    ref = Reference(
        path=path,
        model=model,
        seq_len=seq_len,
        k_dim=k,
        block_hash=_str_field(doc, "block_hash", where),
        public_key=_str_field(doc, "public_key", where),
        block_height=_int_field(doc, "block_height", where, 0, INT64_MAX),
        node_id=_int_field(doc, "node_id", where, 0, INT64_MAX),
        node_count=_int_field(doc, "node_count", where, 1, INT64_MAX),
        nonces=np.zeros(0, np.int64),
        vectors=np.zeros((0, k), np.float32),
        vectors_b64=[],
        valid=np.zeros(0, bool),
        dist_threshold=_float_or_none(doc, "dist_threshold", where),
        stat_test=dict(stat_doc),
        additional_args=_str_list(doc, "additional_args", where),
        source=doc.get("source"),
        generated_at=doc.get("generated_at"),
        notes=doc.get("notes"),
        collection_batch_size=cbs,
        stronger_rng=stronger,
        raw={key: v for key, v in doc.items() if key != "artifacts"},
    )
    if against is not None:
        diff = same_poc_params(against, ref)
        if diff:
            raise ReferenceError_(
                f"{where} was not computed with the reference's PoC params ({'; '.join(diff)})",
                "compute the vectors with the reference's model, seq_len, k_dim, block_hash and public_key",
            )
    arts = doc["artifacts"]
    if not isinstance(arts, list) or not arts:
        raise _fail(where, f"field 'artifacts' must be a non-empty list, got {_short(arts)}")
    if strict:
        _strict_artifacts(ref, arts, where)
    else:
        intake = Intake(k)
        intake.add(arts, asked=None, where="artifacts")
        res = intake.result()
        ref.nonces, ref.vectors, ref.problems, ref.intake = res.nonces, res.vectors, dict(res.problems), res
        ref.valid = np.isfinite(res.vectors).all(axis=1) if res.n else np.zeros(0, bool)
    return ref


def _json_type(v) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(v), type(v).__name__)


def _strict_artifacts(ref: Reference, arts: list, where: str) -> None:
    """A reference's artifacts: every entry an object with a valid nonce (once) and a good vector."""
    nonce_arr, b64 = _fast_artifacts(arts)
    if nonce_arr is None:
        nonce_arr, b64 = _checked_artifacts(arts, where)
    uniq, counts = np.unique(nonce_arr, return_counts=True)
    if (counts > 1).any():
        raise _fail(where, f"duplicate nonces: {uniq[counts > 1][:10].tolist()}", "every nonce may appear once")
    ref.vectors, ref.valid, ref.problems = _decode(b64, ref.k_dim, nonce_arr, where, True)
    ref.nonces, ref.vectors_b64 = nonce_arr, b64


def _fast_artifacts(arts: list) -> tuple[np.ndarray | None, list]:
    """(nonces, vector strings) when every entry is well-formed, in a few C-speed passes;
    (None, []) at the first doubt, and `_checked_artifacts` finds and names the bad entry."""
    try:
        nonces = [a["nonce"] for a in arts]
        b64 = [a["vector_b64"] for a in arts]
    except (TypeError, KeyError, IndexError):
        return None, []
    if set(map(type, nonces)) != {int}:  # bool, float, str, list, null: the checked path names it
        return None, []
    try:
        arr = np.asarray(nonces, dtype=np.int64)
    except OverflowError:  # a nonce >= 2^63 (or < -2^63)
        return None, []
    if arr.size and arr.min() < 0:
        return None, []
    return arr, b64


def _checked_artifacts(arts: list, where: str) -> tuple[np.ndarray, list]:
    nonces, b64 = [], []
    for i, a in enumerate(arts):
        if not isinstance(a, dict) or "nonce" not in a or "vector_b64" not in a:
            raise _fail(where, f"artifact #{i} must be an object with 'nonce' and 'vector_b64', got {_short(a, 80)}")
        n = a["nonce"]
        if type(n) is not int or not 0 <= n < NONCE_LIMIT:  # bool and float excluded by the exact type
            raise _fail(where, f"artifact #{i}: nonce must be a non-negative integer below 2^63, got {_short(n)}",
                        "a golden reference holds JSON integer nonces only")
        nonces.append(n)
        b64.append(a["vector_b64"])
    return np.asarray(nonces, dtype=np.int64), b64


def _decode(b64: list, k: int, nonces: np.ndarray, where: str, strict: bool):
    """Decode all vectors at once; on failure find every bad row (strict: first one is an error)."""
    n = len(b64)
    try:
        vecs = decode_vectors(b64, k)
        problems = {}
    except VectorDecodeError as e:
        if strict:
            raise _fail(
                where,
                f"nonce {int(nonces[e.index])}: {e.reason}",
                f"every vector_b64 must be base64 of {k} little-endian fp16 values ({b64_length(k)} chars)",
            ) from None
        vecs = np.full((n, k), np.nan, dtype=np.float32)
        problems = {}
        for i, s in enumerate(b64):
            try:
                vecs[i] = decode_vectors([s], k)[0]
            except VectorDecodeError as ee:
                problems[int(nonces[i])] = ee.reason
    finite = np.isfinite(vecs).all(axis=1)
    for i in np.nonzero(~finite)[0]:
        problems.setdefault(int(nonces[i]), "non-finite value(s)")
    if strict and problems:
        nonce, why = next(iter(problems.items()))
        raise _fail(where, f"nonce {nonce}: {why}", "a golden reference must hold finite vectors only")
    valid = np.array([int(x) not in problems for x in nonces], dtype=bool) if problems else np.ones(n, bool)
    vecs[~valid] = np.nan
    return vecs, valid, problems


def load_reference(path_or_model: str | Path, model: str | None = None) -> Reference:
    """Load and strictly validate a golden reference; `model`, if given, must equal its 'model'."""
    found = resolve_reference(str(path_or_model))
    path = found.path
    ref = parse_reference(read_json_file(path, "reference"), where=str(path), strict=True, path=path)
    ref.found = found
    if model is not None and ref.model != model:
        raise ReferenceError_(
            f"{path}: reference is for model {ref.model!r}, not {model!r}",
            "pick the reference of the model you serve",
        )
    return ref


def load_computed(path: str | Path, against: Reference | None = None) -> Reference:
    """Load a file of computed vectors (golden schema) through the intake rule: malformed
    entries, unusable vectors and conflicting duplicates are recorded (`.intake`,
    `.problems`, NaN rows), not raised. `against`: the reference the vectors are for; its
    PoC params, k_dim included, must match before any vector is decoded."""
    p = Path(path)
    return parse_reference(read_json_file(p, "computed vectors"), where=str(p), strict=False, path=p, against=against)


def same_poc_params(a: Reference, b: Reference) -> list[str]:
    """Differences in the fields that determine the vectors (model, seq_len, k_dim, block_hash, public_key)."""
    out = []
    for key in ("model", "seq_len", "k_dim", "block_hash", "public_key"):
        if getattr(a, key) != getattr(b, key):
            out.append(f"{key}: {getattr(a, key)!r} vs {getattr(b, key)!r}")
    return out


# ----------------------------------------------------------------------------------------
# stat test resolution with provenance: server default -> reference -> command line
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResolvedStatTest:
    values: StatTest
    sources: dict[str, str]  # key -> "server-default" | "reference" | "cli"

    def as_dict(self) -> dict:
        return {"values": self.values.as_dict(), "source": dict(self.sources)}


def stat_test_problem(vals: dict, n_total: int | None) -> str | None:
    """Why a stat test (dist_threshold, p_mismatch, fraud_threshold) is unusable, or None.

    A test that cannot fail is unusable: an L2 gate at or past 2 (PoC vectors are unit
    vectors, so no pair is farther apart) or non-finite, probabilities outside (0, 1), and
    settings under which even n_total mismatches out of n_total are not fraud."""
    d = vals["dist_threshold"]
    if not (math.isfinite(d) and d > 0):
        return f"dist_threshold must be a finite number > 0, got {d:g}"
    if d >= 2:
        return (f"dist_threshold {d:g} is >= 2, the largest L2 distance between two unit vectors: every vector "
                "would match, so this test cannot fail")
    for k in ("p_mismatch", "fraud_threshold"):
        v = vals[k]
        if not (math.isfinite(v) and 0 < v < 1):
            return f"{k} must be a number in (0, 1), got {v:g}"
    if n_total:
        p, f = vals["p_mismatch"], vals["fraud_threshold"]
        # the smallest p-value the test can give is n_total mismatches of n_total: P(X >= n) = p**n. Closed
        # form, so reading a reference needs no scipy.stats (~0.6 s of CPU to import); near the threshold the
        # verdict's own binomial test decides (the two agree to ~1e-13 relative)
        p_all = p ** n_total
        if abs(p_all - f) <= 1e-9 * f:
            p_all = binomial_p_value(n_total, n_total, p)
        if p_all >= f:
            return (f"with p_mismatch {p:g} even {n_total}/{n_total} mismatches give p={p_all:.4g} >= "
                    f"fraud_threshold {f:g}: this test cannot fail")
    return None


def resolve_stat_test(ref: Reference | None, overrides: dict | None = None) -> ResolvedStatTest:
    """dist_threshold comes from the reference's TOP-LEVEL field (a stat_test.dist_threshold is
    ignored, as the node tooling does); p_mismatch and fraud_threshold from its stat_test.
    A stat test that cannot fail (see `stat_test_problem`; n_total = the reference's nonce
    count) is refused with a ReferenceError_."""
    vals = SERVER_DEFAULTS.as_dict()
    src = {k: "server-default" for k in vals}
    if ref is not None:
        from_ref = {
            "dist_threshold": ref.dist_threshold,
            "p_mismatch": ref.stat_test.get("p_mismatch"),
            "fraud_threshold": ref.stat_test.get("fraud_threshold"),
        }
        for k, v in from_ref.items():
            if v is not None:
                vals[k], src[k] = float(v), "reference"
    for k, v in (overrides or {}).items():
        if v is not None:
            if k not in vals:
                raise ValueError(f"unknown stat-test key {k!r}")
            vals[k], src[k] = float(v), "cli"
    problem = stat_test_problem(vals, ref.n if ref is not None else None)
    if problem:
        origin = ", ".join(f"{k} from {src[k]}" for k in vals)
        raise ReferenceError_(
            f"stat test refused: {problem} ({origin})",
            "use --threshold / --p-mismatch / --fraud-threshold values under which a cheating node can fail, "
            "or fix the reference's dist_threshold / stat_test",
        )
    return ResolvedStatTest(StatTest(**vals), src)


# ----------------------------------------------------------------------------------------
# writing (bake, run bundles)
# ----------------------------------------------------------------------------------------
def reference_document(
    *,
    model: str,
    seq_len: int,
    k_dim: int,
    block_hash: str,
    public_key: str,
    nonces,
    vectors,
    block_height: int = 100,
    node_id: int = 0,
    node_count: int = 1,
    dist_threshold: float | None = None,
    stat_test: dict | None = None,
    additional_args: list[str] | None = None,
    source: str = "",
    generated_at: str | None = None,
    collection_batch_size: int | None = None,
    notes: str | None = None,
    stronger_rng: bool = False,
) -> dict:
    """A dict in the golden schema, fields in the published files' order."""
    import datetime as _dt

    doc = {
        "model": model,
        "seq_len": int(seq_len),
        "k_dim": int(k_dim),
        "block_hash": block_hash,
        "block_height": int(block_height),
        "public_key": public_key,
        "node_id": int(node_id),
        "node_count": int(node_count),
    }
    if stronger_rng:  # absent means false, as in the published references
        doc["poc_stronger_rng"] = True
    if dist_threshold is not None:
        doc["dist_threshold"] = float(dist_threshold)
    if stat_test:
        doc["stat_test"] = dict(stat_test)
    doc["additional_args"] = list(additional_args or [])
    doc["source"] = source
    doc["generated_at"] = generated_at or _dt.datetime.now().isoformat()
    doc["encoding"] = encoding_for(k_dim)
    if notes:
        doc["notes"] = notes
    doc["collection_batch_size"] = collection_batch_size
    doc["artifacts"] = [
        {"nonce": int(n), "vector_b64": s} for n, s in zip(nonces, encode_vectors(np.asarray(vectors)))
    ]
    return doc


def write_json(path: str | Path, doc: dict) -> Path:
    """json.dumps(indent=2, ensure_ascii=False) + newline, written atomically (jsonio.write_json)."""
    from .jsonio import write_json as _write

    return _write(path, doc)
