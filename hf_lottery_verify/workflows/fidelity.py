"""The Scheme V1 fidelity experiment (the paper's Figure 2): retrain from the rewind weights with and without the key.

A key mask protects a ticket only if the key is needed: retrained from the rewind
weights ``W_k`` (late rewinding), the full mask ``M = M_s ∪ M_l`` must reach a clearly
higher test accuracy than the locked mask ``M_l`` that a thief finds in the public
folder (the paper's Figure 2), and a random key of the same size, ``M_l ∪ M_s'`` (the
ambiguity attack "fake1"), must not restore it either. :func:`keymask_fidelity` runs
these arms with the library's :class:`~hf_lottery_verify.training.Trainer`, with one
training seed for every arm, so only the mask differs between them.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..data import DatasetPair, derive_seed, normalized_for
from ..errors import MaskError
from ..keymask._common import _model_masks, _ordered_names
from ..keymask.split import fake_key_masks, merge_key_mask, split_key_mask
from ..masks import MaskDict, count_kept, count_total
from ..training import TrainConfig, TrainingContext, evaluate, make_accelerator

__all__ = ["KeymaskFidelity", "keymask_fidelity", "retrain_from_rewind"]

logger = logging.getLogger(__name__)

FIDELITY_EPSILON = 1.0
"""The paper's fidelity threshold ``ε_f``, in accuracy points."""


@dataclass
class KeymaskFidelity:
    """Outcome of :func:`keymask_fidelity`. Accuracies are top-1 percentages on the test split.

    Attributes:
        score: Scorer that made the split (``None`` when the split was passed in).
        ratio: Requested key ratio (``None`` when the split was passed in).
        seed: Seed of the scorer and of the fake keys.
        n: Key size ``|M_s|``.
        kept: Kept weights of the ticket, ``|M|``.
        masked_weights: Weights under a mask, kept or not (the density denominator).
        rewind_epoch: Epoch ``k`` of the schedule that retraining starts from.
        epochs: Epochs of the whole schedule (``train_config.epochs``).
        train_seed: ``train_config.seed``, shared by every arm.
        epsilon: Fidelity threshold ``ε_f`` in points.
        ticket_accuracy: The ticket as given, without retraining.
        locked_ticket_accuracy: The published ``W ⊙ M_l`` as is, without retraining.
        full_accuracy: Retrained from ``W_k`` with the full mask ``M`` (with the key).
        locked_accuracy: Retrained from ``W_k`` with ``M_l`` only (without the key).
        fake_accuracies: Retrained from ``W_k`` with ``M_l ∪`` a random fake key of ``n``
            entries (fake1), one value per trial.
        test_count: Test samples behind each accuracy.
        full_accuracy_reused: ``full_accuracy`` was passed in rather than measured.
        seconds: Wall time of each arm.
    """

    score: str | None
    ratio: float | None
    seed: int
    n: int
    kept: int
    masked_weights: int
    rewind_epoch: int
    epochs: int
    train_seed: int
    epsilon: float
    ticket_accuracy: float
    locked_ticket_accuracy: float
    full_accuracy: float
    locked_accuracy: float
    fake_accuracies: list[float] = field(default_factory=list)
    test_count: int = 0
    full_accuracy_reused: bool = False
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def density_full(self) -> float:
        """Density of the ticket ``M``."""
        return self.kept / self.masked_weights

    @property
    def density_locked(self) -> float:
        """Density of the locked mask ``M_l`` (and of ``M_l ∪`` a fake key, minus the key)."""
        return (self.kept - self.n) / self.masked_weights

    @property
    def locked_drop(self) -> float:
        """``full_accuracy − locked_accuracy``: what retraining without the key loses."""
        return self.full_accuracy - self.locked_accuracy

    @property
    def fake_accuracy(self) -> float | None:
        """Mean accuracy over the fake1 trials (``None`` without trials)."""
        return sum(self.fake_accuracies) / len(self.fake_accuracies) if self.fake_accuracies else None

    @property
    def fake_drop(self) -> float | None:
        """``full_accuracy − fake_accuracy`` (``None`` without trials)."""
        fake = self.fake_accuracy
        return None if fake is None else self.full_accuracy - fake

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the fields and the derived figures."""
        d = asdict(self)
        d.update({name: getattr(self, name) for name, value in vars(KeymaskFidelity).items()
                  if isinstance(value, property)})
        return d


def retrain_from_rewind(
    rewind: nn.Module,
    masks: Mapping[str, torch.Tensor],
    data: DatasetPair,
    *,
    train_config: TrainConfig,
    rewind_epoch: int,
    accelerator: Any = None,
    progress: bool = False,
    desc: str = "retrain",
    context: TrainingContext | None = None,
) -> tuple[nn.Module, dict[str, float]]:
    """Train ``N[W_k ⊙ masks]`` over epochs ``[rewind_epoch, epochs)`` of the schedule (late rewinding).

    The rewind model is copied, not modified. Training draws no global randomness: data
    order and augmentation depend only on ``train_config.seed``, so two calls with the same
    arguments give the same weights on a CPU.

    Args:
        rewind (`SparseResNetForImageClassification`): The rewind weights ``W_k``, dense
            (``find_extreme_ticket`` writes them to ``out_dir/rewind``).
        masks (`Mapping[str, torch.Tensor]`): Boolean masks by timm parameter name.
        data (`DatasetPair`): Train and test splits.
        train_config (`TrainConfig`): The schedule; its ``seed`` fixes data order and augmentation.
        rewind_epoch (`int`): Epoch ``k`` to start from, in ``[0, train_config.epochs)``.
        accelerator (`accelerate.Accelerator`, *optional*): Shared accelerator; one is made
            from ``train_config`` when ``None``.
        progress (`bool`, *optional*, defaults to `False`): Show epoch and batch progress bars.
        desc (`str`, *optional*, defaults to `"retrain"`): Label of the progress bar.
        context (`TrainingContext`, *optional*): Share one working model, one prepared (and
            compiled) trainer and one upload of the data with the other calls given this
            context (the arms of :func:`keymask_fidelity`); the results are the same.
            The returned model then belongs to the context: the next call overwrites it.

    Returns:
        ``(model, metrics)``: the retrained model and the final test metrics
        (``accuracy`` in percent, ``loss``, ``count``).

    Raises:
        ValueError: ``rewind_epoch`` is outside ``[0, epochs)``.
        MaskError: The masks do not fit the rewind model.
        TrainingError: Training diverged.
    """
    if not 0 <= rewind_epoch < train_config.epochs:
        raise ValueError(f"rewind_epoch must lie in [0, epochs={train_config.epochs}), got {rewind_epoch}.")
    own_context = context is None
    context = TrainingContext() if own_context else context
    try:
        model = context.working_copy(rewind)
        model.set_masks({name: m.detach() for name, m in masks.items()})
        trainer = context.trainer(model, data.train, train_config, test_data=data.test, accelerator=accelerator,
                                  progress=progress, desc=desc)
        trainer.train(start_epoch=rewind_epoch)
        last = trainer.history[-1]
        metrics = {"accuracy": float(last.test_accuracy), "loss": float(last.test_loss),
                   "count": int(last.test_count)}
    finally:
        if own_context:
            context.close()
    return model, metrics


def _resolve_split(
    ticket: nn.Module,
    full: MaskDict,
    *,
    key_masks: Mapping[str, torch.Tensor] | None,
    ratio: float | None,
    score: str,
    seed: int,
    score_options: Mapping[str, Any],
) -> tuple[MaskDict, MaskDict]:
    """``(key, locked)`` on the CPU: computed from ``ratio``, or the given key and the rest of the ticket's mask."""
    if (key_masks is None) == (ratio is None):
        raise MaskError("No split to verify: pass ratio (and score) to compute one, or key_masks." if key_masks is None
                        else "Pass either a precomputed split (key_masks) or ratio to compute one, not both.")
    if key_masks is None:
        key, locked = split_key_mask(ticket, ratio=ratio, score=score, seed=seed, **score_options)
        return {n: m.cpu() for n, m in key.items()}, {n: m.cpu() for n, m in locked.items()}
    if set(key_masks) != set(full):
        diff = sorted(set(key_masks) ^ set(full))
        raise MaskError(f"The split covers other parameters than the ticket's masks: {diff[:4]}.", param_name=diff[0])
    key = {n: key_masks[n].detach().cpu() for n in full}
    for name, m in full.items():
        if key[name].dtype != torch.bool or tuple(key[name].shape) != tuple(m.shape):
            raise MaskError(f"The given mask of '{name}' must be torch.bool of shape {tuple(m.shape)}.",
                            param_name=name)
        if bool((key[name] & ~m).any()):
            raise MaskError(f"The given mask of '{name}' keeps weights the ticket prunes; it is not part of this "
                            "ticket's mask.", param_name=name)
    return key, {n: full[n] & ~key[n] for n in full}


def keymask_fidelity(
    ticket: nn.Module,
    rewind: nn.Module,
    *,
    data: DatasetPair,
    train_config: TrainConfig,
    rewind_epoch: int,
    key_masks: Mapping[str, torch.Tensor] | None = None,
    ratio: float | None = None,
    score: str = "omp",
    seed: int = 0,
    fake_trials: int = 1,
    epsilon: float = FIDELITY_EPSILON,
    full_accuracy: float | None = None,
    accelerator: Any = None,
    progress: bool = False,
    context: TrainingContext | None = None,
    **score_options: Any,
) -> KeymaskFidelity:
    """Verify a V1 split by fidelity: retrain from ``W_k`` with the key, without it, and with fake keys.

    Three arms start from the rewind weights ``W_k`` and train epochs
    ``[rewind_epoch, epochs)`` of ``train_config`` with the same seed, so only the mask
    differs:

    (a) the full mask ``M = M_s ∪ M_l`` (the owner, or a user holding the key);
    (b) the locked mask ``M_l`` (a thief with only the public folder);
    (c) fake1: ``M_l ∪ M_s'`` with ``M_s'`` a random key of the same size ``n``
        (:func:`~hf_lottery_verify.keymask.fake_key_masks`), ``fake_trials`` times.

    The split is either given (``key_masks``; the locked mask is the rest of the ticket's
    mask) or computed with
    :func:`~hf_lottery_verify.keymask.split_key_mask` from ``ratio`` and ``score`` on the
    ticket's weights.

    Args:
        ticket (`SparseResNetForImageClassification`): The full ticket ``W ⊙ M`` (its masks
            are ``M``; its weights are scored when the split is computed).
        rewind (`SparseResNetForImageClassification`): The dense rewind weights ``W_k`` of
            the same architecture (``find_extreme_ticket``'s ``out_dir/rewind``).
        data (`DatasetPair`): Train and test splits.
        train_config (`TrainConfig`): The training schedule, shared by all arms.
        rewind_epoch (`int`): Epoch ``k`` of the schedule to restart from (paper: 3).
        key_masks (`Mapping[str, torch.Tensor]`, *optional*): Precomputed key masks ``M_s``.
        ratio (`float`, *optional*): Key share of the kept weights, to compute the split.
        score (`str`, *optional*, defaults to `"omp"`): Scorer of the computed split.
        seed (`int`, *optional*, defaults to 0): Seed of the scorer and of the fake keys
            (trial ``t`` uses ``derive_seed(seed, "fake1", t)``).
        fake_trials (`int`, *optional*, defaults to 1): Number of fake1 keys to retrain with (0 skips arm c).
        epsilon (`float`, *optional*, defaults to 1.0): Fidelity threshold ``ε_f`` in points.
        full_accuracy (`float`, *optional*): Arm (a)'s accuracy measured before with the same
            ``rewind``, ``data``, ``train_config`` and ``rewind_epoch`` (it does not depend on
            the split); skips that retraining when sweeping ratios or scorers.
        accelerator (`accelerate.Accelerator`, *optional*): Shared accelerator; one is made
            from ``train_config`` when ``None``.
        progress (`bool`, *optional*, defaults to `False`): Show epoch and batch progress bars.
        context (`TrainingContext`, *optional*): Where the arms' shared working model, trainer
            (prepared, compiled once) and device copies of ``data`` live. By default a context
            is made for this call and closed at its end; pass one (and close it yourself), with
            the same ``accelerator``, to share them across several calls on the same rewind
            model and data, e.g. a sweep over key ratios or scorers.
        **score_options: Options of the scorer (e.g. ``sources=2048`` for ``betweenness``).

    Returns:
        A :class:`KeymaskFidelity` with the accuracies, drops, key size and densities.

    Raises:
        MaskError: The ticket has no masks, the split is missing, ambiguous (both a split and
            ``ratio``) or not a split of the ticket's mask, or the rewind model does not fit.
        DensityError, UnknownNameError: Bad ``ratio`` or ``score`` (see ``split_key_mask``).
        ValueError: ``rewind_epoch`` is outside ``[0, epochs)`` or ``fake_trials`` is negative.
        TrainingError: Training diverged.

    Example:
        >>> from hf_lottery_verify import load_model
        >>> from hf_lottery_verify.workflows import keymask_fidelity
        >>> report = keymask_fidelity(load_model("out/ticket"), load_model("out/rewind"), data=pair,
        ...                           train_config=config, rewind_epoch=3, ratio=0.1, score="omp")  # doctest: +SKIP
        >>> report.locked_drop > report.epsilon                                                   # doctest: +SKIP
        True
    """
    if fake_trials < 0:
        raise ValueError(f"fake_trials must be 0 or more, got {fake_trials}.")
    if not 0 <= rewind_epoch < train_config.epochs:  # before the key split and the evaluations, not after
        raise ValueError(f"rewind_epoch must lie in [0, epochs={train_config.epochs}), got {rewind_epoch}.")
    masks = _model_masks(ticket)
    full = {name: masks[name].cpu() for name in _ordered_names(ticket, masks)}
    key, locked = _resolve_split(ticket, full, key_masks=key_masks, ratio=ratio, score=score, seed=seed,
                                 score_options=score_options)
    computed = key_masks is None
    n = count_kept(key)
    acc = accelerator or make_accelerator(train_config)
    seconds: dict[str, float] = {}
    # one working model, one prepared/compiled trainer and one upload of the data for every arm
    own_context = context is None
    context = TrainingContext() if context is None else context

    def direct(masks: MaskDict) -> dict[str, float]:
        model = copy.deepcopy(ticket)
        model.set_masks(masks)
        test = context.device_data(normalized_for(data.test, model), acc.device)  # the trainers' upload
        return evaluate(model.to(acc.device), test, accelerator=acc, batch_size=train_config.eval_batch_size)

    def arm(name: str, masks: MaskDict) -> dict[str, float]:
        t0 = time.perf_counter()
        _, metrics = retrain_from_rewind(rewind, masks, data, train_config=train_config, rewind_epoch=rewind_epoch,
                                         accelerator=acc, progress=progress, desc=name, context=context)
        seconds[name] = time.perf_counter() - t0
        logger.info("keymask fidelity, %s: %.2f%% (%.1f s)", name, metrics["accuracy"], seconds[name])
        return metrics

    try:
        t0 = time.perf_counter()
        ticket_metrics = direct(full)
        locked_ticket_metrics = direct(locked)
        seconds["evaluate"] = time.perf_counter() - t0
        reused = full_accuracy is not None
        if not reused:
            full_accuracy = arm("full", full)["accuracy"]
        locked_metrics = arm("locked", locked)
        fakes = []
        for trial in range(fake_trials):
            fake = fake_key_masks(locked, n=n, seed=derive_seed(seed, "fake1", trial))
            fakes.append(arm(f"fake1[{trial}]", merge_key_mask(locked, fake))["accuracy"])
    finally:
        if own_context:
            context.close()
    return KeymaskFidelity(
        score=score if computed else None,
        ratio=float(ratio) if computed else None,
        seed=int(seed),
        n=n,
        kept=count_kept(full),
        masked_weights=count_total(full),
        rewind_epoch=int(rewind_epoch),
        epochs=int(train_config.epochs),
        train_seed=int(train_config.seed),
        epsilon=float(epsilon),
        ticket_accuracy=float(ticket_metrics["accuracy"]),
        locked_ticket_accuracy=float(locked_ticket_metrics["accuracy"]),
        full_accuracy=float(full_accuracy),
        locked_accuracy=float(locked_metrics["accuracy"]),
        fake_accuracies=fakes,
        test_count=int(locked_metrics["count"]),
        full_accuracy_reused=reused,
        seconds={k: round(v, 3) for k, v in seconds.items()},
    )
