"""Where the card and badge templates live: the installed package first, then the checkout.

Templates live in the repository's top-level ``model_cards/`` folder. A built wheel ships them
inside the package as ``hf_lottery_verify/model_cards/`` (``package-dir`` mapping in
``pyproject.toml``); a source checkout or editable install reads them from ``model_cards/`` next
to the package. See :func:`_read_asset`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import CardTemplateNotFoundError

__all__ = ["ASSETS_DIRNAME", "BADGE_TEMPLATE_NAME", "CARD_TEMPLATE_NAME"]

CARD_TEMPLATE_NAME = "sparse_ticket.md.j2"
BADGE_TEMPLATE_NAME = "ownership_badge.svg.j2"
ASSETS_DIRNAME = "model_cards"

# The top-level package (``hf_lottery_verify``), whose installed copy may hold model_cards/.
_TOP_PACKAGE = __name__.split(".")[0]
# The repository root of a source checkout: hf_lottery_verify/cards/templates.py -> parents[2].
_CHECKOUT_ROOT = Path(__file__).resolve().parents[2]


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
        packaged = resources.files(_TOP_PACKAGE).joinpath(ASSETS_DIRNAME, name)
        searched.append(str(packaged))
        if packaged.is_file():
            return packaged.read_text(encoding="utf-8")
    except (ModuleNotFoundError, OSError):  # pragma: no cover - exotic loaders
        pass
    checkout = _CHECKOUT_ROOT / ASSETS_DIRNAME / name
    searched.append(str(checkout))
    if checkout.is_file():
        return checkout.read_text(encoding="utf-8")
    raise CardTemplateNotFoundError(name, searched=searched)
