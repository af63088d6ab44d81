"""Local checkpoint directories: config.json, the index, and every shard's tensor headers.

A checkpoint directory is what the hub serves for a model:

    config.json                      architecture (+ `quantization_config` for FP8 checkpoints)
    model.safetensors.index.json     {"metadata": {"total_size": N}, "weight_map": {tensor: shard}}
    model-0000k-of-0000n.safetensors the shards the index names (or one model.safetensors, no index)

Everything read from disk is untrusted: each malformed case raises `CheckpointError` with a
one-line message and a next step. Shards are read through `headers.safetensors_header`
(the safetensors library's reader, headers only), so `tensor_headers` and `scan_checkpoint`
are cheap even for the 230 GB MiniMax-M2.7 checkpoint. Loading tensors is `loader.py`'s job;
what the tensors should be is `layout.py`'s.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError
from .headers import NEXT_PULL, TensorHeader, safetensors_header

CONFIG_FILE = "config.json"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


# ----------------------------------------------------------------------------------------
# config and index
# ----------------------------------------------------------------------------------------
def model_dir_path(model_dir: str | os.PathLike) -> Path:
    path = Path(model_dir)
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise CheckpointError(
            f"checkpoint directory {path} {what}",
            hint="pass the directory holding config.json and the safetensors shards "
            "(download one with `mlvalidate pull`, or build a test one with `mlvalidate make-tiny DIR`)",
        )
    return path


def _read_json(path: Path, what: str) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise CheckpointError(f"cannot read {what} {path}: {e.strerror or e}", hint=NEXT_PULL) from e
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except (ValueError, _DuplicateKey) as e:
        raise CheckpointError(f"{what} {path} is not valid JSON: {e}", hint=NEXT_PULL) from e
    except RecursionError:
        raise CheckpointError(f"{what} {path} is not usable JSON: nested too deeply to parse", hint=NEXT_PULL) from None


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(f"duplicate key {key!r}")
        out[key] = value
    return out


def read_config(model_dir: str | os.PathLike) -> dict:
    """config.json of a checkpoint directory, as a dict (raises CheckpointError)."""
    path = model_dir_path(model_dir) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{path.parent} has no {CONFIG_FILE}",
            hint="a checkpoint directory needs config.json next to its safetensors shards; " + NEXT_PULL,
        )
    config = _read_json(path, CONFIG_FILE)
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} is not a JSON object", hint=NEXT_PULL)
    return config


def _check_shard_name(name: object, index_path: Path) -> str:
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\x00" in name
    ):
        raise CheckpointError(
            f"{index_path} names shard {name!r}, which is not a plain file name",
            hint="the index must list shard files in the checkpoint directory itself; " + NEXT_PULL,
        )
    return name


def _weight_map(index_path: Path) -> dict[str, str]:
    """tensor -> shard file name from an index file, validated (shards are not looked at)."""
    index = _read_json(index_path, "index")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index_path} has no non-empty 'weight_map' object", hint=NEXT_PULL)
    out: dict[str, str] = {}
    for tensor, shard in weight_map.items():
        if not tensor:
            raise CheckpointError(f"{index_path} maps an empty tensor name", hint=NEXT_PULL)
        out[tensor] = _check_shard_name(shard, index_path)
    return out


def read_index(model_dir: str | os.PathLike) -> dict[str, str]:
    """Tensor name -> shard file name, from model.safetensors.index.json; a directory with a
    single model.safetensors and no index maps every tensor of that file to it.

    Every shard the index names must exist (the first missing one is named in the error).
    """
    root = model_dir_path(model_dir)
    index_path = root / INDEX_FILE
    if index_path.is_file():
        out = _weight_map(index_path)
        missing = sorted({s for s in out.values() if not (root / s).is_file()})
        if missing:
            raise CheckpointError(
                f"{len(missing)} shard(s) named in {INDEX_FILE} are missing from {root}, first: {missing[0]}",
                hint=NEXT_PULL,
            )
        return out
    single = root / SINGLE_FILE
    if single.is_file():
        return dict.fromkeys(safetensors_header(single), SINGLE_FILE)
    raise CheckpointError(
        f"{root} has neither {INDEX_FILE} nor {SINGLE_FILE}",
        hint="the weights are missing; " + NEXT_PULL,
    )


# ----------------------------------------------------------------------------------------
# every shard's headers, against the index
# ----------------------------------------------------------------------------------------
def tensor_headers(model_dir: str | os.PathLike) -> dict[str, TensorHeader]:
    """name -> (dtype string, shape) for every tensor of the checkpoint, from the shard headers
    only. Index and shards must agree exactly: every index entry is in the shard it names,
    and every tensor of a shard is listed in the index as living there."""
    root = model_dir_path(model_dir)
    index = read_index(root)
    by_shard: dict[str, list[str]] = {}
    for tensor, shard in index.items():
        by_shard.setdefault(shard, []).append(tensor)
    headers = {shard: safetensors_header(root / shard) for shard in by_shard}
    for shard, names in by_shard.items():  # first: everything the index promises is there
        absent = [t for t in names if t not in headers[shard]]
        if absent:
            raise CheckpointError(
                f"{len(absent)} tensor(s) the index places in {shard} are not in it, first: {absent[0]}",
                hint=NEXT_PULL,
            )
    for shard, names in by_shard.items():  # then: nothing unlisted hides in a shard
        unlisted = sorted(set(headers[shard]) - set(names))
        if unlisted:
            raise CheckpointError(
                f"{shard} holds {len(unlisted)} tensor(s) the index does not place there, first: {unlisted[0]}",
                hint="the index and the shards come from different revisions; " + NEXT_PULL,
            )
    return {t: headers[shard][t] for t, shard in index.items()}


@dataclass
class CheckpointScan:
    """What `scan_checkpoint` found: everything readable, and every problem."""

    index: dict[str, str]  # tensor -> shard, from the index (or the single model.safetensors)
    headers: dict[str, TensorHeader]  # tensors found in the shard the index places them in
    shard_bytes: dict[str, int]  # shards present on disk -> file size
    problems: list[str]  # one line each (no hint), in a stable order


def scan_checkpoint(model_dir: str | os.PathLike) -> CheckpointScan:
    """The checks of `read_index` + `tensor_headers`, without stopping at the first problem:
    each missing shard, each shard whose header `headers.safetensors_header` rejects (truncated,
    corrupted, ...), each tensor missing from the shard the index names and each tensor a
    shard holds that the index does not place there is one problem. An unreadable index is
    a single problem (nothing else can be checked); a missing directory raises."""
    root = model_dir_path(model_dir)
    index_path, single = root / INDEX_FILE, root / SINGLE_FILE
    scan = CheckpointScan(index={}, headers={}, shard_bytes={}, problems=[])
    try:
        if index_path.is_file():
            scan.index = _weight_map(index_path)
        elif single.is_file():
            scan.index = dict.fromkeys(safetensors_header(single), SINGLE_FILE)
        else:
            scan.problems.append(f"{root} has neither {INDEX_FILE} nor {SINGLE_FILE}")
            return scan
    except CheckpointError as e:
        scan.problems.append(str(e))
        return scan

    by_shard: dict[str, list[str]] = {}
    for tensor, shard in scan.index.items():
        by_shard.setdefault(shard, []).append(tensor)
    for shard in sorted(by_shard):
        names, path = by_shard[shard], root / shard
        if not path.is_file():
            scan.problems.append(f"shard {shard} is missing ({len(names)} tensor(s) of the index live there)")
            continue
        scan.shard_bytes[shard] = path.stat().st_size
        try:
            found = safetensors_header(path)
        except CheckpointError as e:
            scan.problems.append(str(e))
            continue
        for tensor in names:
            if tensor in found:
                scan.headers[tensor] = found[tensor]
            else:
                scan.problems.append(f"tensor {tensor} is not in {shard}, where the index places it")
        listed = set(names)
        for tensor in sorted(set(found) - listed):
            scan.problems.append(f"{shard} holds tensor {tensor}, which the index does not place there")
    return scan
