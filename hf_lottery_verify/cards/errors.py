"""The typed errors of model-card and badge rendering: bad values, missing templates."""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import HfLotteryError

__all__ = ["CardError", "CardTemplateNotFoundError"]


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
