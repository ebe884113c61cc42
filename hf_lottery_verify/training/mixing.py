"""Extra samples mixed into training batches: :class:`MixInSamples` (the trigger set of Scheme V3,
in a seeded cycling order kept on the device)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data import ImageData, Normalizer, derive_seed

__all__ = ["MixInSamples"]

_MIX_ORDER_STEPS = 256
"""Steps of cycling order that :class:`MixInSamples` prepares and uploads at once."""


class MixInSamples:
    """Append ``per_batch`` samples from a fixed set to every batch, cycling in a seeded order.

    The reference code for the paper adds one trigger image to each 126–128-image batch.
    Each cycle through the set follows its own permutation (a function of ``seed`` and the
    cycle only, so a resumed run mixes in the same samples). The normalised samples and a
    block of the cycling order covering many steps are kept on the batches' device, so a
    step only slices and gathers there: no host→device copy, no host synchronisation.

    Args:
        data: The extra samples (uint8 images, labels); normalised with the training
            data's constants when mixed in.
        per_batch: Samples appended to each batch.
        seed: Seed of the cycling order.

    Raises:
        ValueError: ``per_batch`` is below 1 or ``data`` is empty.
    """

    def __init__(self, data: ImageData, *, per_batch: int = 1, seed: int = 0) -> None:
        if per_batch < 1:
            raise ValueError(f"per_batch must be 1 or more, got {per_batch}.")
        if len(data) == 0:
            raise ValueError("MixInSamples needs at least one sample.")
        self.data = data
        self.per_batch = per_batch
        self.seed = seed
        self._normalizer = Normalizer(data.mean, data.std)
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._orders: dict[torch.device, tuple[int, torch.Tensor]] = {}

    def cycle_order(self, cycle: int) -> torch.Tensor:
        """The permutation of the samples used in ``cycle`` (on the CPU)."""
        gen = torch.Generator().manual_seed(derive_seed(self.seed, "mix", cycle))
        return torch.randperm(len(self.data), generator=gen)

    def _order(self, device: torch.device, first: int, count: int) -> torch.Tensor:
        """Positions ``[first, first + count)`` of the endless cycling order, as a view on ``device``."""
        n = len(self.data)
        cached = self._orders.get(device)
        if cached is None or not cached[0] <= first <= first + count <= cached[0] + len(cached[1]):
            c0 = first // n
            c1 = (first + max(count * _MIX_ORDER_STEPS, n)) // n + 1  # exclusive; ≥ first + count
            kept, c = [], c0
            if cached is not None:  # cycles of the previous block still ahead stay (already on the device)
                a, b = cached[0] // n, (cached[0] + len(cached[1])) // n
                if a <= c0 < b:
                    kept, c = [cached[1][(c0 - a) * n :]], b
            new = torch.cat([self.cycle_order(k) for k in range(c, c1)])
            if device.type == "cuda":
                new = new.pin_memory().to(device, non_blocking=True)
            else:
                new = new.to(device)
            cached = self._orders[device] = (c0 * n, torch.cat([*kept, new]))
        return cached[1][first - cached[0] : first - cached[0] + count]

    def __call__(self, step: int, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        channels_last = images.dim() == 4 and images.is_contiguous(memory_format=torch.channels_last)
        key = (images.device, images.shape[1:], channels_last)
        if key not in self._cache:
            x = self.data.images.to(images.device)
            if x.shape[-2:] != images.shape[-2:]:
                x = F.interpolate(x.float(), size=images.shape[-2:], mode="bilinear", align_corners=False)
                x = x.round().clamp(0, 255).to(torch.uint8)
            self._cache[key] = (self._normalizer(x, channels_last=channels_last), self.data.labels.to(images.device))
        xs, ys = self._cache[key]
        take = self._order(images.device, step * self.per_batch, self.per_batch)
        return torch.cat([images, xs[take].to(images.dtype)]), torch.cat([labels, ys[take]])
