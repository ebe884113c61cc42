"""Recovering a suspect's mask from its weights (the verifier never reads a stored mask).

A pruned ticket that was stolen as is keeps exact zeros where it is pruned, so its mask
is simply the non-zero pattern. A thief may *densify* it instead — fine-tune without the
mask, or switch pruned positions on with small noise (the paper's add-on attack) — and
then the owner's defense applies: per layer, keep only as many weights as the signed
ticket had, by magnitude (the count comes from the owner's key). Channel rescaling must
be undone before that ranking (:mod:`hf_lottery_verify.alignment` does it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from .masks import MaskDict
from .pruning import top_k_mask

__all__ = ["recover_masks"]


def recover_masks(weights: Mapping[str, torch.Tensor], kept: Mapping[str, int] | None = None) -> MaskDict:
    """The suspect's masks: non-zero weights, or (add-on defense) the ``kept[name]`` largest magnitudes.

    Args:
        weights (`Mapping[str, torch.Tensor]`): The suspect's weights by name (only these are read).
        kept (`Mapping[str, int]`, *optional*): Kept-weight count of each layer in the owner's
            ticket (from the key). A layer with more non-zeros than that keeps only its
            ``kept[name]`` largest magnitudes; layers not named (or ``kept=None``) give their
            non-zero pattern.

    Returns:
        Boolean masks by name, with at most ``kept[name]`` entries for the named layers.
    """
    out: MaskDict = {}
    for name, w in weights.items():
        nz = w != 0
        k = (kept or {}).get(name)
        if k is not None and int(nz.sum()) > k:
            out[name] = top_k_mask(w.abs().double().masked_fill(~nz, -math.inf), int(k))
        else:
            out[name] = nz
    return out
