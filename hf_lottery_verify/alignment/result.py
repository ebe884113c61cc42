"""What an alignment found: :class:`SpaceAlignment` per channel space and the overall :class:`Alignment`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["SpaceAlignment", "Alignment"]


@dataclass
class SpaceAlignment:
    """How one channel space of the suspect was matched to the reference.

    Attributes:
        name: The space's name (:class:`~hf_lottery_verify.spaces.ChannelSpace`).
        kind: ``"input"``, ``"internal"`` or ``"stream"``.
        size: Reference channels.
        suspect_size: Suspect channels.
        mapping: ``(size,)`` ``int64``: the suspect channel matched to each reference channel
            (``-1``: none; the suspect is narrower).
        scale: ``(size,)`` ``float64``: estimated activation scale of each matched suspect
            channel relative to the reference (1 without ReLU-compensated rescaling); the
            suspect's consumers read channel ``r`` with columns divided by ``scale[r]``.
        similarity: Mean score of the chosen pairs, weighted by the channels' kept weights
            (≈1 for a stolen copy, near ``random_similarity`` for an unrelated model).
        random_similarity: Mean score of random (wrong) pairs.
        identity: The mapping is the identity (and the sizes agree).
        method: ``"fixed"`` (image input), ``"diagonal"`` (the identity scored clearly right;
            no full comparison needed), ``"assignment"`` (optimal assignment) or ``"refined"``
            (assignment redone with the consumers' evidence for ambiguous channels).
        ambiguous: Reference channels whose best match was not clearly better than the
            runner-up (after refinement).
        evidence: Reference channels with kept weights to compare (dead channels have none).
        weight: Kept reference weights behind the comparison; ``similarity`` averages the
            channels with these weights, and the overall confidence weighs spaces by it (a
            channel with one kept weight matches an unrelated channel by chance, one with
            twenty does not).
        extra: Suspect channels matched to no reference channel.
        folded: ``{suspect channel: (reference channel, multiple)}``: duplicates whose
            consumers were added to the matched channel's, times the multiple.
        dropped: Extra suspect channels left out (dummies nobody reads, and others).
        notes: What a reader should know (extra channels that change the function, ...).
    """

    name: str
    kind: str
    size: int
    suspect_size: int
    mapping: torch.Tensor
    scale: torch.Tensor
    similarity: float = 1.0
    random_similarity: float = 0.0
    identity: bool = True
    method: str = "fixed"
    ambiguous: int = 0
    evidence: int = 0
    weight: float = 0.0
    extra: list[int] = field(default_factory=list)
    folded: dict[int, tuple[int, float]] = field(default_factory=dict)
    dropped: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def margin(self) -> float:
        """``similarity - random_similarity``."""
        return self.similarity - self.random_similarity

    @property
    def confidence(self) -> float:
        """How far the chosen pairs stand above random ones, in ``[0, 1]``."""
        if self.method == "fixed":
            return 1.0
        span = 1.0 - self.random_similarity
        return float(min(1.0, max(0.0, self.margin / span))) if span > 1e-9 else 0.0

    @property
    def reordered(self) -> bool:
        """The matched suspect channels are out of order (a pure widening keeps them in order)."""
        matched = self.mapping[self.mapping >= 0]
        return bool((matched[1:] <= matched[:-1]).any())

    @property
    def trivial(self) -> bool:
        """Identity mapping, no extra channels: nothing to gather."""
        return self.identity and self.suspect_size == self.size and not self.extra

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe summary (the mapping as a list)."""
        return {
            "name": self.name, "kind": self.kind, "size": self.size, "suspect_size": self.suspect_size,
            "mapping": [int(v) for v in self.mapping.tolist()], "identity": self.identity,
            "reordered": self.reordered, "method": self.method,
            "similarity": round(self.similarity, 6), "random_similarity": round(self.random_similarity, 6),
            "margin": round(self.margin, 6), "confidence": round(self.confidence, 6), "ambiguous": self.ambiguous, "evidence": self.evidence,
            "scale_range": [round(float(self.scale.min()), 6), round(float(self.scale.max()), 6)] if self.size else [],
            "extra": list(self.extra), "folded": {str(k): [int(r), round(float(m), 6)] for k, (r, m) in self.folded.items()},
            "dropped": list(self.dropped), "notes": list(self.notes),
        }


@dataclass
class Alignment:
    """A suspect re-aligned to the owner's reference (see :func:`~hf_lottery_verify.alignment.align_suspect`).

    Attributes:
        arch: The reference's architecture.
        model_args: Its extra ``timm.create_model`` arguments.
        state_dict: The suspect's tensors in the reference's shapes and channel order:
            permuted, duplicates folded, dummies dropped — not rescaled back, so it computes
            what the suspect computes (exactly, for function-preserving edits). Tensors of an
            unchanged space may be the suspect's own objects (not copies).
        spaces: :class:`SpaceAlignment` by space name, in forward order.
        row_scales: For every convolution weight: the estimated scale of each output row
            relative to the reference (batch-norm-compensated rescaling), with the input
            columns' scales undone.
        inputs: For every convolution weight, the space its input columns index.
        confidence: Mean of the spaces' confidences weighted by their kept weights, in ``[0, 1]``:
            ≈1 for a (structurally edited) copy of the reference, low for an unrelated model.
        permuted: Some space's matched channels are out of order (a widened but unpermuted
            suspect is not "permuted"; see each space's ``identity``).
        rescaled: Some channel's estimated scale differs from 1.
        widened: Some space of the suspect has more channels than the reference's.
        transform: How the suspect's k×k kernels were flipped or rotated (one of
            :data:`~hf_lottery_verify.symmetry.DIHEDRAL`); ``state_dict`` has them turned back.
        gone_blocks: Residual blocks of the reference that no longer compute anything in the
            suspect, with why: ``"missing"`` (deleted; read as an identity), ``"function-free"``
            (an identity, or a branch whose output is multiplied away) or ``"matches nothing"``
            (re-initialised or retrained: its channels match none of the reference's).
        notes: Notes of the whole alignment.
        seconds: Time taken.
    """

    arch: str
    model_args: dict[str, Any] | None
    state_dict: dict[str, torch.Tensor]
    spaces: dict[str, SpaceAlignment]
    row_scales: dict[str, torch.Tensor]
    inputs: dict[str, str]
    confidence: float
    permuted: bool
    rescaled: bool
    widened: bool
    transform: str = "identity"
    gone_blocks: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def recovery_weight(self, name: str, rows: torch.Tensor | None = None) -> torch.Tensor:
        """One convolution weight (or some of its rows) with the estimated row and column scales undone (float64).

        Entry ``(r, c, ...)`` is divided by the row scale of ``r`` and multiplied by the
        activation scale of input channel ``c``: for a rescaled copy of the reference the kept
        values come back to the reference's own.

        Args:
            name: A convolution weight of the reference.
            rows (`torch.Tensor`, *optional*): Row indices (all rows when omitted).
        """
        w = self.state_dict[name]
        alpha = self.row_scales[name]
        if rows is not None:
            w, alpha = w.index_select(0, rows), alpha.index_select(0, rows)
        lam = self.spaces[self.inputs[name]].scale
        shape = [1] * w.dim()
        shape[1] = -1
        return w.double() / alpha.reshape(-1, *([1] * (w.dim() - 1))) * lam.reshape(shape)

    @property
    def summary(self) -> str:
        """One line: what was found and how sure the match is."""
        movable = [s for s in self.spaces.values() if s.method != "fixed"]
        permuted = sum(s.reordered for s in movable)
        widened = [s for s in movable if s.suspect_size > s.size]
        folded = sum(len(s.folded) for s in movable)
        dropped = sum(len(s.dropped) for s in movable)
        parts = [f"{self.arch}: {len(movable)} channel spaces", f"{permuted} permuted"]
        if self.transform != "identity":
            parts.append(f"kernels turned back ({self.transform})")
        if self.rescaled:
            parts.append("rescaled")
        if widened:
            parts.append(f"{len(widened)} widened ({folded} duplicate channels folded, {dropped} dropped)")
        low = [s.name for s in movable if s.evidence and s.confidence < 0.5]
        if low:
            parts.append(f"{len(low)} spaces matched poorly ({', '.join(low[:3])}{' ...' if len(low) > 3 else ''})")
        if self.gone_blocks:
            parts.append("blocks gone: " + ", ".join(f"{b} ({why})" for b, why in self.gone_blocks.items()))
        return ", ".join(parts) + f"; confidence {self.confidence:.3f} ({self.seconds:.2f} s)"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe report (for :class:`~hf_lottery_verify.verify.report.VerificationReport`)."""
        return {
            "arch": self.arch, "confidence": round(self.confidence, 6), "permuted": self.permuted,
            "rescaled": self.rescaled, "widened": self.widened, "transform": self.transform,
            "gone_blocks": dict(self.gone_blocks), "summary": self.summary,
            "seconds": round(self.seconds, 4), "notes": list(self.notes),
            "spaces": [s.to_dict() for s in self.spaces.values()],
        }


def _log_spread(values: torch.Tensor) -> float:
    values = values[torch.isfinite(values) & (values > 0)]
    return float(values.log().abs().max()) if values.numel() else 0.0


def is_rescaled(values: torch.Tensor, *, tolerance: float = 1e-3) -> bool:
    """Whether positive scales differ from 1 by more than ``tolerance`` (relative)."""
    return _log_spread(values) > math.log1p(tolerance)
