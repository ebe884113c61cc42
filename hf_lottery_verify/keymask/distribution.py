"""Distributing a V1-locked ticket: the locked model to publish, the private key, and the merge back.

The owner publishes ``W ⊙ M_l`` (:func:`lock_model`; on folders: :func:`hf_lottery_verify.workflows.split_key_folder`) and keeps
the key: the ``keymask`` section of an :class:`~hf_lottery_verify.ownership_key.OwnershipKey`
holding the bit-packed key masks ``M_s`` and the key weights ``W ⊙ M_s``. Legitimate users
restore the full ticket bit-exactly with :func:`load_with_key`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import nn

from ..atomic import json_safe
from ..codecs import pack_bits, unpack_bits
from ..errors import KeyMismatchError, MaskError
from ..masks import count_kept, timm_parameters
from ..ownership_key import KEYMASK_SECTION, SIGNATURE_SECTION, OwnershipKey, mask_digest
from ..storage import tensor_digest
from ._common import _model_masks, _ordered_names
from .split import split_key_mask

__all__ = ["KEYMASK_SECTION", "LockedTicket", "lock_model", "key_parts"]

logger = logging.getLogger(__name__)


_MASK_TENSOR = "mask."
_VALUES_TENSOR = "values."


class LockedTicket(NamedTuple):
    """What :func:`lock_model` returns: the locked model first, then the key.

    A tuple, so ``locked, key = lock_model(...)`` unpacks as before. Note the order is the
    reverse of :func:`~hf_lottery_verify.keymask.split_key_mask`'s ``(key_masks,
    locked_masks)``; the field names avoid mixing them up.

    Attributes:
        model (`nn.Module`): The locked copy ``W ⊙ M_l`` to publish.
        key (`OwnershipKey`): The private key, its ``keymask`` section written.
    """

    model: nn.Module
    key: OwnershipKey


def _arch(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    arch = getattr(config, "arch", None)
    if not arch:
        raise KeyMismatchError("Key masks need a SparseResNetForImageClassification (its config names the architecture).")
    return str(arch)


def lock_model(
    model: nn.Module,
    *,
    ratio: float,
    score: str = "omp",
    seed: int = 0,
    key: OwnershipKey | None = None,
    protect: Mapping[str, torch.Tensor] | None = None,
    **score_options: Any,
) -> LockedTicket:
    """Split a ticket into a publishable locked model and a private key.

    The locked model is a copy whose weights are ``W ⊙ M_l`` and whose masks are the
    locked masks: the key weights are zero in it, so a saved folder carries none of them.
    The key's ``keymask`` section records ``ratio``, ``score``, ``seed``, the scorer
    options, ``n``, per-parameter shapes and counts, and the SHA-256 digests of the full
    and the locked masks; its tensors are ``mask.<param>`` (bit-packed key mask, ``U8``)
    and ``values.<param>`` (the key weights, 1-D, row-major order, the weights' dtype).

    ``score_weights`` (in ``score_options``), when given, is not stored: the section records
    ``scored_on: "given weights"`` and ``score_weights_sha256``, the
    :func:`~hf_lottery_verify.storage.tensor_digest` of the network's parameters taken from
    them (the same for a model and for its state dict), so the key says which weights were
    scored without holding a copy of them.

    Args:
        model (`nn.Module`): A :class:`~hf_lottery_verify.SparseResNetForImageClassification`
            with masks.
        ratio (`float`): Share of the kept weights that go into the key, in ``(0, 1)``.
        score (`str`, *optional*, defaults to `"omp"`): A name from :func:`list_scorers`.
        seed (`int`, *optional*, defaults to 0): Seed for random scorers and sampling.
        key (`OwnershipKey`, *optional*): An existing key to extend (the returned key is a copy
            with the ``keymask`` section added); a new key otherwise. When it holds a signature,
            the signature's kernels never go into the key mask.
        protect (`Mapping[str, torch.Tensor]`, *optional*): More positions that never go into
            the key (see :func:`~hf_lottery_verify.keymask.split_key_mask`).
        **score_options (`Any`, *optional*): Options of the scorer, and ``score_weights``
            (see :func:`~hf_lottery_verify.keymask.split_key_mask`).

    Returns:
        [`LockedTicket`]: The named tuple ``(model, key)``: the locked model, then the key.

    Raises:
        KeyMismatchError: ``key`` belongs to another architecture.
        DensityError, MaskError, UnknownNameError: As in :func:`split_key_mask`.
    """
    arch = _arch(model)
    if key is not None and key.arch != arch.split(".")[0]:
        raise KeyMismatchError(f"The given key belongs to architecture '{key.arch}', the model is '{arch}'.")
    full = _model_masks(model)
    names = _ordered_names(model, full)
    if key is not None and SIGNATURE_SECTION in key.sections:  # a locked signed ticket keeps its whole signature
        from ..signature import signature_positions

        signed = signature_positions(key)
        protect = {n: signed.get(n, False) | (protect or {}).get(n, False) for n in {*signed, *(protect or {})}}
    key_masks, locked = split_key_mask(model, ratio=ratio, score=score, seed=seed, protect=protect,
                                       **score_options)
    params = timm_parameters(model, detach=True)
    locked_model = copy.deepcopy(model)
    locked_model.set_masks(locked)
    per_param = {}
    tensors: dict[str, torch.Tensor] = {}
    for name in names:
        km = key_masks[name]
        tensors[_MASK_TENSOR + name] = pack_bits(km)
        tensors[_VALUES_TENSOR + name] = params[name][km.to(params[name].device)].detach().cpu().clone()
        per_param[name] = {"shape": list(km.shape), "key": int(km.sum()), "locked": int(locked[name].sum())}
    n = count_kept(key_masks)
    section = {
        "scheme": "V1 key masks (Algorithm 1)",
        "ratio": float(ratio),
        "score": score,
        "seed": int(seed),
        "score_options": json_safe({k: v for k, v in score_options.items() if k != "score_weights"}),
        "n": n,
        "kept": count_kept(full),
        "dtype": str(next(iter(params.values())).dtype).replace("torch.", ""),
        "params": per_param,
        "mask_digest": mask_digest(full),
        "locked_digest": mask_digest(locked),
    }
    if score_options.get("score_weights") is not None:
        section["scored_on"] = "given weights"
        section["score_weights_sha256"] = _score_weights_digest(model, score_options["score_weights"])
    key = (key or OwnershipKey(arch=arch)).with_section(KEYMASK_SECTION, section, tensors)
    logger.info("Locked %s: key of %d of %d kept weights (score=%s).", arch, n, section["kept"], score)
    return LockedTicket(model=locked_model, key=key)


def _score_weights_digest(model: nn.Module, score_weights: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of the parameters of ``model``'s network as read from ``score_weights``."""
    source = timm_parameters(score_weights, detach=True)
    return tensor_digest({name: source[name] for name in timm_parameters(model)})


def key_parts(key: OwnershipKey) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The key's ``keymask`` section, its key masks and their values by parameter name.

    Raises:
        KeyMismatchError: The key has no ``keymask`` section, or its tensors are missing or damaged.
    """
    section = key.section(KEYMASK_SECTION)
    tensors = key.section_tensors(KEYMASK_SECTION)
    key_masks, values = {}, {}
    for name, info in section.get("params", {}).items():
        packed, vals = tensors.get(_MASK_TENSOR + name), tensors.get(_VALUES_TENSOR + name)
        if packed is None or vals is None:
            raise KeyMismatchError(f"The key lacks the tensors of '{name}'; the key file is incomplete.")
        try:
            km = unpack_bits(packed, tuple(info["shape"]))
        except MaskError as exc:
            raise KeyMismatchError(f"The key mask of '{name}' is damaged: {exc}") from exc
        if vals.dim() != 1 or vals.numel() != int(km.sum()):
            raise KeyMismatchError(f"The key holds {vals.numel()} values for '{name}' but its mask has {int(km.sum())}.")
        key_masks[name], values[name] = km, vals
    return section, key_masks, values
