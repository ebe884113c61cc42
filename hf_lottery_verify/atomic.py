"""Atomic file writes: a file is either the old one or the complete new one, never half written.

Every file this library writes that matters (checkpoints, masks, ownership keys, resume
state, reports) goes through :func:`atomic_path`: the content is written to a temporary
file in the destination folder and renamed into place with :func:`os.replace`, which is
atomic on POSIX and Windows file systems.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "write_bytes_atomic", "write_text_atomic", "write_json_atomic", "json_safe", "file_sha256"]


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    The caller writes the whole file to the yielded path (with any library:
    ``safetensors.torch.save_file``, ``Path.write_text``, ...). If the block raises, the
    temporary file is removed and ``path`` is left exactly as it was.

    Args:
        path (`str` or `os.PathLike`): The destination file; its folder is created.
        mode (`int`, *optional*): Permission bits of the new file; defaults to what
            ``open()`` would give under the current umask (``mkstemp`` alone gives 0600,
            too strict for files meant to be published).

    Yields:
        The temporary path to write.

    Example:
        >>> with atomic_path("out/model.safetensors") as tmp:   # doctest: +SKIP
        ...     save_file(tensors, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _default_mode() if mode is None else mode)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path, mode=mode) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, *, mode: int | None = None) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return write_bytes_atomic(path, text.encode("utf-8"), mode=mode)


def write_json_atomic(path: str | os.PathLike, obj: Any, *, mode: int | None = None) -> Path:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically; returns ``path``."""
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", mode=mode)


def json_safe(value: Any) -> Any:
    """A copy of ``value`` that JSON (and YAML) can hold, for every report, card and key section this library writes.

    Mappings get string keys, tuples become lists, numpy scalars plain numbers, non-finite
    floats their ``str`` (``"nan"``, ``"inf"``), bytes hex, dates ISO 8601, anything else its ``str``.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if callable(getattr(value, "item", None)) and getattr(value, "ndim", None) == 0:  # numpy / torch scalars
        return json_safe(value.item())
    if callable(getattr(value, "isoformat", None)):  # datetime, date
        return value.isoformat()
    return str(value)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, in hex (the Hub's LFS object id; a key's tensor-file checksum)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
