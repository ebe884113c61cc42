"""Datasets held as uint8 image tensors: one split (:class:`ImageData`: images, labels and
normalisation constants) and a train/test pair (:class:`DatasetPair`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import DatasetError

__all__ = ["ImageData", "DatasetPair"]


@dataclass
class ImageData:
    """Images and labels of one split.

    Attributes:
        images: ``uint8`` tensor ``N×C×H×W``.
        labels: ``int64`` tensor ``N``, or ``float32`` ``N×K`` class probabilities (a teacher's
            soft labels: the trainer's cross-entropy reads either).
        num_classes: Number of classes.
        mean, std: Per-channel normalisation constants (fractions of 255).
        name: Dataset name, for logs and model cards.
        class_names: Optional label names.
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str = "data"
    class_names: list[str] | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DatasetError(f"images must be a uint8 N×C×H×W tensor, got {self.images.dtype} {tuple(self.images.shape)}.")
        if self.labels.dim() not in (1, 2) or len(self.labels) != len(self.images):
            raise DatasetError(f"{len(self.labels)} labels for {len(self.images)} images.")
        self.labels = self.labels.long() if self.labels.dim() == 1 else self.labels.float()
        if len(self.mean) != self.images.shape[1] or len(self.std) != self.images.shape[1]:
            raise DatasetError(f"mean/std need {self.images.shape[1]} channel values.")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def in_chans(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def subset(self, n: int, *, seed: int = 0) -> ImageData:
        """A seeded random subset of ``n`` samples (all of them when ``n >= len``)."""
        if n >= len(self):
            return self
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n].sort().values
        return ImageData(self.images[idx], self.labels[idx], self.num_classes, self.mean, self.std, self.name,
                         self.class_names)


@dataclass
class DatasetPair:
    """Train and test splits of one dataset."""

    train: ImageData
    test: ImageData

    @property
    def num_classes(self) -> int:
        return self.train.num_classes
