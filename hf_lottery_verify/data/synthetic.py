"""Synthetic data: :func:`make_synthetic`, a seeded toy dataset that small ResNets learn in
a few epochs (tests and smoke runs)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .image_data import DatasetPair, ImageData
from .seeding import derive_seed

__all__ = ["make_synthetic"]


def make_synthetic(
    *,
    num_classes: int = 10,
    train_size: int = 2048,
    test_size: int = 512,
    image_size: int = 16,
    in_chans: int = 3,
    noise: float = 0.35,
    seed: int = 0,
) -> DatasetPair:
    """A seeded toy dataset that small ResNets learn in a few epochs.

    Each class has a smooth random template; a sample is its template, shifted by up to
    ``image_size // 8`` pixels, plus Gaussian noise.

    Args:
        num_classes: Number of classes.
        train_size: Training samples.
        test_size: Test samples.
        image_size: Square image side.
        in_chans: Channels.
        noise: Noise level relative to the template contrast.
        seed: Seed; the same seed gives the same data.

    Returns:
        Train and test splits.
    """
    gen = torch.Generator().manual_seed(derive_seed(seed, "synthetic-templates"))
    coarse = torch.rand(num_classes, in_chans, 4, 4, generator=gen)
    templates = F.interpolate(coarse, size=(image_size, image_size), mode="bilinear", align_corners=False)

    def split(n: int, tag: str) -> ImageData:
        g = torch.Generator().manual_seed(derive_seed(seed, "synthetic", tag))
        labels = torch.randint(0, num_classes, (n,), generator=g)
        x = templates[labels]
        reach = max(1, image_size // 8)
        shifts = torch.randint(-reach, reach + 1, (n, 2), generator=g)
        x = torch.stack([torch.roll(img, (int(s[0]), int(s[1])), dims=(1, 2)) for img, s in zip(x, shifts, strict=True)])
        x = x + noise * torch.randn(x.shape, generator=g) * 0.5
        images = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        mean = tuple(float(v) for v in (images.float() / 255).mean(dim=(0, 2, 3)))
        std = tuple(float(v) for v in (images.float() / 255).std(dim=(0, 2, 3)))
        return ImageData(images, labels, num_classes, mean, std, "synthetic")

    train = split(train_size, "train")
    test = split(test_size, "test")
    test.mean, test.std = train.mean, train.std
    return DatasetPair(train=train, test=test)


def _synthetic(*, data_dir=None, seed: int = 0, **options: Any) -> DatasetPair:  # noqa: ANN001
    return make_synthetic(seed=seed, **options)
