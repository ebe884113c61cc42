"""Shared fixtures: tiny models, temporary folders, one CPU thread per xdist worker."""

from __future__ import annotations

import os

import pytest
import torch

import hf_lottery_verify as hlv

from .helpers import make_model

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: one intra-op thread each avoids oversubscription.
    torch.set_num_threads(1)


@pytest.fixture
def tiny_model() -> hlv.SparseResNetForImageClassification:
    """cifar_resnet8 pruned to 20% density."""
    return make_model(density=0.2)
