"""Scheme V2 (Algorithm 2): a QR-code signature written into the sparse mask itself, keyed.

Embedding (:func:`embed_signature`, default ``layout="keyed"``):

1. Encode the text as a QR symbol with the pinned encoder (:mod:`hf_lottery_verify.qr`);
   only its *data modules* are used — function patterns are restored at decode time.
2. Whiten: XOR the data-module bits with a keyed pseudo-random stream, one per copy,
   derived from the owner's secret with HMAC-SHA256 (:mod:`.whitening`). Without the
   secret the written bits are indistinguishable from noise.
3. Place: each copy goes to keyed pseudo-random kernels ``(param, out, in)`` of one stage
   (``layer1``, ``layer2``, ...), drawn without replacement over the union of the stage's
   spatial convs, one stage per copy (:mod:`.slots`); by default as many stages as hold a
   copy at <= 50% of their kernels, at most 3. The key records the slots explicitly.
4. Write (:mod:`.writing`): a 1 over an empty kernel switches on ``module_weights`` seeded
   positions (values from the rewind weights when given, else drawn from the layer's kept
   weights); a 0 clears the kernel. Then every layer's kept count is restored exactly,
   outside every slot (prune the smallest kept magnitudes / switch on the largest rewind
   magnitudes), across layers only when a layer has no room. The modules the embedding
   changed are recorded: they alone enter the p-value, so the unsigned ticket scores p ≈ 1.

Nothing public changes: the model's header, card and claim carry no QR parameters and no
location (the claim is :meth:`~hf_lottery_verify.OwnershipKey.public_claim`).

Extraction (:func:`extract_signature`) reads the suspect's mask from its *weights*
(non-zero entries; never a stored mask), applies the owner's add-on defense (per layer,
keep only the ``k`` largest magnitudes, ``k`` recorded in the key), reads every copy's
slots, un-whitens, combines the copies (kept reads win against pruning, pruned reads against
add-on noise, majority, disagreements as erasures), decodes with the known format from the
key (Reed–Solomon with erasures; zbar on the restored image as a cross-check) and computes
the bit agreement and its exact p-value.

A keyed key's slots are recorded explicitly and re-derived from its secret at extraction
(:func:`slots_are_derived`): a key whose slots were chosen after seeing a model (to sit where
its mask already spells the text) does not count as a match.

The earlier ``regions`` layout (:mod:`.regions`: one contiguous window per copy, found by
FFT search) is still written with ``layout="regions"`` and read from old keys; a key-less
search (:func:`find_decodable_windows`) finds it, which is why it is no longer the default.
"""

from __future__ import annotations

from ..ownership_key import SIGNATURE_SECTION
from .embed import LAYOUTS, embed_signature
from .extract import (
    SignatureEvidence,
    agreement_p_value,
    combine_copies,
    combine_pairs,
    extract_signature,
    signature_positions,
    slots_are_derived,
)
from .regions import (
    Region,
    WindowHit,
    candidate_layers,
    find_decodable_windows,
    find_regions,
    region_agreement,
    signature_capacity,
)
from .slots import Slots, signature_stages
from .whitening import parse_secret, whitening_stream

__all__ = [
    "SIGNATURE_SECTION",
    "LAYOUTS",
    "Region",
    "Slots",
    "SignatureEvidence",
    "WindowHit",
    "agreement_p_value",
    "candidate_layers",
    "combine_copies",
    "combine_pairs",
    "embed_signature",
    "extract_signature",
    "find_decodable_windows",
    "signature_positions",
    "find_regions",
    "parse_secret",
    "region_agreement",
    "signature_capacity",
    "signature_stages",
    "slots_are_derived",
    "whitening_stream",
]
