"""Procedural trigger sets (:func:`make_trigger_set`): abstract out-of-distribution images, seeded and reproducible.

Oriented gratings, checkerboards, rings, polygons, blobs and pixel noise in saturated colours,
computed in float64 from seeded CPU generators and quantised to ``uint8``: the same seed gives
the same bytes in every process and on every machine.
"""

from __future__ import annotations

import math

import torch

from ..data import derive_seed
from ..errors import DatasetError
from .sets import TriggerSet, _convert_channels, _quantise

__all__ = ["make_trigger_set"]


class _Draw:
    """Scalar draws from one seeded CPU generator (float64; no global RNG, no ``hash()``)."""

    def __init__(self, seed: int) -> None:
        self.gen = torch.Generator(device="cpu").manual_seed(seed)

    def u(self, lo: float = 0.0, hi: float = 1.0) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=self.gen, dtype=torch.float64))

    def i(self, lo: int, hi: int) -> int:
        """An integer in ``[lo, hi)``."""
        return min(hi - 1, lo + int(math.floor(self.u() * (hi - lo))))

    def colour(self) -> torch.Tensor:
        """A saturated colour (occasionally black or white), shape ``3×1×1``, values in ``[0, 1]``."""
        r = self.u()
        if r < 0.08:
            return torch.zeros(3, 1, 1, dtype=torch.float64)
        if r < 0.16:
            return torch.ones(3, 1, 1, dtype=torch.float64)
        h, s, v = self.u(), self.u(0.75, 1.0), self.u(0.65, 1.0)
        six = torch.tensor([h * 6 - 3, h * 6 - 2, h * 6 - 4], dtype=torch.float64)
        hue = torch.stack([six[0].abs() - 1, 2 - six[1].abs(), 2 - six[2].abs()]).clamp(0, 1)
        return (v * (1 - s + s * hue)).view(3, 1, 1)


def _grating(d: _Draw, yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
    theta, freq, phase = d.u(0, math.pi), d.u(1.5, 12.0), d.u(0, 2 * math.pi)
    v = 0.5 + 0.5 * torch.sin(math.pi * freq * (xx * math.cos(theta) + yy * math.sin(theta)) + phase)
    return (v > 0.5).to(torch.float64) if d.u() < 0.4 else v


def _checkerboard(d: _Draw, yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
    theta, cells = d.u(0, math.pi / 2), d.u(2.0, 10.0)
    c, s = math.cos(theta), math.sin(theta)
    xr, yr = xx * c - yy * s, xx * s + yy * c
    return torch.remainder(torch.floor((xr + 2) * cells / 2) + torch.floor((yr + 2) * cells / 2), 2)


def _rings(d: _Draw, yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
    cx, cy, freq, phase = d.u(-0.8, 0.8), d.u(-0.8, 0.8), d.u(2.0, 12.0), d.u(0, 2 * math.pi)
    r = torch.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    v = 0.5 + 0.5 * torch.sin(math.pi * freq * r + phase)
    return (v > 0.5).to(torch.float64) if d.u() < 0.5 else v


def _polygon(d: _Draw, yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
    """A filled random polygon (star-shaped, or self-intersecting under the even-odd rule)."""
    k = d.i(3, 10)
    cx, cy, radius = d.u(-0.6, 0.6), d.u(-0.6, 0.6), d.u(0.3, 0.9)
    angles = sorted(d.u(0, 2 * math.pi) for _ in range(k))
    if d.u() < 0.3:  # random vertex order: a self-intersecting "star"
        for j in range(k - 1, 0, -1):  # Fisher–Yates from the same stream
            m = d.i(0, j + 1)
            angles[j], angles[m] = angles[m], angles[j]
    pts = [(cx + radius * d.u(0.35, 1.0) * math.cos(a), cy + radius * d.u(0.35, 1.0) * math.sin(a)) for a in angles]
    inside = torch.zeros_like(xx, dtype=torch.bool)
    for (x1, y1), (x2, y2) in zip(pts, pts[1:] + pts[:1], strict=True):
        if y1 == y2:
            continue
        crosses = (y1 > yy) != (y2 > yy)
        x_at = (x2 - x1) * (yy - y1) / (y2 - y1) + x1
        inside ^= crosses & (xx < x_at)
    return inside.to(torch.float64)


def _blobs(d: _Draw, yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
    field = torch.zeros_like(xx)
    for _ in range(d.i(2, 7)):
        cx, cy, sigma = d.u(-0.9, 0.9), d.u(-0.9, 0.9), d.u(0.08, 0.4)
        field = field + torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma * sigma))
    return (field > d.u(0.3, 0.8) * field.max()).to(torch.float64)


def _noise(d: _Draw, yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
    """Blocky pixel noise (cell of 1, 2 or 4 pixels), one value per cell."""
    h, w = xx.shape
    cell = (1, 2, 4)[d.i(0, 3)]
    coarse = torch.rand((-(-h // cell), -(-w // cell)), generator=d.gen, dtype=torch.float64)
    return coarse.repeat_interleave(cell, 0).repeat_interleave(cell, 1)[:h, :w]


_FIELDS = (_grating, _checkerboard, _rings, _noise)
_SHAPES = (_polygon, _blobs)
_ALL = _FIELDS + _SHAPES


def _region(d: _Draw, yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
    """Where a field layer shows: everywhere at partial opacity, a half-plane or a disc."""
    r = d.u()
    if r < 0.35:
        return torch.full_like(xx, d.u(0.35, 0.7))
    if r < 0.7:
        theta, offset = d.u(0, 2 * math.pi), d.u(-0.5, 0.5)
        return ((xx * math.cos(theta) + yy * math.sin(theta)) > offset).to(torch.float64)
    cx, cy, radius = d.u(-0.7, 0.7), d.u(-0.7, 0.7), d.u(0.25, 0.8)
    return (((xx - cx) ** 2 + (yy - cy) ** 2) < radius * radius).to(torch.float64)


def _procedural_image(seed: int, size: int) -> torch.Tensor:
    """One abstract RGB image, float64 ``3×size×size`` with values stretched to ``[0, 1]``."""
    d = _Draw(seed)
    coords = (torch.arange(size, dtype=torch.float64) + 0.5) * (2.0 / size) - 1.0
    yy, xx = coords.view(-1, 1).expand(size, size), coords.view(1, -1).expand(size, size)
    background = _FIELDS[d.i(0, len(_FIELDS))](d, yy, xx)
    canvas = d.colour() * (1 - background) + d.colour() * background
    for _ in range(d.i(1, 4)):
        kind = _ALL[d.i(0, len(_ALL))]
        pattern = kind(d, yy, xx)
        if kind in _SHAPES:
            alpha = pattern
            if d.u() < 0.5:
                fill = d.colour()
            else:
                texture = _FIELDS[d.i(0, len(_FIELDS))](d, yy, xx)
                fill = d.colour() * (1 - texture) + d.colour() * texture
        else:
            alpha = _region(d, yy, xx)
            fill = d.colour() * (1 - pattern) + d.colour() * pattern
        canvas = canvas * (1 - alpha) + fill * alpha
    return canvas


def _stretch(x: torch.Tensor) -> torch.Tensor:
    """Scale one image's values to ``[0, 255]`` (the full range); constant images stay mid-grey."""
    lo, hi = x.min(), x.max()
    if float(hi - lo) <= 1e-9:
        return torch.full_like(x, 127.0)
    return (x - lo) * (255.0 / (hi - lo))


def make_trigger_set(
    n: int = 100,
    *,
    num_classes: int,
    image_size: int = 32,
    channels: int = 3,
    seed: int,
) -> TriggerSet:
    """Generate a fresh trigger set: abstract out-of-distribution images with random labels.

    Each image mixes a background field (oriented sinusoidal or square grating,
    checkerboard, concentric rings, blocky pixel noise) with 1–3 further layers (fields
    in a half-plane, disc or at partial opacity; filled random polygons; thresholded
    Gaussian blobs) in saturated random colours, and is contrast-stretched to the full
    ``0..255`` range. Image ``i`` depends only on ``(seed, i)`` and the size; labels are
    uniform in ``[0, num_classes)`` from the same seed. Everything is computed in float64
    from seeded CPU ``torch.Generator`` s with element-wise operations only, then quantised
    to ``uint8``: the same seed gives the same bytes in every process and on every machine.

    Args:
        n (`int`, *optional*, defaults to 100): Number of images (Adi et al. and the paper use 100).
        num_classes (`int`): Classes of the model the set is for (labels are drawn from them).
        image_size (`int`, *optional*, defaults to 32): Side of the square images.
        channels (`int`, *optional*, defaults to 3): 3 (RGB) or 1 (grayscale, the luma of the RGB image).
        seed (`int`): Seed of the set; keep it (or the set itself) in the ownership key.

    Returns:
        The :class:`TriggerSet` (``source="procedural"``).

    Raises:
        DatasetError: ``n < 1``, ``num_classes < 2``, ``image_size < 4`` or ``channels`` not 1 or 3.

    Example:
        >>> t = make_trigger_set(100, num_classes=10, seed=1234)
        >>> t.images.shape, t.images.dtype
        (torch.Size([100, 3, 32, 32]), torch.uint8)
        >>> t.digest() == make_trigger_set(100, num_classes=10, seed=1234).digest()
        True
    """
    if n < 1:
        raise DatasetError(f"A trigger set needs at least one image, got n={n}.")
    if num_classes < 2:
        raise DatasetError(f"num_classes must be at least 2, got {num_classes}.")
    if image_size < 4:
        raise DatasetError(f"image_size must be at least 4, got {image_size}.")
    if channels not in (1, 3):
        raise DatasetError(f"channels must be 1 or 3, got {channels}.")
    seed = int(seed)
    images = []
    for i in range(n):
        rgb = _procedural_image(derive_seed(seed, "trigger-image", i), image_size)
        x = _convert_channels(rgb.unsqueeze(0), channels)[0]
        images.append(_quantise(_stretch(x)))
    gen = torch.Generator(device="cpu").manual_seed(derive_seed(seed, "trigger-labels"))
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    labels = torch.floor(u * num_classes).to(torch.int64).clamp_(0, num_classes - 1)
    return TriggerSet(torch.stack(images), labels, num_classes, "procedural", seed)
