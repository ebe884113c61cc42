"""Ambiguity (forgery) attacks of the paper's Section 5, as models: the thief manufactures competing evidence.

* ``fake1`` (:func:`fake1_attack`) — Scheme V1: the thief claims a random key mask of the
  owner's key size. As a model: a random key-sized set of pruned positions is switched on
  with values drawn like each layer's kept weights (resampled magnitudes, random signs),
  so the published ticket plus the "key" is what the thief would present.
* ``fake2`` (:func:`fake2_attack`) — add noise to the kept weights ``W ⊙ M`` at a scale
  relative to each layer's spread; the mask is unchanged.
* ``fake3`` (:func:`fake3_attack`, :func:`forge_signature`) — the thief embeds his OWN QR
  signature with his own secret into the stolen copy and keeps the key. His key then
  verifies the copy, and it never verifies the owner's original. The owner's key should
  still verify the copy (the owner's signature is keyed, so the thief cannot find it to
  overwrite it). The thief's embedding also restores each layer's kept count by pruning
  the smallest magnitudes elsewhere; the owner's switched-on modules carry kept-weight
  magnitudes (not the smaller rewind values), so that pruning does not single them out
  (``tests/test_attacks.py``, with and without rewind weights). Priority between two keys
  comes from the commitment published with the model (the Hub commit date), not from
  the mask.

Every attack returns a new model and leaves its input untouched; every random choice is
seeded.
"""

from __future__ import annotations

import copy
import functools
import hashlib
from typing import Any

import torch
from torch import nn

from ..configs import TrainConfig
from ..data import DatasetPair, ImageData
from ..errors import DensityError
from ..masks import count_kept
from ..ownership_key import OwnershipKey
from ._common import _copy_with_masks, _draw_like, _remask
from .finetune import masked_finetune
from .registry import register_attack

__all__ = ["fake1_attack", "fake2_attack", "fake3_attack", "forge_signature", "attacker_secret"]


@register_attack("fake1", kind="forgery", strength="ratio", sweep=(0.01, 0.05, 0.1, 0.2))
@torch.no_grad()
def fake1_attack(model: nn.Module, *, ratio: float = 0.05, seed: int = 0) -> nn.Module:
    """Switch on a random fake key mask: ``round(ratio · kept)`` pruned positions, drawn like the layer's weights.

    Positions come from :func:`~hf_lottery_verify.keymask.fake_key_masks` (uniform over all
    pruned positions of the masked parameters, so layers get them in proportion to their
    pruned counts); each value is a kept weight of the same layer resampled at random,
    with a random sign.

    Args:
        model (`nn.Module`): A :class:`~hf_lottery_verify.SparseResNetForImageClassification`.
        ratio (`float`, *optional*, defaults to 0.05): Fake key size relative to the kept
            weights (the V1 key's ``ratio``).
        seed (`int`, *optional*, defaults to 0): Seed of positions and values.

    Returns:
        The attacked copy (masks: the new non-zero pattern).

    Raises:
        DensityError: ``ratio`` is negative or asks for more positions than are pruned.
    """
    from ..keymask import fake_key_masks

    if ratio < 0:
        raise DensityError(f"ratio must be non-negative, got {ratio}.")
    attacked, params, masks = _copy_with_masks(model)
    fake = fake_key_masks(masks, n=round(ratio * count_kept(masks)), seed=seed)
    gen = torch.Generator().manual_seed(seed)
    for name in masks:
        on = fake[name].cpu()
        count = int(on.sum())
        if not count:
            continue
        w = params[name]
        w_cpu = w.detach().cpu().clone()
        w_cpu[on] = _draw_like(w_cpu[masks[name].cpu()], count, gen).to(w_cpu.dtype)
        w.copy_(w_cpu.to(w.device))
    return _remask(attacked)


@register_attack("fake2", kind="forgery", strength="scale", sweep=(0.01, 0.05, 0.1, 0.2, 0.5))
@torch.no_grad()
def fake2_attack(model: nn.Module, *, scale: float = 0.1, seed: int = 0) -> nn.Module:
    """Add Gaussian noise to the kept weights ``W ⊙ M`` only (the mask is unchanged).

    Each layer's noise has standard deviation ``scale`` times the standard deviation of
    that layer's kept weights; an entry the noise would make exactly zero keeps its old
    value, so the mask read off the weights stays the same.

    Args:
        model (`nn.Module`): A :class:`~hf_lottery_verify.SparseResNetForImageClassification`.
        scale (`float`, *optional*, defaults to 0.1): Noise level relative to each layer's spread.
        seed (`int`, *optional*, defaults to 0): Seed of the noise.

    Returns:
        The attacked copy.

    Raises:
        ValueError: ``scale`` is negative.
    """
    if scale < 0:
        raise ValueError(f"scale must be non-negative, got {scale}.")
    attacked, params, masks = _copy_with_masks(model)
    gen = torch.Generator().manual_seed(seed)
    for name in masks:
        w = params[name]
        w_cpu = w.detach().cpu().double()
        kept = masks[name].cpu()
        values = w_cpu[kept]
        std = float(values.std()) if values.numel() > 1 else 0.0
        noisy = values + torch.randn(values.shape, generator=gen, dtype=torch.float64) * std * scale
        noisy = torch.where(noisy == 0, values, noisy)
        w_cpu[kept] = noisy
        w.copy_(w_cpu.to(w.dtype).to(w.device))
    attacked.set_masks(masks, apply=False)
    return attacked


def attacker_secret(seed: int) -> str:
    """The thief's key secret (hex) in :func:`forge_signature` (derived from ``seed``, so runs repeat)."""
    return hashlib.sha256(f"hf_lottery_verify.attacks.fake3/{int(seed)}".encode()).hexdigest()


def forge_signature(
    model: nn.Module,
    *,
    text: str = "stolen by mallory",
    secret: str | None = None,
    seed: int = 0,
    data: DatasetPair | ImageData | None = None,
    epochs: int = 1,
    train: TrainConfig | None = None,
    train_limit: int | None = None,
) -> tuple[nn.Module, OwnershipKey]:
    """The thief embeds his own QR signature into a copy of the stolen ticket (fake3).

    Writing a signature clears and fills kernels, which costs a trained ticket accuracy
    (the paper: 91.37% → 57.00%); with ``data`` the thief wins it back with ``epochs`` of
    masked fine-tuning, which leaves his mask, and so his signature, unchanged.

    Args:
        model (`nn.Module`): The stolen ticket; not modified.
        text (`str`, *optional*, defaults to `"stolen by mallory"`): The thief's signature text.
        secret (`str`, *optional*): The thief's key secret (64 hex digits); derived from ``seed`` when
            ``None`` (:func:`attacker_secret`).
        train (`TrainConfig`, *optional*): The thief's training recipe (:data:`~hf_lottery_verify.attacks.registry.ATTACK_TRAINING`
            by default); ``epochs`` and ``seed`` here override its own.
        seed (`int`, *optional*, defaults to 0): Seed of the embedding's choices (and of fine-tuning).
        data (`DatasetPair` or `ImageData`, *optional*): The thief's training data: masked
            fine-tuning after the embedding.
        epochs (`int`, *optional*, defaults to 1): Fine-tuning epochs when ``data`` is given (0: none).
        train_limit (`int`, *optional*): At most this many training samples.

    Returns:
        ``(forged model, the thief's OwnershipKey)``.

    Raises:
        SignatureError: The model cannot hold a signature (see ``embed_signature``).

    Example:
        >>> forged, mallory_key = forge_signature(stolen, seed=1)         # doctest: +SKIP
        >>> verify_model(forged, key=mallory_key, require_anchor=False).verdict                     # doctest: +SKIP
        'owned'
    """
    from ..signature import embed_signature

    forged = _remask(copy.deepcopy(model))
    forged.ownership_claim = None
    thief = OwnershipKey(arch=forged.config.arch, secret=attacker_secret(seed) if secret is None else secret)
    key = embed_signature(forged, text, key=thief, seed=seed)
    claim = key.public_claim(owner=None)
    if data is not None and epochs > 0:
        forged = masked_finetune(forged, data, epochs=epochs, seed=seed, config=train, train_limit=train_limit)
    forged.ownership_claim = claim
    return forged, key


@register_attack("fake3", kind="forgery", variants={"": {"epochs": 0}, "finetuned": {"epochs": 1}})
@functools.wraps(forge_signature, assigned=())  # takes forge_signature's parameters (the registry reads them)
def fake3_attack(model: nn.Module, **options: Any) -> nn.Module:
    """Embed the thief's own QR signature, then (with data) fine-tune: the model half of :func:`forge_signature`.

    Args:
        model (`nn.Module`): The stolen ticket; not modified.
        **options: The parameters of :func:`forge_signature` (``text``, ``secret``, ``seed``, ``data``,
            ``epochs``, ``train``, ``train_limit``).

    Returns:
        The forged copy; call :func:`forge_signature` with the same arguments for the thief's key.
    """
    return forge_signature(model, **options)[0]
