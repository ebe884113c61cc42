"""Distributing a V1-locked ticket: the locked model to publish, the private key, and the merge back.

The owner publishes ``W ⊙ M_l`` (:func:`lock_model`; on folders: :func:`hf_lottery_verify.workflows.split_key_folder`) and keeps
the key: the ``keymask`` section of an :class:`~hf_lottery_verify.ownership_key.OwnershipKey`
holding the bit-packed key masks ``M_s`` and the key weights ``W ⊙ M_s``. Legitimate users
restore the full ticket bit-exactly with :func:`load_with_key`.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import nn

from ..codecs import pack_bits, unpack_bits
from ..errors import KeyMismatchError, MaskError
from ..masks import count_kept, timm_parameters
from ..ownership_key import KEYMASK_SECTION, SIGNATURE_SECTION, OwnershipKey, mask_digest
from ..storage import tensor_digest
from ._common import _model_masks, _ordered_names
from .split import merge_key_mask, split_key_mask

__all__ = ["KEYMASK_SECTION", "LockedTicket", "lock_model", "load_with_key"]

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
    if key is not None and key.arch.split(".")[0] != arch.split(".")[0]:
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
        "score_options": _json_safe({k: v for k, v in score_options.items() if k != "score_weights"}),
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


def _json_safe(options: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in options.items():
        if isinstance(v, tuple):
            v = list(v)
        if not isinstance(v, str | int | float | bool | list | type(None)):
            v = repr(v)
        out[k] = v
    return out


def load_with_key(
    folder_or_model: str | os.PathLike | nn.Module,
    key: OwnershipKey | str | os.PathLike,
) -> nn.Module:
    """Rebuild the full ticket ``W ⊙ M`` from a locked model and its key, bit-exactly.

    When the locked model does not fit the key as is — its shapes differ (widened by
    dummy channels) or its masks do not merge into the ticket's (channels permuted) — and
    the key holds a reference (:func:`~hf_lottery_verify.alignment.add_reference_to_key`),
    the model is first aligned to the reference
    (:func:`~hf_lottery_verify.alignment.align_suspect`) and the key merged in the
    reference's coordinates, each key value multiplied by the estimated scales of its row
    and column when the copy was rescaled. The result then computes what the full ticket
    computes (up to float rounding), in the reference's channel order; its ``alignment``
    attribute says what was undone.

    Args:
        folder_or_model: A locked folder (or Hub repo id, or file) or an in-memory locked
            model (which is copied, not modified).
        key: The :class:`OwnershipKey`, or the path of its JSON file.

    Returns:
        A :class:`~hf_lottery_verify.SparseResNetForImageClassification` with the full masks
        and the key weights restored.

    Raises:
        KeyMismatchError: The key has no ``keymask`` section or does not fit: another
            architecture, a missing parameter or shape, a key overlapping the locked mask,
            a mask digest that differs after the merge (also after alignment, when the key
            has a reference).
        KeyFileError: ``key`` is a path that cannot be read.
        CheckpointError: The folder cannot be loaded.
    """
    from ..errors import MissingWeightsError, ShapeMismatchError, UnexpectedWeightsError
    from ..loading import load_model
    from ..ownership_key import REFERENCE_SECTION

    if not isinstance(key, OwnershipKey):
        key = OwnershipKey.load(key)
    has_reference = REFERENCE_SECTION in key.sections

    def no_fit(message: str) -> KeyMismatchError:
        """The locked model does not fit the key as is (an aligned copy may)."""
        error = KeyMismatchError(message)
        error.fits_as_is = False  # type: ignore[attr-defined]
        return error

    def merge_as_is(model: nn.Module) -> nn.Module:
        arch = _arch(model)
        if key.arch.split(".")[0] != arch.split(".")[0]:
            raise KeyMismatchError(f"This key was made for architecture '{key.arch}', the model is '{arch}'.")
        section = key.section(KEYMASK_SECTION)
        tensors = key.section_tensors(KEYMASK_SECTION)
        params = model.timm_parameters()
        masks = model.masks
        key_masks, values = {}, {}
        for name, info in section.get("params", {}).items():
            shape = tuple(info["shape"])
            if name not in params:
                raise KeyMismatchError(f"The key holds '{name}', which the model ({arch}) does not have.")
            if tuple(params[name].shape) != shape:
                raise no_fit(f"The key's '{name}' has shape {shape}, the model's {tuple(params[name].shape)}.")
            if name not in masks:
                raise no_fit(f"The model has no mask for '{name}', which the key covers; it is not the locked ticket.")
            packed, vals = tensors.get(_MASK_TENSOR + name), tensors.get(_VALUES_TENSOR + name)
            if packed is None or vals is None:
                raise KeyMismatchError(f"The key lacks the tensors of '{name}'; the key file is incomplete.")
            try:
                km = unpack_bits(packed, shape)
            except MaskError as exc:
                raise KeyMismatchError(f"The key mask of '{name}' is damaged: {exc}") from exc
            if vals.dim() != 1 or vals.numel() != int(km.sum()):
                raise KeyMismatchError(
                    f"The key holds {vals.numel()} values for '{name}' but its mask has {int(km.sum())}.")
            overlap = int((km & masks[name].cpu()).sum())
            if overlap:
                raise no_fit(
                    f"The key mask of '{name}' overlaps the model's mask in {overlap} entries: this model is not the "
                    "locked ticket the key was made for (or it is the full ticket already)."
                )
            key_masks[name], values[name] = km, vals
        merged = dict(masks)
        merged.update(merge_key_mask({n: masks[n].cpu() for n in key_masks}, key_masks))
        if mask_digest(merged) != section.get("mask_digest"):
            raise no_fit(
                "After merging the key, the masks differ from the ticket the key was made for (digest mismatch): the "
                "locked model was pruned, re-masked or belongs to another ticket."
            )
        with torch.no_grad():
            for name, km in key_masks.items():
                p = params[name]
                vals = values[name]
                if vals.dtype != p.dtype:
                    logger.warning("Key values of '%s' are %s, the model's weights %s; casting (not bit-exact).",
                                   name, vals.dtype, p.dtype)
                p[km.to(p.device)] = vals.to(p.device, p.dtype)
        model.set_masks(merged)
        return model

    source: Any = folder_or_model
    first_error: Exception | None = None
    if isinstance(folder_or_model, nn.Module):
        model: nn.Module | None = copy.deepcopy(folder_or_model)
    else:
        try:
            model = load_model(folder_or_model)
        except (ShapeMismatchError, MissingWeightsError, UnexpectedWeightsError) as exc:
            if not has_reference:
                raise
            model, first_error = None, exc
    if model is not None:
        try:
            return merge_as_is(model)
        except KeyMismatchError as exc:
            if getattr(exc, "fits_as_is", True) or not has_reference:
                raise
            first_error = exc
    from ..alignment import reference_from_key
    from ..alignment.restore import restore_aligned_ticket
    from ..suspect import read_suspect

    reference = reference_from_key(key)
    if reference is None:  # pragma: no cover - guarded by has_reference
        raise KeyMismatchError("The key has no reference to align the locked model to.")
    key.section(KEYMASK_SECTION)
    logger.info("The locked model does not fit the key as is (%s); aligning it to the key's reference.", first_error)
    state = read_suspect(source).state_dict
    return restore_aligned_ticket(state, key, reference)
