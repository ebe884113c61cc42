"""Opening checkpoint files without trusting them: regular files only, bounded JSON, and the
one safetensors reader of the library.

Every file a reader opens (weights, ``config.json``, shard indexes) goes through
:func:`open_regular`: a symlink loop, a FIFO, a device or a folder is a typed error, never
a hang. :func:`read_safetensors` checks a file by the rules of ``safetensors`` itself
before it allocates anything — a header of at most 100,000,000 bytes of UTF-8 JSON, known
dtypes, shapes of non-negative integers whose element count times the item size is
exactly the tensor's byte range, and byte ranges that tile the data section from its
start to the end of the file with no gap and no overlap — then reads the tensors from
the file it opened. It serves the owner's files and suspects alike; only the handling of
a malformed ``__metadata__`` block differs (see ``notes``).
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

import torch

from ..errors import CheckpointError, CheckpointNotFoundError, CorruptCheckpointError

__all__ = ["MAX_HEADER_BYTES", "MAX_JSON_BYTES", "open_regular", "load_json", "read_json", "read_safetensors",
           "shape_of", "name_some"]

MAX_HEADER_BYTES = 100_000_000
"""Longest safetensors header read: the limit of ``safetensors`` itself."""
MAX_JSON_BYTES = 16 * 2**20
"""Longest ``config.json``, shard index or ownership key file read."""
DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "I32": torch.int32,
    "I64": torch.int64, "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64,
}
"""The safetensors dtypes read (the ones torch computes with on the CPU)."""
_LIMIT = 2**63  # safetensors allows u64 shapes and counts, torch only int64: beyond, neither can load a tensor


def name_some(names: list[str], *, limit: int = 3) -> str:
    """``'a', 'b', 'c' and 9,997 more``: a short list for one-line messages."""
    shown = ", ".join(repr(n[:80]) for n in names[:limit])
    return shown + (f" and {len(names) - limit:,} more" if len(names) > limit else "")


def _naturals(value: Any) -> bool:
    return isinstance(value, list) and all(type(v) is int and 0 <= v < _LIMIT for v in value)


def shape_of(value: Any) -> tuple[int, ...] | None:
    """``value`` as a tensor shape, else ``None``: a list of non-negative JSON integers whose running
    product stays below 2**63 (as torch computes it; safetensors refuses a product past 2**64)."""
    count = 1
    for dim in value if _naturals(value) else [-1]:
        count *= dim
        if not 0 <= count < _LIMIT:
            return None
    return tuple(value)


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """Open ``path`` for reading only if, once links are resolved, it is a regular file.

    Args:
        path (`str` or `os.PathLike`): The file.

    Returns:
        The open binary file.

    Raises:
        CheckpointNotFoundError: ``path`` does not exist.
        CheckpointError: ``path`` is a folder, FIFO, socket or device, a symlink loop, or unreadable.
    """
    path = str(path)
    try:  # O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        error = CheckpointNotFoundError if isinstance(exc, FileNotFoundError) else CheckpointError
        raise error(f"Cannot open {path}: {getattr(exc, 'strerror', None) or exc}.", path=path) from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CheckpointError(f"{path} is not a regular file (a folder, FIFO, socket or device); not reading it.",
                              path=path)
    return os.fdopen(fd, "rb")


def load_json(data: bytes | str, *, where: str, path: str | None = None) -> Any:
    """Parse untrusted JSON: UTF-8 only; nesting too deep for the parser is an error, never a crash.

    Raises:
        CorruptCheckpointError: ``data`` is not JSON.
    """
    try:
        return json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise CorruptCheckpointError(f"Malformed JSON in {where} ({reason}).", path=path) from exc


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file of at most :data:`MAX_JSON_BYTES` bytes (see :func:`open_regular` and :func:`load_json`).

    Raises:
        CheckpointError: The file is not a regular file, too large or not JSON.
    """
    with open_regular(path) as fh:
        data = fh.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise CorruptCheckpointError(f"{path} is larger than {MAX_JSON_BYTES:,} bytes; not parsing it.",
                                     path=str(path))
    return load_json(data, where=str(path), path=str(path))


def _bad(path: str, why: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"{path} is truncated or corrupt: {why}. Download or save it again.", path=path)


def _read_header(fh: BinaryIO, path: str, notes: list[str] | None
                 ) -> tuple[dict[str, tuple[torch.dtype, tuple[int, ...], int, int]], dict[str, str]]:
    """The tensor table (name → dtype, shape, file offset, byte count) and metadata, checked as safetensors does."""
    size = os.fstat(fh.fileno()).st_size
    head = fh.read(8)
    if len(head) < 8:
        raise _bad(path, "it is shorter than 8 bytes")
    n = int.from_bytes(head, "little")
    if n > MAX_HEADER_BYTES:
        raise _bad(path, f"its header of {n:,} bytes is over safetensors' limit of {MAX_HEADER_BYTES:,}")
    if 8 + n > size:
        raise _bad(path, f"its header of {n:,} bytes runs past the end of the file (truncated?)")
    header = load_json(fh.read(n), where=f"the header of {path}", path=path)
    if not isinstance(header, dict):
        raise _bad(path, "its header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    elif not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        if notes is None:
            raise _bad(path, "its __metadata__ is not a map of strings")
        notes.append(f"{Path(path).name}: the header's __metadata__ is not a map of strings (safetensors refuses "
                     "it); ignored it and read the tensors")
        metadata = {}
    entries = []
    for name, info in header.items():
        dtype = info.get("dtype") if isinstance(info, dict) else None
        if not (isinstance(dtype, str) and dtype in DTYPES):
            raise _bad(path, f"tensor {name[:80]!r} has dtype {str(dtype)[:20]!r}, not one of {', '.join(DTYPES)}")
        offsets, shape = info.get("data_offsets"), shape_of(info.get("shape"))
        if shape is None or not (_naturals(offsets) and len(offsets) == 2):
            raise _bad(path, f"tensor {name[:80]!r} needs a shape of non-negative integers whose product fits 63 "
                             "bits and two data_offsets")
        entries.append((tuple(offsets), name, DTYPES[dtype], shape))
    entries.sort(key=lambda e: e[0])
    table, end = {}, 0
    for (begin, stop), name, dtype, shape in entries:
        if begin != end or stop < begin:
            raise _bad(path, f"the byte range of tensor {name[:80]!r} overlaps another or leaves a gap")
        count = math.prod(shape)  # a Python integer: never wraps
        if count * dtype.itemsize != stop - begin:
            raise _bad(path, f"tensor {name[:80]!r} of shape {list(shape)} needs {count * dtype.itemsize:,} bytes, "
                             f"its byte range holds {stop - begin:,}")
        table[name], end = (dtype, shape, 8 + n + begin, stop - begin), stop
    if 8 + n + end != size:
        raise _bad(path, f"its tensors cover {end:,} bytes of a {size - 8 - n:,}-byte data section")
    return table, metadata


def read_safetensors(path: str | os.PathLike, *, notes: list[str] | None = None
                     ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read every tensor and the header metadata of a safetensors file, checked as ``safetensors`` does.

    Args:
        path (`str` or `os.PathLike`): The file.
        notes (`list[str]`, *optional*): For untrusted files, whose metadata is never
            evidence: a ``__metadata__`` block that ``safetensors`` refuses (a non-string
            value, say) is then ignored with a note appended here instead of raising.

    Returns:
        ``(tensors, metadata)`` — tensors by name (in name order), metadata ``{}`` when absent.

    Raises:
        CorruptCheckpointError: The file breaks a rule of the format (truncated, a header
            too large or not JSON, bad shapes, dtypes or byte ranges).
        CheckpointError: The file is missing or not a regular file.
    """
    path = str(path)
    with open_regular(path) as fh:
        table, metadata = _read_header(fh, path, notes)
        tensors = {}
        for name in sorted(table):
            dtype, shape, start, nbytes = table[name]
            buf = bytearray(nbytes)
            fh.seek(start)
            if fh.readinto(buf) != nbytes:
                raise _bad(path, "it shrank while being read")
            flat = torch.frombuffer(buf, dtype=dtype) if nbytes else torch.empty(0, dtype=dtype)
            tensors[name] = flat.reshape(shape)
    return tensors, metadata
