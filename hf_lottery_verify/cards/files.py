"""Card files: writing ``README.md`` and the ownership badge into a model folder, atomically."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from huggingface_hub import ModelCard

from ..atomic import write_text_atomic
from .errors import CardError

__all__ = ["BADGE_FILENAME", "CARD_FILENAME", "save_card_files"]

CARD_FILENAME = "README.md"
BADGE_FILENAME = "ownership_badge.svg"


def save_card_files(folder: str | os.PathLike[str], card: ModelCard | str, badge_svg: str | None) -> list[Path]:
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
            The badge from :func:`render_badge`, written to ``ownership_badge.svg`` (the file the
            card shows); `None` writes the card only.

    Returns:
        `list[Path]`: The paths written: ``README.md``, then the badge when given.

    Raises:
        CardError: ``badge_svg`` is not a well-formed SVG document.
        OSError: The folder cannot be created or written.
    """
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
    write_text_atomic(written[0], str(card))
    if badge_svg is not None:
        written.append(folder / BADGE_FILENAME)
        write_text_atomic(written[1], badge_svg)
    return written
