"""Retraining a signed ticket from its rewind weights, optionally learning a trigger set (Table 2, Scheme V3).

After the signature is written into the mask (Scheme V2) the ticket is retrained from its
rewind weights ``W_k`` under the signed mask, over epochs ``[k, epochs)`` of the schedule
(late rewinding). The library's :class:`~hf_lottery_verify.training.Trainer` keeps every
pruned weight at exactly zero, so the mask — and therefore the QR signature — is the same
after retraining: :func:`retrain` checks that bit for bit (density, mask digest, and the
mask read back from the non-zero weights, which is what verification reads).

With a trigger set (Scheme V3) the trigger images are mixed into every training batch
(:class:`~hf_lottery_verify.training.MixInSamples`; the reference code's ratio is one
trigger image per 128 training images), so the retrained ticket answers them with their
random labels — evidence that survives in black-box access.

:func:`retrain_folder` is the file-level entry point behind ``hf-lottery retrain``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data import DatasetPair, ImageData, derive_seed, normalized_for, record_data_statistics
from .errors import CheckpointError, KeyMismatchError, MaskError
from .masks import masks_from_weights, timm_parameters
from .ownership_key import OwnershipKey, check_key_outside, mask_digest
from .stats import binomial_threshold
from .training import MixInSamples, TrainConfig, Trainer, evaluate, make_accelerator
from .triggers import (
    DEFAULT_ALPHA,
    REFERENCE_BATCH_SIZE,
    TRIGGERS_SECTION,
    TriggerSet,
    predict_labels,
    trigger_evidence,
    triggers_from_key,
)

__all__ = ["RetrainResult", "retrain", "retrain_folder", "triggers_per_batch_for", "read_rewind_epoch",
           "REWIND_INFO_NAME"]

logger = logging.getLogger(__name__)

REWIND_INFO_NAME = "rewind.json"
"""File in the rewind folder where ``find-ticket`` records ``{"rewind_epoch": k}``."""

_SIGNATURE_SECTION = "signature"


@dataclass
class RetrainResult:
    """Outcome of :func:`retrain`. Accuracies are top-1 percentages on the test split.

    Attributes:
        model: The retrained model (a copy; the input model is untouched).
        rewind_epoch: Epoch ``k`` the schedule restarted from.
        epochs: Epochs of the whole schedule (``config.epochs``); ``epochs - rewind_epoch`` were run.
        train_seed: ``config.seed`` (data order, augmentation, trigger mixing order).
        accuracy_unsigned: The unsigned ticket's accuracy, when the caller gave it.
        accuracy_signed: The signed ticket as given, before retraining.
        accuracy_retrained: The retrained ticket.
        test_count: Test samples behind each accuracy.
        dataset: Name of the data (``fashion_mnist``, ...): a model card lists it with the accuracy.
        density_before: Kept fraction of the masked weights before retraining.
        density_after: The same after retraining (always equal; :func:`retrain` raises otherwise).
        mask_digest: :func:`~hf_lottery_verify.ownership_key.mask_digest` of the retrained mask.
        signed_mask_digest: The key's ``signature.signed_mask_digest``, when the key has one.
        mask_matches_signature: ``mask_digest == signed_mask_digest`` (``None`` without a signature section).
        weights_match_mask: The mask read back from the non-zero weights equals the mask.
        triggers_source: Source of the trigger set (``None`` without triggers).
        triggers_digest: Digest of the trigger set.
        triggers_n: Trigger images.
        triggers_per_batch: Trigger images mixed into each training batch.
        trigger_agreement_before: Share of trigger labels the signed ticket gave before retraining.
        trigger_agreement_after: The same after retraining.
        trigger_p_value_before: Exact binomial p-value of ``trigger_agreement_before`` against chance.
        trigger_p_value_after: The same after retraining.
        trigger_threshold: Matches needed at ``alpha``.
        alpha: Significance level of the trigger test.
        history: Per-epoch records (loss, lr, images/s, final test accuracy).
        seconds: Wall time of the whole call.
    """

    model: nn.Module
    rewind_epoch: int
    epochs: int
    train_seed: int
    accuracy_unsigned: float | None
    accuracy_signed: float
    accuracy_retrained: float
    test_count: int
    density_before: float
    density_after: float
    mask_digest: str
    signed_mask_digest: str | None = None
    mask_matches_signature: bool | None = None
    weights_match_mask: bool = True
    triggers_source: str | None = None
    triggers_digest: str | None = None
    triggers_n: int | None = None
    triggers_per_batch: int | None = None
    trigger_agreement_before: float | None = None
    trigger_agreement_after: float | None = None
    trigger_p_value_before: float | None = None
    trigger_p_value_after: float | None = None
    trigger_threshold: int | None = None
    alpha: float = DEFAULT_ALPHA
    dataset: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def accuracy_change(self) -> float:
        """``accuracy_retrained - accuracy_signed``: what retraining recovered."""
        return self.accuracy_retrained - self.accuracy_signed

    @property
    def signing_cost(self) -> float | None:
        """``accuracy_unsigned - accuracy_retrained`` (the paper's Table 2 cost); ``None`` without the unsigned accuracy."""
        return None if self.accuracy_unsigned is None else self.accuracy_unsigned - self.accuracy_retrained

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field but ``model``, plus the derived figures."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}
        d["history"] = [dict(r) for r in self.history]
        d["accuracy_change"] = self.accuracy_change
        d["signing_cost"] = self.signing_cost
        return d


def triggers_per_batch_for(batch_size: int, *, per_batch: int = 1,
                           reference_batch_size: int = REFERENCE_BATCH_SIZE) -> int:
    """Trigger images per batch for a batch size: ``per_batch`` per ``reference_batch_size`` images, at least 1.

    Args:
        batch_size (`int`): Training images per batch.
        per_batch (`int`, *optional*, defaults to 1): Trigger images per reference batch.
        reference_batch_size (`int`, *optional*, defaults to 128): The reference batch size.

    Returns:
        ``max(1, round(per_batch * batch_size / reference_batch_size))``.
    """
    return max(1, round(per_batch * batch_size / reference_batch_size))


def read_rewind_epoch(rewind_dir: str | os.PathLike) -> int | None:
    """The rewind epoch ``find-ticket`` recorded in ``rewind_dir/rewind.json``, or ``None``.

    Raises:
        CheckpointError: The file exists but does not hold a non-negative integer ``rewind_epoch``.
    """
    path = Path(rewind_dir) / REWIND_INFO_NAME
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text()).get("rewind_epoch")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}.", path=str(path)) from exc
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CheckpointError(f"{path} has no valid 'rewind_epoch' (got {value!r}).", path=str(path))
    return value


def _rewind_state(rewind: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(rewind, Mapping):
        return dict(rewind)
    if hasattr(rewind, "timm_model"):
        return rewind.timm_model.state_dict()
    return rewind.state_dict()


def _trigger_data(triggers: TriggerSet, train: ImageData) -> ImageData:
    """The trigger set at the training data's size and channels, with its normalisation."""
    adapted = triggers.resized(image_size=train.image_size, channels=train.in_chans)
    return adapted.to_image_data(mean=train.mean, std=train.std)


def _agreement(model: nn.Module, triggers: TriggerSet, train: ImageData, alpha: float) -> tuple[float, float]:
    predicted = predict_labels(model, triggers, mean=train.mean, std=train.std, image_size=train.image_size,
                               channels=train.in_chans)
    ev = trigger_evidence(predicted, triggers, alpha=alpha)
    return ev.agreement, ev.p_value


def retrain(
    model: nn.Module,
    *,
    rewind: nn.Module | Mapping[str, torch.Tensor],
    data: DatasetPair,
    config: TrainConfig,
    rewind_epoch: int,
    key: OwnershipKey | None = None,
    triggers: TriggerSet | None = None,
    triggers_per_batch: int | None = None,
    accelerator: Any = None,
    progress: bool = True,
    unsigned_accuracy: float | None = None,
    alpha: float = DEFAULT_ALPHA,
) -> RetrainResult:
    """Retrain a signed ticket from its rewind weights under its fixed mask, optionally with triggers.

    The weights restart from ``W_k`` (``rewind``) masked by the model's (signed) masks and
    train over epochs ``[rewind_epoch, config.epochs)`` of ``config``'s schedule. The
    trainer keeps pruned weights at exactly zero, so the mask does not change; this is
    checked after training. With a trigger set (``triggers``, or the key's ``triggers``
    section when ``triggers`` is ``None``) the trigger images — resized and converted to
    the training data's size and channels, normalised with its mean and std — are mixed
    into every batch, ``triggers_per_batch`` of them (default: the key's ratio, else one
    per 128 training images, at least one).

    Args:
        model (`SparseResNetForImageClassification`): The signed ticket (its masks are the
            signed mask). Not modified: training runs on a copy.
        rewind (`SparseResNetForImageClassification` or `Mapping[str, torch.Tensor]`): The rewind
            weights ``W_k``, dense, as a model or a state dict with timm names (buffers included).
        data (`DatasetPair`): Train and test splits.
        config (`TrainConfig`): The schedule; its ``seed`` fixes data order, augmentation and
            the trigger mixing order.
        rewind_epoch (`int`): Epoch ``k`` to restart from, in ``[0, config.epochs)``.
        key (`OwnershipKey`, *optional*): The owner's key: its ``signature`` section's
            ``signed_mask_digest`` is compared with the retrained mask, and its ``triggers``
            section supplies the trigger set when ``triggers`` is ``None``. The key is not
            changed (the reference is recorded when the model is published).
        triggers (`TriggerSet`, *optional*): Trigger set to mix in (Scheme V3).
        triggers_per_batch (`int`, *optional*): Trigger images per batch.
        accelerator (`accelerate.Accelerator`, *optional*): Shared accelerator; one is made
            from ``config`` when ``None``.
        progress (`bool`, *optional*, defaults to `True`): Show an epoch progress bar.
        unsigned_accuracy (`float`, *optional*): The unsigned ticket's test accuracy, reported
            beside the signed and retrained ones (Table 2).
        alpha (`float`, *optional*, defaults to 1e-6): Significance level of the trigger test.

    Returns:
        A :class:`RetrainResult` with the retrained model, accuracies, densities, mask
        digests and trigger agreements.

    Raises:
        ValueError: ``rewind_epoch`` is outside ``[0, epochs)`` or ``triggers_per_batch < 1``.
        MaskError: The model has no masks, or retraining changed the mask or the density.
        CheckpointError: The rewind weights do not fit the model's architecture.
        KeyMismatchError: The trigger set's labels exceed the model's classes.
        KeyFileError: The key's trigger set is damaged.
        TrainingError: Training diverged.

    Example:
        >>> key = embed_signature(ticket, "owner 2024", rewind=rewind)            # doctest: +SKIP
        >>> key = add_triggers(key, num_classes=10)                  # doctest: +SKIP
        >>> result = retrain(ticket, rewind=rewind, data=pair, config=config, rewind_epoch=3,
        ...                  key=key)                                             # doctest: +SKIP
        >>> result.mask_matches_signature, result.trigger_agreement_after        # doctest: +SKIP
        (True, 0.98)
    """
    t0 = time.perf_counter()
    if not 0 <= rewind_epoch < config.epochs:
        raise ValueError(f"rewind_epoch must lie in [0, epochs={config.epochs}), got {rewind_epoch}.")
    if triggers_per_batch is not None and triggers_per_batch < 1:
        raise ValueError(f"triggers_per_batch must be 1 or more, got {triggers_per_batch}.")
    masks = {n: m.detach().cpu().clone() for n, m in (getattr(model, "masks", None) or {}).items()}
    if not masks:
        raise MaskError("The model has no masks: retraining a ticket needs its (signed) mask. Prune or sign it first.")

    # ---------------------------------------------------------------- the trigger set
    from_key = triggers_from_key(key) if key is not None and TRIGGERS_SECTION in key.sections else None
    if triggers is None:
        triggers = from_key
    elif from_key is not None and from_key.digest() != triggers.digest():
        logger.warning("The trigger set passed to retrain differs from the key's (derived from its secret); the "
                       "key's set will not verify this model. Leave triggers=None to train with the key's set.")
    per_batch = None
    if triggers is not None:
        num_labels = getattr(getattr(model, "config", None), "num_labels", None)
        if num_labels is not None and triggers.num_classes > num_labels:
            raise KeyMismatchError(f"The trigger set's labels range over {triggers.num_classes} classes but the model "
                                   f"has {num_labels}; make the trigger set with num_classes={num_labels}.")
        if triggers_per_batch is not None:
            per_batch = int(triggers_per_batch)
        elif from_key is not None and from_key.digest() == triggers.digest():
            per_batch = triggers_per_batch_for(config.batch_size, per_batch=key.triggers().per_batch,
                                               reference_batch_size=REFERENCE_BATCH_SIZE)
        else:
            per_batch = triggers_per_batch_for(config.batch_size)

    acc = accelerator or make_accelerator(config)

    retrained = copy.deepcopy(model)
    record_data_statistics(retrained, data.train)  # the config carries the training data's normalisation and names
    train = normalized_for(data.train, retrained)

    # ---------------------------------------------------------------- before: the signed ticket as given
    signed = copy.deepcopy(retrained).to(acc.device)
    density_before = float(signed.density) if hasattr(signed, "density") else None
    before_metrics = evaluate(signed, data.test, accelerator=acc, batch_size=config.eval_batch_size)
    agreement_before = p_before = None
    if triggers is not None:
        agreement_before, p_before = _agreement(signed, triggers, train, alpha)
    del signed

    # ---------------------------------------------------------------- W_k ⊙ M, trained from epoch k
    state = _rewind_state(rewind)
    try:
        target = retrained.timm_model if hasattr(retrained, "timm_model") else retrained
        target.load_state_dict({k: v.detach().cpu() for k, v in state.items()}, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"The rewind weights do not fit the model's architecture: {exc}") from exc
    retrained.set_masks(masks)  # zero W_k outside the signed mask
    mixer = None
    if triggers is not None:
        mixer = MixInSamples(_trigger_data(triggers, train), per_batch=per_batch,
                             seed=derive_seed(config.seed, "retrain-triggers"))
    trainer = Trainer(retrained, data.train, config, test_data=data.test, accelerator=acc, mixer=mixer,
                      progress=progress, desc="retrain" + (" +triggers" if mixer else ""))
    try:
        history = trainer.train(start_epoch=rewind_epoch)
        retrained = trainer.unwrapped()
    finally:
        trainer.close()
    last = history[-1]
    retrained.eval()

    # ---------------------------------------------------------------- after: the mask must be the signed one
    masks_after = {n: m.detach().cpu() for n, m in retrained.masks.items()}
    density_after = float(retrained.density)
    params = timm_parameters(retrained)
    from_weights = {n: w.cpu() for n, w in masks_from_weights(params, masks_after).items()}
    digest_after = mask_digest(masks_after)
    changed = [n for n in masks if not torch.equal(masks[n], masks_after.get(n, torch.empty(0)))]
    if changed or density_before is None or density_after != density_before:
        raise MaskError(f"Retraining changed the mask ({changed[:4]}; density {density_before} → {density_after}); "
                        "the signature would not survive.", param_name=changed[0] if changed else None)
    leaked = [n for n in masks_after if bool((from_weights[n] & ~masks_after[n]).any())]
    if leaked:
        raise MaskError(f"Pruned weights became non-zero during retraining in {leaked[:4]}.", param_name=leaked[0])
    weights_match = all(torch.equal(from_weights[n], masks_after[n]) for n in masks_after)
    if not weights_match:
        logger.warning("Some kept weights are exactly zero after retraining: the mask read from the weights is a "
                       "strict subset of the signed mask.")
    signed_digest = None
    if key is not None and _SIGNATURE_SECTION in key.sections:
        signed_digest = key.sections[_SIGNATURE_SECTION].get("signed_mask_digest")
    matches_signature = None if signed_digest is None else digest_after == signed_digest
    if matches_signature is False:
        logger.warning("The retrained mask differs from the key's signed mask: this model was not signed with this "
                       "key (or signed again afterwards).")

    from .liveness import dead_weights_warning

    dead_text = dead_weights_warning(retrained.timm_model.state_dict(), arch=retrained.config.arch.split(".")[0],
                                     model_args=retrained.config.model_args)
    if dead_text:
        logger.warning("Retrained: %s", dead_text)
    agreement_after = p_after = None
    if triggers is not None:
        agreement_after, p_after = _agreement(retrained, triggers, train, alpha)
    result = RetrainResult(
        model=retrained,
        rewind_epoch=int(rewind_epoch),
        epochs=int(config.epochs),
        train_seed=int(config.seed),
        accuracy_unsigned=None if unsigned_accuracy is None else float(unsigned_accuracy),
        accuracy_signed=float(before_metrics["accuracy"]),
        accuracy_retrained=float(last.test_accuracy),
        test_count=int(last.test_count),
        density_before=density_before,
        density_after=density_after,
        mask_digest=digest_after,
        signed_mask_digest=signed_digest,
        mask_matches_signature=matches_signature,
        weights_match_mask=weights_match,
        triggers_source=None if triggers is None else triggers.source,
        triggers_digest=None if triggers is None else triggers.digest(),
        triggers_n=None if triggers is None else len(triggers),
        triggers_per_batch=per_batch,
        trigger_agreement_before=agreement_before,
        trigger_agreement_after=agreement_after,
        trigger_p_value_before=p_before,
        trigger_p_value_after=p_after,
        trigger_threshold=None if triggers is None else binomial_threshold(len(triggers), 1.0 / triggers.num_classes,
                                                                           alpha),
        alpha=float(alpha),
        dataset=data.test.name,
        history=[asdict(r) for r in history],
        seconds=round(time.perf_counter() - t0, 3),
    )
    logger.info("Retrained from epoch %d: %.2f%% → %.2f%% (signed → retrained)%s", rewind_epoch,
                result.accuracy_signed, result.accuracy_retrained,
                "" if triggers is None else f", trigger agreement {agreement_before:.2f} → {agreement_after:.2f}")
    return result


def retrain_folder(
    model_dir: str | os.PathLike,
    *,
    rewind_dir: str | os.PathLike,
    key_path: str | os.PathLike | None,
    dataset: str,
    out_dir: str | os.PathLike,
    config: TrainConfig,
    rewind_epoch: int | None = None,
    data_dir: str | os.PathLike | None = None,
    train_limit: int | None = None,
    test_limit: int | None = None,
    triggers_per_batch: int | None = None,
    accelerator: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Load a signed ticket and its rewind weights, retrain (with the key's triggers) and save.

    The backend of ``hf-lottery retrain MODEL_DIR --rewind DIR --key KEY --dataset D --out OUT``.

    Args:
        model_dir (`str` or `os.PathLike`): The signed ticket's folder.
        rewind_dir (`str` or `os.PathLike`): The rewind weights' folder (``find-ticket``'s ``rewind/``).
        key_path (`str` or `os.PathLike`, *optional*): The owner's key; its trigger set (if any)
            is mixed in and its signed-mask digest checked.
        dataset (`str`): Dataset name for :func:`~hf_lottery_verify.data.load_image_dataset`.
        out_dir (`str` or `os.PathLike`): Where to save the retrained model.
        config (`TrainConfig`): The schedule (the one the ticket was found with).
        rewind_epoch (`int`, *optional*): Epoch ``k``; read from ``rewind_dir/rewind.json``
            (written by ``find-ticket``) when omitted.
        data_dir (`str` or `os.PathLike`, *optional*): Dataset files or cache folder.
        train_limit (`int`, *optional*): Use at most this many training samples.
        test_limit (`int`, *optional*): Use at most this many test samples.
        triggers_per_batch (`int`, *optional*): Override the trigger images per batch.
        accelerator (`accelerate.Accelerator`, *optional*): Shared accelerator.
        progress (`bool`, *optional*, defaults to `True`): Show an epoch progress bar.

    Returns:
        The JSON-safe report (:meth:`RetrainResult.to_dict` plus the folders).

    Raises:
        CheckpointError: A folder cannot be loaded, or ``rewind_epoch`` is neither given
            nor recorded in ``rewind_dir``.
        KeyFileError: The key cannot be read, or lies inside ``out_dir``.
        MaskError, TrainingError, DatasetError: See :func:`retrain` and the dataset loader.
    """
    from .data import load_image_dataset
    from .loading import load_model

    if rewind_epoch is None:
        rewind_epoch = read_rewind_epoch(rewind_dir)
        if rewind_epoch is None:
            raise CheckpointError(f"{rewind_dir} has no {REWIND_INFO_NAME} recording the rewind epoch; pass it "
                                  "explicitly (--rewind-epoch).", path=str(rewind_dir))
    key = None
    if key_path is not None:
        check_key_outside(key_path, out_dir)
        key = OwnershipKey.load(key_path)
    model = load_model(model_dir)
    rewind = load_model(rewind_dir)
    data = load_image_dataset(dataset, data_dir=data_dir, seed=config.seed, train_limit=train_limit,
                              test_limit=test_limit)
    result = retrain(model, rewind=rewind, data=data, config=config, rewind_epoch=rewind_epoch, key=key,
                     triggers_per_batch=triggers_per_batch, accelerator=accelerator, progress=progress)
    out = result.model.cpu()
    claim = getattr(out, "ownership_claim", None)
    if key is not None and claim and result.mask_matches_signature is not False:
        # the key may have gained evidence (a trigger set) since the claim was made: refresh its commitment
        out.ownership_claim = key.public_claim(owner=claim.get("owner"))
    if accelerator is None or getattr(accelerator, "is_main_process", True):
        out.save_pretrained(out_dir)
    report = result.to_dict()
    report.update({"model_dir": str(model_dir), "rewind_dir": str(rewind_dir), "out_dir": str(out_dir),
                   "key_path": None if key_path is None else str(key_path), "dataset": dataset,
                   "train_config": config.to_dict()})
    return report
