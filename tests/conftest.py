"""Shared fixtures: tiny models, temporary folders, one CPU thread per xdist worker, a local Hub."""

from __future__ import annotations

import os

# huggingface_hub reads HF_ENDPOINT (and builds its URL template) when it is imported, and
# hf_lottery_verify imports it: point it at this process's local Hub port first. Each xdist
# worker imports this file itself, so each gets its own port and its own temporary HF_HOME.
from .hub_server import configure_hub_environment, fresh_hub, hub_repo_id, local_hub  # noqa: F401

configure_hub_environment()

import pytest  # noqa: E402
import torch  # noqa: E402

import hf_lottery_verify as hlv  # noqa: E402

from .helpers import make_model  # noqa: E402

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
