"""``OwnershipKey``: the private material an owner keeps to prove ownership.

A key is a JSON file (readable, diffable) plus, when a scheme needs tensors (V1 key
weights, V3 trigger images, the alignment reference), one safetensors file beside it
(``<key file>.tensors.<digest>.safetensors``) whose name and SHA-256 the JSON records.
Each scheme owns one section of the JSON (``keymask`` for V1, ``signature`` for V2,
``triggers`` for V3, ``reference`` for channel re-alignment) and prefixes its tensor names
with the section name.

Keys are the proof of ownership, so they are handled conservatively: they are never
uploaded (the library refuses to write one inside a folder it is about to publish), an
existing key file is never overwritten (:meth:`OwnershipKey.save` refuses;
:func:`save_key_section` adds a new section to it), and every write is atomic (the tensor
file gets a new name first, then the JSON is replaced in one rename).

The *public claim* (:meth:`OwnershipKey.public_claim`) is what a published model may
carry: who claims, when, and a hash commitment to the key's evidence
(:meth:`OwnershipKey.commitment`) — nothing that locates or reveals the signature.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ._version import __version__
from .atomic import atomic_path, write_text_atomic
from .errors import KeyFileError, KeyFileNotFoundError, KeyMismatchError
from .storage import tensor_digest

__all__ = [
    "OwnershipKey",
    "KEY_FORMAT_VERSION",
    "KEYMASK_SECTION",
    "SIGNATURE_SECTION",
    "TRIGGERS_SECTION",
    "REFERENCE_SECTION",
    "SECTIONS",
    "EVIDENCE_SECTIONS",
    "mask_digest",
    "check_key_outside",
    "save_key_section",
]

KEY_FORMAT_VERSION = 2
KEYMASK_SECTION = "keymask"
"""Scheme V1: key masks and key weights."""
SIGNATURE_SECTION = "signature"
"""Scheme V2: the QR signature in the mask."""
TRIGGERS_SECTION = "triggers"
"""Scheme V3: the trigger set."""
REFERENCE_SECTION = "reference"
"""Channel fingerprints of the published model, for re-aligning permuted suspects."""
SECTIONS = (KEYMASK_SECTION, SIGNATURE_SECTION, TRIGGERS_SECTION, REFERENCE_SECTION)
EVIDENCE_SECTIONS = (SIGNATURE_SECTION, TRIGGERS_SECTION)
"""Sections whose content is ownership evidence; the public commitment covers exactly these."""
_SCHEME_OF = {KEYMASK_SECTION: "V1", SIGNATURE_SECTION: "V2", TRIGGERS_SECTION: "V3"}


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
        nonce: Random hex salt of the commitment (so the public commitment reveals nothing).
    """

    arch: str
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    format_version: int = KEY_FORMAT_VERSION
    nonce: str = field(default_factory=lambda: secrets.token_hex(16))

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

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the key atomically (JSON, plus the tensor file when there are tensors).

        The tensor file is written under a new content-addressed name first, then the JSON
        is replaced in one rename, then the previous tensor file is removed: a crash at
        any point leaves a complete, readable key (the old one or the new one).

        Args:
            path (`str` or `os.PathLike`): The JSON file to write; parent folders are created.
            overwrite (`bool`, *optional*, defaults to `False`): Replace an existing key file.
                Off by default: a key is the only proof of ownership of the models signed
                with it. To add a section to an existing key use :func:`save_key_section`.

        Returns:
            The JSON path.

        Raises:
            KeyFileError: ``path`` exists and ``overwrite`` is ``False``.
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise KeyFileError(
                f"{path} already exists; refusing to overwrite an ownership key (it is the only proof of ownership "
                "of the models signed with it). Choose another path, or add a section to it with "
                "save_key_section (the CLI's sign, split-key and triggers add their section to an existing key "
                "that lacks it).")
        old_tensor_file = None
        if path.exists():
            try:
                old_tensor_file = (json.loads(path.read_text()).get("tensors") or {}).get("file")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                old_tensor_file = None
        manifest: dict[str, Any] = {
            "hf_lottery_verify_key": self.format_version,
            "arch": self.arch,
            "created": self.created,
            "nonce": self.nonce,
            "sections": self.sections,
        }
        tname = None
        if self.tensors:
            digest = tensor_digest(self.tensors)
            tname = f"{path.name}.tensors.{digest[:16]}.safetensors"
            tpath = path.with_name(tname)
            with atomic_path(tpath, mode=0o600) as tmp:
                save_file(dict(self.tensors), str(tmp), metadata={"format": "pt"})
            manifest["tensors"] = {"file": tname, "sha256": _file_sha256(tpath)}
        write_text_atomic(path, json.dumps(manifest, indent=2, sort_keys=True), mode=0o600)
        if old_tensor_file and old_tensor_file != tname and "/" not in old_tensor_file:
            stale = path.with_name(old_tensor_file)
            if stale.exists():
                stale.unlink()
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> OwnershipKey:
        """Read a key written by :meth:`save`.

        Args:
            path (`str` or `os.PathLike`): The JSON file.

        Returns:
            [`OwnershipKey`]: The key, its tensors loaded from the tensor file the JSON names.

        Raises:
            KeyFileNotFoundError: The JSON file, or the tensor file it names, does not exist
                (also a ``FileNotFoundError``).
            KeyFileError: A folder instead of a file, invalid JSON, a missing, unknown or newer
                format version (``hf_lottery_verify_key``), a malformed ``tensors`` entry or
                one naming a file outside the key's folder, or an altered tensor file (its
                SHA-256 differs from the one the JSON records). Every message says what to do.
        """
        path = Path(path)
        if path.is_dir():
            raise KeyFileError(f"{path} is a folder; pass the ownership key's JSON file (written by split-key, sign "
                               "or triggers), not the folder holding it.", path=str(path))
        if not path.is_file():
            raise KeyFileNotFoundError(
                f"No ownership key at {path}. Pass the JSON key file written when the model was keyed (split-key, "
                "sign or triggers; --key-out on the command line): keys are never published with a model, so only "
                "its owner has it.", path=str(path))
        try:
            manifest = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"{path} is not an ownership key (invalid JSON: {exc}); pass the JSON file written "
                               "by split-key, sign or triggers, or restore it from your backup.", path=str(path)) from exc
        if not isinstance(manifest, dict) or "hf_lottery_verify_key" not in manifest:
            raise KeyFileError(f"{path} is not an hf_lottery_verify ownership key (it has no "
                               "'hf_lottery_verify_key' format version); pass the JSON file written by split-key, "
                               "sign or triggers.", path=str(path))
        version = manifest["hf_lottery_verify_key"]
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise KeyFileError(f"{path} has an unknown key format version {version!r}; this version of "
                               f"hf_lottery_verify reads formats 1..{KEY_FORMAT_VERSION}. The file was edited or "
                               "damaged: restore it from your backup of the key.", path=str(path))
        if version > KEY_FORMAT_VERSION:
            raise KeyFileError(f"{path} uses key format {version}, newer than the formats this version of "
                               f"hf_lottery_verify reads (1..{KEY_FORMAT_VERSION}); upgrade hf_lottery_verify to read "
                               "it.", path=str(path))
        tensors: dict[str, torch.Tensor] = {}
        info = manifest.get("tensors")
        if info and not isinstance(info, dict):
            raise KeyFileError(f"{path} has a malformed 'tensors' entry; restore the key from your backup.",
                               path=str(path))
        if info:
            name = str(info.get("file", ""))
            if not name or "/" in name or "\\" in name or name.startswith("."):
                raise KeyFileError(f"{path} names an invalid tensor file {name!r} (it must be a file name beside the "
                                   "key); the key was edited or damaged: restore it from your backup.", path=str(path))
            tpath = path.with_name(name)
            if not tpath.is_file():
                raise KeyFileNotFoundError(
                    f"The key's tensor file {tpath} is missing; keep it next to {path.name} (copy both files "
                    "together), or restore it from your backup of the key.", path=str(tpath))
            if _file_sha256(tpath) != info.get("sha256"):
                raise KeyFileError(
                    f"The key's tensor file {tpath} was altered or damaged (checksum mismatch): restore both "
                    f"{path.name} and {tpath.name} from your backup of the key.", path=str(tpath))
            try:
                tensors = load_file(str(tpath))
            except SafetensorError as exc:
                raise KeyFileError(f"Cannot read {tpath}: {exc}. Restore the key's files from your backup.",
                                   path=str(tpath)) from exc
        sections = manifest.get("sections") or {}
        if not isinstance(sections, dict) or not isinstance(manifest.get("arch"), str):
            raise KeyFileError(f"{path} is not a valid ownership key (no architecture or sections); restore it from "
                               "your backup of the key.", path=str(path))
        return cls(
            arch=manifest["arch"],
            sections=dict(sections),
            tensors=tensors,
            created=manifest.get("created", ""),
            format_version=version,
            nonce=str(manifest.get("nonce", "")),
        )

    # ------------------------------------------------------------------ public claim

    def commitment(self) -> str:
        """A hash commitment to the key's evidence: ``sha256:<hex>``.

        It covers the nonce, the architecture and the evidence sections (signature and
        trigger set, with their tensors), so publishing it reveals nothing, and nobody can
        later write a different key — one fitted to someone else's model, say — with the
        same commitment. Adding a key-mask or reference section does not change it.

        Returns:
            ``"sha256:"`` followed by 64 hex digits.
        """
        body = {"nonce": self.nonce, "arch": self.arch,
                "evidence": {s: self.sections[s] for s in EVIDENCE_SECTIONS if s in self.sections}}
        h = hashlib.sha256(b"hf_lottery_verify/key-commitment/v1\n")
        h.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
        evidence_tensors = {k: v for k, v in self.tensors.items() if k.split(".", 1)[0] in EVIDENCE_SECTIONS}
        h.update(tensor_digest(evidence_tensors).encode())
        return "sha256:" + h.hexdigest()

    def schemes(self) -> list[str]:
        """The paper's schemes this key holds material for (``V1``, ``V2``, ``V3``)."""
        return sorted(_SCHEME_OF[s] for s in self.sections if s in _SCHEME_OF)

    def public_claim(self, *, owner: str | None = None) -> dict[str, Any]:
        """The claim a published model may carry (header metadata, model card).

        Args:
            owner (`str`, *optional*): A public name for the owner.

        Returns:
            ``claim_version``, ``owner``, ``created`` (now), ``schemes``, ``key_commitment``
            and ``library``; nothing that locates or reveals the signature.
        """
        return {
            "claim_version": 1,
            "owner": owner,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "schemes": self.schemes(),
            "key_commitment": self.commitment(),
            "library": f"hf_lottery_verify {__version__}",
        }


def save_key_section(key: OwnershipKey, path: str | os.PathLike, section: str, *, replace: bool = False
                     ) -> OwnershipKey:
    """Write ``key``'s ``section`` to ``path``: a new key file, or a section added to an existing one.

    An existing key file keeps everything it holds; the call fails instead of replacing a
    section that is already there (its material proves ownership of models already
    published).

    Args:
        key (`OwnershipKey`): Holds the new section (and its tensors).
        path (`str` or `os.PathLike`): The key file.
        section (`str`): The section to write.
        replace (`bool`, *optional*, defaults to `False`): Replace the section when the key
            already holds it — allowed for the ``reference`` section only (alignment data
            of the published model, refreshed after retraining; not evidence, not covered
            by the public commitment).

    Returns:
        The key as written (``key`` itself for a new file, else the updated existing key).

    Raises:
        KeyFileError: The existing key already holds ``section``, or cannot be read.
        KeyMismatchError: The existing key belongs to another architecture.
    """
    path = Path(path)
    if not path.exists():
        key.save(path)
        return key
    existing = OwnershipKey.load(path)
    if replace and section != REFERENCE_SECTION:
        raise KeyFileError(f"Only the '{REFERENCE_SECTION}' section of a key can be replaced, not '{section}'.")
    if section in existing.sections and not replace:
        raise KeyFileError(
            f"{path} already holds a '{section}' section; refusing to replace it (it proves ownership of the "
            "models made with it). Write the new key to another path.")
    if existing.arch.split(".")[0] != key.arch.split(".")[0]:
        raise KeyMismatchError(f"{path} belongs to architecture '{existing.arch}', the new section to '{key.arch}'.")
    existing.set_section(section, key.sections[section], key.section_tensors(section))
    existing.save(path, overwrite=True)
    return existing


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
