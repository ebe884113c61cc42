"""Function-preserving structural attacks a thief runs on a stolen ticket for free.

Yan et al. (USENIX Security 2023) showed that renaming, rescaling and duplicating
neurons removes most white-box watermarks at no cost in accuracy: the network computes
exactly the same function, but every weight sits somewhere else or has another value.
A verifier must therefore re-align the suspect's channels to the owner's reference
before it reads a mask. These attacks produce such suspects; all are built on
:mod:`hf_lottery_verify.spaces` and hold for **eval-mode** semantics (batch norm uses
its running statistics).

* :func:`permute_channels` — renumber the channels of every space (exact).
* :func:`rescale_channels` — multiply channels by positive factors and compensate in
  the following batch norm (``mode="bn"``) or in the consumers behind the ReLU
  (``mode="relu"``) (exact up to float rounding).
* :func:`add_dummy_channels` — widen spaces by duplicated channels (consumer columns
  split between original and copy) or by random channels nobody reads (exact up to
  float rounding; the layers change shape).
* :func:`densify` — fill every pruned position with tiny noise (not exact: outputs move
  by about ``scale`` relative to the layer's weights).

Each attack takes a :class:`~hf_lottery_verify.SparseResNetForImageClassification` (or a
bare timm ResNet), returns a new model (a deep copy) and leaves its input untouched.
Attacks compose: ``densify(rescale_channels(permute_channels(m, seed=1), seed=2), seed=3)``.

**Masks.** The attacked model's masks describe its own weights, as a thief's re-saved
checkpoint would: permuted like the weights, unchanged by rescaling (zeros stay zeros),
rebuilt from the non-zero weights after widening or densifying. The verifier never
trusts them anyway (it reads masks off the weights).

**Densify plus rescale.** A verifier that recovers a densified suspect's mask by a
per-layer top-``k`` on ``|w|`` (``k`` from the owner's key) assumes that the kept
weights of a layer share one scale. :func:`rescale_channels` breaks that: a weight's
row and column factors spread the entries of one layer over a ratio of up to 400²,
so noise in scaled-up rows and columns outranks kept weights in scaled-down ones.
Measured on a 5%-dense ``cifar_resnet20_a`` (share of the kept positions that
per-layer top-``k`` finds): densify alone 100%; rescale then densify 99.4%
(``scale=1e-4``) / 87% (``1e-3``); densify then rescale 93% / 79%. Undo the
per-channel scales before taking the top ``k``: normalising every row and column of
a weight (alternating passes, Sinkhorn-like) brings the densify-then-rescale suspect
back to 99.6–100% (the scales act on weights and noise alike, and the normalised form
does not depend on them), but not a rescale-then-densify one (its noise floor is flat
and normalising lifts it in scaled-down rows); there use the per-channel kept counts of
the re-aligned reference, or the noise floor as a threshold.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ..architectures import ZeroPadShortcut
from ..masks import masks_from_weights, prunable_parameter_names
from ..spaces import ChannelSpace, channel_spaces

__all__ = [
    "permute_channels",
    "rescale_channels",
    "add_dummy_channels",
    "densify",
    "ATTACKS",
]

logger = logging.getLogger(__name__)

SpaceSelection = Literal["all", "internal", "streams"]
_SELECTIONS: dict[str, tuple[str, ...]] = {"all": ("internal", "stream"), "internal": ("internal",),
                                           "streams": ("stream",)}


# --------------------------------------------------------------------------- shared helpers


def _prepare(model: nn.Module) -> tuple[nn.Module, nn.Module, dict[str, torch.Tensor] | None]:
    """A deep copy of ``model``, its timm ResNet and its masks (``None`` for a bare ResNet)."""
    attacked = copy.deepcopy(model)
    net = getattr(attacked, "timm_model", attacked)
    masks = attacked.masks if hasattr(attacked, "set_masks") else None
    return attacked, net, masks


def _tensors(net: nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(net.named_parameters()), **dict(net.named_buffers())}


def _selected(selection: str) -> tuple[str, ...]:
    if selection not in _SELECTIONS:
        raise ValueError(f"Unknown space selection '{selection}': use one of {sorted(_SELECTIONS)}.")
    return _SELECTIONS[selection]


def _check_seed(seed: int) -> torch.Generator:
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}.")
    return torch.Generator().manual_seed(seed)


def _shape_for(dim: int, ndim: int, values: torch.Tensor) -> torch.Tensor:
    """``values`` reshaped to broadcast along dimension ``dim`` of an ``ndim``-D tensor."""
    shape = [1] * ndim
    shape[dim] = -1
    return values.reshape(shape)


# --------------------------------------------------------------------------- permutation


def _draw_permutation(space: ChannelSpace, done: Mapping[str, torch.Tensor], sizes: Mapping[str, int],
                      gen: torch.Generator) -> torch.Tensor:
    """A random permutation ``perm`` (new channel ``j`` = old channel ``perm[j]``) of one space.

    With an injection from space ``A`` at ``offset``: ``perm[i + offset] = offset + perm_A[i]``
    (the shortcut keeps carrying the right channels) and the zero channels are permuted
    among themselves.
    """
    n = space.size
    for _ in range(8):
        if space.injection is None:
            perm = torch.randperm(n, generator=gen)
        else:
            inj = space.injection
            n_src = sizes[inj.source]
            src_perm = done.get(inj.source, torch.arange(n_src))
            perm = torch.empty(n, dtype=torch.long)
            perm[inj.offset:inj.offset + n_src] = inj.offset + src_perm
            pads = torch.cat([torch.arange(inj.offset), torch.arange(inj.offset + n_src, n)])
            perm[pads] = pads[torch.randperm(pads.numel(), generator=gen)]
        if n < 2 or not torch.equal(perm, torch.arange(n)):
            return perm
    return perm


@torch.no_grad()
def permute_channels(model: nn.Module, *, seed: int, spaces: SpaceSelection = "all") -> nn.Module:
    """Renumber the channels of every (selected) channel space at random.

    Producers (conv weights along dim 0 and the batch norm tensors after them) and
    consumers (conv weights and ``fc.weight`` along dim 1) of a space are permuted alike,
    a residual stream across all of its blocks at once; a stream fed by a zero-padding
    shortcut keeps the injected channels in step with its source
    (``perm_B[i + offset] = offset + perm_A[i]``) and shuffles its zero channels among
    themselves. The function is unchanged exactly (only the order of additions inside a
    convolution may differ). Masks are permuted like their weights.

    Args:
        model: A :class:`~hf_lottery_verify.SparseResNetForImageClassification` or a timm ResNet.
        seed: Seed of the permutations (a CPU ``torch.Generator``).
        spaces (`str`, *optional*, defaults to `"all"`): ``"all"``, ``"internal"`` (block and
            deep-stem internals only) or ``"streams"`` (residual streams only).

    Returns:
        The attacked copy.

    Raises:
        ValueError: Unknown ``spaces``.
        UnsupportedArchitectureError: The model is not a ResNet whose channels can be followed.

    Example:
        >>> stolen = permute_channels(ticket, seed=1)                     # doctest: +SKIP
    """
    kinds = _selected(spaces)
    gen = _check_seed(seed)
    attacked, net, masks = _prepare(model)
    all_spaces = channel_spaces(net)
    sizes = {s.name: s.size for s in all_spaces}
    tensors = _tensors(net)
    perms: dict[str, torch.Tensor] = {}
    for space in all_spaces:
        if space.kind not in kinds:
            continue
        perm = _draw_permutation(space, perms, sizes, gen)
        perms[space.name] = perm
        for dim, names in ((0, space.producers), (1, space.consumers)):
            for name in names:
                t = tensors[name]
                t.copy_(t.index_select(dim, perm.to(t.device)))
                if masks is not None and name in masks:
                    masks[name] = masks[name].index_select(dim, perm.to(masks[name].device))
    if masks is not None:
        attacked.set_masks(masks, apply=False)
    return attacked


# --------------------------------------------------------------------------- rescaling


def _log_uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    return torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))


@torch.no_grad()
def rescale_channels(
    model: nn.Module,
    *,
    seed: int,
    low: float = 0.05,
    high: float = 20.0,
    mode: Literal["bn", "relu", "both"] = "both",
) -> nn.Module:
    """Multiply channels by random positive factors and compensate so the function is unchanged.

    Factors are drawn log-uniformly from ``[low, high]``, one per channel.

    * ``mode="bn"``: each convolution followed by a batch norm gets its own factors ``a``:
      output channel ``c`` of the conv is multiplied by ``a_c`` and the batch norm absorbs
      it **exactly in eval mode**: ``running_mean *= a``, ``running_var *= a²`` and, because
      of the ``eps`` inside the square root, ``weight *= sqrt(a² var + eps) / (a sqrt(var + eps))``
      (``var`` the old running variance). In training mode (batch statistics) the
      compensation is exact up to that ``eps`` term.
    * ``mode="relu"``: for each space read only through a ReLU (all of them in a timm
      ResNet), the batch norms that produce it have ``weight`` and ``bias`` multiplied by
      ``a`` and the consumers' input columns divided by ``a`` (``relu(a x) = a relu(x)``).
      A residual stream gets one factor per channel for all of its producers; identity
      shortcuts carry the scale along, a zero-padding shortcut's injected channels keep
      their source's factors (its zero channels get their own).
    * ``mode="both"``: ``"relu"``, then ``"bn"``.

    Masks are unchanged (zeros stay zeros).

    Args:
        model: A :class:`~hf_lottery_verify.SparseResNetForImageClassification` or a timm ResNet.
        seed: Seed of the factors.
        low (`float`, *optional*, defaults to 0.05): Smallest factor (positive).
        high (`float`, *optional*, defaults to 20.0): Largest factor.
        mode (`str`, *optional*, defaults to `"both"`): ``"bn"``, ``"relu"`` or ``"both"``.

    Returns:
        The attacked copy.

    Raises:
        ValueError: ``low``/``high`` not with ``0 < low <= high``, or an unknown ``mode``.
        UnsupportedArchitectureError: The model is not a ResNet whose channels can be followed.
    """
    if not (0.0 < low <= high and math.isfinite(high)):
        raise ValueError(f"rescale_channels needs 0 < low <= high < inf; got low={low}, high={high}.")
    if mode not in ("bn", "relu", "both"):
        raise ValueError(f"Unknown rescale mode '{mode}': use 'bn', 'relu' or 'both'.")
    gen = _check_seed(seed)
    attacked, net, _masks = _prepare(model)
    all_spaces = channel_spaces(net)
    tensors = _tensors(net)

    def scale_(name: str, factors: torch.Tensor, dim: int, *, divide: bool = False) -> None:
        t = tensors[name]
        f = _shape_for(dim, t.dim(), factors.to(t.device))
        t.copy_((t.double() / f if divide else t.double() * f).to(t.dtype))

    if mode in ("relu", "both"):
        done: dict[str, torch.Tensor] = {}
        for space in all_spaces:
            if space.fixed:
                continue
            if not space.homogeneous:
                logger.info("Space '%s' is read through a non-homogeneous activation; not rescaled behind it.",
                            space.name)
                continue
            a = _log_uniform(space.size, low, high, gen)
            if space.injection is not None:
                inj = space.injection
                source = done.get(inj.source)
                n_src = next(s.size for s in all_spaces if s.name == inj.source)
                a[inj.offset:inj.offset + n_src] = source if source is not None else 1.0
            done[space.name] = a
            for _conv, norm in space.norms:
                scale_(f"{norm}.weight", a, 0)
                scale_(f"{norm}.bias", a, 0)
            for name in space.consumers:
                scale_(name, a, 1, divide=True)

    if mode in ("bn", "both"):
        for space in all_spaces:
            for conv, norm in space.norms:
                a = _log_uniform(space.size, low, high, gen)
                scale_(conv, a, 0)
                conv_bias = conv[: -len("weight")] + "bias"
                if conv_bias in space.producers:
                    scale_(conv_bias, a, 0)
                bn = net.get_submodule(norm)
                var = tensors[f"{norm}.running_var"].double()
                gamma_fix = torch.sqrt(a * a * var + bn.eps) / (a * torch.sqrt(var + bn.eps))
                scale_(f"{norm}.running_mean", a, 0)
                scale_(f"{norm}.running_var", a * a, 0)
                scale_(f"{norm}.weight", gamma_fix, 0)
    return attacked


# --------------------------------------------------------------------------- widening


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

    @property
    def has_copies(self) -> bool:
        kept = self.src[~self.fresh]
        return bool(kept.numel() != torch.unique(kept).numel())


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
    for space in all_spaces:
        plan = plans.get(space.name)
        if plan is None:
            continue
        new_rows = plan.fresh.nonzero().flatten()
        for name in space.producers:
            t = tensors[name].index_select(0, plan.src.to(tensors[name].device))
            if new_rows.numel() and name in space.producer_convs:
                t[new_rows] = _random_rows(tensors[name], new_rows.numel(), gen).to(t.device)
            tensors[name] = t
    for space in all_spaces:
        plan = plans.get(space.name)
        if plan is None:
            continue
        for name in space.consumers:
            t = tensors[name].index_select(1, plan.src.to(tensors[name].device))
            if plan.has_copies or bool(plan.fresh.any()):
                t = (t.double() * _split_fractions(tuple(t.shape), plan, gen).to(t.device)).to(t.dtype)
            tensors[name] = t

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
    for space in all_spaces:
        if space.injection is not None and space.name in plans:
            shortcut = net.get_submodule(space.injection.module)
            if not isinstance(shortcut, ZeroPadShortcut):  # channel_spaces only injects through these
                raise TypeError(f"'{space.injection.module}' is not a ZeroPadShortcut.")
            src_size = plans[space.injection.source].size if space.injection.source in plans else sizes[
                space.injection.source]
            shortcut.pad_after = plans[space.name].size - shortcut.pad_before - src_size
    fc = getattr(net, "fc", None)
    if isinstance(fc, nn.Linear):
        net.num_features = fc.in_features
        if hasattr(net, "head_hidden_size"):
            net.head_hidden_size = fc.in_features
    if masks is not None:
        attacked.set_masks(masks_from_weights(dict(net.named_parameters()), list(masks)), apply=False)
    return attacked


# --------------------------------------------------------------------------- densify


@torch.no_grad()
def densify(model: nn.Module, *, seed: int, scale: float = 1e-4) -> nn.Module:
    """Fill every pruned position with tiny random values (a dense-looking copy of the ticket).

    Each pruned entry of a masked parameter (for a bare ResNet: each exactly-zero entry
    of the prunable convolutions) becomes ``± scale · rms · u`` with ``u`` uniform in
    ``[0.5, 1.5)`` and ``rms`` the root mean square of that parameter's kept weights,
    so every pruned position is non-zero. **Not exactly function-preserving**: outputs
    move by a few times ``scale`` relative to their size. The model's masks become all-ones
    (rebuilt from the non-zero weights).

    On its own, a per-layer top-``k`` by magnitude (``k`` from the owner's key) recovers
    the mask; combined with :func:`rescale_channels` it does not (see the module notes):
    re-align or normalise channels first.

    Args:
        model: A :class:`~hf_lottery_verify.SparseResNetForImageClassification` or a timm ResNet.
        seed: Seed of the noise.
        scale (`float`, *optional*, defaults to 1e-4): Noise level relative to each layer's kept weights.

    Returns:
        The attacked copy.

    Raises:
        ValueError: ``scale`` is not positive.
    """
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"densify needs a positive finite scale, got {scale}.")
    gen = _check_seed(seed)
    attacked, net, masks = _prepare(model)
    params = dict(net.named_parameters())
    had_masks = bool(masks)
    if not masks:
        masks = {n: params[n].detach() != 0 for n in prunable_parameter_names(net)}
    for name, p in params.items():  # named_parameters order: deterministic draws
        if name not in masks:
            continue
        kept = masks[name].to(p.device)
        values = p.detach().double()[kept]
        rms = float(values.pow(2).mean().sqrt()) if values.numel() else float(p.detach().double().abs().max() or 1.0)
        u = 0.5 + torch.rand(p.shape, generator=gen, dtype=torch.float64)
        sign = torch.where(torch.rand(p.shape, generator=gen) < 0.5, -1.0, 1.0).to(torch.float64)
        noise = (scale * rms * u * sign).to(p.dtype).to(p.device)
        p.copy_(torch.where(kept, p, noise))
    if had_masks:
        attacked.set_masks(masks_from_weights(params, list(masks)), apply=False)
    return attacked


ATTACKS: dict[str, Callable[..., Any]] = {
    "permute": permute_channels,
    "rescale": rescale_channels,
    "dummy": add_dummy_channels,
    "densify": densify,
}
"""The structural attacks by registry name (the CLI's ``--attack`` values)."""
