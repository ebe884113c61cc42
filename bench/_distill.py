"""Distillation of a (sparse) victim into a fresh ticket, and the plain training loop that the
thief's students, the owner's surrogates/references and the null models all share.

The registry's ``distill`` attack (:mod:`hf_lottery_verify.attacks.distill`) is this recipe on the
library's Trainer; this file stays as the loop that produced ``bench/results/distillation_cpu.*``
(its own seeded data order, so the cached students and nulls there keep reproducing).

The thief's recipe (issue 17): label the thief's own images once with the victim's output
probabilities (one query per image, as an endpoint returning scores allows), train a fresh
network on those soft labels (``dense_epochs``), prune it one-shot by magnitude to the
ticket's per-layer kept counts (same architecture) or to the ticket's total kept count
(another architecture), then train ``masked_epochs`` more under the mask.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from hf_lottery_verify import SparseResNetConfig, SparseResNetForImageClassification
from hf_lottery_verify.data import Normalizer, augment_batch
from hf_lottery_verify.pruning import top_k_mask
from hf_lottery_verify.training import MaskEnforcer, TrainConfig, lr_at

__all__ = ["new_model", "soft_labels", "train_epochs", "prune_to_counts", "prune_to_total", "distill",
           "train_independent"]


def new_model(arch: str, *, num_classes: int = 10, in_chans: int = 1, image_size: int = 28,
              seed: int) -> SparseResNetForImageClassification:
    """A freshly initialised model (initialisation drawn from ``seed``)."""
    torch.manual_seed(seed)
    return SparseResNetForImageClassification(SparseResNetConfig(arch=arch, num_labels=num_classes,
                                                                 in_chans=in_chans, image_size=image_size))


@torch.no_grad()
def soft_labels(teacher: torch.nn.Module, images: torch.Tensor, *, mean: tuple[float, ...], std: tuple[float, ...],
                hard: bool = False, batch_size: int = 500) -> torch.Tensor:
    """The teacher's output probabilities on uint8 ``images`` (one query per image).

    Args:
        teacher: The victim (any module returning logits or ``.logits``).
        images: uint8 ``N×C×H×W``.
        mean, std: The normalisation the teacher expects (fractions of 255).
        hard: Return one-hot arg-max labels instead (an endpoint that returns labels only).
        batch_size: Images per forward pass.

    Returns:
        ``N×K`` float32 probabilities (rows sum to 1).
    """
    norm = Normalizer(mean, std)
    was_training = teacher.training
    teacher.eval()
    out = []
    for i in range(0, len(images), batch_size):
        logits = teacher(norm(images[i:i + batch_size]))
        out.append(F.softmax(getattr(logits, "logits", logits).float(), dim=1))
    teacher.train(was_training)
    probs = torch.cat(out)
    return F.one_hot(probs.argmax(1), probs.shape[1]).float() if hard else probs


def train_epochs(model: SparseResNetForImageClassification, images: torch.Tensor, targets: torch.Tensor, *,
                 config: TrainConfig, mean: tuple[float, ...], std: tuple[float, ...]) -> float:
    """Train ``config.epochs`` epochs of SGD on hard labels (``int64 N``) or soft labels (``N×K``).

    The same recipe as the library's :class:`~hf_lottery_verify.training.Trainer` (SGD with
    momentum, weight decay on every parameter, :func:`lr_at` schedule, random crop and flip
    from a seeded generator, the model's masks enforced by :class:`MaskEnforcer`), with a
    soft cross-entropy when ``targets`` are probabilities.

    Returns:
        The mean training loss of the last epoch.
    """
    norm = Normalizer(mean, std)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay, nesterov=config.nesterov)
    enforcer = None
    if model.masks:
        enforcer = MaskEnforcer(model.timm_parameters(), model.masks)
        enforcer.attach(opt)
    gen = torch.Generator().manual_seed(config.seed)
    n, bs = len(images), config.batch_size
    steps_per_epoch = n // bs
    total = config.epochs * steps_per_epoch
    model.train()
    last = float("nan")
    try:
        for epoch in range(config.epochs):
            order = torch.randperm(n, generator=gen)
            loss_sum = 0.0
            for i in range(steps_per_epoch):
                idx = order[i * bs:(i + 1) * bs]
                x = norm(augment_batch(images[idx], pad=config.pad, flip=config.flip, generator=gen))
                for group in opt.param_groups:
                    group["lr"] = lr_at(config, epoch * steps_per_epoch + i, total)
                logits = model(x).logits
                y = targets[idx]
                loss = (F.cross_entropy(logits, y) if y.dim() == 1
                        else -(y * F.log_softmax(logits, dim=1)).sum(1).mean())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += float(loss.detach())
            last = loss_sum / max(1, steps_per_epoch)
    finally:
        if enforcer is not None:
            enforcer.remove()
    model.eval()
    return last


def prune_to_counts(model: SparseResNetForImageClassification, counts: Mapping[str, int]) -> None:
    """One-shot magnitude pruning of each named weight to its kept count (in place)."""
    params = model.timm_parameters()
    model.set_masks({name: top_k_mask(params[name].detach().abs(), int(k)) for name, k in counts.items()})


def prune_to_total(model: SparseResNetForImageClassification, kept: int) -> None:
    """One-shot global magnitude pruning of the default prunable weights to ``kept`` weights (in place)."""
    total = sum(model.timm_parameters()[n].numel() for n in model.prunable_names())
    model.prune_(density=min(1.0, kept / total), method="global_magnitude")


def _prune(model: SparseResNetForImageClassification, counts: Mapping[str, int] | None, kept: int | None) -> None:
    params = model.timm_parameters()
    if counts is not None and all(n in params and params[n].numel() >= k for n, k in counts.items()):
        prune_to_counts(model, counts)
    elif kept is not None:
        prune_to_total(model, kept)


def distill(victim: torch.nn.Module, arch: str, images: torch.Tensor, *, mean: tuple[float, ...],
            std: tuple[float, ...], seed: int, dense_epochs: int = 2, masked_epochs: int = 2,
            counts: Mapping[str, int] | None = None, kept: int | None = None, hard: bool = False,
            base: TrainConfig) -> SparseResNetForImageClassification:
    """The thief's distillation: soft labels → dense epochs → one-shot pruning → masked epochs.

    Args:
        victim: The model to steal (queried once per image).
        arch: Architecture of the fresh student.
        images: The thief's uint8 images.
        mean, std: Normalisation of the victim's data (the student uses the same).
        seed: Seed of initialisation, data order and augmentation.
        dense_epochs, masked_epochs: Epochs before and after pruning (0 masked: a dense student).
        counts: Per-layer kept counts to prune to (used when the student has those layers).
        kept: Total kept count to prune to otherwise (``None`` and no usable ``counts``: stays dense).
        hard: Train on the victim's arg-max labels instead of its probabilities.
        base: Recipe (learning rate, schedule, batch size, padding); epochs and seed are set here.

    Returns:
        The student (eval mode, masks set when pruned).
    """
    targets = soft_labels(victim, images, mean=mean, std=std, hard=hard)
    return train_independent(arch, images, targets, mean=mean, std=std, seed=seed, dense_epochs=dense_epochs,
                             masked_epochs=masked_epochs, counts=counts, kept=kept, base=base,
                             in_chans=int(images.shape[1]), image_size=int(images.shape[-1]))


def train_independent(arch: str, images: torch.Tensor, targets: torch.Tensor, *, mean: tuple[float, ...],
                      std: tuple[float, ...], seed: int, dense_epochs: int, masked_epochs: int = 0,
                      counts: Mapping[str, int] | None = None, kept: int | None = None, base: TrainConfig,
                      in_chans: int = 1, image_size: int = 28,
                      num_classes: int = 10) -> SparseResNetForImageClassification:
    """Train a fresh model on ``targets`` (labels or probabilities), optionally pruned half-way.

    With ground-truth labels this is a null/reference model; with a victim's probabilities
    it is :func:`distill`'s student.
    """
    from dataclasses import replace

    model = new_model(arch, num_classes=num_classes, in_chans=in_chans, image_size=image_size, seed=seed)
    train_epochs(model, images, targets, config=replace(base, epochs=dense_epochs, seed=seed), mean=mean, std=std)
    if masked_epochs > 0 and (counts is not None or kept is not None):
        _prune(model, counts, kept)
        train_epochs(model, images, targets, config=replace(base, epochs=masked_epochs, seed=seed + 7919),
                     mean=mean, std=std)
    return model
