"""The ``dummy`` structural attack: :func:`add_dummy_channels` widens channel spaces by
duplicated channels (consumer columns split between original and copy) or by random
channels nobody reads (function-preserving up to float rounding; layers change shape)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..architectures import ZeroPadShortcut
from ..masks import masks_from_weights
from ..spaces import ChannelSpace, channel_spaces
from ._common import SpaceSelection, _check_seed, _prepare, _selected, _tensors

__all__ = ["add_dummy_channels"]


@dataclass
class _Plan:
    """How a widened space is built from the old one.

    ``src[j]``: the old channel new channel ``j`` copies (or, for a fresh channel, takes its
    batch-norm entries from); ``fresh[j]``: a new random channel nobody reads.
    """

    src: torch.Tensor
    fresh: torch.Tensor

    @property
    def size(self) -> int:
        return int(self.src.numel())


def _identity_plan(n: int) -> _Plan:
    return _Plan(src=torch.arange(n), fresh=torch.zeros(n, dtype=torch.bool))


def _extend(plan: _Plan, candidates: torch.Tensor, count: int, mode: str, gen: torch.Generator) -> _Plan:
    """Append ``count`` new channels copying (or, fresh, borrowing batch norm entries from) random ``candidates``."""
    if count == 0:
        return plan
    pick = candidates[torch.randint(candidates.numel(), (count,), generator=gen)]
    fresh = torch.full((count,), mode == "zero_out", dtype=torch.bool)
    return _Plan(src=torch.cat([plan.src, pick]), fresh=torch.cat([plan.fresh, fresh]))


def _plan_space(space: ChannelSpace, plans: Mapping[str, _Plan], sizes: Mapping[str, int], count: int, mode: str,
                gen: torch.Generator) -> _Plan:
    n = space.size
    if space.injection is None:
        return _extend(_identity_plan(n), torch.arange(n), count, mode, gen)
    # Layout: [zero channels before][the source's channels, widened like the source][zero channels after][own extras].
    inj = space.injection
    n_src = sizes[inj.source]
    source = plans.get(inj.source, _identity_plan(n_src))
    before = torch.arange(inj.offset)
    after = torch.arange(inj.offset + n_src, n)
    src = torch.cat([before, inj.offset + source.src, after])
    fresh = torch.cat([torch.zeros(inj.offset, dtype=torch.bool), source.fresh,
                       torch.zeros(after.numel(), dtype=torch.bool)])
    # Own extras sit among the zero channels: a copy must also get a zero shortcut, so copy a zero channel.
    return _extend(_Plan(src=src, fresh=fresh), torch.cat([before, after]), count, mode, gen)


def _random_rows(t: torch.Tensor, rows: int, gen: torch.Generator) -> torch.Tensor:
    """``rows`` new rows drawn like ``t``'s kept weights: its density of non-zeros, its kept values' spread."""
    flat = t.detach().to("cpu", torch.float64)
    nz = flat[flat != 0]
    density = nz.numel() / max(flat.numel(), 1)
    std = float(nz.std()) if nz.numel() > 1 else (float(nz.abs().mean()) if nz.numel() else 1e-2)
    shape = (rows, *t.shape[1:])
    values = torch.randn(shape, generator=gen, dtype=torch.float64) * std
    keep = torch.rand(shape, generator=gen, dtype=torch.float64) < density
    return (values * keep).to(t.dtype)


def _split_fractions(shape: tuple[int, ...], plan: _Plan, gen: torch.Generator) -> torch.Tensor:
    """Per-entry fractions along dim 1 that sum to 1 over each channel and its copies (0 for fresh columns)."""
    u = 0.25 + 0.75 * torch.rand(shape, generator=gen, dtype=torch.float64)
    u[:, plan.fresh] = 0.0
    old = int(plan.src.max()) + 1
    sums = torch.zeros((shape[0], old, *shape[2:]), dtype=torch.float64).index_add_(1, plan.src, u)
    frac = u / sums.index_select(1, plan.src)
    frac[:, plan.fresh] = 0.0
    return frac


def _replacement(module: nn.Module, weight: torch.Tensor) -> nn.Module | None:
    """A module like ``module`` sized for ``weight`` (``None`` when the shape is unchanged)."""
    kw = {"device": module.weight.device, "dtype": module.weight.dtype}
    if tuple(weight.shape) == tuple(module.weight.shape):
        return None
    if isinstance(module, nn.Conv2d):
        return nn.Conv2d(int(weight.shape[1]) * module.groups, int(weight.shape[0]), module.kernel_size,
                         stride=module.stride, padding=module.padding, dilation=module.dilation,
                         groups=module.groups, bias=module.bias is not None, padding_mode=module.padding_mode, **kw)
    if isinstance(module, nn.BatchNorm2d):
        new = nn.BatchNorm2d(int(weight.shape[0]), eps=module.eps, momentum=module.momentum, affine=module.affine,
                             track_running_stats=module.track_running_stats, **kw)
        new.train(module.training)
        return new
    if isinstance(module, nn.Linear):
        return nn.Linear(int(weight.shape[1]), int(weight.shape[0]), bias=module.bias is not None, **kw)
    raise TypeError(f"Cannot resize a {type(module).__name__}.")  # unreachable for spaces of a timm ResNet


@torch.no_grad()
def add_dummy_channels(
    model: nn.Module,
    *,
    seed: int,
    per_space: int = 1,
    mode: Literal["duplicate", "zero_out"] = "duplicate",
    spaces: SpaceSelection = "all",
) -> nn.Module:
    """Widen channel spaces by extra channels that leave the function unchanged.

    Every selected space gets ``per_space`` new channels, appended after the old ones
    (combine with :func:`permute_channels` to scatter them); the affected ``nn.Conv2d``,
    ``nn.BatchNorm2d`` and ``nn.Linear`` modules inside the timm model are replaced by
    wider ones.

    * ``mode="duplicate"``: a new channel copies a random existing channel's producer rows
      and batch norm entries; every consumer's column of that channel is split between
      the original and its copies with random per-entry fractions (from the seed) that sum
      to one, so neither column equals the old one or its half.
    * ``mode="zero_out"``: a new channel's producer rows are random, drawn like the
      layer's kept weights (its density of non-zeros, its spread), its batch norm entries
      are borrowed from a random channel, and every consumer column of it is zero.

    Zero-padding shortcuts: a stream fed by one receives its source's new channels at the
    same place (copies of the matching channel, or fresh channels); its own extras are
    copies of its zero (padded) channels, so the shortcut's ``pad_after`` grows.

    The model's masks are rebuilt from the new non-zero weights (for the same parameter
    names), as a thief's re-saved checkpoint would have them. ``config.arch`` stays the
    same although the shapes no longer match the architecture: the result cannot be
    loaded into a freshly built model of that architecture, and a verifier must read its
    tensors raw (:func:`~hf_lottery_verify.spaces.channel_spaces` with the state dict gives
    the widened sizes) and merge duplicated channels when re-aligning.

    Args:
        model: A :class:`~hf_lottery_verify.SparseResNetForImageClassification` or a timm ResNet.
        seed: Seed of every random choice.
        per_space (`int`, *optional*, defaults to 1): New channels per selected space.
        mode (`str`, *optional*, defaults to `"duplicate"`): ``"duplicate"`` or ``"zero_out"``.
        spaces (`str`, *optional*, defaults to `"all"`): ``"all"``, ``"internal"`` or ``"streams"``.

    Returns:
        The attacked (widened) copy.

    Raises:
        ValueError: ``per_space`` below 1, or an unknown ``mode`` or ``spaces``.
        UnsupportedArchitectureError: The model is not a ResNet whose channels can be followed.
    """
    kinds = _selected(spaces)
    if mode not in ("duplicate", "zero_out"):
        raise ValueError(f"Unknown dummy-channel mode '{mode}': use 'duplicate' or 'zero_out'.")
    if not isinstance(per_space, int) or per_space < 1:
        raise ValueError(f"per_space must be a positive number of channels, got {per_space!r}.")
    gen = _check_seed(seed)
    attacked, net, masks = _prepare(model)
    all_spaces = channel_spaces(net)
    sizes = {s.name: s.size for s in all_spaces}
    tensors = {n: t.detach().clone() for n, t in _tensors(net).items()}

    plans: dict[str, _Plan] = {}
    for space in all_spaces:
        if space.fixed:
            continue
        count = per_space if space.kind in kinds else 0
        plan = _plan_space(space, plans, sizes, count, mode, gen)
        if plan.size != space.size or not torch.equal(plan.src, torch.arange(space.size)):
            plans[space.name] = plan

    # Producers first (dim 0), then consumers (dim 1): fresh rows are drawn on the old
    # columns, and columns of fresh channels end up zero everywhere.
    planned = [(space, plans[space.name]) for space in all_spaces if space.name in plans]
    for space, plan in planned:
        new_rows = plan.fresh.nonzero().flatten()
        for name in space.producers:
            t = tensors[name].index_select(0, plan.src.to(tensors[name].device))
            if new_rows.numel() and name in space.producer_convs:
                t[new_rows] = _random_rows(tensors[name], new_rows.numel(), gen).to(t.device)
            tensors[name] = t
    for space, plan in planned:
        for name in space.consumers:
            t = tensors[name].index_select(1, plan.src.to(tensors[name].device))
            # every widened space has copies or fresh channels: split the copied columns, zero the fresh ones
            tensors[name] = (t.double() * _split_fractions(tuple(t.shape), plan, gen).to(t.device)).to(t.dtype)

    for mod_name, module in list(net.named_modules()):
        weight = tensors.get(f"{mod_name}.weight")
        if weight is None or not isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
            continue
        new = _replacement(module, weight)
        if new is not None:
            parent_name, _, child = mod_name.rpartition(".")
            setattr(net.get_submodule(parent_name) if parent_name else net, child, new)
    for name, t in _tensors(net).items():
        if name in tensors:
            t.copy_(tensors[name])
    for space, plan in planned:
        if space.injection is not None:
            shortcut = net.get_submodule(space.injection.module)
            if not isinstance(shortcut, ZeroPadShortcut):  # channel_spaces only injects through these
                raise TypeError(f"'{space.injection.module}' is not a ZeroPadShortcut.")
            source = plans.get(space.injection.source)
            src_size = source.size if source is not None else sizes[space.injection.source]
            shortcut.pad_after = plan.size - shortcut.pad_before - src_size
    fc = getattr(net, "fc", None)
    if isinstance(fc, nn.Linear):
        net.num_features = fc.in_features
        if hasattr(net, "head_hidden_size"):
            net.head_hidden_size = fc.in_features
    if masks is not None:
        attacked.set_masks(masks_from_weights(dict(net.named_parameters()), list(masks)), apply=False)
    return attacked
