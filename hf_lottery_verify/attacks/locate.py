"""``locate_rewrite``: the key-less attack a thief runs with only the public checkpoint and this library.

1. Read the mask off the published weights (non-zero entries).
2. Search every masked conv, QR version, window offset, ECC level, mask pattern and
   polarity for a window that decodes (:func:`~hf_lottery_verify.attacks.qrsearch.locate_windows`).
3. Rewrite what was found: flip the kernel occupancy of a seeded share of each found
   window's data modules (a kept kernel is cleared, an empty one gets weights drawn like
   the layer's kept weights), keeping every layer's kept count (the balance is pruned by
   smallest magnitude, or switched on at random, outside the windows).
4. When nothing decodes (a keyed signature), rewrite the kernel occupancy of random
   windows of the spatial convs of the first stages instead (blind: the thief knows the
   paper says "low-level layers").
5. With data, one epoch (``epochs``) of masked fine-tuning wins accuracy back.

Flipping *every* data module of a window would write the inverted symbol, which decodes
under the other polarity; flipping half of them (``flip_share=0.5``) leaves bits
uncorrelated with the symbol and its inverse, and a share of 10% already spoils more
codewords than ECC level H corrects.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .. import qr
from ..configs import TrainConfig
from ..data import DatasetPair, ImageData, derive_seed
from ..masks import squeeze_mask
from ..pruning import top_k_mask
from ._common import _copy_with_masks, _draw_like, _remask
from .finetune import masked_finetune
from .qrsearch import LocatedWindow, locate_windows
from .registry import register_attack

__all__ = ["locate_rewrite_attack", "rewrite_kernels"]

logger = logging.getLogger(__name__)


@torch.no_grad()
def rewrite_kernels(weight: torch.Tensor, kernels: torch.Tensor, *, protect: torch.Tensor,
                    gen: torch.Generator) -> dict[str, int]:
    """Flip the occupancy of the given kernels of one conv weight in place, keeping its kept count.

    A kept kernel is cleared; an empty one gets ``per_kernel`` weights (the layer's mean
    kept weights per kept kernel, at least 1) at seeded positions, drawn like the layer's
    kept weights. The difference in kept weights is then balanced without changing any
    kernel's occupancy where possible: weights are pruned (smallest magnitudes first) only
    from kernels that keep another weight, or switched on only inside occupied kernels,
    outside ``protect`` first; only when that is not enough does the balance empty or fill
    kernels outside ``protect``. Flipped kernels are never touched again.

    Args:
        weight (`torch.Tensor`): ``(out, in, kh, kw)`` CPU weights, edited in place.
        kernels (`torch.Tensor`): ``(out, in)`` boolean map of the kernels to flip.
        protect (`torch.Tensor`): ``(out, in)`` boolean map of kernels the balancing avoids.
        gen (`torch.Generator`): Seeded generator.

    Returns:
        Counts: ``cleared_kernels``, ``filled_kernels``, ``balanced`` (weights pruned (+) or
        switched on (−) to restore the kept count).
    """
    mask = weight != 0
    before = int(mask.sum())
    kept_values = weight[mask].clone()
    occupied = squeeze_mask(mask)
    per_kernel = max(1, round(before / max(1, int(occupied.sum()))))
    k_area = weight.shape[2] * weight.shape[3]
    clear = kernels & occupied
    fill = kernels & ~occupied
    weight[clear] = 0
    o, i = torch.nonzero(fill, as_tuple=True)
    if o.numel():
        n_on = min(per_kernel, k_area)
        scores = torch.rand((o.numel(), k_area), generator=gen)
        chosen = torch.topk(scores, n_on, dim=1).indices
        values = _draw_like(kept_values, o.numel() * n_on, gen).to(weight.dtype).reshape(o.numel(), n_on)
        flat = weight[o, i].reshape(o.numel(), k_area)
        flat.scatter_(1, chosen, values)
        weight[o, i] = flat.reshape(o.numel(), *weight.shape[2:])
    delta = int((weight != 0).sum()) - before
    expand = (lambda m: m[:, :, None, None].expand_as(weight))  # noqa: E731
    inside, flipped = expand(protect), expand(kernels)
    now = weight != 0
    if delta > 0:  # prune: smallest magnitudes, keeping occupancy (kernels with 2+ weights) and outside first
        sole = expand(now.flatten(2).sum(2) == 1) & now
        scores = weight.abs().double() + 1e6 * inside.double() + 1e12 * sole.double()
        scores = scores.masked_fill(~now | flipped, float("inf"))
        weight[top_k_mask(-scores, min(delta, int((now & ~flipped).sum())))] = 0
    elif delta < 0:  # switch on: inside occupied kernels (outside first), then empty ones outside
        occupied_now = expand(squeeze_mask(now))
        scores = (torch.rand(weight.shape, generator=gen, dtype=torch.float64) + 4.0 * occupied_now.double()
                  + 2.0 * (~inside).double()).masked_fill(now | flipped, -float("inf"))
        on = top_k_mask(scores, min(-delta, int((~now & ~flipped).sum())))
        weight[on] = _draw_like(kept_values, int(on.sum()), gen).to(weight.dtype)
    return {"cleared_kernels": int(clear.sum()), "filled_kernels": int(fill.sum()), "balanced": delta}


def _window_map(shape: tuple[int, int], row: int, col: int, cells: np.ndarray) -> torch.Tensor:
    out = torch.zeros(shape, dtype=torch.bool)
    rows, cols = np.nonzero(cells)
    out[torch.from_numpy(rows + row), torch.from_numpy(cols + col)] = True
    return out


def _share(cells: torch.Tensor, share: float, gen: torch.Generator) -> torch.Tensor:
    """A seeded ``share`` of the ``True`` cells of ``cells``."""
    idx = torch.nonzero(cells.reshape(-1)).reshape(-1)
    keep = idx[torch.randperm(idx.numel(), generator=gen)[: round(share * idx.numel())]]
    out = torch.zeros(cells.numel(), dtype=torch.bool)
    out[keep] = True
    return out.view_as(cells)


def _fallback_plan(masks: Mapping[str, torch.Tensor], stages: Sequence[str], *, share: float,
                   gen: torch.Generator) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Kernels to flip when nothing decodes (one random window of each spatial conv of ``stages``), and the windows."""
    plan: dict[str, torch.Tensor] = {}
    windows_of: dict[str, torch.Tensor] = {}
    for name, m in masks.items():
        if m.dim() != 4 or m.shape[2] * m.shape[3] == 1 or name.split(".", 1)[0] not in stages:
            continue
        out_c, in_c = m.shape[:2]
        side_r, side_c = min(21, out_c), min(21, in_c)  # a version-1 QR symbol's side, clipped to the layer
        r = int(torch.randint(out_c - side_r + 1, (1,), generator=gen))
        c = int(torch.randint(in_c - side_c + 1, (1,), generator=gen))
        cells = torch.zeros(out_c, in_c, dtype=torch.bool)
        cells[r: r + side_r, c: c + side_c] = True
        plan[name] = _share(cells, share, gen)
        windows_of[name] = cells
    return plan, windows_of


@register_attack("locate_rewrite", kind="removal", strength="flip_share", sweep=(0.1, 0.25, 0.5))
def locate_rewrite_attack(
    model: nn.Module,
    *,
    data: DatasetPair | ImageData | None = None,
    flip_share: float = 0.5,
    max_version: int = 3,
    versions: Sequence[int] | None = None,
    epochs: int = 1,
    train: TrainConfig | None = None,
    train_limit: int | None = None,
    seed: int = 0,
) -> nn.Module:
    """Find a contiguous QR window without any key and rewrite it; blind rewriting when none decodes.

    Args:
        model (`nn.Module`): The published ticket; not modified.
        data (`DatasetPair` or `ImageData`, *optional*): With data, ``epochs`` of masked
            fine-tuning follow the rewrite.
        flip_share (`float`, *optional*, defaults to 0.5): Share of each window's (data) modules
            whose kernel occupancy is flipped.
        max_version (`int`, *optional*, defaults to 3): Largest QR version searched (see
            :func:`~hf_lottery_verify.attacks.qrsearch.locate_windows`).
        versions (`Sequence[int]`, *optional*): Exactly these versions instead.
        epochs (`int`, *optional*, defaults to 1): Fine-tuning epochs when ``data`` is given
            (0: none).
        train_limit (`int`, *optional*): At most this many training samples.
        train (`TrainConfig`, *optional*): The thief's training recipe (:data:`~hf_lottery_verify.attacks.registry.ATTACK_TRAINING`
            by default); ``epochs`` and ``seed`` here override its own.
        seed (`int`, *optional*, defaults to 0): Seed of every choice.

    Returns:
        The rewritten (and fine-tuned) copy; masks are its non-zero pattern.

    Raises:
        ValueError: ``flip_share`` outside ``[0, 1]``.
    """
    from ..architectures import stage_names

    if not 0.0 <= flip_share <= 1.0:
        raise ValueError(f"flip_share must lie in [0, 1], got {flip_share}.")
    attacked, params, masks = _copy_with_masks(model)
    gen = torch.Generator().manual_seed(derive_seed(seed, "locate_rewrite"))
    hits: list[LocatedWindow] = locate_windows(masks, versions=versions, max_version=max_version)
    plan: dict[str, torch.Tensor] = {}
    protect: dict[str, torch.Tensor] = {}
    for hit in dict.fromkeys(hits):
        shape = tuple(masks[hit.param].shape[:2])
        cells = _window_map(shape, hit.row, hit.col, qr.data_map(hit.version))
        whole = _window_map(shape, hit.row, hit.col, np.ones((hit.size, hit.size), dtype=bool))
        chosen = _share(cells, flip_share, gen)
        plan[hit.param] = plan[hit.param] | chosen if hit.param in plan else chosen
        protect[hit.param] = protect[hit.param] | whole if hit.param in protect else whole
    if hits:
        logger.info("locate_rewrite: %d decodable window(s) found (%s); rewriting them.", len(hits),
                    ", ".join(f"{h.param}@({h.row},{h.col}) v{h.version}-{h.ecc} {h.text!r}" for h in hits[:4]))
    else:
        stages = stage_names(attacked.timm_model)[:2]  # "low-level layers", says the paper
        logger.info("locate_rewrite: nothing decodes; rewriting random windows in %s.", stages)
        plan, protect = _fallback_plan(masks, stages, share=flip_share, gen=gen)
    with torch.no_grad():
        for name, kernels in plan.items():
            p = params[name]
            w = p.detach().cpu().clone()
            rewrite_kernels(w, kernels, protect=protect[name], gen=gen)
            p.copy_(w.to(p.device))
    _remask(attacked)
    if data is not None and epochs > 0:
        attacked = masked_finetune(attacked, data, epochs=epochs, seed=seed, config=train, train_limit=train_limit)
    return attacked
