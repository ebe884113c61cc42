"""Ownership badges: a self-contained, shields.io-like flat SVG rendered from ``model_cards/ownership_badge.svg.j2``."""

from __future__ import annotations

import dataclasses
import hashlib
import types
from collections.abc import Mapping

import jinja2

from ..errors import UnknownNameError
from .templates import BADGE_TEMPLATE_NAME, _read_asset
from .text import _clean

__all__ = ["BADGE_STATUSES", "BadgeStyle", "list_badge_statuses", "render_badge"]

MAX_BADGE_TEXT_CHARS = 48


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
