"""Distillation: the thief trains a fresh ticket on the victim's outputs (``distill``).

The strongest removal attack of the SoK (Lukas et al., S&P 2022), and one this library does
*not* withstand (``bench/results/distillation_cpu.md``): nothing of the victim's weights is
copied, so its mask, QR signature and (mostly) its triggers are not either. The recipe measured
there: label the thief's own images once with the victim's probabilities (softened by a
temperature), train a fresh network of the same or a smaller architecture on them, prune it
one-shot by magnitude to the victim's per-layer kept counts (or, for another architecture, to
its total kept count), and train some more under that mask. Training goes through the library's
:class:`~hf_lottery_verify.training.Trainer` (soft labels are class probabilities of an
:class:`~hf_lottery_verify.data.ImageData`).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import TrainConfig
from ..configuration_sparse_resnet import SparseResNetConfig
from ..data import DatasetPair, ImageData, Normalizer, derive_seed
from ..masks import count_kept
from ..pruning import top_k_mask
from .finetune import ATTACK_TRAINING, masked_finetune, train_split
from .registry import register_attack

__all__ = ["DISTILL_TRAINING", "distill_attack", "teacher_probabilities"]

DISTILL_TRAINING = replace(ATTACK_TRAINING, lr=0.2, schedule="onecycle")
"""A student trains from scratch: a high peak learning rate with one cycle (the measured recipe, bench/_distill.py)."""


@torch.no_grad()
def teacher_probabilities(teacher: nn.Module, data: ImageData, *, temperature: float = 1.0, hard: bool = False,
                          batch_size: int = 500) -> torch.Tensor:
    """The teacher's class probabilities on ``data``'s images (one query per image).

    Args:
        teacher (`nn.Module`): The victim (returns logits or an output with ``.logits``).
        data (`ImageData`): The thief's images (normalised with their constants).
        temperature (`float`, *optional*, defaults to 1.0): Softmax temperature (> 1 softens).
        hard (`bool`, *optional*, defaults to `False`): One-hot arg-max labels instead (an endpoint
            that answers labels only).

    Returns:
        ``N×K`` float32 probabilities on the CPU.
    """
    norm, device, was_training = Normalizer(data.mean, data.std), next(teacher.parameters()).device, teacher.training
    teacher.eval()
    logits = torch.cat([getattr(out, "logits", out).float().cpu() for out in (
        teacher(norm(data.images[i:i + batch_size].to(device))) for i in range(0, len(data), batch_size))])
    teacher.train(was_training)
    return F.one_hot(logits.argmax(1), logits.shape[1]).float() if hard else F.softmax(logits / temperature, dim=1)


@register_attack("distill", kind="removal", needs_data=True, strength="epochs", sweep=(2,),
                 variants={"soft": {}, "labels": {"hard": True}})
def distill_attack(
    model: nn.Module,
    *,
    data: DatasetPair | ImageData | None = None,
    arch: str | None = None,
    epochs: int = 2,
    masked_epochs: int = 2,
    temperature: float = 1.0,
    hard: bool = False,
    train: TrainConfig | None = None,
    train_limit: int | None = None,
    seed: int = 0,
) -> nn.Module:
    """Distil the stolen ticket into a fresh, pruned model trained on the thief's data.

    Args:
        model (`nn.Module`): The victim (a :class:`~hf_lottery_verify.SparseResNetForImageClassification`);
            only queried.
        data (`DatasetPair` or `ImageData`): The thief's images (their labels are not used).
        arch (`str`, *optional*): The student's architecture (the victim's by default).
        epochs (`int`, *optional*, defaults to 2): Dense epochs before pruning.
        masked_epochs (`int`, *optional*, defaults to 2): Epochs under the mask after pruning (0: the
            student stays dense).
        temperature (`float`, *optional*, defaults to 1.0): Temperature of the victim's probabilities.
        hard (`bool`, *optional*, defaults to `False`): Train on the victim's arg-max labels only.
        train_limit (`int`, *optional*): At most this many of the thief's images.
        train (`TrainConfig`, *optional*): The student's training recipe (:data:`DISTILL_TRAINING` by
            default); ``epochs``, ``masked_epochs`` and ``seed`` here override its own.
        seed (`int`, *optional*, defaults to 0): Seed of the student's initialisation, data order,
            augmentation.

    Returns:
        The student (eval mode; masks set when pruned).

    Raises:
        DatasetError: No data.
        ValueError: ``epochs < 1``, ``masked_epochs < 0`` or ``temperature <= 0``.
    """
    if epochs < 1 or masked_epochs < 0 or temperature <= 0:
        raise ValueError(f"Need epochs >= 1, masked_epochs >= 0 and temperature > 0, got {epochs}, {masked_epochs}, "
                         f"{temperature}.")
    from ..modeling_sparse_resnet import SparseResNetForImageClassification

    own = train_split(data, train_limit=train_limit, seed=seed)
    soft = ImageData(own.images, teacher_probabilities(model, own, temperature=temperature, hard=hard),
                     model.config.num_labels, own.mean, own.std, f"{own.name}-distilled")
    c = model.config
    same = arch in (None, c.arch)
    config = SparseResNetConfig(arch=c.arch if same else arch, num_labels=c.num_labels, in_chans=c.in_chans,
                                image_size=c.image_size, image_mean=c.image_mean, image_std=c.image_std,
                                model_args=c.model_args if same else None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "distill-init"))
        student = SparseResNetForImageClassification(config)
    train = train or DISTILL_TRAINING
    student = masked_finetune(student, soft, epochs=epochs, seed=seed, config=train)
    masks = getattr(model, "masks", None)
    if masked_epochs and masks:
        params = student.timm_parameters()
        if all(n in params and params[n].shape == m.shape for n, m in masks.items()):
            student.set_masks({n: top_k_mask(params[n].detach().abs(), int(m.sum())) for n, m in masks.items()})
        else:
            total = sum(params[n].numel() for n in student.prunable_names())
            student.prune_(density=min(1.0, count_kept(masks) / total))
        student = masked_finetune(student, soft, epochs=masked_epochs, seed=derive_seed(seed, "distill-masked"),
                                  config=train)
    return student.to(next(model.parameters()).device).eval()
