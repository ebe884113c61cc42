"""Fashion-MNIST from IDX files: :func:`read_idx` and the loader that reads Debian's
``dataset-fashion-mnist`` files (:data:`FASHION_MNIST_DIR`), falling back to the Hub's
``zalando-datasets/fashion_mnist``."""

from __future__ import annotations

import gzip
import logging
import os
import struct
from pathlib import Path

import numpy as np
import torch

from ..errors import DatasetError
from .hf_datasets import _hub_pair
from .image_data import DatasetPair, ImageData

__all__ = ["read_idx", "FASHION_MNIST_DIR", "FMNIST_MEAN", "FMNIST_STD", "FMNIST_CLASSES"]

logger = logging.getLogger(__name__)

FASHION_MNIST_DIR = Path(os.environ.get("HF_LOTTERY_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
FMNIST_MEAN, FMNIST_STD = (0.2860,), (0.3530,)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed), as used by MNIST and Fashion-MNIST.

    Args:
        path: The file.

    Returns:
        The array (uint8 for image and label files).

    Raises:
        DatasetError: The file is missing, truncated or not IDX.
    """
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DatasetError(f"Cannot read IDX file {path}: {exc}.") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path} is not an unsigned-byte IDX file.")
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DatasetError(f"{path} is truncated: {data.size} values for shape {dims}.")
    return data.reshape(dims)


FMNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                  "Ankle boot"]


def _fashion_mnist(*, data_dir=None, seed: int = 0) -> DatasetPair:  # noqa: ANN001
    folder = Path(data_dir) if data_dir else FASHION_MNIST_DIR
    files = {
        split: (folder / f"{prefix}-images-idx3-ubyte.gz", folder / f"{prefix}-labels-idx1-ubyte.gz")
        for split, prefix in (("train", "train"), ("test", "t10k"))
    }
    if all(p.is_file() for pair in files.values() for p in pair):
        out = {}
        for split, (img_path, lbl_path) in files.items():
            images = torch.from_numpy(read_idx(img_path).copy()).unsqueeze(1)
            labels = torch.from_numpy(read_idx(lbl_path).astype(np.int64))
            out[split] = ImageData(images, labels, 10, FMNIST_MEAN, FMNIST_STD, "fashion_mnist", FMNIST_CLASSES)
        return DatasetPair(**out)
    logger.info("Fashion-MNIST IDX files not found in %s; trying Hugging Face datasets.", folder)
    return _hub_pair("fashion_mnist", image_column="image", label_column="label", mean=FMNIST_MEAN, std=FMNIST_STD,
                     data_dir=data_dir)
