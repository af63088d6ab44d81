"""The configs folder and strict reading of its YAML files (chain definitions, profiles).

The folders, in lookup order: $MLVALIDATE_CONFIGS (an os.pathsep list; `mlvalidate --configs
DIR` adds to it) and the shipped configs/ (mlvalidate/shipped.py): `chain/<model>.yaml` (loaded by
serving.chain_model) and `<profile>/profile.yaml` (loaded by serving.profiles). Every error is
a ProfileError that names the file and the key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from ..errors import MlvalidateError
from ..shipped import CONFIGS_DIR

REPO_CONFIGS = CONFIGS_DIR  # the shipped configs/ (top-level in the repository, inside the wheel)
PROFILE_FILE = "profile.yaml"
CHAIN_DIR = "chain"


class ProfileError(MlvalidateError):
    """A chain definition or hardware profile is missing, malformed, or breaks the merge rule."""


def configs_dirs() -> list[Path]:
    """Where chain definitions and profiles are looked up, first match wins: the folders of
    $MLVALIDATE_CONFIGS, then the shipped configs/."""
    user = [Path(p) for p in os.environ.get("MLVALIDATE_CONFIGS", "").split(os.pathsep) if p]
    return [*user, REPO_CONFIGS]


def configs_dir() -> Path:
    """The first configs folder (where a hint tells users to look)."""
    return configs_dirs()[0]


def read_yaml(path: Path, what: str) -> dict:
    """A YAML mapping; every way the file can be unusable (unreadable, not UTF-8, not YAML,
    nested too deeply, an alias bomb, a lone surrogate in a string) is one ProfileError."""
    from ..jsonio import document_problem

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ProfileError(f"cannot read {what} {path}: {e.strerror or e}", "check the path") from e
    except UnicodeDecodeError as e:
        raise ProfileError(f"{what} {path} is not UTF-8 text (byte at offset {e.start})", "fix the file") from None
    except yaml.YAMLError as e:
        raise ProfileError(f"{what} {path} is not valid YAML: {' '.join(str(e).split())[:300]}", "fix the file") from None
    except (RecursionError, ValueError) as e:  # nested too deeply for the parser; a bad number or NUL
        raise ProfileError(f"{what} {path} is not a usable YAML document ({type(e).__name__})", "fix the file") from None
    problem = document_problem(doc)
    if problem:
        raise ProfileError(f"{what} {path}: {problem}", "fix the file")
    if not isinstance(doc, dict):
        raise ProfileError(f"{what} {path} is not a YAML mapping", "see configs/ for the expected layout")
    return doc


class Fields:
    """Typed, strict access to one YAML mapping: errors name the file and the key."""

    def __init__(self, doc: dict, path: Path, what: str, known: set[str]):
        self.doc, self.path, self.what = doc, path, what
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ProfileError(
                f"{what} {path} has unknown key(s) {', '.join(unknown)}",
                f"known keys: {', '.join(sorted(known))}",
            )

    def _bad(self, key: str, want: str) -> ProfileError:
        return ProfileError(f"{self.what} {self.path}: `{key}` must be {want} (got {self.doc.get(key)!r})",
                            "fix the file")  # fmt: skip

    def get(self, key: str, kind: type | tuple, *, required: bool = False, default: Any = None, positive: bool = False):
        if key not in self.doc or self.doc[key] is None:
            if required:
                raise ProfileError(f"{self.what} {self.path} has no `{key}`", "add it (see the shipped configs/)")
            return default
        v = self.doc[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(v, bool) and bool not in kinds or not isinstance(v, kinds):
            raise self._bad(key, " or ".join(k.__name__ for k in kinds))
        if positive and not v > 0:
            raise self._bad(key, "> 0")
        return float(v) if float in kinds and int in kinds and not isinstance(v, bool) else v

