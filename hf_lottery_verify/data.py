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
* ``synthetic`` — a seeded, learnable toy dataset for tests and smoke runs.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DatasetError, UnknownNameError

__all__ = [
    "ImageData",
    "DatasetPair",
    "load_image_dataset",
    "list_datasets",
    "register_dataset",
    "hf_to_image_data",
    "read_idx",
    "make_synthetic",
    "DeviceBatches",
    "DeviceData",
    "Normalizer",
    "augment_batch",
    "normalize",
    "derive_seed",
    "FASHION_MNIST_DIR",
]

logger = logging.getLogger(__name__)

FASHION_MNIST_DIR = Path(os.environ.get("HF_LOTTERY_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
FMNIST_MEAN, FMNIST_STD = (0.2860,), (0.3530,)


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed derived from named parts (``derive_seed(seed, "epoch", 3)``).

    Hashing canonical text avoids ad-hoc ``seed + epoch`` arithmetic, whose streams overlap.
    """
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@dataclass
class ImageData:
    """Images and labels of one split.

    Attributes:
        images: ``uint8`` tensor ``N×C×H×W``.
        labels: ``int64`` tensor ``N``.
        num_classes: Number of classes.
        mean, std: Per-channel normalisation constants (fractions of 255).
        name: Dataset name, for logs and model cards.
        class_names: Optional label names.
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str = "data"
    class_names: list[str] | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DatasetError(f"images must be a uint8 N×C×H×W tensor, got {self.images.dtype} {tuple(self.images.shape)}.")
        if self.labels.dim() != 1 or len(self.labels) != len(self.images):
            raise DatasetError(f"{len(self.labels)} labels for {len(self.images)} images.")
        self.labels = self.labels.long()
        if len(self.mean) != self.images.shape[1] or len(self.std) != self.images.shape[1]:
            raise DatasetError(f"mean/std need {self.images.shape[1]} channel values.")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def in_chans(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def subset(self, n: int, *, seed: int = 0) -> ImageData:
        """A seeded random subset of ``n`` samples (all of them when ``n >= len``)."""
        if n >= len(self):
            return self
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n].sort().values
        return ImageData(self.images[idx], self.labels[idx], self.num_classes, self.mean, self.std, self.name,
                         self.class_names)


@dataclass
class DatasetPair:
    """Train and test splits of one dataset."""

    train: ImageData
    test: ImageData

    @property
    def num_classes(self) -> int:
        return self.train.num_classes


# --------------------------------------------------------------------------- registry

_LOADERS: dict[str, Callable[..., DatasetPair]] = {}


def register_dataset(name: str) -> Callable[[Callable[..., DatasetPair]], Callable[..., DatasetPair]]:
    """Register a loader ``fn(*, data_dir, seed, **options) -> DatasetPair`` under ``name``."""

    def deco(fn: Callable[..., DatasetPair]) -> Callable[..., DatasetPair]:
        if name in _LOADERS:
            logger.warning("Overwriting dataset loader '%s'.", name)
        _LOADERS[name] = fn
        return fn

    return deco


def list_datasets() -> list[str]:
    """Registered dataset names (plus the ``imagefolder:<path>`` form)."""
    return sorted(_LOADERS)


def load_image_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    train_limit: int | None = None,
    test_limit: int | None = None,
    **options: Any,
) -> DatasetPair:
    """Load a dataset by name.

    Args:
        name: ``cifar10``, ``cifar100``, ``fashion_mnist``, ``synthetic`` or ``imagefolder:<path>``.
        data_dir: Where the dataset's files are (IDX folder for Fashion-MNIST, HF cache for
            Hub datasets); defaults per dataset.
        seed: Seed for synthetic data and for subsetting.
        train_limit: Keep at most this many (seeded random) training samples.
        test_limit: Keep at most this many test samples.
        **options: Loader-specific options (``image_size`` for imagefolder/synthetic, ...).

    Returns:
        Train and test splits.

    Raises:
        UnknownNameError: Unknown dataset name.
        DatasetError: The dataset cannot be found or read.
    """
    if name.startswith("imagefolder:"):
        pair = _load_imagefolder(Path(name.split(":", 1)[1]), **options)
    elif name in _LOADERS:
        pair = _LOADERS[name](data_dir=data_dir, seed=seed, **options)
    else:
        raise UnknownNameError("dataset", name, available=[*list_datasets(), "imagefolder:<path>"])
    if train_limit:
        pair.train = pair.train.subset(train_limit, seed=derive_seed(seed, "train_limit"))
    if test_limit:
        pair.test = pair.test.subset(test_limit, seed=derive_seed(seed, "test_limit"))
    return pair


# --------------------------------------------------------------------------- Hugging Face datasets


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


@register_dataset("cifar10")
def _cifar10(*, data_dir=None, seed: int = 0) -> DatasetPair:  # noqa: ANN001
    return _hub_pair("uoft-cs/cifar10", image_column="img", label_column="label",
                     mean=CIFAR10_MEAN, std=CIFAR10_STD, name="cifar10", data_dir=data_dir)


@register_dataset("cifar100")
def _cifar100(*, data_dir=None, seed: int = 0) -> DatasetPair:  # noqa: ANN001
    return _hub_pair("uoft-cs/cifar100", image_column="img", label_column="fine_label",
                     mean=CIFAR100_MEAN, std=CIFAR100_STD, name="cifar100", data_dir=data_dir)


# --------------------------------------------------------------------------- Fashion-MNIST (IDX)


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


@register_dataset("fashion_mnist")
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
    return _hub_pair("zalando-datasets/fashion_mnist", image_column="image", label_column="label",
                     mean=FMNIST_MEAN, std=FMNIST_STD, name="fashion_mnist", data_dir=data_dir)


# --------------------------------------------------------------------------- image folders and synthetic data


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


def make_synthetic(
    *,
    num_classes: int = 10,
    train_size: int = 2048,
    test_size: int = 512,
    image_size: int = 16,
    in_chans: int = 3,
    noise: float = 0.35,
    seed: int = 0,
) -> DatasetPair:
    """A seeded toy dataset that small ResNets learn in a few epochs.

    Each class has a smooth random template; a sample is its template, shifted by up to
    ``image_size // 8`` pixels, plus Gaussian noise.

    Args:
        num_classes: Number of classes.
        train_size: Training samples.
        test_size: Test samples.
        image_size: Square image side.
        in_chans: Channels.
        noise: Noise level relative to the template contrast.
        seed: Seed; the same seed gives the same data.

    Returns:
        Train and test splits.
    """
    gen = torch.Generator().manual_seed(derive_seed(seed, "synthetic-templates"))
    coarse = torch.rand(num_classes, in_chans, 4, 4, generator=gen)
    templates = F.interpolate(coarse, size=(image_size, image_size), mode="bilinear", align_corners=False)

    def split(n: int, tag: str) -> ImageData:
        g = torch.Generator().manual_seed(derive_seed(seed, "synthetic", tag))
        labels = torch.randint(0, num_classes, (n,), generator=g)
        x = templates[labels]
        reach = max(1, image_size // 8)
        shifts = torch.randint(-reach, reach + 1, (n, 2), generator=g)
        x = torch.stack([torch.roll(img, (int(s[0]), int(s[1])), dims=(1, 2)) for img, s in zip(x, shifts, strict=True)])
        x = x + noise * torch.randn(x.shape, generator=g) * 0.5
        images = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        mean = tuple(float(v) for v in (images.float() / 255).mean(dim=(0, 2, 3)))
        std = tuple(float(v) for v in (images.float() / 255).std(dim=(0, 2, 3)))
        return ImageData(images, labels, num_classes, mean, std, "synthetic")

    train = split(train_size, "train")
    test = split(test_size, "test")
    test.mean, test.std = train.mean, train.std
    return DatasetPair(train=train, test=test)


@register_dataset("synthetic")
def _synthetic(*, data_dir=None, seed: int = 0, **options: Any) -> DatasetPair:  # noqa: ANN001
    return make_synthetic(seed=seed, **options)


# --------------------------------------------------------------------------- batches


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


class DeviceData:
    """One split held on a device: its uint8 images and labels uploaded once, with a :class:`Normalizer`.

    Training batches (:class:`DeviceBatches`) and evaluation (:func:`~hf_lottery_verify.training.evaluate`)
    read from it, so a run copies each split to the device once, however many epochs,
    evaluations, IMP rounds or retraining arms it has.

    Args:
        data: The split.
        device: Where to hold it.

    Attributes:
        data: The split (on the host).
        device: The device, with its index (``cuda:0``).
        images: uint8 ``N×C×H×W`` on ``device``.
        labels: int64 ``N`` on ``device``.
        normalizer: The split's :class:`Normalizer`.
    """

    def __init__(self, data: ImageData, device: torch.device | str = "cpu") -> None:
        self.data = data
        self.images = data.images.to(device)
        self.labels = data.labels.to(device)
        self.device = self.images.device
        self.normalizer = Normalizer(data.mean, data.std)

    def __len__(self) -> int:
        return len(self.labels)

    def shard_bounds(self, shard: int = 0, num_shards: int = 1) -> tuple[int, int]:
        """``[start, stop)`` of shard ``shard``: contiguous slices that cover every sample exactly once."""
        per = -(-len(self) // max(1, num_shards))
        return min(len(self), shard * per), min(len(self), (shard + 1) * per)

    def batches(self, batch_size: int, *, start: int = 0, stop: int | None = None,
                channels_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised, unaugmented ``(images, labels)`` batches of samples ``[start, stop)`` in order."""
        stop = len(self) if stop is None else stop
        for i in range(start, stop, batch_size):
            j = min(stop, i + batch_size)
            yield self.normalizer(self.images[i:j], channels_last=channels_last), self.labels[i:j]


def augment_batch(images: torch.Tensor, *, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, vectorised over the batch.

    Args:
        images: uint8 (or float) ``B×C×H×W`` on any device.
        pad: Padding on each side; crops are drawn uniformly from the padded image.
        flip: Flip each image horizontally with probability ½.
        generator: Generator on the images' device (seeded by the caller).

    Returns:
        Augmented images, same shape, dtype and device.
    """
    b, c, h, w = images.shape
    dev = images.device
    if pad > 0:
        padded = F.pad(images, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=generator)
        rows = (dy[:, None] + torch.arange(h, device=dev)).view(b, 1, h, 1)
        cols = (dx[:, None] + torch.arange(w, device=dev)).view(b, 1, 1, w)
        bi = torch.arange(b, device=dev).view(b, 1, 1, 1)
        ci = torch.arange(c, device=dev).view(1, c, 1, 1)
        images = padded[bi, ci, rows, cols]
    if flip:
        do = torch.rand(b, device=dev, generator=generator) < 0.5
        images = torch.where(do.view(b, 1, 1, 1), images.flip(3), images)
    return images


@dataclass
class DeviceBatches:
    """Seeded, shardable training batches cut from device-resident uint8 images.

    Batch ``i`` of epoch ``e`` depends only on ``(seed, e, i)``, so a resumed run sees the
    same batches as an uninterrupted one. With ``num_shards > 1`` (one per process) each
    process takes its slice of every global batch. Nothing in an epoch waits on the host:
    the epoch's order is uploaded once (without blocking), and the images, labels and
    normalisation constants stay on the device.

    Args:
        data: The training split.
        batch_size: Per-process batch size.
        device: Where images live and augmentation runs.
        seed: Base seed.
        augment: Apply random crop (``pad``) and flip.
        pad: Crop padding (4 for 32-px CIFAR, 2 for 28-px Fashion-MNIST is typical).
        channels_last: Return channels-last tensors.
        shard: This process's index.
        num_shards: Number of processes.
        drop_last: Drop the last incomplete global batch.
        uploaded: ``data`` already on ``device`` (a :class:`DeviceData`), shared instead of
            uploading it again; :meth:`reseeded` passes it on.
    """

    data: ImageData
    batch_size: int
    device: torch.device | str = "cpu"
    seed: int = 0
    augment: bool = True
    pad: int = 4
    flip: bool = True
    channels_last: bool = False
    shard: int = 0
    num_shards: int = 1
    drop_last: bool = True
    uploaded: DeviceData | None = field(default=None, repr=False)
    _images: torch.Tensor = field(init=False, repr=False)
    _labels: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.uploaded is None:
            self.uploaded = DeviceData(self.data, self.device)
        elif self.uploaded.data is not self.data:
            raise ValueError("uploaded holds another split than data; pass DeviceData(data, device).")
        elif self.uploaded.device != torch.empty(0, device=self.device).device:
            raise ValueError(f"uploaded lives on {self.uploaded.device}, the batches on {self.device}.")
        self.device = self.uploaded.device
        self._images = self.uploaded.images
        self._labels = self.uploaded.labels

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.num_shards

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.global_batch if self.drop_last else -(-n // self.global_batch)

    def reseeded(self, seed: int) -> DeviceBatches:
        """The same batches with another base seed, sharing the uploaded data (no copy)."""
        return replace(self, seed=seed)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised ``(images, labels)`` batches of one epoch for this shard."""
        perm_gen = torch.Generator().manual_seed(derive_seed(self.seed, "order", epoch))
        order = torch.randperm(len(self.data), generator=perm_gen)
        if self.device.type == "cuda":
            order = order.pin_memory().to(self.device, non_blocking=True)
        else:
            order = order.to(self.device)
        aug_gen = torch.Generator(device=self.device).manual_seed(derive_seed(self.seed, "augment", epoch, self.shard))
        normalizer = self.uploaded.normalizer
        for i in range(len(self)):
            idx = order[i * self.global_batch : (i + 1) * self.global_batch][self.shard :: self.num_shards]
            x = self._images[idx]
            if self.augment:
                x = augment_batch(x, pad=self.pad, flip=self.flip, generator=aug_gen)
            yield normalizer(x, channels_last=self.channels_last), self._labels[idx]
