"""The typed parts of an :class:`~hf_lottery_verify.OwnershipKey`: what each scheme may record, validated.

A key file is private, but the verifier must still treat it as hostile input: a claimant
may write any key after seeing someone else's model. So every field a key may hold is
declared here with its type and range, and a key is refused on load when a field is
missing, of the wrong type, out of range or unknown — before anything is allocated from it
(a trigger image side of 10^5, say). Just as important is what a key may *not* hold: the
verifier recomputes from the key's secret and the architecture everything that a claimant
could otherwise fit to a model (the signature's QR symbol, stages, slots and whitening;
procedural trigger images and every trigger label), so those are not fields at all.

* :class:`SignatureSection` — Scheme V2: the text and the signer's few layout choices.
* :class:`TriggerSection` — Scheme V3: the size of the trigger set (images regenerated from
  the secret, or loaded images covered by the key's commitment; labels always derived).
* :class:`Anchor` — where and when the key's commitment was published (a Hub commit).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from .atomic import json_safe
from .errors import KeyFileError

__all__ = ["SignatureSection", "TriggerSection", "Anchor", "parse_date", "ARCH_RE"]

ARCH_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}(\.[A-Za-z0-9_]{1,64})?$")
"""A timm architecture name (``resnet18``, ``cifar_resnet20_a``, ``resnet50.a1_in1k``): no paths, no spaces."""


def parse_date(value: Any, *, what: str) -> _dt.datetime:
    """An ISO 8601 date with a time zone, as the Hub writes them (``2026-12-07T20:01:26.123Z``).

    Raises:
        KeyFileError: Not a string or not such a date.
    """
    try:
        date = _dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise KeyFileError(f"{what} {value!r} is not an ISO date.") from exc
    if not isinstance(value, str) or date.tzinfo is None:
        raise KeyFileError(f"{what} {value!r} is not an ISO date with a time zone.")
    return date


def _typed(cls: type, data: Any, *, what: str) -> Any:
    """Build the dataclass ``cls`` from a JSON object, checking names and types (ranges: ``__post_init__``)."""
    if not isinstance(data, Mapping):
        raise KeyFileError(f"The key's {what} is a {type(data).__name__}, not an object; restore the key from its "
                           "backup.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise KeyFileError(f"The key's {what} has fields this version does not know ({', '.join(unknown[:5])}); it "
                           "was edited or written by a newer version: upgrade hf_lottery_verify or restore the key.")
    values = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise KeyFileError(f"The key's {what} lacks its '{name}' field; restore the key from its backup.")
            continue
        value, kind = data[name], f.type if isinstance(f.type, type) else _KINDS.get(str(f.type))
        if kind is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            raise KeyFileError(f"The key's {what} field '{name}' is a {type(value).__name__}, not {f.type}; restore "
                               "the key from its backup.")
        values[name] = tuple(value) if isinstance(value, list) else value
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise KeyFileError(f"The key's {what} is invalid: {exc}. Restore the key from its backup.") from exc


_KINDS: dict[str, Any] = {"str": str, "int": int, "float": (int, float), "bool": bool, "tuple[int, ...]": (list, tuple),
                          "dict[str, int]": dict, "str | None": (str, type(None))}


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


class _Record:
    """What every key record shares: JSON-safe fields out, validated fields in."""

    _what: ClassVar[str] = "record"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields."""
        return json_safe(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Any) -> Self:
        """Read and validate.

        Raises:
            KeyFileError: A field is missing, unknown, of the wrong type or out of range.
        """
        return _typed(cls, data, what=cls._what)


@dataclass(frozen=True)
class SignatureSection(_Record):
    """Scheme V2 as the key records it: the text and the signer's choices, nothing the verifier could be fitted with.

    The QR symbol (version and mask pattern included), the stage of every copy, the slots and
    the whitening are recomputed at verification from the secret, the text, these choices
    and the architecture; a key cannot name them.

    Attributes:
        text: The signature text.
        ecc: QR error-correction level (``L``, ``M``, ``Q``, ``H``).
        coding: The signer's coding option (``auto``, ``pairs``, ``single``): how stages were planned.
        widths: Kernels per data module of each copy (1 single, 2 a complementary pair); its
            length is the number of copies.
        layers: ``spatial`` (the stages' k×k convs, k > 1) or ``all`` (1×1 convs too).
        module_weights: Kept weights of a kernel that encodes a 1 (read by the decoder's fullness votes).
        seed: Seed of the non-secret write choices (which positions of a kernel were switched on).
        signed_mask_digest: Digest of the signed mask (retraining checks it; never evidence).
        moved_share: Share of the ticket's kept weights the signature moved (informative).
        changes: What the embedding changed, counted (informative).
        layer_kept: Kept weights per layer of the signed ticket (informative: calibration's null
            models match it; verification reads kept counts from the committed reference).
        layout_version: Layout version (3).
    """

    _what: ClassVar[str] = "signature section"

    text: str
    widths: tuple[int, ...]
    ecc: str = "H"
    coding: str = "auto"
    layers: str = "spatial"
    module_weights: int = 2
    seed: int = 0
    signed_mask_digest: str = ""
    moved_share: float = 0.0
    changes: dict[str, int] = field(default_factory=dict)
    layer_kept: dict[str, int] = field(default_factory=dict)
    layout_version: int = 3

    def __post_init__(self) -> None:
        _check(0 < len(self.text.encode()) <= 2953, "the text must hold 1 to 2953 bytes")
        _check(self.ecc in ("L", "M", "Q", "H"), f"unknown ecc {self.ecc!r}")
        _check(self.coding in ("auto", "pairs", "single"), f"unknown coding {self.coding!r}")
        _check(1 <= len(self.widths) <= 3 and all(w in (1, 2) for w in self.widths),
               "widths must list 1 to 3 copies of width 1 or 2")
        _check(self.coding == "auto" or set(self.widths) == {2 if self.coding == "pairs" else 1},
               f"widths {list(self.widths)} contradict coding {self.coding!r}")
        _check(self.layers in ("spatial", "all"), f"unknown layers {self.layers!r}")
        _check(1 <= self.module_weights <= 9, "module_weights must lie in 1..9")
        _check(self.layout_version == 3, f"layout version {self.layout_version} is not read by this version")

    @property
    def copies(self) -> int:
        """Copies of the symbol."""
        return len(self.widths)



MAX_TRIGGER_SIDE = 512
MAX_TRIGGERS = 10_000


@dataclass(frozen=True)
class TriggerSection(_Record):
    """Scheme V3 as the key records it: how many trigger images, of which size — never their labels.

    Labels are always derived from the key's secret (a claimant cannot label images with a
    model's own predictions); procedural images are regenerated from it too, and loaded
    images (``source="images"``, e.g. Adi et al.'s set) are kept in the key's tensors, which
    its commitment covers.

    Attributes:
        n: Trigger images.
        num_classes: Classes the labels are drawn from.
        image_size: Side of the square images, in pixels.
        channels: 1 or 3.
        source: ``procedural`` or ``images``.
        images_digest: SHA-256 of loaded images (``images`` only).
        per_batch: Trigger images per 128 training images during retraining.
        format: Section format (2).
    """

    _what: ClassVar[str] = "triggers section"

    n: int
    num_classes: int
    image_size: int
    channels: int
    source: str = "procedural"
    images_digest: str | None = None
    per_batch: int = 1
    format: int = 2

    def __post_init__(self) -> None:
        _check(1 <= self.n <= MAX_TRIGGERS, f"n must lie in 1..{MAX_TRIGGERS}")
        _check(2 <= self.num_classes <= 100_000, "num_classes must lie in 2..100000")
        _check(8 <= self.image_size <= MAX_TRIGGER_SIDE, f"image_size must lie in 8..{MAX_TRIGGER_SIDE}")
        _check(self.channels in (1, 3), "channels must be 1 or 3")
        _check(self.source in ("procedural", "images"), f"unknown source {self.source!r}")
        _check((self.source == "images") == (self.images_digest is not None),
               "loaded images need images_digest, procedural ones none")
        _check(1 <= self.per_batch <= 128, "per_batch must lie in 1..128")
        _check(self.format == 2, f"trigger format {self.format} is not read by this version")



_SHA_RE = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class Anchor(_Record):
    """A public, dated record of the key's commitment: a Hub commit the claimant cannot backdate.

    The verifier does not trust these fields: it reads the commit back from the Hub, checks
    that it carries :attr:`commitment`, and takes the dates from the server.

    Attributes:
        repo_id: The Hub repo holding the commit.
        commit: The commit's sha.
        date: The commit's date, as the server reported it when anchoring (informative).
        repo_created: The repo's creation date, as the server reported it (informative).
        endpoint: The Hub's URL.
        commitment: The key commitment the commit publishes.
        kind: ``model`` (the commit that published the model) or ``record`` (a claim file only).
    """

    _what: ClassVar[str] = "anchor"

    repo_id: str
    commit: str
    date: str
    repo_created: str
    endpoint: str
    commitment: str
    kind: str = "model"

    def __post_init__(self) -> None:
        _check(bool(re.fullmatch(r"[\w.-]{1,96}/[\w.-]{1,96}", self.repo_id)), f"bad repo id {self.repo_id!r}")
        _check(bool(_SHA_RE.match(self.commit)), f"bad commit sha {self.commit!r}")
        _check(self.endpoint.startswith(("http://", "https://")) and len(self.endpoint) < 300, "bad endpoint")
        _check(bool(re.fullmatch(r"sha256:[0-9a-f]{64}", self.commitment)), "bad commitment")
        _check(self.kind in ("model", "record"), f"unknown anchor kind {self.kind!r}")
        parse_date(self.date, what="anchor date")
        parse_date(self.repo_created, what="anchor repo creation date")

    @property
    def time(self) -> _dt.datetime:
        """The anchor's time: the commit's date, never earlier than the repo's creation."""
        return max(parse_date(self.date, what="anchor date"), parse_date(self.repo_created, what="repo date"))

