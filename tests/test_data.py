from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import hf_lottery_verify as hlv
from hf_lottery_verify.data import (
    FASHION_MNIST_DIR,
    DeviceBatches,
    ImageData,
    augment_batch,
    hf_to_image_data,
    load_image_dataset,
    make_synthetic,
    read_idx,
    record_data_statistics,
    resolve_normalization,
)

from .helpers import make_model, named_dataset


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_synthetic_is_seeded_and_shaped() -> None:
    a, b = make_synthetic(seed=1, train_size=64, test_size=16), make_synthetic(seed=1, train_size=64, test_size=16)
    c = make_synthetic(seed=2, train_size=64, test_size=16)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.train.labels, b.train.labels)
    assert not torch.equal(a.train.images, c.train.images)
    assert a.train.images.shape == (64, 3, 16, 16) and a.train.images.dtype == torch.uint8
    assert a.test.mean == a.train.mean


def test_idx_reader_and_fashion_mnist_from_idx_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 20), ("t10k", 10)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)))
    pair = load_image_dataset("fashion_mnist", data_dir=tmp_path)
    assert pair.train.images.shape == (20, 1, 28, 28) and len(pair.test) == 10
    assert pair.train.class_names[0] == "T-shirt/top" and pair.num_classes == 10
    raw = (tmp_path / "t10k-images-idx3-ubyte.gz").read_bytes()
    (tmp_path / "bad.gz").write_bytes(gzip.compress(gzip.decompress(raw)[:-10]))
    with pytest.raises(hlv.DatasetError, match="truncated"):
        read_idx(tmp_path / "bad.gz")


@pytest.mark.skipif(not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_debian_package() -> None:
    pair = load_image_dataset("fashion_mnist", test_limit=1000)
    assert pair.train.images.shape == (60000, 1, 28, 28)
    assert len(pair.test) == 1000
    assert torch.bincount(pair.train.labels).tolist() == [6000] * 10


def test_hf_dataset_conversion_with_class_labels() -> None:
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)) for _ in range(6)]
    ds = datasets.Dataset.from_dict(
        {"img": imgs, "label": [0, 1, 2, 0, 1, 2]},
        features=datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])}))
    data = hf_to_image_data(ds, image_column="img", label_column="label", mean=(0.5,) * 3, std=(0.2,) * 3,
                            name="toy", image_size=8)
    assert data.images.shape == (6, 3, 8, 8) and data.num_classes == 3 and data.class_names == ["a", "b", "c"]


def test_image_folder(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    pair = load_image_dataset(f"imagefolder:{tmp_path}", image_size=16)
    assert len(pair.train) + len(pair.test) == 20 and pair.num_classes == 2
    assert pair.train.images.shape[1:] == (3, 16, 16)
    # the split follows the seed (it was always seed 0's)
    again, other = (load_image_dataset(f"imagefolder:{tmp_path}", image_size=16, seed=s) for s in (0, 1))
    assert torch.equal(again.test.images, pair.test.images) and not torch.equal(other.test.images, pair.test.images)


def test_datasets_objects_load_with_their_columns_and_class_names() -> None:
    ds = named_dataset(image_column="picture", label_column="kind")
    pair = load_image_dataset(ds, image_column="picture", label_column="kind", test_fraction=0.25, seed=1)
    assert (len(pair.train), len(pair.test)) == (120, 40) and pair.num_classes == 4
    assert pair.train.class_names == pair.test.class_names == ["sock", "boot", "hat", "scarf"]
    assert torch.bincount(pair.test.labels).tolist() == [10] * 4  # stratified by the ClassLabel
    pixels = pair.train.images.float() / 255  # the training split's own statistics, carried by both splits
    assert pair.train.mean == pytest.approx((pixels.mean().item(),)) and pair.test.mean == pair.train.mean
    assert pair.train.std == pytest.approx((pixels.std().item(),), rel=1e-4)
    as_dict = ds.train_test_split(test_size=0.5, seed=0)
    pair = load_image_dataset(as_dict, image_column="picture", label_column="kind", image_size=4, test_limit=5)
    assert pair.train.images.shape[1:] == (1, 4, 4) and len(pair.test) == 5
    with pytest.raises(hlv.DatasetError, match="no column 'label'"):
        load_image_dataset(ds, image_column="picture")
    with pytest.raises(hlv.DatasetError, match="needs 'train' and 'test'"):
        load_image_dataset(type(as_dict)({"only": ds}), image_column="picture", label_column="kind")
    with pytest.raises(hlv.DatasetError, match="datasets.Dataset"):
        load_image_dataset(42)


def test_normalisation_comes_from_the_config_only() -> None:
    model = make_model(in_chans=1, num_labels=4)
    model.config.image_mean = model.config.image_std = None
    with pytest.raises(hlv.ConfigError, match="declares no input normalisation"):
        resolve_normalization(model)
    assert resolve_normalization(model, 0.2, [0.3], in_chans=1) == ((0.2,), (0.3,))
    data = load_image_dataset(named_dataset(), seed=0).train
    record_data_statistics(model, data)  # a model's first training: the data's statistics, size and names
    assert resolve_normalization(model) == (data.mean, data.std) and model.config.image_size == 8
    assert model.config.id2label == {0: "sock", 1: "boot", 2: "hat", 3: "scarf"} and model.config.label2id["hat"] == 2
    record_data_statistics(model, ImageData(data.images, data.labels, 4, (0.9,), (0.1,), "other"))
    assert resolve_normalization(model) == (data.mean, data.std)  # later data never changes them
    with pytest.raises(hlv.ConfigError, match="2 values for a model with 1"):
        resolve_normalization(model, [0.1, 0.2], [0.3, 0.3], in_chans=1)


def test_unknown_and_unreachable_datasets(monkeypatch) -> None:
    with pytest.raises(hlv.UnknownNameError, match="cifar10"):
        load_image_dataset("imagenet")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hlv.DatasetError, match="Could not load 'uoft-cs/cifar10'"):
        load_image_dataset("cifar10", data_dir="/nonexistent-cache")


def test_device_batches_are_reproducible_and_sharded() -> None:
    data = make_synthetic(train_size=100, test_size=10, image_size=8).train
    one = DeviceBatches(data, 10, seed=3)
    assert len(one) == 10
    e0 = [y for _, y in one.epoch(0)]
    assert all(torch.equal(a, b) for a, b in zip(e0, [y for _, y in one.epoch(0)], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(e0, [y for _, y in one.epoch(1)], strict=True))
    # two shards of batch 5 split every global batch of 10 into disjoint halves
    shards = [DeviceBatches(data, 5, seed=3, shard=i, num_shards=2, augment=False) for i in range(2)]
    plain = DeviceBatches(data, 10, seed=3, augment=False)
    for (xa, _), (xb, _), (x, _) in zip(shards[0].epoch(0), shards[1].epoch(0), plain.epoch(0), strict=True):
        assert torch.equal(torch.cat([xa, xb]).sort(0).values, x.sort(0).values)


def test_augment_without_pad_or_flip_is_identity_and_crops_are_shifts() -> None:
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).view(2, 1, 4, 4)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(augment_batch(x, pad=0, flip=False, generator=g), x)
    out = augment_batch(x, pad=1, flip=False, generator=g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    for i in range(2):  # every crop is a shifted window of the zero-padded image
        padded = torch.nn.functional.pad(x[i], (1, 1, 1, 1))
        windows = [padded[:, r:r + 4, c:c + 4] for r in range(3) for c in range(3)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_image_data_validation() -> None:
    with pytest.raises(hlv.DatasetError, match="uint8"):
        ImageData(torch.zeros(2, 3, 4, 4), torch.zeros(2), 2, (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(hlv.DatasetError, match="labels"):
        ImageData(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(3), 2, (0.5,) * 3, (0.5,) * 3)


def test_normalizer_matches_normalize_and_builds_constants_once() -> None:
    from hf_lottery_verify.data import Normalizer, normalize

    images = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    norm = Normalizer(mean, std)
    expected = (images.float() - torch.tensor(mean).view(1, -1, 1, 1) * 255) / (torch.tensor(std).view(1, -1, 1, 1) * 255)
    for _ in range(3):
        assert torch.equal(norm(images), expected)
    assert torch.equal(normalize(images, mean, std), expected)
    assert norm(images, channels_last=True).is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(norm(images.double()), expected)  # float input: float32 out, same values
    assert len(norm._constants) == 1


def test_device_data_shards_cover_every_sample_once() -> None:
    from hf_lottery_verify.data import DeviceData

    for n in (1, 7, 37, 64):
        data = make_synthetic(train_size=n, test_size=1, image_size=4).train
        on_device = DeviceData(data, "cpu")
        for shards in (1, 2, 3, 8):
            bounds = [on_device.shard_bounds(shard, shards) for shard in range(shards)]
            assert [i for start, stop in bounds for i in range(start, stop)] == list(range(n)), (n, shards)
            labels = [y for start, stop in bounds for _, y in on_device.batches(5, start=start, stop=stop)]
            assert torch.equal(torch.cat(labels), data.labels)
    x, y = next(on_device.batches(64))
    assert torch.equal(y, data.labels) and x.dtype == torch.float32


def test_reseeded_batches_share_the_upload_and_equal_fresh_ones() -> None:
    from hf_lottery_verify.data import DeviceData

    data = make_synthetic(train_size=100, test_size=10, image_size=8).train
    first = DeviceBatches(data, 10, seed=3)
    again = first.reseeded(5)
    assert again.uploaded is first.uploaded  # the same device tensors, not a copy
    fresh = DeviceBatches(data, 10, seed=5)
    for (xa, ya), (xb, yb) in zip(again.epoch(2), fresh.epoch(2), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    shared = DeviceBatches(data, 10, seed=5, uploaded=DeviceData(data, "cpu"))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(shared.epoch(0), fresh.epoch(0), strict=True))
    other = make_synthetic(train_size=50, test_size=10, image_size=8).train
    with pytest.raises(ValueError, match="another split"):
        DeviceBatches(other, 10, uploaded=DeviceData(data, "cpu"))
