"""Normalisation of uint8 images with per-channel constants: :func:`normalize` and the
:class:`Normalizer` that keeps its constants on each device once."""

from __future__ import annotations

import torch

__all__ = ["normalize", "Normalizer"]


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
        self._constants: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def constants(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """``(255·mean, 255·std)`` as ``1×C×1×1`` tensors on ``device``, built on the first call."""
        device = torch.device(device)
        key = (device, dtype)
        if key not in self._constants:
            m = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1) * 255
            s = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1) * 255
            self._constants[key] = (m.to(device=device, dtype=dtype), s.to(device=device, dtype=dtype))
        return self._constants[key]

    def __call__(self, images: torch.Tensor, *, channels_last: bool = False) -> torch.Tensor:
        """Normalise ``images`` (uint8 or float ``N×C×H×W``) to float32 on their device."""
        m, s = self.constants(images.device)
        if images.dtype != torch.uint8:
            images = images.float()
        x = torch.sub(images, m)  # uint8 - float32 promotes exactly as images.float() - m
        x.div_(s)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x
