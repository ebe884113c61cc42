"""``OwnershipKey``: the private material an owner keeps to prove ownership.

A key is a JSON file (readable, diffable) plus, when a scheme needs tensors (V1 key
weights, loaded V3 trigger images, the alignment reference), one safetensors file beside it
(``<key file>.tensors.<digest>.safetensors``) whose name and SHA-256 the JSON records.
Each scheme owns one section of the JSON (``keymask`` for V1, ``signature`` for V2,
``triggers`` for V3, ``reference`` for channel re-alignment) and prefixes its tensor names
with the section name.

Everything a verification uses comes from one **secret** (32 random bytes, drawn when the
key is made) or from the key's **commitment**: the signature's slots and whitening and every
trigger label are derived from the secret (:meth:`OwnershipKey.derive`), so a claimant who
writes a key after seeing a model cannot choose them; the alignment reference and loaded
trigger images are covered by :meth:`OwnershipKey.commitment`, which the owner publishes
in a dated Hub commit (an :class:`~hf_lottery_verify.key_sections.Anchor`) before anyone
else has the model. See ``docs/SECURITY.md``.

Keys are the proof of ownership, so they are handled conservatively: they are never
uploaded (the library refuses to write one inside a folder it is about to publish), a key
file only ever grows (:meth:`OwnershipKey.save` with ``extend=True`` adds sections and
anchors and refuses to change what is there), every write is atomic (the tensor file gets
a new name first, then the JSON is replaced in one rename), and a key file is validated on
load — types, ranges, sizes, architecture name — before anything is built from it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import hashlib
import hmac
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
from .atomic import atomic_path, file_sha256, write_text_atomic
from .errors import CheckpointError, KeyFileError, KeyFileNotFoundError, KeyMismatchError
from .key_sections import ARCH_RE, Anchor, SignatureSection, TriggerSection
from .storage import tensor_digest
from .storage.files import read_json

__all__ = [
    "OwnershipKey",
    "KeyLike",
    "as_key",
    "KEY_FORMAT_VERSION",
    "KEYMASK_SECTION",
    "SIGNATURE_SECTION",
    "TRIGGERS_SECTION",
    "REFERENCE_SECTION",
    "SECTIONS",
    "COMMITTED_SECTIONS",
    "mask_digest",
    "check_key_outside",
]

KEY_FORMAT_VERSION = 3
"""Key file layout version. 0.3 reads only this one: keys of format 1 and 2 stored slots and
trigger labels a claimant could choose, so they cannot prove anything under the 0.3 rules."""
KEYMASK_SECTION = "keymask"
"""Scheme V1: key masks and key weights."""
SIGNATURE_SECTION = "signature"
"""Scheme V2: the QR signature in the mask."""
TRIGGERS_SECTION = "triggers"
"""Scheme V3: the trigger set."""
REFERENCE_SECTION = "reference"
"""The published model's masks and channel fingerprints, for re-aligning permuted suspects."""
SECTIONS = (KEYMASK_SECTION, SIGNATURE_SECTION, TRIGGERS_SECTION, REFERENCE_SECTION)
COMMITTED_SECTIONS = (SIGNATURE_SECTION, TRIGGERS_SECTION, REFERENCE_SECTION)
"""Sections the public commitment covers: everything a verification reads from the key
(V1 key masks control use, not ownership, and are left out so they can be added later)."""
_SCHEME_OF = {KEYMASK_SECTION: "V1", SIGNATURE_SECTION: "V2", TRIGGERS_SECTION: "V3"}
_TYPED_SECTIONS = {SIGNATURE_SECTION: SignatureSection, TRIGGERS_SECTION: TriggerSection}
_MAX_TENSOR_FILE = 1 << 30


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



_DERIVE_DOMAIN = b"hf_lottery_verify/key/v3\x00"
SCRYPT_COST = {"n": 2**14, "r": 8, "p": 1}
"""Cost of stretching a key's secret (scrypt, 16 MiB of memory, ~0.04 s on a CPU core). Every
derived choice goes through it, so a claimant grinding secrets pays at least that per try —
also where a try would otherwise be nearly free (labels for fixed, loaded trigger images)."""


@functools.lru_cache(maxsize=64)
def _stretched(secret: str) -> bytes:
    return hashlib.scrypt(bytes.fromhex(secret), salt=_DERIVE_DOMAIN, dklen=32, maxmem=64 << 20, **SCRYPT_COST)


def _hex(value: Any, *, nbytes: int, what: str) -> str:
    if not isinstance(value, str) or len(value) != 2 * nbytes or any(c not in "0123456789abcdef" for c in value):
        raise KeyFileError(f"The key's {what} must be {2 * nbytes} lowercase hex digits; the key was edited or damaged: "
                           "restore it from its backup.")
    return value


@dataclass
class OwnershipKey:
    """Everything needed to verify ownership later; keep it private.

    Attributes:
        arch: timm architecture of the ticket the key belongs to.
        sections: Per-scheme JSON-safe dicts (``keymask``, ``signature``, ``triggers``, ``reference``).
        tensors: Tensors by name, each prefixed with its section (``keymask.values.<param>``).
        secret: 64 hex digits; every keyed choice of every scheme is derived from it.
        nonce: Random hex salt of the commitment.
        anchors: Where the commitment was published, with dates (see :class:`Anchor`).
        created: When the key was made, by the owner's clock (informative; never evidence).
        format_version: Key file layout version.
    """

    arch: str
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    secret: str = field(default_factory=lambda: secrets.token_hex(32))
    nonce: str = field(default_factory=lambda: secrets.token_hex(16))
    anchors: list[Anchor] = field(default_factory=list)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    format_version: int = KEY_FORMAT_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.arch, str) or not ARCH_RE.match(self.arch):
            raise KeyFileError(f"Invalid architecture name {str(self.arch)[:80]!r} in the key: use a timm name such as "
                               "'resnet18' or 'cifar_resnet20_a'.")
        self.arch = self.arch.partition(".")[0]  # a pretrained tag names weights, not an architecture
        _hex(self.secret, nbytes=32, what="secret")
        _hex(self.nonce, nbytes=16, what="nonce")

    # ------------------------------------------------------------------ secrets and sections

    def derive(self, label: str) -> bytes:
        """32 bytes derived from the key's secret for one purpose: ``HMAC-SHA256(scrypt(secret), domain ‖ label)``.

        The secret is stretched with scrypt first (:data:`SCRYPT_COST`), so each secret a
        forger tries costs memory and time, whatever it is tried for.

        Args:
            label (`str`): What the bytes are for (``"signature"``, ``"triggers/labels"``, ...).

        Returns:
            32 bytes; the same secret and label give the same bytes everywhere.
        """
        return hmac.new(_stretched(self.secret), _DERIVE_DOMAIN + label.encode(), hashlib.sha256).digest()

    def section(self, name: str) -> dict[str, Any]:
        """A scheme's section.

        Raises:
            KeyMismatchError: The key has no such section (it was made for another scheme).
        """
        if name not in self.sections:
            raise KeyMismatchError(
                f"This ownership key has no '{name}' section (it holds: {sorted(self.sections) or 'nothing'}). "
                "Use the key produced by the matching step (split-key for V1, sign for V2, triggers for V3, "
                "publishing for the reference).")
        return self.sections[name]

    def signature(self) -> SignatureSection:
        """The typed ``signature`` section.

        Raises:
            KeyMismatchError: The key has no signature.
        """
        return SignatureSection.from_dict(self.section(SIGNATURE_SECTION))

    def triggers(self) -> TriggerSection:
        """The typed ``triggers`` section.

        Raises:
            KeyMismatchError: The key has no trigger set.
        """
        return TriggerSection.from_dict(self.section(TRIGGERS_SECTION))

    def section_tensors(self, name: str) -> dict[str, torch.Tensor]:
        """Tensors of one section, with the ``<section>.`` prefix removed."""
        prefix = f"{name}."
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def with_section(self, name: str, data: Mapping[str, Any], tensors: Mapping[str, torch.Tensor] | None = None
                     ) -> OwnershipKey:
        """A copy of the key with one more section (the key itself is left as it is).

        Args:
            name (`str`): ``keymask``, ``signature``, ``triggers`` or ``reference``.
            data (`Mapping[str, Any]`): JSON-serialisable section.
            tensors (`Mapping[str, torch.Tensor]`, *optional*): Its tensors (without the section prefix).

        Returns:
            The new key.

        Raises:
            KeyMismatchError: Unknown section name, or the key already holds it (evidence is
                never replaced: make a new key instead).
        """
        if name not in SECTIONS:
            raise KeyMismatchError(f"Unknown key section '{name}'; use one of {SECTIONS}.")
        if name in self.sections:
            raise KeyMismatchError(f"This key already holds a '{name}' section; a key's material is never replaced "
                                   "(it proves ownership of what was made with it). Start a new OwnershipKey.")
        json.dumps(data)  # fail early on non-serialisable content
        if name in _TYPED_SECTIONS:
            _TYPED_SECTIONS[name].from_dict(data)
        extra = {f"{name}.{k}": v.detach().cpu().contiguous() for k, v in (tensors or {}).items()}
        return dataclasses.replace(self, sections={**self.sections, name: dict(data)}, tensors={**self.tensors, **extra},
                             anchors=list(self.anchors))

    def with_anchor(self, anchor: Anchor) -> OwnershipKey:
        """A copy of the key that records one more anchor of its commitment.

        Raises:
            KeyMismatchError: The anchor publishes another commitment.
        """
        if anchor.commitment != self.commitment():
            raise KeyMismatchError("This anchor publishes another commitment than the key's; anchor the key after "
                                   "its last section is added (publishing records the reference first).")
        return dataclasses.replace(self, sections=dict(self.sections), tensors=dict(self.tensors),
                             anchors=[*self.anchors, anchor])

    # ------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike, *, extend: bool = False) -> Path:
        """Write the key atomically (JSON, plus the tensor file when there are tensors).

        The tensor file is written under a new content-addressed name first, then the JSON
        is replaced in one rename, then the previous tensor file is removed: a crash at
        any point leaves a complete, readable key (the old one or the new one).

        Args:
            path (`str` or `os.PathLike`): The JSON file to write; parent folders are created.
            extend (`bool`, *optional*, defaults to `False`): Allow replacing an existing key
                file by this key when this key *extends* it — same secret, nonce and
                architecture, every section and anchor of the file still there unchanged,
                only new ones added. A key file never loses or changes material.

        Returns:
            The JSON path.

        Raises:
            KeyFileError: ``path`` exists and ``extend`` is ``False``, or this key does not
                extend the key stored there.
        """
        path = Path(path)
        old_tensor_file = None
        if path.exists():
            if not extend:
                raise KeyFileError(
                    f"{path} already exists; refusing to overwrite an ownership key (it is the only proof of ownership "
                    "of the models made with it). Choose another path, or load it and extend it.")
            old = OwnershipKey.load(path)
            self._check_extends(old, path)
            old_tensor_file = (json.loads(path.read_text()).get("tensors") or {}).get("file")
        manifest: dict[str, Any] = {
            "hf_lottery_verify_key": self.format_version, "arch": self.arch, "created": self.created,
            "secret": self.secret, "nonce": self.nonce, "sections": self.sections,
            "anchors": [a.to_dict() for a in self.anchors],
        }
        tname = None
        if self.tensors:
            digest = tensor_digest(self.tensors)
            tname = f"{path.name}.tensors.{digest[:16]}.safetensors"
            tpath = path.with_name(tname)
            with atomic_path(tpath, mode=0o600) as tmp:
                save_file(dict(self.tensors), str(tmp), metadata={"format": "pt"})
            manifest["tensors"] = {"file": tname, "sha256": file_sha256(tpath)}
        write_text_atomic(path, json.dumps(manifest, indent=2, sort_keys=True), mode=0o600)
        if old_tensor_file and old_tensor_file != tname and "/" not in old_tensor_file:
            path.with_name(old_tensor_file).unlink(missing_ok=True)
        return path

    def _check_extends(self, old: OwnershipKey, path: Path) -> None:
        same = (old.secret, old.nonce, old.arch) == (self.secret, self.nonce, self.arch)
        changed = [n for n in old.sections if self.sections.get(n) != old.sections[n]]
        changed += [n for n, t in old.tensors.items() if n not in self.tensors or not torch.equal(self.tensors[n], t)]
        lost = [a for a in old.anchors if a not in self.anchors]
        if not same or changed or lost:
            what = "another key" if not same else f"changed material ({', '.join(changed[:3]) or 'anchors'})"
            raise KeyFileError(f"Refusing to write {path}: the key there would be replaced by {what}. A key file only "
                               "gains sections and anchors; write the new key to another path.")

    @classmethod
    def load(cls, path: str | os.PathLike) -> OwnershipKey:
        """Read and validate a key written by :meth:`save`.

        Args:
            path (`str` or `os.PathLike`): The JSON file.

        Returns:
            [`OwnershipKey`]: The key, its tensors loaded from the tensor file the JSON names.

        Raises:
            KeyFileNotFoundError: The JSON file, or the tensor file it names, does not exist
                (also a ``FileNotFoundError``).
            KeyFileError: Not a regular file, too large or too deeply nested, invalid JSON, a
                missing, unknown or older format version, a field of the wrong type or out of
                range, an unknown section, a tensors entry naming a file outside the key's
                folder, or an altered tensor file. Every message says what to do.
        """
        path = Path(path)
        if path.is_dir():
            raise KeyFileError(f"{path} is a folder; pass the ownership key's JSON file, not the folder holding it.",
                               path=str(path))
        if not path.is_file():
            raise KeyFileNotFoundError(
                f"No ownership key at {path}. Pass the JSON key file written when the model was signed (--key-out on "
                "the command line): keys are never published with a model, so only its owner has it.", path=str(path))
        try:  # the library's one reader of untrusted JSON: bounded size, nesting too deep is an error
            manifest = read_json(path)
        except CheckpointError as exc:
            raise KeyFileError(f"{path} is not an ownership key ({str(exc)[:200]}); pass the JSON file written by sign, "
                               "or restore it from your backup.", path=str(path)) from exc
        if not isinstance(manifest, dict) or "hf_lottery_verify_key" not in manifest:
            raise KeyFileError(f"{path} is not an hf_lottery_verify ownership key (it has no 'hf_lottery_verify_key' "
                               "format version).", path=str(path))
        version = manifest["hf_lottery_verify_key"]
        if type(version) is int and version in (1, 2):
            raise KeyFileError(
                f"{path} is a key of format {version} (hf_lottery_verify 0.2). This version reads format "
                f"{KEY_FORMAT_VERSION} only: older keys stored signature slots and trigger labels that a claimant can "
                "choose after seeing a model, so they cannot prove ownership. Sign and publish again.", path=str(path))
        if type(version) is not int or version != KEY_FORMAT_VERSION:
            raise KeyFileError(f"{path} has key format {str(version)[:20]!r} ({type(version).__name__}); this version "
                               f"of hf_lottery_verify reads format {KEY_FORMAT_VERSION} (an integer). Upgrade it, or "
                               "restore the key from your backup.", path=str(path))
        try:
            return cls._from_manifest(manifest, path)
        except KeyFileError as exc:
            exc.path = exc.path or str(path)
            raise

    @classmethod
    def _from_manifest(cls, manifest: dict[str, Any], path: Path) -> OwnershipKey:
        sections, anchors = manifest.get("sections", {}), manifest.get("anchors", [])
        if not isinstance(sections, dict) or not isinstance(anchors, list):
            raise KeyFileError(f"{path}: 'sections' must be an object and 'anchors' a list.")
        unknown = [str(n)[:40] for n in sections if n not in SECTIONS]
        if unknown or not all(isinstance(v, dict) for v in sections.values()):
            raise KeyFileError(f"{path} has unknown or malformed sections ({', '.join(unknown) or 'not objects'}); "
                               "restore the key from its backup.")
        for name, typed in _TYPED_SECTIONS.items():
            if name in sections:
                typed.from_dict(sections[name])
        key = cls(arch=manifest.get("arch"), sections=sections, secret=manifest.get("secret"),
                  nonce=manifest.get("nonce"), anchors=[Anchor.from_dict(a) for a in anchors],
                  created=str(manifest.get("created", ""))[:64])
        key.tensors = _load_tensor_file(manifest.get("tensors"), path)
        return key

    # ------------------------------------------------------------------ public claim

    def commitment(self) -> str:
        """A hash commitment to everything a verification reads from the key: ``sha256:<hex>``.

        It covers the nonce, the secret, the architecture and the committed sections
        (signature, triggers, reference) with their tensors, so publishing it reveals
        nothing, and nobody can later write a different key — one fitted to someone else's
        model — with the same commitment. Adding a key-mask section does not change it.

        Returns:
            ``"sha256:"`` followed by 64 hex digits.
        """
        body = {"nonce": self.nonce, "secret": self.secret, "arch": self.arch,
                "sections": {s: self.sections[s] for s in COMMITTED_SECTIONS if s in self.sections}}
        h = hashlib.sha256(b"hf_lottery_verify/key-commitment/v3\n")
        h.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
        h.update(tensor_digest({k: v for k, v in self.tensors.items()
                                if k.split(".", 1)[0] in COMMITTED_SECTIONS}).encode())
        return "sha256:" + h.hexdigest()

    def schemes(self) -> list[str]:
        """The paper's schemes this key holds material for (``V1``, ``V2``, ``V3``)."""
        return sorted(_SCHEME_OF[s] for s in self.sections if s in _SCHEME_OF)

    def public_claim(self, *, owner: str | None = None, repo_id: str | None = None) -> dict[str, Any]:
        """The claim a published model carries (header metadata, ``ownership_claim.json``, model card).

        Args:
            owner (`str`, *optional*): A public name for the owner.
            repo_id (`str`, *optional*): The Hub repo it is published in: a verifier that
                finds a copy elsewhere looks there for the first appearance of its weights.

        Returns:
            ``claim_version``, ``owner``, ``repo_id``, ``schemes``, ``key_commitment`` and
            ``library``; nothing that locates or reveals the signature, and no date (the
            Hub commit that publishes the claim dates it).
        """
        return {"claim_version": 2, "owner": owner, "repo_id": repo_id, "schemes": self.schemes(),
                "key_commitment": self.commitment(), "library": f"hf_lottery_verify {__version__}"}


def _load_tensor_file(info: Any, path: Path) -> dict[str, torch.Tensor]:
    if not info:
        return {}
    name = info.get("file") if isinstance(info, dict) else None
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise KeyFileError(f"{path} names an invalid tensor file {str(name)[:60]!r} (it must be a file name beside the "
                           "key); the key was edited or damaged: restore it from your backup.")
    tpath = path.with_name(name)
    if not tpath.is_file():
        raise KeyFileNotFoundError(f"The key's tensor file {tpath} is missing; keep it next to {path.name} (copy both "
                                   "files together), or restore it from your backup of the key.", path=str(tpath))
    if tpath.stat().st_size > _MAX_TENSOR_FILE or file_sha256(tpath) != info.get("sha256"):
        raise KeyFileError(f"The key's tensor file {tpath} was altered or damaged (checksum mismatch): restore both "
                           f"{path.name} and {tpath.name} from your backup of the key.", path=str(tpath))
    try:
        return load_file(str(tpath))
    except (SafetensorError, OSError) as exc:
        raise KeyFileError(f"Cannot read {tpath}: {exc}. Restore the key's files from your backup.",
                           path=str(tpath)) from exc


KeyLike = OwnershipKey | str | os.PathLike
"""How every public function takes a key (keyword-only ``key=``): the key itself or the path of its file."""


def as_key(key: KeyLike) -> OwnershipKey:
    """The key itself, or the key file at ``key`` read with :meth:`OwnershipKey.load`.

    Raises:
        KeyFileError: The file cannot be read (see :meth:`OwnershipKey.load`).
    """
    return key if isinstance(key, OwnershipKey) else OwnershipKey.load(key)
