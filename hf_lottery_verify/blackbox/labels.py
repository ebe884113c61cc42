"""Labels from an untrusted suspect: mapping its answers (class index or class name) to class indices."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .result import _short, _Tally

_MAX_LABEL_CHARS = 256
_MAX_INDEX = 2**31 - 1
_LABEL_RE = re.compile(r"(?:LABEL_)?(\d{1,10})")


class _LabelMapper:
    """Maps an untrusted answer (index or class name) to a class index, or says why not."""

    def __init__(self, label2id: Mapping[str, int] | None) -> None:
        self.label2id: dict[str, int] = {}
        for name, idx in (label2id or {}).items():
            if not isinstance(name, str) or isinstance(idx, bool) or not isinstance(idx, (int, np.integer)):
                raise TypeError(f"label2id must map str -> int, got {name!r}: {idx!r}.")
            if not 0 <= int(idx) <= _MAX_INDEX:
                raise ValueError(f"label2id[{name!r}] = {idx} is not a valid class index.")
            self.label2id[name] = int(idx)
        self.num_labels = max(self.label2id.values()) + 1 if self.label2id else None

    def _index(self, idx: int, shown: str) -> tuple[int, str | None]:
        limit = self.num_labels if self.num_labels is not None else _MAX_INDEX + 1
        if 0 <= idx < limit:
            return idx, None
        return -1, f"class index {shown} out of range"

    def record(self, tally: _Tally, i: int, answer: Any) -> None:
        """Record image ``i``'s answer in ``tally``: as shown (truncated), its class index, or why it has none."""
        shown = answer.item() if isinstance(answer, torch.Tensor) and answer.numel() == 1 else answer
        if isinstance(shown, (str, int, np.integer)) and not isinstance(shown, bool):
            tally.answers[i] = _short(str(shown), 100)
        tally.labels[i], reason = self.map(answer)
        if reason:
            tally.error(f"image {i}: {reason}")

    def map(self, answer: Any) -> tuple[int, str | None]:
        """``(index, None)`` or ``(-1, reason)``."""
        if isinstance(answer, torch.Tensor) and answer.numel() == 1 and not answer.is_floating_point():
            answer = answer.item()
        if isinstance(answer, (bool, np.bool_)):
            return -1, f"not a label: {answer!r}"
        if isinstance(answer, (int, np.integer)):
            return self._index(int(answer), _short(str(int(answer)), 24))
        if isinstance(answer, str):
            if len(answer) > _MAX_LABEL_CHARS:
                return -1, f"label of {len(answer)} characters"
            if answer in self.label2id:
                return self.label2id[answer], None
            m = _LABEL_RE.fullmatch(answer.strip())
            if m:
                return self._index(int(m.group(1)), m.group(1))
            return -1, f"unknown label {_short(repr(answer), 60)}"
        return -1, f"not a label: {type(answer).__name__}"
