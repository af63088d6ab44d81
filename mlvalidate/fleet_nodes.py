"""A fleet's ML nodes: where they are and how to reach them.

A host's network node lists its ML nodes on its admin API (GET http://HOST:9200/admin/v1/nodes,
docs/chain-api.md, last section): entries with `id`, `host`, `inference_port`, `poc_port`,
`max_concurrent` and `models` (model id -> {"args": [...]}). Hosts without an admin API give a
file of URLs or admin-shaped entries, or URLs one by one. Every entry becomes a `NodeTarget`;
an entry that cannot give a URL (no host, a host with a port or a path of its own, a bad port,
a model id that is not text) keeps its problem and becomes one ERROR row of the fleet, never
stopping it.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from .errors import MlvalidateError

PORT_FIELDS = ("inference_port", "poc_port")
API_OF_PORT = {"inference_port": "vllm", "poc_port": "mlnode"}


class FleetError(MlvalidateError):
    """The fleet's node list cannot be had or read."""


# ----------------------------------------------------------------------------------------
# discovery
# ----------------------------------------------------------------------------------------
@dataclass
class NodeTarget:
    id: str
    url: str | None  # None: the entry could not give one (see `problem`)
    api: str = "vllm"
    models: list[str] = field(default_factory=list)
    profile: str | None = None
    source: str = "--url"
    entry: dict | None = None  # the admin-shaped entry it came from
    problem: str | None = None  # why it cannot be validated (a malformed entry)
    gpus: str | None = None  # the entry's `gpus` ("H100 x4"): the operator's word for its hardware
    mlnode_url: str | None = None  # its MLNode API (host + poc_port), whose GPU routes describe it


_HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?$")  # a DNS name or an IPv4 address


def node_url(host: str, port: int) -> str:
    """http://HOST:PORT for an admin entry's `host` (a name, an IPv4 or IPv6 address, or a URL
    whose scheme and address are kept) and the chosen port. A host that carries anything else
    — a port of its own, a path, a query, spaces — is a ValueError: the port would be ignored
    or the request sent elsewhere."""
    import ipaddress

    text = host.strip()
    scheme = "http"
    if "://" in text:  # a host written as a URL: keep its scheme and address, use the chosen port
        parts = urllib.parse.urlsplit(text)  # ValueError on a broken [IPv6] part
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"host {host!r} is not an http(s) URL")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(f"host {host!r} carries more than a scheme and an address")
        scheme, text = parts.scheme, parts.hostname or ""
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        ip = None
    if ip is not None:
        return f"{scheme}://{f'[{ip.compressed}]' if ip.version == 6 else ip.compressed}:{port}"
    if not _HOSTNAME.match(text) or ".." in text:
        hint = " (the port comes from the entry's port field)" if text.count(":") == 1 else ""
        raise ValueError(f"host {host!r} is not a host name or an IP address{hint}")
    return f"{scheme}://{text}:{port}"


def _port(v) -> int | None:
    return v if type(v) is int and 0 < v < 65536 else None


def target_from_entry(entry, index: int, port_field: str, source: str, api: str | None = None) -> NodeTarget:
    """One admin-shaped entry (or a URL string) -> a NodeTarget; a malformed entry keeps its problem."""
    from .http_client import check_url

    api_default = api or API_OF_PORT[port_field]
    if isinstance(entry, str):
        try:
            url = check_url(entry, f"node #{index + 1}")
        except MlvalidateError as e:
            return NodeTarget(id=f"node-{index + 1}", url=None, source=source, problem=e.one_line(), api=api_default)
        return NodeTarget(id=urllib.parse.urlsplit(url).netloc, url=url, api=api_default, source=source)
    if not isinstance(entry, dict):
        return NodeTarget(id=f"node-{index + 1}", url=None, source=source, api=api_default,
                          problem=f"entry #{index + 1} is a {type(entry).__name__}, not an object or a URL")
    nid = entry.get("id")
    nid = str(nid) if isinstance(nid, (str, int)) and str(nid).strip() else f"node-{index + 1}"
    models = entry.get("models")
    model_ids = [str(m) for m in models] if isinstance(models, dict) else []
    profile = entry.get("profile") if isinstance(entry.get("profile"), str) else None
    t = NodeTarget(id=nid, url=None, api=api_default, models=model_ids, profile=profile, source=source, entry=entry)
    if entry.get("gpus") is not None:
        from .serving.node_hardware import parse_gpus

        try:
            parse_gpus(str(entry["gpus"]), f"entry {nid!r}: gpus")
            t.gpus = str(entry["gpus"])
        except MlvalidateError as e:
            t.problem = e.one_line()
            return t
    if isinstance(entry.get("url"), str):  # our own shorthand in a --nodes file
        try:
            t.url = check_url(entry["url"], f"node {nid}")
        except MlvalidateError as e:
            t.problem = e.one_line()
        return t
    host, port = entry.get("host"), _port(entry.get(port_field))
    if not isinstance(host, str) or not host.strip():
        t.problem = f"entry {nid!r} has no host"
    elif port is None:
        t.problem = f"entry {nid!r} has no valid {port_field} (got {entry.get(port_field)!r})"
    else:
        try:
            t.url = check_url(node_url(host, port), f"node {nid}")
        except ValueError as e:
            t.problem = f"entry {nid!r}: {e}"
        except MlvalidateError as e:
            t.problem = e.one_line()
        mlnode_port = _port(entry.get("poc_port"))
        if t.url and mlnode_port is not None:  # the MLNode API beside it: its GPU routes describe the node
            t.mlnode_url = t.url if port_field == "poc_port" else node_url(host, mlnode_port)
    bad = [m for m in model_ids if not m.isprintable() or not m.strip()]
    if bad and t.problem is None:
        t.problem = f"entry {nid!r} lists a model id that is not printable text: {bad[0]!r}"
    return t


def _entries(doc, where: str) -> list:
    if isinstance(doc, dict):
        for key in ("nodes", "items", "data"):  # a list wrapped in an object
            if isinstance(doc.get(key), list):
                return doc[key]
        raise FleetError(f"{where}: an object without a list of nodes", "expected a JSON list of node entries")
    if not isinstance(doc, list):
        raise FleetError(f"{where}: not a list of nodes (a {type(doc).__name__})", "expected a JSON list of node entries")
    return doc


def unique_ids(targets: list[NodeTarget]) -> list[NodeTarget]:
    """Every id distinct: a repeated id gets '#2', '#3'... (skipping any already taken)."""
    taken: set[str] = set()
    for t in targets:
        nid, k = t.id, 1
        while nid in taken:
            k += 1
            nid = f"{t.id}#{k}"
        t.id = nid
        taken.add(nid)
    return targets


def discover_admin(admin_url: str, port_field: str = "inference_port", *, api: str | None = None,
                   timeout_s: float = 30.0) -> list[NodeTarget]:
    """GET ADMIN/admin/v1/nodes -> one target per entry."""
    from .http_client import HttpClient, check_url

    base = check_url(admin_url, "--admin")
    path = "" if base.endswith("/admin/v1/nodes") else "/admin/v1/nodes"
    http = HttpClient(base, request_timeout=timeout_s, deadline_s=timeout_s, connect_grace_s=min(10.0, timeout_s))
    try:
        r = http.request("GET", path)
    except MlvalidateError as e:
        raise FleetError(f"the admin API at {base} did not answer: {e.one_line()}",
                         "is the network node's admin API (port 9200) reachable from here? or pass --nodes/--url") from None
    if r.status != 200:
        raise FleetError(f"GET {base}{path} answered HTTP {r.status}: {r.detail()}",
                         "check the admin URL (http://HOST:9200)")
    where = f"GET {base}{path}"
    return unique_ids([target_from_entry(e, i, port_field, "admin", api) for i, e in enumerate(_entries(r.body, where))])


def load_nodes_file(path: str | Path, port_field: str = "inference_port", *, api: str | None = None) -> list[NodeTarget]:
    """A JSON or YAML list of URLs or admin-shaped entries (also {"nodes": [...]})."""
    import yaml

    from .jsonio import JsonProblem, document_problem, loads

    p = Path(path)
    hint = "pass a JSON or YAML list of node URLs or admin entries"
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise FleetError(f"--nodes {p}: cannot read it ({getattr(e, 'strerror', None) or e})", hint) from None
    try:
        doc = loads(text)
    except JsonProblem as e:
        if not str(e).startswith("not valid JSON"):  # JSON, but unusable: say so, not "not YAML"
            raise FleetError(f"--nodes {p}: {e}", hint) from None
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise FleetError(f"--nodes {p}: neither JSON nor YAML ({' '.join(str(e).split())[:200]})", hint) from None
        except (RecursionError, ValueError) as e:
            raise FleetError(f"--nodes {p}: not a usable YAML document ({type(e).__name__})", hint) from None
        problem = document_problem(doc)
        if problem:
            raise FleetError(f"--nodes {p}: {problem}", hint) from None
    return unique_ids([target_from_entry(e, i, port_field, "nodes-file", api)
                       for i, e in enumerate(_entries(doc, f"--nodes {p}"))])
