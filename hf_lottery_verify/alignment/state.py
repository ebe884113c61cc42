"""The state of one alignment run (:class:`AlignerState`): what is decided so far, and the suspect's
tensors read in the reference's channels. The algorithm (:mod:`.align`) and its helpers
(:mod:`.evidence`, :mod:`.extras`, :mod:`.scales`) all work on it."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..spaces import ChannelSpace, tensor_spaces
from .layout import suspect_spaces
from .reference import Reference
from .result import SpaceAlignment, is_rescaled

__all__ = ["AlignerState"]


class AlignerState:
    """What one alignment run knows so far, and how to read the suspect's tensors in the reference's channels."""

    def __init__(self, state_dict: Mapping[str, torch.Tensor], reference: Reference) -> None:
        self.ref = reference
        self.sd = dict(state_dict)
        self.spaces = reference.spaces
        self.by_name = {s.name: s for s in self.spaces}
        self.order = {s.name: i for i, s in enumerate(self.spaces)}
        self.dims = tensor_spaces(self.spaces)
        self.sus = suspect_spaces(self.ref, self.sd, self.spaces, self.dims)
        self.done: dict[str, SpaceAlignment] = {}
        self.pending: dict[str, torch.Tensor] = {}  # undecided reference channels, kept out of later evidence
        self.pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # per reference channel: similarity, evidence
        self.alpha: dict[str, torch.Tensor] = {}
        self.changed: set[str] = set()
        self.exact = False  # every masked weight has exactly the reference's pattern
        self.unsure: dict[str, torch.Tensor] = {}  # channels a refinement could not decide
        self.eps = reference.bn_eps
        self.notes: list[str] = []
        self._weights: dict[str, torch.Tensor] = {}
        self.dependents: dict[str, list[ChannelSpace]] = {}
        for space in self.spaces:
            if space.injection is not None:
                self.dependents.setdefault(space.injection.source, []).append(space)

    # ------------------------------------------------------------------ gathering

    def cols(self, t: torch.Tensor, space: str, *, undo: bool) -> torch.Tensor:
        """``t`` along dim 1 in the reference's channels of ``space`` (duplicates folded; scales undone if asked)."""
        st = self.done[space]
        if not st.trivial:
            valid = st.mapping >= 0
            if bool(valid.all()):
                out = t.index_select(1, st.mapping)
            else:
                out = t.new_zeros((t.shape[0], st.size, *t.shape[2:]))
                out.index_copy_(1, valid.nonzero().flatten(), t.index_select(1, st.mapping[valid]))
            if st.folded:
                src = torch.tensor(list(st.folded), dtype=torch.long)
                dst = torch.tensor([r for r, _ in st.folded.values()], dtype=torch.long)
                mult = torch.tensor([m for _, m in st.folded.values()], dtype=torch.float64)
                shape = [1] * t.dim()
                shape[1] = -1
                out.index_add_(1, dst, (t[:, src].double() * mult.reshape(shape)).to(t.dtype))
            t = out
        if undo and is_rescaled(st.scale, tolerance=1e-6):
            shape = [1] * t.dim()
            shape[1] = -1
            t = t * st.scale.to(t.dtype).reshape(shape)
        return t

    def rows(self, t: torch.Tensor, space: str, *, fill: float = 0.0) -> torch.Tensor:
        """``t`` along dim 0 in the reference's channels of ``space`` (``fill`` where the suspect has none)."""
        st = self.done[space]
        if st.trivial:
            return t
        valid = st.mapping >= 0
        if bool(valid.all()):
            return t.index_select(0, st.mapping)
        out = torch.full((st.size, *t.shape[1:]), fill, dtype=t.dtype)
        out[valid] = t[st.mapping[valid]]
        return out

    def bn(self, source: Mapping[str, torch.Tensor], norm: str) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch norm as ``a * x + b`` (eval mode), float64."""
        g, beta = source[f"{norm}.weight"].double(), source[f"{norm}.bias"].double()
        mean, var = source[f"{norm}.running_mean"].double(), source[f"{norm}.running_var"].double()
        a = g / torch.sqrt(var + self.eps.get(norm, 1e-5))
        return a, beta - a * mean
