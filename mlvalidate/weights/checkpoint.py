"""Local checkpoint directories: config, index, safetensors headers, block-FP8 dequantization,
and loading into a transformers causal LM for the reference engine.

A checkpoint directory is what the hub serves for a model:

    config.json                      architecture (+ `quantization_config` for FP8 checkpoints)
    model.safetensors.index.json     {"metadata": {"total_size": N}, "weight_map": {tensor: shard}}
    model-0000k-of-0000n.safetensors the shards the index names (or one model.safetensors, no index)

A safetensors file is `u64 little-endian N | N bytes of JSON header | data buffer`; the header
maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative
to the data buffer, which the tensors tile exactly) plus an optional "__metadata__" object.

Everything read from disk is untrusted: each malformed case raises `CheckpointError` with a
one-line message and a next step. Headers are read without touching tensor data, so
`tensor_headers` is cheap even for the 230 GB MiniMax-M2.7 checkpoint.

Block FP8 (docs/minimax-m2.md §3): `X.weight` is F8_E4M3 [out, in] with `X.weight_scale_inv` F32
[ceil(out/128), ceil(in/128)], and W[r, c] = float(q[r, c]) * scale_inv[r // 128, c // 128]
(a multiply, despite the name).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import CheckpointError

CONFIG_FILE = "config.json"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the limit the safetensors library itself enforces

SCALE_SUFFIX = "_scale_inv"  # X.weight -> X.weight_scale_inv
DEFAULT_BLOCK = (128, 128)

# bits per element of every dtype name a safetensors header may carry
_DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8,
    "F8_E4M3": 8, "F8_E4M3FNUZ": 8, "F8_E5M2": 8, "F8_E5M2FNUZ": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}  # fmt: skip

# tensors that stay float32 (router) when stored F32, whatever modules_to_not_convert says
_ROUTER_PATTERN = re.compile(r"(^|\.)(block_sparse_moe|mlp)\.gate\.weight$|(^|\.)e_score_correction_bias$")
_LAYER_PATTERN = re.compile(r"^model\.layers\.(\d+)\.")

_NEXT_PULL = "download the checkpoint again (mlvalidate pull) or point at a complete directory"

TensorHeader = tuple[str, tuple[int, ...]]  # (safetensors dtype string, shape)


# ----------------------------------------------------------------------------------------
# config and index
# ----------------------------------------------------------------------------------------
def _model_dir(model_dir: str | os.PathLike) -> Path:
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
        raise CheckpointError(f"cannot read {what} {path}: {e.strerror or e}", hint=_NEXT_PULL) from e
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except (ValueError, _DuplicateKey) as e:
        raise CheckpointError(f"{what} {path} is not valid JSON: {e}", hint=_NEXT_PULL) from e
    except RecursionError:
        raise CheckpointError(f"{what} {path} is not usable JSON: nested too deeply to parse", hint=_NEXT_PULL) from None


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
    path = _model_dir(model_dir) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{path.parent} has no {CONFIG_FILE}",
            hint="a checkpoint directory needs config.json next to its safetensors shards; " + _NEXT_PULL,
        )
    config = _read_json(path, CONFIG_FILE)
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} is not a JSON object", hint=_NEXT_PULL)
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
            hint="the index must list shard files in the checkpoint directory itself; " + _NEXT_PULL,
        )
    return name


def _weight_map(index_path: Path) -> dict[str, str]:
    """tensor -> shard file name from an index file, validated (shards are not looked at)."""
    index = _read_json(index_path, "index")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index_path} has no non-empty 'weight_map' object", hint=_NEXT_PULL)
    out: dict[str, str] = {}
    for tensor, shard in weight_map.items():
        if not tensor:
            raise CheckpointError(f"{index_path} maps an empty tensor name", hint=_NEXT_PULL)
        out[tensor] = _check_shard_name(shard, index_path)
    return out


def read_index(model_dir: str | os.PathLike) -> dict[str, str]:
    """Tensor name -> shard file name, from model.safetensors.index.json; a directory with a
    single model.safetensors and no index maps every tensor of that file to it.

    Every shard the index names must exist (the first missing one is named in the error).
    """
    root = _model_dir(model_dir)
    index_path = root / INDEX_FILE
    if index_path.is_file():
        out = _weight_map(index_path)
        missing = sorted({s for s in out.values() if not (root / s).is_file()})
        if missing:
            raise CheckpointError(
                f"{len(missing)} shard(s) named in {INDEX_FILE} are missing from {root}, first: {missing[0]}",
                hint=_NEXT_PULL,
            )
        return out
    single = root / SINGLE_FILE
    if single.is_file():
        return dict.fromkeys(safetensors_header(single), SINGLE_FILE)
    raise CheckpointError(
        f"{root} has neither {INDEX_FILE} nor {SINGLE_FILE}",
        hint="the weights are missing; " + _NEXT_PULL,
    )


# ----------------------------------------------------------------------------------------
# safetensors headers (no tensor data is read)
# ----------------------------------------------------------------------------------------
def safetensors_header(path: str | os.PathLike) -> dict[str, TensorHeader]:
    """name -> (dtype string, shape) of one safetensors file, validated like the format's
    reference reader: known dtypes, byte lengths that match the shapes, and tensors that
    tile the data buffer exactly (a truncated or padded file is rejected)."""
    path = Path(path)
    try:
        file_size = path.stat().st_size
        with path.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise CheckpointError(
                    f"{path} is too short to be a safetensors file ({file_size} bytes)", hint=_NEXT_PULL
                )
            (n,) = struct.unpack("<Q", prefix)
            if n > MAX_HEADER_BYTES or n > file_size - 8:
                raise CheckpointError(
                    f"{path} declares a {n}-byte header in a {file_size}-byte file (truncated or not safetensors)",
                    hint=_NEXT_PULL,
                )
            raw = f.read(n)
    except OSError as e:
        raise CheckpointError(f"cannot read shard {path}: {e.strerror or e}", hint=_NEXT_PULL) from e
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{path} has an unparseable safetensors header: {e}", hint=_NEXT_PULL) from e
    except RecursionError:
        raise CheckpointError(
            f"{path} has an unparseable safetensors header: JSON nested too deeply", hint=_NEXT_PULL
        ) from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a safetensors header that is not a JSON object", hint=_NEXT_PULL)

    data_len = file_size - 8 - n
    out: dict[str, TensorHeader] = {}
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise CheckpointError(f"{path}: __metadata__ must map strings to strings", hint=_NEXT_PULL)
            continue
        dtype, shape, offsets = _header_entry(path, name, entry)
        begin, end = offsets
        numel = math.prod(shape)
        expected = (numel * _DTYPE_BITS[dtype] + 7) // 8
        if end - begin != expected:
            raise CheckpointError(
                f"{path}: tensor {name} ({dtype} {list(shape)}) spans {end - begin} bytes, expected {expected}",
                hint=_NEXT_PULL,
            )
        out[name] = (dtype, shape)
        spans.append((begin, end, name))

    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise CheckpointError(
                f"{path}: tensor {name} starts at byte {begin} of the data buffer, expected {position} "
                "(overlapping or gapped tensors)",
                hint=_NEXT_PULL,
            )
        position = end
    if position != data_len:
        raise CheckpointError(
            f"{path}: the tensors cover {position} bytes but the file holds {data_len} data bytes "
            "(truncated or padded file)",
            hint=_NEXT_PULL,
        )
    return out


def _header_entry(path: Path, name: str, entry: object) -> tuple[str, tuple[int, ...], tuple[int, int]]:
    if not isinstance(entry, dict):
        raise CheckpointError(f"{path}: header entry for {name} is not an object", hint=_NEXT_PULL)
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in _DTYPE_BITS:
        raise CheckpointError(f"{path}: tensor {name} has unknown dtype {dtype!r}", hint=_NEXT_PULL)

    def non_negative_ints(v: object, length: int | None) -> bool:
        return (
            isinstance(v, list)
            and (length is None or len(v) == length)
            and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v)
        )

    if not non_negative_ints(shape, None):
        raise CheckpointError(f"{path}: tensor {name} has an invalid shape {shape!r}", hint=_NEXT_PULL)
    if not non_negative_ints(offsets, 2) or offsets[0] > offsets[1]:
        raise CheckpointError(f"{path}: tensor {name} has invalid data_offsets {offsets!r}", hint=_NEXT_PULL)
    return dtype, tuple(shape), (offsets[0], offsets[1])


def tensor_headers(model_dir: str | os.PathLike) -> dict[str, TensorHeader]:
    """name -> (dtype string, shape) for every tensor of the checkpoint, from the shard headers
    only. Index and shards must agree exactly: every index entry is in the shard it names,
    and every tensor of a shard is listed in the index as living there."""
    root = _model_dir(model_dir)
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
                hint=_NEXT_PULL,
            )
    for shard, names in by_shard.items():  # then: nothing unlisted hides in a shard
        unlisted = sorted(set(headers[shard]) - set(names))
        if unlisted:
            raise CheckpointError(
                f"{shard} holds {len(unlisted)} tensor(s) the index does not place there, first: {unlisted[0]}",
                hint="the index and the shards come from different revisions; " + _NEXT_PULL,
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
    each missing shard, each shard whose header `safetensors_header` rejects (truncated,
    corrupted, ...), each tensor missing from the shard the index names and each tensor a
    shard holds that the index does not place there is one problem. An unreadable index is
    a single problem (nothing else can be checked); a missing directory raises."""
    root = _model_dir(model_dir)
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


# ----------------------------------------------------------------------------------------
# block FP8
# ----------------------------------------------------------------------------------------
def dequantize_fp8_block(
    weight_fp8: torch.Tensor, scale_inv: torch.Tensor, block: tuple[int, int] = DEFAULT_BLOCK
) -> torch.Tensor:
    """W[r, c] = float(q[r, c]) * scale_inv[r // b0, c // b1], in float32.

    weight_fp8: [out, in] float8_e4m3fn; scale_inv: [ceil(out/b0), ceil(in/b1)] float32.
    The last block row/column may be partial (out or in not a multiple of the block).
    """
    b0, b1 = int(block[0]), int(block[1])
    if b0 <= 0 or b1 <= 0:
        raise CheckpointError(
            f"FP8 block size {tuple(block)} must be positive", hint="check quantization_config.weight_block_size"
        )
    if weight_fp8.dim() != 2 or scale_inv.dim() != 2:
        raise CheckpointError(
            f"block FP8 needs a 2-D weight and 2-D scales, got {list(weight_fp8.shape)} and {list(scale_inv.shape)}",
            hint=_NEXT_PULL,
        )
    rows, cols = weight_fp8.shape
    want = (-(-rows // b0), -(-cols // b1))
    if tuple(scale_inv.shape) != want:
        raise CheckpointError(
            f"FP8 weight {list(weight_fp8.shape)} with block {b0}x{b1} needs scales {list(want)}, "
            f"got {list(scale_inv.shape)}",
            hint="quantization_config.weight_block_size does not match the checkpoint; " + _NEXT_PULL,
        )
    scale = scale_inv.to(torch.float32)
    # expand each scale over its block, then crop the partial last block row/column
    scale = scale.repeat_interleave(b0, dim=0)[:rows].repeat_interleave(b1, dim=1)[:, :cols]  # [out, in]
    return weight_fp8.to(torch.float32) * scale


def _fp8_block_size(config: Mapping) -> tuple[int, int] | None:
    """The FP8 block size from config.json's quantization_config; None for an unquantized
    checkpoint. Quantization methods this loader cannot dequantize are refused."""
    quant = config.get("quantization_config")
    if quant is None:
        return None
    if not isinstance(quant, dict):
        raise CheckpointError("config.json quantization_config is not an object", hint=_NEXT_PULL)
    method = quant.get("quant_method")
    if method != "fp8":
        raise CheckpointError(
            f"quantization method {method!r} is not supported by the reference loader",
            hint="it loads bf16/fp16/fp32 and block-FP8 (quant_method 'fp8') checkpoints only",
        )
    fmt = quant.get("fmt", "float8_e4m3fn")
    if fmt not in ("float8_e4m3fn", "e4m3"):
        raise CheckpointError(f"FP8 format {fmt!r} is not supported", hint="only float8_e4m3fn block-FP8 is")
    block = quant.get("weight_block_size", list(DEFAULT_BLOCK))
    if (
        not isinstance(block, list)
        or len(block) != 2
        or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)
    ):
        raise CheckpointError(
            f"quantization_config.weight_block_size {block!r} is not two positive integers",
            hint="per-tensor FP8 (no weight_block_size) is not supported by the reference loader",
        )
    return block[0], block[1]


# ----------------------------------------------------------------------------------------
# state dict
# ----------------------------------------------------------------------------------------
def _in_modules(name: str, modules: list[str]) -> bool:
    """Whether tensor `name` belongs to a module listed in modules_to_not_convert: a listed
    entry matches whole dotted components ('gate' matches '...moe.gate.weight', not
    '...gate_proj.weight'), or a dotted path inside the name."""
    parts = name.split(".")
    for m in modules:
        if not isinstance(m, str) or not m:
            continue
        m_parts = m.split(".")
        k = len(m_parts)
        if any(parts[i : i + k] == m_parts for i in range(len(parts) - k + 1)):
            return True
    return False


def _float_dtype(dtype: torch.dtype) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point or dtype.itemsize < 2:
        raise CheckpointError(
            f"dtype {dtype!r} is not a float dtype to load weights in",
            hint="use torch.bfloat16, float16, float32 or float64",
        )
    return dtype


def _keep_dtype(dtype: torch.dtype) -> torch.dtype:
    """What a float32-kept tensor (router) becomes: float32, or the run dtype when wider."""
    return dtype if dtype.itemsize >= 4 else torch.float32


def fp32_tensor_names(model_dir: str | os.PathLike) -> set[str]:
    """Names that load_state_dict keeps in float32: stored F32 and either a router tensor
    (`*.gate.weight` of an MoE block, `*e_score_correction_bias`) or inside a module listed
    in quantization_config.modules_to_not_convert."""
    config = read_config(model_dir)
    quant = config.get("quantization_config")
    not_convert = (quant.get("modules_to_not_convert") or []) if isinstance(quant, dict) else []
    return {name for name, (dt, _) in tensor_headers(model_dir).items() if _stays_fp32(name, dt, not_convert)}


def _stays_fp32(name: str, stored_dtype: str, not_convert: list[str]) -> bool:
    return stored_dtype == "F32" and bool(_ROUTER_PATTERN.search(name) or _in_modules(name, not_convert))


def _beyond_layers(name: str, num_layers: int | None) -> bool:
    m = _LAYER_PATTERN.match(name)
    return num_layers is not None and m is not None and int(m.group(1)) >= num_layers


def load_state_dict(model_dir: str | os.PathLike, dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint under its checkpoint name, ready for a `dtype` model.

    * FP8 pairs (`X.weight` F8_E4M3 + `X.weight_scale_inv` F32) become one `X.weight`,
      dequantized in float32 and then cast to `dtype`;
    * router tensors stored F32 (`*.block_sparse_moe.gate.weight`, `*e_score_correction_bias`)
      and F32 tensors of modules in quantization_config.modules_to_not_convert stay float32
      (or `dtype` when that is wider, e.g. float64);
    * everything else is cast to `dtype`;
    * `model.layers.{L}+` tensors (L = num_hidden_layers: MTP modules) are skipped.
    """
    from safetensors import safe_open

    dtype = _float_dtype(dtype)
    root = _model_dir(model_dir)
    config = read_config(root)
    block = _fp8_block_size(config)
    quant = config.get("quantization_config") or {}
    not_convert = quant.get("modules_to_not_convert") or []
    num_layers = config.get("num_hidden_layers")
    num_layers = num_layers if isinstance(num_layers, int) and not isinstance(num_layers, bool) else None

    headers = {n: h for n, h in tensor_headers(root).items() if not _beyond_layers(n, num_layers)}
    index = read_index(root)

    # pair every FP8 weight with its scales before reading any data
    for name, (dt, _) in headers.items():
        if dt in ("F8_E5M2", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2"):
            raise CheckpointError(
                f"tensor {name} is {dt}, which the reference loader cannot dequantize",
                hint="only block-FP8 E4M3 checkpoints are supported",
            )
        if dt == "F8_E4M3":
            if block is None:
                raise CheckpointError(
                    f"tensor {name} is F8_E4M3 but config.json has no fp8 quantization_config",
                    hint="the config does not belong to these weights; " + _NEXT_PULL,
                )
            if name + SCALE_SUFFIX not in headers:
                raise CheckpointError(f"FP8 tensor {name} has no {name + SCALE_SUFFIX}", hint=_NEXT_PULL)
        if name.endswith(SCALE_SUFFIX):
            base = name[: -len(SCALE_SUFFIX)]
            if headers.get(base, ("",))[0] != "F8_E4M3":
                raise CheckpointError(f"scale tensor {name} has no F8_E4M3 tensor {base} beside it", hint=_NEXT_PULL)

    keep = _keep_dtype(dtype)
    by_shard: dict[str, list[str]] = {}
    for name in headers:
        by_shard.setdefault(index[name], []).append(name)
    out: dict[str, torch.Tensor] = {}
    with contextlib.ExitStack() as stack:
        handles: dict[str, object] = {}

        def shard_file(shard: str):
            if shard not in handles:
                handles[shard] = stack.enter_context(safe_open(str(root / shard), framework="pt", device="cpu"))
            return handles[shard]

        for shard, names in by_shard.items():
            f = shard_file(shard)
            for name in names:
                dt, _ = headers[name]
                if name.endswith(SCALE_SUFFIX):
                    continue
                if dt == "F8_E4M3":
                    scale_name = name + SCALE_SUFFIX
                    scale = shard_file(index[scale_name]).get_tensor(scale_name)
                    out[name] = dequantize_fp8_block(f.get_tensor(name), scale, block).to(dtype)
                elif _stays_fp32(name, dt, not_convert):
                    out[name] = f.get_tensor(name).to(keep)
                else:
                    t = f.get_tensor(name)
                    out[name] = t.to(dtype) if t.is_floating_point() else t
    return out


# ----------------------------------------------------------------------------------------
# transformers model
# ----------------------------------------------------------------------------------------
def _auto_config(root: Path, raw: dict):
    from transformers import AutoConfig

    model_type = raw.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise CheckpointError(
            f"{root / CONFIG_FILE} has no model_type", hint="this is not a transformers checkpoint config"
        )
    try:
        # never run code shipped with a checkpoint: the reference uses transformers' own classes
        return AutoConfig.from_pretrained(str(root), trust_remote_code=False, local_files_only=True)
    except (ValueError, KeyError) as e:
        import transformers

        raise CheckpointError(
            f"transformers {transformers.__version__} does not know model_type {model_type!r} "
            f"(architectures {raw.get('architectures')})",
            hint="upgrade transformers (MiniMax-M2 needs >= 5.18) or use a checkpoint of an architecture it ships",
        ) from e


def load_causal_lm(
    model_dir: str | os.PathLike,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    *,
    experts_implementation: str | None = None,
    attn_implementation: str | None = None,
):
    """A transformers causal LM (eval mode) with the checkpoint's weights from `load_state_dict`.

    * Weight names go through transformers' own checkpoint conversions (`from_pretrained`
      with a state dict), e.g. MiniMax-M2's `block_sparse_moe.experts.N.w1/w3/w2` are fused
      into `mlp.experts.gate_up_proj` / `down_proj` exactly as for a bf16 checkpoint.
    * `quantization_config` is removed from the runtime config (weights are dequantized).
    * Tensors `load_state_dict` keeps in float32 (router gate weight and
      e_score_correction_bias) are float32 in the model too; MiniMax-M2's router casts the
      hidden state to its weight's dtype, so its logits are computed in float32 like vLLM.
    * `experts_implementation`: default transformers' choice for bf16/fp16, "eager" for
      float32/float64 runs.
    * `model.model.layers` are the decoder layers, `model.model.norm` the final norm.
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING
    from transformers.utils import logging as hf_logging

    dtype = _float_dtype(dtype)
    root = _model_dir(model_dir)
    raw = read_config(root)
    config = _auto_config(root, raw)
    try:
        model_cls = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    except KeyError:
        raise CheckpointError(
            f"model_type {raw.get('model_type')!r} (architectures {raw.get('architectures')}) is not a causal LM "
            "that transformers can build",
            hint="the reference engine needs a decoder-only causal LM checkpoint",
        ) from None

    state_dict = load_state_dict(root, dtype)
    fp32_names = {n for n, t in state_dict.items() if t.is_floating_point() and t.dtype != dtype}

    if hasattr(config, "quantization_config"):
        del config.quantization_config  # weights are dequantized; no quantizer at run time
    kwargs = {}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation

    # quiet: a mismatch is reported below as one CheckpointError, not as transformers' table
    progress, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        model, info = model_cls.from_pretrained(
            None, config=config, state_dict=state_dict, dtype=dtype, output_loading_info=True, **kwargs
        )
    except (RuntimeError, ValueError) as e:
        raise CheckpointError(
            f"transformers could not build {model_cls.__name__} from {root}: {e}", hint=_NEXT_PULL
        ) from e
    finally:
        hf_logging.set_verbosity(verbosity)
        if progress:
            hf_logging.enable_progress_bar()
    kinds = ("missing_keys", "unexpected_keys", "mismatched_keys")
    problems = {k: sorted(map(str, info[k])) for k in kinds if info.get(k)}
    if problems or info.get("error_msgs"):
        first = next(iter(problems.items()), ("error_msgs", info.get("error_msgs")))
        raise CheckpointError(
            f"{root} does not fit {model_cls.__name__}: {first[0]} {first[1][:3]}",
            hint="the weights do not match config.json; " + _NEXT_PULL,
        )

    inner = getattr(model, "model", None)
    layers, norm = getattr(inner, "layers", None), getattr(inner, "norm", None)
    if not (isinstance(layers, torch.nn.ModuleList) and isinstance(norm, torch.nn.Module)):
        raise CheckpointError(
            f"{model_cls.__name__} does not expose its decoder layers as model.model.layers and its final norm "
            "as model.model.norm",
            hint="the reference engine supports Llama-style decoder-only LMs (MiniMax-M2, Qwen3, DeepSeek-V3, ...)",
        )
    _restore_wide_tensors(model, state_dict, fp32_names)

    if experts_implementation is None and dtype not in (torch.bfloat16, torch.float16):
        experts_implementation = "eager"
    if experts_implementation is not None and model._can_set_experts_implementation():
        model.set_experts_implementation(experts_implementation)
    model.eval()
    return model.to(device)


def _restore_wide_tensors(model, state_dict: dict[str, torch.Tensor], names: set[str]) -> None:
    """from_pretrained casts every tensor to the run dtype; put the float32-kept ones (router)
    back at full precision. Router tensors are never fused by transformers' conversions,
    only renamed (MiniMax-M2: block_sparse_moe -> mlp), so the model name is found directly."""
    if not names:
        return
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    for name in sorted(names):
        candidates = [name, name.replace(".block_sparse_moe.", ".mlp.")]
        target = next((c for c in candidates if c in params or c in buffers), None)
        if target is None:
            raise CheckpointError(
                f"cannot find where {name} landed in {type(model).__name__} to keep it in float32",
                hint="this architecture renames its router tensors; extend _restore_wide_tensors",
            )
        value = state_dict[name]
        module_name, _, attr = target.rpartition(".")
        module = model.get_submodule(module_name)
        current = getattr(module, attr)
        if tuple(current.shape) != tuple(value.shape):
            raise CheckpointError(
                f"{name} has shape {list(value.shape)}, the model expects {list(current.shape)}", hint=_NEXT_PULL
            )
        value = value.to(device=current.device)
        if target in params:
            setattr(module, attr, torch.nn.Parameter(value, requires_grad=False))
        else:
            persistent = attr not in module._non_persistent_buffers_set
            module.register_buffer(attr, value, persistent=persistent)
