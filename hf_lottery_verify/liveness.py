"""Which weights of a ResNet can influence its output: everything else is free for a thief to rewrite.

A weight whose value no input can make matter is *function-free*: a thief may overwrite
it with anything — say the largest values of its layer, so that a top-k mask recovery keeps
them instead of the real kernels — without changing a single output. In eval mode a
position ``(o, i)`` of a convolution is function-free when

* its output row ``o`` cannot reach the output: the batch norm after it has scale 0 (the
  row's result is multiplied away), or the channel it writes is read by nothing that is
  itself live (backward liveness); a residual branch whose last batch norm is all zero is
  an identity, and everything in it is function-free;
* or its input channel ``i`` is always exactly 0: channels whose producers add only
  constants ``<= 0`` before a ReLU (zero batch-norm scale and shift, or rows that read only
  zero channels), the channels a zero-padding shortcut (option A) pads with, while no block
  writes them.

:func:`liveness` computes this from a state dict and the architecture (the channel spaces of
:mod:`hf_lottery_verify.spaces`) and :func:`without_dead` rewrites a state dict into the
function-equivalent one with every function-free weight zeroed, which is what verification
reads: a flood of function-free weights then changes nothing it sees. Streams are analysed
as a whole (a channel is read when anything reading the stream reads it), which can only
call a function-free weight live, never the reverse.

Example:
    >>> from hf_lottery_verify.liveness import liveness   # doctest: +SKIP
    >>> dead = liveness(model.timm_model.state_dict(), arch="cifar_resnet20_a")  # doctest: +SKIP
    >>> dead.gone_blocks                                   # doctest: +SKIP
    ('layer1.1',)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .spaces import ChannelSpace, channel_spaces, tensor_spaces

__all__ = ["Liveness", "liveness", "without_dead", "prune_dead", "dead_weights_warning", "DEAD_SHARE_WARNING"]

_BLOCK_CONV = re.compile(r"^(layer\d+\.\d+)\.conv\d+\.weight$")
BN_EPS = 1e-5
"""Batch norm ``eps`` assumed for the sign of a constant channel (timm's default)."""


@dataclass(frozen=True)
class Liveness:
    """Where a ResNet's weights can influence its output.

    Attributes:
        live: Per convolution weight and ``fc.weight``: a boolean tensor of the weight's shape
            (an expanded view), ``True`` where a value can change the output.
        rows: Per convolution weight: its output rows that reach the output.
        norms: Per convolution weight: the batch norm after it.
        zero: Per channel space: the channels that are always exactly 0.
        dead_nonzero: Per tensor with any: how many of its kernels (rows of ``fc.weight``)
            hold a non-zero weight at a function-free position.
        gone_blocks: Residual blocks whose every convolution is function-free (identities,
            or branches whose last batch norm is zero), in forward order.
    """

    live: dict[str, torch.Tensor]
    rows: dict[str, torch.Tensor]
    norms: dict[str, str]
    zero: dict[str, torch.Tensor]
    dead_nonzero: dict[str, int]
    gone_blocks: tuple[str, ...] = ()

    def dead_kept(self, weights: Mapping[str, torch.Tensor]) -> dict[str, int]:
        """Non-zero entries of ``weights`` at function-free positions, per tensor (only tensors with some)."""
        counts = {n: int(((weights[n] != 0) & ~self.live[n]).sum()) for n in self.dead_nonzero if n in weights}
        return {n: c for n, c in counts.items() if c}


def _kernel_mass(w: torch.Tensor) -> torch.Tensor:
    """``(out, in)``: each kernel's largest magnitude, finite (0 exactly where the kernel is all zero), so that the
    passes of :func:`liveness` are matrix-vector products (a NaN or infinite weight counts as a non-zero one)."""
    w = w.detach().flatten(2)
    if w.dtype == torch.bool:  # a mask
        return (w[:, :, 0] if w.shape[2] == 1 else w.any(2)).float()
    w = w.float().abs()
    return torch.nan_to_num(w[:, :, 0] if w.shape[2] == 1 else w.amax(2), nan=1.0, posinf=1.0)


def _update(table: dict[str, torch.Tensor], space: ChannelSpace, value: torch.Tensor) -> bool:
    changed = not torch.equal(table[space.name], value)
    table[space.name] = value
    return changed


def _zero_channels(sd: Mapping[str, torch.Tensor], space: ChannelSpace, reads: Mapping[str, torch.Tensor],
                   zero: Mapping[str, torch.Tensor], dims: Mapping[str, tuple[str | None, str | None]]) -> torch.Tensor:
    """Channels of ``space`` whose every producer adds a constant that the activation turns into 0."""
    is_zero = torch.ones(space.size, dtype=torch.bool)
    for conv, norm in space.norms:
        g, b, mean, var = (sd[f"{norm}.{t}"].double() for t in ("weight", "bias", "running_mean", "running_var"))
        bias_name = conv[: -len("weight")] + "bias"
        bias = sd[bias_name].double() if bias_name in space.producers else 0.0
        constant = (g == 0) | ((reads[conv] @ (~zero[dims[conv][1]]).float()) == 0)
        value = torch.where(g == 0, b, b + g * (bias - mean) / torch.sqrt(var.clamp(min=0) + BN_EPS))
        is_zero &= constant & ((value <= 0) if space.rectified else (value == 0))
    if space.injection is not None:
        src = zero[space.injection.source]
        is_zero[space.injection.offset: space.injection.offset + src.numel()] &= src
    return is_zero


def liveness(state_dict: Mapping[str, torch.Tensor], *, arch: str, model_args: Mapping[str, Any] | None = None,
             spaces: Sequence[ChannelSpace] | None = None) -> Liveness:
    """Which weights of a timm ResNet's state dict can influence its output (eval mode).

    Args:
        state_dict (`Mapping[str, torch.Tensor]`): Tensors under timm's canonical names (shapes
            may be wider than the architecture's); a convolution weight may be a boolean mask.
        arch (`str`): The timm architecture.
        model_args (`Mapping[str, Any]`, *optional*): Extra ``timm.create_model`` arguments.
        spaces (`Sequence[ChannelSpace]`, *optional*): The state dict's channel spaces, when
            already at hand (:func:`~hf_lottery_verify.spaces.channel_spaces` of it).

    Returns:
        The :class:`Liveness`.

    Raises:
        MissingWeightsError, InconsistentChannelsError: The state dict does not hold the
            architecture's tensors (see :func:`~hf_lottery_verify.spaces.channel_spaces`).
    """
    spaces = list(spaces) if spaces is not None else channel_spaces(state_dict, arch=arch, model_args=model_args)
    dims = tensor_spaces(spaces)
    reads = {c: _kernel_mass(state_dict[c]) for s in spaces for c in s.consumers if c != "fc.weight"}
    # Streams are read and written by many blocks, so both passes iterate to a fixed point, starting from "every
    # channel is 0" (forward) and "nothing is read" (backward): what they then call 0 or unread is so at all times.
    zero = {s.name: torch.full((s.size,), not s.fixed, dtype=torch.bool) for s in spaces}
    changed = True
    while changed:
        changed = False
        for space in spaces:
            if not space.fixed and _update(zero, space, _zero_channels(state_dict, space, reads, zero, dims)):
                changed = True
    read = {s.name: torch.zeros(s.size, dtype=torch.bool) for s in spaces}
    rows: dict[str, torch.Tensor] = {}
    changed = True
    while changed:
        changed = False
        for space in reversed(spaces):
            if space.fixed:
                continue
            r = read[space.name].clone()
            for consumer in space.consumers:
                if consumer == "fc.weight":
                    r |= (state_dict[consumer] != 0).any(0)
                elif consumer in rows:
                    r |= (rows[consumer].float() @ reads[consumer]) > 0
            for other in spaces:
                inj = other.injection
                if inj is not None and inj.source == space.name:
                    r |= read[other.name][inj.offset: inj.offset + space.size]
            if _update(read, space, r & ~zero[space.name]):
                changed = True
            for conv, norm in space.norms:
                rows[conv] = (state_dict[f"{norm}.weight"] != 0) & read[space.name]
    live, dirty, blocks = {}, {}, {}
    last = next((s for s in spaces if "fc.weight" in s.consumers), None)
    kernels = {conv: row[:, None] & ~zero[dims[conv][1]][None, :] for conv, row in rows.items()}
    if last is not None:
        reads["fc.weight"] = _kernel_mass(state_dict["fc.weight"][:, :, None])
        kernels["fc.weight"] = (~zero[last.name])[None, :].expand(reads["fc.weight"].shape)
    for name, kernel in kernels.items():
        shape = state_dict[name].shape
        live[name] = kernel.reshape(*kernel.shape, *([1] * (len(shape) - 2))).expand(shape)
        n = int(((reads[name] > 0) & ~kernel).sum())
        if n:
            dirty[name] = n
        m = _BLOCK_CONV.match(name)
        if m:
            blocks[m.group(1)] = blocks.get(m.group(1), True) and not bool(kernel.any())
    norms = {conv: norm for s in spaces for conv, norm in s.norms}
    return Liveness(live=live, rows=rows, norms=norms, zero=zero, dead_nonzero=dirty,
                    gone_blocks=tuple(sorted((b for b, gone in blocks.items() if gone),
                                             key=lambda b: [int(n) for n in re.findall(r"\d+", b)])))

def without_dead(state_dict: Mapping[str, torch.Tensor], dead: Liveness) -> dict[str, torch.Tensor]:
    """The function-equivalent state dict with every function-free convolution and classifier weight zeroed.

    Args:
        state_dict (`Mapping[str, torch.Tensor]`): The state dict :func:`liveness` analysed.
        dead (`Liveness`): Its liveness.

    Returns:
        A new dict; tensors without function-free entries are passed through (not copied).
    """
    out = dict(state_dict)
    for name in dead.dead_nonzero:
        out[name] = torch.where(dead.live[name], out[name], torch.zeros((), dtype=out[name].dtype))
    return out


def prune_dead(masks: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor], *, arch: str,
               model_args: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """Masks without the kept positions that cannot influence the output (density the ticket does not use).

    Args:
        masks (`Mapping[str, torch.Tensor]`): Boolean masks by weight name.
        state_dict (`Mapping[str, torch.Tensor]`): The model's tensors (batch norms included).
        arch (`str`): The timm architecture.
        model_args (`Mapping[str, Any]`, *optional*): Extra ``timm.create_model`` arguments.

    Returns:
        The masks, function-free positions cleared (unchanged masks are the same objects).
    """
    dead = liveness({**state_dict, **masks}, arch=arch, model_args=model_args)
    return {n: m & dead.live[n] if n in dead.dead_nonzero else m for n, m in masks.items()}


DEAD_SHARE_WARNING = 0.05
"""Share of function-free kept weights above which signing and retraining warn."""


def dead_weights_warning(state_dict: Mapping[str, torch.Tensor], *, arch: str,
                         model_args: Mapping[str, Any] | None = None,
                         marked: Mapping[str, torch.Tensor] | None = None) -> str | None:
    """A warning when more than :data:`DEAD_SHARE_WARNING` of a model's non-zero weights are function-free.

    Args:
        state_dict (`Mapping[str, torch.Tensor]`): The model's tensors (masked weights zeroed).
        arch (`str`): The timm architecture.
        model_args (`Mapping[str, Any]`, *optional*): Extra ``timm.create_model`` arguments.
        marked (`Mapping[str, torch.Tensor]`, *optional*): ``(out, in)`` boolean maps of kernels
            that matter (the signature's slots), counted apart.

    Returns:
        The text, or ``None`` when the share is below the threshold (or the state dict is no
        ResNet whose channels can be followed).
    """
    from .errors import HfLotteryError

    try:
        dead = liveness(state_dict, arch=arch, model_args=model_args)
    except (HfLotteryError, KeyError):
        return None
    kept = sum(int((state_dict[n] != 0).sum()) for n in dead.live if n != "fc.weight")
    n_dead = sum(c for n, c in dead.dead_kept(state_dict).items() if n != "fc.weight")
    if kept == 0 or n_dead <= DEAD_SHARE_WARNING * kept:
        return None
    slots = sum(int((m & ~dead.live[n][:, :, 0, 0]).sum()) for n, m in (marked or {}).items() if n in dead.live)
    where = sorted(dead.dead_kept(state_dict).items(), key=lambda kv: -kv[1])[:3]
    return (f"{n_dead} of the model's {kept} kept weights ({n_dead / kept:.0%}) cannot influence its output (mostly "
            f"{', '.join(n for n, _ in where)}; blocks gone: {', '.join(dead.gone_blocks) or 'none'}): a thief may "
            f"rewrite them for free, so verification ignores them"
            + (f", and {slots} signature kernels there read as erasures" if slots else "")
            + ". They are density the ticket does not use: prune them (hf_lottery_verify.liveness.prune_dead; "
            "find_extreme_ticket does) and retrain.")
