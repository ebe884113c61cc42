"""Loading a ticket: :func:`load_model` (any ResNet checkpoint layout, defined with the model
class) and :func:`load_with_key` — Scheme V1's owner side, the full ticket back from a locked
copy and the private key (:mod:`hf_lottery_verify.keymask`), also from a structurally edited
copy when the key holds a reference (:func:`~hf_lottery_verify.alignment.restore_aligned_ticket`).
"""

from __future__ import annotations

import copy
import logging
import os
from typing import Any

import torch
from torch import nn

from .alignment import reference_from_key, restore_aligned_ticket
from .errors import KeyMismatchError, MissingWeightsError, ShapeMismatchError, UnexpectedWeightsError
from .keymask import KEYMASK_SECTION, key_parts, merge_key_mask
from .keymask.distribution import _arch
from .modeling_sparse_resnet import load_model
from .ownership_key import REFERENCE_SECTION, KeyLike, as_key, mask_digest
from .suspect import read_suspect

__all__ = ["load_model", "load_with_key"]

logger = logging.getLogger(__name__)


def load_with_key(
    folder_or_model: str | os.PathLike | nn.Module,
    *,
    key: KeyLike,
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
    key = as_key(key)
    has_reference = REFERENCE_SECTION in key.sections

    def no_fit(message: str) -> KeyMismatchError:
        """The locked model does not fit the key as is (an aligned copy may)."""
        error = KeyMismatchError(message)
        error.fits_as_is = False  # type: ignore[attr-defined]
        return error

    def merge_as_is(model: nn.Module) -> nn.Module:
        arch = _arch(model)
        if key.arch != arch.split(".")[0]:
            raise KeyMismatchError(f"This key was made for architecture '{key.arch}', the model is '{arch}'.")
        params = model.timm_parameters()
        masks = model.masks
        for name, info in key.section(KEYMASK_SECTION).get("params", {}).items():
            if name not in params:
                raise KeyMismatchError(f"The key holds '{name}', which the model ({arch}) does not have.")
            if tuple(params[name].shape) != tuple(info["shape"]):
                raise no_fit(f"The key's '{name}' has shape {tuple(info['shape'])}, the model's "
                             f"{tuple(params[name].shape)}.")
            if name not in masks:
                raise no_fit(f"The model has no mask for '{name}', which the key covers; it is not the locked ticket.")
        section, key_masks, values = key_parts(key)
        for name, km in key_masks.items():
            overlap = int((km & masks[name].cpu()).sum())
            if overlap:
                raise no_fit(
                    f"The key mask of '{name}' overlaps the model's mask in {overlap} entries: this model is not the "
                    "locked ticket the key was made for (or it is the full ticket already)."
                )
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
    reference = reference_from_key(key)
    if reference is None:  # pragma: no cover - guarded by has_reference
        raise KeyMismatchError("The key has no reference to align the locked model to.")
    key.section(KEYMASK_SECTION)
    logger.info("The locked model does not fit the key as is (%s); aligning it to the key's reference.", first_error)
    restored = restore_aligned_ticket(read_suspect(source).state_dict, key, reference)
    model = load_model(restored.state_dict, arch=reference.arch, model_args=reference.model_args)
    model.set_masks(restored.masks)
    model.alignment = restored.alignment  # what was undone, for reports
    return model
