"""Adi et al.'s public trigger set (:func:`load_adi_trigger_set`): ``pics/*.jpg`` plus ``labels-cifar.txt``.

Label ``i`` binds to the ``i``-th file name in lexicographic order (``1.jpg, 10.jpg, 100.jpg,
11.jpg, …``), as the original ImageFolder loaders did. The public set is no secret: an owner
should generate their own (:func:`~hf_lottery_verify.triggers.make_trigger_set`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch
from PIL import Image

from ..data import pil_to_model_input
from ..errors import DatasetError
from .sets import TriggerSet

__all__ = ["load_adi_trigger_set"]

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def load_adi_trigger_set(
    path: str | os.PathLike,
    *,
    mode: Literal["resize", "center_crop"],
    num_classes: int = 10,
    image_size: int = 32,
    channels: int = 3,
) -> TriggerSet:
    """Load an Adi-style trigger folder: ``pics/*.jpg`` plus ``labels-cifar.txt``, one float label per line.

    Label ``i`` belongs to the ``i``-th image file in *lexicographic* name order
    (``1.jpg, 10.jpg, 100.jpg, 11.jpg, …``), exactly as the original loaders (torchvision
    ``ImageFolder``) enumerated them.

    Args:
        path (`str` or `os.PathLike`): The folder holding ``pics/`` and ``labels-cifar.txt``.
        mode (`str`): ``"resize"`` — bilinear resize of the whole image to ``image_size``
            (the sane choice); ``"center_crop"`` — the original loaders' ``CenterCrop``: the
            central ``image_size × image_size`` pixels, no resizing (zero-padded if smaller).
        num_classes (`int`, *optional*, defaults to 10): Label range ``[0, num_classes)``.
        image_size (`int`, *optional*, defaults to 32): Output side.
        channels (`int`, *optional*, defaults to 3): 3 (RGB) or 1 (grayscale).

    Returns:
        The :class:`TriggerSet` (``source="adi:<mode>"``, ``seed=None``).

    Raises:
        DatasetError: The folder, ``pics/`` or the labels file is missing; an image cannot be
            read; a label is not an integer in ``[0, num_classes)``; or the label count differs
            from the image count. ``mode`` or ``channels`` is invalid.
    """
    if mode not in ("resize", "center_crop"):
        raise DatasetError(f"mode must be 'resize' or 'center_crop', got {mode!r}.")
    if channels not in (1, 3):
        raise DatasetError(f"channels must be 1 or 3, got {channels}.")
    root = Path(path)
    pics, labels_path = root / "pics", root / "labels-cifar.txt"
    if not root.is_dir():
        raise DatasetError(f"Trigger-set folder {root} does not exist.")
    if not pics.is_dir():
        raise DatasetError(f"{root} has no pics/ folder; an Adi-style trigger set is pics/*.jpg plus {labels_path.name}.")
    if not labels_path.is_file():
        raise DatasetError(f"{root} has no {labels_path.name} (one label per line, in sorted file-name order).")
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
                if mode == "center_crop":
                    img = _center_crop(img.convert("L" if channels == 1 else "RGB"), image_size)
                arrays.append(pil_to_model_input(img, in_chans=channels, image_size=image_size))
        except OSError as exc:
            raise DatasetError(f"Cannot read trigger image {pics / name}: {exc}.") from exc
    return TriggerSet(torch.stack(arrays), torch.tensor(labels, dtype=torch.int64), num_classes, f"adi:{mode}", None)


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


def _center_crop(img: Image.Image, size: int) -> Image.Image:
    """torchvision's ``CenterCrop(size)``: the central ``size × size`` pixels, zero-padded where the image is smaller
    (PIL's crop fills outside the image with zeros)."""
    left, top = (int(round((d - size) / 2.0)) if d >= size else -((size - d) // 2) for d in img.size)
    return img.crop((left, top, left + size, top + size))
