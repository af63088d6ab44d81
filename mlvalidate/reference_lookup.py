"""Where golden references are found: the lookup folders, a model id's file, a CLI REFERENCE
argument (a path or a model id), and reading a reference file's JSON with one error per way it fails.

The schema and its readers are artifacts.py's; this module only finds and opens files."""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import ReferenceError_
from .jsonio import JsonProblem, loads
from .shipped import ARTIFACTS_DIR

PACKAGE_ARTIFACTS = ARTIFACTS_DIR  # the shipped references (mlvalidate/shipped.py)


def safe_id(model: str) -> str:
    """Model id -> reference file stem: lower case, '/', '\\', ':' and spaces -> '-', '--' collapsed."""
    s = re.sub(r"[/\\: ]", "-", model.lower())
    return re.sub(r"-{2,}", "-", s)


def artifacts_dirs() -> list[Path]:
    """Where references are looked up: $MLVALIDATE_ARTIFACTS (os.pathsep list), ./artifacts, the shipped folder."""
    dirs = [Path(p) for p in os.environ.get("MLVALIDATE_ARTIFACTS", "").split(os.pathsep) if p]
    dirs += [Path.cwd() / "artifacts", PACKAGE_ARTIFACTS]
    seen, out = set(), []
    for d in dirs:
        key = d.resolve()
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _model_field(path: Path) -> str | None:
    """The 'model' field of a JSON file, or None when it cannot be read as a reference."""
    try:
        doc = read_json_file(path, "reference")
    except ReferenceError_:
        return None
    model = doc.get("model") if isinstance(doc, dict) else None
    return model if isinstance(model, str) else None


@dataclass(frozen=True)
class Found:
    """The reference a REFERENCE argument names: its file, why that file, and the other files that
    name the same model (a model id picks one; the others are listed so that none is opened silently)."""

    path: Path
    why: str
    others: tuple[Path, ...] = ()

    def choice_line(self) -> str | None:
        """One line saying which file a model id opened and which it did not, when several name the model."""
        if not self.others:
            return None
        return (f"reference {self.path.name} chosen: {self.why}; also for this model: "
                f"{', '.join(str(p) for p in self.others)} (pass its path to use it)")


def lookup_reference(model: str) -> Found:
    """The reference file for a model id (e.g. 'MiniMaxAI/MiniMax-M2.7').

    `<safe_id>.json` in the first lookup folder that has it wins. Otherwise the files
    `<safe_id>-*.json` (e.g. a hardware-specific name such as zai-org-glm-5.3-flash-h100-tp8.json)
    whose 'model' field is exactly `model`: one is the reference, several are an error. Every other
    file naming the model (a `<safe_id>-*.json` beside the exact name, a copy in a later folder) is
    returned in `others`."""
    stem = safe_id(model)
    name = stem + ".json"
    dirs = artifacts_dirs()
    exact = [d / name for d in dirs if (d / name).is_file()]
    named, seen = [], {p.resolve() for p in exact[:1]}
    for d in dirs:
        try:
            entries = sorted(os.listdir(d))
        except OSError:
            continue
        for entry in entries:
            if not (entry == name or (entry.startswith(stem + "-") and entry.endswith(".json"))):
                continue
            path = d / entry
            key = path.resolve()
            if key in seen or not path.is_file():
                continue
            seen.add(key)
            if _model_field(path) == model:
                named.append(path)
    if exact:
        return Found(exact[0], f"its file name is the model id's ({name}; the first lookup folder holding one wins)",
                     tuple(named))
    if len(named) == 1:
        return Found(named[0], f"the only {stem}-*.json naming {model}")
    if named:
        raise ReferenceError_(
            f"{len(named)} golden references for model {model!r}: {', '.join(map(str, named))}",
            "pass the file path of the one you mean",
        )
    raise ReferenceError_(
        f"no golden reference for model {model!r} (looked for {name} and {stem}-*.json naming that model "
        f"in {', '.join(map(str, dirs))})",
        "pass the reference file's path, or set MLVALIDATE_ARTIFACTS to its folder",
    )


def find_reference(model: str) -> Path:
    """The file `lookup_reference` picks for a model id."""
    return lookup_reference(model).path


_MODEL_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")  # "org/name" or "name"


def path_problem(path: Path) -> str | None:
    """Why `path` cannot be read as a file ("is a directory", "is a dangling symbolic link", ...),
    or None when it is a regular file or when nothing at all is there (the caller says "not found")."""
    try:
        st = path.stat()
    except ValueError:  # a NUL byte in it: no file can have that name
        return "is not a usable path (it holds a NUL byte)"
    except FileNotFoundError:
        if path.is_symlink():
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            return f"is a dangling symbolic link (its target {target} does not exist)"
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symbolic link loop (it never reaches a file)"
        if e.errno == errno.ENOTDIR:
            return None  # a path through a file: nothing is there
        return f"cannot be read ({e.strerror or e})"
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, not a JSON file"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    return None


def resolve_reference(arg: str) -> Found:
    """A CLI REFERENCE argument: an existing file, else a model id such as 'MiniMaxAI/MiniMax-M2.7'."""
    p = Path(arg)
    problem = path_problem(p)
    if problem is None and p.is_file():
        return Found(p, "the file given")
    looks_like_id = not arg.endswith(".json") and _MODEL_ID.match(arg) is not None
    if problem is not None:
        if looks_like_id and problem.startswith("is a directory"):
            try:  # a folder that happens to carry a model id's name: the model id wins if it has a reference
                return lookup_reference(arg)
            except ReferenceError_:
                pass
        raise ReferenceError_(f"reference {arg} {problem}", "pass a golden-reference JSON file, or a model id")
    if not looks_like_id:
        raise ReferenceError_(f"reference file not found: {arg}", "check the path, or pass a model id")
    return lookup_reference(arg)


def read_json_file(path: Path, what: str):
    """The decoded JSON of a file; every way it can fail is one ReferenceError_ saying which."""
    problem = path_problem(path)
    if problem is not None:
        raise ReferenceError_(f"{what} {path} {problem}", "pass a JSON file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ReferenceError_(f"{what} file not found: {path}", "check the path") from None
    except OSError as e:
        raise ReferenceError_(f"cannot read {what} {path}: {e.strerror or e}") from None
    try:
        return loads(data)
    except JsonProblem as e:
        raise ReferenceError_(f"{path}: {e}", "golden-reference files are UTF-8 JSON, a few levels deep") from None
