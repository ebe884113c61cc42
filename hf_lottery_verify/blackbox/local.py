"""Querying suspects in this process: an ``nn.Module`` (arg-max of its logits) or any callable returning labels."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .labels import _LabelMapper
from .result import _Tally
from .runner import _ModelRunner


def _batches(n: int, batch_size: int, tally: _Tally) -> Iterator[tuple[int, int]]:
    for start in range(0, n, batch_size):  # a batch the budget cuts short is the last
        left = tally.budget_left()
        size = min(batch_size, n - start, n if left is None else left)
        if size <= 0:
            return
        yield start, start + size


def _query_model(model: nn.Module, images: torch.Tensor, tally: _Tally, *, image_mean: Any, image_std: Any,
                 batch_size: int, bar: Any) -> None:
    runner = _ModelRunner(model, image_mean=image_mean, image_std=image_std)
    was_training = model.training
    model.eval()
    try:  # the same batches and bookkeeping as a callable, but the model's own errors are the caller's
        _query_callable(lambda batch: runner.logits(batch).argmax(dim=1), images, tally, _LabelMapper(None),
                        batch_size=batch_size, bar=bar, raises=True)
    finally:
        model.train(was_training)


def _query_callable(fn: Callable[[torch.Tensor], Any], images: torch.Tensor, tally: _Tally,
                    mapper: _LabelMapper, *, batch_size: int, bar: Any, raises: bool = False) -> None:
    for lo, hi in _batches(len(images), batch_size, tally):
        tally.queried += hi - lo
        tally.asked[lo:hi] = True
        bar.update(hi - lo)
        try:
            out = fn(images[lo:hi])
        except Exception as exc:  # the suspect's code: never let it take the verifier down
            if raises:
                raise
            tally.error(f"images {lo}-{hi - 1}: the callable raised {type(exc).__name__}: {exc}")
            continue
        if isinstance(out, (torch.Tensor, np.ndarray)):
            if out.ndim != 1:
                tally.error(f"images {lo}-{hi - 1}: expected one label per image, got shape {tuple(out.shape)}")
                continue
            out = out.tolist()
        if isinstance(out, (str, bytes)) or not isinstance(out, Sequence):
            tally.error(f"images {lo}-{hi - 1}: expected a sequence of labels, got {type(out).__name__}")
            continue
        if len(out) != hi - lo:
            tally.error(f"images {lo}-{hi - 1}: {len(out)} labels for {hi - lo} images")
            continue
        for i, answer in zip(range(lo, hi), out, strict=True):
            mapper.record(tally, i, answer)
