"""Scheme V1 on a structurally edited copy: restore the full ticket from a permuted (rescaled, widened) locked model.

:func:`~hf_lottery_verify.loading.load_with_key` merges the key weights into the locked
model directly when it fits; when it does not (its channels were permuted, its shapes
widened, its rows rescaled) and the key holds a reference, :func:`restore_aligned_ticket`
aligns the locked model to the reference first and merges the key in the reference's
coordinates, each key value multiplied by the estimated scales of its row and column.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import replace
from typing import NamedTuple

import torch
from torch import nn

from ..errors import KeyMismatchError
from ..keymask import key_parts
from ..masks import masks_from_weights
from ..ownership_key import OwnershipKey, mask_digest
from .align import align_suspect
from .reference import Reference
from .result import Alignment

__all__ = ["RestoredTicket", "restore_aligned_ticket"]


class RestoredTicket(NamedTuple):
    """The full ticket in the reference's coordinates: timm weights, masks, and the alignment (what was undone)."""

    state_dict: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    alignment: Alignment

logger = logging.getLogger(__name__)

def _locked_reference(reference: Reference, key_masks: Mapping[str, torch.Tensor],
                      values: Mapping[str, torch.Tensor]) -> Reference:
    """A reference of the full ticket turned into one of the locked model (key weights taken out)."""
    masks = dict(reference.masks)
    rows, cols = dict(reference.row_norms), dict(reference.col_norms)
    for name, km in key_masks.items():
        if name not in masks or tuple(masks[name].shape) != tuple(km.shape):
            continue
        masks[name] = masks[name] & ~km
        dense = torch.zeros(km.shape, dtype=torch.float64)
        dense[km] = values[name].double()
        key_rows = dense.reshape(km.shape[0], -1).norm(dim=1)
        key_cols = dense.transpose(0, 1).reshape(km.shape[1], -1).norm(dim=1)
        rows[name] = (rows[name].double().square() - key_rows.square()).clamp(min=0).sqrt().float()
        cols[name] = (cols[name].double().square() - key_cols.square()).clamp(min=0).sqrt().float()
    return replace(reference, masks=masks, row_norms=rows, col_norms=cols, mask_digest=mask_digest(masks))


@torch.no_grad()
def restore_aligned_ticket(
    suspect: nn.Module | Mapping[str, torch.Tensor],
    key: OwnershipKey,
    reference: Reference,
) -> RestoredTicket:
    """Align a locked model to the key's reference, then merge the key weights in the reference's coordinates.

    Args:
        suspect: The locked model (any structural edit of it), as a model or a state dict
            under timm's names.
        key (`OwnershipKey`): The key, with ``keymask`` and ``reference`` sections.
        reference (`Reference`): The key's reference (of the published locked model, or of
            the full ticket: then the key weights are taken out of it first).

    Returns:
        The :class:`RestoredTicket`: weights of the reference's architecture and channel order
        with the key weights restored (scaled like the suspect's rows and columns, so they
        compute what the full ticket computes, up to float rounding), the full masks, and the
        alignment.

    Raises:
        KeyMismatchError: The suspect is of another architecture, or after alignment and
            merging the masks are not the ticket's (digest mismatch).
    """
    section, key_masks, values = key_parts(key)
    if reference.mask_digest == section.get("mask_digest"):
        reference = _locked_reference(reference, key_masks, values)
    if isinstance(suspect, nn.Module):
        net = getattr(suspect, "timm_model", suspect)
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    else:
        state = dict(suspect)
    alignment = align_suspect(state, reference, live_only=False)  # every weight: the key weights go back in
    params = {name: value.clone() for name, value in alignment.state_dict.items()}
    masks = masks_from_weights(params, [*reference.masks, *(n for n in key_masks if n not in reference.masks)])
    for name, km in key_masks.items():
        if name not in params or tuple(params[name].shape) != tuple(km.shape):
            raise KeyMismatchError(f"The key's '{name}' does not fit the aligned model ({reference.arch}).")
        overlap = int((km & masks[name]).sum())
        if overlap:
            raise KeyMismatchError(
                f"The key mask of '{name}' overlaps the aligned model's weights in {overlap} entries: this model is "
                f"not the locked ticket the key was made for (alignment: {alignment.summary}).")
        masks[name] = masks[name] | km
    if mask_digest(masks) != section.get("mask_digest"):
        raise KeyMismatchError(
            "After aligning the model to the key's reference and merging the key, the masks differ from the ticket "
            f"the key was made for (digest mismatch): it is not a copy of the locked ticket, or it was pruned, "
            f"re-masked or densified (alignment: {alignment.summary}).")
    for name, km in key_masks.items():
        p = params[name]
        vals = values[name].double()
        if name in alignment.row_scales:
            lam = alignment.spaces[alignment.inputs[name]].scale
            alpha = alignment.row_scales[name].double()
            shape = [1] * p.dim()
            shape[1] = -1
            factor = alpha.reshape(-1, *([1] * (p.dim() - 1))) / lam.reshape(shape)
            vals = vals * factor.expand(km.shape)[km]
        if not bool(torch.isfinite(vals).all()) or math.isnan(float(vals.sum())):
            raise KeyMismatchError(f"The scales estimated for '{name}' are not finite; cannot restore the ticket.")
        p[km.to(p.device)] = vals.to(p.device, p.dtype)
    logger.info("Restored the full ticket from an edited locked model: %s", alignment.summary)
    return RestoredTicket(params, masks, alignment)
