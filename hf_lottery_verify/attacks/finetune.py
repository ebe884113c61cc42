"""Fine-tuning attacks: the thief trains the stolen ticket (Section 5 of the paper).

* :func:`finetune_attack` — masked fine-tuning (pruned weights stay zero, so the mask and
  a signature in it survive by construction) or dense fine-tuning (the masks are removed
  and every weight trains: pruned positions fill with small values, and the verifier must
  recover the mask by magnitude), on the ticket's own dataset or another one
  (:func:`~hf_lottery_verify.data.load_image_dataset`, a new classifier when the number of
  classes differs: the paper's transfer setting).
* :func:`prune_finetune_attack` — prune, then masked fine-tuning to win the accuracy back:
  the removal attack that actually threatens an accuracy-preserving erasure.

Training goes through :class:`~hf_lottery_verify.training.Trainer` (masks enforced when
present); the attacked model comes back on the input model's device, in eval mode.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Literal

import torch
from torch import nn

from ..configs import TrainConfig
from ..data import DatasetPair, ImageData, derive_seed, load_image_dataset
from ..errors import DatasetError
from ._common import _remask
from .registry import ATTACK_TRAINING, register_attack
from .removal import prune_attack

__all__ = ["ATTACK_TRAINING", "finetune_attack", "prune_finetune_attack", "train_split", "masked_finetune"]


def train_split(data: DatasetPair | ImageData | None, *, dataset: str | None = None, train_limit: int | None = None,
                dataset_options: Mapping[str, Any] | None = None, seed: int = 0) -> ImageData:
    """The training split an attack trains on.

    Args:
        data (`DatasetPair` or `ImageData`, *optional*): The thief's data (a pair's train split is used).
        dataset (`str`, *optional*): Load this dataset instead (any name of
            :func:`~hf_lottery_verify.data.load_image_dataset`).
        train_limit (`int`, *optional*): Keep at most this many (seeded) training samples.
        dataset_options (`Mapping[str, Any]`, *optional*): Loader options (``image_size``, ...).
        seed (`int`, *optional*, defaults to 0): Seed of loading and subsetting.

    Returns:
        The training split.

    Raises:
        DatasetError: Neither ``data`` nor ``dataset``.
    """
    if dataset is not None:
        return load_image_dataset(dataset, seed=seed, train_limit=train_limit, **dict(dataset_options or {})).train
    if data is None:
        raise DatasetError("A fine-tuning attack needs training data: pass data=... or dataset=... .")
    train = data.train if isinstance(data, DatasetPair) else data
    if not isinstance(train, ImageData):
        raise DatasetError(f"data must be a DatasetPair or ImageData, got {type(data).__name__}.")
    if train_limit:
        train = train.subset(train_limit, seed=derive_seed(seed, "attack-train-limit"))
    return train


def _fit_head(model: nn.Module, train: ImageData, seed: int) -> None:
    """Give ``model`` a fresh classifier when ``train`` has another number of classes (transfer)."""
    in_chans = getattr(model.config, "in_chans", train.in_chans)
    if train.in_chans != in_chans:
        raise DatasetError(f"The fine-tuning data has {train.in_chans} channels, the model takes {in_chans}; "
                           "pick a dataset with the model's channels (e.g. dataset_options={'in_chans': ...}).")
    net = model.timm_model
    fc = net.get_classifier()
    if not isinstance(fc, nn.Linear) or fc.out_features == train.num_classes:
        return
    gen = torch.Generator().manual_seed(derive_seed(seed, "attack-new-head"))
    new = nn.Linear(fc.in_features, train.num_classes, bias=fc.bias is not None)
    bound = 1.0 / fc.in_features ** 0.5
    with torch.no_grad():
        new.weight.copy_((torch.rand(new.weight.shape, generator=gen) * 2 - 1) * bound)
        if new.bias is not None:
            new.bias.copy_((torch.rand(new.bias.shape, generator=gen) * 2 - 1) * bound)
    net.fc = new.to(fc.weight.device, fc.weight.dtype)
    net.num_classes = train.num_classes
    model.config.num_labels = train.num_classes
    model.config.id2label = {i: str(i) for i in range(train.num_classes)}
    model.config.label2id = {str(i): i for i in range(train.num_classes)}


def masked_finetune(model: nn.Module, data: DatasetPair | ImageData | None, *, epochs: int, seed: int,
                    config: TrainConfig | None = None, train_limit: int | None = None) -> nn.Module:
    """Train ``model`` in place on ``data`` (its :func:`train_split`) with the library's trainer (its masks, if any,
    enforced); return it in eval mode.

    ``config`` is the recipe (:data:`ATTACK_TRAINING` by default); ``epochs`` and ``seed`` override its own, and
    the batch size is capped at the number of samples.
    """
    from ..training import Trainer

    train = train_split(data, train_limit=train_limit, seed=seed)
    device = next(model.parameters()).device
    config = config or ATTACK_TRAINING
    config = replace(config, epochs=epochs, batch_size=min(config.batch_size, len(train)),
                     seed=derive_seed(seed, "attack-finetune"))
    trainer = Trainer(model, train, config, progress=False, desc="attack")
    try:
        trainer.train()
        trained = trainer.unwrapped()
    finally:
        trainer.close()
    return trained.to(device).eval()


@register_attack("finetune", kind="removal", needs_data=True, strength="epochs", sweep=(1, 2, 4),
                 variants={"masked": {"mode": "masked"}, "dense": {"mode": "dense"}})
def finetune_attack(
    model: nn.Module,
    *,
    data: DatasetPair | ImageData | None = None,
    epochs: int = 1,
    train: TrainConfig | None = None,
    mode: Literal["masked", "dense"] = "masked",
    dataset: str | None = None,
    train_limit: int | None = None,
    dataset_options: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> nn.Module:
    """Fine-tune the stolen ticket, masked or dense, on its own data or another dataset.

    Args:
        model (`nn.Module`): The stolen ticket; not modified.
        data (`DatasetPair` or `ImageData`, *optional*): The thief's training data (same dataset).
        epochs (`int`, *optional*, defaults to 1): Epochs of fine-tuning.
        mode (`str`, *optional*, defaults to `"masked"`): ``masked`` (pruned weights stay zero)
            or ``dense`` (masks removed; every weight trains).
        dataset (`str`, *optional*): Fine-tune on this dataset instead of ``data`` (cross-dataset;
            a fresh classifier when its number of classes differs).
        train_limit (`int`, *optional*): At most this many training samples.
        dataset_options (`Mapping[str, Any]`, *optional*): Loader options for ``dataset``.
        train (`TrainConfig`, *optional*): The thief's training recipe (:data:`~hf_lottery_verify.attacks.registry.ATTACK_TRAINING`
            by default); ``epochs`` and ``seed`` here override its own.
        seed (`int`, *optional*, defaults to 0): Seed of data order, augmentation and a new head.

    Returns:
        The fine-tuned copy (masks: the non-zero pattern of its weights).

    Raises:
        ValueError: Unknown ``mode`` or ``epochs < 1``.
        DatasetError: No data, or data with other image channels than the model's.
    """
    if mode not in ("masked", "dense"):
        raise ValueError(f"Unknown fine-tuning mode '{mode}': use 'masked' or 'dense'.")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}.")
    train_data = train_split(data, dataset=dataset, train_limit=train_limit, dataset_options=dataset_options, seed=seed)
    attacked = copy.deepcopy(model)
    if dataset is not None:
        _fit_head(attacked, train_data, seed)
    elif int(train_data.labels.max()) >= attacked.config.num_labels:
        raise DatasetError(f"The fine-tuning data has labels up to {int(train_data.labels.max())} but the model has "
                           f"{attacked.config.num_labels} classes; pass dataset=... for another dataset (a new "
                           "classifier is fitted then).")
    if mode == "dense":
        attacked.set_masks({}, apply=False)
    return _remask(masked_finetune(attacked, train_data, epochs=epochs, seed=seed, config=train))


@register_attack("prune_finetune", kind="removal", needs_data=True, strength="fraction",
                 sweep=(0.2, 0.3, 0.5, 0.7), variants={"magnitude": {"method": "magnitude"}})
def prune_finetune_attack(
    model: nn.Module,
    *,
    fraction: float = 0.3,
    data: DatasetPair | ImageData | None = None,
    method: Literal["magnitude", "random"] = "magnitude",
    stage: str | None = None,
    epochs: int = 1,
    train: TrainConfig | None = None,
    train_limit: int | None = None,
    seed: int = 0,
) -> nn.Module:
    """Prune a share of the kept weights, then fine-tune under the pruned mask to recover accuracy.

    Args:
        model (`nn.Module`): The stolen ticket; not modified.
        fraction (`float`, *optional*, defaults to 0.3): Share of the kept weights to remove (see :func:`prune_attack`).
        data (`DatasetPair` or `ImageData`): The thief's training data.
        method (`str`, *optional*, defaults to `"magnitude"`): ``magnitude`` or ``random``.
        stage (`str`, *optional*): Prune only inside this stage.
        epochs (`int`, *optional*, defaults to 1): Epochs of masked fine-tuning.
        train_limit (`int`, *optional*): At most this many training samples.
        train (`TrainConfig`, *optional*): The thief's training recipe (:data:`~hf_lottery_verify.attacks.registry.ATTACK_TRAINING`
            by default); ``epochs`` and ``seed`` here override its own.
        seed (`int`, *optional*, defaults to 0): Seed of random pruning and training.

    Returns:
        The pruned and fine-tuned copy.

    Raises:
        DatasetError: No data.
        ValueError: Bad ``fraction``, ``method`` or ``epochs``.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}.")
    attacked = prune_attack(model, fraction=fraction, method=method, stage=stage, seed=seed)
    return masked_finetune(attacked, data, epochs=epochs, seed=seed, config=train, train_limit=train_limit)
