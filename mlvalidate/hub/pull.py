"""Pull the chain's pinned checkpoint from the hub into a local directory.

    mlvalidate pull [--dir DIR] [--revision COMMIT] [--repo REPO]

Phases, each announced on one line through `echo` (huggingface_hub draws its own progress bars):

1. revision: only a full 40-hex commit is accepted — a branch, tag or short sha can move or be
   ambiguous, and the chain pins a commit (docs/minimax-m2.md §1). Refused before any request.
2. listing: `HfApi.model_info(files_metadata=True)` at the commit gives every file and its size.
3. disk: bytes still to fetch (files already complete at this commit count 0; a file of another
   revision at the destination is replaced, so its bytes count as freed) plus 1 GiB headroom,
   against `shutil.disk_usage(DIR)` — refused before the first byte is downloaded (plan.py).
4. download: `snapshot_download(local_dir=DIR, revision=COMMIT)`. What huggingface_hub 2.x
   resumes by itself (checked over loopback in tests/test_pull.py):
   * a connection dropped mid-file is resumed inside the same run with an HTTP Range request
     (up to 5 attempts without progress);
   * files finished by an earlier run are skipped (their local_dir metadata under
     DIR/.cache/huggingface/download records the commit), so an interrupted pull loses only
     the files that were in flight;
   * a partial file of an interrupted run is NOT reused: each download writes a process-unique
     `*.incomplete` file, deleted on failure. One left by a killed process is never reused;
     pull deletes such leftovers (older than 10 minutes, under DIR's lock) before counting
     free space.
5. check: every file is there with the listed size and its metadata records the commit.
6. record: DIR/.mlvalidate-pull.json (repo, commit, endpoint, files with sizes, time), written
   last and atomically — `mlvalidate verify-weights` checks the commit it names.

The command (commands/pull.py) then runs the verify-weights checks (hub/verify.py) on the
result; this module does not import them.

The endpoint is HF_ENDPOINT (read at call time, so a mirror or a test server can be chosen by
the environment); the token is huggingface_hub's usual one (HF_TOKEN or `hf auth login`).
Errors are PullError (exit 2) with one line and a next step (hub_errors.py).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..errors import PullError
from ..jsonio import write_json
from .hub_errors import hub_errors
from .pin import HF_LOCAL_META_DIR, RECORD_FILE, RECORD_SCHEMA, check_commit, local_dir_commit, pin_text, pinned_model
from .plan import PullPlan, RemoteFile, check_disk_space, check_repo_path, disk_target, human_bytes, plan_pull

LOCK_FILE = ".mlvalidate-pull.lock"
STALE_PARTIAL_S = 600  # a *.incomplete file untouched this long belongs to a dead download
DEFAULT_WORKERS = 8  # files downloaded at once (snapshot_download's default)


# ----------------------------------------------------------------------------------------
# DIR's lock and the leftovers of killed downloads
# ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def _dir_lock(local_dir: Path) -> Iterator[None]:
    """One pull per directory at a time (an advisory lock on DIR/.mlvalidate-pull.lock)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not a GPU host
        yield
        return
    path = local_dir / LOCK_FILE
    with path.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            raise PullError(
                f"another pull is writing into {local_dir} (it holds {path})",
                hint="wait for it to finish, or choose another --dir",
            ) from e
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def remove_stale_partials(local_dir: Path, older_than_s: float = STALE_PARTIAL_S) -> tuple[int, int]:
    """Delete huggingface_hub's `*.incomplete` files under DIR/.cache/huggingface/download that
    nobody has written for `older_than_s` (left by a killed download; never resumed).
    Call with DIR's lock held. Returns (files, bytes) removed."""
    root = local_dir / HF_LOCAL_META_DIR
    if not root.is_dir():
        return 0, 0
    now, n, freed = time.time(), 0, 0
    for p in root.rglob("*.incomplete"):
        with contextlib.suppress(OSError):
            st = p.stat()
            if p.is_file() and now - st.st_mtime >= older_than_s:
                p.unlink()
                n, freed = n + 1, freed + st.st_size
    return n, freed


# ----------------------------------------------------------------------------------------
# pull
# ----------------------------------------------------------------------------------------
@dataclass
class PullResult:
    local_dir: Path
    repo: str
    commit: str
    files: dict[str, int]  # path -> bytes
    downloaded_bytes: int
    elapsed_s: float
    record_path: Path

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())


def default_dir(repo: str) -> Path:
    return Path("models") / repo.replace("/", "--")


def _endpoint(endpoint: str | None) -> str:
    if endpoint:
        return endpoint.rstrip("/")
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _remote_files(api, repo: str, commit: str) -> list[RemoteFile]:
    info = api.model_info(repo, revision=commit, files_metadata=True)
    if info.sha and info.sha != commit:
        raise PullError(
            f"the hub answered for commit {info.sha} when asked for {commit}",
            hint="HF_ENDPOINT does not serve exact commits; unset it or use another mirror",
        )
    siblings = info.siblings or []
    if not siblings:
        raise PullError(f"{repo} @ {commit} lists no files", hint="check --repo and --revision")
    out, unsized = [], []
    for s in siblings:
        size = s.lfs.size if s.lfs is not None else s.size
        if not isinstance(size, int) or size < 0:
            unsized.append(s.rfilename)
            continue
        out.append(RemoteFile(check_repo_path(s.rfilename), size))
    if unsized:
        raise PullError(
            f"the hub did not report the size of {len(unsized)} file(s), first: {unsized[0]}",
            hint="without sizes the disk cannot be checked; try again later or another HF_ENDPOINT",
        )
    return sorted(out, key=lambda f: f.path)


def _check_downloaded(plan: PullPlan) -> None:
    bad = []
    for f in plan.files:
        dest = plan.local_dir / f.path
        size = dest.stat().st_size if dest.is_file() else None
        if size != f.size:
            bad.append(f"{f.path} has {'no file' if size is None else f'{size} bytes'}, the hub lists {f.size}")
        elif (got := local_dir_commit(plan.local_dir, f.path)) != plan.commit:
            bad.append(f"{f.path} was downloaded at commit {got}, not {plan.commit}")
    if bad:
        raise PullError(
            f"after the download {len(bad)} file(s) do not match the hub's listing, first: {bad[0]}",
            hint="run mlvalidate pull again (complete files are kept)",
        )


def _write_record(plan: PullPlan, endpoint: str, started: float, fetched: int) -> Path:
    import huggingface_hub

    from .. import __version__

    elapsed = time.time() - started
    record = {
        "schema": RECORD_SCHEMA,
        "repo": plan.repo,
        "commit": plan.commit,
        "endpoint": endpoint,
        "files": {f.path: f.size for f in plan.files},
        "bytes": plan.total_bytes,
        "downloaded_bytes": fetched,
        "started_at": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed, 3),
        "mlvalidate": __version__,
        "huggingface_hub": huggingface_hub.__version__,
    }
    return write_json(plan.local_dir / RECORD_FILE, record, ensure_ascii=True)


def pull(
    local_dir: str | os.PathLike | None = None,
    repo: str | None = None,
    revision: str | None = None,
    *,
    endpoint: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    max_workers: int = DEFAULT_WORKERS,
    echo: Callable[[str], None] | None = None,
) -> PullResult:
    """Download `repo` at commit `revision` (default: the chain's pin) into `local_dir`
    (default models/<owner>--<name>), resuming what an earlier run finished, and write the
    pull record. Raises PullError (nothing downloaded when the revision, listing or disk
    check fails). `cache_dir`: huggingface_hub's cache, looked up for files it already holds.
    `echo` receives one line per phase (nothing is printed here; None: silent)."""
    echo = echo or _silent
    if revision is not None:
        commit = check_commit(revision)  # before anything else: a bad revision is refused at once
    if repo is None or revision is None:
        pin_repo, pin_commit = pinned_model()
        repo = pin_repo if repo is None else repo
        if revision is None:
            if repo != pin_repo:
                raise PullError(f"--repo {repo} needs --revision COMMIT", hint=f"the chain pins {pin_text()}")
            commit = pin_commit
    local_dir = Path(local_dir) if local_dir is not None else default_dir(repo)
    if local_dir.exists() and not local_dir.is_dir():
        raise PullError(f"{local_dir} exists and is not a directory", hint="choose another --dir")

    from huggingface_hub import HfApi, constants, snapshot_download

    if constants.is_offline_mode():
        raise PullError("HF_HUB_OFFLINE is set, so nothing can be downloaded", hint="unset HF_HUB_OFFLINE to pull")
    endpoint = _endpoint(endpoint)
    started = time.time()
    echo(f"pull: {repo} @ {commit} from {endpoint} into {local_dir.absolute()}")

    with contextlib.ExitStack() as stack:
        locked = local_dir.is_dir()
        if locked:  # an earlier pull's leftovers go before the disk is measured
            stack.enter_context(_dir_lock(local_dir))
            n, freed = remove_stale_partials(local_dir)
            if n:
                echo(f"cleanup: removed {n} partial file(s) of an interrupted download ({human_bytes(freed)})")

        with hub_errors(repo, commit, endpoint, local_dir):
            files = _remote_files(HfApi(endpoint=endpoint, token=token), repo, commit)
        plan = plan_pull(local_dir, repo, commit, files)
        echo(
            f"listing: {len(plan.files)} files, {human_bytes(plan.total_bytes)}; {len(plan.complete)} already "
            f"complete here, {len(plan.to_fetch)} to download ({human_bytes(plan.fetch_bytes)}, "
            f"{human_bytes(plan.remaining_bytes)} more on disk)"
        )
        needed, free = check_disk_space(plan)
        if needed:
            echo(f"disk: {human_bytes(free)} free at {disk_target(local_dir)}, {human_bytes(needed)} needed")

        try:
            local_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PullError(f"cannot create {local_dir}: {e.strerror or e}", hint="choose a writable --dir") from e
        if not locked:  # the directory is new: take its lock now
            stack.enter_context(_dir_lock(local_dir))
        (local_dir / RECORD_FILE).unlink(missing_ok=True)  # the directory is in flux until the end
        if plan.wrong_size:
            first = plan.wrong_size[0]
            echo(f"replace: {len(plan.wrong_size)} file(s) with a size the hub does not list, first: {first}")
            for path in plan.wrong_size:
                (local_dir / path).unlink(missing_ok=True)

        if plan.to_fetch:
            echo(f"download: {len(plan.to_fetch)} file(s) with up to {max_workers} at a time")
        with hub_errors(repo, commit, endpoint, local_dir):
            snapshot_download(
                repo_id=repo,
                revision=commit,
                local_dir=str(local_dir),
                cache_dir=None if cache_dir is None else str(cache_dir),
                endpoint=endpoint,
                token=token,
                max_workers=max_workers,
            )
        _check_downloaded(plan)
        record_path = _write_record(plan, endpoint, started, plan.fetch_bytes)
    elapsed = time.time() - started
    echo(f"check: {len(plan.files)} files have the listed sizes and commit {commit[:12]}; recorded in {record_path}")
    return PullResult(
        local_dir=local_dir,
        repo=repo,
        commit=commit,
        files={f.path: f.size for f in plan.files},
        downloaded_bytes=plan.fetch_bytes,
        elapsed_s=elapsed,
        record_path=record_path,
    )


def _silent(line: str) -> None:
    pass
