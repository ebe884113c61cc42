"""The local Hub's server object: start, stop on the same port, request log, faults, direct repo edits."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta, timezone
from http.server import ThreadingHTTPServer
from typing import Any

from .handler import _Handler
from .store import (
    _NAME_RE,
    _SHA_RE,
    DEFAULT_TOKEN,
    DEFAULT_USER,
    GITATTRIBUTES,
    Blob,
    Commit,
    HubError,
    Repo,
    _Fault,
    is_lfs_path,
)

_SERVING: dict[int, LocalHub] = {}  # port → the hub this process serves there


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)

# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that knows its open connections, so that :meth:`LocalHub.stop` can drop them."""

    block_on_close = False  # (daemon threads and address reuse are ThreadingHTTPServer's defaults)

    def __init__(self, hub: LocalHub, address: tuple[str, int], sock: socket.socket | None) -> None:
        self.hub = hub
        self.connections: set[socket.socket] = set()  # added and discarded under the GIL, copied before use
        super().__init__(address, _Handler, bind_and_activate=sock is None)
        if sock is not None:  # adopt a socket reserved (bound, not listening) by configure_hub_environment
            self.socket.close()
            self.socket = sock
            self.server_address = sock.getsockname()[:2]
            self.server_activate()

    def process_request(self, request: Any, client_address: Any) -> None:
        self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.connections.discard(request)
        super().shutdown_request(request)


class LocalHub:
    """An in-memory Hub. Start it, point ``HF_ENDPOINT`` at :attr:`url`, and use the real client.

    Like the real Hub, it knows its users by their tokens: a request with a token nobody holds gets 401,
    every write needs a token, a user writes only in their own namespace, and a private repo is visible to
    its owner only. LFS uploads go to URLs signed by the (authenticated) batch call. Commit and repo dates
    come from :attr:`clock`, never from the client. Methods called on the object itself (``put_file``,
    ``commit``, ...) act as the server's administrator: no token, any namespace.

    Args:
        host (`str`, *optional*, defaults to ``"127.0.0.1"``): address to listen on.
        port (`int`, *optional*, defaults to 0): port; 0 picks a free one on the first start.
        sock (`socket.socket`, *optional*): a bound, not yet listening socket to adopt on the first start.
        users (`Mapping[str, str]`, *optional*): user name → token (default: ``DEFAULT_USER`` with
            ``DEFAULT_TOKEN``, the token :func:`configure_hub_environment` exports); more with :meth:`add_user`.
        clock (`Callable[[], datetime]`, *optional*): the server's time (timezone-aware; default: UTC now).
        max_body (`int`, *optional*, defaults to 256 MiB): the largest request body or LFS object accepted (413).
        request_timeout (`float`, *optional*, defaults to 60): seconds a connection gets for one whole request,
            from its first byte (or the end of the previous one) to the end of the answer.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, sock: socket.socket | None = None,
                 users: Mapping[str, str] | None = None, clock: Callable[[], datetime] | None = None,
                 max_body: int = 256 * 2**20, request_timeout: float = 60.0) -> None:
        self.host, self.port = host, port
        self.clock, self.max_body, self.request_timeout = clock or _utc_now, max_body, request_timeout
        users = {DEFAULT_USER: DEFAULT_TOKEN} if users is None else users
        self._tokens = {token: user for user, token in users.items()}
        self._secret = secrets.token_bytes(32)
        self._reserved = sock
        self._lock = threading.RLock()
        self._repos: dict[str, Repo] = {}
        self._log: list[dict[str, Any]] = []  # the handler appends (atomically) to these two
        self._errors: list[str] = []
        self._faults: list[_Fault] = []
        self._server: _HTTPServer | None = None

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
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                             name=f"local-hub-{self.port}", daemon=True).start()
            _SERVING[self.port] = self
        return self

    @classmethod
    def serving_at(cls, port: int | None) -> LocalHub | None:
        """The running hub this process serves on ``port``, if any (e.g. to add a user to it)."""
        return _SERVING.get(port)  # type: ignore[arg-type]

    def stop(self) -> None:
        """Stop serving and drop open connections: clients then get "connection refused". Data is kept."""
        with self._lock:
            server, self._server = self._server, None
        if server is None:
            return
        _SERVING.pop(self.port, None)
        server.shutdown()  # returns once serve_forever has stopped
        server.server_close()
        for conn in list(server.connections):  # pooled keep-alive sockets then fail like a dead server's
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    # ---- users --------------------------------------------------------------------------------------

    def add_user(self, name: str) -> str:
        """Register user ``name`` and return their token (a known user keeps theirs).

        Raises:
            ValueError: ``name`` is not a valid Hub user name.
        """
        if not _NAME_RE.fullmatch(name):
            raise ValueError(f"Not a valid Hub user name: {name!r}")
        with self._lock:
            token = next((t for t, user in self._tokens.items() if user == name), None)
            if token is None:
                token = f"hf_{secrets.token_urlsafe(24)}"
                self._tokens[token] = name
            return token

    def _sign(self, text: str) -> str:
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()

    # ---- request log and faults -----------------------------------------------------------------

    @property
    def requests(self) -> list[dict[str, Any]]:
        """A copy of the request log: dicts with method, path, query, range, status, bytes_sent, user."""
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
                     path_contains: str | None = None) -> None:
        """Answer the next ``times`` matching requests with ``status`` and a non-JSON ``body``.

        ``status=None`` closes the connection without any answer instead. ``path_contains`` restricts the
        fault to requests whose decoded path contains that string.
        """
        with self._lock:
            self._faults.extend([_Fault(status, body, path_contains)] * times)

    def clear_faults(self) -> None:
        """Cancel pending injected faults."""
        with self._lock:
            self._faults.clear()

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            fault = next((f for f in self._faults if f.path_contains is None or f.path_contains in path), None)
            if fault is not None:
                self._faults.remove(fault)
            return fault

    # ---- direct repository access (no client involved) ------------------------------------------

    def create_repo(self, repo_id: str, *, private: bool = False) -> Repo:
        """Create a model repository dated by :attr:`clock`, with the Hub's "initial commit" (a ``.gitattributes``).

        Raises:
            HubError: 409, the repository exists.
        """
        with self._lock:
            if repo_id in self._repos:
                # huggingface_hub's create_repo(exist_ok=True) reads the url of this answer
                raise HubError(409, "You already created this model repo", extra={"url": f"{self.url}/{repo_id}"})
            repo = Repo(repo_id=repo_id, private=private, created_at=self.clock())
            self._repos[repo_id] = repo
            self._new_commit(repo, "main", {".gitattributes": Blob.make(GITATTRIBUTES.encode(), lfs=False)},
                             title="initial commit", author="system")
            return repo

    def repo(self, repo_id: str) -> Repo:
        """The stored repository (raises ``KeyError`` when missing), e.g. to make it private or public."""
        with self._lock:
            return self._repos[repo_id]

    def put_file(self, repo_id: str, path: str, data: bytes, *, message: str | None = None) -> str:
        """Commit ``data`` at ``path`` of a model repo's ``main`` directly (e.g. a thief editing a file).
        Returns the new commit id."""
        blob = Blob.make(data, lfs=is_lfs_path(path, len(data)))
        return self.commit(repo_id, {path: blob}, message=message or f"Upload {path}")

    def delete_file(self, repo_id: str, path: str, *, message: str | None = None) -> str:
        """Delete ``path`` of a model repo's ``main`` in a new commit. Returns the new commit id."""
        return self.commit(repo_id, {}, deletions=[path], message=message or f"Delete {path}")

    def commit(self, repo_id: str, additions: Mapping[str, Blob], *, deletions: Iterable[str] = (), message: str,
               description: str = "", revision: str = "main", author: str = DEFAULT_USER,
               parent_commit: str | None = None) -> str:
        """Apply additions and deletions on branch ``revision`` as one new commit. Returns its id."""
        with self._lock:
            repo = self._repos[repo_id]
            if revision not in repo.branches:
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            head = repo.branches[revision]
            if parent_commit is not None and not head.startswith(parent_commit):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(repo.commits[head].files)
            for path in deletions:
                if files.pop(path, None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            files.update(additions)
            return self._new_commit(repo, revision, files, title=message, message=description, author=author).oid

    def read_file(self, repo_id: str, path: str) -> bytes:
        """The bytes of ``path`` on a model repo's ``main``."""
        with self._lock:
            return self._resolve(self._repos[repo_id]).files[path].data

    # ---- internals shared with the request handler ----------------------------------------------

    def _resolve(self, repo: Repo, revision: str | None = None) -> Commit:
        revision = revision or "main"
        oid = repo.branches.get(revision) or repo.tags.get(revision)
        if oid is None and _SHA_RE.fullmatch(revision):
            matches = [sha for sha in repo.commits if sha.startswith(revision)]
            oid = matches[0] if len(matches) == 1 else None
        if oid is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[oid]

    def _new_commit(self, repo: Repo, branch: str, files: dict[str, Blob], *, title: str, message: str = "",
                    author: str = DEFAULT_USER) -> Commit:
        parent = repo.branches.get(branch)
        date = max(self.clock(), repo.created_at)  # the server's time, never before the repo was created
        if parent is not None:  # strictly increasing dates keep "newest first" unambiguous
            date = max(date, repo.commits[parent].date + timedelta(milliseconds=1))
        oid = secrets.token_hex(20)  # 40 hex digits like a git commit id, never the same twice
        commit = Commit(oid=oid, parent=parent, title=title, message=message, author=author, date=date, files=files)
        repo.commits[oid] = commit
        repo.branches[branch] = oid
        return commit


