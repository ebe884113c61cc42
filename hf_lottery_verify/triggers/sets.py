"""The trigger set itself (:class:`TriggerSet`): validated images and labels, resizing, and its digest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data import ImageData
from ..errors import DatasetError

__all__ = ["TriggerSet"]

_DIGEST_TAG = b"hf_lottery_verify.triggers/1\n"
# ITU-R 601-2 luma, the weights PIL's convert("L") uses
_LUMA = (0.299, 0.587, 0.114)


@dataclass
class TriggerSet:
    """Trigger images and their (random) labels.

    Attributes:
        images: ``uint8`` tensor ``N×C×H×W``.
        labels: ``int64`` tensor ``N``, each in ``[0, num_classes)``.
        num_classes: Classes the labels are drawn from (the model's label count).
        source: Where the set comes from: ``"procedural"`` (:func:`make_trigger_set`) or
            ``"adi:resize"`` / ``"adi:center_crop"`` (:func:`load_adi_trigger_set`).
        seed: Seed of a generated set (``None`` for loaded ones).
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    source: str = "procedural"
    seed: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.uint8 or self.images.dim() != 4:
            got = (getattr(self.images, "dtype", type(self.images)), tuple(getattr(self.images, "shape", ())))
            raise DatasetError(f"Trigger images must be a uint8 N×C×H×W tensor, got {got[0]} {got[1]}.")
        if self.images.shape[1] not in (1, 3):
            raise DatasetError(f"Trigger images need 1 or 3 channels, got {self.images.shape[1]}.")
        self.labels = torch.as_tensor(self.labels)
        if self.labels.dim() != 1 or len(self.labels) != len(self.images):
            raise DatasetError(f"{len(self.labels)} trigger labels for {len(self.images)} images; give one label per "
                               "image.")
        if self.labels.is_floating_point():
            raise DatasetError("Trigger labels must be integers.")
        self.labels = self.labels.to(torch.int64).cpu()
        self.images = self.images.cpu().contiguous()
        if int(self.num_classes) < 2:
            raise DatasetError(f"num_classes must be at least 2, got {self.num_classes}.")
        self.num_classes = int(self.num_classes)
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= self.num_classes):
            raise DatasetError(f"Trigger labels must lie in [0, {self.num_classes}); got "
                               f"{int(self.labels.min())}..{int(self.labels.max())}.")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def channels(self) -> int:
        """Channels of the images (1 or 3)."""
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        """Side of the (square) images."""
        return int(self.images.shape[-1])

    def to_image_data(self, *, mean: Sequence[float], std: Sequence[float], name: str = "triggers") -> ImageData:
        """The set as an :class:`~hf_lottery_verify.data.ImageData` split (for mixing and evaluation).

        Args:
            mean (`Sequence[float]`): Per-channel mean (fraction of 255), normally the training data's.
            std (`Sequence[float]`): Per-channel standard deviation, normally the training data's.
            name (`str`, *optional*, defaults to `"triggers"`): Name of the split.

        Returns:
            The images and labels with those normalisation constants.

        Raises:
            DatasetError: ``mean``/``std`` do not have one value per channel (resize the set
                with :meth:`resized` first).
        """
        return ImageData(self.images, self.labels, self.num_classes, tuple(float(v) for v in mean),
                         tuple(float(v) for v in std), name)

    def resized(self, *, image_size: int, channels: int) -> TriggerSet:
        """The same set at another size and channel count (deterministic).

        RGB → grayscale uses the ITU-R 601-2 luma weights (as PIL does), grayscale → RGB
        repeats the channel; resizing is bilinear with antialiasing, in float64, rounded to
        ``uint8``.

        Args:
            image_size (`int`): Side of the square output images.
            channels (`int`): 1 (grayscale) or 3 (RGB).

        Returns:
            A new :class:`TriggerSet` (``self`` when nothing changes); labels, source and
            seed are kept.

        Raises:
            DatasetError: ``channels`` is not 1 or 3, or ``image_size < 1``.
        """
        if channels not in (1, 3):
            raise DatasetError(f"channels must be 1 or 3, got {channels}.")
        if image_size < 1:
            raise DatasetError(f"image_size must be positive, got {image_size}.")
        if channels == self.channels and image_size == self.image_size and self.images.shape[-2] == image_size:
            return self
        x = _convert_channels(self.images.to(torch.float64), channels)
        if tuple(x.shape[-2:]) != (image_size, image_size):
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
        return TriggerSet(_quantise(x), self.labels.clone(), self.num_classes, self.source, self.seed)

    def digest(self) -> str:
        """SHA-256 over the image and label bytes (and their shapes): identifies the set exactly.

        Returns:
            A hex digest, the same in every process and on every machine.
        """
        h = hashlib.sha256(_DIGEST_TAG)
        h.update(json.dumps({"images": list(self.images.shape), "labels": list(self.labels.shape)},
                            sort_keys=True).encode())
        h.update(self.images.contiguous().numpy().tobytes())
        h.update(self.labels.numpy().astype("<i8").tobytes())
        return h.hexdigest()


def _convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """float ``N×C×H×W`` → ``channels`` channels (luma for RGB → gray, repeat for gray → RGB)."""
    if x.shape[1] == channels:
        return x
    if channels == 1:
        return _LUMA[0] * x[:, 0:1] + _LUMA[1] * x[:, 1:2] + _LUMA[2] * x[:, 2:3]
    return x.expand(-1, 3, -1, -1).clone()


def _quantise(x: torch.Tensor) -> torch.Tensor:
    """float64 values on the 0..255 scale → ``uint8`` (round half to even, clamp)."""
    return x.round().clamp(0, 255).to(torch.uint8).contiguous()
