"""JSON files the harness writes: one atomic writer for all of them."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_json(path: str | Path, doc, *, ensure_ascii: bool = False) -> Path:
    """`doc` as indented JSON plus a newline, written to a temporary file first and renamed
    into place, so a reader never sees half a file (and an interrupted write leaves the old one)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=ensure_ascii) + "\n", encoding="utf-8")
    os.replace(tmp, p)
    return p
