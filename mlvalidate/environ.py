"""Environment variables set for a while and put back afterwards."""

from __future__ import annotations

import contextlib
import os


@contextlib.contextmanager
def applied_env(env: dict[str, str] | None):
    """Set `env` for the duration of the block; restore each variable (or its absence) after."""
    env = dict(env or {})
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
