"""The run's schedule and device set-up: the learning rate at each step (:func:`lr_at`)
and the process's Accelerate accelerator (:func:`make_accelerator`)."""

from __future__ import annotations

import logging
import math

from ..configs import TrainConfig

__all__ = ["lr_at", "make_accelerator"]

logger = logging.getLogger(__name__)


def lr_at(config: TrainConfig, step: int, total_steps: int) -> float:
    """Learning rate at a global ``step`` of ``total_steps`` (a pure function of the step).

    Args:
        config: The training configuration.
        step: Zero-based optimizer step.
        total_steps: Steps in the full run (``epochs × steps_per_epoch``).

    Returns:
        The learning rate.
    """
    frac = step / max(1, total_steps)
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "multistep":
        # integer comparison: step/total >= milestone_epoch/epochs, with no float round-off
        passed = sum(1 for m in config.milestones
                     if step * config.epochs >= round(m * config.epochs) * max(1, total_steps))
        return config.lr * config.gamma**passed
    if config.schedule == "cosine":
        return 0.5 * config.lr * (1 + math.cos(math.pi * frac))
    # one-cycle: linear warm-up from lr/25 to lr, then linear decay to ~0
    w = config.warmup_fraction
    if frac < w:
        return config.lr * (0.04 + 0.96 * frac / w)
    return config.lr * max(0.0, (1 - frac) / (1 - w))


def make_accelerator(config: TrainConfig, *, cpu: bool | None = None):  # noqa: ANN201
    """Build (or reuse) the process's ``accelerate.Accelerator`` for ``config``.

    Accelerate keeps one process-wide state; asking for a different precision in the same
    process reuses the existing state and logs a warning instead of failing.

    Args:
        config: Gives the mixed-precision mode.
        cpu: Force the CPU (default: use an accelerator when one is visible).

    Returns:
        An ``accelerate.Accelerator``.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, is_initialized

    mp = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[config.precision]
    if is_initialized():
        current = str(AcceleratorState().mixed_precision)
        if current != mp:
            logger.warning("Accelerate is already initialised with mixed_precision=%s; keeping it (asked: %s).",
                           current, mp)
            mp = current
    return Accelerator(mixed_precision=mp, cpu=bool(cpu))
