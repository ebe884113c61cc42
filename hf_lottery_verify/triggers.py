"""Scheme V3: trigger sets — out-of-distribution images with random labels, learnt in retraining.

The owner mixes a secret trigger set ``T = (T_x, T_y)`` into the retraining of the signed
ticket (:func:`hf_lottery_verify.retrain.retrain`); later, a black-box query of a suspect on
``T_x`` that answers ``T_y`` far more often than chance (``1 / num_classes`` per image, the
labels being random) is evidence of ownership (Adi et al., USENIX Security 2018; Chen et
al., NeurIPS 2021, Table 3).

* :func:`make_trigger_set` draws a fresh set: procedural abstract images (oriented gratings,
  checkerboards, rings, polygons, blobs, pixel noise in saturated colours) that no natural
  dataset contains, computed in float64 from seeded CPU generators and quantised to
  ``uint8``: the same seed gives the same bytes in every process and on every machine.
* :func:`load_adi_trigger_set` reads Adi et al.'s public set (``pics/*.jpg`` and
  ``labels-cifar.txt``); label ``i`` binds to the ``i``-th file name in lexicographic order
  (``1.jpg, 10.jpg, 100.jpg, 11.jpg, …``), as the original ImageFolder loaders did.
  The public set is no secret: an owner should generate their own.
* :func:`add_triggers_to_key` / :func:`triggers_from_key` keep the set in the owner's
  :class:`~hf_lottery_verify.OwnershipKey` (section ``triggers``, digest-checked).
* :func:`trigger_evidence` turns a suspect's answers (``-1`` where it gave none) into an
  exact binomial p-value over *all* trigger images, so unanswered queries can only lower
  the evidence.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import ImageData, derive_seed, normalize
from .errors import DatasetError, KeyFileError
from .ownership_key import OwnershipKey
from .stats import binomial_threshold, trigger_p_value

__all__ = [
    "TRIGGERS_SECTION",
    "DEFAULT_ALPHA",
    "REFERENCE_BATCH_SIZE",
    "TriggerSet",
    "TriggerEvidence",
    "make_trigger_set",
    "load_adi_trigger_set",
    "add_triggers_to_key",
    "triggers_from_key",
    "trigger_evidence",
    "predict_labels",
]

logger = logging.getLogger(__name__)

TRIGGERS_SECTION = "triggers"
"""Name of the ownership-key section that holds the trigger set."""

DEFAULT_ALPHA = 1e-6
"""Default significance level of the trigger test (100 images, 10 classes: 28 matches needed)."""

REFERENCE_BATCH_SIZE = 128
"""The reference code mixes one trigger image into each batch of (about) 128 training images."""

_FORMAT = 1
_DIGEST_TAG = b"hf_lottery_verify.triggers/1\n"
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# ITU-R 601-2 luma, the weights PIL's convert("L") uses
_LUMA = (0.299, 0.587, 0.114)


# --------------------------------------------------------------------------- the set


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
        if not isinstance(self.labels, torch.Tensor):
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


# --------------------------------------------------------------------------- procedural generation


class _Draw:
    """Scalar draws from one seeded CPU generator (float64; no global RNG, no ``hash()``)."""

    def __init__(self, seed: int) -> None:
        self.gen = torch.Generator(device="cpu").manual_seed(seed)

    def u(self, lo: float = 0.0, hi: float = 1.0) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=self.gen, dtype=torch.float64))

    def i(self, lo: int, hi: int) -> int:
        """An integer in ``[lo, hi)``."""
        return min(hi - 1, lo + int(math.floor(self.u() * (hi - lo))))

    def field(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=self.gen, dtype=torch.float64)

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
    coarse = d.field(-(-h // cell), -(-w // cell))
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


# --------------------------------------------------------------------------- Adi et al.'s set


def load_adi_trigger_set(
    path: str | os.PathLike,
    *,
    mode: Literal["resize", "center_crop"],
    num_classes: int = 10,
    image_size: int = 32,
    channels: int = 3,
    labels_file: str = "labels-cifar.txt",
) -> TriggerSet:
    """Load an Adi-style trigger folder: ``pics/*.jpg`` plus one float label per line.

    Label ``i`` belongs to the ``i``-th image file in *lexicographic* name order
    (``1.jpg, 10.jpg, 100.jpg, 11.jpg, …``), exactly as the original loaders (torchvision
    ``ImageFolder``) enumerated them.

    Args:
        path (`str` or `os.PathLike`): The folder holding ``pics/`` and the labels file.
        mode (`str`): ``"resize"`` — bilinear resize of the whole image to ``image_size``
            (the sane choice); ``"center_crop"`` — the original loaders' ``CenterCrop``: the
            central ``image_size × image_size`` pixels, no resizing (zero-padded if smaller).
        num_classes (`int`, *optional*, defaults to 10): Label range ``[0, num_classes)``.
        image_size (`int`, *optional*, defaults to 32): Output side.
        channels (`int`, *optional*, defaults to 3): 3 (RGB) or 1 (grayscale).
        labels_file (`str`, *optional*, defaults to `"labels-cifar.txt"`): Name of the labels file.

    Returns:
        The :class:`TriggerSet` (``source="adi:<mode>"``, ``seed=None``).

    Raises:
        DatasetError: The folder, ``pics/`` or the labels file is missing; an image cannot be
            read; a label is not an integer in ``[0, num_classes)``; or the label count differs
            from the image count. ``mode`` or ``channels`` is invalid.
    """
    from PIL import Image

    if mode not in ("resize", "center_crop"):
        raise DatasetError(f"mode must be 'resize' or 'center_crop', got {mode!r}.")
    if channels not in (1, 3):
        raise DatasetError(f"channels must be 1 or 3, got {channels}.")
    root = Path(path)
    pics, labels_path = root / "pics", root / labels_file
    if not root.is_dir():
        raise DatasetError(f"Trigger-set folder {root} does not exist.")
    if not pics.is_dir():
        raise DatasetError(f"{root} has no pics/ folder; an Adi-style trigger set is pics/*.jpg plus {labels_file}.")
    if not labels_path.is_file():
        raise DatasetError(f"{root} has no {labels_file} (one label per line, in sorted file-name order).")
    names = sorted(p.name for p in pics.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_EXTENSIONS)
    labels = _read_labels(labels_path, num_classes=num_classes)
    if len(labels) != len(names):
        raise DatasetError(f"{labels_path} holds {len(labels)} labels but {pics} holds {len(names)} images; "
                           "they must correspond one to one.")
    if not names:
        raise DatasetError(f"{pics} holds no images.")
    arrays = []
    for name in names:
        try:
            with Image.open(pics / name) as img:
                img = img.convert("L" if channels == 1 else "RGB")
                if mode == "resize":
                    img = img.resize((image_size, image_size), Image.BILINEAR)
                    a = np.asarray(img, dtype=np.uint8)
                else:
                    a = _center_crop(np.asarray(img, dtype=np.uint8), image_size)
        except OSError as exc:
            raise DatasetError(f"Cannot read trigger image {pics / name}: {exc}.") from exc
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    images = torch.from_numpy(np.ascontiguousarray(np.stack(arrays)))
    return TriggerSet(images, torch.tensor(labels, dtype=torch.int64), num_classes, f"adi:{mode}", None)


def _read_labels(path: Path, *, num_classes: int) -> list[int]:
    out = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text:
            continue
        try:
            value = float(text)
        except ValueError as exc:
            raise DatasetError(f"{path}:{lineno}: {text!r} is not a number.") from exc
        if value != int(value) or not 0 <= value < num_classes:
            raise DatasetError(f"{path}:{lineno}: label {text} is not an integer in [0, {num_classes}).")
        out.append(int(value))
    return out


def _center_crop(a: np.ndarray, size: int) -> np.ndarray:
    """torchvision's ``CenterCrop(size)`` on an ``H×W(×C)`` array (zero padding when smaller)."""
    h, w = a.shape[:2]
    if h < size or w < size:
        top, left = max(0, (size - h) // 2), max(0, (size - w) // 2)
        padded = np.zeros((max(h, size), max(w, size)) + a.shape[2:], dtype=a.dtype)
        padded[top: top + h, left: left + w] = a
        a, (h, w) = padded, padded.shape[:2]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return a[top: top + size, left: left + size]


# --------------------------------------------------------------------------- the owner's key


def add_triggers_to_key(
    key: OwnershipKey,
    triggers: TriggerSet,
    *,
    per_batch: int = 1,
    alpha: float = DEFAULT_ALPHA,
) -> None:
    """Store the trigger set in the key's ``triggers`` section (images and labels as tensors).

    Args:
        key (`OwnershipKey`): The owner's key; its ``triggers`` section is replaced.
        triggers (`TriggerSet`): The set to keep.
        per_batch (`int`, *optional*, defaults to 1): Trigger images per
            :data:`REFERENCE_BATCH_SIZE` (128) training images during retraining; retraining
            with batch size ``B`` mixes ``max(1, round(per_batch * B / 128))`` into each batch.
        alpha (`float`, *optional*, defaults to 1e-6): Significance level of the trigger test;
            the section also records the matches it needs (``threshold``).

    Raises:
        ValueError: ``per_batch < 1`` or ``alpha`` outside ``(0, 1]``.
    """
    if per_batch < 1:
        raise ValueError(f"per_batch must be 1 or more, got {per_batch}.")
    n = len(triggers)
    section = {
        "scheme": "V3",
        "format": _FORMAT,
        "n": n,
        "num_classes": triggers.num_classes,
        "image_size": triggers.image_size,
        "channels": triggers.channels,
        "source": triggers.source,
        "seed": triggers.seed,
        "digest": triggers.digest(),
        "per_batch": int(per_batch),
        "reference_batch_size": REFERENCE_BATCH_SIZE,
        "alpha": float(alpha),
        "threshold": binomial_threshold(n, 1.0 / triggers.num_classes, alpha),
    }
    key.set_section(TRIGGERS_SECTION, section, {"images": triggers.images, "labels": triggers.labels})


def triggers_from_key(key: OwnershipKey) -> TriggerSet:
    """The trigger set kept in a key, checked against its digest.

    Args:
        key (`OwnershipKey`): A key with a ``triggers`` section.

    Returns:
        The :class:`TriggerSet`, bit-identical to the one stored.

    Raises:
        KeyMismatchError: The key has no ``triggers`` section.
        KeyFileError: The section's tensors are missing, malformed or altered (digest mismatch).
    """
    section = key.section(TRIGGERS_SECTION)
    tensors = key.section_tensors(TRIGGERS_SECTION)
    missing = [name for name in ("images", "labels") if name not in tensors]
    if missing:
        raise KeyFileError(f"The key's triggers section lacks its tensors {missing}; the key's tensor file is "
                           "incomplete. Use the key file written together with its .tensors.safetensors file.")
    try:
        triggers = TriggerSet(tensors["images"], tensors["labels"], int(section["num_classes"]),
                              str(section.get("source", "procedural")), section.get("seed"))
    except (DatasetError, KeyError, TypeError, ValueError) as exc:
        raise KeyFileError(f"The key's trigger set is malformed: {exc}") from exc
    digest = triggers.digest()
    if digest != section.get("digest") or len(triggers) != section.get("n"):
        raise KeyFileError("The key's trigger set was altered: its images/labels no longer match the recorded "
                           f"digest ({digest[:12]}… vs {str(section.get('digest'))[:12]}…).")
    return triggers


# --------------------------------------------------------------------------- evidence


@dataclass
class TriggerEvidence:
    """What a suspect's answers on the trigger set say.

    Attributes:
        n: Trigger images in the set.
        queried: Images sent to the suspect.
        answered: Usable answers (predictions other than ``-1``).
        matches: Answers equal to the trigger label.
        agreement: ``matches / n`` (unanswered images count as misses).
        p_value: ``P(X >= matches)`` for ``X ~ Binomial(n, 1 / num_classes)``: the chance that
            an unrelated model does at least as well.
        num_classes: Classes the trigger labels were drawn from.
        alpha: Significance level.
        threshold: Matches needed at ``alpha`` (``n + 1`` when no outcome suffices).
        positive: ``p_value <= alpha`` (which needs at least ``threshold`` answers).
        failed: Queries that failed (transport or malformed answers).
        reason: Why the evidence is not positive, when it is not.
    """

    n: int
    queried: int
    answered: int
    matches: int
    agreement: float
    p_value: float
    num_classes: int
    alpha: float
    threshold: int
    positive: bool
    failed: int = 0
    reason: str | None = None

    @property
    def inconclusive(self) -> bool:
        """Not positive, and too few answers to ever reach ``threshold`` (a dead or refusing suspect)."""
        return not self.positive and self.answered < self.threshold

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the fields plus ``inconclusive``."""
        d = asdict(self)
        d["inconclusive"] = self.inconclusive
        return d


def trigger_evidence(
    predicted: torch.Tensor | Sequence[int],
    triggers: TriggerSet,
    *,
    alpha: float = DEFAULT_ALPHA,
    queried: int | None = None,
    failed: int = 0,
) -> TriggerEvidence:
    """Compare a suspect's answers with the trigger labels: agreement and exact p-value.

    Args:
        predicted (`torch.Tensor`): ``int64`` tensor of ``N`` predicted labels, ``-1`` where
            the suspect gave no usable answer. Missing answers count as misses: the p-value
            is over all ``N`` images, so they can only lower the evidence.
        triggers (`TriggerSet`): The owner's trigger set.
        alpha (`float`, *optional*, defaults to 1e-6): Significance level.
        queried (`int`, *optional*): Images actually sent (defaults to ``N``).
        failed (`int`, *optional*, defaults to 0): Queries that failed.

    Returns:
        The :class:`TriggerEvidence`.

    Raises:
        ValueError: ``predicted`` does not hold one integer per trigger image, or ``alpha``
            is outside ``(0, 1]``.

    Example:
        >>> t = make_trigger_set(100, num_classes=10, seed=0)
        >>> pred = t.labels.clone(); pred[:40] = -1           # 40 unanswered, 60 right
        >>> ev = trigger_evidence(pred, t)
        >>> ev.matches, ev.agreement, ev.positive
        (60, 0.6, True)
    """
    pred = torch.as_tensor(predicted).detach().cpu()
    n = len(triggers)
    if pred.dim() != 1 or len(pred) != n:
        raise ValueError(f"predicted must hold one label per trigger image ({n}), got shape {tuple(pred.shape)}.")
    if pred.is_floating_point():
        raise ValueError("predicted must hold integer labels (-1 for missing answers).")
    pred = pred.to(torch.int64)
    answered = int((pred != -1).sum())
    matches = int((pred == triggers.labels).sum())
    p = trigger_p_value(matches, n, triggers.num_classes)
    threshold = binomial_threshold(n, 1.0 / triggers.num_classes, alpha)
    positive = p <= alpha and answered >= threshold
    reason = None
    if not positive:
        if answered < threshold:
            reason = (f"only {answered} of {n} trigger images were answered; {threshold} matches are needed at "
                      f"alpha={alpha:g}, so the test could not be positive")
        else:
            reason = (f"{matches} of {n} trigger labels matched ({threshold} needed at alpha={alpha:g}); "
                      f"p={p:.3g} is consistent with chance (1/{triggers.num_classes})")
        if failed:
            reason += f"; {failed} queries failed"
    return TriggerEvidence(n=n, queried=n if queried is None else int(queried), answered=answered, matches=matches,
                           agreement=matches / n, p_value=p, num_classes=triggers.num_classes, alpha=float(alpha),
                           threshold=threshold, positive=positive, failed=int(failed), reason=reason)


@torch.no_grad()
def predict_labels(
    model: nn.Module,
    triggers: TriggerSet,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    image_size: int | None = None,
    channels: int | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """White-box query: the labels an in-memory model gives the trigger images.

    The set is first converted to ``channels`` (default: the model's ``config.in_chans``,
    else the set's) and ``image_size`` (default: the set's), then normalised with
    ``mean``/``std`` — the constants of the data the model was trained on. For endpoints
    and untrusted callables use :func:`hf_lottery_verify.blackbox.query_labels`.

    Args:
        model (`nn.Module`): A model returning logits or an output with ``.logits``.
        triggers (`TriggerSet`): The trigger set.
        mean (`Sequence[float]`): Per-channel normalisation mean (fraction of 255).
        std (`Sequence[float]`): Per-channel normalisation standard deviation.
        image_size (`int`, *optional*): Side the model expects.
        channels (`int`, *optional*): Channels the model expects.
        batch_size (`int`, *optional*, defaults to 256): Images per forward pass.

    Returns:
        ``int64`` CPU tensor of ``N`` labels (arg-max of the logits).
    """
    config = getattr(model, "config", None)
    channels = channels or getattr(config, "in_chans", None) or triggers.channels
    adapted = triggers.resized(image_size=image_size or triggers.image_size, channels=int(channels))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(adapted), batch_size):
            x = normalize(adapted.images[start: start + batch_size].to(device), tuple(mean), tuple(std))
            result = model(x)
            out.append(getattr(result, "logits", result).float().argmax(1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).to(torch.int64)
