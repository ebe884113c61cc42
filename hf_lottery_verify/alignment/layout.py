"""The suspect's blocks and channel sizes, read off its tensors, and the checks that it is a (widened) copy of the
architecture."""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import replace

import torch

from ..errors import KeyMismatchError
from ..spaces import ChannelSpace
from ..symmetry import DIHEDRAL, dihedral, inverse
from .reference import Reference
from .result import Alignment

__all__ = ["suspect_spaces", "restore_blocks", "orientations", "unmatched_blocks", "OPTIONAL_BUFFERS"]

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


_BLOCK = re.compile(r"^(layer\d+)\.(\d+)\.(.+)$")


def _blocks(names: object) -> dict[str, dict[int, list[str]]]:
    out: dict[str, dict[int, list[str]]] = {}
    for name in names:  # type: ignore[attr-defined]
        m = _BLOCK.match(name)
        if m:
            out.setdefault(m.group(1), {}).setdefault(int(m.group(2)), []).append(m.group(3))
    return out


def _block_cost(ref: Reference, sd: Mapping[str, torch.Tensor], ref_block: str, sus_block: str) -> float:
    """How unlike two blocks' kept-weight patterns are, whatever their channel orders (sorted per-row and
    per-column kept counts of each convolution)."""
    cost = 0.0
    for name, mask in ref.masks.items():
        if not name.startswith(ref_block + "."):
            continue
        w = sd.get(sus_block + name[len(ref_block):])
        if w is None or tuple(w.shape) != tuple(mask.shape):
            cost += 1.0
            continue
        nz = (w != 0).flatten(2).sum(2)
        for ref_counts, counts in ((ref.kept_per_row[name], nz.sum(1)), (ref.kept_per_column[name], nz.sum(0))):
            a, b = ref_counts.sort().values.double(), counts.sort().values.double()
            cost += float((a - b).abs().sum() / max(float(a.sum() + b.sum()), 1.0))
    return cost


def restore_blocks(ref: Reference, sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A suspect with whole residual blocks deleted, back in the reference's block numbering.

    A thief may delete blocks that cost little (the rest renumbered, as ``del stage[i]`` does).
    Each stage's remaining blocks are matched to the reference's in order, by their kept-weight
    patterns (sorted per-row and per-column counts, which channel orders do not change), and
    every missing block is filled in as the identity it amounts to (zero weights, zero batch
    norm scale and shift).

    Args:
        ref (`Reference`): The owner's reference.
        sd (`Mapping[str, torch.Tensor]`): The suspect's tensors (timm names).

    Returns:
        The tensors (a new dict, or ``sd`` itself when no block is missing) and the reference's
        names of the blocks filled in.
    """
    ref_blocks, sus_blocks = _blocks(ref.shapes), _blocks(sd)
    out, missing = dict(sd), []
    for stage, blocks in ref_blocks.items():
        have = sorted(sus_blocks.get(stage, {}))
        if len(have) >= len(blocks):
            continue
        best = min(itertools.combinations(sorted(blocks), len(have)),
                   key=lambda chosen: sum(_block_cost(ref, sd, f"{stage}.{r}", f"{stage}.{s}")
                                          for r, s in zip(chosen, have, strict=True)))
        for s in have:
            for part in sus_blocks[stage][s]:
                del out[f"{stage}.{s}.{part}"]
        for r, s in zip(best, have, strict=True):
            out.update({f"{stage}.{r}.{part}": sd[f"{stage}.{s}.{part}"] for part in sus_blocks[stage][s]})
        for r in sorted(set(blocks) - set(best)):
            missing.append(f"{stage}.{r}")
            for part in blocks[r]:
                out[f"{stage}.{r}.{part}"] = torch.full(
                    ref.shapes[f"{stage}.{r}.{part}"], 1.0 if part.endswith("running_var") else 0.0,
                    dtype=torch.long if part.endswith("num_batches_tracked") else torch.float32)
    return out, missing


def orientations(tensors: Mapping[str, torch.Tensor], reference: Reference) -> list[str]:
    """The kernel symmetries to try, most likely first: how well the suspect's stem rows, turned back, match the
    reference's (the stem reads the image, whose channels nobody can reorder)."""
    stem = reference.spaces[0].consumers[0] if reference.spaces[0].consumers else ""
    ref = reference.masks.get(stem, reference.tensors.get(stem))
    sus = tensors.get(stem)
    if ref is None or sus is None or sus.dim() != 4 or sus.shape[1:] != ref.shape[1:] or not (
            sus.shape[-1] == sus.shape[-2] > 1):
        return ["identity"]
    ref = ref.double().flatten(1)
    ref = ref / ref.norm(dim=1, keepdim=True).clamp(min=1e-30)
    scores = []
    for name in DIHEDRAL:
        s = dihedral(sus.double() if stem not in reference.masks else (sus != 0).double(), inverse(name)).flatten(1)
        s = s / s.norm(dim=1, keepdim=True).clamp(min=1e-30)
        scores.append(float((ref @ s.T).max(dim=1).values.mean()) if s.numel() else 0.0)
    return [n for _, n in sorted(zip(scores, DIHEDRAL, strict=True), key=lambda t: -t[0])]  # stable: identity first among equals


def unmatched_blocks(result: Alignment, *, below: float) -> list[str]:
    """Blocks whose internal channel spaces all match with confidence below ``below`` (with evidence to compare)."""
    scores: dict[str, list[float]] = {}
    for st in result.spaces.values():
        if st.kind == "internal" and st.name.startswith("layer") and st.evidence:
            scores.setdefault(st.name.rsplit(".", 1)[0], []).append(st.confidence)
    return [b for b, c in scores.items() if max(c) < below]
