"""The plan of a pull: what the hub lists at the commit, what the directory already holds at
that commit, and whether the disk can take the rest (checked before the first byte).

A file is complete when it has the listed size and its local_dir metadata names the commit
(huggingface_hub then skips it without a request); any other file at the destination is
replaced, so its bytes count as freed. The disk must hold the bytes still to fetch plus
1 GiB headroom.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import PullError
from .pin import local_dir_commit

HEADROOM_BYTES = 1 << 30  # never plan to fill a disk to the last byte


def human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


@dataclass(frozen=True)
class RemoteFile:
    path: str  # relative, POSIX
    size: int  # bytes (the LFS object's size for LFS files)


@dataclass
class PullPlan:
    repo: str
    commit: str
    local_dir: Path
    files: list[RemoteFile]
    complete: list[str] = field(default_factory=list)  # already here at this commit
    to_fetch: list[str] = field(default_factory=list)
    wrong_size: list[str] = field(default_factory=list)  # at the destination with another size: deleted first
    remaining_bytes: int = 0  # bytes the disk must still take

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def fetch_bytes(self) -> int:
        """bytes to transfer (files to download, whole)."""
        todo = set(self.to_fetch)
        return sum(f.size for f in self.files if f.path in todo)


def check_repo_path(path: str) -> str:
    p = PurePosixPath(path)
    if not path or p.is_absolute() or any(part in ("", ".", "..") for part in p.parts) or "\\" in path:
        raise PullError(
            f"the hub lists a file {path!r} that is not a plain relative path", hint="check HF_ENDPOINT"
        )
    return path


def plan_pull(local_dir: Path, repo: str, commit: str, files: list[RemoteFile]) -> PullPlan:
    """Which files still need bytes. A file is complete when it has the listed size and its
    local_dir metadata names this commit (huggingface_hub then skips it without a request);
    any other file at the destination is deleted before its download, so its bytes are
    subtracted from what the disk must take. huggingface_hub trusts a file whose metadata
    names the commit whatever its size, so pull deletes wrong-size files itself (`wrong_size`):
    a truncated shard is fetched again."""
    plan = PullPlan(repo=repo, commit=commit, local_dir=local_dir, files=files)
    for f in files:
        dest = local_dir / f.path
        size = dest.stat().st_size if dest.is_file() else None
        if size == f.size and local_dir_commit(local_dir, f.path) == commit:
            plan.complete.append(f.path)
        else:
            plan.to_fetch.append(f.path)
            plan.remaining_bytes += max(0, f.size - (size or 0))
            if size is not None and size != f.size:
                plan.wrong_size.append(f.path)
    return plan


def disk_target(local_dir: Path) -> Path:
    p = local_dir.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_disk_space(plan: PullPlan) -> tuple[int, int]:
    """(needed, free) bytes; raises PullError when the disk cannot take the pull."""
    if plan.remaining_bytes == 0:
        return 0, -1
    target = disk_target(plan.local_dir)
    free = shutil.disk_usage(target).free
    needed = plan.remaining_bytes + HEADROOM_BYTES
    if free < needed:
        raise PullError(
            f"not enough disk space at {target}: the pull needs {human_bytes(needed)} "
            f"({human_bytes(plan.remaining_bytes)} to download + {human_bytes(HEADROOM_BYTES)} headroom), "
            f"{human_bytes(free)} free",
            hint=f"free {human_bytes(needed - free)} there, or choose another --dir",
        )
    return needed, free
