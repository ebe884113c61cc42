"""The public ownership claim: what of it may be published (:func:`sanitize_claim`) and its rows on the card.

A public claim says who claims the model, when, under which schemes, and commits to the
private key with a hash. Anything that would help locate the signature is dropped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from collections.abc import Mapping
from typing import Any

from .errors import CardError
from .text import _md, _md_code

__all__ = ["KNOWN_CLAIM_FIELDS", "SCHEME_NAMES", "sanitize_claim"]

logger = logging.getLogger(__name__)

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
