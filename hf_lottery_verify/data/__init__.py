"""Datasets by name, held as uint8 image tensors, and fast batches with on-device augmentation.

Every dataset becomes an :class:`ImageData`: ``images`` (``uint8``, ``N×C×H×W``) and
``labels`` (``int64``) plus its normalisation constants. Image datasets of this size
(CIFAR: 150 MB, Fashion-MNIST: 47 MB) fit on any accelerator, so training batches are
cut and augmented *on the device* (random crop with padding, horizontal flip) from a
seeded permutation: no DataLoader workers, no per-sample Python, and the same seed gives
the same batches. On a CPU the same code runs as a plain tensor path.

Names (:func:`list_datasets`):

* ``cifar10``, ``cifar100`` — Hugging Face ``datasets`` (``uoft-cs/cifar10``,
  ``uoft-cs/cifar100``), used when the Hub (or its cache) is reachable;
* ``fashion_mnist`` — the Debian ``dataset-fashion-mnist`` IDX files under
  ``/usr/share/datasets/fashion-mnist`` when present, else ``zalando-datasets/fashion_mnist``;
* ``imagefolder:<path>`` — a local folder with one sub-folder per class (HF ``imagefolder``);
* ``synthetic`` — a seeded, learnable toy dataset for tests and smoke runs;
* a ``datasets.Dataset`` or ``DatasetDict`` the user holds (image and label columns by option).

Modules (one concept each; every name is importable from ``hf_lottery_verify.data``):

* :mod:`.seeding` — :func:`derive_seed`, seeds derived from named parts.
* :mod:`.image_data` — :class:`ImageData` (one split) and :class:`DatasetPair` (train and test).
* :mod:`.registry` — :func:`load_image_dataset`, :func:`list_datasets`, :func:`register_dataset`.
* :mod:`.hf_datasets` — :func:`hf_to_image_data` (a user's ``datasets`` objects, which
  :func:`load_image_dataset` also takes),
  CIFAR-10/100 from the Hub, image folders.
* :mod:`.fashion_mnist` — :func:`read_idx` and Fashion-MNIST from IDX files (:data:`FASHION_MNIST_DIR`).
* :mod:`.synthetic` — :func:`make_synthetic`, the seeded toy dataset.
* :mod:`.normalization` — :func:`normalize`, :class:`Normalizer`, and the model's statistics
  (:func:`resolve_normalization`, :func:`record_data_statistics`, :func:`normalized_for`).
* :mod:`.device` — :class:`DeviceData`, :func:`augment_batch` and :class:`DeviceBatches`.
"""

from __future__ import annotations

from .device import DeviceBatches, DeviceData, augment_batch
from .fashion_mnist import FASHION_MNIST_DIR, read_idx
from .fashion_mnist import FMNIST_CLASSES as FMNIST_CLASSES
from .hf_datasets import HUB_IDS, hf_to_image_data
from .image_data import DatasetPair, ImageData
from .normalization import (
    Normalizer,
    normalize,
    normalized_for,
    pil_to_model_input,
    record_data_statistics,
    resolve_normalization,
)
from .registry import list_datasets, load_image_dataset, register_dataset
from .seeding import derive_seed
from .synthetic import make_synthetic

__all__ = [
    "ImageData",
    "DatasetPair",
    "load_image_dataset",
    "list_datasets",
    "register_dataset",
    "hf_to_image_data",
    "HUB_IDS",
    "read_idx",
    "make_synthetic",
    "DeviceBatches",
    "DeviceData",
    "Normalizer",
    "augment_batch",
    "normalize",
    "resolve_normalization",
    "record_data_statistics",
    "normalized_for",
    "pil_to_model_input",
    "derive_seed",
    "FASHION_MNIST_DIR",
]
