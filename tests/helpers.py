"""Helpers shared by the tests (importable as ``from .helpers import ...``)."""

from __future__ import annotations

import torch

import hf_lottery_verify as hlv


def make_model(arch: str = "cifar_resnet8", *, num_labels: int = 10, in_chans: int = 3, seed: int = 0,
               density: float | None = None) -> hlv.SparseResNetForImageClassification:
    """A randomly initialised sparse ResNet (pruned by global magnitude when density is given) that declares
    input statistics of 0.5 per channel, as a trained one would."""
    torch.manual_seed(seed)
    model = hlv.SparseResNetForImageClassification(hlv.SparseResNetConfig(
        arch=arch, num_labels=num_labels, in_chans=in_chans, image_mean=(0.5,) * in_chans, image_std=(0.5,) * in_chans))
    if density is not None:
        model.prune_(density=density)
    return model


def tiny_data(*, train_size: int = 512, test_size: int = 100, num_classes: int = 4, seed: int = 0):
    """A synthetic 8×8 dataset that cifar_resnet8 learns in a few CPU-seconds."""
    from hf_lottery_verify.data import make_synthetic

    return make_synthetic(num_classes=num_classes, train_size=train_size, test_size=test_size, image_size=8,
                          noise=0.3, seed=seed)


def tiny_train_config(**overrides):
    """A short one-cycle recipe for tiny CPU runs."""
    from hf_lottery_verify.training import TrainConfig

    base = dict(epochs=3, batch_size=32, lr=0.1, schedule="onecycle", pad=1, eval_batch_size=64)
    base.update(overrides)
    return TrainConfig(**base)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_cpu_processes(fn, args=(), num_processes: int = 2) -> None:
    """Like accelerate.debug_launcher, on a free port (parallel test workers must not collide)."""
    import tempfile

    from accelerate.utils import PrepareForLaunch, patch_environment
    from torch.multiprocessing import start_processes

    with tempfile.NamedTemporaryFile() as rdv, patch_environment(
        world_size=num_processes, master_addr="127.0.0.1", master_port=str(free_port()),
        accelerate_mixed_precision="no", accelerate_debug_rdv_file=rdv.name, accelerate_use_cpu="yes",
        gloo_socket_ifname="lo",
    ):
        # spawn, not fork: forking a process whose OpenMP threads are running can deadlock
        start_processes(PrepareForLaunch(fn, debug=True), args=args, nprocs=num_processes, start_method="spawn")


def named_dataset(*, n: int = 160, size: int = 8, names=("sock", "boot", "hat", "scarf"), seed: int = 0,
                  image_column: str = "image", label_column: str = "label"):
    """A learnable grayscale ``datasets.Dataset`` with ``ClassLabel`` names (each class a brightness band)."""
    import datasets
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    labels = [i % len(names) for i in range(n)]
    images = [Image.fromarray((rng.random((size, size)) * 40 + 50 * y).astype("uint8"), mode="L") for y in labels]
    features = datasets.Features({image_column: datasets.Image(), label_column: datasets.ClassLabel(names=list(names))})
    return datasets.Dataset.from_dict({image_column: images, label_column: labels}, features=features)
