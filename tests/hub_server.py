"""An in-memory, Hub-compatible HTTP server for tests, and the pytest fixtures that start it.

The real, unpatched ``huggingface_hub`` client (and transformers / timm on top of it) talks to
:class:`LocalHub` through ``HF_ENDPOINT``. The client reads that variable when it is imported, so
``tests/conftest.py`` calls :func:`configure_hub_environment` before anything imports it.

Implemented surface (models, datasets and spaces alike):

* upload: ``POST /api/repos/create``, ``DELETE /api/repos/delete``, ``PUT /api/{type}s/{repo}/settings``,
  ``POST /api/validate-yaml``, ``POST /api/{type}s/{repo}/preupload/{rev}``, the LFS batch API
  ``POST /{repo}.git/info/lfs/objects/batch`` with the ``PUT`` and ``verify`` hrefs it returns, and
  ``POST /api/{type}s/{repo}/commit/{rev}`` (NDJSON ``header``/``file``/``lfsFile``/``deletedFile``/
  ``deletedFolder``); branches and tags (``/branch/{name}``, ``/tag/{rev}``);
* download: ``GET /api/{type}s/{repo}[/revision/{rev}]``, ``/tree/{rev}[/{path}]``, ``/paths-info/{rev}``,
  ``/commits/{rev}``, ``/refs`` and ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` with byte ranges;
* errors carry the ``X-Error-Code`` header the client maps to typed errors.

Every commit is an immutable snapshot with a fresh 40-hex id, so old revisions stay downloadable.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest

logger = logging.getLogger(__name__)

DEFAULT_USER = "local-user"
DUMMY_TOKEN = "hf_local_hub_dummy_token"
LFS_MIN_SIZE = 10 * 1024 * 1024
LFS_SUFFIXES = (
    ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".npy", ".npz", ".pkl",
    ".pickle", ".gz", ".zip", ".tar", ".zst", ".xz", ".7z", ".arrow", ".parquet", ".joblib", ".tflite", ".gguf",
)
GITATTRIBUTES = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES)
_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_SHA_RE = re.compile(r"[0-9a-f]{5,40}")


# --------------------------------------------------------------------------------------------------
# Storage model
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    """One file version: its bytes, whether it is stored in LFS, and the ids the Hub reports for it."""

    data: bytes
    lfs: bool
    git_oid: str  # git blob sha1 of the content (regular) or of the LFS pointer (LFS)
    sha256: str
    pointer_size: int

    @classmethod
    def make(cls, data: bytes, *, lfs: bool) -> Blob:
        """Build a blob and compute its ids the way the Hub does."""
        sha256 = hashlib.sha256(data).hexdigest()
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()
        return cls(data=data, lfs=lfs, git_oid=git_blob_sha1(pointer if lfs else data), sha256=sha256,
                   pointer_size=len(pointer))

    @property
    def etag(self) -> str:
        """The ETag the client expects: sha256 for LFS files, git blob sha1 for regular ones."""
        return self.sha256 if self.lfs else self.git_oid


@dataclass(frozen=True)
class Commit:
    """An immutable snapshot of a repository."""

    oid: str
    parent: str | None
    title: str
    message: str
    author: str
    date: datetime
    files: Mapping[str, Blob]


@dataclass
class Repo:
    """A repository: its commits, refs and the LFS objects uploaded to it."""

    repo_type: str
    repo_id: str
    private: bool
    created_at: datetime
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)


class HubError(Exception):
    """An error answered to the client as JSON with the ``X-Error-Code`` header."""

    def __init__(self, status: int, message: str, code: str | None = None,
                 headers: Mapping[str, str] | None = None, extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers, self.extra = dict(headers or {}), dict(extra or {})


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob holding ``data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs_path(path: str, size: int) -> bool:
    """Whether the Hub would store this file in LFS (binary suffixes and files of 10 MB or more)."""
    return path.lower().endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE


def iso_date(value: datetime) -> str:
    """Format a date as the Hub does: ``2024-05-01T12:34:56.789Z``."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _not_found(kind: str, message: str, **headers: str) -> HubError:
    return HubError(404, message, kind, headers)


@dataclass
class _Fault:
    times: int
    status: int | None
    body: bytes
    path_contains: str | None
    delay: float


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that can drop every open keep-alive connection on stop."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, hub: LocalHub, address: tuple[str, int], sock: socket.socket | None) -> None:
        self.hub = hub
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler, bind_and_activate=sock is None)
        if sock is not None:  # adopt a socket reserved (bound, not listening) by configure_hub_environment
            self.socket.close()
            self.socket = sock
            self.server_address = sock.getsockname()[:2]
            self.server_activate()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Close every open client connection, so that pooled keep-alive sockets fail like a dead server."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class LocalHub:
    """An in-memory Hub. Start it, point ``HF_ENDPOINT`` at :attr:`url`, and use the real client.

    Args:
        host (`str`, *optional*, defaults to ``"127.0.0.1"``): address to listen on.
        port (`int`, *optional*, defaults to 0): port; 0 picks a free one on the first start.
        sock (`socket.socket`, *optional*): a bound, not yet listening socket to adopt on the first start.
        default_user (`str`, *optional*): namespace used when a repo is created without one.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, sock: socket.socket | None = None,
                 default_user: str = DEFAULT_USER) -> None:
        self.host, self.port, self.default_user = host, port, default_user
        self._reserved = sock
        if sock is not None:
            self.host, self.port = sock.getsockname()[:2]
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], Repo] = {}
        self._log: list[dict[str, Any]] = []
        self._faults: list[_Fault] = []
        self._errors: list[str] = []
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The endpoint, e.g. ``http://127.0.0.1:53817`` (valid once started, stable across restarts)."""
        return f"http://{self.host}:{self.port}"

    @property
    def is_running(self) -> bool:
        """Whether the server accepts connections."""
        return self._server is not None

    def start(self) -> LocalHub:
        """Start serving (on the same port as before after a :meth:`stop`). Returns ``self``."""
        with self._lock:
            if self._server is not None:
                return self
            sock, self._reserved = self._reserved, None
            self._server = _HTTPServer(self, (self.host, self.port), sock)
            self.host, self.port = self._server.server_address[:2]
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name=f"local-hub-{self.port}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open connections: clients then get "connection refused". Data is kept."""
        with self._lock:
            server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.drop_connections()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- request log and faults -----------------------------------------------------------------

    @property
    def requests(self) -> list[dict[str, Any]]:
        """A copy of the request log: dicts with method, path, query, range, status, bytes_sent, authorized."""
        with self._lock:
            return [dict(entry) for entry in self._log]

    def find_requests(self, *, method: str | None = None, path_contains: str | None = None) -> list[dict[str, Any]]:
        """The logged requests matching a method and/or a substring of the (decoded) path."""
        return [entry for entry in self.requests
                if (method is None or entry["method"] == method)
                and (path_contains is None or path_contains in entry["path"])]

    def clear_log(self) -> None:
        """Forget the logged requests."""
        with self._lock:
            self._log.clear()

    @property
    def server_errors(self) -> list[str]:
        """Tracebacks of exceptions raised while handling requests (a server bug, not a client error)."""
        with self._lock:
            return list(self._errors)

    def inject_fault(self, times: int = 1, *, status: int | None = 500, body: bytes = b"Internal Server Error",
                     path_contains: str | None = None, delay: float = 0.0) -> None:
        """Answer the next ``times`` matching requests with ``status`` and a non-JSON ``body``.

        ``status=None`` closes the connection without any answer instead. ``delay`` seconds are waited
        first (a hung server, to test client timeouts). ``path_contains`` restricts the fault to requests
        whose decoded path contains that string.
        """
        with self._lock:
            self._faults.append(_Fault(times, status, body, path_contains, delay))

    def clear_faults(self) -> None:
        """Cancel pending injected faults."""
        with self._lock:
            self._faults.clear()

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.path_contains is None or fault.path_contains in path:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._log.append(entry)

    def _record_error(self, text: str) -> None:
        with self._lock:
            self._errors.append(text)

    # ---- direct repository access (no client involved) ------------------------------------------

    def reset(self) -> None:
        """Delete every repository."""
        with self._lock:
            self._repos.clear()

    def create_repo(self, repo_id: str, *, repo_type: str = "model", private: bool = False,
                    exist_ok: bool = False) -> Repo:
        """Create a repository with the Hub's "initial commit" (a ``.gitattributes`` file)."""
        with self._lock:
            key = (repo_type, repo_id)
            if key in self._repos:
                if exist_ok:
                    return self._repos[key]
                url = f"{self.url}/{_URL_PREFIX[repo_type]}{repo_id}"
                raise HubError(409, f"You already created this {repo_type} repo", extra={"url": url})
            now = datetime.now(timezone.utc)
            repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=now)
            self._repos[key] = repo
            self._new_commit(repo, "main", {".gitattributes": Blob.make(GITATTRIBUTES.encode(), lfs=False)},
                             title="initial commit", author="system")
            return repo

    def repo(self, repo_id: str, *, repo_type: str = "model") -> Repo:
        """The stored repository (raises ``KeyError`` when missing)."""
        with self._lock:
            return self._repos[(repo_type, repo_id)]

    def set_private(self, repo_id: str, private: bool, *, repo_type: str = "model") -> None:
        """Make a repository private (anonymous requests then get 401 RepoNotFound) or public."""
        self.repo(repo_id, repo_type=repo_type).private = private

    def put_file(self, repo_id: str, path: str, data: bytes, *, message: str | None = None, revision: str = "main",
                 repo_type: str = "model", author: str = DEFAULT_USER) -> str:
        """Commit ``data`` at ``path`` directly (e.g. a thief editing a file). Returns the new commit id."""
        blob = Blob.make(data, lfs=is_lfs_path(path, len(data)))
        return self.commit(repo_id, {path: blob}, message=message or f"Upload {path}", revision=revision,
                           repo_type=repo_type, author=author)

    def delete_file(self, repo_id: str, path: str, *, message: str | None = None, revision: str = "main",
                    repo_type: str = "model", author: str = DEFAULT_USER) -> str:
        """Delete ``path`` in a new commit. Returns the new commit id."""
        return self.commit(repo_id, {}, deletions=[path], message=message or f"Delete {path}", revision=revision,
                           repo_type=repo_type, author=author)

    def commit(self, repo_id: str, additions: Mapping[str, Blob], *, deletions: Iterable[str] = (),
               folder_deletions: Iterable[str] = (), message: str, description: str = "", revision: str = "main",
               repo_type: str = "model", author: str = DEFAULT_USER, parent_commit: str | None = None) -> str:
        """Apply additions and deletions on branch ``revision`` as one new commit. Returns its id."""
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            if revision not in repo.branches:
                raise _not_found("RevisionNotFound", f"Invalid rev id: {revision}")
            head = repo.branches[revision]
            if parent_commit is not None and not head.startswith(parent_commit):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(repo.commits[head].files)
            for path in deletions:
                if files.pop(path, None) is None:
                    raise _not_found("EntryNotFound", f"A file with this name doesn't exist: {path}")
            for folder in folder_deletions:
                prefix = folder.rstrip("/") + "/"
                doomed = [path for path in files if path.startswith(prefix)]
                if not doomed:
                    raise _not_found("EntryNotFound", f"A folder with this name doesn't exist: {folder}")
                for path in doomed:
                    del files[path]
            files.update(additions)
            return self._new_commit(repo, revision, files, title=message, message=description, author=author).oid

    def read_file(self, repo_id: str, path: str, *, revision: str = "main", repo_type: str = "model") -> bytes:
        """The bytes of ``path`` at ``revision`` (branch, tag or commit id)."""
        with self._lock:
            commit = self._resolve(self._get_repo(repo_type, repo_id), revision)
            return commit.files[path].data

    def head(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> str:
        """The commit id ``revision`` points to."""
        with self._lock:
            return self._resolve(self._get_repo(repo_type, repo_id), revision).oid

    # ---- internals shared with the request handler ----------------------------------------------

    def _get_repo(self, repo_type: str, repo_id: str, *, authorized: bool = True) -> Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not authorized):
            status = 404 if repo is None and authorized else 401
            raise HubError(status, "Repository not found", "RepoNotFound")
        return repo

    def _resolve(self, repo: Repo, revision: str) -> Commit:
        oid = repo.branches.get(revision) or repo.tags.get(revision)
        if oid is None and revision.startswith("refs/heads/"):
            oid = repo.branches.get(revision[len("refs/heads/"):])
        if oid is None and _SHA_RE.fullmatch(revision):
            matches = [sha for sha in repo.commits if sha.startswith(revision)]
            oid = matches[0] if len(matches) == 1 else None
        if oid is None:
            raise _not_found("RevisionNotFound", f"Invalid rev id: {revision}")
        return repo.commits[oid]

    def _new_commit(self, repo: Repo, branch: str, files: dict[str, Blob], *, title: str, message: str = "",
                    author: str = DEFAULT_USER) -> Commit:
        parent = repo.branches.get(branch)
        date = datetime.now(timezone.utc)
        if parent is not None:  # strictly increasing dates keep "newest first" unambiguous
            date = max(date, repo.commits[parent].date + timedelta(milliseconds=1))
        oid = hashlib.sha1(f"{repo.repo_id}\0{parent}\0{title}\0{date}\0{uuid.uuid4()}".encode()).hexdigest()
        commit = Commit(oid=oid, parent=parent, title=title, message=message, author=author, date=date, files=files)
        repo.commits[oid] = commit
        repo.branches[branch] = oid
        return commit


# --------------------------------------------------------------------------------------------------
# HTTP layer
# --------------------------------------------------------------------------------------------------

_REPO = r"(?:(?P<prefix>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)"
_API = r"/api/(?P<kind>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (method, re.compile(pattern), name) for method, pattern, name in [
        ("GET", r"/api/whoami-v2", "whoami"),
        ("POST", r"/api/repos/create", "create_repo"),
        ("DELETE", r"/api/repos/delete", "delete_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("PUT", _API + r"/settings", "settings"),
        ("POST", _API + r"/preupload/(?P<rev>[^/]+)", "preupload"),
        ("POST", _API + r"/commit/(?P<rev>[^/]+)", "commit"),
        ("GET", _API, "info"),
        ("GET", _API + r"/revision/(?P<rev>[^/]+)", "info"),
        ("GET", _API + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", "tree"),
        ("POST", _API + r"/paths-info/(?P<rev>[^/]+)", "paths_info"),
        ("GET", _API + r"/commits/(?P<rev>[^/]+)", "commits"),
        ("GET", _API + r"/refs", "refs"),
        ("POST", _API + r"/branch/(?P<name>[^/]+)", "create_branch"),
        ("DELETE", _API + r"/branch/(?P<name>[^/]+)", "delete_branch"),
        ("POST", _API + r"/tag/(?P<rev>[^/]+)", "create_tag"),
        ("DELETE", _API + r"/tag/(?P<name>[^/]+)", "delete_tag"),
        ("POST", r"/" + _REPO + r"\.git/info/lfs/objects/batch", "lfs_batch"),
        ("PUT", r"/__lfs/(?P<kind>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)/(?P<oid>[0-9a-f]{64})", "lfs_put"),
        ("POST", r"/__lfs/(?P<kind>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)/verify", "lfs_verify"),
        ("GET", r"/" + _REPO + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
        ("HEAD", r"/" + _REPO + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
    ]
]
_SINGLE_SEGMENT_REPO = re.compile(r"/api/(?:models|datasets|spaces)/[^/]+(?:/revision/[^/]+)?|/[^/]+/resolve/.+")
_RANGE_RE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.IGNORECASE)


def _repo_type(groups: Mapping[str, str | None]) -> str:
    """``model``, ``dataset`` or ``space``, from an ``/api/{kind}/`` segment or a ``datasets/`` URL prefix."""
    return _REPO_TYPES[groups.get("kind") or groups.get("prefix") or "models"]


def _tree_entry(path: str, blob: Blob) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "file", "oid": blob.git_oid, "size": len(blob.data), "path": path}
    if blob.lfs:
        entry["lfs"] = {"oid": blob.sha256, "size": len(blob.data), "pointerSize": blob.pointer_size}
    return entry


def _folder_entry(commit: Commit, path: str) -> dict[str, Any]:
    oid = hashlib.sha1(f"tree\0{commit.oid}\0{path}".encode()).hexdigest()
    return {"type": "directory", "oid": oid, "size": 0, "path": path}


def _folders(files: Iterable[str]) -> set[str]:
    folders: set[str] = set()
    for path in files:
        parts = path.split("/")[:-1]
        folders.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return folders


def _card_data(readme: bytes) -> dict[str, Any] | None:
    """The YAML front matter of a model card, as the Hub reports it in ``cardData``."""
    text = readme.decode("utf-8", errors="replace")
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if match is None:
        return None
    import yaml

    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


class _Handler(BaseHTTPRequestHandler):
    """Parses a request, routes it to a ``_h_<name>`` method, answers and logs it."""

    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    # ---- plumbing -------------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        logger.debug("local hub: " + format, *args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    @property
    def hub(self) -> LocalHub:
        return self.server.hub

    def _dispatch(self) -> None:
        raw_path, _, raw_query = self.path.partition("?")
        self._logged = False
        self._query = dict(parse_qsl(raw_query, keep_blank_values=True))
        self._authorized = self.headers.get("Authorization") is not None
        self._path = unquote(raw_path)
        try:
            self._body = self._read_body()
            self._answer(raw_path, self._path)
        except ConnectionError:  # the client went away (e.g. it timed out): nothing left to answer
            self.close_connection = True
        finally:
            self._log(0, 0)

    def _log(self, status: int, bytes_sent: int) -> None:
        """Log this request once, before the client can see any answer (so tests never race the log)."""
        if not self._logged:
            self._logged = True
            self.hub._record({"method": self.command, "path": self._path, "query": self._query,
                              "range": self.headers.get("Range"), "status": status, "bytes_sent": bytes_sent,
                              "authorized": self._authorized})

    def _answer(self, raw_path: str, path: str) -> None:
        try:
            fault = self.hub._take_fault(path)
            if fault is not None:
                self._answer_fault(fault)
            else:
                self._route(raw_path)
        except HubError as error:
            self._send_error(error)
        except ConnectionError:
            raise
        except Exception as error:  # a server bug: keep the traceback for the tests, answer 500
            self.hub._record_error(traceback.format_exc())
            self._send_error(HubError(500, f"Local hub error: {error!r}"))

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _route(self, raw_path: str) -> None:
        for method, pattern, name in _ROUTES:
            if method == self.command and (match := pattern.fullmatch(raw_path)):
                groups = {key: unquote(value) if value is not None else None
                          for key, value in match.groupdict().items()}
                getattr(self, f"_h_{name}")(groups)
                return
        if _SINGLE_SEGMENT_REPO.fullmatch(raw_path):  # e.g. "gpt2": this hub only stores owner/name repos
            raise HubError(404, "Repository not found", "RepoNotFound")
        raise HubError(501, f"Not implemented by the local hub: {self.command} {raw_path}")

    def _answer_fault(self, fault: _Fault) -> None:
        if fault.delay:
            time.sleep(fault.delay)
        if fault.status is None:
            self._log(0, 0)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._send(fault.status, fault.body, {"Content-Type": "text/plain"})

    def _send(self, status: int, body: bytes, headers: Mapping[str, str] | None = None, *,
              length: int | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        send_body = self.command != "HEAD" and bool(body)
        self._log(status, len(body) if send_body else 0)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _send_json(self, data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _send_error(self, error: HubError) -> None:
        headers = {"X-Error-Message": error.message, **error.headers}
        if error.code:
            headers["X-Error-Code"] = error.code
        self._send_json({"error": error.message, **error.extra}, error.status, headers)

    def _json(self) -> Any:
        try:
            return json.loads(self._body or b"{}")
        except json.JSONDecodeError as error:
            raise HubError(400, f"Invalid JSON body: {error}") from error

    def _repo(self, groups: Mapping[str, str | None], *, write: bool = False) -> Repo:
        if write and not self._authorized:
            raise HubError(401, "Invalid username or password.")
        return self.hub._get_repo(_repo_type(groups), groups["repo"] or "", authorized=self._authorized)

    def _resolve(self, repo: Repo, revision: str | None) -> Commit:
        return self.hub._resolve(repo, revision or "main")

    # ---- account and repositories ---------------------------------------------------------------

    def _h_whoami(self, groups: Mapping[str, str | None]) -> None:
        if not self._authorized:
            raise HubError(401, "Invalid credentials in Authorization header")
        self._send_json({"type": "user", "name": self.hub.default_user, "fullname": "Local Hub User",
                         "orgs": [], "auth": {"type": "access_token", "accessToken": {"role": "write"}}})

    def _h_create_repo(self, groups: Mapping[str, str | None]) -> None:
        if not self._authorized:
            raise HubError(401, "Invalid username or password.")
        body = self._json()
        repo_id = f"{body.get('organization') or self.hub.default_user}/{body['name']}"
        repo_type = body.get("type") or "model"
        private = body.get("visibility") == "private" or bool(body.get("private"))
        self.hub.create_repo(repo_id, repo_type=repo_type, private=private)
        self._send_json({"url": f"{self.hub.url}/{_URL_PREFIX[repo_type]}{repo_id}", "name": repo_id}, 200)

    def _h_delete_repo(self, groups: Mapping[str, str | None]) -> None:
        body = self._json()
        repo_id = f"{body.get('organization') or self.hub.default_user}/{body['name']}"
        with self.hub._lock:
            self.hub._get_repo(body.get("type") or "model", repo_id, authorized=self._authorized)
            del self.hub._repos[(body.get("type") or "model", repo_id)]
        self._send_json({})

    def _h_settings(self, groups: Mapping[str, str | None]) -> None:
        repo, body = self._repo(groups, write=True), self._json()
        if "private" in body:
            repo.private = bool(body["private"])
        if "visibility" in body:
            repo.private = body["visibility"] == "private"
        self._send_json({})

    def _h_validate_yaml(self, groups: Mapping[str, str | None]) -> None:
        content = str(self._json().get("content", ""))
        match = re.match(r"^---\s*\n(.*?)\n---", content, re.DOTALL)
        if match is not None:
            import yaml

            try:
                yaml.safe_load(match.group(1))
            except yaml.YAMLError as error:
                self._send_json({"errors": [{"message": f"Invalid YAML: {error}"}], "warnings": []}, 400)
                return
        self._send_json({"errors": [], "warnings": []})

    # ---- upload ---------------------------------------------------------------------------------

    def _h_preupload(self, groups: Mapping[str, str | None]) -> None:
        if self._query.get("create_pr"):
            raise HubError(400, "create_pr is not supported by the local hub")
        repo = self._repo(groups, write=True)
        with self.hub._lock:
            files = self._resolve(repo, groups["rev"]).files
        answer = []
        for item in self._json().get("files", []):
            path, size = item["path"], int(item["size"])
            existing = files.get(path)
            remote_oid = None if existing is None else existing.sha256 if existing.lfs else existing.git_oid
            answer.append({"path": path, "uploadMode": "lfs" if is_lfs_path(path, size) else "regular",
                           "shouldIgnore": False, "oid": remote_oid})
        self._send_json({"files": answer, "commitOid": self._resolve(repo, groups["rev"]).oid})

    def _h_lfs_batch(self, groups: Mapping[str, str | None]) -> None:
        repo, body = self._repo(groups, write=True), self._json()
        if body.get("operation") != "upload":
            raise HubError(400, "The local hub only supports LFS uploads through the batch API")
        kind = f"{repo.repo_type}s"
        objects = []
        for item in body.get("objects", []):
            oid, size = item["oid"], int(item["size"])
            entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if oid not in repo.lfs_objects:
                base = f"{self.hub.url}/__lfs/{kind}/{repo.repo_id}"
                entry["actions"] = {"upload": {"href": f"{base}/{oid}"},
                                    "verify": {"href": f"{base}/verify", "header": {}}}
            objects.append(entry)
        self._send_json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                        headers={"Content-Type": "application/vnd.git-lfs+json"})

    def _h_lfs_put(self, groups: Mapping[str, str | None]) -> None:
        repo = self.hub._get_repo(_repo_type(groups), groups["repo"] or "")  # signed-URL style: no auth header
        if hashlib.sha256(self._body).hexdigest() != groups["oid"]:
            raise HubError(400, "LFS object content does not match its sha256 oid")
        with self.hub._lock:
            repo.lfs_objects[groups["oid"] or ""] = self._body
        self._send(200, b"")

    def _h_lfs_verify(self, groups: Mapping[str, str | None]) -> None:
        repo, body = self._repo(groups, write=True), self._json()
        data = repo.lfs_objects.get(body.get("oid", ""))
        if data is None or len(data) != int(body.get("size", -1)):
            raise HubError(404, "LFS object not found")
        self._send_json({"success": True})

    def _h_commit(self, groups: Mapping[str, str | None]) -> None:
        if self._query.get("create_pr"):
            raise HubError(400, "create_pr is not supported by the local hub")
        repo = self._repo(groups, write=True)
        header: dict[str, Any] = {}
        additions: dict[str, Blob] = {}
        deletions: list[str] = []
        folders: list[str] = []
        for line in self._body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value", {})
            if key == "header":
                header = value
            elif key == "file":
                additions[value["path"]] = Blob.make(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                data = repo.lfs_objects.get(value["oid"])
                if data is None:
                    raise HubError(422, f"LFS file {value['path']} ({value['oid']}) was not uploaded")
                additions[value["path"]] = Blob.make(data, lfs=True)
            elif key == "deletedFile":
                deletions.append(value["path"])
            elif key == "deletedFolder":
                folders.append(value["path"])
            else:
                raise HubError(400, f"Unsupported commit operation: {key}")
        oid = self.hub.commit(repo.repo_id, additions, deletions=deletions, folder_deletions=folders,
                              message=header.get("summary") or "Update", description=header.get("description", ""),
                              revision=groups["rev"] or "main", repo_type=repo.repo_type,
                              parent_commit=header.get("parentCommit"), author=self.hub.default_user)
        commit_url = f"{self.hub.url}/{_URL_PREFIX[repo.repo_type]}{repo.repo_id}/commit/{oid}"
        self._send_json({"success": True, "commitOid": oid, "commitUrl": commit_url, "hookOutput": "",
                         "pullRequestUrl": None})

    # ---- refs -----------------------------------------------------------------------------------

    def _h_create_branch(self, groups: Mapping[str, str | None]) -> None:
        repo, body = self._repo(groups, write=True), self._json()
        with self.hub._lock:
            if groups["name"] in repo.branches:
                raise HubError(409, f"Reference already exists: refs/heads/{groups['name']}")
            repo.branches[groups["name"] or ""] = self._resolve(repo, body.get("startingPoint")).oid
        self._send_json({})

    def _h_delete_branch(self, groups: Mapping[str, str | None]) -> None:
        repo = self._repo(groups, write=True)
        with self.hub._lock:
            if repo.branches.pop(groups["name"] or "", None) is None:
                raise _not_found("RevisionNotFound", f"Invalid rev id: {groups['name']}")
        self._send_json({})

    def _h_create_tag(self, groups: Mapping[str, str | None]) -> None:
        repo, body = self._repo(groups, write=True), self._json()
        with self.hub._lock:
            if body["tag"] in repo.tags:
                raise HubError(409, f"Tag already exists: {body['tag']}")
            repo.tags[body["tag"]] = self._resolve(repo, groups["rev"]).oid
        self._send_json({})

    def _h_delete_tag(self, groups: Mapping[str, str | None]) -> None:
        repo = self._repo(groups, write=True)
        with self.hub._lock:
            if repo.tags.pop(groups["name"] or "", None) is None:
                raise _not_found("RevisionNotFound", f"Invalid rev id: {groups['name']}")
        self._send_json({})

    def _h_refs(self, groups: Mapping[str, str | None]) -> None:
        repo = self._repo(groups)
        with self.hub._lock:
            branches = [{"name": name, "ref": f"refs/heads/{name}", "targetCommit": oid}
                        for name, oid in sorted(repo.branches.items())]
            tags = [{"name": name, "ref": f"refs/tags/{name}", "targetCommit": oid}
                    for name, oid in sorted(repo.tags.items())]
        self._send_json({"branches": branches, "converts": [], "tags": tags, "pullRequests": []})

    # ---- download -------------------------------------------------------------------------------

    def _h_info(self, groups: Mapping[str, str | None]) -> None:
        repo = self._repo(groups)
        with self.hub._lock:
            commit = self._resolve(repo, groups.get("rev"))
        with_blobs = self._query.get("blobs", "").lower() in ("1", "true")
        siblings = []
        for path, blob in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if with_blobs:
                sibling.update(size=len(blob.data), blobId=blob.git_oid)
                if blob.lfs:
                    sibling["lfs"] = {"sha256": blob.sha256, "size": len(blob.data), "pointerSize": blob.pointer_size}
            siblings.append(sibling)
        card = _card_data(commit.files["README.md"].data) if "README.md" in commit.files else None
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0], "sha": commit.oid, "lastModified": iso_date(commit.date),
            "createdAt": iso_date(repo.created_at), "private": repo.private, "gated": False, "disabled": False,
            "downloads": 0, "likes": 0, "tags": list((card or {}).get("tags") or []), "siblings": siblings,
            "usedStorage": sum(len(blob.data) for blob in commit.files.values()),
        }
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
            if card is not None:
                info["cardData"] = card
                if card.get("library_name"):
                    info["library_name"] = card["library_name"]
        self._send_json(info)

    def _h_tree(self, groups: Mapping[str, str | None]) -> None:
        repo = self._repo(groups)
        with self.hub._lock:
            commit = self._resolve(repo, groups["rev"])
        base = (groups.get("path") or "").strip("/")
        prefix = f"{base}/" if base else ""
        recursive = self._query.get("recursive", "").lower() in ("1", "true")
        files = {path: blob for path, blob in commit.files.items() if path.startswith(prefix)}
        folders = {path for path in _folders(files) if path.startswith(prefix)}
        if base and not files:
            raise _not_found("EntryNotFound", f"{base} does not exist on {groups['rev']}",
                             **{"X-Repo-Commit": commit.oid})
        entries = [_tree_entry(path, blob) for path, blob in files.items()]
        entries += [_folder_entry(commit, path) for path in folders]
        if not recursive:
            depth = prefix.count("/")
            entries = [entry for entry in entries if entry["path"].count("/") == depth]
        self._send_json(sorted(entries, key=lambda entry: entry["path"]))

    def _h_paths_info(self, groups: Mapping[str, str | None]) -> None:
        repo = self._repo(groups)
        with self.hub._lock:
            commit = self._resolve(repo, groups["rev"])
        if self.headers.get("Content-Type", "").startswith("application/json"):
            paths = list(self._json().get("paths", []))
        else:
            paths = [value for key, value in parse_qsl(self._body.decode()) if key == "paths"]
        folders = _folders(commit.files)
        answer = []
        for path in paths:
            if path in commit.files:
                answer.append(_tree_entry(path, commit.files[path]))
            elif path.strip("/") in folders:
                answer.append(_folder_entry(commit, path.strip("/")))
        self._send_json(answer)

    def _h_commits(self, groups: Mapping[str, str | None]) -> None:
        repo = self._repo(groups)
        items = []
        with self.hub._lock:
            commit: Commit | None = self._resolve(repo, groups["rev"])
            while commit is not None:
                items.append({"id": commit.oid, "title": commit.title, "message": commit.message,
                              "date": iso_date(commit.date), "authors": [{"user": commit.author, "avatar": None}]})
                commit = repo.commits[commit.parent] if commit.parent else None
        self._send_json(items)

    def _h_resolve(self, groups: Mapping[str, str | None]) -> None:
        repo = self._repo(groups)
        with self.hub._lock:
            commit = self._resolve(repo, groups["rev"])
        blob = commit.files.get(groups["path"] or "")
        if blob is None:
            raise _not_found("EntryNotFound", "Entry not found", **{"X-Repo-Commit": commit.oid})
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{blob.etag}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if blob.lfs:
            headers.update({"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(len(blob.data))})
        self._send_range(blob.data, headers)

    def _send_range(self, data: bytes, headers: dict[str, str]) -> None:
        requested = self.headers.get("Range")
        match = _RANGE_RE.fullmatch(requested) if requested and self.command == "GET" else None
        if match is None or match.group(1) == match.group(2) == "":
            self._send(200, data, headers, length=len(data))
            return
        size, first, last = len(data), match.group(1), match.group(2)
        start = int(first) if first else max(size - int(last), 0)
        end = min(int(last), size - 1) if first and last else size - 1
        if start >= size or start > end:
            self._send(416, b"", {**headers, "Content-Range": f"bytes */{size}"})
            return
        self._send(206, data[start: end + 1], {**headers, "Content-Range": f"bytes {start}-{end}/{size}"})


# --------------------------------------------------------------------------------------------------
# Environment and fixtures
# --------------------------------------------------------------------------------------------------

_RESERVED: socket.socket | None = None
_CLEARED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ASSETS_CACHE",
                "HUGGINGFACE_ASSETS_CACHE", "HF_XET_CACHE", "HF_TOKEN_PATH", "HUGGINGFACE_HUB_TOKEN",
                "HUGGINGFACE_CO_STAGING")


def configure_hub_environment(environ: dict[str, str] | None = None) -> int:
    """Reserve a loopback port and point the Hub client at it; call before ``huggingface_hub`` is imported.

    Sets ``HF_ENDPOINT``, ``HF_HUB_DISABLE_XET``, a dummy ``HF_TOKEN``, a fresh temporary ``HF_HOME``
    (removed at exit) and ``HF_HUB_DISABLE_TELEMETRY``, and removes variables that would redirect the cache
    or switch the client offline. The port stays reserved (bound, refusing connections) until
    :func:`local_hub` starts the server on it. Returns the port.
    """
    global _RESERVED
    env = os.environ if environ is None else environ
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    if _RESERVED is not None:
        _RESERVED.close()
    _RESERVED = sock
    port = sock.getsockname()[1]
    home = tempfile.mkdtemp(prefix="hlv-hf-home-")
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    for name in _CLEARED_ENV:
        env.pop(name, None)
    env.update({"HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": DUMMY_TOKEN,
                "HF_HOME": home, "HF_HUB_DISABLE_TELEMETRY": "1"})
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return port


def _check_client_endpoint(hub: LocalHub) -> None:
    """Fail loudly when ``huggingface_hub`` was imported before the environment pointed it at ``hub``."""
    if "huggingface_hub" not in sys.modules:
        return
    from huggingface_hub import constants

    if constants.ENDPOINT != hub.url:
        pytest.fail(f"huggingface_hub was imported with ENDPOINT={constants.ENDPOINT!r}, not the local hub "
                    f"{hub.url!r}: call configure_hub_environment() before anything imports huggingface_hub "
                    "(tests/conftest.py does this first).", pytrace=False)


@pytest.fixture(scope="session")
def local_hub() -> Iterator[LocalHub]:
    """The session's :class:`LocalHub`, listening on the port in ``HF_ENDPOINT`` (one per xdist worker)."""
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT", ""))
    if endpoint.hostname != "127.0.0.1" or endpoint.port is None:
        pytest.fail("HF_ENDPOINT does not point at a loopback port: configure_hub_environment() was not called",
                    pytrace=False)
    sock = _RESERVED if _RESERVED is not None and _RESERVED.getsockname()[1] == endpoint.port else None
    hub = LocalHub(port=endpoint.port, sock=sock).start()
    _check_client_endpoint(hub)
    yield hub
    hub.stop()


@pytest.fixture
def fresh_hub(local_hub: LocalHub) -> Iterator[LocalHub]:
    """The session hub, running, with an empty request log and no pending faults; restarted after the test."""
    local_hub.start()
    local_hub.clear_faults()
    local_hub.clear_log()
    yield local_hub
    local_hub.clear_faults()
    local_hub.start()


def _safe_name(text: str, limit: int = 40) -> str:
    name = re.sub(r"[^A-Za-z0-9_]+", "-", text).strip("-_")[:limit].strip("-_")
    return re.sub(r"-{2,}", "-", name) or "test"


@pytest.fixture
def hub_repo_id(fresh_hub: LocalHub, request: pytest.FixtureRequest) -> str:
    """A unique ``"local-user/<test name>-<random>"`` repo id (not created yet) on the running local hub."""
    return f"{DEFAULT_USER}/{_safe_name(request.node.name)}-{uuid.uuid4().hex[:8]}"


__all__ = ["Blob", "Commit", "HubError", "LocalHub", "Repo", "configure_hub_environment", "fresh_hub",
           "git_blob_sha1", "hub_repo_id", "is_lfs_path", "local_hub"]
