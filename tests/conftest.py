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


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Accelerate keeps process-wide state; reset it so each test picks its own precision."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    _ = PartialState
