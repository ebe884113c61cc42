"""Datasets read through Hugging Face ``datasets``: PIL splits converted to :class:`~.image_data.ImageData`
(:func:`hf_to_image_data`), CIFAR-10/100 from the Hub (``uoft-cs/cifar10``, ``uoft-cs/cifar100``)
and local image folders (the ``imagefolder`` builder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DatasetError
from .image_data import DatasetPair, ImageData

__all__ = ["hf_to_image_data", "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD"]

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


def hf_to_image_data(
    ds: Any,
    *,
    image_column: str,
    label_column: str,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    name: str,
    num_classes: int | None = None,
    image_size: int | None = None,
    in_chans: int | None = None,
) -> ImageData:
    """Convert a Hugging Face ``datasets.Dataset`` of PIL images into :class:`ImageData`.

    Args:
        ds: The dataset split.
        image_column: Column holding images.
        label_column: Column holding integer labels.
        mean, std: Normalisation constants to attach.
        name: Dataset name.
        num_classes: Class count (from the ``ClassLabel`` feature when omitted).
        image_size: Resize to this square size when given (bilinear).
        in_chans: Force 1 (grayscale) or 3 (RGB) channels; inferred when omitted.

    Returns:
        The split as uint8 tensors.
    """
    from PIL import Image

    class_names = None
    feature = ds.features.get(label_column) if hasattr(ds, "features") else None
    if feature is not None and hasattr(feature, "names"):
        class_names = list(feature.names)
        num_classes = num_classes or len(class_names)
    arrays = []
    for img in ds[image_column]:
        if not isinstance(img, Image.Image):
            img = Image.fromarray(np.asarray(img))
        chans = in_chans or (1 if img.mode in ("L", "1", "I", "I;16") else 3)
        img = img.convert("L" if chans == 1 else "RGB")
        if image_size and img.size != (image_size, image_size):
            img = img.resize((image_size, image_size), Image.BILINEAR)
        a = np.asarray(img, dtype=np.uint8)
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    if not arrays:
        raise DatasetError(f"Dataset '{name}' split is empty.")
    images = torch.from_numpy(np.stack(arrays))
    labels = torch.as_tensor(list(ds[label_column]), dtype=torch.long)
    num_classes = num_classes or int(labels.max()) + 1
    if images.shape[1] != len(mean):
        mean, std = (sum(mean) / len(mean),) * images.shape[1], (sum(std) / len(std),) * images.shape[1]
    return ImageData(images, labels, num_classes, tuple(mean), tuple(std), name, class_names)


def _hub_pair(repo: str, *, image_column: str, label_column: str, mean, std, name: str, data_dir) -> DatasetPair:
    try:
        import datasets

        dd = datasets.load_dataset(repo, cache_dir=str(data_dir) if data_dir else None)
    except Exception as exc:  # network, missing cache, ...: one clear error for the user
        raise DatasetError(
            f"Could not load '{repo}' with Hugging Face datasets ({type(exc).__name__}: {exc}). "
            "Connect to the Hub once to fill the cache, set HF_DATASETS_OFFLINE=1 with a filled cache, "
            "or use a local dataset ('fashion_mnist' from Debian's dataset-fashion-mnist, 'imagefolder:<path>')."
        ) from exc
    return DatasetPair(
        train=hf_to_image_data(dd["train"], image_column=image_column, label_column=label_column,
                               mean=mean, std=std, name=name),
        test=hf_to_image_data(dd["test"], image_column=image_column, label_column=label_column,
                              mean=mean, std=std, name=name),
    )


def _cifar10(*, data_dir=None, seed: int = 0) -> DatasetPair:  # noqa: ANN001
    return _hub_pair("uoft-cs/cifar10", image_column="img", label_column="label",
                     mean=CIFAR10_MEAN, std=CIFAR10_STD, name="cifar10", data_dir=data_dir)


def _cifar100(*, data_dir=None, seed: int = 0) -> DatasetPair:  # noqa: ANN001
    return _hub_pair("uoft-cs/cifar100", image_column="img", label_column="fine_label",
                     mean=CIFAR100_MEAN, std=CIFAR100_STD, name="cifar100", data_dir=data_dir)


def _load_imagefolder(path: Path, *, image_size: int = 32, test_fraction: float = 0.2, seed: int = 0) -> DatasetPair:
    if not path.is_dir():
        raise DatasetError(f"Image folder {path} does not exist.")
    import datasets

    try:
        dd = datasets.load_dataset("imagefolder", data_dir=str(path))
    except Exception as exc:
        raise DatasetError(f"Cannot read image folder {path}: {exc}") from exc
    if "test" not in dd:
        dd = dd["train"].train_test_split(test_size=test_fraction, seed=seed, stratify_by_column="label")
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    make = lambda split: hf_to_image_data(  # noqa: E731
        dd[split], image_column="image", label_column="label", mean=mean, std=std, name=f"imagefolder:{path.name}",
        image_size=image_size, in_chans=3)
    return DatasetPair(train=make("train"), test=make("test"))
