"""Helpers shared by the tests (importable as ``from .helpers import ...``)."""

from __future__ import annotations

import torch

import hf_lottery_verify as hlv


def make_model(arch: str = "cifar_resnet8", *, num_labels: int = 10, in_chans: int = 3, seed: int = 0,
               density: float | None = None) -> hlv.SparseResNetForImageClassification:
    """A randomly initialised sparse ResNet (pruned by global magnitude when density is given)."""
    torch.manual_seed(seed)
    model = hlv.SparseResNetForImageClassification(
        hlv.SparseResNetConfig(arch=arch, num_labels=num_labels, in_chans=in_chans))
    if density is not None:
        model.prune_(density=density)
    return model
