"""The public ownership claim: what of it may be published (:func:`sanitize_claim`) and its rows on the card.

A public claim says who claims the model, where, under which schemes, and commits to the
private key with a hash. It is an allow-list: any other field is dropped.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any

from ..atomic import json_safe
from .errors import CardError
from .text import _md, _md_code

__all__ = ["KNOWN_CLAIM_FIELDS", "SCHEME_NAMES", "sanitize_claim"]

logger = logging.getLogger(__name__)

# Public-claim fields rendered by name, with their labels on the card, in this order.
KNOWN_CLAIM_FIELDS: dict[str, str] = {
    "owner": "Owner",
    "repo_id": "Repository",
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

_SCALAR = (str, int, float, bool, type(None))


def sanitize_claim(claim: Mapping[str, Any]) -> dict[str, Any]:
    """Reduce a public ownership claim to what may be published: the known fields, as plain values.

    The claim says who claims the model, under which schemes, and commits to the private key
    with a hash (:meth:`~hf_lottery_verify.OwnershipKey.public_claim`). It is an allow-list:
    the fields of :data:`KNOWN_CLAIM_FIELDS` are kept — ``schemes`` as a list of strings, the
    others as JSON scalars — and anything else (a QR version, a layer, an offset, a nested
    object) is dropped with a warning, so nothing in a claim can help find the signature.

    Args:
        claim (`Mapping[str, Any]`):
            The public claim, e.g. ``{"claim_version": 2, "owner": "alice", "repo_id":
            "alice/r20", "schemes": ["V2", "V3"], "key_commitment": "sha256:<64 hex>",
            "library": "hf_lottery_verify 0.3.0"}``.

    Returns:
        `dict[str, Any]`: A new JSON-safe dict, in the order of :data:`KNOWN_CLAIM_FIELDS`.

    Raises:
        CardError: ``claim`` is not a mapping.

    Example:
        >>> sanitize_claim({"owner": "alice", "qr_version": 3, "layer": "layer1.0.conv1.weight"})
        {'owner': 'alice'}
    """
    if not isinstance(claim, Mapping):
        raise CardError(f"claim must be a mapping (the public claim's JSON object), got {type(claim).__name__}.",
                        field="claim")
    raw = json_safe(dict(claim))
    kept = {k: raw[k] for k in KNOWN_CLAIM_FIELDS if k in raw}
    if isinstance(kept.get("schemes"), list):
        kept["schemes"] = [str(s) for s in kept["schemes"] if isinstance(s, _SCALAR)]
    dropped = sorted({*raw} - {*KNOWN_CLAIM_FIELDS}) + sorted(
        k for k, v in kept.items() if k != "schemes" and not isinstance(v, _SCALAR))
    kept = {k: v for k, v in kept.items() if k == "schemes" or isinstance(v, _SCALAR)}
    if dropped:
        logger.warning("Dropped claim field(s) a public claim does not hold: %s. A claim holds who, where, which "
                       "schemes and the key commitment only.", ", ".join(dropped))
    commitment = kept.get("key_commitment")
    if commitment is not None and not re.fullmatch(r"sha256:[0-9a-f]{64}", str(commitment)):
        logger.warning("The claim's key_commitment is not of the form 'sha256:<64 hex digits>'; rendering it as is.")
    return kept


def _claim_rows(claim: Mapping[str, Any]) -> list[dict[str, str]]:
    """Table rows (label, escaped value) of a sanitized claim."""
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
    return rows
