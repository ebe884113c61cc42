"""``OwnershipKey``: the private material an owner keeps to prove ownership.

A key is a JSON file (readable, diffable) plus, when a scheme needs tensors (V1 key
weights, V3 trigger images), one safetensors file beside it named
``<key file>.tensors.safetensors``, whose SHA-256 the JSON records. Each scheme owns
one section of the JSON (``keymask`` for V1, ``signature`` for V2, ``triggers`` for V3)
and prefixes its tensor names with the section name. Keys are never uploaded: the
library refuses to write one inside a folder it is about to publish.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import KeyFileError, KeyMismatchError

__all__ = ["OwnershipKey", "KEY_FORMAT_VERSION", "mask_digest", "check_key_outside"]

KEY_FORMAT_VERSION = 1
SECTIONS = ("keymask", "signature", "triggers")


def mask_digest(masks: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over mask names, shapes and bits: identifies a mask set exactly.

    Args:
        masks: Boolean masks by parameter name.

    Returns:
        A hex digest.
    """
    h = hashlib.sha256()
    for name in sorted(masks):
        m = masks[name].detach().cpu().to(torch.uint8).contiguous()
        h.update(name.encode())
        h.update(json.dumps(list(m.shape)).encode())
        h.update(m.reshape(-1).numpy().tobytes())
    return h.hexdigest()


def check_key_outside(key_path: str | os.PathLike, folder: str | os.PathLike) -> None:
    """Refuse a key path inside a folder that is going to be published.

    Args:
        key_path: Where the key would be written.
        folder: The model folder.

    Raises:
        KeyFileError: ``key_path`` lies inside ``folder``.
    """
    key = Path(key_path).resolve()
    root = Path(folder).resolve()
    if key == root or root in key.parents:
        raise KeyFileError(
            f"Refusing to write the ownership key to {key_path}: it lies inside the model folder {folder}, "
            "which is meant to be published. Keep the key elsewhere (e.g. ~/keys/)."
        )


@dataclass
class OwnershipKey:
    """Everything needed to verify ownership later; keep it private.

    Attributes:
        arch: timm architecture of the ticket the key belongs to.
        sections: Per-scheme JSON-safe dicts (``keymask``, ``signature``, ``triggers``).
        tensors: Tensors by name, each prefixed with its section (``keymask.values.<param>``).
        created: ISO timestamp of creation.
        format_version: Key file layout version.
    """

    arch: str
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    format_version: int = KEY_FORMAT_VERSION

    # ------------------------------------------------------------------ sections

    def section(self, name: str) -> dict[str, Any]:
        """A scheme's section.

        Raises:
            KeyMismatchError: The key has no such section (it was made for another scheme).
        """
        if name not in self.sections:
            raise KeyMismatchError(
                f"This ownership key has no '{name}' section (it holds: {sorted(self.sections) or 'nothing'}). "
                "Use the key produced by the matching step (split-key for V1, sign for V2, triggers for V3)."
            )
        return self.sections[name]

    def section_tensors(self, name: str) -> dict[str, torch.Tensor]:
        """Tensors of one section, with the ``<section>.`` prefix removed."""
        prefix = f"{name}."
        return {k[len(prefix) :]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def set_section(self, name: str, data: Mapping[str, Any], tensors: Mapping[str, torch.Tensor] | None = None) -> None:
        """Replace one section and its tensors.

        Args:
            name: ``keymask``, ``signature`` or ``triggers``.
            data: JSON-serialisable dict.
            tensors: Tensors by name (without the section prefix).
        """
        if name not in SECTIONS:
            raise KeyMismatchError(f"Unknown key section '{name}'; use one of {SECTIONS}.")
        json.dumps(data)  # fail early on non-serialisable content
        self.sections[name] = dict(data)
        prefix = f"{name}."
        self.tensors = {k: v for k, v in self.tensors.items() if not k.startswith(prefix)}
        for k, v in (tensors or {}).items():
            self.tensors[prefix + k] = v.detach().cpu().contiguous()

    # ------------------------------------------------------------------ files

    @staticmethod
    def tensor_path(path: str | os.PathLike) -> Path:
        """Where the tensors of the key at ``path`` live."""
        p = Path(path)
        return p.with_name(p.name + ".tensors.safetensors")

    def save(self, path: str | os.PathLike) -> Path:
        """Write the key (JSON, plus the tensor file when there are tensors).

        Args:
            path: The JSON file to write; parent folders are created.

        Returns:
            The JSON path.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        manifest: dict[str, Any] = {
            "hf_lottery_verify_key": self.format_version,
            "arch": self.arch,
            "created": self.created,
            "sections": self.sections,
        }
        tpath = self.tensor_path(path)
        if self.tensors:
            save_file(dict(self.tensors), str(tpath), metadata={"format": "pt"})
            manifest["tensors"] = {"file": tpath.name, "sha256": _file_sha256(tpath)}
        elif tpath.exists():
            tpath.unlink()
        path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> OwnershipKey:
        """Read a key written by :meth:`save`.

        Args:
            path: The JSON file.

        Returns:
            The key.

        Raises:
            KeyFileError: Missing or unreadable file, unknown version, a missing or altered
                tensor file.
        """
        path = Path(path)
        if not path.is_file():
            raise KeyFileError(f"No ownership key at {path}.")
        try:
            manifest = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"{path} is not an ownership key (invalid JSON: {exc}).") from exc
        version = manifest.get("hf_lottery_verify_key") if isinstance(manifest, dict) else None
        if not isinstance(version, int):
            raise KeyFileError(f"{path} is not an hf_lottery_verify ownership key.")
        if version > KEY_FORMAT_VERSION:
            raise KeyFileError(f"{path} uses key format {version}; upgrade hf_lottery_verify to read it.")
        tensors: dict[str, torch.Tensor] = {}
        info = manifest.get("tensors")
        if info:
            tpath = path.with_name(info["file"])
            if not tpath.is_file():
                raise KeyFileError(f"The key's tensor file {tpath} is missing; keep it next to {path.name}.")
            if _file_sha256(tpath) != info["sha256"]:
                raise KeyFileError(f"The key's tensor file {tpath} was altered or damaged (checksum mismatch).")
            try:
                tensors = load_file(str(tpath))
            except SafetensorError as exc:
                raise KeyFileError(f"Cannot read {tpath}: {exc}.") from exc
        return cls(
            arch=manifest["arch"],
            sections=dict(manifest.get("sections") or {}),
            tensors=tensors,
            created=manifest.get("created", ""),
            format_version=version,
        )


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
