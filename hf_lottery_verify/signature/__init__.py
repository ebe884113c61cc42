"""Scheme V2 (Algorithm 2): a QR-code signature written into the sparse mask itself.

Embedding (:func:`embed_signature`):

1. Encode the text as a QR symbol with the pinned encoder (:mod:`hf_lottery_verify.qr`);
   only its *data modules* are used — function patterns are restored at decode time.
2. Squeeze each candidate conv mask to 2-D (kernel ``(out, in)`` kept if any weight is)
   and score every placement of the symbol in every candidate layer at once: the number
   of data modules that already agree is a 2-D cross-correlation, computed by FFT (no
   Python loop over offsets), for both polarities (dark = kept, or dark = pruned).
3. Write only the data modules into the best region(s): a 1 over an empty kernel switches
   on one seeded position in it (value from the rewind weights when given, otherwise drawn
   from the layer's kept weights); a 0 clears the kernel.
4. Keep the number of kept weights exactly unchanged, per layer: when the region gained
   ``d`` weights, the ``d`` smallest-magnitude kept weights of the same layer *outside*
   every signature region are pruned; when it lost ``d``, ``d`` pruned positions of the
   same layer outside the regions are switched on (largest rewind magnitude first, or
   seeded random without rewind weights). Only when a region fills nearly its whole
   layer does the remainder move to the other masked layers (same rules); the total
   stays exact either way and the key's ``changes`` say where compensation happened.

``copies > 1`` writes the same symbol into several non-overlapping regions (the best ones
over all candidate layers). Extraction then combines the copies: a module read as kept
in any copy is kept (pruning attacks only remove weights) and modules on which copies
disagree are handed to the Reed–Solomon decoder as erasures, which corrects about twice
as many damaged modules as plain error decoding.

Extraction (:func:`extract_signature`) reads the suspect's mask from its *weights*
(non-zero entries; never a stored mask), applies the owner's add-on defense (per layer,
keep only the ``k`` largest magnitudes, ``k`` recorded in the key), reads the region(s),
decodes with the known format from the key (pyzbar on the restored image as a
cross-check) and computes the bit agreement and its p-value under the null of an
unrelated mask of the same density.

Modules: :mod:`.regions` (candidate layers, FFT region search, capacity), :mod:`.embed`
(writing the data modules, keeping the density), :mod:`.extract` (reading a suspect,
combining copies, decoding, statistics).
"""

from __future__ import annotations

from ..ownership_key import SIGNATURE_SECTION
from .embed import embed_signature
from .extract import SignatureEvidence, extract_signature
from .regions import (
    Region,
    candidate_layers,
    find_regions,
    region_agreement,
    signature_capacity,
)

__all__ = [
    "SIGNATURE_SECTION",
    "Region",
    "SignatureEvidence",
    "candidate_layers",
    "region_agreement",
    "find_regions",
    "embed_signature",
    "extract_signature",
    "signature_capacity",
]
