"""Splits on the device and training batches cut from them: :class:`DeviceData` (uploaded
once), :func:`augment_batch` (crop and flip, vectorised) and :class:`DeviceBatches`
(seeded, shardable epochs with no host synchronisation)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from .image_data import ImageData
from .normalization import Normalizer
from .seeding import derive_seed

__all__ = ["DeviceData", "augment_batch", "DeviceBatches"]


class DeviceData:
    """One split held on a device: its uint8 images and labels uploaded once, with a :class:`Normalizer`.

    Training batches (:class:`DeviceBatches`) and evaluation (:func:`~hf_lottery_verify.training.evaluate`)
    read from it, so a run copies each split to the device once, however many epochs,
    evaluations, IMP rounds or retraining arms it has.

    Args:
        data: The split.
        device: Where to hold it.

    Attributes:
        data: The split (on the host).
        device: The device, with its index (``cuda:0``).
        images: uint8 ``N×C×H×W`` on ``device``.
        labels: int64 ``N`` on ``device``.
        normalizer: The split's :class:`Normalizer`.
    """

    def __init__(self, data: ImageData, device: torch.device | str = "cpu") -> None:
        self.data = data
        self.images = data.images.to(device)
        self.labels = data.labels.to(device)
        self.device = self.images.device
        self.normalizer = Normalizer(data.mean, data.std)

    def __len__(self) -> int:
        return len(self.labels)

    def shard_bounds(self, shard: int = 0, num_shards: int = 1) -> tuple[int, int]:
        """``[start, stop)`` of shard ``shard``: contiguous slices that cover every sample exactly once."""
        per = -(-len(self) // max(1, num_shards))
        return min(len(self), shard * per), min(len(self), (shard + 1) * per)

    def batches(self, batch_size: int, *, start: int = 0, stop: int | None = None,
                channels_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised, unaugmented ``(images, labels)`` batches of samples ``[start, stop)`` in order."""
        stop = len(self) if stop is None else stop
        for i in range(start, stop, batch_size):
            j = min(stop, i + batch_size)
            yield self.normalizer(self.images[i:j], channels_last=channels_last), self.labels[i:j]


def augment_batch(images: torch.Tensor, *, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, vectorised over the batch.

    Args:
        images: uint8 (or float) ``B×C×H×W`` on any device.
        pad: Padding on each side; crops are drawn uniformly from the padded image.
        flip: Flip each image horizontally with probability ½.
        generator: Generator on the images' device (seeded by the caller).

    Returns:
        Augmented images, same shape, dtype and device.
    """
    b, c, h, w = images.shape
    dev = images.device
    if pad > 0:
        padded = F.pad(images, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=generator)
        rows = (dy[:, None] + torch.arange(h, device=dev)).view(b, 1, h, 1)
        cols = (dx[:, None] + torch.arange(w, device=dev)).view(b, 1, 1, w)
        bi = torch.arange(b, device=dev).view(b, 1, 1, 1)
        ci = torch.arange(c, device=dev).view(1, c, 1, 1)
        images = padded[bi, ci, rows, cols]
    if flip:
        do = torch.rand(b, device=dev, generator=generator) < 0.5
        images = torch.where(do.view(b, 1, 1, 1), images.flip(3), images)
    return images


@dataclass
class DeviceBatches:
    """Seeded, shardable training batches cut from device-resident uint8 images.

    Batch ``i`` of epoch ``e`` depends only on ``(seed, e, i)``, so a resumed run sees the
    same batches as an uninterrupted one. With ``num_shards > 1`` (one per process) each
    process takes its slice of every global batch. Nothing in an epoch waits on the host:
    the epoch's order is uploaded once (without blocking), and the images, labels and
    normalisation constants stay on the device.

    Args:
        data: The training split.
        batch_size: Per-process batch size.
        device: Where images live and augmentation runs.
        seed: Base seed.
        augment: Apply random crop (``pad``) and flip.
        pad: Crop padding (4 for 32-px CIFAR, 2 for 28-px Fashion-MNIST is typical).
        channels_last: Return channels-last tensors.
        shard: This process's index.
        num_shards: Number of processes.
        uploaded: ``data`` already on ``device`` (a :class:`DeviceData`), shared instead of
            uploading it again; :meth:`reseeded` passes it on.
    """

    data: ImageData
    batch_size: int
    device: torch.device | str = "cpu"
    seed: int = 0
    augment: bool = True
    pad: int = 4
    flip: bool = True
    channels_last: bool = False
    shard: int = 0
    num_shards: int = 1
    uploaded: DeviceData | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.uploaded is None:
            self.uploaded = DeviceData(self.data, self.device)
        elif self.uploaded.data is not self.data:
            raise ValueError("uploaded holds another split than data; pass DeviceData(data, device).")
        elif self.uploaded.device != torch.empty(0, device=self.device).device:
            raise ValueError(f"uploaded lives on {self.uploaded.device}, the batches on {self.device}.")
        self.device = self.uploaded.device

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.num_shards

    def __len__(self) -> int:
        return len(self.data) // self.global_batch  # the last incomplete global batch is dropped

    def reseeded(self, seed: int) -> DeviceBatches:
        """The same batches with another base seed, sharing the uploaded data (no copy)."""
        return replace(self, seed=seed)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised ``(images, labels)`` batches of one epoch for this shard."""
        perm_gen = torch.Generator().manual_seed(derive_seed(self.seed, "order", epoch))
        order = torch.randperm(len(self.data), generator=perm_gen)
        if self.device.type == "cuda":
            order = order.pin_memory().to(self.device, non_blocking=True)
        else:
            order = order.to(self.device)
        aug_gen = torch.Generator(device=self.device).manual_seed(derive_seed(self.seed, "augment", epoch, self.shard))
        on_device = self.uploaded
        for i in range(len(self)):
            idx = order[i * self.global_batch : (i + 1) * self.global_batch][self.shard :: self.num_shards]
            x = on_device.images[idx]
            if self.augment:
                x = augment_batch(x, pad=self.pad, flip=self.flip, generator=aug_gen)
            yield on_device.normalizer(x, channels_last=self.channels_last), on_device.labels[idx]
