"""The typed errors of model-card and badge rendering: bad values, missing templates.

Both are defined in :mod:`hf_lottery_verify.errors` with the library's other errors; this
module re-exports them so ``from hf_lottery_verify.cards.errors import CardError`` keeps working.
"""

from __future__ import annotations

from ..errors import CardError, CardTemplateNotFoundError

__all__ = ["CardError", "CardTemplateNotFoundError"]
