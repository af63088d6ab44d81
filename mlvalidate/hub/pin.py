"""What pins a checkpoint directory to one commit: the chain's pin, the full-commit rule, the
pull record `mlvalidate pull` writes last, and huggingface_hub's local_dir metadata.

Shared by hub/pull.py (which writes the record) and hub/verify.py (which checks it); neither
of those imports the other.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..errors import PullError

# The chain definition whose hf_repo / hf_commit are the default pin (configs/chain/<id>.yaml,
# read through serving/profiles.py: MiniMaxAI/MiniMax-M2.7 @ d494266a..., docs/minimax-m2.md §1).
CHAIN_ID = "minimaxai-minimax-m2.7"

RECORD_FILE = ".mlvalidate-pull.json"
RECORD_SCHEMA = "mlvalidate.pull/1"

# huggingface_hub's local_dir bookkeeping: DIR/.cache/huggingface/download/<path>.metadata
# holds "<commit>\n<etag>\n<timestamp>\n" for every file it downloaded there.
HF_LOCAL_META_DIR = Path(".cache") / "huggingface" / "download"

_FULL_COMMIT = re.compile(r"[0-9a-fA-F]{40}")
_SHORT_SHA = re.compile(r"[0-9a-fA-F]{4,39}")


def pinned_model() -> tuple[str, str]:
    """(hf_repo, hf_commit) the chain pins, from its chain definition (ProfileError if unreadable)."""
    from ..serving.chain_model import load_chain

    chain = load_chain(CHAIN_ID)
    return chain.hf_repo, chain.hf_commit


def pin_text() -> str:
    """'REPO @ COMMIT' for hints; never raises (a hint must not fail)."""
    try:
        repo, commit = pinned_model()
    except Exception:  # noqa: BLE001 - the definition's own error is reported where it is used
        return f"the commit in configs/chain/{CHAIN_ID}.yaml"
    return f"{repo} @ {commit}"


def check_commit(revision: object, option: str = "--revision") -> str:
    """A full 40-hex commit sha, lower-cased; anything else (branch, tag, short sha) raises."""
    if isinstance(revision, str) and _FULL_COMMIT.fullmatch(revision):
        return revision.lower()
    if isinstance(revision, str) and _SHORT_SHA.fullmatch(revision):
        what = "a short commit sha (ambiguous)"
    else:
        what = "a branch or tag name (it can move)"
    raise PullError(
        f"{option} {revision!r} is {what}, not a full 40-hex commit",
        hint=f"pass the full commit sha (the chain pins {pin_text()})",
    )


def local_dir_commit(local_dir: str | os.PathLike, path: str) -> str | None:
    """The commit huggingface_hub recorded for `path` when it downloaded it into `local_dir`
    (first line of its .metadata file), or None."""
    meta = Path(local_dir) / HF_LOCAL_META_DIR / f"{path}.metadata"
    try:
        with meta.open(encoding="utf-8") as f:
            line = f.readline().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return line or None


def read_pull_record(local_dir: str | os.PathLike) -> dict | None:
    """DIR/.mlvalidate-pull.json as a dict; None when absent. A malformed record is a PullError."""
    path = Path(local_dir) / RECORD_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PullError(f"pull record {path} is unreadable: {e}", hint="run mlvalidate pull again") from e
    if not (
        isinstance(record, dict)
        and record.get("schema") == RECORD_SCHEMA
        and isinstance(record.get("repo"), str)
        and isinstance(record.get("commit"), str)
        and isinstance(record.get("files"), dict)
    ):
        raise PullError(f"pull record {path} is not a {RECORD_SCHEMA} record", hint="run mlvalidate pull again")
    return record
