"""Removal attacks a thief may run on a stolen ticket (the paper's Section 5), and defenses.

Each attack returns a *new* model and leaves its input untouched, so one signed ticket
can be attacked many ways in a row. The suspect's mask is always re-derived from its
weights by the verifier; attacks therefore only change weights (and clear the stored
masks to the non-zero pattern, as a thief's re-saved checkpoint would).

* :func:`prune_attack` — one-shot magnitude (OMP) or random pruning of a share of the
  kept weights (Tables 5 and 6: 5–50%), globally or per layer, optionally restricted to
  some layers or one stage (the targeted "prune the stage that holds the signature").
* :func:`addon_attack` — switch on a share of the pruned positions with noise (Table 8:
  0.5–10%). The owner's defense (:func:`hf_lottery_verify.recovery.recover_masks`, applied
  by every verification) keeps, per layer, only as many weights as the signed ticket had,
  by magnitude.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from ..errors import MaskError, UnknownNameError
from ..pruning import magnitude_prune, random_prune, top_k_mask
from ._common import _copy_with_masks, _remask
from .registry import register_attack

__all__ = ["prune_attack", "addon_attack", "select_layers"]


def select_layers(names: Sequence[str], *, layers: Sequence[str] | str | None = None,
                  stage: str | None = None) -> list[str]:
    """The masked parameters an attack is restricted to.

    Args:
        names (`Sequence[str]`): Every masked parameter, in network order.
        layers (`Sequence[str]` or `str`, *optional*): Parameter names (one or several).
        stage (`str`, *optional*): A stage (``"layer1"``, ``"layer2"``, ...): every masked
            parameter inside it.

    Returns:
        The selected names in network order (all of them when neither is given).

    Raises:
        MaskError: A named layer is not masked.
        UnknownNameError: The stage holds no masked parameter.
    """
    selected = list(names)
    if layers is not None:
        wanted = [layers] if isinstance(layers, str) else list(layers)
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise MaskError(f"Layer(s) {unknown} are not masked parameters of this model; masked ones: "
                            f"{', '.join(names[:6])}{' ...' if len(names) > 6 else ''}.", param_name=unknown[0])
        selected = [n for n in selected if n in wanted]
    if stage is not None:
        stages = sorted({n.split(".", 1)[0] for n in names})
        if stage not in stages:
            raise UnknownNameError("stage", stage, available=stages)
        selected = [n for n in selected if n.split(".", 1)[0] == stage]
    return selected


@register_attack("prune", kind="removal", strength="fraction", sweep=(0.05, 0.1, 0.2, 0.3, 0.5),
                 variants={"magnitude": {"method": "magnitude"}, "random": {"method": "random"},
                           "layer_magnitude": {"method": "magnitude", "scope": "layer"}})
@torch.no_grad()
def prune_attack(
    model: nn.Module,
    *,
    fraction: float = 0.2,
    method: Literal["magnitude", "random"] = "magnitude",
    scope: Literal["global", "layer"] = "global",
    layers: Sequence[str] | str | None = None,
    stage: str | None = None,
    seed: int = 0,
) -> nn.Module:
    """One-shot pruning of a share of the suspect's non-zero prunable weights.

    Args:
        model (`nn.Module`): A :class:`~hf_lottery_verify.SparseResNetForImageClassification`.
        fraction (`float`, *optional*, defaults to 0.2): Share of the kept weights (of the selected layers) to remove,
            in ``[0, 1]`` (0.05–0.5 in the paper; 1.0 with ``stage`` wipes a stage).
        method (`str`, *optional*, defaults to `"magnitude"`): ``magnitude`` (OMP) or ``random``.
        scope (`str`, *optional*, defaults to `"global"`): ``global`` (rank the selected layers
            together) or ``layer`` (the same share of each).
        layers (`Sequence[str]` or `str`, *optional*): Prune only these parameters.
        stage (`str`, *optional*): Prune only inside this stage (``"layer1"``, ...).
        seed (`int`, *optional*, defaults to 0): Seed for random pruning.

    Returns:
        The attacked copy (its masks are the new non-zero pattern).

    Raises:
        ValueError: Unknown ``method`` or ``fraction`` outside ``[0, 1]``.
        MaskError, UnknownNameError: Unknown ``layers`` or ``stage``.
    """
    if method not in ("magnitude", "random"):
        raise ValueError(f"Unknown pruning attack '{method}': use 'magnitude' or 'random'.")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}.")
    attacked, params, masks = _copy_with_masks(model)
    chosen = select_layers(list(masks), layers=layers, stage=stage)
    sub = {n: masks[n] for n in chosen}
    if method == "magnitude":
        new = magnitude_prune(params, sub, fraction=fraction, scope=scope)
    else:
        new = random_prune(sub, fraction=fraction, scope=scope, seed=seed)
    attacked.set_masks({**masks, **new})
    return attacked


@register_attack("addon", kind="removal", strength="rate", sweep=(0.005, 0.01, 0.02, 0.05, 0.1))
@torch.no_grad()
def addon_attack(model: nn.Module, *, rate: float = 0.01, scale: float = 0.5, seed: int = 0) -> nn.Module:
    """Switch on a share of the pruned prunable positions with Gaussian noise.

    The noise of each layer has standard deviation ``scale`` times the standard deviation
    of that layer's kept weights, so it is neither negligible nor obviously foreign.

    Args:
        model (`nn.Module`): The suspect.
        rate (`float`, *optional*, defaults to 0.01): Share of pruned positions to switch on (0.005–0.1 in the paper).
        scale (`float`, *optional*, defaults to 0.5): Noise level relative to the layer's kept weights.
        seed (`int`, *optional*, defaults to 0): Seed of positions and values.

    Returns:
        The attacked copy (its masks become the new non-zero pattern).

    Raises:
        ValueError: ``rate`` outside ``[0, 1]``.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must lie in [0, 1], got {rate}.")
    attacked, params, masks = _copy_with_masks(model)
    gen = torch.Generator().manual_seed(seed)
    for name, mask in masks.items():
        w = params[name]
        pruned = ~mask.cpu()
        n_on = round(rate * int(pruned.sum()))
        scores = torch.rand(mask.shape, generator=gen, dtype=torch.float64).masked_fill(~pruned, -math.inf)
        on = top_k_mask(scores, n_on)
        kept = w.detach().cpu()[mask.cpu()]
        std = float(kept.std()) if kept.numel() > 1 else 1e-2
        noise = torch.randn(int(on.sum()), generator=gen) * std * scale
        w_cpu = w.detach().cpu().clone()
        w_cpu[on] = noise.to(w_cpu.dtype)
        w.copy_(w_cpu.to(w.device))
    return _remask(attacked)
