"""Model cards and ownership badges for the tickets this library pushes to the Hub.

A pushed repo holds ``config.json``, ``model.safetensors``, ``masks.safetensors``, the model
card ``README.md`` and an ownership badge (``ownership_badge.svg``) committed beside it, so the
card renders offline and without a badge service. This module renders both:

* :func:`render_model_card` builds a :class:`huggingface_hub.ModelCard` from the Jinja2 template
  ``model_cards/sparse_ticket.md.j2``: Hub metadata (library, tags, datasets, license, pipeline
  tag, a model-index with accuracy and density), what the model is, the badge, the public claim,
  how to verify and load it, its limitations and the paper's citation;
* :func:`render_badge` renders a self-contained, shields.io-like flat SVG badge from
  ``model_cards/ownership_badge.svg.j2``;
* :func:`save_card_files` writes both files atomically;
* :func:`sanitize_claim` reduces a public claim to JSON-safe fields and drops anything that
  would help locate the signature.

Templates live in the repository's top-level ``model_cards/`` folder. A built wheel ships them
inside the package as ``hf_lottery_verify/model_cards/`` (``package-dir`` mapping in
``pyproject.toml``); a source checkout or editable install reads them from ``model_cards/`` next
to the package. See :func:`_read_asset`.

Example:
    >>> from hf_lottery_verify.cards import render_badge, render_model_card
    >>> card = render_model_card(repo_id="alice/r20-ticket", arch="cifar_resnet20", num_labels=10, density=0.19369)
    >>> card.data.library_name
    'hf_lottery_verify'
    >>> render_badge(status="protected").startswith("<svg")
    True
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import logging
import math
import os
import re
import tempfile
import types
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .errors import HfLotteryError, UnknownNameError

__all__ = [
    "BADGE_FILENAME",
    "BADGE_STATUSES",
    "BADGE_TEMPLATE_NAME",
    "CARD_FILENAME",
    "CARD_TAGS",
    "CARD_TEMPLATE_NAME",
    "BadgeStyle",
    "CardError",
    "CardTemplateNotFoundError",
    "library_name_for",
    "list_badge_statuses",
    "render_badge",
    "render_model_card",
    "sanitize_claim",
    "save_card_files",
]

logger = logging.getLogger(__name__)

CARD_FILENAME = "README.md"
BADGE_FILENAME = "ownership_badge.svg"
CARD_TEMPLATE_NAME = "sparse_ticket.md.j2"
BADGE_TEMPLATE_NAME = "ownership_badge.svg.j2"
ASSETS_DIRNAME = "model_cards"

# Tags every card carries; "ownership-protected" is added when a claim is published.
CARD_TAGS: tuple[str, ...] = ("image-classification", "timm", "lottery-ticket", "sparse")
CLAIM_TAG = "ownership-protected"
# Metadata keys written by render_model_card besides the Hub's own fields.
CLAIM_METADATA_KEY = "ownership_claim"
TICKET_METADATA_KEY = "lottery_ticket"

# Architectures whose names start with this prefix are this library's CIFAR ResNets
# (hf_lottery_verify.architectures): timm knows them only after `import hf_lottery_verify`.
CIFAR_ARCH_PREFIX = "cifar_resnet"

TASK_TYPE = "image-classification"
TASK_NAME = "Image Classification"
# model-index needs a dataset for every result; density does not depend on one.
UNKNOWN_DATASET_TYPE = "custom"
UNKNOWN_DATASET_NAME = "unspecified dataset"
ACCURACY_METRIC = "accuracy"
DENSITY_METRIC = "density"
METRIC_DECIMALS = 6

# Public-claim fields rendered by name, with their labels on the card, in this order.
KNOWN_CLAIM_FIELDS: dict[str, str] = {
    "owner": "Owner",
    "created": "Created",
    "schemes": "Schemes",
    "key_commitment": "Key commitment",
    "claim_version": "Claim format",
    "library": "Published with",
}
SCHEME_NAMES: dict[str, str] = {
    "V1": "V1 (key mask)",
    "V2": "V2 (signature in the mask)",
    "V3": "V3 (trigger set)",
}

# Claim keys that could locate or reveal the signature. A key is dropped when one of its
# words (split on case changes and non-alphanumerics) is in _LOCATOR_WORDS or when it
# contains one of _LOCATOR_SUBSTRINGS. Known fields are never dropped.
_LOCATOR_WORDS = frozenset(
    {
        "qr", "row", "rows", "col", "cols", "column", "columns", "x", "y", "i", "j",
        "idx", "index", "indices", "pos", "loc", "version", "level", "ecc", "polarity",
        "key", "keys", "bit", "bits", "path", "file",
    }
)  # fmt: skip
_LOCATOR_SUBSTRINGS = (
    "region", "layer", "offset", "locat", "position", "coord", "param", "secret", "private",
    "signature", "trigger", "whiten", "seed", "mask", "module", "tensor", "kernel", "channel",
    "permut", "pattern", "error_level", "stream",
)  # fmt: skip
# A string value naming a ResNet parameter or module (``layer1.0.conv1.weight``, ``conv1``).
_PARAM_NAME_RE = re.compile(r"(?:^|[^\w])(?:layer\d+|conv\d*|bn\d+|fc|downsample|stem)(?:\.[\w.]+|$)", re.IGNORECASE)
_WORD_RE = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_ARCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
# Characters XML 1.0 forbids, even as character references.
_XML_INVALID_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
# Inline Markdown specials: user text never starts a line (it follows a label or "| "), so
# block markers (#, >, +, -) need no escaping; < > & become HTML entities first.
_MD_SPECIALS_RE = re.compile(r"([\\`*_\[\]|~])")

MAX_FIELD_CHARS = 200
MAX_BADGE_TEXT_CHARS = 48


# --------------------------------------------------------------------------- errors


class CardError(HfLotteryError, ValueError):
    """A model card or badge cannot be rendered from the values given.

    Args:
        message: What is wrong and how to fix it.
        field: The argument or metadata field at fault, when there is one.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class CardTemplateNotFoundError(HfLotteryError, FileNotFoundError):
    """A template of ``model_cards/`` is missing from the installation.

    Args:
        name: The template's file name.
        searched: The locations that were tried.
    """

    def __init__(self, name: str, *, searched: Iterable[str]) -> None:
        self.name = name
        self.searched = list(searched)
        super().__init__(
            f"Model-card template '{name}' not found (looked in: {', '.join(self.searched)}). The installation "
            "is incomplete: reinstall hf_lottery_verify, or check that pyproject.toml maps model_cards/ to "
            "hf_lottery_verify/model_cards with package-data '*.j2'."
        )

    def __str__(self) -> str:
        return str(self.args[0])


# --------------------------------------------------------------------------- assets


def _read_asset(name: str) -> str:
    """Read a template of ``model_cards/``, wherever this installation keeps it.

    Looks in the installed package first (``hf_lottery_verify/model_cards/``, where a wheel puts
    it), then in the repository's top-level ``model_cards/`` beside the package (source checkout
    and editable install).

    Args:
        name (`str`):
            File name inside ``model_cards/``.

    Returns:
        `str`: The file's text.

    Raises:
        CardTemplateNotFoundError: The file is in neither place.
    """
    searched: list[str] = []
    try:
        packaged = resources.files(__package__).joinpath(ASSETS_DIRNAME, name)
        searched.append(str(packaged))
        if packaged.is_file():
            return packaged.read_text(encoding="utf-8")
    except (ModuleNotFoundError, OSError):  # pragma: no cover - exotic loaders
        pass
    checkout = Path(__file__).resolve().parent.parent / ASSETS_DIRNAME / name
    searched.append(str(checkout))
    if checkout.is_file():
        return checkout.read_text(encoding="utf-8")
    raise CardTemplateNotFoundError(name, searched=searched)


# --------------------------------------------------------------------------- escaping


def _clean(text: Any, *, max_chars: int | None = MAX_FIELD_CHARS) -> str:
    """``str(text)`` on one line, without characters XML forbids, shortened with an ellipsis."""
    text = _XML_INVALID_RE.sub("", str(text))
    text = " ".join(text.split())
    if max_chars is not None and len(text) > max_chars:
        text = text[: max_chars - 1].rstrip() + "…"
    return text


def _md(text: Any, *, max_chars: int | None = MAX_FIELD_CHARS) -> str:
    """Escape user text for a Markdown paragraph or table cell (HTML entities, backslashes)."""
    return _MD_SPECIALS_RE.sub(r"\\\1", html.escape(_clean(text, max_chars=max_chars), quote=False))


def _md_code(text: Any, *, max_chars: int | None = MAX_FIELD_CHARS) -> str:
    """User text as inline code that no backtick or pipe in it can break."""
    escaped = html.escape(_clean(text, max_chars=max_chars), quote=True).replace("|", "&#124;")
    return f"<code>{escaped}</code>"


def _percent(fraction: float) -> str:
    """``0.01236`` -> ``'1.236%'``, ``0.02`` -> ``'2%'``."""
    percent = fraction * 100
    text = f"{percent:.3f}".rstrip("0").rstrip(".")
    if text == "0" and percent > 0:  # extreme tickets: 0.00012% rather than 0%
        text = f"{percent:.2g}"
    return f"{text}%"


# --------------------------------------------------------------------------- claims


def _claim_to_dict(claim: Any) -> dict[str, Any]:
    if isinstance(claim, Mapping):
        return dict(claim)
    if dataclasses.is_dataclass(claim) and not isinstance(claim, type):
        return dataclasses.asdict(claim)
    to_dict = getattr(claim, "to_dict", None)
    if callable(to_dict):
        result = to_dict()
        if isinstance(result, Mapping):
            return dict(result)
    raise CardError(
        f"claim must be a mapping (the public claim's JSON object), got {type(claim).__name__}.", field="claim"
    )


def _json_safe(value: Any) -> Any:
    """A JSON- and YAML-safe copy of ``value``; anything exotic becomes its ``str``."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if callable(getattr(value, "isoformat", None)):  # datetime, date
        return value.isoformat()
    return str(value)


def _is_locator_key(key: str) -> bool:
    lowered = key.lower()
    words = {w.lower() for w in _WORD_RE.findall(key)}
    return bool(words & _LOCATOR_WORDS) or any(s in lowered for s in _LOCATOR_SUBSTRINGS)


def _strip_locators(value: Any, *, path: str, dropped: list[str]) -> Any:
    """Drop locating keys and parameter-name strings from a JSON-safe value, recording paths."""
    if isinstance(value, dict):
        kept: dict[str, Any] = {}
        for k, v in value.items():
            sub = f"{path}.{k}"
            if _is_locator_key(k):
                dropped.append(sub)
                continue
            v = _strip_locators(v, path=sub, dropped=dropped)
            if v is not _DROP:
                kept[k] = v
        return kept
    if isinstance(value, list):
        items = [_strip_locators(v, path=f"{path}[{i}]", dropped=dropped) for i, v in enumerate(value)]
        return [v for v in items if v is not _DROP]
    if isinstance(value, str) and _PARAM_NAME_RE.search(value):
        dropped.append(path)
        return _DROP
    return value


_DROP = object()


def sanitize_claim(claim: Mapping[str, Any] | Any) -> dict[str, Any]:
    """Reduce a public ownership claim to what may be published.

    The claim says who claims the model, when, under which schemes, and commits to the private
    key with a hash. Nothing in it may help find the signature: keys that name a region, QR
    parameter, layer, offset, position, parameter, mask, seed, trigger, key file or secret
    (at any depth), and strings that name a ResNet parameter (``layer1.0.conv1.weight``), are
    dropped with a warning. The known fields (``owner``, ``created``, ``schemes``,
    ``key_commitment``, ``claim_version``, ``library``) are always kept; other keys are kept as
    opaque, JSON-safe values.

    Args:
        claim (`Mapping[str, Any]`):
            The public claim, e.g. ``{"claim_version": 1, "owner": "alice", "created":
            "2026-11-30T12:00:00+00:00", "schemes": ["V2", "V3"], "key_commitment":
            "sha256:<64 hex>", "library": "hf_lottery_verify 0.2.0"}``. A dataclass or an object
            with ``to_dict()`` is accepted too.

    Returns:
        `dict[str, Any]`: A new JSON-safe dict with string keys; known fields first.

    Raises:
        CardError: ``claim`` is not a mapping.

    Example:
        >>> sanitize_claim({"owner": "alice", "qr_version": 3, "layer": "layer1.0.conv1.weight"})
        {'owner': 'alice'}
    """
    raw = _json_safe(_claim_to_dict(claim))
    dropped: list[str] = []
    # Known fields stay, but a structured value is searched like any other (strings are the owner's words).
    known = {
        k: _strip_locators(raw[k], path=f"claim.{k}", dropped=dropped) if isinstance(raw[k], (dict, list)) else raw[k]
        for k in KNOWN_CLAIM_FIELDS
        if k in raw
    }
    others = _strip_locators(
        {k: v for k, v in raw.items() if k not in KNOWN_CLAIM_FIELDS}, path="claim", dropped=dropped
    )
    if dropped:
        logger.warning(
            "Dropped %d claim field(s) that could locate the signature: %s. A public claim holds who, when "
            "and the key commitment only.",
            len(dropped),
            ", ".join(dropped),
        )
    commitment = known.get("key_commitment")
    if commitment is not None and not re.fullmatch(r"sha256:[0-9a-f]{64}", str(commitment)):
        logger.warning("The claim's key_commitment is not of the form 'sha256:<64 hex digits>'; rendering it as is.")
    return {**known, **others}


def _claim_rows(claim: Mapping[str, Any]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Table rows (label, escaped value) for the known and the other fields of a sanitized claim."""
    rows: list[dict[str, str]] = []
    for key, label in KNOWN_CLAIM_FIELDS.items():
        if key not in claim:
            continue
        value = claim[key]
        if key == "owner" and value is None:
            shown = "not named (anonymous claim)"
        elif key == "key_commitment" and value is not None:
            shown = _md_code(value, max_chars=None)
        elif key == "schemes" and isinstance(value, list):
            shown = ", ".join(_md(SCHEME_NAMES.get(str(s), s)) for s in value) or "none listed"
        elif value is None:
            shown = "not given"
        else:
            shown = _md(value if isinstance(value, str) else json.dumps(value, sort_keys=True))
        rows.append({"label": label, "value": shown})
    extra = [
        {
            "label": _md_code(key, max_chars=60),
            "value": _md(value if isinstance(value, str) else json.dumps(value, sort_keys=True)),
        }
        for key, value in claim.items()
        if key not in KNOWN_CLAIM_FIELDS
    ]
    return rows, extra


# --------------------------------------------------------------------------- metadata


def library_name_for(arch: str) -> str:
    """The Hub ``library_name`` of a card for architecture ``arch``.

    The rule: timm's own architectures (``resnet18``, ``resnet50``, ...; a pretrained tag such as
    ``.a1_in1k`` is ignored) get ``"timm"``, because plain timm loads the repo and the Hub then
    offers timm's code snippet. This library's CIFAR variants (names starting with
    ``cifar_resnet``) get ``"hf_lottery_verify"``: timm knows them only after
    ``import hf_lottery_verify``.

    Args:
        arch (`str`):
            The timm architecture name.

    Returns:
        `str`: ``"timm"`` or ``"hf_lottery_verify"``.
    """
    base = arch.split(".", 1)[0].lower()
    return "hf_lottery_verify" if base.startswith(CIFAR_ARCH_PREFIX) else "timm"


def _unique(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


def _tags(extra_tags: Iterable[str] | str, *, field: str = "extra_tags") -> list[str]:
    if isinstance(extra_tags, str):
        extra_tags = [extra_tags]
    tags: list[str] = []
    for tag in extra_tags:
        if not isinstance(tag, str):
            raise CardError(f"{field} must hold strings, got {tag!r} ({type(tag).__name__}).", field=field)
        tag = tag.strip()
        if tag:
            tags.append(tag)
    return tags


def _check_repo_id(value: str, *, field: str) -> None:
    try:
        validate_repo_id(value)
    except HFValidationError as err:
        raise CardError(f"{field}={value!r} is not a valid Hub repo id: {err}", field=field) from err


def _check_fraction(value: Any, *, field: str, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CardError(f"{field} must be a finite number, got {value!r}.", field=field)
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value <= 1):
        hint = " Pass a fraction (0.935), not a percentage (93.5)." if value > 1 else ""
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise CardError(f"{field} must lie in {interval}, got {value!r}.{hint}", field=field)
    return float(value)


def _user_card_data(card_data: Mapping[str, Any] | ModelCardData | None, *, model_name: str) -> dict[str, Any]:
    """The non-empty fields of the user's ``card_data`` (``model-index`` parsed to ``eval_results``)."""
    if card_data is None:
        return {}
    if isinstance(card_data, Mapping):
        fields = dict(card_data)
        if fields.get("eval_results") and not fields.get("model_name"):
            fields["model_name"] = model_name  # ModelCardData insists on one; ours is the repo name
        try:
            card_data = ModelCardData(**fields)
        except (TypeError, ValueError) as err:
            raise CardError(f"card_data is not valid model-card metadata: {err}", field="card_data") from err
    elif not isinstance(card_data, ModelCardData):
        raise CardError(
            f"card_data must be a dict or a huggingface_hub.ModelCardData, got {type(card_data).__name__}.",
            field="card_data",
        )
    user = {k: v for k, v in vars(card_data).items() if v is not None}
    if CLAIM_METADATA_KEY in user:
        raise CardError(
            f"card_data must not set '{CLAIM_METADATA_KEY}': pass the claim as claim=..., which drops the fields "
            "that could locate the signature and renders the rest.",
            field="card_data",
        )
    return user


def _metric_identity(result: EvalResult) -> tuple[Any, ...]:
    return (*result.unique_identifier, result.metric_type)


def _merge_metadata(ours: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """User fields replace ours, except ``tags`` (union) and ``eval_results`` (replaced per metric)."""
    merged = dict(ours)
    for key, value in user.items():
        if key == "tags":
            merged["tags"] = _unique([*ours.get("tags", []), *_tags(value, field="card_data['tags']")])
        elif key == "eval_results":
            theirs = value if isinstance(value, list) else [value]
            replaced = {_metric_identity(r) for r in theirs}
            merged["eval_results"] = [r for r in ours.get("eval_results", []) if _metric_identity(r) not in replaced]
            merged["eval_results"] += theirs
        else:
            merged[key] = value
    return merged


# --------------------------------------------------------------------------- model card


def render_model_card(
    *,
    repo_id: str,
    arch: str,
    num_labels: int,
    density: float,
    accuracy: float | None = None,
    dataset: str | None = None,
    dataset_name: str | None = None,
    claim: Mapping[str, Any] | None = None,
    base_model: str | None = None,
    license: str = "apache-2.0",
    card_data: Mapping[str, Any] | ModelCardData | None = None,
    extra_tags: Iterable[str] = (),
    num_kept: int | None = None,
    num_prunable: int | None = None,
    badge_filename: str | None = BADGE_FILENAME,
) -> ModelCard:
    """Render the model card (``README.md``) of a sparse ticket pushed to the Hub.

    Metadata: ``library_name`` from :func:`library_name_for`; ``tags`` = :data:`CARD_TAGS`, plus
    ``"ownership-protected"`` when a claim is given, plus ``extra_tags``; ``datasets`` when
    ``dataset`` is known; ``license``; ``pipeline_tag: image-classification``; ``base_model``;
    a model-index holding ``accuracy`` (when known) and ``density`` (always) for the dataset
    (``"custom"`` / ``"unspecified dataset"`` when none is known); a ``lottery_ticket`` block
    (architecture, density, kept counts) and, with a claim, ``ownership_claim`` (the output of
    :func:`sanitize_claim`, so verifiers can read it without parsing the body).

    Args:
        repo_id (`str`):
            The Hub repo id the card is for (``"alice/r20-ticket"``).
        arch (`str`):
            The timm architecture name (``"resnet18"``, ``"cifar_resnet20"``).
        num_labels (`int`):
            Number of classes.
        density (`float`):
            Fraction of prunable weights kept, in ``(0, 1]`` (``0.01236`` for 1.236%).
        accuracy (`float`, *optional*, defaults to `None`):
            Top-1 test accuracy as a fraction in ``[0, 1]``; left out of the card when `None`.
        dataset (`str`, *optional*, defaults to `None`):
            Hub dataset id the ticket was trained and evaluated on (``"uoft-cs/cifar10"``).
        dataset_name (`str`, *optional*, defaults to `None`):
            Readable dataset name (``"CIFAR-10"``); defaults to ``dataset``. Give it alone for a
            dataset that is not on the Hub.
        claim (`Mapping[str, Any]`, *optional*, defaults to `None`):
            The public ownership claim; see :func:`sanitize_claim` for what is kept.
        base_model (`str`, *optional*, defaults to `None`):
            Hub id of the model the ticket was derived from.
        license (`str`, *optional*, defaults to `"apache-2.0"`):
            Hub license identifier.
        card_data (`dict` or `ModelCardData`, *optional*, defaults to `None`):
            Extra or overriding metadata. Fields replace the generated ones, except ``tags``,
            which are added to the generated tags, and ``eval_results`` (or ``model-index``),
            which replace generated results of the same task, dataset and metric and are
            otherwise appended. It may not set ``ownership_claim``: pass ``claim`` instead.
        extra_tags (`Iterable[str]`, *optional*, defaults to `()`):
            More tags.
        num_kept (`int`, *optional*, defaults to `None`):
            Number of prunable weights kept; shown as ``kept / total`` with ``num_prunable``.
        num_prunable (`int`, *optional*, defaults to `None`):
            Number of prunable weights in the dense network.
        badge_filename (`str`, *optional*, defaults to `"ownership_badge.svg"`):
            Path, relative to the repo root, of the committed badge shown on the card; `None`
            leaves the badge out. Write the file with :func:`render_badge` (status
            ``"protected"`` with a claim, ``"unverified"`` without) and :func:`save_card_files`.

    Returns:
        `huggingface_hub.ModelCard`: The card; ``str(card)`` is the ``README.md`` text.

    Raises:
        CardError: An argument is out of range or malformed (invalid repo id, architecture name,
            density or accuracy outside ``[0, 1]``, kept count above the total, bad ``card_data``).
        CardTemplateNotFoundError: The template is missing from the installation.

    Example:
        >>> card = render_model_card(
        ...     repo_id="alice/r18-ticket", arch="resnet18", num_labels=10, density=0.01236, accuracy=0.936,
        ...     dataset="uoft-cs/cifar10", dataset_name="CIFAR-10",
        ...     claim={"owner": "alice", "created": "2026-11-30T12:00:00+00:00", "key_commitment": "sha256:" + "0" * 64},
        ... )
        >>> card.data.library_name, "ownership-protected" in card.data.tags
        ('timm', True)
    """
    _check_repo_id(repo_id, field="repo_id")
    if not isinstance(arch, str) or not _ARCH_RE.match(arch):
        raise CardError(
            f"arch={arch!r} is not a timm architecture name (e.g. 'resnet18', 'cifar_resnet20').", field="arch"
        )
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
        raise CardError(f"num_labels must be a positive integer, got {num_labels!r}.", field="num_labels")
    density = _check_fraction(density, field="density", allow_zero=False)
    if accuracy is not None:
        accuracy = _check_fraction(accuracy, field="accuracy", allow_zero=True)
    if dataset is not None:
        _check_repo_id(dataset, field="dataset")
    if base_model is not None:
        _check_repo_id(base_model, field="base_model")
    kept_md = _kept_counts(num_kept, num_prunable, density=density)
    if badge_filename is not None:
        _check_filename(badge_filename, field="badge_filename")

    library_name = library_name_for(arch)
    public_claim = sanitize_claim(claim) if claim is not None else None
    model_name = repo_id.split("/")[-1]
    shown_dataset_name = dataset_name or dataset

    eval_common = {
        "task_type": TASK_TYPE,
        "task_name": TASK_NAME,
        "dataset_type": dataset or UNKNOWN_DATASET_TYPE,
        "dataset_name": shown_dataset_name or UNKNOWN_DATASET_NAME,
    }
    eval_results = []
    if accuracy is not None:
        eval_results.append(
            EvalResult(
                **eval_common,
                metric_type=ACCURACY_METRIC,
                metric_name="Top-1 accuracy",
                metric_value=round(accuracy, METRIC_DECIMALS),
            )
        )
    eval_results.append(
        EvalResult(
            **eval_common,
            metric_type=DENSITY_METRIC,
            metric_name="Density (fraction of prunable weights kept)",
            metric_value=round(density, METRIC_DECIMALS),
        )
    )
    ticket_meta: dict[str, Any] = {"arch": arch, "density": round(density, METRIC_DECIMALS)}
    if num_kept is not None and num_prunable is not None:
        ticket_meta.update(kept_weights=num_kept, prunable_weights=num_prunable)

    tags = [*CARD_TAGS, *([CLAIM_TAG] if public_claim is not None else []), *_tags(extra_tags)]
    ours: dict[str, Any] = {
        "library_name": library_name,
        "license": license,
        "pipeline_tag": TASK_TYPE,
        "tags": _unique(tags),
        "datasets": [dataset] if dataset is not None else None,
        "base_model": base_model,
        "metrics": [ACCURACY_METRIC, DENSITY_METRIC] if accuracy is not None else [DENSITY_METRIC],
        "model_name": model_name,
        "eval_results": eval_results,
        TICKET_METADATA_KEY: ticket_meta,
    }
    if public_claim is not None:
        ours[CLAIM_METADATA_KEY] = public_claim
    user = _user_card_data(card_data, model_name=model_name)
    merged = _merge_metadata({k: v for k, v in ours.items() if v is not None}, user)
    try:
        data = ModelCardData(**merged)
    except (TypeError, ValueError) as err:
        raise CardError(f"The merged card metadata is invalid: {err}", field="card_data") from err

    claim_rows, claim_extra_rows = _claim_rows(public_claim) if public_claim is not None else ([], [])
    if shown_dataset_name is None:
        dataset_md = None
    elif dataset is not None:
        dataset_md = f"[{_md(shown_dataset_name)}](https://huggingface.co/datasets/{dataset})"
    else:
        dataset_md = _md(shown_dataset_name)
    ticket = {
        "repo_id": repo_id,
        "title": _md(model_name),
        "arch": arch,
        "arch_origin": "timm" if library_name == "timm" else "hf_lottery_verify CIFAR variant, registered with timm",
        "library_name": library_name,
        "num_labels": num_labels,
        "density_pct": _percent(density),
        "sparsity_pct": _percent(1.0 - density),
        "kept_md": kept_md,
        "accuracy_pct": _percent(accuracy) if accuracy is not None else None,
        "dataset_md": dataset_md,
        "base_model_md": f"[{_md(base_model)}](https://huggingface.co/{base_model})" if base_model else None,
        "badge_file": badge_filename,
        "badge_markdown": _badge_markdown(badge_filename, has_claim=public_claim is not None),
        "has_claim": public_claim is not None,
        "claim_rows": claim_rows,
        "claim_extra_rows": claim_extra_rows,
    }
    card = ModelCard.from_template(data, template_str=_read_asset(CARD_TEMPLATE_NAME), ticket=ticket)
    card.text = card.text.rstrip("\n") + "\n"  # Jinja2 drops the template's final newline
    return card


def _kept_counts(num_kept: int | None, num_prunable: int | None, *, density: float) -> str | None:
    if num_kept is None and num_prunable is None:
        return None
    for field, value in (("num_kept", num_kept), ("num_prunable", num_prunable)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CardError(
                f"{field} must be a non-negative integer (give num_kept and num_prunable together), got {value!r}.",
                field=field,
            )
    if num_kept is None or num_prunable is None or num_prunable == 0 or num_kept > num_prunable:
        raise CardError(
            f"num_kept={num_kept} and num_prunable={num_prunable} do not describe a mask: need 0 <= kept <= total, total > 0.",
            field="num_kept",
        )
    if not math.isclose(num_kept / num_prunable, density, rel_tol=1e-2, abs_tol=1e-6):
        logger.warning(
            "density=%s disagrees with num_kept/num_prunable=%d/%d=%.6f; the card shows both as given.",
            density,
            num_kept,
            num_prunable,
            num_kept / num_prunable,
        )
    return f"{num_kept:,} of {num_prunable:,} weights"


def _check_filename(name: str, *, field: str) -> None:
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
        raise CardError(f"{field} must be a plain file name in the repo root, got {name!r}.", field=field)


def _badge_markdown(badge_filename: str | None, *, has_claim: bool) -> str | None:
    if badge_filename is None:
        return None
    if has_claim:
        alt = "ownership: protected. An ownership claim is published with this model; it is not verified here"
    else:
        alt = "ownership: unverified. No ownership claim is published with this model"
    return f"![{_md(alt)}]({badge_filename})"


# --------------------------------------------------------------------------- badge


@dataclasses.dataclass(frozen=True)
class BadgeStyle:
    """How one badge status looks.

    Args:
        message: Default right-hand text.
        color: Background colour of the right half (white text on it keeps a 4.5:1 contrast).
        description: Default accessible description, added to the SVG ``<title>``.
    """

    message: str
    color: str
    description: str


BADGE_STATUSES: Mapping[str, BadgeStyle] = types.MappingProxyType(
    {
        "protected": BadgeStyle(
            "protected", "#0969da", "An ownership claim is published with this model; it is not verified here"
        ),
        "owned": BadgeStyle("verified", "#1a7f37", "Verified: the owner's key matches this model"),
        "not_owned": BadgeStyle("not owned", "#cf222e", "Checked: the key does not match this model"),
        "inconclusive": BadgeStyle("inconclusive", "#9a6700", "Checked: the evidence is not strong enough either way"),
        "unverified": BadgeStyle("unverified", "#6e7781", "No ownership claim or verification is available"),
    }
)
LABEL_COLOR = "#555"
_BADGE_PADDING = 6.0  # px each side of a text
_FONT_SIZE = 11.0


def list_badge_statuses() -> list[str]:
    """The statuses :func:`render_badge` accepts.

    Returns:
        `list[str]`: Sorted status names.
    """
    return sorted(BADGE_STATUSES)


def _char_width(char: str) -> float:
    """Approximate advance width, in px at 11 px Verdana, of one character."""
    if char in "iljI|.,:;'!`" or char == " ":
        return 3.7
    if char in 'frt()[]{}/\\-"':
        return 4.8
    if char in "mwMW@%":
        return 10.5
    if char.isupper() or char in "#&+<=>?~_":
        return 7.6
    if ord(char) > 0x2E80:  # CJK and other wide scripts
        return 11.0
    return 6.6


def _text_width(text: str) -> float:
    return round(sum(_char_width(c) for c in text), 1)


def render_badge(
    *,
    status: str = "protected",
    label: str = "ownership",
    message: str | None = None,
    detail: str | None = None,
) -> str:
    """Render a self-contained, shields.io-style flat SVG badge.

    Two coloured halves (grey label, status-coloured message), text widths estimated from the
    characters, a ``<title>`` and ``aria-label`` for screen readers, no external fonts (a
    fallback ``font-family`` list) and no network access. All text is escaped for XML and
    stripped of characters XML forbids; texts longer than 48 characters are shortened on the
    badge (the ``<title>`` keeps up to 200).

    Args:
        status (`str`, *optional*, defaults to `"protected"`):
            One of :func:`list_badge_statuses`: ``"protected"`` (a claim is published, not
            verified here), ``"owned"``, ``"not_owned"``, ``"inconclusive"`` (a verification's
            verdict) or ``"unverified"``.
        label (`str`, *optional*, defaults to `"ownership"`):
            Left-hand text.
        message (`str`, *optional*, defaults to `None`):
            Right-hand text; the status's default (``"protected"``, ``"verified"``, ...) when `None`.
        detail (`str`, *optional*, defaults to `None`):
            Longer accessible description for the ``<title>``; the status's default when `None`.

    Returns:
        `str`: The SVG document (UTF-8 text, ends with a newline).

    Raises:
        UnknownNameError: ``status`` is not a known status.

    Example:
        >>> svg = render_badge(status="owned", detail="alice, 2026-11-30")
        >>> "<title>ownership: verified. alice, 2026-11-30</title>" in svg
        True
    """
    style = BADGE_STATUSES.get(status)
    if style is None:
        raise UnknownNameError("badge status", status, available=BADGE_STATUSES)
    label_text = _clean(label, max_chars=MAX_BADGE_TEXT_CHARS)
    message_text = _clean(style.message if message is None else message, max_chars=MAX_BADGE_TEXT_CHARS)
    detail_text = _clean(style.description if detail is None else detail)
    title = f"{label_text}: {message_text}" + (f". {detail_text}" if detail_text else "")

    label_text_width = _text_width(label_text)
    message_text_width = _text_width(message_text)
    label_width = round(label_text_width + 2 * _BADGE_PADDING, 1)
    message_width = round(message_text_width + 2 * _BADGE_PADDING, 1)
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    template = env.from_string(_read_asset(BADGE_TEMPLATE_NAME))
    uid = "b" + hashlib.sha256(f"{status}\0{label_text}\0{message_text}".encode()).hexdigest()[:10]
    return template.render(
        uid=uid,
        title=title,
        label=label_text,
        message=message_text,
        color=style.color,
        label_color=LABEL_COLOR,
        width=round(label_width + message_width, 1),
        label_width=label_width,
        message_width=message_width,
        label_x=round(label_width / 2, 1),
        message_x=round(label_width + message_width / 2, 1),
        label_text_width=max(label_text_width, 0.1),
        message_text_width=max(message_text_width, 0.1),
    )


# --------------------------------------------------------------------------- files


def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` as UTF-8 to ``path`` through a temporary file in the same folder and ``os.replace``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # what open() would give; mkstemp's 0600 is too strict to publish
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_card_files(
    folder: str | os.PathLike[str],
    card: ModelCard | str,
    badge_svg: str | None,
    *,
    badge_filename: str = BADGE_FILENAME,
) -> list[Path]:
    """Write ``README.md`` and the ownership badge into a model folder, atomically.

    Each file goes to a temporary file in ``folder`` first and is moved into place with
    ``os.replace``, so a reader never sees half a card. The badge is checked to be well-formed
    SVG before anything is written.

    Args:
        folder (`str` or `os.PathLike`):
            The model folder (created when missing), e.g. the temporary folder uploaded in one commit.
        card (`ModelCard` or `str`):
            The card from :func:`render_model_card`, or its text.
        badge_svg (`str` or `None`):
            The badge from :func:`render_badge`; `None` writes the card only.
        badge_filename (`str`, *optional*, defaults to `"ownership_badge.svg"`):
            File name of the badge; must match the card's ``badge_filename``.

    Returns:
        `list[Path]`: The paths written: ``README.md``, then the badge when given.

    Raises:
        CardError: ``badge_svg`` is not a well-formed SVG document, or ``badge_filename`` is not a
            plain file name.
        OSError: The folder cannot be created or written.
    """
    _check_filename(badge_filename, field="badge_filename")
    if badge_svg is not None:
        try:
            root = ET.fromstring(badge_svg)
        except ET.ParseError as err:
            raise CardError(
                f"badge_svg is not well-formed XML: {err}. Render it with render_badge().", field="badge_svg"
            ) from err
        if root.tag != "{http://www.w3.org/2000/svg}svg":
            raise CardError(f"badge_svg's root element is {root.tag!r}, not an SVG <svg>.", field="badge_svg")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / CARD_FILENAME]
    _atomic_write_text(written[0], str(card))
    if badge_svg is not None:
        written.append(folder / badge_filename)
        _atomic_write_text(written[1], badge_svg)
    return written
