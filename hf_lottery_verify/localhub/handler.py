"""The local Hub's HTTP layer: routes of the Hub API that huggingface_hub uses, and their handlers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import socket
import traceback
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote

import yaml

from .store import _NAME_RE, Blob, Commit, HubError, Repo, is_lfs_path, iso_date
from .transport import _GuardedHandler

# --------------------------------------------------------------------------------------------------
# HTTP layer
# --------------------------------------------------------------------------------------------------

_REPO = r"(?P<repo>[^/]+/[^/]+)"  # model repos only: no caller of this hub uses datasets or spaces
_API = r"/api/models/" + _REPO
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (method, re.compile(pattern), name) for method, pattern, name in [
        ("GET", r"/api/whoami-v2", "whoami"),
        ("POST", r"/api/repos/create", "create_repo"),
        ("DELETE", r"/api/repos/delete", "delete_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("PUT", _API + r"/settings", "settings"),
        ("POST", _API + r"/preupload/(?P<rev>[^/]+)", "preupload"),
        ("POST", _API + r"/commit/(?P<rev>[^/]+)", "commit"),
        ("GET", _API + r"(?:/revision/(?P<rev>[^/]+))?", "info"),
        ("GET", _API + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", "tree"),
        ("POST", _API + r"/paths-info/(?P<rev>[^/]+)", "paths_info"),
        ("GET", _API + r"/commits/(?P<rev>[^/]+)", "commits"),
        ("GET", _API + r"/refs", "refs"),
        ("POST", _API + r"/(?P<ref>branch|tag)/(?P<name>[^/]+)", "create_ref"),  # tag/{rev}, body {"tag": name}
        ("POST", r"/" + _REPO + r"\.git/info/lfs/objects/batch", "lfs_batch"),
        ("PUT", r"/__lfs/models/" + _REPO + r"/(?P<oid>[0-9a-f]{64})", "lfs_put"),
        ("GET HEAD", r"/" + _REPO + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
    ]
]
_SINGLE_SEGMENT_REPO = re.compile(r"/api/models/[^/]+(?:/revision/[^/]+)?|/[^/]+/resolve/.+")
_OPEN_POSTS = ("validate_yaml", "paths_info", "lfs_put")  # non-GET routes without a token (lfs_put: signed URL)


def _checked_path(value: Mapping[str, Any]) -> str:
    """The ``path`` of a commit operation: a relative path inside the repo, or 400."""
    path = value["path"]
    if not isinstance(path, str) or "\0" in path or any(part in ("", ".", "..") for part in path.split("/")):
        raise HubError(400, f"Invalid path in repo: {path!r}")
    return path


def _entries(commit: Commit) -> dict[str, dict[str, Any]]:
    """Every file and folder of a commit by path, as the tree and paths-info APIs describe them."""
    entries: dict[str, dict[str, Any]] = {}
    for path, blob in commit.files.items():
        parts = path.split("/")
        for folder in ("/".join(parts[:i]) for i in range(1, len(parts))):
            oid = hashlib.sha1(f"tree\0{commit.oid}\0{folder}".encode()).hexdigest()
            entries[folder] = {"type": "directory", "oid": oid, "size": 0, "path": folder}
        entries[path] = {"type": "file", "oid": blob.git_oid, "size": len(blob.data), "path": path}
        if blob.lfs:
            entries[path]["lfs"] = {"oid": blob.sha256, "size": len(blob.data), "pointerSize": blob.pointer_size}
    return entries


def _front_matter(text: str) -> Any:
    """The YAML front matter of a model card (``None`` without one). Raises ``yaml.YAMLError``."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    return None if match is None else yaml.safe_load(match.group(1))


class _Handler(_GuardedHandler):
    """Parses a request, checks its token, routes it to a ``_h_<name>`` method, answers and logs it."""

    # ---- routing and access ---------------------------------------------------------------------

    def _answer(self, raw_path: str) -> None:
        try:
            fault = self.hub._take_fault(self._path)
            if fault is not None and fault.status is None:  # like a dead server: no answer at all
                self._log(0, 0)
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault is not None:
                self._send(fault.status, fault.body, {"Content-Type": "text/plain"})
                return
            self._user = self._authenticate()
            name, groups = self._match(raw_path)
            if name == "lfs_put":
                self._check_signature(groups)
            elif self._user is None and (name == "whoami" or self.command not in ("GET", "HEAD")
                                         and name not in _OPEN_POSTS):
                raise HubError(401, "Invalid username or password.")
            self._body = self._read_body(int(self._query.get("size", 0)) if name == "lfs_put" else None)
            getattr(self, f"_h_{name}")(groups)
        except HubError as error:
            self._send_error(error)
        except (ConnectionError, TimeoutError):
            raise
        except (AttributeError, KeyError, TypeError, ValueError) as error:  # a body that is not what the route takes
            self._send_error(HubError(400, f"Malformed request: {error!r}"))
        except Exception as error:  # a server bug: keep the traceback for the tests, answer 500
            self.hub._errors.append(traceback.format_exc())
            self._send_error(HubError(500, f"Local hub error: {error!r}"))

    def _authenticate(self) -> str | None:
        """The user the ``Authorization`` token belongs to; ``None`` without one; 401 for a token nobody holds."""
        header = self.headers.get("Authorization")
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        user = self.hub._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")  # the client's plain HTTP error
        return user

    def _check_signature(self, groups: dict[str, Any]) -> None:
        """LFS PUTs carry no token (as with S3): the URL is signed by the batch call that authorized them."""
        expected = self.hub._sign(f"{groups['repo']}/{groups['oid']}/{self._query.get('size')}")
        if not hmac.compare_digest(expected.encode(), self._query.get("sig", "").encode("utf-8", "replace")):
            raise HubError(403, "Invalid or missing LFS upload signature: ask the LFS batch API for an upload URL")

    def _match(self, raw_path: str) -> tuple[str, dict[str, Any]]:
        for method, pattern, name in _ROUTES:
            if self.command in method.split() and (match := pattern.fullmatch(raw_path)):
                return name, {key: value and unquote(value) for key, value in match.groupdict().items()}
        if _SINGLE_SEGMENT_REPO.fullmatch(raw_path):  # e.g. "gpt2": this hub only stores owner/name repos
            raise HubError(404, "Repository not found", "RepoNotFound")
        raise HubError(501, f"Not implemented by the local hub: {self.command} {raw_path}")

    def _repo(self, groups: Mapping[str, Any], *, write: bool = False) -> Repo:
        """The repo a request names, if its user may read it (private: the owner only) and, for writes, own it."""
        with self.hub._lock:
            repo = self.hub._repos.get(groups["repo"])
        owner = self._user is not None and self._user == groups["repo"].split("/")[0]
        if repo is None or (repo.private and not owner):
            raise HubError(401 if self._user is None else 404, "Repository not found", "RepoNotFound")
        if write and not owner:
            raise HubError(403, f"You don't have the rights to write to {repo.repo_id}: it is not in your namespace")
        return repo

    def _read(self, groups: Mapping[str, Any]) -> tuple[Repo, Commit]:
        """The repo a read names (see :meth:`_repo`) and the commit its revision (default ``main``) resolves to."""
        repo = self._repo(groups)
        with self.hub._lock:
            return repo, self.hub._resolve(repo, groups.get("rev"))

    # ---- account and repositories ---------------------------------------------------------------

    def _h_whoami(self, groups: Mapping[str, Any]) -> None:
        self._send_json({"type": "user", "name": self._user, "fullname": self._user, "orgs": [],
                         "auth": {"type": "access_token", "accessToken": {"role": "write"}}})

    def _repo_id_in(self, body: Mapping[str, Any]) -> str:
        """The ``owner/name`` of a create/delete body; a name outside the user's namespace is refused."""
        namespace, name = body.get("organization") or self._user, body["name"]
        if body.get("type", "model") != "model" or not all(isinstance(v, str) and _NAME_RE.fullmatch(v)
                                                           for v in (namespace, name)):
            raise HubError(400, "Invalid repo type (this hub stores models only), namespace or name")
        if namespace != self._user:
            raise HubError(403, f"You don't have the rights to create or delete repos in the namespace {namespace}")
        return f"{namespace}/{name}"

    def _h_create_repo(self, groups: Mapping[str, Any]) -> None:
        body = self._json()
        repo_id = self._repo_id_in(body)
        self.hub.create_repo(repo_id, private=body.get("visibility") == "private")
        self._send_json({"url": f"{self.hub.url}/{repo_id}", "name": repo_id})

    def _h_delete_repo(self, groups: Mapping[str, Any]) -> None:
        repo_id = self._repo_id_in(self._json())
        with self.hub._lock:
            self._repo({"repo": repo_id}, write=True)
            del self.hub._repos[repo_id]
        self._send_json({})

    def _h_settings(self, groups: Mapping[str, Any]) -> None:
        repo, body = self._repo(groups, write=True), self._json()
        if "visibility" in body:  # what huggingface_hub sends, for private=True too
            repo.private = body["visibility"] == "private"
        self._send_json({})

    def _h_validate_yaml(self, groups: Mapping[str, Any]) -> None:
        from huggingface_hub.repocard_data import model_index_to_eval_results

        try:
            metadata = _front_matter(str(self._json().get("content", "")))
            if isinstance(metadata, dict) and "model-index" in metadata:  # the Hub refuses one it cannot read
                model_index_to_eval_results(metadata["model-index"])
        except (yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as error:
            self._send_json({"errors": [{"message": f"Invalid metadata: {error!r}"}], "warnings": []}, 400)
            return
        self._send_json({"errors": [], "warnings": []})

    # ---- upload ---------------------------------------------------------------------------------

    def _h_preupload(self, groups: Mapping[str, Any]) -> None:
        repo = self._repo(groups, write=True)
        with self.hub._lock:
            commit = self.hub._resolve(repo, groups["rev"])
        answer = []
        for item in self._json().get("files", []):
            path, existing = item["path"], commit.files.get(item["path"])
            answer.append({"path": path, "uploadMode": "lfs" if is_lfs_path(path, int(item["size"])) else "regular",
                           "shouldIgnore": False, "oid": existing and existing.etag})
        self._send_json({"files": answer, "commitOid": commit.oid})

    def _h_lfs_batch(self, groups: Mapping[str, Any]) -> None:
        repo, body = self._repo(groups, write=True), self._json()
        if body.get("operation") != "upload":
            raise HubError(400, "The local hub only supports LFS uploads through the batch API")
        objects = []
        for item in body.get("objects", []):
            oid, size = item["oid"], item["size"]
            if not (isinstance(oid, str) and re.fullmatch(r"[0-9a-f]{64}", oid) and type(size) is int and size >= 0):
                raise HubError(400, "An LFS object needs a sha256 hex oid and a non-negative integer size")
            if size > self.hub.max_body:
                raise HubError(413, f"LFS object larger than this hub's {self.hub.max_body} bytes")
            entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if oid not in repo.lfs_objects:
                base = f"{self.hub.url}/__lfs/models/{repo.repo_id}"
                signature = self.hub._sign(f"{repo.repo_id}/{oid}/{size}")
                entry["actions"] = {"upload": {"href": f"{base}/{oid}?size={size}&sig={signature}"}}
            objects.append(entry)
        self._send_json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                        headers={"Content-Type": "application/vnd.git-lfs+json"})

    def _h_lfs_put(self, groups: Mapping[str, Any]) -> None:
        if len(self._body) != int(self._query["size"]) or hashlib.sha256(self._body).hexdigest() != groups["oid"]:
            raise HubError(400, "LFS object content does not match its sha256 oid and size")
        with self.hub._lock:
            repo = self.hub._repos.get(groups["repo"])
            if repo is None:
                raise HubError(404, "Repository not found", "RepoNotFound")
            repo.lfs_objects[groups["oid"]] = self._body
        self._send(200, b"")

    def _h_commit(self, groups: Mapping[str, Any]) -> None:
        if self._query.get("create_pr"):
            raise HubError(400, "create_pr is not supported by the local hub")
        repo = self._repo(groups, write=True)
        header: dict[str, Any] = {}
        additions: dict[str, Blob] = {}
        deletions: list[str] = []
        for line in self._body.splitlines():
            item = json.loads(line)
            key, value = item.get("key"), item.get("value", {})
            if key == "header":
                header = value  # its summary and description only: the date and author are the server's
            elif key == "file":
                additions[_checked_path(value)] = Blob.make(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                data = repo.lfs_objects.get(value["oid"])
                if data is None:
                    raise HubError(422, f"LFS file {value['path']} ({value['oid']}) was not uploaded")
                additions[_checked_path(value)] = Blob.make(data, lfs=True)
            elif key == "deletedFile":
                deletions.append(_checked_path(value))
            else:
                raise HubError(400, f"Unsupported commit operation: {key}")
        oid = self.hub.commit(repo.repo_id, additions, deletions=deletions, revision=groups["rev"], author=self._user,
                              message=str(header.get("summary") or "Update"), parent_commit=header.get("parentCommit"),
                              description=str(header.get("description") or ""))
        commit_url = f"{self.hub.url}/{repo.repo_id}/commit/{oid}"
        self._send_json({"success": True, "commitOid": oid, "commitUrl": commit_url, "hookOutput": "",
                         "pullRequestUrl": None})

    # ---- refs -----------------------------------------------------------------------------------

    def _h_create_ref(self, groups: Mapping[str, Any]) -> None:
        repo, body = self._repo(groups, write=True), self._json()
        branch = groups["ref"] == "branch"
        name, start = (groups["name"], body.get("startingPoint")) if branch else (body["tag"], groups["name"])
        if not isinstance(name, str) or not name:
            raise HubError(400, "A tag needs a name")
        refs = repo.branches if branch else repo.tags
        with self.hub._lock:
            if name in refs:
                raise HubError(409, f"Reference already exists: refs/{'heads' if branch else 'tags'}/{name}")
            refs[name] = self.hub._resolve(repo, start).oid
        self._send_json({})

    def _h_refs(self, groups: Mapping[str, Any]) -> None:
        repo = self._repo(groups)
        with self.hub._lock:
            branches = [{"name": name, "ref": f"refs/heads/{name}", "targetCommit": oid}
                        for name, oid in sorted(repo.branches.items())]
            tags = [{"name": name, "ref": f"refs/tags/{name}", "targetCommit": oid}
                    for name, oid in sorted(repo.tags.items())]
        self._send_json({"branches": branches, "converts": [], "tags": tags, "pullRequests": []})

    # ---- download -------------------------------------------------------------------------------

    def _h_info(self, groups: Mapping[str, Any]) -> None:
        repo, commit = self._read(groups)
        readme = commit.files["README.md"].data.decode(errors="replace") if "README.md" in commit.files else ""
        try:
            card = _front_matter(readme)
        except yaml.YAMLError:
            card = None
        card = card if isinstance(card, dict) else {}
        self._send_json({
            "id": repo.repo_id, "modelId": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": commit.oid,
            "lastModified": iso_date(commit.date), "createdAt": iso_date(repo.created_at), "private": repo.private,
            "gated": False, "disabled": False, "tags": list(card.get("tags") or []), "cardData": card or None,
            "library_name": card.get("library_name"),
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
        })

    def _h_tree(self, groups: Mapping[str, Any]) -> None:
        _, commit = self._read(groups)
        base = (groups["path"] or "").strip("/")
        prefix = f"{base}/" if base else ""
        recursive = self._query.get("recursive", "").lower() in ("1", "true")
        entries = [entry for path, entry in sorted(_entries(commit).items())
                   if path.startswith(prefix) and (recursive or path.count("/") == prefix.count("/"))]
        if base and not entries:
            raise HubError(404, f"{base} does not exist on {groups['rev']}", "EntryNotFound",
                           {"X-Repo-Commit": commit.oid})
        self._send_json(entries)

    def _h_paths_info(self, groups: Mapping[str, Any]) -> None:
        _, commit = self._read(groups)
        paths = [value for key, value in parse_qsl(self._body.decode()) if key == "paths"]  # the client's form
        entries = _entries(commit)
        found = (entries.get(path) or entries.get(path.strip("/")) for path in paths)
        self._send_json([entry for entry in found if entry])

    def _h_commits(self, groups: Mapping[str, Any]) -> None:
        repo = self._repo(groups)
        items = []
        with self.hub._lock:
            commit: Commit | None = self.hub._resolve(repo, groups["rev"])
            while commit is not None:
                items.append({"id": commit.oid, "title": commit.title, "message": commit.message,
                              "date": iso_date(commit.date), "authors": [{"user": commit.author, "avatar": None}]})
                commit = repo.commits[commit.parent] if commit.parent else None
        self._send_json(items)

    def _h_resolve(self, groups: Mapping[str, Any]) -> None:
        _, commit = self._read(groups)
        blob = commit.files.get(groups["path"])
        if blob is None:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{blob.etag}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if blob.lfs:
            headers.update({"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(len(blob.data))})
        self._send_range(blob.data, headers)
