"""huggingface_hub's and the network's exceptions, turned into one PullError line with a
next step (`hub_errors` wraps every request of a pull)."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from pathlib import Path

from ..errors import PullError
from .pin import pin_text


def _transport_errors() -> tuple[type[BaseException], ...]:
    out: list[type[BaseException]] = []
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"), ("requests", "RequestException")):
        with contextlib.suppress(ImportError, AttributeError):
            out.append(getattr(__import__(module), name))
    return tuple(out)


@contextlib.contextmanager
def hub_errors(repo: str, commit: str, endpoint: str, local_dir: Path) -> Iterator[None]:
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
            hint=f"check --revision (the chain pins {pin_text()}) and HF_ENDPOINT",
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
