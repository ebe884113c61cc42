"""Model cards and ownership badges for the tickets this library pushes to the Hub.

A pushed repo holds ``config.json``, ``model.safetensors``, ``masks.safetensors``, the model
card ``README.md`` and an ownership badge (``ownership_badge.svg``) committed beside it, so the
card renders offline and without a badge service. This package renders both, one module per
concept:

* :mod:`.card` — :func:`render_model_card` builds a :class:`huggingface_hub.ModelCard` from the
  Jinja2 template ``model_cards/sparse_ticket.md.j2``: Hub metadata (library, tags, datasets,
  license, pipeline tag, a model-index with accuracy and density), what the model is, the
  badge, the public claim, how to verify and load it, its limitations and the paper's citation;
* :mod:`.badge` — :func:`render_badge` renders a self-contained, shields.io-like flat SVG badge
  from ``model_cards/ownership_badge.svg.j2``;
* :mod:`.files` — :func:`save_card_files` writes both files atomically;
* :mod:`.claim` — :func:`sanitize_claim` reduces a public claim to JSON-safe fields and drops
  anything that would help locate the signature;
* :mod:`.templates` — where the templates are read from; :mod:`.text` — escaping user text;
  :mod:`.errors` — :class:`CardError` and :class:`CardTemplateNotFoundError`.

Templates live in the repository's top-level ``model_cards/`` folder. A built wheel ships them
inside the package as ``hf_lottery_verify/model_cards/`` (``package-dir`` mapping in
``pyproject.toml``); a source checkout or editable install reads them from ``model_cards/`` next
to the package. See :func:`.templates._read_asset`.

Example:
    >>> from hf_lottery_verify.cards import render_badge, render_model_card
    >>> card = render_model_card(repo_id="alice/r20-ticket", arch="cifar_resnet20", num_labels=10, density=0.19369)
    >>> card.data.library_name
    'hf_lottery_verify'
    >>> render_badge(status="protected").startswith("<svg")
    True
"""

from __future__ import annotations

from .badge import BADGE_STATUSES, BadgeStyle, list_badge_statuses, render_badge
from .card import CARD_TAGS, card_results, library_name_for, render_model_card
from .claim import sanitize_claim
from .errors import CardError, CardTemplateNotFoundError
from .files import BADGE_FILENAME, CARD_FILENAME, save_card_files
from .templates import BADGE_TEMPLATE_NAME, CARD_TEMPLATE_NAME

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
    "card_results",
    "library_name_for",
    "list_badge_statuses",
    "render_badge",
    "render_model_card",
    "sanitize_claim",
    "save_card_files",
]
