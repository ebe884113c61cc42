"""Datasets read through Hugging Face ``datasets``: PIL splits converted to :class:`~.image_data.ImageData`
(:func:`hf_to_image_data`), CIFAR-10/100 from the Hub (``uoft-cs/cifar10``, ``uoft-cs/cifar100``)
and local image folders (the ``imagefolder`` builder)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DatasetError
from .image_data import DatasetPair, ImageData

__all__ = ["hf_to_image_data", "HUB_IDS", "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD"]

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
HUB_IDS = {"cifar10": "uoft-cs/cifar10", "cifar100": "uoft-cs/cifar100", "fashion_mnist": "zalando-datasets/fashion_mnist"}
"""The Hub datasets behind the built-in names (also what a model card's ``datasets`` lists)."""


def hf_to_image_data(
    ds: Any,
    *,
    image_column: str,
    label_column: str,
    name: str,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    num_classes: int | None = None,
    image_size: int | None = None,
    in_chans: int | None = None,
) -> ImageData:
    """Convert a Hugging Face ``datasets.Dataset`` of images into :class:`ImageData`.

    Args:
        ds: The dataset split.
        image_column: Column holding images (PIL images or arrays).
        label_column: Column holding integer labels (a ``ClassLabel`` feature gives the class names).
        name: Dataset name.
        mean, std: Normalisation constants to attach; the split's own statistics when omitted.
        num_classes: Class count (from the ``ClassLabel`` feature when omitted).
        image_size: Resize to this square size (bilinear); the first image's size when omitted.
        in_chans: 1 (grayscale) or 3 (RGB); the first image's when omitted.

    Returns:
        The split as uint8 tensors.

    Raises:
        DatasetError: A column is missing or the split is empty.
    """
    from PIL import Image

    missing = [c for c in (image_column, label_column) if c not in ds.column_names]
    if missing:
        raise DatasetError(f"Dataset '{name}' has no column {missing[0]!r} (columns: {ds.column_names}); pass "
                           "image_column= and label_column=.")
    feature = ds.features.get(label_column)
    class_names = list(feature.names) if hasattr(feature, "names") else None
    arrays, size = [], None
    for img in ds[image_column]:
        if not isinstance(img, Image.Image):
            img = Image.fromarray(np.asarray(img))
        in_chans = in_chans or (1 if img.mode in ("L", "1", "I", "I;16", "F") else 3)
        size = size or ((image_size, image_size) if image_size else img.size)
        img = img.convert("L" if in_chans == 1 else "RGB")
        if img.size != size:
            img = img.resize(size, Image.BILINEAR)
        a = np.asarray(img, dtype=np.uint8)
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    if not arrays:
        raise DatasetError(f"Dataset '{name}' split is empty.")
    images = torch.from_numpy(np.stack(arrays))
    labels = torch.as_tensor(list(ds[label_column]), dtype=torch.long)
    num_classes = num_classes or (len(class_names) if class_names else int(labels.max()) + 1)
    if mean is None or std is None:
        pixels = images.float().div_(255).transpose(0, 1).reshape(images.shape[1], -1)
        mean, std = tuple(pixels.mean(1).tolist()), tuple(pixels.std(1).clamp_min(1e-3).tolist())
    if images.shape[1] != len(mean):
        mean, std = (sum(mean) / len(mean),) * images.shape[1], (sum(std) / len(std),) * images.shape[1]
    return ImageData(images, labels, num_classes, tuple(mean), tuple(std), name, class_names)


def hf_pair(
    source: Any,
    *,
    image_column: str = "image",
    label_column: str = "label",
    name: str | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    image_size: int | None = None,
    in_chans: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> DatasetPair:
    """Train and test splits from a ``datasets.DatasetDict`` (``train`` and ``test`` or ``validation``) or a
    ``datasets.Dataset`` (split here: ``test_fraction`` of it, stratified by a ``ClassLabel`` column).

    Both splits carry the training split's statistics (or ``mean``/``std``), size and channels.
    """
    import datasets

    name = name or getattr(getattr(source, "info", None), "dataset_name", None) or "dataset"
    if isinstance(source, datasets.Dataset):
        if label_column not in source.column_names:
            raise DatasetError(f"Dataset '{name}' has no column {label_column!r} (columns: {source.column_names}).")
        stratify = label_column if isinstance(source.features[label_column], datasets.ClassLabel) else None
        source = source.train_test_split(test_size=test_fraction, seed=seed, stratify_by_column=stratify)
    held_out = next((s for s in ("test", "validation") if s in source), None)
    if "train" not in source or held_out is None:
        raise DatasetError(f"Dataset '{name}' has splits {list(source)}; it needs 'train' and 'test' (or "
                           "'validation'). Pass a single datasets.Dataset to have it split.")
    options = {"image_column": image_column, "label_column": label_column, "name": name}
    train = hf_to_image_data(source["train"], mean=mean, std=std, image_size=image_size, in_chans=in_chans, **options)
    test = hf_to_image_data(source[held_out], mean=train.mean, std=train.std, image_size=train.image_size,
                            in_chans=train.in_chans, num_classes=train.num_classes, **options)
    return DatasetPair(train=train, test=test)


def _hub_pair(name: str, *, label_column: str, mean, std, data_dir=None, image_column: str = "img",
              seed: int = 0) -> DatasetPair:  # the Hub's splits are fixed: no seed to use
    repo = HUB_IDS[name]
    try:
        import datasets

        dd = datasets.load_dataset(repo, cache_dir=str(data_dir) if data_dir else None)
    except Exception as exc:  # network, missing cache, ...: one clear error for the user
        raise DatasetError(
            f"Could not load '{repo}' with Hugging Face datasets ({type(exc).__name__}: {exc}). "
            "Connect to the Hub once to fill the cache, set HF_DATASETS_OFFLINE=1 with a filled cache, "
            "or use a local dataset ('fashion_mnist' from Debian's dataset-fashion-mnist, 'imagefolder:<path>')."
        ) from exc
    return hf_pair(dd, image_column=image_column, label_column=label_column, mean=mean, std=std, name=name)


_cifar10 = partial(_hub_pair, "cifar10", label_column="label", mean=CIFAR10_MEAN, std=CIFAR10_STD)
_cifar100 = partial(_hub_pair, "cifar100", label_column="fine_label", mean=CIFAR100_MEAN, std=CIFAR100_STD)


def _load_imagefolder(path: Path, *, image_size: int = 32, test_fraction: float = 0.2, seed: int = 0) -> DatasetPair:
    if not path.is_dir():
        raise DatasetError(f"Image folder {path} does not exist.")
    import datasets

    try:
        dd = datasets.load_dataset("imagefolder", data_dir=str(path))
    except Exception as exc:
        raise DatasetError(f"Cannot read image folder {path}: {exc}") from exc
    return hf_pair(dd if "test" in dd else dd["train"], name=f"imagefolder:{path.name}", image_size=image_size,
                   in_chans=3, test_fraction=test_fraction, seed=seed)
