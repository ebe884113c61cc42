"""The ``permute`` structural attack: :func:`permute_channels` renumbers the channels of
every channel space at random (exactly function-preserving)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..spaces import ChannelSpace, channel_spaces
from ._common import SpaceSelection, _check_seed, _prepare, _selected, _tensors

__all__ = ["permute_channels"]


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
