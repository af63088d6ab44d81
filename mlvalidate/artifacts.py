"""Golden PoC v2 references (spec §6): strict loading, lookup by model id, writing.

A reference file is also the format of any set of computed vectors (a run's vectors.json,
a `check` input), so any two runs can be compared later. Two readers share one parser:
* `load_reference`: strict — the file is the yardstick, so every defect is an error.
* `load_computed`: the file is the system under test's output, so per-vector defects
  (empty, undecodable, wrong length, non-finite) are not errors but 'invalid' vectors that
  the comparison counts against the node; only structural defects are errors.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ReferenceError_
from .poc.codec import VectorDecodeError, b64_length, decode_vectors, encode_vectors, encoding_for
from .poc.stats import SERVER_DEFAULTS, StatTest

REQUIRED = ("model", "seq_len", "k_dim", "block_hash", "public_key", "artifacts")
DEFAULTS = {"block_height": 100, "node_id": 0, "node_count": 1}  # validate.py's defaults when absent
PACKAGE_ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


def safe_id(model: str) -> str:
    """Model id -> reference file stem: lower case, '/', '\\', ':' and spaces -> '-', '--' collapsed."""
    s = re.sub(r"[/\\: ]", "-", model.lower())
    return re.sub(r"-{2,}", "-", s)


def artifacts_dirs() -> list[Path]:
    """Where references are looked up: $MLVALIDATE_ARTIFACTS (os.pathsep list), ./artifacts, the shipped folder."""
    dirs = [Path(p) for p in os.environ.get("MLVALIDATE_ARTIFACTS", "").split(os.pathsep) if p]
    dirs += [Path.cwd() / "artifacts", PACKAGE_ARTIFACTS]
    seen, out = set(), []
    for d in dirs:
        key = d.resolve()
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def find_reference(model: str) -> Path:
    """The reference file for a model id (e.g. 'MiniMaxAI/MiniMax-M2.7')."""
    name = safe_id(model) + ".json"
    for d in artifacts_dirs():
        if (d / name).is_file():
            return d / name
    raise ReferenceError_(
        f"no golden reference for model {model!r} (looked for {name} in {', '.join(map(str, artifacts_dirs()))})",
        "pass the reference file's path, or set MLVALIDATE_ARTIFACTS to its folder",
    )


_MODEL_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")  # "org/name" or "name"


def resolve_reference_arg(arg: str) -> Path:
    """A CLI REFERENCE argument: an existing file, else a model id such as 'MiniMaxAI/MiniMax-M2.7'."""
    p = Path(arg)
    if p.is_file():
        return p
    if arg.endswith(".json") or not _MODEL_ID.match(arg):
        raise ReferenceError_(f"reference file not found: {arg}", "check the path, or pass a model id")
    return find_reference(arg)


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
    vectors_b64: list[str]
    valid: np.ndarray  # bool [N]; always all True for a strict reference
    problems: dict[int, str] = field(default_factory=dict)  # nonce -> why invalid
    dist_threshold: float | None = None
    stat_test: dict = field(default_factory=dict)
    additional_args: list[str] = field(default_factory=list)
    source: str | None = None
    generated_at: str | None = None
    notes: str | None = None
    collection_batch_size: int | None = None
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        return int(self.nonces.size)

    def label(self) -> str:
        return str(self.path) if self.path else self.model


def _fail(where: str, msg: str, hint: str | None = None) -> ReferenceError_:
    return ReferenceError_(f"{where}: {msg}", hint)


def _int_field(doc: dict, key: str, where: str, minimum: int | None = None) -> int:
    v = doc.get(key, DEFAULTS.get(key))
    if isinstance(v, bool) or not isinstance(v, int):
        raise _fail(where, f"field {key!r} must be an integer, got {v!r}")
    if minimum is not None and v < minimum:
        raise _fail(where, f"field {key!r} must be >= {minimum}, got {v}")
    return v


def _str_field(doc: dict, key: str, where: str) -> str:
    v = doc.get(key)
    if not isinstance(v, str) or not v:
        raise _fail(where, f"field {key!r} must be a non-empty string, got {v!r}")
    return v


def _float_or_none(doc: dict, key: str, where: str) -> float | None:
    v = doc.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _fail(where, f"field {key!r} must be a finite number, got {v!r}")
    return float(v)


def parse_reference(doc, where: str = "reference", strict: bool = True, path: Path | None = None) -> Reference:
    """Validate a decoded JSON document against the golden schema (spec §6)."""
    if not isinstance(doc, dict):
        raise _fail(where, f"top level must be a JSON object, got {type(doc).__name__}")
    missing = [k for k in REQUIRED if k not in doc]
    if missing:
        raise _fail(where, f"missing field(s): {', '.join(missing)}", "is this a golden-reference JSON (spec §6)?")
    model = _str_field(doc, "model", where)
    seq_len = _int_field(doc, "seq_len", where, 1)
    k = _int_field(doc, "k_dim", where, 1)
    enc = doc.get("encoding")
    if enc is not None:
        if not isinstance(enc, dict):
            raise _fail(where, f"field 'encoding' must be an object, got {enc!r}")
        want = encoding_for(k)
        bad = {key: enc.get(key) for key in want if key in enc and enc[key] != want[key]}
        if bad:
            raise _fail(where, f"encoding {bad} does not match the PoC v2 encoding {want}")
    stat = doc.get("stat_test") or {}
    if not isinstance(stat, dict):
        raise _fail(where, f"field 'stat_test' must be an object, got {stat!r}")
    for key in ("p_mismatch", "fraud_threshold", "dist_threshold"):
        _float_or_none(stat, key, f"{where}: stat_test")
    arts = doc["artifacts"]
    if not isinstance(arts, list) or not arts:
        raise _fail(where, "field 'artifacts' must be a non-empty list")
    nonces, b64 = [], []
    for i, a in enumerate(arts):
        if not isinstance(a, dict) or "nonce" not in a or "vector_b64" not in a:
            raise _fail(where, f"artifact #{i} must be an object with 'nonce' and 'vector_b64', got {a!r:.80}")
        n = a["nonce"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise _fail(where, f"artifact #{i}: nonce must be a non-negative integer, got {n!r}")
        nonces.append(n)
        b64.append(a["vector_b64"])
    nonce_arr = np.asarray(nonces, dtype=np.int64)
    uniq, counts = np.unique(nonce_arr, return_counts=True)
    if (counts > 1).any():
        raise _fail(where, f"duplicate nonces: {uniq[counts > 1][:10].tolist()}", "every nonce may appear once")

    vectors, valid, problems = _decode(b64, k, nonce_arr, where, strict)
    return Reference(
        path=path,
        model=model,
        seq_len=seq_len,
        k_dim=k,
        block_hash=_str_field(doc, "block_hash", where),
        public_key=_str_field(doc, "public_key", where),
        block_height=_int_field(doc, "block_height", where, 0),
        node_id=_int_field(doc, "node_id", where, 0),
        node_count=_int_field(doc, "node_count", where, 1),
        nonces=nonce_arr,
        vectors=vectors,
        vectors_b64=b64,
        valid=valid,
        problems=problems,
        dist_threshold=_float_or_none(doc, "dist_threshold", where),
        stat_test=dict(stat),
        additional_args=[str(a) for a in doc.get("additional_args") or []],
        source=doc.get("source"),
        generated_at=doc.get("generated_at"),
        notes=doc.get("notes"),
        collection_batch_size=doc.get("collection_batch_size"),
        raw=doc,
    )


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


def _read_json(path: Path, what: str):
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReferenceError_(f"{what} file not found: {path}", "check the path") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ReferenceError_(f"cannot read {what} {path}: {e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ReferenceError_(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None


def load_reference(path_or_model: str | Path, model: str | None = None) -> Reference:
    """Load and strictly validate a golden reference; `model`, if given, must equal its 'model'."""
    path = resolve_reference_arg(str(path_or_model))
    ref = parse_reference(_read_json(path, "reference"), where=str(path), strict=True, path=path)
    if model is not None and ref.model != model:
        raise ReferenceError_(
            f"{path}: reference is for model {ref.model!r}, not {model!r}",
            "pick the reference of the model you serve",
        )
    return ref


def load_computed(path: str | Path) -> Reference:
    """Load a file of computed vectors (golden schema); per-vector defects become 'invalid'."""
    p = Path(path)
    return parse_reference(_read_json(p, "computed vectors"), where=str(p), strict=False, path=p)


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


def resolve_stat_test(ref: Reference | None, overrides: dict | None = None) -> ResolvedStatTest:
    """dist_threshold comes from the reference's TOP-LEVEL field (a stat_test.dist_threshold is
    ignored, as the node tooling does); p_mismatch and fraud_threshold from its stat_test."""
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
    if not vals["dist_threshold"] > 0:
        raise ReferenceError_(f"dist_threshold must be > 0, got {vals['dist_threshold']}")
    for k in ("p_mismatch", "fraud_threshold"):
        if not 0 < vals[k] < 1:
            raise ReferenceError_(f"{k} must be in (0, 1), got {vals[k]}")
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
    """json.dumps(indent=2, ensure_ascii=False) + newline, written atomically."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, p)
    return p
