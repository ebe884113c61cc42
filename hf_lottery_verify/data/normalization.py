"""Normalisation of uint8 images: :func:`normalize`, the :class:`Normalizer` that keeps its
constants on each device once, and where the constants come from — a model's config
(:func:`resolve_normalization`), written there from the training data
(:func:`record_data_statistics`) — and :func:`pil_to_model_input`, a decoded image as a model reads it
(the server, the black-box runner and the image processor share it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError

__all__ = ["normalize", "Normalizer", "resolve_normalization", "record_data_statistics", "normalized_for",
           "pil_to_model_input"]


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], *,
              channels_last: bool = False) -> torch.Tensor:
    """uint8 ``N×C×H×W`` → normalised float32 on the same device.

    Builds the constants on the images' device at every call; loops that normalise many
    batches hold a :class:`Normalizer` instead, which builds them once per device.
    """
    return Normalizer(mean, std)(images, channels_last=channels_last)


class Normalizer:
    """Normalises uint8 images with per-channel constants kept on each device once.

    ``(x - 255·mean) / (255·std)`` as :func:`normalize` computes it, bit for bit, without
    building the two constant tensors (two host→device copies) for every batch.

    Args:
        mean: Per-channel means (fractions of 255).
        std: Per-channel standard deviations (fractions of 255).

    Example:
        >>> norm = Normalizer((0.5,), (0.25,))
        >>> norm(torch.full((1, 1, 2, 2), 255, dtype=torch.uint8))[0, 0, 0, 0].item()
        2.0
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self._constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def constants(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(255·mean, 255·std)`` as float32 ``1×C×1×1`` tensors on ``device``, built on the first call."""
        if device not in self._constants:
            m = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1) * 255
            s = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1) * 255
            self._constants[device] = (m.to(device), s.to(device))
        return self._constants[device]

    def __call__(self, images: torch.Tensor, *, channels_last: bool = False) -> torch.Tensor:
        """Normalise ``images`` (uint8 or float ``N×C×H×W``) to float32 on their device."""
        m, s = self.constants(images.device)
        if images.dtype != torch.uint8:
            images = images.float()
        x = torch.sub(images, m)  # uint8 - float32 promotes exactly as images.float() - m
        x.div_(s)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _values(value: Any, in_chans: int | None, what: str) -> tuple[float, ...]:
    values = (float(value),) if isinstance(value, (int, float)) else tuple(float(v) for v in value)
    if in_chans is not None and len(values) == 1:
        values = values * in_chans
    if in_chans is not None and len(values) != in_chans:
        raise ConfigError(f"{what} has {len(values)} values for a model with {in_chans} input channels.")
    return values


def resolve_normalization(
    model: Any,
    image_mean: float | Sequence[float] | None = None,
    image_std: float | Sequence[float] | None = None,
    *,
    in_chans: int | None = None,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel input normalisation of a model: the one place training, evaluation, trigger
    queries, the black-box runner, the server and the image processor read it from.

    Sources, first found wins: the arguments; the model's config (``image_mean``/``image_std``,
    which this library's models carry from their first training on: the training data's);
    timm's ``pretrained_cfg`` of a plain timm model. There is no default: a model that
    declares nothing is refused rather than fed inputs it was not trained on.

    Args:
        model: A model (``.config``), a config, or ``None`` with both arguments given.
        image_mean (`float` or `Sequence[float]`, *optional*): Mean per channel (fractions of 255;
            one value is repeated).
        image_std (`float` or `Sequence[float]`, *optional*): Standard deviation per channel.
        in_chans (`int`, *optional*): Input channels the values must cover.

    Returns:
        ``(mean, std)``.

    Raises:
        ConfigError: No source declares them, a wrong number of values, or a non-positive std.
    """
    config = getattr(model, "config", model)
    timm_cfg = getattr(model, "pretrained_cfg", None) or {}  # a plain timm network's own declaration
    mean = next((v for v in (image_mean, getattr(config, "image_mean", None), timm_cfg.get("mean")) if v is not None),
                None)
    std = next((v for v in (image_std, getattr(config, "image_std", None), timm_cfg.get("std")) if v is not None),
               None)
    if mean is None or std is None:
        raise ConfigError("The model declares no input normalisation (config image_mean/image_std): train it with "
                          "this library (IMP and retraining record the data's), set config.image_mean and "
                          "config.image_std, or pass image_mean= and image_std=.")
    mean, std = _values(mean, in_chans, "image_mean"), _values(std, in_chans, "image_std")
    if any(not s > 0 for s in std):
        raise ConfigError(f"image_std must be positive, got {std}.")
    return mean, std


def record_data_statistics(model: Any, data: Any) -> None:
    """Record a split's statistics, image size and class names in a model's config that has none yet.

    IMP, retraining and every training run call it, so a model's config carries its training
    data's normalisation from its first training on; a config that already has statistics
    keeps them (the model reads its inputs that way, whatever data it is trained on next).
    Default label names (``LABEL_0`` ...) give way to the data's class names. Models without
    a config are left alone.

    Args:
        model: A model with a transformers config (or the config itself).
        data (`ImageData`): The training split.
    """
    config = getattr(model, "config", model)
    if not hasattr(config, "image_mean"):
        return
    if config.image_mean is None or config.image_std is None:
        config.image_mean, config.image_std = tuple(data.mean), tuple(data.std)
        config.image_size = int(data.image_size)
    names = data.class_names
    labels = getattr(config, "id2label", None) or {}
    if names and len(names) == len(labels) and all(v == f"LABEL_{k}" for k, v in labels.items()):
        config.id2label = dict(enumerate(names))
        config.label2id = {n: i for i, n in enumerate(names)}


def normalized_for(data: Any, model: Any) -> Any:
    """``data`` (an ``ImageData``) with the normalisation ``model`` reads its inputs with (the same object when
    they agree; the data's own for a model without a config, such as a bare timm network)."""
    if getattr(getattr(model, "config", None), "image_mean", None) is None:
        return data
    mean, std = resolve_normalization(model, in_chans=data.in_chans)
    if (mean, std) == (tuple(data.mean), tuple(data.std)):
        return data
    return dataclasses.replace(data, mean=mean, std=std)


def pil_to_model_input(image: Image.Image, *, in_chans: int, image_size: int | None) -> torch.Tensor:
    """A decoded image as the uint8 ``C×H×W`` tensor a model takes (shared by server and client).

    Converts to ``L`` or ``RGB`` (PIL's conversion), then resizes bilinearly to
    ``image_size × image_size`` only when the size differs.

    Args:
        image (`PIL.Image.Image`): The decoded image, any mode PIL can convert.
        in_chans (`int`): 1 (grayscale) or 3 (RGB).
        image_size (`int`, *optional*): Side to resize to; ``None`` keeps the size.

    Returns:
        `torch.Tensor`: ``uint8`` ``in_chans × H × W``.

    Raises:
        ValueError: ``in_chans`` is neither 1 nor 3.
    """
    if in_chans not in (1, 3):
        raise ValueError(f"Only 1- or 3-channel models can take decoded images, got in_chans={in_chans}.")
    mode = "L" if in_chans == 1 else "RGB"
    if image.mode != mode:
        image = image.convert(mode)
    if image_size is not None and image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
