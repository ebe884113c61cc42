"""The suspect's channel sizes, read off its tensors, and the checks that it is a (widened) copy of the architecture."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import torch

from ..errors import KeyMismatchError
from ..spaces import ChannelSpace
from .reference import Reference

__all__ = ["suspect_spaces", "OPTIONAL_BUFFERS"]

OPTIONAL_BUFFERS = ("num_batches_tracked",)
"""Buffers a suspect may leave out (they do not change what the model computes)."""


def suspect_spaces(ref: Reference, sd: Mapping[str, torch.Tensor], spaces: list[ChannelSpace],
              dims: Mapping[str, tuple[str | None, str | None]]) -> dict[str, ChannelSpace]:
    """The reference's spaces with the suspect's sizes; raises unless the suspect is a (widened) copy of the architecture."""
    arch = ref.arch
    missing = [n for n in ref.shapes if n not in sd and n.rsplit(".", 1)[-1] not in OPTIONAL_BUFFERS]
    extra = [n for n in sd if n not in ref.shapes]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"it lacks {len(missing)} tensor(s) of {arch} ({', '.join(missing[:4])}"
                         f"{' ...' if len(missing) > 4 else ''})")
        if extra:
            parts.append(f"it has {len(extra)} tensor(s) {arch} does not ({', '.join(extra[:4])}"
                         f"{' ...' if len(extra) > 4 else ''})")
        raise KeyMismatchError(f"The suspect is not a {arch}: {' and '.join(parts)}. It belongs to another "
                               "architecture or depth, so its channels cannot be aligned to the owner's reference.")
    sus: dict[str, ChannelSpace] = {}
    for space in spaces:
        named = [(n, 0) for n in space.producers] + [(n, 1) for n in space.consumers]
        sizes = {n: (tuple(sd[n].shape)[d] if sd[n].dim() > d else -1) for n, d in named}
        size = sizes[named[0][0]] if named else space.size
        bad = [n for n, v in sizes.items() if v != size]
        if bad:
            raise KeyMismatchError(f"The suspect's tensors disagree on the size of channel space '{space.name}' "
                                   f"('{named[0][0]}' gives {size}, '{bad[0]}' {sizes[bad[0]]}): it is not a (widened) "
                                   f"{arch}, or it was damaged.")
        if space.injection is not None and space.injection.offset + sus[space.injection.source].size > size:
            raise KeyMismatchError(f"The suspect's space '{space.name}' ({size} channels) cannot hold the channels "
                                   f"its zero-padding shortcut injects: it is not a (widened) {arch}.")
        sus[space.name] = replace(space, size=size)
    if sus["input"].size != spaces[0].size:
        raise KeyMismatchError(f"The suspect reads {sus['input'].size} input channels, the reference "
                               f"{spaces[0].size}: another architecture.")
    for name, shape in ref.shapes.items():
        if name not in sd:
            continue
        want = list(shape)
        d0, d1 = dims.get(name, (None, None))
        if d0 is not None and want:
            want[0] = sus[d0].size
        if d1 is not None and len(want) > 1:
            want[1] = sus[d1].size
        if tuple(sd[name].shape) != tuple(want):
            raise KeyMismatchError(f"The suspect's '{name}' has shape {tuple(sd[name].shape)}; a {arch} (widened or "
                                   f"not) would have {tuple(want)}: another architecture or number of classes.")
    return sus
