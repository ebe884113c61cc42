"""The result of a black-box query (:class:`QueryResult`) and the bookkeeping the query paths share."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

__all__ = ["QueryResult"]

_MAX_ERRORS = 10  # reasons kept in QueryResult.errors
_MAX_REASON_CHARS = 200


@dataclass
class QueryResult:
    """The suspect's answers to a batch of images.

    Attributes:
        labels: ``int64`` tensor ``N``: the class index the suspect gave each image, ``-1``
            where the answer is missing (failed or never asked) or could not be mapped.
        queried: Queries actually sent: images passed to a model or callable, HTTP requests
            (retries included) sent to an endpoint.
        failed: Images that were asked but got no usable label.
        errors: Short reasons for the first few failures.
        kind: ``"model"``, ``"callable"`` or ``"endpoint"``.
        seconds: Wall-clock time of the whole query.
        skipped: Images never asked (query budget spent, or the endpoint gave up).
        answers: The raw top label of each image as the suspect gave it (truncated; ``None``
            when there was none), e.g. for matching renamed classes.
    """

    labels: torch.Tensor
    queried: int
    failed: int
    errors: list[str]
    kind: Literal["model", "callable", "endpoint"]
    seconds: float
    skipped: int = 0
    answers: list[str | None] = field(default_factory=list)

    @property
    def answered(self) -> int:
        """Images with a usable label (``labels >= 0``)."""
        return int((self.labels >= 0).sum())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (labels as a list of ints)."""
        return {**asdict(self), "labels": self.labels.tolist(), "answered": self.answered,
                "seconds": round(self.seconds, 6)}


class _Tally:
    """Mutable bookkeeping shared by the three query paths."""

    def __init__(self, n: int, budget: int | None) -> None:
        self.labels = torch.full((n,), -1, dtype=torch.int64)
        self.answers: list[str | None] = [None] * n
        self.asked = torch.zeros(n, dtype=torch.bool)
        self.queried = 0
        self.budget = budget
        self.errors: list[str] = []
        self.n_errors = 0

    def budget_left(self) -> int | None:
        return None if self.budget is None else max(self.budget - self.queried, 0)

    def error(self, reason: str) -> None:
        self.n_errors += 1
        if len(self.errors) < _MAX_ERRORS:
            self.errors.append(_short(reason))

    def result(self, kind: Literal["model", "callable", "endpoint"], start: float) -> QueryResult:
        failed = int((self.asked & (self.labels < 0)).sum())
        skipped = int((~self.asked).sum())
        if self.n_errors > len(self.errors):
            self.errors.append(f"... {self.n_errors - len(self.errors)} more")
        return QueryResult(labels=self.labels, queried=self.queried, failed=failed, errors=self.errors,
                           kind=kind, seconds=time.perf_counter() - start, skipped=skipped, answers=self.answers)


def _short(text: str, limit: int = _MAX_REASON_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
