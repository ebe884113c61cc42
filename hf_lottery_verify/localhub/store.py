"""The local Hub's storage model: blobs, commits and repos, all in memory."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

DEFAULT_USER = "local-user"
DEFAULT_TOKEN = "hf_local_hub_default_token"  # DEFAULT_USER's token unless a LocalHub is given other users
LFS_MIN_SIZE = 10 * 1024 * 1024
LFS_SUFFIXES = (
    ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".npy", ".npz", ".pkl",
    ".pickle", ".gz", ".zip", ".tar", ".zst", ".xz", ".7z", ".arrow", ".parquet", ".joblib", ".tflite", ".gguf",
)
GITATTRIBUTES = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES)
_SHA_RE = re.compile(r"[0-9a-f]{5,40}")
_NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?")  # a user, namespace or repo name


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
    """A model repository: its commits, refs and the LFS objects uploaded to it."""

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
        self.headers, self.extra = dict(headers or {}), dict(extra or {})  # extra: more keys of the JSON answer


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob holding ``data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs_path(path: str, size: int) -> bool:
    """Whether the Hub would store this file in LFS (binary suffixes and files of 10 MB or more)."""
    return path.lower().endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE


def iso_date(value: datetime) -> str:
    """Format a date as the Hub does: ``2024-05-01T12:34:56.789Z``."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


@dataclass
class _Fault:
    status: int | None
    body: bytes
    path_contains: str | None


