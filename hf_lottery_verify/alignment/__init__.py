"""Re-aligning a suspect's channels to the owner's reference (undoing function-preserving structural edits).

A thief can permute, rescale, duplicate and pad the channels of a stolen ticket without
changing what it computes (Yan et al., USENIX Security 2023). Before reading a mask off a
suspect, the verifier matches its channels to a compact *reference* of the published
model kept in the owner's key:

* :func:`make_reference`, :func:`with_reference`, :func:`reference_from_key` — the
  reference (masks, per-channel norms, batch norms, stem) in the key's ``reference`` section;
* :func:`align_suspect` — the suspect's tensors in the reference's shapes and channel order,
  with per-space mappings, estimated scales and a confidence (:class:`Alignment`);
* :func:`~hf_lottery_verify.alignment.recover_aligned_masks` — the suspect's masks in the
  reference's coordinates, robust to rescaling and densification;
* :func:`restore_aligned_ticket` — Scheme V1 on an edited copy of the locked model (what
  :func:`~hf_lottery_verify.loading.load_with_key` falls back to when the key holds a reference).

Example:
    >>> reference = make_reference(ticket)                                   # doctest: +SKIP
    >>> alignment = align_suspect(stolen.timm_model.state_dict(), reference)  # doctest: +SKIP
    >>> masks = recover_aligned_masks(alignment, reference)                  # doctest: +SKIP
"""

from __future__ import annotations

from .align import align_suspect
from .recover import recover_aligned_masks
from .reference import (
    REFERENCE_FORMAT,
    Reference,
    make_reference,
    reference_from_key,
    with_reference,
)
from .restore import restore_aligned_ticket
from .result import Alignment, SpaceAlignment

__all__ = [
    "REFERENCE_FORMAT",
    "Reference",
    "make_reference",
    "reference_from_key",
    "with_reference",
    "Alignment",
    "SpaceAlignment",
    "align_suspect",
    "recover_aligned_masks",
    "restore_aligned_ticket",
]
