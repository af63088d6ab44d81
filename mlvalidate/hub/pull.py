"""Pull the chain's pinned checkpoint from the hub into a local directory, then verify it.

    mlvalidate pull [--dir DIR] [--revision COMMIT] [--repo REPO]

Phases, each announced on one line (huggingface_hub draws its own progress bars):

1. revision: only a full 40-hex commit is accepted — a branch, tag or short sha can move or be
   ambiguous, and the chain pins a commit (docs/minimax-m2.md §1). Refused before any request.
2. listing: `HfApi.model_info(files_metadata=True)` at the commit gives every file and its size.
3. disk: bytes still to fetch (files already complete at this commit count 0; a file of another
   revision at the destination is replaced, so its bytes count as freed) plus 1 GiB headroom,
   against `shutil.disk_usage(DIR)` — refused before the first byte is downloaded.
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
7. verify: the header/shape checks of `mlvalidate verify-weights` (hub/verify.py).

The endpoint is HF_ENDPOINT (read at call time, so a mirror or a test server can be chosen by
the environment); the token is huggingface_hub's usual one (HF_TOKEN or `hf auth login`).
Errors are PullError (exit 2) with one line and a next step.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from ..errors import PullError

# The chain definition whose hf_repo / hf_commit are the default pin (configs/chain/<id>.yaml,
# read through serving/profiles.py: MiniMaxAI/MiniMax-M2.7 @ d494266a..., docs/minimax-m2.md §1).
CHAIN_ID = "minimaxai-minimax-m2.7"

RECORD_FILE = ".mlvalidate-pull.json"
RECORD_SCHEMA = "mlvalidate.pull/1"
LOCK_FILE = ".mlvalidate-pull.lock"
HEADROOM_BYTES = 1 << 30  # never plan to fill a disk to the last byte
STALE_PARTIAL_S = 600  # a *.incomplete file untouched this long belongs to a dead download
DEFAULT_WORKERS = 8  # files downloaded at once (snapshot_download's default)

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


def _pin_text() -> str:
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
        hint=f"pass the full commit sha (the chain pins {_pin_text()})",
    )


def human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


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


# ----------------------------------------------------------------------------------------
# plan: what the hub has at the commit, what DIR already holds
# ----------------------------------------------------------------------------------------
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


def _check_repo_path(path: str) -> str:
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


def _disk_target(local_dir: Path) -> Path:
    p = local_dir.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_disk_space(plan: PullPlan) -> tuple[int, int]:
    """(needed, free) bytes; raises PullError when the disk cannot take the pull."""
    if plan.remaining_bytes == 0:
        return 0, -1
    target = _disk_target(plan.local_dir)
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


# ----------------------------------------------------------------------------------------
# hub errors -> one line and a next step
# ----------------------------------------------------------------------------------------
def _transport_errors() -> tuple[type[BaseException], ...]:
    out: list[type[BaseException]] = []
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"), ("requests", "RequestException")):
        with contextlib.suppress(ImportError, AttributeError):
            out.append(getattr(__import__(module), name))
    return tuple(out)


@contextlib.contextmanager
def _hub_errors(repo: str, commit: str, endpoint: str, local_dir: Path) -> Iterator[None]:
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    again = "finished files are kept: run mlvalidate pull again to continue"
    try:
        yield
    except RevisionNotFoundError as e:
        raise PullError(
            f"commit {commit} of {repo} was not found on {endpoint}",
            hint=f"check --revision (the chain pins {_pin_text()}) and HF_ENDPOINT",
        ) from e
    except GatedRepoError as e:
        raise PullError(
            f"{repo} is gated and the hub refused this client",
            hint="accept the model's terms on the hub, then set HF_TOKEN to a token of that account",
        ) from e
    except RepositoryNotFoundError as e:
        raise PullError(
            f"repository {repo} was not found on {endpoint} (or it is private)",
            hint="check --repo; for a private or gated repo set HF_TOKEN",
        ) from e
    except RemoteEntryNotFoundError as e:
        raise PullError(
            f"a file listed at commit {commit} could not be downloaded from {endpoint} (404): {_first_line(e)}",
            hint=again + "; if it persists the hub or mirror is inconsistent",
        ) from e
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            hint = "set HF_TOKEN to a token that can read " + repo
        elif status == 429:
            hint = "the hub rate-limits this client: wait a few minutes, set HF_TOKEN, then " + again
        else:
            hint = "the hub had a problem: " + again
        raise PullError(f"the hub answered HTTP {status} for {repo}: {_first_line(e)}", hint=hint) from e
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, *_transport_errors()) as e:
        raise PullError(
            f"cannot reach {endpoint}: {type(e).__name__}: {_first_line(e)}",
            hint="check the network or proxy (or HF_ENDPOINT for a mirror); " + again,
        ) from e
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise PullError(
                f"the disk under {local_dir} filled up during the download",
                hint=f"free space (df -h {local_dir}), then " + again,
            ) from e
        raise PullError(f"download into {local_dir} failed: {_first_line(e)}", hint=again) from e


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " ".join(lines[:2]) if lines else type(e).__name__


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
        out.append(RemoteFile(_check_repo_path(s.rfilename), size))
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
    path = plan.local_dir / RECORD_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def pull(
    local_dir: str | os.PathLike | None = None,
    repo: str | None = None,
    revision: str | None = None,
    *,
    endpoint: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    max_workers: int = DEFAULT_WORKERS,
    echo: Callable[[str], None] = print,
) -> PullResult:
    """Download `repo` at commit `revision` (default: the chain's pin) into `local_dir`
    (default models/<owner>--<name>), resuming what an earlier run finished, and write the
    pull record. Raises PullError (nothing downloaded when the revision, listing or disk
    check fails). `cache_dir`: huggingface_hub's cache, looked up for files it already holds."""
    if revision is not None:
        commit = check_commit(revision)  # before anything else: a bad revision is refused at once
    if repo is None or revision is None:
        pin_repo, pin_commit = pinned_model()
        repo = pin_repo if repo is None else repo
        if revision is None:
            if repo != pin_repo:
                raise PullError(f"--repo {repo} needs --revision COMMIT", hint=f"the chain pins {_pin_text()}")
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

        with _hub_errors(repo, commit, endpoint, local_dir):
            files = _remote_files(HfApi(endpoint=endpoint, token=token), repo, commit)
        plan = plan_pull(local_dir, repo, commit, files)
        echo(
            f"listing: {len(plan.files)} files, {human_bytes(plan.total_bytes)}; {len(plan.complete)} already "
            f"complete here, {len(plan.to_fetch)} to download ({human_bytes(plan.fetch_bytes)}, "
            f"{human_bytes(plan.remaining_bytes)} more on disk)"
        )
        needed, free = check_disk_space(plan)
        if needed:
            echo(f"disk: {human_bytes(free)} free at {_disk_target(local_dir)}, {human_bytes(needed)} needed")

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
        with _hub_errors(repo, commit, endpoint, local_dir):
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


def run_pull(
    local_dir: str | None = None, revision: str | None = None, repo: str | None = None, **kwargs
) -> int:
    """The pull command: pull, then run verify-weights' checks on the result. Exit 0 when
    both succeed, 2 when the checks find problems (PullError for everything else)."""
    from .verify import print_report, verify_weights

    result = pull(local_dir, repo=repo, revision=revision, **kwargs)
    print(f"verify: checking {result.local_dir} (headers, dtypes and shapes, commit)")
    code = print_report(verify_weights(result.local_dir, revision=result.commit, repo=result.repo))
    if code == 0:
        print(
            f"done: {len(result.files)} files, {human_bytes(result.total_bytes)} "
            f"({human_bytes(result.downloaded_bytes)} downloaded) in {result.elapsed_s:.1f} s"
        )
    return code
