"""One safetensors file's tensor names, dtypes and shapes, read by the safetensors library.

A safetensors file is `u64 little-endian N | N bytes of JSON header | data buffer`; the header
maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative
to the data buffer, which the tensors tile exactly) plus an optional "__metadata__" object.

`safe_open` (framework "numpy": no torch needed) decides whether a file is acceptable: it
checks the header length, the JSON, the dtypes, that every byte span matches its dtype and
shape, and that the tensors tile the data buffer exactly (a truncated or padded file is
rejected). Only the header is read, never tensor data, so this is cheap even for the 230 GB
MiniMax-M2.7 checkpoint.

The library's error texts do not name the tensor or the numbers involved, so when it
rejects a file `_explain` reads the header once more in Python to say which tensor is wrong
and how (and catches JSON nested too deeply for Python's parser); it never accepts what the
library refused — when it finds nothing, the library's own words are the message.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

from safetensors import SafetensorError, safe_open

from ..errors import CheckpointError

# the hint of every error about damaged or incomplete checkpoint files
NEXT_PULL = "download the checkpoint again (mlvalidate pull) or point at a complete directory"

TensorHeader = tuple[str, tuple[int, ...]]  # (safetensors dtype string, shape)

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the limit the safetensors library itself enforces

# bits per element of every dtype name a safetensors header may carry (for the explanations)
_DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8,
    "F8_E4M3": 8, "F8_E4M3FNUZ": 8, "F8_E5M2": 8, "F8_E5M2FNUZ": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}  # fmt: skip

_LIBRARY_PREFIX = "Error while deserializing header: "


def safetensors_header(path: str | os.PathLike) -> dict[str, TensorHeader]:
    """name -> (dtype string, shape) of one safetensors file, as `safe_open` reads it.
    A file the library rejects raises CheckpointError with one line naming the file and,
    where it can be found, the tensor at fault."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            out: dict[str, TensorHeader] = {}
            for name in f.keys():
                view = f.get_slice(name)
                out[name] = (view.get_dtype(), tuple(view.get_shape()))
            return out
    except SafetensorError as e:
        library = str(e).removeprefix(_LIBRARY_PREFIX)
        why = _explain(path) or f"{path} is not a valid safetensors file (safetensors: {library})"
        raise CheckpointError(why, hint=NEXT_PULL) from None
    except OSError as e:
        raise CheckpointError(f"cannot read shard {path}: {e.strerror or e}", hint=NEXT_PULL) from e


# ----------------------------------------------------------------------------------------
# why the library rejected a file (runs only after a rejection)
# ----------------------------------------------------------------------------------------
def _explain(path: Path) -> str | None:
    """The first problem of a file the library rejected, in one line naming the file; None
    when none is found here (the caller then quotes the library)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                return f"{path} is too short to be a safetensors file ({size} bytes)"
            (n,) = struct.unpack("<Q", prefix)
            if n > MAX_HEADER_BYTES or n > size - 8:
                return f"{path} declares a {n}-byte header in a {size}-byte file (truncated or not safetensors)"
            raw = f.read(n)
    except OSError:
        return None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        return f"{path} has an unparseable safetensors header: {e}"
    except RecursionError:
        return f"{path} has an unparseable safetensors header: JSON nested too deeply"
    if not isinstance(header, dict):
        return f"{path} has a safetensors header that is not a JSON object"
    problem = _entry_problem(header) or _tiling_problem(header, size - 8 - n)
    return f"{path}: {problem}" if problem else None


def _non_negative_ints(v: object, length: int | None = None) -> bool:
    return (
        isinstance(v, list)
        and (length is None or len(v) == length)
        and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v)
    )


def _entry_problem(header: dict) -> str | None:
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                return "__metadata__ must map strings to strings"
            continue
        if not isinstance(entry, dict):
            return f"header entry for {name} is not an object"
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in _DTYPE_BITS:
            return f"tensor {name} has unknown dtype {dtype!r}"
        if not _non_negative_ints(shape):
            return f"tensor {name} has an invalid shape {shape!r}"
        if not _non_negative_ints(offsets, 2) or offsets[0] > offsets[1]:
            return f"tensor {name} has invalid data_offsets {offsets!r}"
        expected = (math.prod(shape) * _DTYPE_BITS[dtype] + 7) // 8
        if offsets[1] - offsets[0] != expected:
            return f"tensor {name} ({dtype} {shape}) spans {offsets[1] - offsets[0]} bytes, expected {expected}"
    return None


def _tiling_problem(header: dict, data_len: int) -> str | None:
    spans = sorted((e["data_offsets"][0], e["data_offsets"][1], name) for name, e in header.items()
                   if name != "__metadata__")  # fmt: skip
    position = 0
    for begin, end, name in spans:
        if begin != position:
            return (f"tensor {name} starts at byte {begin} of the data buffer, expected {position} "
                    "(overlapping or gapped tensors)")  # fmt: skip
        position = end
    if position != data_len:
        return (f"the tensors cover {position} bytes but the file holds {data_len} data bytes "
                "(truncated or padded file)")  # fmt: skip
    return None
