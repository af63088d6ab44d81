"""Where a launched server is reached and whether it is ready: the port it binds (refused up
front when busy), the URL to probe, the model ids /v1/models must list, and a one-line state
of the readiness probes."""

from __future__ import annotations

import contextlib
import errno
import socket

from ..http_client import HttpClient
from ..errors import LaunchError


def probe_host(host: str) -> str:
    """Where to reach a server bound to `host` from this machine."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def base_url(host: str, port: int) -> str:
    h = probe_host(host)
    return f"http://[{h}]:{port}" if ":" in h else f"http://{h}:{port}"


def check_port_free(host: str, port: int) -> None:
    """Raise LaunchError if the server could not bind `host:port` (something listens there)."""
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise LaunchError(f"port {port!r} is not a TCP port", "pass --port 1..65535")
    bind_host = host or "0.0.0.0"
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # as uvicorn binds: SO_REUSEADDR, so that TIME_WAIT leftovers do not count as busy
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((bind_host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise LaunchError(
                    f"port {port} on {bind_host} is already in use",
                    f"stop whatever listens there (`ss -ltnp 'sport = :{port}'`) or pass another --port",
                ) from e
            raise LaunchError(
                f"cannot bind {bind_host}:{port}: {e.strerror or e}",
                "pass --host an address of this machine (0.0.0.0 for all interfaces)",
            ) from e
    # a server bound to another address of the same port still answers the probe address
    with contextlib.suppress(OSError), socket.create_connection((probe_host(bind_host), port), timeout=1.0):
        raise LaunchError(
            f"port {port} already answers on {probe_host(bind_host)}",
            f"stop whatever listens there (`ss -ltnp 'sport = :{port}'`) or pass another --port",
        )


def served_model_names(command: list[str], model: str | None) -> list[str]:
    """The ids /v1/models will list: `--served-model-name` values if the command sets them,
    else the model as passed."""
    names: list[str] = []
    for i, tok in enumerate(command):
        flag, eq, value = tok.partition("=")
        if flag.replace("_", "-") != "--served-model-name":
            continue
        if eq:
            names = [value]
        else:
            j = i + 1
            names = []
            while j < len(command) and not command[j].startswith("-"):
                names.append(command[j])
                j += 1
    if names:
        return names
    return [model] if model else []


def model_in_command(command: list[str]) -> str | None:
    """The model a server command serves: `--model M`, `--model=M` or `serve M`."""
    for i, tok in enumerate(command):
        if tok == "--model" and i + 1 < len(command):
            return command[i + 1]
        if tok.startswith("--model="):
            return tok.split("=", 1)[1]
        if tok == "serve" and i + 1 < len(command) and not command[i + 1].startswith("-"):
            return command[i + 1]
    return None


def model_ids(body) -> list[str]:
    """The model ids a /v1/models answer lists (none when it is not that shape)."""
    data = body.get("data") if isinstance(body, dict) else None
    return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m] if isinstance(data, list) else []


def readiness_state(health, models, listed, names) -> str:
    """What the probes saw, in words (health / models: HTTP status or None; listed: the ids)."""
    if health is None:
        return "no answer on /health yet"
    if health != 200:
        return f"/health answers {health}"
    if models != 200:
        return "/health 200, /v1/models " + ("no answer" if models is None else f"answers {models}")
    return f"/health 200, /v1/models lists {listed or 'nothing'}, waiting for {names[0] if names else 'a model'}"


def probe(client: HttpClient, path: str, timeout: float):
    """(HTTP status, parsed body) of one GET; (None, None) when nothing answered."""
    r = client.probe(path, timeout)
    return (None, None) if r is None else (r.status, r.body)

