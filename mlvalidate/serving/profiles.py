"""Per-hardware vLLM profiles on top of the chain's model definition.

Two kinds of YAML under `configs/` (override the folder with $MLVALIDATE_CONFIGS):

* `configs/chain/<model>.yaml` — the model as the chain defines it, kept once: hub repo and
  commit, the chain's ModelArgs (vLLM args every host must pass, unchanged), PoC params,
  stat test, and the weight facts used to size VRAM. Loaded as a `ChainModel`.
* `configs/<profile>/profile.yaml` — one hardware layout (GPU model and count, tensor
  parallelism, the layout's extra vLLM args and env vars, node-config values, the published
  throughput reference). `chain: <model>` names the chain definition it builds on; a profile
  with `chain: null` is not a chain deployment (e.g. a tiny model on CPU vLLM for tests).

Merge rule: a profile can ADD vLLM args but never drop or change a chain ModelArg. The
effective argument list (`Profile.vllm_args()`) is, in this order:

    1. the chain's ModelArgs, verbatim, in the chain's order
    2. --revision <hf_commit>                 (pinned by the chain)
    3. --tensor-parallel-size <tensor_parallel_size>
    4. the profile's own args, in the profile's order

A profile arg that repeats one of 1-3 with the same value is dropped (no duplicates); one that
sets it to another value, negates it (`--no-X`) or gives a boolean chain flag a value is a
`ProfileError` naming the flag. `--flag value`, `--flag=value`, `--flag_name` spellings and
the `-tp` / `-pp` short forms are recognised. A non-chain profile's vllm_args() is exactly
its own args.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import MlvalidateError

REPO_CONFIGS = Path(__file__).resolve().parent.parent.parent / "configs"
PROFILE_FILE = "profile.yaml"
CHAIN_DIR = "chain"

# node-config values every Gonka layout uses unless the profile says otherwise
NODE_DEFAULTS = {"max_concurrent": 500, "inference_port": 5000, "poc_port": 8080}
DEFAULT_POC_BATCH = 32  # when a profile names neither a PoC batch nor a throughput reference
DEFAULT_SEQ_LEN = 1024  # PoC seq_len for a non-chain profile that does not set one

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
# flags whose value is fixed by the profile's own fields or by serve_command, never by args
_SERVE_OWNED = ("--model", "--host", "--port")
_SHORT_FLAGS = {"-tp": "--tensor-parallel-size", "-pp": "--pipeline-parallel-size",
                "-dp": "--data-parallel-size", "-q": "--quantization"}  # fmt: skip


class ProfileError(MlvalidateError):
    """A chain definition or hardware profile is missing, malformed, or breaks the merge rule."""


# ----------------------------------------------------------------------------------------
# argument lists
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Flag:
    """One flag of an argument list: canonical name, its value tokens, and how it was written."""

    name: str  # canonical: long form, '-' not '_', e.g. --max-model-len
    values: tuple[str, ...]  # () for a boolean flag
    tokens: tuple[str, ...]  # as written, e.g. ("--max-model-len=180000",)

    @property
    def value(self) -> str | None:
        return " ".join(self.values) if self.values else None

    @property
    def negates(self) -> str | None:
        """`--no-X` -> `--X` (argparse BooleanOptionalAction's negative form), else None."""
        return "--" + self.name[5:] if self.name.startswith("--no-") else None

    def show(self) -> str:
        return self.name if not self.values else f"{self.name} {self.value}"


def _is_flag(token: str) -> bool:
    # "-1", "-0.5" are values; "-" alone is a value (stdin convention)
    return token.startswith("-") and len(token) > 1 and not re.match(r"^-\.?\d", token)


def canonical_flag(token: str) -> str:
    """'--max_model_len' / '--max-model-len=1' / '-tp' -> '--max-model-len' / '--tensor-parallel-size'."""
    name = token.split("=", 1)[0]
    if name in _SHORT_FLAGS:
        return _SHORT_FLAGS[name]
    if name.startswith("--"):
        return "--" + name[2:].replace("_", "-")
    return name


def parse_flags(args: list[str]) -> list[Flag]:
    """Split an argument list into flags. A flag takes every following token that is not itself
    a flag (so `--x v`, `--x v1 v2` and boolean `--x` all work); `--x=v` carries its value."""
    flags: list[Flag] = []
    i = 0
    while i < len(args):
        tok = args[i]
        if not _is_flag(tok):
            raise ProfileError(
                f"vLLM argument {tok!r} does not follow a flag (position {i} of {args!r})",
                "write args as a YAML list of flags and values, e.g. ['--max-num-seqs', '128']",
            )
        name = canonical_flag(tok)
        if "=" in tok and tok.startswith("--"):
            flags.append(Flag(name, (tok.split("=", 1)[1],), (tok,)))
            i += 1
            continue
        j = i + 1
        while j < len(args) and not _is_flag(args[j]):
            j += 1
        flags.append(Flag(name, tuple(args[i + 1 : j]), tuple(args[i:j])))
        i = j
    return flags


def effective_flags(args: list[str]) -> dict[str, Flag]:
    """What argparse ends up with: the last occurrence of each flag wins."""
    return {f.name: f for f in parse_flags(args)}


def flag_value(args: list[str], flag: str) -> str | None:
    """The effective value of `flag` in an argument list (None when absent or boolean)."""
    f = effective_flags(args).get(canonical_flag(flag))
    return f.value if f else None


def merge_args(pinned: list[str], extra: list[str], *, source: str = "profile",
               owner: dict[str, str] | None = None) -> list[str]:  # fmt: skip
    """`pinned` then `extra`, where `extra` may add flags but never drop or change a pinned one.

    owner: flag -> where the pinned value comes from (for the error's hint)."""
    owner = owner or {}
    fixed = {f.name: f for f in parse_flags(pinned)}
    out = list(pinned)
    for f in parse_flags(extra):
        if f.name in _SERVE_OWNED:
            raise ProfileError(
                f"{source} sets {f.name} in its vLLM args",
                "the model, host and port are given to the launcher (serve_command / --model), not in args",
            )
        target = f.negates if f.negates in fixed else f.name
        if target not in fixed:
            out += f.tokens
            continue
        want = fixed[target]
        where = owner.get(target, "the chain's ModelArgs")
        if target != f.name:  # --no-X against a pinned --X
            raise ProfileError(
                f"{source} drops {target} ({' '.join(f.tokens)}), which is pinned by {where}",
                f"remove {f.name} from the profile's args: a profile can add vLLM args, never drop a chain one",
            )
        if f.values != want.values:
            if target == "--tensor-parallel-size":
                hint = f"set `tensor_parallel_size: N` in the profile instead of {f.name}"
            else:
                hint = (f"remove {f.name} from the profile's args "
                        "(a profile can add vLLM args, never change one the chain fixes)")
            raise ProfileError(
                f"{source} changes {target} ({' '.join(f.tokens)!r}), which is pinned to {want.show()!r} by {where}",
                hint,
            )
        # same flag, same value: already in `pinned`, not repeated
    return out


# ----------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------
@dataclass
class ChainModel:
    """The chain's definition of one model (configs/chain/<id>.yaml)."""

    id: str
    model_id: str
    hf_repo: str
    hf_commit: str
    model_args: list[str]
    seq_len: int
    k_dim: int
    stat_test: dict[str, float]
    vram_per_instance_gb: float | None = None
    weights: dict[str, Any] = field(default_factory=dict)
    flops_per_nonce: float | None = None
    punishment: dict[str, Any] = field(default_factory=dict)
    snapshot: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def chain_flags(self) -> dict[str, Flag]:
        return effective_flags(self.model_args)

    def kv_bytes_per_token(self) -> int | None:
        """KV-cache bytes per token for the whole model: layers x 2 x KV heads x head_dim x bytes."""
        w = self.weights
        keys = ("num_layers", "num_kv_heads", "head_dim", "kv_cache_bytes_per_element")
        if not all(k in w for k in keys):
            return None
        per_layer = 2 * int(w["num_kv_heads"]) * int(w["head_dim"]) * int(w["kv_cache_bytes_per_element"])
        return int(w["num_layers"]) * per_layer

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "model_id": self.model_id, "hf_repo": self.hf_repo, "hf_commit": self.hf_commit,
            "model_args": list(self.model_args),
            "poc": {"seq_len": self.seq_len, "k_dim": self.k_dim, "flops_per_nonce": self.flops_per_nonce},
            "stat_test": dict(self.stat_test), "vram_per_instance_gb": self.vram_per_instance_gb,
            "weights": dict(self.weights), "punishment": dict(self.punishment), "snapshot": dict(self.snapshot),
        }  # fmt: skip


@dataclass
class Profile:
    """One hardware layout (configs/<name>/profile.yaml), merged with its chain definition."""

    name: str
    chain: ChainModel | None
    gpu_model: str | None
    gpu_count: int
    gpu_memory_gib: float | None
    tensor_parallel_size: int
    instances_per_host: int
    args: list[str]  # the layout's own vLLM args (not merged)
    env: dict[str, str]
    throughput_reference: dict | None
    peak_tflops: float | None
    node: dict
    gpu_name_pattern: str | None = None  # regex on the NVML device name
    poc_batch: int | None = None  # PoC batch this layout runs (default: the throughput reference's)
    model: str | None = None  # model id for a non-chain profile (a chain profile uses the chain's)
    path: Path | None = None

    @property
    def is_chain(self) -> bool:
        return self.chain is not None

    @property
    def model_id(self) -> str | None:
        return self.chain.model_id if self.chain else self.model

    def pinned_args(self) -> list[str]:
        """Steps 1-3 of the merge order: chain ModelArgs, --revision, --tensor-parallel-size."""
        if self.chain is None:
            return []
        return [*self.chain.model_args, "--revision", self.chain.hf_commit,
                "--tensor-parallel-size", str(self.tensor_parallel_size)]  # fmt: skip

    def vllm_args(self) -> list[str]:
        """The exact vLLM argument list (module docstring: order and merge rule)."""
        if self.chain is None:
            return merge_args([], self.args, source=f"profile {self.name}")
        owner = {f.name: f"the chain's ModelArgs ({self.chain.id})" for f in parse_flags(self.chain.model_args)}
        owner["--revision"] = f"the chain's hf_commit ({self.chain.id})"
        owner["--tensor-parallel-size"] = "the profile's tensor_parallel_size field"
        return merge_args(self.pinned_args(), self.args, source=f"profile {self.name}", owner=owner)

    def effective_batch(self) -> int:
        """PoC batch: the profile's poc batch, else its throughput reference's, else 32."""
        if self.poc_batch:
            return int(self.poc_batch)
        if self.throughput_reference and self.throughput_reference.get("batch"):
            return int(self.throughput_reference["batch"])
        return DEFAULT_POC_BATCH

    def seq_len(self) -> int:
        return self.chain.seq_len if self.chain else DEFAULT_SEQ_LEN

    def serve_command(self, model: str, *, port: int = 5000, host: str = "0.0.0.0",
                      server_cmd: list[str] | None = None) -> list[str]:  # fmt: skip
        """The full command line that starts vLLM for this profile.

        Default `vllm serve MODEL --host H --port P ...vllm_args()`. A server command that does
        not end in the `serve` subcommand (e.g. `[sys.executable, "-m",
        "vllm.entrypoints.openai.api_server"]`) gets the model as `--model MODEL`."""
        cmd = list(server_cmd) if server_cmd else ["vllm", "serve"]
        cmd += [model] if cmd[-1] == "serve" else ["--model", model]
        return cmd + ["--host", host, "--port", str(port), *self.vllm_args()]

    def node_json(self, host: str, *, node_id: str | None = None, model_id: str | None = None) -> dict:
        """The network node's admin API body (POST /admin/v1/nodes) for one ML node of this layout."""
        mid = model_id or self.model_id
        if not mid:
            raise ProfileError(
                f"profile {self.name} names no model (chain: null and no `model:`)",
                "add `model: <id>` to the profile, or pass a model id",
            )
        node = {**NODE_DEFAULTS, **self.node}
        return {
            "id": node_id or str(node.get("id") or self.name),
            "host": host,
            "inference_port": int(node["inference_port"]),
            "poc_port": int(node["poc_port"]),
            "max_concurrent": int(node["max_concurrent"]),
            "models": {mid: {"args": self.vllm_args()}},
        }

    def roofline_nonces_per_min_per_gpu(self) -> float | None:
        """Ceiling at dense peak: peak FLOP/s x 60 / FLOPs per nonce (docs/minimax-m2.md §5)."""
        if not (self.peak_tflops and self.chain and self.chain.flops_per_nonce):
            return None
        return self.peak_tflops * 1e12 * 60 / self.chain.flops_per_nonce

    def as_dict(self) -> dict[str, Any]:
        """The merged view (`config show --format yaml`): the chain inline, the effective args last."""
        return {
            "name": self.name,
            "path": str(self.path) if self.path else None,
            "chain": self.chain.as_dict() if self.chain else None,
            "model": self.model_id,
            "gpu_model": self.gpu_model, "gpu_name_pattern": self.gpu_name_pattern, "gpu_count": self.gpu_count,
            "gpu_memory_gib": self.gpu_memory_gib, "tensor_parallel_size": self.tensor_parallel_size,
            "instances_per_host": self.instances_per_host,
            "poc_batch": self.effective_batch(),
            "args": list(self.args), "env": dict(self.env), "node": {**NODE_DEFAULTS, **self.node},
            "throughput_reference": self.throughput_reference, "peak_tflops": self.peak_tflops,
            "vllm_args": self.vllm_args(),
        }  # fmt: skip


# ----------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------
def configs_dir() -> Path:
    """The configs folder: $MLVALIDATE_CONFIGS if set, else the repository's configs/."""
    env = os.environ.get("MLVALIDATE_CONFIGS")
    return Path(env) if env else REPO_CONFIGS


def list_profiles() -> list[str]:
    """Names of the profiles under configs_dir() (folders holding a profile.yaml), sorted."""
    d = configs_dir()
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if p.name != CHAIN_DIR and (p / PROFILE_FILE).is_file())


def _chain_file_id(name: str) -> str:
    """'MiniMaxAI/MiniMax-M2.7' -> 'minimaxai-minimax-m2.7' (the artifacts' file naming)."""
    return re.sub(r"-{2,}", "-", re.sub(r"[/\\: ]", "-", name.lower()))


def _read_yaml(path: Path, what: str) -> dict:
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ProfileError(f"cannot read {what} {path}: {e.strerror or e}", "check the path") from e
    except yaml.YAMLError as e:
        raise ProfileError(f"{what} {path} is not valid YAML: {' '.join(str(e).split())}", "fix the file") from e
    if not isinstance(doc, dict):
        raise ProfileError(f"{what} {path} is not a YAML mapping", "see configs/ for the expected layout")
    return doc


class _Fields:
    """Typed, strict access to one YAML mapping: errors name the file and the key."""

    def __init__(self, doc: dict, path: Path, what: str, known: set[str]):
        self.doc, self.path, self.what = doc, path, what
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ProfileError(
                f"{what} {path} has unknown key(s) {', '.join(unknown)}",
                f"known keys: {', '.join(sorted(known))}",
            )

    def _bad(self, key: str, want: str) -> ProfileError:
        return ProfileError(f"{self.what} {self.path}: `{key}` must be {want} (got {self.doc.get(key)!r})",
                            "fix the file")  # fmt: skip

    def get(self, key: str, kind: type | tuple, *, required: bool = False, default: Any = None, positive: bool = False):
        if key not in self.doc or self.doc[key] is None:
            if required:
                raise ProfileError(f"{self.what} {self.path} has no `{key}`", "add it (see the shipped configs/)")
            return default
        v = self.doc[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(v, bool) and bool not in kinds or not isinstance(v, kinds):
            raise self._bad(key, " or ".join(k.__name__ for k in kinds))
        if positive and not v > 0:
            raise self._bad(key, "> 0")
        return float(v) if float in kinds and int in kinds and not isinstance(v, bool) else v


def _str_list(value: Any, path: Path, key: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ProfileError(f"{path}: `{key}` must be a list of strings", "write one flag or value per item")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ProfileError(f"{path}: `{key}` item {v!r} is not a string", "quote it, e.g. \"0.92\"")
        out.append(v if isinstance(v, str) else str(v))
    parse_flags(out)  # shape check: every value follows a flag
    return out


_CHAIN_KEYS = {"id", "model_id", "hf_repo", "hf_commit", "model_args", "poc", "stat_test", "vram_per_instance_gb",
               "weights", "punishment", "snapshot"}  # fmt: skip


def load_chain(name_or_path: str | os.PathLike) -> ChainModel:
    """A chain definition by id ('minimaxai-minimax-m2.7' or 'MiniMaxAI/MiniMax-M2.7') or YAML path."""
    path = _find_chain(str(name_or_path), [])
    doc = _read_yaml(path, "chain definition")
    f = _Fields(doc, path, "chain definition", _CHAIN_KEYS)
    commit = f.get("hf_commit", str, required=True)
    if not _COMMIT.match(commit):
        raise ProfileError(
            f"chain definition {path}: hf_commit {commit!r} is not a 40-hex commit",
            "pin the exact commit (a branch or tag can move under the chain)",
        )
    poc = f.get("poc", dict, required=True)
    for k in ("seq_len", "k_dim"):
        if not isinstance(poc.get(k), int) or poc[k] < 1:
            raise ProfileError(f"chain definition {path}: poc.{k} must be an integer >= 1", "fix the file")
    model_args = _str_list(f.get("model_args", list, required=True), path, "model_args")
    fpn = poc.get("flops_per_nonce")
    return ChainModel(
        id=str(f.get("id", str) or path.stem),
        model_id=f.get("model_id", str, required=True),
        hf_repo=f.get("hf_repo", str, required=True),
        hf_commit=commit,
        model_args=model_args,
        seq_len=poc["seq_len"],
        k_dim=poc["k_dim"],
        stat_test=dict(f.get("stat_test", dict, default={})),
        vram_per_instance_gb=f.get("vram_per_instance_gb", (int, float)),
        weights=dict(f.get("weights", dict, default={})),
        flops_per_nonce=float(fpn) if fpn is not None else None,
        punishment=dict(f.get("punishment", dict, default={})),
        snapshot=dict(f.get("snapshot", dict, default={})),
        path=path,
    )


def _find_chain(name: str, near: list[Path]) -> Path:
    p = Path(name)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        for base in [Path.cwd(), *near]:
            q = p if p.is_absolute() else base / p
            if q.is_file():
                return q
        raise ProfileError(f"chain definition {name} not found", "check the path")
    stem = _chain_file_id(name)
    tried = []
    for d in [*near, configs_dir() / CHAIN_DIR, REPO_CONFIGS / CHAIN_DIR]:
        for ext in (".yaml", ".yml"):
            q = d / (stem + ext)
            if q.is_file():
                return q
        tried.append(str(d))
    raise ProfileError(
        f"no chain definition {name!r} (looked for {stem}.yaml in {', '.join(dict.fromkeys(tried))})",
        "set `chain:` to a file under configs/chain/, a path, or null for a non-chain deployment",
    )


_PROFILE_KEYS = {"name", "chain", "model", "gpu_model", "gpu_name_pattern", "gpu_count", "gpu_memory_gib",
                 "tensor_parallel_size", "instances_per_host", "args", "env", "node", "poc",
                 "throughput_reference", "peak_tflops"}  # fmt: skip


def _find_profile(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.is_file():
        return p
    if p.is_dir() and (p / PROFILE_FILE).is_file():
        return p / PROFILE_FILE
    if p.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        raise ProfileError(f"profile file {name_or_path} not found", "check the path")
    q = configs_dir() / name_or_path / PROFILE_FILE
    if q.is_file():
        return q
    known = list_profiles()
    raise ProfileError(
        f"no profile {name_or_path!r} in {configs_dir()}",
        f"known profiles: {', '.join(known) or 'none'} (or pass a profile.yaml path)",
    )


def load_profile(name_or_path: str | os.PathLike) -> Profile:
    """A profile by name (a folder under configs_dir()) or a path to its YAML (or its folder).

    The merge rule is checked here: a profile that would drop or change a chain arg raises."""
    path = _find_profile(str(name_or_path))
    doc = _read_yaml(path, "profile")
    f = _Fields(doc, path, "profile", _PROFILE_KEYS)
    if "chain" not in doc:
        raise ProfileError(
            f"profile {path} has no `chain:`",
            "name its chain definition (e.g. `chain: minimaxai-minimax-m2.7`), "
            "or `chain: null` for a non-chain deployment",
        )
    chain = None
    if doc["chain"] is not None:
        chain_ref = f.get("chain", str)
        near = [path.parent, path.parent.parent / CHAIN_DIR]
        chain = load_chain(_find_chain(chain_ref, near))
    is_chain = chain is not None
    env = f.get("env", dict, default={})
    for k, v in env.items():
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ProfileError(f"profile {path}: env {k} = {v!r} is not a string", 'quote it, e.g. "0"')
    node = f.get("node", dict, default={})
    for k in NODE_DEFAULTS:
        if k in node and (isinstance(node[k], bool) or not isinstance(node[k], int)):
            raise ProfileError(f"profile {path}: node.{k} must be an integer", "fix the file")
    poc = f.get("poc", dict, default={})
    poc_batch = poc.get("batch")
    if poc_batch is not None and (isinstance(poc_batch, bool) or not isinstance(poc_batch, int) or poc_batch < 1):
        raise ProfileError(f"profile {path}: poc.batch must be an integer >= 1", "fix the file")
    tref = f.get("throughput_reference", dict)
    if tref is not None and "batch" in tref and (not isinstance(tref["batch"], int) or tref["batch"] < 1):
        raise ProfileError(f"profile {path}: throughput_reference.batch must be an integer >= 1", "fix the file")
    pattern = f.get("gpu_name_pattern", str)
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as e:
            raise ProfileError(f"profile {path}: gpu_name_pattern {pattern!r} is not a regex ({e})", "fix it") from e
    prof = Profile(
        name=str(f.get("name", str) or (path.parent.name if path.name == PROFILE_FILE else path.stem)),
        chain=chain,
        gpu_model=f.get("gpu_model", str, required=is_chain),
        gpu_count=f.get("gpu_count", int, required=is_chain, default=0, positive=is_chain),
        gpu_memory_gib=f.get("gpu_memory_gib", (int, float), required=is_chain, positive=True),
        tensor_parallel_size=f.get("tensor_parallel_size", int, default=1, positive=True),
        instances_per_host=f.get("instances_per_host", int, default=1, positive=True),
        args=_str_list(f.get("args", list, default=[]), path, "args"),
        env={str(k): str(v) for k, v in env.items()},
        throughput_reference=tref,
        peak_tflops=f.get("peak_tflops", (int, float), positive=True),
        node=dict(node),
        gpu_name_pattern=pattern,
        poc_batch=poc_batch,
        model=f.get("model", str),
        path=path,
    )
    prof.vllm_args()  # the merge rule, checked at load
    return prof
