"""The suspect's masks in the reference's coordinates, after alignment: :func:`recover_aligned_masks`."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..errors import UnknownNameError
from ..masks import MaskDict
from ..recovery import _noise_levels
from .reference import Reference
from .result import Alignment

__all__ = ["recover_aligned_masks"]


def _spread(values: torch.Tensor) -> float:
    """Median absolute deviation."""
    return float((values - values.median()).abs().median()) if values.numel() else 0.0


def _row_top_k(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The ``k[i]`` largest entries of each row ``i`` (ties: lower position first)."""
    flat = scores.reshape(scores.shape[0], -1)
    k = k.clamp(max=flat.shape[1])
    k_max = int(k.max()) if k.numel() else 0
    out = torch.zeros_like(flat, dtype=torch.bool)
    if k_max:
        order = torch.sort(flat, dim=1, descending=True, stable=True).indices[:, :k_max]
        out.scatter_(1, order, torch.arange(k_max)[None, :] < k[:, None])
    return out.reshape(scores.shape)


def recover_aligned_masks(alignment: Alignment, reference: Reference, names: Iterable[str] | None = None) -> MaskDict:
    """The suspect's masks in the reference's coordinates, after :func:`~hf_lottery_verify.alignment.align_suspect`.

    Row by row: a suspect row with no more non-zeros than the reference row keeps its
    non-zero pattern; a denser (densified) row keeps its ``k`` largest magnitudes, ``k``
    being the reference row's kept count. Only the reference's *counts* are used, never its
    positions, so an unrelated model does not inherit the reference's mask. Row scales do
    not change a row's ranking; input-channel scales do, so each layer ranks its entries
    with the alignment's estimated input scales undone where that makes the noise flat
    (densified, then rescaled), and as the suspect has them otherwise (rescaled, then
    densified: the noise was added flat). The noise's per-input-channel levels, fitted by
    a median polish, tell which.

    Args:
        alignment (`Alignment`): From :func:`~hf_lottery_verify.alignment.align_suspect`.
        reference (`Reference`): The reference it was aligned to.
        names (`Iterable[str]`, *optional*): Layers to recover; all masked layers of the
            reference by default.

    Only weights that can influence the output count (:attr:`Reference.live_only`: the
    alignment zeroed the suspect's function-free ones), so flooding them changes nothing.

    Returns:
        Boolean masks by name, shaped like the reference's.

    Raises:
        UnknownNameError: A name the reference has no mask for (a ``KeyError``).
    """
    reference = reference.live_only
    out: MaskDict = {}
    for name in (list(reference.masks) if names is None else list(names)):
        if name not in reference.masks:
            raise UnknownNameError("masked layer of the reference", name, available=reference.masks)
        aligned = alignment.state_dict[name]
        k = reference.kept_per_row[name]
        nz = aligned != 0
        dense = nz.reshape(nz.shape[0], -1).sum(1) > k
        if bool(dense.any()):
            rows = dense.nonzero().flatten()
            undone = alignment.recovery_weight(name, rows)
            _, levels = _noise_levels(undone, kept=float(k.sum()) / max(aligned.numel(), 1))
            log_scale = alignment.spaces[alignment.inputs[name]].scale.double().log()
            ranked = undone if _spread(levels) <= _spread(levels - log_scale) else aligned.index_select(0, rows)
            nz = nz.clone()
            nz[rows] = _row_top_k(ranked.double().abs(), k[rows])
        out[name] = nz
    return out
