"""Datasets by name: :func:`load_image_dataset`, :func:`list_datasets` and
:func:`register_dataset`; the built-in names map to the loaders of the source modules."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import DatasetError, UnknownNameError
from .fashion_mnist import _fashion_mnist
from .hf_datasets import _cifar10, _cifar100, _load_imagefolder, hf_pair
from .image_data import DatasetPair
from .seeding import derive_seed
from .synthetic import _synthetic

__all__ = ["load_image_dataset", "list_datasets", "register_dataset"]


_LOADERS: dict[str, Callable[..., DatasetPair]] = {
    "cifar10": _cifar10,
    "cifar100": _cifar100,
    "fashion_mnist": _fashion_mnist,
    "synthetic": _synthetic,
}


def register_dataset(name: str) -> Callable[[Callable[..., DatasetPair]], Callable[..., DatasetPair]]:
    """Register a loader ``fn(*, data_dir, seed, **options) -> DatasetPair`` under ``name``."""

    def deco(fn: Callable[..., DatasetPair]) -> Callable[..., DatasetPair]:
        if name in _LOADERS:
            warnings.warn(f"Overwriting the dataset loader '{name}'.", stacklevel=2)
        _LOADERS[name] = fn
        return fn

    return deco


def list_datasets() -> list[str]:
    """Registered dataset names (plus the ``imagefolder:<path>`` form)."""
    return sorted(_LOADERS)


def load_image_dataset(
    name: str | Any,
    *,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    train_limit: int | None = None,
    test_limit: int | None = None,
    **options: Any,
) -> DatasetPair:
    """Load a dataset by name, or convert one a user holds.

    Every split carries its normalisation statistics (the dataset's own for the built-in
    names, else the training split's) and, when the data knows them, its class names: IMP
    and retraining copy both into the model's config.

    Args:
        name: ``cifar10``, ``cifar100``, ``fashion_mnist``, ``synthetic``, ``imagefolder:<path>``,
            or a ``datasets.DatasetDict`` (``train`` and ``test`` or ``validation`` splits) or
            ``datasets.Dataset`` (split here by ``test_fraction``, stratified by a ``ClassLabel``).
        data_dir: Where the dataset's files are (IDX folder for Fashion-MNIST, HF cache for
            Hub datasets); defaults per dataset.
        seed: Seed for synthetic data and for subsetting.
        train_limit: Keep at most this many (seeded random) training samples.
        test_limit: Keep at most this many test samples.
        **options: Loader-specific options: ``image_size`` (imagefolder, synthetic, datasets),
            ``image_column`` and ``label_column`` (datasets; ``"image"`` and ``"label"`` by
            default), ``test_fraction`` (imagefolder, a single ``datasets.Dataset``; 0.2).

    Returns:
        Train and test splits.

    Raises:
        UnknownNameError: Unknown dataset name.
        DatasetError: The dataset cannot be found or read.
    """
    if not isinstance(name, str):
        if not hasattr(name, "column_names"):
            raise DatasetError(f"load_image_dataset takes a name, 'imagefolder:<path>' or a datasets.Dataset / "
                               f"DatasetDict, got {type(name).__name__}.")
        pair = hf_pair(name, seed=seed, **options)
    elif name.startswith("imagefolder:"):
        pair = _load_imagefolder(Path(name.split(":", 1)[1]), seed=seed, **options)
    elif name in _LOADERS:
        pair = _LOADERS[name](data_dir=data_dir, seed=seed, **options)
    else:
        raise UnknownNameError("dataset", name, available=[*list_datasets(), "imagefolder:<path>"])
    if train_limit:
        pair.train = pair.train.subset(train_limit, seed=derive_seed(seed, "train_limit"))
    if test_limit:
        pair.test = pair.test.subset(test_limit, seed=derive_seed(seed, "test_limit"))
    return pair
