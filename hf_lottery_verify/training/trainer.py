"""The training loop: :class:`Trainer` (Accelerate, fixed masks, optional mixed-in
samples) and the :class:`EpochRecord` it logs per epoch."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import TrainConfig
from ..data import DeviceBatches, DeviceData, ImageData, normalized_for, record_data_statistics
from ..errors import TrainingError
from .evaluation import _canonical_device, evaluate
from .masking import MaskEnforcer
from .schedule import lr_at, make_accelerator

__all__ = ["Trainer", "EpochRecord"]


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
        test_data: Evaluated after the last epoch.
        accelerator: Shared accelerator; one is made from ``config`` when ``None``.
        mixer: Optional ``mixer(step, images, labels) -> (images, labels)`` that adds samples to each batch
            (trigger-set mixing: :class:`~.mixing.MixInSamples`).
        progress: Show progress bars on the main process: epochs, and the batches of the
            current epoch with their rate and ETA.
        desc: Label of the progress bar.
        context: A :class:`~.context.TrainingContext` whose uploaded splits to share (default: upload here).
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: ImageData,
        config: TrainConfig | None = None,
        *,
        test_data: ImageData | None = None,
        accelerator: Any = None,
        mixer: Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
        progress: bool = True,
        desc: str = "train",
        context: Any = None,
    ) -> None:
        cfg = config if config is not None else TrainConfig()
        record_data_statistics(model, train_data)  # a model's first training fixes how it reads its inputs
        train_data = normalized_for(train_data, model)
        test_data = None if test_data is None else normalized_for(test_data, model)
        self.model = model
        self.train_data = train_data
        self.config = cfg
        self.test_data = test_data
        self.mixer = mixer
        self.progress = progress
        self.desc = desc
        self.context = context  # a TrainingContext shares device copies of the splits; without one, upload here
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
        uploaded = self._device_data(train_data)
        self.batches = DeviceBatches(
            uploaded.data, cfg.batch_size, device=self.device, seed=cfg.seed, augment=cfg.augment, pad=cfg.pad,
            flip=cfg.flip, channels_last=self.channels_last, shard=acc.process_index, num_shards=acc.num_processes,
            uploaded=uploaded)
        if len(self.batches) == 0:
            raise TrainingError(
                f"{len(train_data)} training samples make no full batch of {cfg.batch_size}×{acc.num_processes}; "
                "lower --batch-size.")
        self.steps_per_epoch = len(self.batches)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self._test_on_device = None if test_data is None else self._device_data(test_data)
        self.history: list[EpochRecord] = []

    def _device_data(self, data: ImageData) -> DeviceData:
        if self.context is not None:
            return self.context.device_data(data, self.device)
        return DeviceData(data, _canonical_device(self.device))

    def reset(self, *, seed: int | None = None, desc: str | None = None, progress: bool | None = None) -> None:
        """Start another run on the same model, data and settings, keeping the prepared and
        compiled model and the uploaded data.

        The optimizer state (momentum) and the history are cleared, so the next :meth:`train`
        gives exactly what a new ``Trainer`` with the model's current weights and masks and
        the same seed gives (load other weights or set other masks on the model first).

        Args:
            seed: New ``config.seed`` (data order and augmentation).
            desc: New label of the progress bar.
            progress: Show progress bars or not from now on.
        """
        getattr(self.optimizer, "optimizer", self.optimizer).state.clear()  # Accelerate wraps the optimizer
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

    def evaluate(self) -> dict[str, float]:
        """Evaluate on the test split (read from its copy on the device)."""
        if self._test_on_device is None:
            raise TrainingError("No evaluation data: pass test_data to the Trainer.")
        return evaluate(self.prepared_model, self._test_on_device, accelerator=self.accelerator, batch_size=self.config.eval_batch_size,
                        channels_last=self.channels_last)

    def train(self, *, start_epoch: int = 0,
              on_epoch_end: Callable[[int, Trainer], None] | None = None) -> list[EpochRecord]:
        """Train epochs ``[start_epoch, config.epochs)`` of the schedule.

        The schedule is positioned by epoch, so ``start_epoch=3`` continues a run rewound
        to epoch 3 exactly as the paper's late rewinding does.

        Args:
            start_epoch: First epoch to run (the lr schedule starts there).
            on_epoch_end: Called with ``(epoch, trainer)`` after each finished epoch
                (IMP captures the rewind weights with it).

        Returns:
            One :class:`EpochRecord` per epoch run.

        Raises:
            TrainingError: The loss became NaN or infinite.
        """
        masks = getattr(self.model, "masks", None)
        enforcer = None
        if masks:
            # Hooks live only while training: masks may change between calls (IMP rounds, signing).
            enforcer = MaskEnforcer(self.model.timm_parameters(), masks)
            enforcer.attach(self.optimizer)
        try:
            return self._run_epochs(start_epoch, on_epoch_end)
        finally:
            if enforcer is not None:
                enforcer.remove()

    def _run_epochs(self, start_epoch: int, on_epoch_end: Callable[[int, Trainer], None] | None) -> list[EpochRecord]:
        cfg, acc, end_epoch = self.config, self.accelerator, self.config.epochs
        from tqdm.auto import tqdm

        # one bar for the whole run, only on a terminal (disable=None): a redirected log gets no bar lines
        bar = tqdm(total=(end_epoch - start_epoch) * self.steps_per_epoch, unit="batch", leave=False,
                   disable=None if self.progress and acc.is_main_process else True)
        self.prepared_model.train()
        try:
            for epoch in range(start_epoch, end_epoch):
                bar.set_description(f"{self.desc} epoch {epoch + 1}/{end_epoch}")
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
                    bar.update(1)
                mean_loss = float(loss_sum) / max(1, self.steps_per_epoch)  # the epoch's one host synchronisation
                if not math.isfinite(mean_loss):
                    raise TrainingError(f"Training diverged at epoch {epoch} (loss {mean_loss}); lower the learning rate.")
                secs = time.perf_counter() - t0
                record = EpochRecord(epoch=epoch, lr=lr_at(cfg, epoch * self.steps_per_epoch, self.total_steps),
                                     train_loss=mean_loss, images_per_s=seen * acc.num_processes / secs, seconds=secs)
                if self.test_data is not None and epoch == end_epoch - 1:
                    metrics = self.evaluate()
                    record.test_accuracy, record.test_loss = metrics["accuracy"], metrics["loss"]
                    record.test_count = metrics["count"]
                    self.prepared_model.train()
                self.history.append(record)
                if on_epoch_end is not None:
                    on_epoch_end(epoch, self)
                bar.set_postfix(loss=f"{mean_loss:.3f}", acc=record.test_accuracy, img_s=f"{record.images_per_s:,.0f}")
        finally:
            bar.close()
        return self.history

    def close(self) -> None:
        """Release the accelerator's references to this trainer's model and optimizer."""
        self.accelerator.free_memory()

    def unwrapped(self) -> nn.Module:
        """The model without DDP/compile wrappers."""
        return self.accelerator.unwrap_model(self.prepared_model)
