"""A tiny Hugging Face Hub over loopback, for pull tests (no internet).

Serves, for one repo at one commit, exactly the endpoints huggingface_hub 2.x calls for
`HfApi.model_info(files_metadata=True)` and `snapshot_download(local_dir=...)`:

    GET  /api/models/{repo}/revision/{rev}?blobs=True   model info: sha + siblings with sizes
    GET  /api/models/{repo}/tree/{rev}?recursive=True    tree listing (one page, no Link header)
    HEAD /{repo}/resolve/{rev}/{path}                    ETag, X-Repo-Commit, Content-Length
    GET  /{repo}/resolve/{rev}/{path}                    the bytes; `Range: bytes=a-[b]` -> 206

No Xet headers (X-Xet-Hash, xet-auth links) and no `xetHash` in the tree, so the client uses
plain HTTP even with hf_xet installed. Faults for tests: `drop_once` (files whose first GET
sends the full Content-Length, then half the body, then closes the connection),
`not_found` (answer 404 RevisionNotFound to everything). `branches` (e.g. {"main"}) are
names that resolve to the commit, as a branch does on the hub (Gonka's MLNode asks for "main"
when no commit is pinned); by default only the commit itself is known. Every request is logged
in `requests` as (method, path-without-query, Range header or None).
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


class FakeHub:
    def __init__(self, files: dict[str, bytes], repo: str, commit: str, branches: set[str] | None = None):
        self.files = dict(files)
        self.repo = repo
        self.commit = commit
        self.branches = set(branches or ())
        self.drop_once: set[str] = set()
        self.not_found = False
        self.requests: list[tuple[str, str, str | None]] = []
        self._dropped: set[str] = set()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @classmethod
    def from_dir(cls, root: str | Path, repo: str, commit: str, branches: set[str] | None = None) -> "FakeHub":
        root = Path(root)
        files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
        return cls(files, repo, commit, branches)

    def knows(self, rev: str) -> bool:
        return not self.not_found and (rev == self.commit or rev in self.branches)

    # -- lifecycle --------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "FakeHub":
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    # -- what the tests look at -------------------------------------------------------
    def gets(self, path: str | None = None) -> list[tuple[str, str, str | None]]:
        """GET requests of resolve URLs (downloads), optionally of one file."""
        prefix = f"/{self.repo}/resolve/"
        out = [r for r in self.requests if r[0] == "GET" and r[1].startswith(prefix)]
        return [r for r in out if path is None or r[1].endswith("/" + path)]

    # -- metadata ---------------------------------------------------------------------
    @staticmethod
    def is_lfs(path: str) -> bool:
        return path.endswith(".safetensors")

    def etag(self, path: str) -> str:
        data = self.files[path]
        if self.is_lfs(path):
            return hashlib.sha256(data).hexdigest()
        return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()  # git blob id

    def siblings(self) -> list[dict]:
        out = []
        for path, data in self.files.items():
            entry = {"rfilename": path, "size": len(data), "blobId": self.etag(path)}
            if self.is_lfs(path):
                entry["lfs"] = {"size": len(data), "sha256": self.etag(path), "pointerSize": 134}
            out.append(entry)
        return out

    def tree(self) -> list[dict]:
        out = []
        for path, data in self.files.items():
            entry = {"type": "file", "path": path, "size": len(data), "oid": self.etag(path)}
            if self.is_lfs(path):
                entry["lfs"] = {"oid": self.etag(path), "size": len(data), "pointerSize": 134}
            out.append(entry)
        return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stall per answer
    hub: FakeHub

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    # -----------------------------------------------------------------------------------
    def _send(self, status: int, headers: dict[str, str], body: bytes = b"", send_body: bool = True) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _json(self, obj: object, send_body: bool) -> None:
        self._send(200, {"Content-Type": "application/json"}, json.dumps(obj).encode(), send_body)

    def _error(self, status: int, code: str, message: str, send_body: bool) -> None:
        body = json.dumps({"error": message}).encode()
        headers = {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message}
        self._send(status, headers, body, send_body)

    def _serve(self, body: bool) -> None:
        hub = self.hub
        url = urlsplit(self.path)
        path = unquote(url.path)
        with hub._lock:
            hub.requests.append((self.command, path, self.headers.get("Range")))
        api = f"/api/models/{hub.repo}/"
        resolve = f"/{hub.repo}/resolve/"
        if path.startswith(api):
            kind, _, rest = path[len(api) :].partition("/")
            rev = rest.split("/", 1)[0]
            if not hub.knows(rev):
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", body)
            if kind == "revision":
                info = {"id": hub.repo, "modelId": hub.repo, "sha": hub.commit, "private": False,
                        "gated": False, "disabled": False, "siblings": hub.siblings()}  # fmt: skip
                return self._json(info, body)
            if kind == "tree":
                return self._json(hub.tree(), body)
            return self._error(404, "EntryNotFound", f"no such API route {path}", body)
        if path.startswith(resolve):
            rev, _, file = path[len(resolve) :].partition("/")
            if not hub.knows(rev):
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", body)
            if file not in hub.files:
                return self._error(404, "EntryNotFound", f"{file} does not exist at {rev}", body)
            return self._file(file, body)
        return self._error(404, "RepoNotFound", f"Repository not found: {path}", body)

    def _file(self, file: str, body: bool) -> None:
        hub = self.hub
        data = hub.files[file]
        headers = {
            "ETag": f'"{hub.etag(file)}"',
            "X-Repo-Commit": hub.commit,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        status, part = 200, data
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            first, _, last = rng[len("bytes=") :].partition("-")
            begin = int(first)
            end = int(last) if last else len(data) - 1
            status, part = 206, data[begin : end + 1]
            headers["Content-Range"] = f"bytes {begin}-{end}/{len(data)}"
        if not body:
            return self._send(status, headers, part, send_body=False)
        with hub._lock:
            drop = file in hub.drop_once and file not in hub._dropped
            if drop:
                hub._dropped.add(file)
        if not drop:
            return self._send(status, headers, part)
        # announce the whole body, send half of it, hang up
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(part)))
        self.end_headers()
        self.wfile.write(part[: len(part) // 2])
        self.wfile.flush()
        self.close_connection = True
