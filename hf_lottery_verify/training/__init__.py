"""The one training loop of the library: Accelerate, fixed masks, optional extra samples.

Every (re)training — dense training, IMP rounds, retraining after signing, fine-tuning
attacks — goes through :class:`Trainer`. It runs unchanged on a CPU, one GPU, or several
processes under ``accelerate launch`` (batches are sharded per process; evaluation shards
the test split and sums its counts across processes, so every test sample counts exactly
once).

Speed on GPUs comes from a loop that never waits on the host: device-resident uint8 data
with on-device augmentation and normalisation (:class:`~hf_lottery_verify.data.DeviceBatches`,
:class:`~hf_lottery_verify.data.DeviceData`), evaluation batched on the device, masks
enforced by one fused kernel per step (:class:`MaskEnforcer`), trigger mixing from an
order cached on the device (:class:`MixInSamples`), one read of the loss per epoch; plus
bf16 autocast, channels-last and optional ``torch.compile`` (``compile_mode=
"max-autotune-no-cudagraphs"`` or ``"reduce-overhead"`` for CUDA graphs, which help
launch-bound ResNet-20 most). :class:`TrainingContext` keeps the compiled model and the
uploaded data across the many short trainings of an IMP search or a fidelity test.

Modules (one concept each; every name is importable from ``hf_lottery_verify.training``):

* :mod:`.masking` — :class:`MaskEnforcer`, pruned weights kept at ``+0.0`` under an optimizer.
* :mod:`.schedule` — :func:`lr_at` (learning rate per step) and :func:`make_accelerator`.
* :mod:`.mixing` — :class:`MixInSamples` (extra samples in each batch).
* :mod:`.evaluation` — :func:`evaluate` (accuracy, loss and count on a split).
* :mod:`.trainer` — :class:`Trainer` and its per-epoch :class:`EpochRecord`.
* :mod:`.context` — :class:`TrainingContext`, what many trainings on one dataset share.
"""

from __future__ import annotations

from ..configs import TrainConfig
from .context import TrainingContext
from .evaluation import evaluate
from .masking import MaskEnforcer
from .mixing import MixInSamples
from .schedule import lr_at, make_accelerator
from .trainer import EpochRecord, Trainer

__all__ = [
    "TrainConfig",
    "Trainer",
    "EpochRecord",
    "MixInSamples",
    "make_accelerator",
    "evaluate",
    "lr_at",
    "MaskEnforcer",
    "TrainingContext",
]
