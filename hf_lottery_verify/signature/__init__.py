"""Scheme V2 (Algorithm 2): a QR-code signature written into the sparse mask itself, keyed.

Embedding (:func:`embed_signature`):

1. Encode the text as a QR symbol with the pinned encoder (:mod:`hf_lottery_verify.qr`) at
   the smallest version that holds it; only its *data modules* are used — function
   patterns are restored at decode time.
2. Whiten: XOR the data-module bits with a keyed pseudo-random stream, one per copy,
   derived from the key's secret with HMAC-SHA256 (:mod:`.whitening`). Without the secret
   the written bits are indistinguishable from noise.
3. Place: each copy goes to keyed pseudo-random kernels ``(param, out, in)`` of one stage
   (``layer1``, ``layer2``, ...), drawn without replacement over the union of the stage's
   spatial convs, one stage per copy (:mod:`.slots`); by default as many stages as hold a
   copy at <= 50% of their kernels, at most 3. The positions are *derived* from the secret,
   the text and the architecture, never stored in the key.
4. Write (:mod:`.writing`): a 1 over an empty kernel switches on ``module_weights`` seeded
   positions (values from the rewind weights when given, else drawn from the layer's kept
   weights); a 0 clears the kernel. Then every layer's kept count is restored exactly,
   outside every slot.

Nothing public changes: the model's header, card and claim carry no QR parameters and no
location (the claim is :meth:`~hf_lottery_verify.OwnershipKey.public_claim`).

Extraction (:func:`extract_signature`) re-derives the layout (:func:`signature_layout`),
reads the suspect's mask from its *weights* (non-zero entries; never a stored mask), applies
the owner's add-on defense (per layer, keep only the ``k`` largest magnitudes, ``k`` from the
key's committed reference), reads every copy, un-whitens, combines the copies (kept reads
win against pruning, pruned reads against add-on noise, majority, disagreements as
erasures), decodes with the known format (Reed–Solomon with erasures; zbar on the restored
image as a cross-check) and computes the bit agreement and its p-value. A decode counts only
with :data:`MIN_DECODE_SECURITY_BITS` of margin against chance.
"""

from __future__ import annotations

from ..ownership_key import SIGNATURE_SECTION
from .embed import CODINGS, embed_signature, sign, signature_secret
from .extract import (
    MIN_DECODE_SECURITY_BITS,
    SignatureEvidence,
    agreement_p_value,
    extract_signature,
    signature_layout,
    signature_positions,
)
from .slots import Slots, derive_slots, signature_stages
from .whitening import whitening_stream

__all__ = [
    "SIGNATURE_SECTION",
    "CODINGS",
    "MIN_DECODE_SECURITY_BITS",
    "Slots",
    "SignatureEvidence",
    "agreement_p_value",
    "derive_slots",
    "sign",
    "embed_signature",
    "extract_signature",
    "signature_layout",
    "signature_positions",
    "signature_secret",
    "signature_stages",
    "whitening_stream",
]
