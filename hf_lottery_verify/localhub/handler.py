"""The local Hub's HTTP layer: routes of the Hub API that huggingface_hub uses, and their handlers."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import socket
import time
import traceback
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

from .store import (
    _REPO_TYPES,
    _URL_PREFIX,
    Blob,
    Commit,
    HubError,
    Repo,
    _Fault,
    _not_found,
    is_lfs_path,
    iso_date,
)

if TYPE_CHECKING:
    from .server import LocalHub, _HTTPServer

logger = logging.getLogger(__name__)

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


