"""Escaping user text for the card's Markdown and the badge's XML: one line, safe characters, short."""

from __future__ import annotations

import html
import re
from typing import Any

__all__ = ["MAX_FIELD_CHARS"]

MAX_FIELD_CHARS = 200

# Characters XML 1.0 forbids, even as character references.
_XML_INVALID_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
# Inline Markdown specials: user text never starts a line (it follows a label or "| "), so
# block markers (#, >, +, -) need no escaping; < > & become HTML entities first.
_MD_SPECIALS_RE = re.compile(r"([\\`*_\[\]|~])")


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
