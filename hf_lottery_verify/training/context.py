"""What several trainings on one dataset share: :class:`TrainingContext` (device copies
of the splits, one prepared and compiled :class:`~.trainer.Trainer`, working model copies)."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ..configs import TrainConfig
from ..data import DeviceData, ImageData
from .evaluation import _canonical_device
from .trainer import Trainer

__all__ = ["TrainingContext"]


def _model_structure(model: nn.Module) -> tuple:
    return (type(model), tuple((k, tuple(v.shape), v.dtype) for k, v in model.state_dict().items()))


class TrainingContext:
    """What several trainings on one dataset share, built once: device copies of the splits,
    and one :class:`Trainer` (prepared, possibly compiled model and its optimizer).

    IMP rounds and the arms of a fidelity test train the same architecture on the same data
    again and again, differing only in weights, masks and seed. Through a context they
    upload each split once and prepare and ``torch.compile`` the model once: :meth:`trainer`
    hands back the previous trainer, :meth:`Trainer.reset`, when the model object, the data,
    the accelerator and every setting but ``seed`` are the same, and a new one
    otherwise. Results are those of fresh trainers (the reset clears the optimizer state).

    Example:
        >>> context = TrainingContext()
        >>> for round_seed in (1, 2):                                     # doctest: +SKIP
        ...     model.set_masks(next_masks())
        ...     trainer = context.trainer(model, data.train, replace(config, seed=round_seed),
        ...                               test_data=data.test, accelerator=acc, progress=False)
        ...     trainer.train()
        >>> context.close()                                               # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._uploads: dict[tuple, tuple[ImageData, DeviceData]] = {}
        self._trainer: Trainer | None = None
        self._trainer_key: tuple | None = None
        self._trainer_refs: tuple = ()
        self._models: dict[tuple, nn.Module] = {}

    def device_data(self, data: ImageData, device: torch.device | str) -> DeviceData:
        """``data`` on ``device``, uploaded on the first request for this split object and device."""
        dev = _canonical_device(device)
        key = (id(data.images), id(data.labels), tuple(data.mean), tuple(data.std), dev)  # views share tensors
        hit = self._uploads.get(key)
        if hit is None:
            hit = self._uploads[key] = (data, DeviceData(data, dev))  # the reference keeps the ids unique
        return hit[1]

    def trainer(self, model: nn.Module, train_data: ImageData, config: TrainConfig, *,
                test_data: ImageData | None = None, accelerator: Any = None, progress: bool = True,
                desc: str = "train") -> Trainer:
        """A trainer for ``model``: the previous one reset when everything but the seed matches, else a new one.

        Args: as for :class:`Trainer` (``config.seed`` may differ between calls).

        Returns:
            A :class:`Trainer` ready to :meth:`~Trainer.train` from the model's current weights and masks.
        """
        key = (id(model), id(train_data), id(test_data), id(accelerator), replace(config, seed=0))
        if self._trainer is not None and key == self._trainer_key:
            self._trainer.reset(seed=config.seed, desc=desc, progress=progress)
            return self._trainer
        if self._trainer is not None:
            self._trainer.close()
        self._trainer = Trainer(model, train_data, config, test_data=test_data, accelerator=accelerator,
                                progress=progress, desc=desc, context=self)
        self._trainer_key = key
        self._trainer_refs = (model, train_data, test_data, accelerator)  # keep the ids in the key unique
        return self._trainer

    def working_copy(self, source: nn.Module) -> nn.Module:
        """A model to train in place of ``source``, which stays untouched.

        The first call for a model structure deep-copies ``source``; later calls with a model
        of the same structure load its weights, buffers and masks into that same object (on
        whatever device it lives), so the trainer built for it is reused.
        """
        key = _model_structure(source)
        model = self._models.get(key)
        if model is None:
            model = self._models[key] = copy.deepcopy(source)
            return model
        model.load_state_dict(source.state_dict(), strict=True)
        if hasattr(model, "set_masks"):
            model.set_masks({n: m.detach() for n, m in (getattr(source, "masks", None) or {}).items()})
        return model

    def close(self) -> None:
        """Close the trainer and drop the device copies and working models."""
        if self._trainer is not None:
            self._trainer.close()
        self._trainer, self._trainer_key, self._trainer_refs = None, None, ()
        self._uploads.clear()
        self._models.clear()
