"""The one training loop of the library: Accelerate, fixed masks, optional extra samples.

Every (re)training — dense training, IMP rounds, retraining after signing, fine-tuning
attacks — goes through :class:`Trainer`. It runs unchanged on a CPU, one GPU, or several
processes under ``accelerate launch`` (batches are sharded per process; evaluation shards
the test split and sums its counts across processes, so every test sample counts exactly
once).

Speed on GPUs comes from a loop that never waits on the host: device-resident uint8 data
with on-device augmentation and normalisation (:class:`~hf_lottery_verify.data.DeviceBatches`,
:class:`~hf_lottery_verify.data.DeviceData`), evaluation batched on the device, masks
enforced by one fused kernel per step (:class:`MaskEnforcer`), trigger mixing from an
order cached on the device (:class:`MixInSamples`), one read of the loss per epoch; plus
bf16 autocast, channels-last and optional ``torch.compile`` (``compile_mode=
"max-autotune-no-cudagraphs"`` or ``"reduce-overhead"`` for CUDA graphs, which help
launch-bound ResNet-20 most). :class:`TrainingContext` keeps the compiled model and the
uploaded data across the many short trainings of an IMP search or a fidelity test.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .configs import TrainConfig
from .data import DeviceBatches, DeviceData, ImageData, Normalizer, derive_seed
from .errors import TrainingError
from .masks import check_masks

__all__ = [
    "TrainConfig",
    "Trainer",
    "EpochRecord",
    "BatchMixer",
    "MixInSamples",
    "make_accelerator",
    "evaluate",
    "lr_at",
    "MaskEnforcer",
    "TrainingContext",
    "save_optimizer_state",
    "load_optimizer_state",
]

logger = logging.getLogger(__name__)



# --------------------------------------------------------------------------- masks under training

# Optimizers whose update of an entry depends only on that entry's gradient, weight and state,
# and is exactly zero when all three are zero (weight decay included: wd·0 = 0).
_ELEMENTWISE_OPTIMIZERS: tuple[type[torch.optim.Optimizer], ...] = (
    torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.Adamax, torch.optim.NAdam,
    torch.optim.RAdam, torch.optim.RMSprop, torch.optim.Adagrad,
)


class MaskEnforcer:
    """Keeps pruned weights at exactly ``+0.0`` while an optimizer trains the model.

    Which guard is needed follows from the optimizer's update rule. SGD (momentum, weight
    decay, Nesterov), Adam(W), RMSprop, Adagrad and their kin update each entry from that
    entry's gradient, weight and optimizer state only. If, before every step, the gradient
    of a pruned entry is zero, then by induction its weight (``+0.0``) and its state stay
    zero: weight decay adds ``wd·0``, the momentum buffer stays ``0``, Adam's moments stay
    ``0`` and its update is ``0/(√0 + ε) = 0``, and ``+0.0 + (±0.0) = +0.0``. Zeroing the
    weights after the step alone would not be enough: the gradients of pruned weights are
    not zero (they depend on the layer's inputs, not on the weight), so momentum buffers
    would fill with them. The one guard for these optimizers is therefore a multiplication
    of the gradients by the float masks in an optimizer step pre-hook, one fused
    ``torch._foreach_mul_`` for all masked parameters, no per-parameter kernels, no hooks
    in the backward pass. Other optimizers (an update may mix entries, e.g. orthogonalised
    or second-order updates) also get the weights re-masked after each step.

    A non-finite gradient stays non-finite under the multiplication (``nan·0 = nan``); the
    :class:`Trainer` stops such a run with :class:`~hf_lottery_verify.errors.TrainingError`.

    Args:
        params: Parameters by name (``dict(model.named_parameters())``).
        masks: The mask dict; float copies laid out like each parameter are made on its device.

    Example:
        >>> enforcer = MaskEnforcer(dict(model.named_parameters()), model.masks)  # doctest: +SKIP
        >>> enforcer.attach(optimizer)   # doctest: +SKIP
    """

    def __init__(self, params: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> None:
        check_masks(masks, params)
        self._names = list(masks)
        self._params = [params[n] for n in self._names]
        self._pruned = [~masks[n].to(params[n].device) for n in self._names]
        with torch.no_grad():
            # same strides as the parameter (and its gradient): the foreach kernels take their fast path
            self._keep = [torch.empty_like(p).copy_(masks[n]) for n, p in zip(self._names, self._params, strict=True)]
        self._handles: list[Any] = []
        self.guard: str | None = None
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the pruned weights now (``+0.0``)."""
        for p, pruned in zip(self._params, self._pruned, strict=True):
            p.masked_fill_(pruned, 0.0)

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Multiply the present gradients by the masks (one fused kernel per device and dtype)."""
        grads, keep = [], []
        for p, k in zip(self._params, self._keep, strict=True):
            if p.grad is not None:
                grads.append(p.grad)
                keep.append(k)
        if grads:
            torch._foreach_mul_(grads, keep)

    @torch.no_grad()
    def mask_weights(self) -> None:
        """Re-mask the weights with fused kernels: ``w·m + 0.0`` (the addition turns ``-0.0`` into ``+0.0``)."""
        torch._foreach_mul_(self._params, self._keep)
        torch._foreach_add_(self._params, 0.0)

    def attach(self, optimizer: torch.optim.Optimizer, *, mask_weights_after_step: bool | None = None) -> None:
        """Guard every ``optimizer.step()`` from now on.

        Args:
            optimizer: A torch optimizer (or an object wrapping one in ``.optimizer``,
                like Accelerate's ``AcceleratedOptimizer``).
            mask_weights_after_step: Also re-mask the weights after each step. Default:
                only for optimizers outside the element-wise family listed above.
        """
        inner = getattr(optimizer, "optimizer", optimizer)
        if mask_weights_after_step is None:
            mask_weights_after_step = type(inner) not in _ELEMENTWISE_OPTIMIZERS
        self._handles.append(inner.register_step_pre_hook(lambda *_: self.mask_gradients()))
        if mask_weights_after_step:
            self._handles.append(inner.register_step_post_hook(lambda *_: self.mask_weights()))
        self.guard = "gradients+weights" if mask_weights_after_step else "gradients"

    def remove(self) -> None:
        """Remove every hook this enforcer registered."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.guard = None


# --------------------------------------------------------------------------- configuration


def lr_at(config: TrainConfig, step: int, total_steps: int) -> float:
    """Learning rate at a global ``step`` of ``total_steps`` (a pure function of the step).

    Args:
        config: The training configuration.
        step: Zero-based optimizer step.
        total_steps: Steps in the full run (``epochs × steps_per_epoch``).

    Returns:
        The learning rate.
    """
    frac = step / max(1, total_steps)
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "multistep":
        # integer comparison: step/total >= milestone_epoch/epochs, with no float round-off
        passed = sum(1 for m in config.milestones
                     if step * config.epochs >= round(m * config.epochs) * max(1, total_steps))
        return config.lr * config.gamma**passed
    if config.schedule == "cosine":
        return 0.5 * config.lr * (1 + math.cos(math.pi * frac))
    # one-cycle: linear warm-up from lr/25 to lr, then linear decay to ~0
    w = config.warmup_fraction
    if frac < w:
        return config.lr * (0.04 + 0.96 * frac / w)
    return config.lr * max(0.0, (1 - frac) / (1 - w))


class BatchMixer(Protocol):
    """Mixes extra samples into a training batch (the trigger set of Scheme V3 uses this)."""

    def __call__(self, step: int, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


_MIX_ORDER_STEPS = 256
"""Steps of cycling order that :class:`MixInSamples` prepares and uploads at once."""


class MixInSamples:
    """Append ``per_batch`` samples from a fixed set to every batch, cycling in a seeded order.

    The reference code for the paper adds one trigger image to each 126–128-image batch.
    Each cycle through the set follows its own permutation (a function of ``seed`` and the
    cycle only, so a resumed run mixes in the same samples). The normalised samples and a
    block of the cycling order covering many steps are kept on the batches' device, so a
    step only slices and gathers there: no host→device copy, no host synchronisation.

    Args:
        data: The extra samples (uint8 images, labels); normalised with the training
            data's constants when mixed in.
        per_batch: Samples appended to each batch.
        seed: Seed of the cycling order.

    Raises:
        ValueError: ``per_batch`` is below 1 or ``data`` is empty.
    """

    def __init__(self, data: ImageData, *, per_batch: int = 1, seed: int = 0) -> None:
        if per_batch < 1:
            raise ValueError(f"per_batch must be 1 or more, got {per_batch}.")
        if len(data) == 0:
            raise ValueError("MixInSamples needs at least one sample.")
        self.data = data
        self.per_batch = per_batch
        self.seed = seed
        self._normalizer = Normalizer(data.mean, data.std)
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._orders: dict[torch.device, tuple[int, torch.Tensor]] = {}

    def cycle_order(self, cycle: int) -> torch.Tensor:
        """The permutation of the samples used in ``cycle`` (on the CPU)."""
        gen = torch.Generator().manual_seed(derive_seed(self.seed, "mix", cycle))
        return torch.randperm(len(self.data), generator=gen)

    def _order(self, device: torch.device, first: int, count: int) -> torch.Tensor:
        """Positions ``[first, first + count)`` of the endless cycling order, as a view on ``device``."""
        n = len(self.data)
        cached = self._orders.get(device)
        if cached is None or not cached[0] <= first <= first + count <= cached[0] + len(cached[1]):
            c0 = first // n
            c1 = (first + max(count * _MIX_ORDER_STEPS, n)) // n + 1  # exclusive; ≥ first + count
            kept, c = [], c0
            if cached is not None:  # cycles of the previous block still ahead stay (already on the device)
                a, b = cached[0] // n, (cached[0] + len(cached[1])) // n
                if a <= c0 < b:
                    kept, c = [cached[1][(c0 - a) * n :]], b
            new = torch.cat([self.cycle_order(k) for k in range(c, c1)])
            if device.type == "cuda":
                new = new.pin_memory().to(device, non_blocking=True)
            else:
                new = new.to(device)
            cached = self._orders[device] = (c0 * n, torch.cat([*kept, new]))
        return cached[1][first - cached[0] : first - cached[0] + count]

    def __call__(self, step: int, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        channels_last = images.dim() == 4 and images.is_contiguous(memory_format=torch.channels_last)
        key = (images.device, images.shape[1:], channels_last)
        if key not in self._cache:
            x = self.data.images.to(images.device)
            if x.shape[-2:] != images.shape[-2:]:
                x = F.interpolate(x.float(), size=images.shape[-2:], mode="bilinear", align_corners=False)
                x = x.round().clamp(0, 255).to(torch.uint8)
            self._cache[key] = (self._normalizer(x, channels_last=channels_last), self.data.labels.to(images.device))
        xs, ys = self._cache[key]
        take = self._order(images.device, step * self.per_batch, self.per_batch)
        return torch.cat([images, xs[take].to(images.dtype)]), torch.cat([labels, ys[take]])


def make_accelerator(config: TrainConfig, *, cpu: bool | None = None, project_dir: str | None = None):  # noqa: ANN201
    """Build (or reuse) the process's ``accelerate.Accelerator`` for ``config``.

    Accelerate keeps one process-wide state; asking for a different precision in the same
    process reuses the existing state and logs a warning instead of failing.

    Args:
        config: Gives the mixed-precision mode.
        cpu: Force the CPU (default: use an accelerator when one is visible).
        project_dir: Accelerate project folder.

    Returns:
        An ``accelerate.Accelerator``.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, is_initialized

    mp = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[config.precision]
    if is_initialized():
        current = str(AcceleratorState().mixed_precision)
        if current != mp:
            logger.warning("Accelerate is already initialised with mixed_precision=%s; keeping it (asked: %s).",
                           current, mp)
            mp = current
    kwargs: dict[str, Any] = {"mixed_precision": mp, "project_dir": project_dir}
    if cpu:
        kwargs["cpu"] = True
    return Accelerator(**kwargs)


@dataclass
class EpochRecord:
    """What one epoch did (the JSON log keeps a list of these)."""

    epoch: int
    lr: float
    train_loss: float
    images_per_s: float
    seconds: float
    test_accuracy: float | None = None
    test_loss: float | None = None
    test_count: int | None = None


def _canonical_device(device: torch.device | str) -> torch.device:
    """``cuda`` → ``cuda:0`` (the device a tensor sent there reports); no copy, no kernel."""
    return torch.empty(0, device=device).device


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageData | DeviceData, *, accelerator: Any = None, batch_size: int = 1024,
             channels_last: bool = False, loader: Any = None) -> dict[str, float]:
    """Top-1 accuracy (percent), mean loss and sample count of ``model`` on ``data``.

    The split is read from the device: uploaded once per call, or not at all when ``data``
    is a :class:`~hf_lottery_verify.data.DeviceData` already there (the :class:`Trainer`
    keeps one). Under several processes each evaluates a contiguous shard (the shards
    cover every sample exactly once) and the correct counts, loss sums and sample counts
    are summed across processes, so ``count`` equals ``len(data)`` exactly — what
    ``gather_for_metrics`` gives, with one reduction per evaluation instead of one gather
    per batch. The only host synchronisation is reading the three totals at the end.

    Args:
        model: A model returning logits or an output with ``.logits``. Under an
            accelerator, DDP/compile wrappers are taken off for evaluation.
        data: The split to evaluate, on the host or already on the device.
        accelerator: The run's accelerator; when ``None`` the model is evaluated on its own
            device in this process.
        batch_size: Evaluation batch size per process.
        channels_last: Feed channels-last tensors.
        loader: A DataLoader already prepared by ``accelerator``; when given, it is
            iterated instead (host batches, ``gather_for_metrics`` per batch).

    Returns:
        ``{"accuracy": %, "loss": mean cross-entropy, "count": samples seen}``.
    """
    import contextlib

    if accelerator is None:
        # evaluate where the model is, without touching the process-wide Accelerate state
        device = next(model.parameters()).device
        autocast, shard, num_shards = contextlib.nullcontext, 0, 1
    else:
        device = accelerator.device
        autocast, shard, num_shards = accelerator.autocast, accelerator.process_index, accelerator.num_processes
        # DDP may synchronise buffers in its forward; shards of unequal length must not meet there
        model = accelerator.unwrap_model(model)
    was_training = model.training
    model.eval()
    try:
        if loader is not None:
            return _evaluate_loader(model, data, loader, device=device, accelerator=accelerator,
                                    channels_last=channels_last)
        if isinstance(data, DeviceData) and data.device == _canonical_device(device):
            on_device = data
        else:
            on_device = DeviceData(data.data if isinstance(data, DeviceData) else data, device)
        start, stop = on_device.shard_bounds(shard, num_shards)
        correct = torch.zeros((), dtype=torch.long, device=on_device.device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=on_device.device)
        for x, y in on_device.batches(batch_size, start=start, stop=stop, channels_last=channels_last):
            with autocast():
                out = model(x)
            logits = getattr(out, "logits", out).float()
            correct += (logits.argmax(1) == y).sum()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        totals = torch.stack([correct.double(), loss_sum,
                              torch.full((), float(stop - start), dtype=torch.float64, device=on_device.device)])
        if num_shards > 1:
            totals = accelerator.reduce(totals, reduction="sum")
        n_correct, loss_total, count = totals.tolist()
    finally:
        model.train(was_training)
    n = int(round(count))
    return {"accuracy": 100.0 * int(round(n_correct)) / max(1, n), "loss": loss_total / max(1, n), "count": n}


def _evaluate_loader(model: nn.Module, data: ImageData | DeviceData, loader: Any, *, device: torch.device,
                     accelerator: Any, channels_last: bool) -> dict[str, float]:
    """:func:`evaluate` over a (prepared) DataLoader of host batches."""
    import contextlib

    split = data.data if isinstance(data, DeviceData) else data
    normalizer = Normalizer(split.mean, split.std)
    gather = accelerator.gather_for_metrics if accelerator is not None else (lambda t: t)
    autocast = accelerator.autocast if accelerator is not None else contextlib.nullcontext
    correct = torch.zeros((), dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.long, device=device)
    for images, labels in loader:
        x = normalizer(images.to(device), channels_last=channels_last)
        with autocast():
            out = model(x)
        logits = getattr(out, "logits", out).float()
        logits, labels = gather((logits, labels.to(device)))
        correct += (logits.argmax(1) == labels).sum()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
        count += labels.numel()
    n = int(count)
    return {"accuracy": 100.0 * int(correct) / max(1, n), "loss": float(loss_sum) / max(1, n), "count": n}


# --------------------------------------------------------------------------- optimizer state as safetensors


def _flatten_state(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON skeleton of an optimizer state dict; its tensors go to ``tensors`` under their path."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, Mapping):
        return {"__dict__": [[_flatten_state(k, f"{prefix}.key{i}", tensors), _flatten_state(v, f"{prefix}.{k}", tensors)]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_flatten_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_flatten_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TrainingError(f"Cannot store optimizer state of type {type(obj).__name__} in safetensors.")


def _unflatten_state(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__tuple__" in obj:
            return tuple(_unflatten_state(v, tensors) for v in obj["__tuple__"])
        return {_unflatten_state(k, tensors): _unflatten_state(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [_unflatten_state(v, tensors) for v in obj]
    return obj


def save_optimizer_state(optimizer: torch.optim.Optimizer, path: str | os.PathLike) -> None:
    """Write ``optimizer.state_dict()`` as safetensors: tensors as tensors, the rest as JSON metadata.

    Args:
        optimizer: The optimizer (or Accelerate's wrapper).
        path: The file to write.
    """
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten_state(optimizer.state_dict(), "optimizer", tensors)
    save_file(tensors, str(path), metadata={"format": "pt", "optimizer_state_dict": json.dumps(skeleton)})


def load_optimizer_state(optimizer: torch.optim.Optimizer, path: str | os.PathLike) -> None:
    """Load a state written by :func:`save_optimizer_state` into ``optimizer`` (no pickle involved).

    State tensors take their parameter's device, dtype and memory layout.

    Raises:
        TrainingError: The file holds no optimizer state.
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    if "optimizer_state_dict" not in metadata:
        raise TrainingError(f"{path} holds no optimizer state.")
    optimizer.load_state_dict(_unflatten_state(json.loads(metadata["optimizer_state_dict"]), tensors))
    inner = getattr(optimizer, "optimizer", optimizer)
    for p, state in inner.state.items():
        for k, v in state.items():
            if isinstance(v, torch.Tensor) and v.shape == p.shape and v.stride() != p.stride():
                state[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


# --------------------------------------------------------------------------- the trainer


class Trainer:
    """Trains a (masked) model with SGD under Accelerate.

    Everything a step needs lives on the device: the uint8 training and test splits are
    uploaded once (:class:`~hf_lottery_verify.data.DeviceData`), batches are cut, augmented
    and normalised there, the masks are enforced by one fused kernel per step
    (:class:`MaskEnforcer`), and the loss is read back once per epoch. A trainer can be
    :meth:`reset` for another run on the same model and data (IMP rounds, retraining arms)
    without preparing, compiling or uploading again; :class:`TrainingContext` does that
    bookkeeping.

    Args:
        model: A :class:`~hf_lottery_verify.SparseResNetForImageClassification` (its masks
            are enforced) or any module returning logits.
        train_data: Training split.
        config: Hyper-parameters (defaults: :class:`TrainConfig`'s).
        test_data: Evaluated after every ``eval_every`` epochs and at the end.
        accelerator: Shared accelerator; one is made from ``config`` when ``None``.
        mixer: Optional :class:`BatchMixer` (trigger-set mixing).
        eval_every: Evaluate every this many epochs (0: only at the end).
        progress: Show progress bars on the main process: epochs, and the batches of the
            current epoch with their rate and ETA.
        checkpoint_dir: When set, the state after each epoch is saved there and a new
            Trainer with the same folder resumes from it.
        desc: Label of the progress bar.
        context: A :class:`TrainingContext` whose uploaded splits to share.
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: ImageData,
        config: TrainConfig | None = None,
        *,
        test_data: ImageData | None = None,
        accelerator: Any = None,
        mixer: BatchMixer | None = None,
        eval_every: int = 0,
        progress: bool = True,
        checkpoint_dir: str | os.PathLike | None = None,
        desc: str = "train",
        context: TrainingContext | None = None,
    ) -> None:
        cfg = config if config is not None else TrainConfig()
        self.model = model
        self.train_data = train_data
        self.config = cfg
        self.test_data = test_data
        self.mixer = mixer
        self.eval_every = eval_every
        self.progress = progress
        self.checkpoint_dir = checkpoint_dir
        self.desc = desc
        self.context = context if context is not None else TrainingContext()
        self.accelerator = acc = accelerator if accelerator is not None else make_accelerator(cfg)
        self.device = acc.device
        self.channels_last = cfg.channels_last and self.device.type == "cuda"
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        # As in the paper's recipe, weight decay applies to every parameter (BN included).
        optimizer = torch.optim.SGD(
            [p for p in model.parameters() if p.requires_grad],
            lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
        self.prepared_model, self.optimizer = acc.prepare(model, optimizer)
        self.forward = torch.compile(self.prepared_model, mode=cfg.compile_mode) if cfg.compile else self.prepared_model
        self.batches = DeviceBatches(
            train_data, cfg.batch_size, device=self.device, seed=cfg.seed, augment=cfg.augment, pad=cfg.pad,
            flip=cfg.flip, channels_last=self.channels_last, shard=acc.process_index, num_shards=acc.num_processes,
            uploaded=self.context.device_data(train_data, self.device))
        if len(self.batches) == 0:
            raise TrainingError(
                f"{len(train_data)} training samples make no full batch of {cfg.batch_size}×{acc.num_processes}; "
                "lower --batch-size.")
        self.steps_per_epoch = len(self.batches)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self._test_on_device = None if test_data is None else self.context.device_data(test_data, self.device)
        self.history: list[EpochRecord] = []

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(model={type(self.model).__name__}, train={len(self.train_data)}, "
                f"test={None if self.test_data is None else len(self.test_data)}, device={self.device}, "
                f"config={self.config})")

    @property
    def _inner_optimizer(self) -> torch.optim.Optimizer:
        return getattr(self.optimizer, "optimizer", self.optimizer)

    def reset(self, *, state_dict: Mapping[str, torch.Tensor] | None = None,
              masks: Mapping[str, torch.Tensor] | None = None, seed: int | None = None, desc: str | None = None,
              progress: bool | None = None) -> None:
        """Start another run on the same model, data and settings, keeping the prepared and
        compiled model and the uploaded data.

        The optimizer state (momentum) and the history are cleared, so the next :meth:`train`
        gives exactly what a new ``Trainer`` with the same weights, masks and seed gives.

        Args:
            state_dict: Weights (and buffers) to load into the model, by the model's own names.
            masks: New masks (``model.set_masks``; pruned weights are zeroed).
            seed: New ``config.seed`` (data order and augmentation).
            desc: New label of the progress bar.
            progress: Show progress bars or not from now on.
        """
        if state_dict is not None:
            self.model.load_state_dict(state_dict, strict=True)
        if masks is not None:
            self.model.set_masks(masks)
        self._inner_optimizer.state.clear()
        self.optimizer.zero_grad(set_to_none=True)
        self.history = []
        if seed is not None and seed != self.config.seed:
            self.config = replace(self.config, seed=seed)
            self.batches = self.batches.reseeded(seed)
        if desc is not None:
            self.desc = desc
        if progress is not None:
            self.progress = progress

    # ------------------------------------------------------------------ running

    def evaluate(self, data: ImageData | None = None) -> dict[str, float]:
        """Evaluate on ``data`` (the test split by default, read from its copy on the device)."""
        data = data or self.test_data
        if data is None:
            raise TrainingError("No evaluation data: pass test_data to the Trainer or data to evaluate().")
        split = self._test_on_device if data is self.test_data else data
        return evaluate(self.prepared_model, split, accelerator=self.accelerator, batch_size=self.config.eval_batch_size,
                        channels_last=self.channels_last)

    def train(self, *, start_epoch: int = 0, end_epoch: int | None = None,
              on_epoch_end: Callable[[int, Trainer], None] | None = None) -> list[EpochRecord]:
        """Train epochs ``[start_epoch, end_epoch)`` of the schedule.

        The schedule is positioned by epoch, so ``start_epoch=3`` continues a run rewound
        to epoch 3 exactly as the paper's late rewinding does.

        Args:
            start_epoch: First epoch to run (the lr schedule starts there).
            end_epoch: Epoch to stop before (``config.epochs`` by default).
            on_epoch_end: Called with ``(epoch, trainer)`` after each finished epoch
                (IMP captures the rewind weights with it).

        Returns:
            One :class:`EpochRecord` per epoch run.

        Raises:
            TrainingError: The loss became NaN or infinite.
        """
        end_epoch = self.config.epochs if end_epoch is None else end_epoch
        start_epoch = self._maybe_resume(start_epoch)
        masks = getattr(self.model, "masks", None)
        enforcer = None
        if masks:
            # Hooks live only while training: masks may change between calls (IMP rounds, signing).
            enforcer = MaskEnforcer(self.model.timm_parameters(), masks)
            enforcer.attach(self.optimizer)
        try:
            return self._run_epochs(start_epoch, end_epoch, on_epoch_end)
        finally:
            if enforcer is not None:
                enforcer.remove()

    def _run_epochs(self, start_epoch: int, end_epoch: int,
                    on_epoch_end: Callable[[int, Trainer], None] | None) -> list[EpochRecord]:
        cfg, acc = self.config, self.accelerator
        epoch_bar = batch_bar = None
        if self.progress and acc.is_main_process and end_epoch > start_epoch:
            from tqdm.auto import tqdm

            epoch_bar = tqdm(total=end_epoch - start_epoch, desc=self.desc, unit="ep", leave=False)
            batch_bar = tqdm(total=self.steps_per_epoch, unit="batch", leave=False)
        self.prepared_model.train()
        try:
            for epoch in range(start_epoch, end_epoch):
                if batch_bar is not None:
                    batch_bar.reset(total=self.steps_per_epoch)
                    batch_bar.set_description(f"epoch {epoch + 1}/{end_epoch}")
                t0 = time.perf_counter()
                loss_sum = torch.zeros((), device=self.device)
                seen = 0
                for i, (x, y) in enumerate(self.batches.epoch(epoch)):
                    step = epoch * self.steps_per_epoch + i
                    lr = lr_at(cfg, step, self.total_steps)
                    for group in self.optimizer.param_groups:
                        group["lr"] = lr
                    if self.mixer is not None:
                        x, y = self.mixer(step, x, y)
                    with acc.autocast():
                        out = self.forward(x)
                        logits = getattr(out, "logits", out)
                        loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
                    acc.backward(loss)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    loss_sum += loss.detach()
                    seen += y.shape[0]
                    if batch_bar is not None:
                        batch_bar.update(1)
                mean_loss = float(loss_sum) / max(1, self.steps_per_epoch)  # the epoch's one host synchronisation
                if not math.isfinite(mean_loss):
                    raise TrainingError(f"Training diverged at epoch {epoch} (loss {mean_loss}); lower the learning rate.")
                secs = time.perf_counter() - t0
                record = EpochRecord(epoch=epoch, lr=lr_at(cfg, epoch * self.steps_per_epoch, self.total_steps),
                                     train_loss=mean_loss, images_per_s=seen * acc.num_processes / secs, seconds=secs)
                last = epoch == end_epoch - 1
                if self.test_data is not None and (last or (self.eval_every and (epoch + 1) % self.eval_every == 0)):
                    metrics = self.evaluate()
                    record.test_accuracy, record.test_loss = metrics["accuracy"], metrics["loss"]
                    record.test_count = metrics["count"]
                    self.prepared_model.train()
                self.history.append(record)
                self._save_epoch(epoch)
                if on_epoch_end is not None:
                    on_epoch_end(epoch, self)
                if epoch_bar is not None:
                    epoch_bar.update(1)
                    epoch_bar.set_postfix(loss=f"{mean_loss:.3f}", acc=record.test_accuracy,
                                          img_s=f"{record.images_per_s:,.0f}")
        finally:
            for bar in (batch_bar, epoch_bar):
                if bar is not None:
                    bar.close()
        return self.history

    def close(self) -> None:
        """Release the accelerator's references to this trainer's model and optimizer."""
        self.accelerator.free_memory()

    def unwrapped(self) -> nn.Module:
        """The model without DDP/compile wrappers."""
        return self.accelerator.unwrap_model(self.prepared_model)

    # ------------------------------------------------------------------ epoch checkpoints

    def _ckpt(self) -> Path | None:
        return Path(self.checkpoint_dir) if self.checkpoint_dir else None

    def _save_epoch(self, epoch: int) -> None:
        folder = self._ckpt()
        if folder is None or not self.accelerator.is_main_process:
            return
        folder.mkdir(parents=True, exist_ok=True)
        from safetensors.torch import save_file

        tmp = folder / "state.safetensors.tmp"
        save_file({k: v.detach().cpu().contiguous() for k, v in self.unwrapped().state_dict().items()}, str(tmp))
        save_optimizer_state(self.optimizer, folder / "optimizer.safetensors.tmp")
        os.replace(folder / "optimizer.safetensors.tmp", folder / "optimizer.safetensors")
        os.replace(tmp, folder / "state.safetensors")
        progress = folder / "progress.json.tmp"
        progress.write_text(json.dumps({"epoch": epoch, "history": [asdict(r) for r in self.history]}))
        os.replace(progress, folder / "progress.json")

    def _maybe_resume(self, start_epoch: int) -> int:
        folder = self._ckpt()
        if folder is None or not (folder / "progress.json").is_file():
            return start_epoch
        from safetensors.torch import load_file

        if not (folder / "optimizer.safetensors").is_file():
            raise TrainingError(f"{folder} holds no optimizer.safetensors (it was written by an older version, which "
                                "pickled the optimizer state); delete the folder to start the run over.")
        progress = json.loads((folder / "progress.json").read_text())
        state = load_file(str(folder / "state.safetensors"))
        self.unwrapped().load_state_dict(state, strict=True)
        load_optimizer_state(self.optimizer, folder / "optimizer.safetensors")
        self.history = [EpochRecord(**r) for r in progress["history"]]
        logger.info("Resuming training from %s after epoch %d.", folder, progress["epoch"])
        return max(start_epoch, progress["epoch"] + 1)


# --------------------------------------------------------------------------- sharing across runs


def _model_structure(model: nn.Module) -> tuple:
    return (type(model), tuple((k, tuple(v.shape), v.dtype) for k, v in model.state_dict().items()))


class TrainingContext:
    """What several trainings on one dataset share, built once: device copies of the splits,
    and one :class:`Trainer` (prepared, possibly compiled model and its optimizer).

    IMP rounds and the arms of a fidelity test train the same architecture on the same data
    again and again, differing only in weights, masks and seed. Through a context they
    upload each split once and prepare and ``torch.compile`` the model once: :meth:`trainer`
    hands back the previous trainer, :meth:`Trainer.reset`, when the model object, the data,
    the accelerator, the mixer and every setting but ``seed`` are the same, and a new one
    otherwise. Results are those of fresh trainers (the reset clears the optimizer state).

    Example:
        >>> context = TrainingContext()
        >>> for round_seed in (1, 2):                                     # doctest: +SKIP
        ...     model.set_masks(next_masks())
        ...     trainer = context.trainer(model, data.train, replace(config, seed=round_seed),
        ...                               test_data=data.test, accelerator=acc, progress=False)
        ...     trainer.train()
        >>> context.close()                                               # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._uploads: dict[tuple, tuple[ImageData, DeviceData]] = {}
        self._trainer: Trainer | None = None
        self._trainer_key: tuple | None = None
        self._trainer_refs: tuple = ()
        self._models: dict[tuple, nn.Module] = {}

    def device_data(self, data: ImageData, device: torch.device | str) -> DeviceData:
        """``data`` on ``device``, uploaded on the first request for this split object and device."""
        dev = _canonical_device(device)
        key = (id(data), id(data.images), id(data.labels), tuple(data.mean), tuple(data.std), dev)
        hit = self._uploads.get(key)
        if hit is None:
            hit = self._uploads[key] = (data, DeviceData(data, dev))  # the reference keeps id(data) unique
        return hit[1]

    def trainer(self, model: nn.Module, train_data: ImageData, config: TrainConfig, *,
                test_data: ImageData | None = None, accelerator: Any = None, mixer: BatchMixer | None = None,
                eval_every: int = 0, progress: bool = True, desc: str = "train") -> Trainer:
        """A trainer for ``model``: the previous one reset when everything but the seed matches, else a new one.

        Args: as for :class:`Trainer` (``config.seed`` may differ between calls).

        Returns:
            A :class:`Trainer` ready to :meth:`~Trainer.train` from the model's current weights and masks.
        """
        key = (id(model), id(train_data), id(test_data), id(accelerator), id(mixer), eval_every,
               replace(config, seed=0))
        if self._trainer is not None and key == self._trainer_key:
            self._trainer.reset(seed=config.seed, desc=desc, progress=progress)
            return self._trainer
        if self._trainer is not None:
            self._trainer.close()
        self._trainer = Trainer(model, train_data, config, test_data=test_data, accelerator=accelerator, mixer=mixer,
                                eval_every=eval_every, progress=progress, desc=desc, context=self)
        self._trainer_key = key
        self._trainer_refs = (model, train_data, test_data, accelerator, mixer)  # keep the ids in the key unique
        return self._trainer

    def working_copy(self, source: nn.Module) -> nn.Module:
        """A model to train in place of ``source``, which stays untouched.

        The first call for a model structure deep-copies ``source``; later calls with a model
        of the same structure load its weights, buffers and masks into that same object (on
        whatever device it lives), so the trainer built for it is reused.
        """
        key = _model_structure(source)
        model = self._models.get(key)
        if model is None:
            model = self._models[key] = copy.deepcopy(source)
            return model
        model.load_state_dict(source.state_dict(), strict=True)
        if hasattr(model, "set_masks"):
            model.set_masks({n: m.detach() for n, m in (getattr(source, "masks", None) or {}).items()})
        return model

    def close(self) -> None:
        """Close the trainer and drop the device copies and working models."""
        if self._trainer is not None:
            self._trainer.close()
        self._trainer, self._trainer_key, self._trainer_refs = None, None, ()
        self._uploads.clear()
        self._models.clear()
