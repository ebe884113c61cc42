"""The one training loop of the library: Accelerate, fixed masks, optional extra samples.

Every (re)training — dense training, IMP rounds, retraining after signing, fine-tuning
attacks — goes through :class:`Trainer`. It runs unchanged on a CPU, one GPU, or several
processes under ``accelerate launch`` (batches are sharded per process, evaluation is
gathered with ``gather_for_metrics`` and counts every test sample exactly once).

Speed on GPUs comes from device-resident uint8 data with on-device augmentation
(:class:`~hf_lottery_verify.data.DeviceBatches`), bf16 autocast, channels-last and
optional ``torch.compile`` (``compile_mode="max-autotune-no-cudagraphs"`` or
``"reduce-overhead"`` for CUDA graphs, which help launch-bound ResNet-20 most).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .data import DeviceBatches, ImageData, derive_seed, normalize
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
]

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16", "fp16"]
Schedule = Literal["multistep", "onecycle", "constant", "cosine"]


# --------------------------------------------------------------------------- masks under training


class MaskEnforcer:
    """Keeps pruned weights at exactly zero while an optimizer trains the model.

    Two guards, so that any optimizer (momentum, nesterov, weight decay, Adam) is safe:
    gradients of pruned weights are zeroed by a tensor hook before they reach the
    optimizer (momentum buffers of pruned weights stay zero), and the masks are
    re-applied by an optimizer step post-hook.

    Args:
        params: Parameters by name (``dict(model.named_parameters())``).
        masks: The mask dict; tensors are moved to each parameter's device.

    Example:
        >>> enforcer = MaskEnforcer(dict(model.named_parameters()), model.masks)
        >>> enforcer.attach(optimizer)   # doctest: +SKIP
    """

    def __init__(self, params: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> None:
        check_masks(masks, params)
        self._params = {n: params[n] for n in masks}
        self._pruned = {n: ~m.to(params[n].device) for n, m in masks.items()}
        self._handles: list = []
        for name, p in self._params.items():
            if p.requires_grad:
                pruned = self._pruned[name]
                self._handles.append(p.register_hook(lambda g, pruned=pruned: g.masked_fill(pruned, 0.0)))
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the pruned weights now."""
        for name, p in self._params.items():
            p.masked_fill_(self._pruned[name], 0.0)

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Re-apply the masks after every ``optimizer.step()``.

        Args:
            optimizer: A torch optimizer (or an object wrapping one in ``.optimizer``,
                like Accelerate's ``AcceleratedOptimizer``).
        """
        inner = getattr(optimizer, "optimizer", optimizer)
        self._handles.append(inner.register_step_post_hook(lambda *_: self.apply()))

    def remove(self) -> None:
        """Remove every hook this enforcer registered."""
        for h in self._handles:
            h.remove()
        self._handles.clear()


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run.

    The defaults are the paper's CIFAR recipe: SGD, momentum 0.9, weight decay 1e-4,
    lr 0.1, 182 epochs, ×0.1 at epochs 91 and 136 (``milestones`` are fractions of
    ``epochs``: 0.5 → 91, 0.75 → 136). Use ``schedule="onecycle"`` for short runs.

    Attributes:
        epochs: Epochs of a full run.
        batch_size: Per-process batch size.
        lr: Peak learning rate.
        momentum: SGD momentum.
        nesterov: Use Nesterov momentum.
        weight_decay: L2 weight decay (5e-4 for ResNet-50 in the paper).
        schedule: ``multistep``, ``onecycle``, ``cosine`` or ``constant``.
        milestones: Fractions of ``epochs`` where ``multistep`` multiplies lr by ``gamma``.
        gamma: Multistep factor.
        warmup_fraction: Share of the run spent warming up in ``onecycle``.
        label_smoothing: Cross-entropy label smoothing.
        precision: ``fp32``, ``bf16`` (autocast) or ``fp16``.
        channels_last: Use channels-last memory format (on CUDA).
        compile: Wrap the forward in ``torch.compile``.
        compile_mode: ``torch.compile`` mode.
        augment: Random crop and flip.
        pad: Crop padding in pixels.
        flip: Horizontal flips (turn off for digits/text).
        eval_batch_size: Batch size for evaluation.
        seed: Seed of initialisation-independent randomness (data order, augmentation).
    """

    epochs: int = 182
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    schedule: Schedule = "multistep"
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    warmup_fraction: float = 0.25
    label_smoothing: float = 0.0
    precision: Precision = "fp32"
    channels_last: bool = True
    compile: bool = False
    compile_mode: str | None = None
    augment: bool = True
    pad: int = 4
    flip: bool = True
    eval_batch_size: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be positive.")
        if self.schedule not in ("multistep", "onecycle", "constant", "cosine"):
            raise ValueError(f"Unknown schedule '{self.schedule}': use multistep, onecycle, cosine or constant.")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"Unknown precision '{self.precision}': use fp32, bf16 or fp16.")
        if any(not 0 < m < 1 for m in self.milestones):
            raise ValueError("milestones are fractions of the run, each in (0, 1), e.g. (0.5, 0.75).")
        object.__setattr__(self, "milestones", tuple(self.milestones))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


class MixInSamples:
    """Append ``per_batch`` samples from a fixed set to every batch, cycling in a seeded order.

    The reference code for the paper adds one trigger image to each 126–128-image batch.

    Args:
        data: The extra samples (uint8 images, labels); normalised with the training
            data's constants when mixed in.
        per_batch: Samples appended to each batch.
        seed: Seed of the cycling order.
    """

    def __init__(self, data: ImageData, *, per_batch: int = 1, seed: int = 0) -> None:
        self.data = data
        self.per_batch = per_batch
        self.seed = seed
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, step: int, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.data)
        key = (images.device, images.shape[1:], images.is_contiguous(memory_format=torch.channels_last))
        if key not in self._cache:
            x = self.data.images.to(images.device)
            if x.shape[-2:] != images.shape[-2:]:
                x = F.interpolate(x.float(), size=images.shape[-2:], mode="bilinear", align_corners=False)
                x = x.round().clamp(0, 255).to(torch.uint8)
            self._cache[key] = (normalize(x, self.data.mean, self.data.std, channels_last=key[2]),
                                self.data.labels.to(images.device))
        xs, ys = self._cache[key]
        cycle, pos = divmod(step * self.per_batch, n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(self.seed, "mix", cycle)))
        take = torch.cat([order, torch.randperm(n, generator=torch.Generator().manual_seed(
            derive_seed(self.seed, "mix", cycle + 1)))])[pos : pos + self.per_batch].to(images.device)
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
    from accelerate.state import AcceleratorState

    mp = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[config.precision]
    if AcceleratorState._shared_state and AcceleratorState().initialized:
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


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageData, *, accelerator: Any = None, batch_size: int = 1024,
             channels_last: bool = False, loader: Any = None) -> dict[str, float]:
    """Top-1 accuracy (percent), mean loss and sample count of ``model`` on ``data``.

    Under several processes each evaluates its shard; ``gather_for_metrics`` drops the
    padding Accelerate adds, so ``count`` equals ``len(data)`` exactly.

    Args:
        model: A model returning logits or an output with ``.logits``.
        data: The split to evaluate.
        accelerator: The run's accelerator; when ``None`` the model is evaluated on its own
            device in this process.
        batch_size: Evaluation batch size per process.
        channels_last: Feed channels-last tensors.
        loader: A DataLoader already prepared by ``accelerator`` (reused across calls).

    Returns:
        ``{"accuracy": %, "loss": mean cross-entropy, "count": samples seen}``.
    """
    import contextlib

    from torch.utils.data import DataLoader, TensorDataset

    if accelerator is None:
        # evaluate where the model is, without touching the process-wide Accelerate state
        device = next(model.parameters()).device
        loader = loader or DataLoader(TensorDataset(data.images, data.labels), batch_size=batch_size, shuffle=False)
        gather, autocast = (lambda t: t), contextlib.nullcontext
    else:
        device = accelerator.device
        if loader is None:
            loader = accelerator.prepare_data_loader(
                DataLoader(TensorDataset(data.images, data.labels), batch_size=batch_size, shuffle=False))
        gather, autocast = accelerator.gather_for_metrics, accelerator.autocast
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.long, device=device)
    for images, labels in loader:
        x = normalize(images.to(device), data.mean, data.std, channels_last=channels_last)
        with autocast():
            out = model(x)
        logits = getattr(out, "logits", out).float()
        logits, labels = gather((logits, labels.to(device)))
        correct += (logits.argmax(1) == labels).sum()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
        count += labels.numel()
    model.train(was_training)
    n = int(count)
    return {"accuracy": 100.0 * int(correct) / max(1, n), "loss": float(loss_sum) / max(1, n), "count": n}


@dataclass
class Trainer:
    """Trains a (masked) model with SGD under Accelerate.

    Args:
        model: A :class:`~hf_lottery_verify.SparseResNetForImageClassification` (its masks
            are enforced) or any module returning logits.
        train_data: Training split.
        config: Hyper-parameters.
        test_data: Evaluated after every ``eval_every`` epochs and at the end.
        accelerator: Shared accelerator; one is made from ``config`` when ``None``.
        mixer: Optional :class:`BatchMixer` (trigger-set mixing).
        eval_every: Evaluate every this many epochs (0: only at the end).
        progress: Show a tqdm bar on the main process.
        checkpoint_dir: When set, the state after each epoch is saved there and a new
            Trainer with the same folder resumes from it.
        desc: Label of the progress bar.
    """

    model: nn.Module
    train_data: ImageData
    config: TrainConfig = field(default_factory=TrainConfig)
    test_data: ImageData | None = None
    accelerator: Any = None
    mixer: BatchMixer | None = None
    eval_every: int = 0
    progress: bool = True
    checkpoint_dir: str | os.PathLike | None = None
    desc: str = "train"

    def __post_init__(self) -> None:
        from torch.utils.data import DataLoader, TensorDataset

        cfg = self.config
        if self.accelerator is None:
            self.accelerator = make_accelerator(cfg)
        acc = self.accelerator
        self.device = acc.device
        self.channels_last = cfg.channels_last and self.device.type == "cuda"
        self.model.to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        # As in the paper's recipe, weight decay applies to every parameter (BN included).
        self.optimizer = torch.optim.SGD(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
        self.prepared_model, self.optimizer = acc.prepare(self.model, self.optimizer)
        self.forward = self.prepared_model
        if cfg.compile:
            self.forward = torch.compile(self.prepared_model, mode=cfg.compile_mode)
        self.batches = DeviceBatches(
            self.train_data, cfg.batch_size, device=self.device, seed=cfg.seed, augment=cfg.augment, pad=cfg.pad,
            flip=cfg.flip, channels_last=self.channels_last, shard=acc.process_index, num_shards=acc.num_processes)
        if len(self.batches) == 0:
            raise TrainingError(
                f"{len(self.train_data)} training samples make no full batch of {cfg.batch_size}×{acc.num_processes}; "
                "lower --batch-size.")
        self.steps_per_epoch = len(self.batches)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self._eval_loader = None
        if self.test_data is not None:
            self._eval_loader = acc.prepare_data_loader(DataLoader(
                TensorDataset(self.test_data.images, self.test_data.labels), batch_size=cfg.eval_batch_size))
        self.history: list[EpochRecord] = []

    # ------------------------------------------------------------------ running

    def evaluate(self, data: ImageData | None = None) -> dict[str, float]:
        """Evaluate on ``data`` (the test split by default)."""
        data = data or self.test_data
        if data is None:
            raise TrainingError("No evaluation data: pass test_data to the Trainer or data to evaluate().")
        loader = self._eval_loader if data is self.test_data else None
        return evaluate(self.prepared_model, data, accelerator=self.accelerator, batch_size=self.config.eval_batch_size,
                        channels_last=self.channels_last, loader=loader)

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
        bar = None
        if self.progress and acc.is_main_process:
            from tqdm.auto import tqdm

            bar = tqdm(total=end_epoch - start_epoch, desc=self.desc, unit="ep", leave=False)
        self.prepared_model.train()
        for epoch in range(start_epoch, end_epoch):
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
                seen += y.numel()
            mean_loss = float(loss_sum) / max(1, self.steps_per_epoch)
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
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{mean_loss:.3f}", acc=record.test_accuracy)
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
        torch.save(self.optimizer.state_dict(), folder / "optimizer.pt.tmp")
        os.replace(folder / "optimizer.pt.tmp", folder / "optimizer.pt")
        os.replace(tmp, folder / "state.safetensors")
        progress = folder / "progress.json.tmp"
        progress.write_text(json.dumps({"epoch": epoch, "history": [asdict(r) for r in self.history]}))
        os.replace(progress, folder / "progress.json")

    def _maybe_resume(self, start_epoch: int) -> int:
        folder = self._ckpt()
        if folder is None or not (folder / "progress.json").is_file():
            return start_epoch
        from safetensors.torch import load_file

        progress = json.loads((folder / "progress.json").read_text())
        state = load_file(str(folder / "state.safetensors"))
        self.unwrapped().load_state_dict(state, strict=True)
        # our own file, tensors and plain containers only
        self.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True, map_location=self.device))
        self.history = [EpochRecord(**r) for r in progress["history"]]
        logger.info("Resuming training from %s after epoch %d.", folder, progress["epoch"])
        return max(start_epoch, progress["epoch"] + 1)
