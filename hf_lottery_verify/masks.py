"""Masks: which weights a sparse ticket keeps, how to prune them, and how to keep them pruned.

A *mask dict* maps a parameter name (timm's own, e.g. ``layer2.0.conv1.weight``) to a
``torch.bool`` tensor of the parameter's shape; ``True`` means *kept*. Parameters that
are not in the dict are dense. Everything here is a pure function of tensors, except
:class:`MaskEnforcer`, which holds the hooks that keep pruned weights at exactly zero
while an optimizer runs.

Paper terms: ``spar(M)`` is the fraction of ones, ``rspar(M1, M2) = spar(M1) /
(spar(M2) + eps)``; the 4-D→2-D *squeeze* marks a kernel ``(out, in)`` as kept when
any of its weights is kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Literal

import torch
from torch import nn

from .errors import DensityError, MaskError, UnknownNameError

__all__ = [
    "MaskDict",
    "prunable_parameter_names",
    "ones_masks",
    "masks_from_weights",
    "check_masks",
    "spar",
    "rspar",
    "count_kept",
    "count_total",
    "top_k_mask",
    "magnitude_prune",
    "random_prune",
    "prune",
    "list_pruners",
    "squeeze_mask",
    "pack_bits",
    "unpack_bits",
    "encode_positions",
    "decode_positions",
    "apply_masks_",
    "MaskEnforcer",
]

MaskDict = dict[str, torch.Tensor]
Scope = Literal["global", "layer"]

# --------------------------------------------------------------------------- which parameters


def prunable_parameter_names(
    model: nn.Module,
    *,
    include_stem: bool = False,
    include_classifier: bool = False,
    include_shortcuts: bool = True,
) -> list[str]:
    """Names of the weights that pruning touches, in ``named_parameters`` order.

    The paper's default: every convolution weight except the stem (first) convolution;
    the classifier stays dense.

    Args:
        model: A timm ResNet (or anything with 4-D conv weights).
        include_stem: Also prune the first convolution (timm's ``first_conv``).
        include_classifier: Also prune the classifier weight (timm's ``classifier``).
        include_shortcuts: Prune the 1×1 shortcut (``downsample``) convolutions too.

    Returns:
        Parameter names.
    """
    cfg = getattr(model, "pretrained_cfg", None) or {}
    first_conv = cfg.get("first_conv", "conv1")
    classifier = cfg.get("classifier", "fc")
    first_convs = {first_conv} if isinstance(first_conv, str) else set(first_conv)
    classifiers = {classifier} if isinstance(classifier, str) else set(classifier)
    names = []
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, nn.Parameter):
            continue
        if isinstance(module, nn.Conv2d):
            if name in first_convs and not include_stem:
                continue
            if "downsample" in name.split(".") and not include_shortcuts:
                continue
            names.append(f"{name}.weight")
        elif isinstance(module, nn.Linear) and name in classifiers and include_classifier:
            names.append(f"{name}.weight")
    return names


def ones_masks(params: Mapping[str, torch.Tensor], names: Iterable[str]) -> MaskDict:
    """All-kept masks for ``names``.

    Args:
        params: Parameter tensors by name (``dict(model.named_parameters())``).
        names: Which parameters get a mask.

    Returns:
        A mask dict of ``True`` tensors on the parameters' devices.
    """
    return {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}


def masks_from_weights(params: Mapping[str, torch.Tensor], names: Iterable[str]) -> MaskDict:
    """Recover masks from the weights themselves: kept = non-zero.

    This is how a suspect's mask is read: never trust a mask stored beside the weights.

    Args:
        params: Weight tensors by name.
        names: Which parameters to read.

    Returns:
        A mask dict.
    """
    return {n: params[n].detach() != 0 for n in names}


def check_masks(masks: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor]) -> None:
    """Validate a mask dict against parameters.

    Args:
        masks: The mask dict.
        params: Parameter tensors by name.

    Raises:
        MaskError: A name is not a parameter, a mask is not boolean, or shapes differ.
    """
    for name, mask in masks.items():
        if name not in params:
            close = [p for p in params if p.endswith(name.split(".")[-1])][:3]
            raise MaskError(
                f"Mask for unknown parameter '{name}'. Mask names are timm parameter names such as {close}.",
                param_name=name,
            )
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise MaskError(
                f"Mask for '{name}' must be a torch.bool tensor, got {got}; convert with `mask != 0`.",
                param_name=name,
            )
        if tuple(mask.shape) != tuple(params[name].shape):
            raise MaskError(
                f"Mask for '{name}' has shape {tuple(mask.shape)}, the parameter has {tuple(params[name].shape)}.",
                param_name=name,
            )


# --------------------------------------------------------------------------- sparsity


def count_kept(masks: Mapping[str, torch.Tensor] | torch.Tensor) -> int:
    """Number of kept entries in a mask or mask dict."""
    if isinstance(masks, torch.Tensor):
        return int(masks.sum())
    return sum(int(m.sum()) for m in masks.values())


def count_total(masks: Mapping[str, torch.Tensor] | torch.Tensor) -> int:
    """Number of entries a mask or mask dict covers."""
    if isinstance(masks, torch.Tensor):
        return masks.numel()
    return sum(m.numel() for m in masks.values())


def spar(masks: Mapping[str, torch.Tensor] | torch.Tensor) -> float:
    """The paper's ``spar(M)``: fraction of kept entries (the density).

    Args:
        masks: A mask tensor or a mask dict.

    Returns:
        Kept entries divided by all entries (0.0 for an empty dict).
    """
    total = count_total(masks)
    return count_kept(masks) / total if total else 0.0


def rspar(
    m1: Mapping[str, torch.Tensor] | torch.Tensor,
    m2: Mapping[str, torch.Tensor] | torch.Tensor,
    *,
    eps: float = 1e-12,
) -> float:
    """The paper's relative sparsity ``rspar(M1, M2) = spar(M1) / (spar(M2) + eps)``."""
    return spar(m1) / (spar(m2) + eps)


# --------------------------------------------------------------------------- pruning


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Select exactly ``k`` largest scores, breaking ties by position (lower index wins).

    Runs in linear time (``kthvalue``) and is deterministic on every device.

    Args:
        scores: Scores of any shape; entries that must never be chosen hold ``-inf``.
        k: How many entries to select.

    Returns:
        A boolean tensor shaped like ``scores`` with exactly ``k`` ``True`` entries.

    Raises:
        DensityError: ``k`` is negative, larger than the number of entries, or larger than
            the number of finite scores.
        ValueError: ``scores`` contains NaN.
    """
    flat = scores.reshape(-1)
    n = flat.numel()
    if k < 0 or k > n:
        raise DensityError(f"Cannot select {k} of {n} entries.")
    if torch.isnan(flat).any():
        raise ValueError("Scores contain NaN; compute them in float64 or check the weights.")
    out = torch.zeros(n, dtype=torch.bool, device=flat.device)
    if k == 0:
        return out.view_as(scores)
    selectable = int((flat > -math.inf).sum())
    if k > selectable:
        raise DensityError(f"Cannot select {k} entries: only {selectable} are selectable (the rest are pruned).")
    threshold = torch.kthvalue(flat, n - k + 1).values
    above = flat > threshold
    out |= above
    need = k - int(above.sum())
    if need > 0:
        ties = torch.nonzero(flat == threshold).reshape(-1)[:need]
        out[ties] = True
    return out.view_as(scores)


def _kept_count_target(total_kept: int, total: int, *, density: float | None, fraction: float | None) -> int:
    if (density is None) == (fraction is None):
        raise DensityError("Give exactly one of density= (target kept fraction of all weights) or fraction= "
                           "(share of the currently kept weights to remove).")
    if density is not None:
        if not 0.0 <= density <= 1.0:
            raise DensityError(f"density must lie in [0, 1], got {density}.")
        target = round(density * total)
        if target > total_kept:
            raise DensityError(
                f"Target density {density:.4%} keeps {target} weights but only {total_kept} are kept now; "
                "pruning can only remove weights."
            )
        return target
    assert fraction is not None
    if not 0.0 <= fraction <= 1.0:
        raise DensityError(f"fraction must lie in [0, 1], got {fraction}.")
    return total_kept - round(fraction * total_kept)


def _prune_by_scores(
    scores: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    *,
    density: float | None,
    fraction: float | None,
    scope: Scope,
) -> MaskDict:
    """Keep the highest-scoring currently-kept weights, globally or per layer."""
    if scope not in ("global", "layer"):
        raise UnknownNameError("pruning scope", str(scope), available=("global", "layer"))
    names = list(masks)
    if scope == "layer":
        out = {}
        for name in names:
            mask = masks[name]
            k = _kept_count_target(int(mask.sum()), mask.numel(), density=density, fraction=fraction)
            s = scores[name].double().masked_fill(~mask, -math.inf)
            out[name] = top_k_mask(s, k)
        return out
    total_kept = count_kept(masks)
    k = _kept_count_target(total_kept, count_total(masks), density=density, fraction=fraction)
    flat = torch.cat([scores[n].double().masked_fill(~masks[n], -math.inf).reshape(-1) for n in names])
    chosen = top_k_mask(flat, k)
    out, start = {}, 0
    for name in names:
        numel = masks[name].numel()
        out[name] = chosen[start : start + numel].view_as(masks[name])
        start += numel
    return out


def magnitude_prune(
    params: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    *,
    density: float | None = None,
    fraction: float | None = None,
    scope: Scope = "global",
) -> MaskDict:
    """Magnitude pruning: keep the largest ``|w|`` among the currently kept weights.

    Args:
        params: Weights by name (only the names in ``masks`` are read).
        masks: Current masks; pruning never revives a pruned weight.
        density: Target fraction of all masked weights to keep (exact: ``round(density·N)``).
        fraction: Alternatively, the share of currently kept weights to remove (IMP's 20%).
        scope: ``"global"`` ranks all layers together (the paper's IMP); ``"layer"`` prunes
            each layer by the same share.

    Returns:
        New masks (the inputs are not modified).

    Raises:
        DensityError: Neither or both of ``density``/``fraction``, or an unreachable target.
    """
    scores = {n: params[n].detach().abs() for n in masks}
    return _prune_by_scores(scores, masks, density=density, fraction=fraction, scope=scope)


def random_prune(
    masks: Mapping[str, torch.Tensor],
    *,
    density: float | None = None,
    fraction: float | None = None,
    scope: Scope = "global",
    seed: int = 0,
) -> MaskDict:
    """Random pruning: remove uniformly chosen kept weights.

    Args:
        masks: Current masks.
        density: Target fraction of all masked weights to keep.
        fraction: Alternatively, the share of currently kept weights to remove.
        scope: ``"global"`` or ``"layer"``.
        seed: Seed of the CPU generator; the same seed gives the same masks.

    Returns:
        New masks.
    """
    gen = torch.Generator().manual_seed(seed)
    scores = {n: torch.rand(m.shape, generator=gen, dtype=torch.float64).to(m.device) for n, m in masks.items()}
    return _prune_by_scores(scores, masks, density=density, fraction=fraction, scope=scope)


_PRUNERS: dict[str, Callable[..., MaskDict]] = {}


def _register_pruner(name: str) -> Callable[[Callable[..., MaskDict]], Callable[..., MaskDict]]:
    def deco(fn: Callable[..., MaskDict]) -> Callable[..., MaskDict]:
        _PRUNERS[name] = fn
        return fn

    return deco


@_register_pruner("global_magnitude")
def _global_magnitude(params, masks, *, density=None, fraction=None, seed=0):  # noqa: ANN001, ANN202
    return magnitude_prune(params, masks, density=density, fraction=fraction, scope="global")


@_register_pruner("layer_magnitude")
def _layer_magnitude(params, masks, *, density=None, fraction=None, seed=0):  # noqa: ANN001, ANN202
    return magnitude_prune(params, masks, density=density, fraction=fraction, scope="layer")


@_register_pruner("global_random")
def _global_random(params, masks, *, density=None, fraction=None, seed=0):  # noqa: ANN001, ANN202
    return random_prune(masks, density=density, fraction=fraction, scope="global", seed=seed)


@_register_pruner("layer_random")
def _layer_random(params, masks, *, density=None, fraction=None, seed=0):  # noqa: ANN001, ANN202
    return random_prune(masks, density=density, fraction=fraction, scope="layer", seed=seed)


def list_pruners() -> list[str]:
    """Names accepted by :func:`prune`."""
    return sorted(_PRUNERS)


def prune(
    params: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    *,
    method: str = "global_magnitude",
    density: float | None = None,
    fraction: float | None = None,
    seed: int = 0,
) -> MaskDict:
    """Prune by a registered method name (``global_magnitude``, ``layer_magnitude``,
    ``global_random``, ``layer_random``).

    Args:
        params: Weights by name.
        masks: Current masks.
        method: A name from :func:`list_pruners`.
        density: Target kept fraction of the masked weights.
        fraction: Alternatively, share of the kept weights to remove.
        seed: Seed for random methods.

    Returns:
        New masks.

    Raises:
        UnknownNameError: ``method`` is not registered.
    """
    if method not in _PRUNERS:
        raise UnknownNameError("pruning method", method, available=_PRUNERS)
    return _PRUNERS[method](params, masks, density=density, fraction=fraction, seed=seed)


# --------------------------------------------------------------------------- shapes and encodings


def squeeze_mask(mask: torch.Tensor) -> torch.Tensor:
    """The paper's 4-D→2-D squeeze: kernel ``(out, in)`` is kept if any of its weights is.

    Args:
        mask: A ``(out, in, kh, kw)`` (or already 2-D) boolean mask.

    Returns:
        A ``(out, in)`` boolean tensor.
    """
    if mask.dim() == 2:
        return mask.bool()
    if mask.dim() != 4:
        raise MaskError(f"squeeze_mask expects a 2-D or 4-D mask, got shape {tuple(mask.shape)}.")
    if mask.shape[2] * mask.shape[3] == 1:
        return mask.bool()[:, :, 0, 0]
    return mask.bool().flatten(2).any(dim=2)


_BIT_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
_BIT_SHIFTS = torch.arange(7, -1, -1, dtype=torch.uint8)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Pack a boolean tensor into bytes, 8 entries per byte, most significant bit first.

    Matches ``numpy.packbits(mask.ravel(), bitorder="big")``.

    Args:
        mask: Boolean tensor of any shape (read in row-major order).

    Returns:
        A 1-D ``torch.uint8`` tensor of ``ceil(numel / 8)`` bytes, on the CPU.
    """
    flat = mask.detach().reshape(-1).to("cpu", torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return (flat.view(-1, 8) * _BIT_WEIGHTS).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, shape: Iterable[int]) -> torch.Tensor:
    """Inverse of :func:`pack_bits`.

    Args:
        packed: 1-D ``uint8`` tensor.
        shape: Shape of the boolean tensor to rebuild.

    Returns:
        A boolean tensor of ``shape``.

    Raises:
        MaskError: ``packed`` is too short for ``shape``.
    """
    shape = tuple(int(s) for s in shape)
    numel = math.prod(shape)
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() * 8 < numel:
        raise MaskError(
            f"Packed mask of {packed.numel()} {packed.dtype} bytes cannot hold shape {shape} "
            f"({numel} bits); the file is corrupt or was written for another architecture."
        )
    bits = (packed.unsqueeze(1) >> _BIT_SHIFTS) & 1
    return bits.reshape(-1)[:numel].view(shape).bool()


def encode_positions(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Elias–Fano code of the kept positions: about ``2 + log2(N/k)`` bits per kept weight.

    For a 2%-dense layer that is ~7.6 bits per kept weight instead of the 400 bits a
    bit-packed mask spends per kept weight (one per entry), and it is computed with tensor
    operations only.

    Args:
        mask: Boolean tensor of any shape.

    Returns:
        ``(low, high, low_bits)``: packed low bits, packed unary high bits (both ``uint8``)
        and the number of low bits per position.
    """
    flat = mask.detach().reshape(-1).cpu()
    n, idx = flat.numel(), torch.nonzero(flat).reshape(-1)
    k = idx.numel()
    low_bits = max(0, int(math.floor(math.log2(n / k)))) if k else 0
    if low_bits:
        shifts = torch.arange(low_bits - 1, -1, -1, dtype=torch.int64)
        low = pack_bits(((idx.unsqueeze(1) >> shifts) & 1).bool())
    else:
        low = torch.zeros(0, dtype=torch.uint8)
    high_vec = torch.zeros(k + (n >> low_bits) + 1, dtype=torch.bool)
    high_vec[(idx >> low_bits) + torch.arange(k)] = True
    return low, pack_bits(high_vec), low_bits


def decode_positions(low: torch.Tensor, high: torch.Tensor, low_bits: int, *, kept: int, shape: Iterable[int]) -> torch.Tensor:
    """Inverse of :func:`encode_positions`.

    Args:
        low: Packed low bits.
        high: Packed high bits.
        low_bits: Low bits per position.
        kept: Number of kept positions.
        shape: Shape of the mask.

    Returns:
        The boolean mask.

    Raises:
        MaskError: The code is inconsistent with ``kept`` and ``shape``.
    """
    shape = tuple(int(s) for s in shape)
    n = math.prod(shape)
    high_len = kept + (n >> low_bits) + 1
    high_vec = unpack_bits(high, (high_len,))
    ones = torch.nonzero(high_vec).reshape(-1)
    if ones.numel() != kept:
        raise MaskError(f"Position code holds {ones.numel()} positions, the header says {kept}; the file is corrupt.")
    idx = (ones - torch.arange(kept)) << low_bits
    if low_bits:
        bits = unpack_bits(low, (kept, low_bits)).to(torch.int64)
        idx |= (bits << torch.arange(low_bits - 1, -1, -1, dtype=torch.int64)).sum(dim=1)
    if kept and (int(idx.max()) >= n or not bool((idx[1:] > idx[:-1]).all())):
        raise MaskError("Position code points outside the tensor or is not increasing; the file is corrupt.")
    out = torch.zeros(n, dtype=torch.bool)
    out[idx] = True
    return out.view(shape)


# --------------------------------------------------------------------------- applying masks


@torch.no_grad()
def apply_masks_(params: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> None:
    """Zero every pruned weight in place (``+0.0``, never ``-0.0``).

    Args:
        params: Parameter tensors by name (modified in place).
        masks: The mask dict.
    """
    for name, mask in masks.items():
        p = params[name]
        p.masked_fill_(~mask.to(p.device), 0.0)


class MaskEnforcer:
    """Keeps pruned weights at exactly zero while an optimizer trains the model.

    Two guards, so that any optimizer (momentum, nesterov, weight decay, Adam) is safe:
    gradients of pruned weights are zeroed by a tensor hook before they reach the
    optimizer (momentum buffers of pruned weights stay zero), and the masks are
    re-applied by an optimizer step post-hook.

    Args:
        params: Parameters by name (``dict(model.named_parameters())``).
        masks: The mask dict; tensors are moved to each parameter's device.

    Example:
        >>> enforcer = MaskEnforcer(dict(model.named_parameters()), model.masks)
        >>> enforcer.attach(optimizer)   # doctest: +SKIP
    """

    def __init__(self, params: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> None:
        check_masks(masks, params)
        self._params = {n: params[n] for n in masks}
        self._pruned = {n: ~m.to(params[n].device) for n, m in masks.items()}
        self._handles: list = []
        for name, p in self._params.items():
            if p.requires_grad:
                pruned = self._pruned[name]
                self._handles.append(p.register_hook(lambda g, pruned=pruned: g.masked_fill(pruned, 0.0)))
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the pruned weights now."""
        for name, p in self._params.items():
            p.masked_fill_(self._pruned[name], 0.0)

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Re-apply the masks after every ``optimizer.step()``.

        Args:
            optimizer: A torch optimizer (or an object wrapping one in ``.optimizer``,
                like Accelerate's ``AcceleratedOptimizer``).
        """
        inner = getattr(optimizer, "optimizer", optimizer)
        self._handles.append(inner.register_step_post_hook(lambda *_: self.apply()))

    def remove(self) -> None:
        """Remove every hook this enforcer registered."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
