"""Evaluation of a model on a split: :func:`evaluate` (batched on the device, sharded
across processes, one host synchronisation) and its DataLoader variant."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import DeviceData, ImageData, normalized_for

__all__ = ["evaluate"]


def _canonical_device(device: torch.device | str) -> torch.device:
    """``cuda`` → ``cuda:0`` (the device a tensor sent there reports); no copy, no kernel."""
    return torch.empty(0, device=device).device


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageData | DeviceData, *, accelerator: Any = None, batch_size: int = 1024,
             channels_last: bool = False) -> dict[str, float]:
    """Top-1 accuracy (percent), mean loss and sample count of ``model`` on ``data``.

    Inputs are normalised as the model's config says (:func:`~hf_lottery_verify.data.normalized_for`).

    The split is read from the device: uploaded once per call, or not at all when ``data``
    is a :class:`~hf_lottery_verify.data.DeviceData` already there (the :class:`Trainer`
    keeps one). Under several processes each evaluates a contiguous shard (the shards
    cover every sample exactly once) and the correct counts, loss sums and sample counts
    are summed across processes, so ``count`` equals ``len(data)`` exactly — what
    ``gather_for_metrics`` gives, with one reduction per evaluation instead of one gather
    per batch. The only host synchronisation is reading the three totals at the end.

    Args:
        model: A model returning logits or an output with ``.logits``. Under an
            accelerator, DDP/compile wrappers are taken off for evaluation.
        data: The split to evaluate, on the host or already on the device.
        accelerator: The run's accelerator; when ``None`` the model is evaluated on its own
            device in this process.
        batch_size: Evaluation batch size per process.
        channels_last: Feed channels-last tensors.

    Returns:
        ``{"accuracy": %, "loss": mean cross-entropy, "count": samples seen}``.
    """
    import contextlib

    if accelerator is None:
        # evaluate where the model is, without touching the process-wide Accelerate state
        device = next(model.parameters()).device
        autocast, shard, num_shards = contextlib.nullcontext, 0, 1
    else:
        device = accelerator.device
        autocast, shard, num_shards = accelerator.autocast, accelerator.process_index, accelerator.num_processes
        # DDP may synchronise buffers in its forward; shards of unequal length must not meet there
        model = accelerator.unwrap_model(model)
    was_training = model.training
    model.eval()
    try:
        split = normalized_for(data.data if isinstance(data, DeviceData) else data, model)
        if isinstance(data, DeviceData) and data.device == _canonical_device(device) and split is data.data:
            on_device = data
        else:
            on_device = DeviceData(split, device)
        start, stop = on_device.shard_bounds(shard, num_shards)
        correct = torch.zeros((), dtype=torch.long, device=on_device.device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=on_device.device)
        for x, y in on_device.batches(batch_size, start=start, stop=stop, channels_last=channels_last):
            with autocast():
                out = model(x)
            logits = getattr(out, "logits", out).float()
            correct += (logits.argmax(1) == y).sum()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        totals = torch.stack([correct.double(), loss_sum,
                              torch.full((), float(stop - start), dtype=torch.float64, device=on_device.device)])
        if num_shards > 1:
            totals = accelerator.reduce(totals, reduction="sum")
        n_correct, loss_total, count = totals.tolist()
    finally:
        model.train(was_training)
    n = int(round(count))
    return {"accuracy": 100.0 * int(round(n_correct)) / max(1, n), "loss": loss_total / max(1, n), "count": n}
