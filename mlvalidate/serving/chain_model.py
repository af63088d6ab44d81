"""The chain's definition of a model (configs/chain/<model>.yaml), loaded as a `ChainModel`:
hub repo and commit, the chain's ModelArgs (vLLM args every host must pass, unchanged), PoC
params, stat test, and the weight facts used to size VRAM."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..reference_lookup import safe_id
from .config_files import (
    CHAIN_DIR,
    Fields,
    ProfileError,
    configs_dirs,
    read_yaml,
)
from .vllm_flags import Flag, effective_flags, parse_flags

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


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


def str_list(value: Any, path: Path, key: str) -> list[str]:
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
    path = find_chain(str(name_or_path), [])
    doc = read_yaml(path, "chain definition")
    f = Fields(doc, path, "chain definition", _CHAIN_KEYS)
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
    model_args = str_list(f.get("model_args", list, required=True), path, "model_args")
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


def find_chain(name: str, near: list[Path]) -> Path:
    p = Path(name)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        for base in [Path.cwd(), *near]:
            q = p if p.is_absolute() else base / p
            if q.is_file():
                return q
        raise ProfileError(f"chain definition {name} not found", "check the path")
    stem = safe_id(name)  # the artifacts' file naming: 'MiniMaxAI/MiniMax-M2.7' -> 'minimaxai-minimax-m2.7'
    tried = []
    for d in [*near, *(c / CHAIN_DIR for c in configs_dirs())]:
        for ext in (".yaml", ".yml"):
            q = d / (stem + ext)
            if q.is_file():
                return q
        tried.append(str(d))
    raise ProfileError(
        f"no chain definition {name!r} (looked for {stem}.yaml in {', '.join(dict.fromkeys(tried))})",
        "set `chain:` to a file under configs/chain/, a path, or null for a non-chain deployment",
    )

