"""Reading a suspect: its mask from the weights, the add-on defense, decoding the copies, p-values."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from .. import qr
from ..errors import KeyMismatchError
from ..masks import squeeze_mask
from ..ownership_key import SIGNATURE_SECTION, OwnershipKey
from ..recovery import recover_masks
from ..stats import module_agreement_p_value
from ..suspect import Suspect, read_suspect
from .regions import Region

__all__ = ["SignatureEvidence", "extract_signature"]


@dataclass
class SignatureEvidence:
    """What the suspect's mask says about the signature.

    Attributes:
        text: Decoded text (known-format decoder), or ``None``.
        matches: ``text`` equals the key's text.
        bit_agreement: Fraction of data modules (combined over copies) equal to the key's.
        p_value: Probability that an unrelated mask of the same density agrees with the
            signature on at least as many of the modules the embedding *changed* (Bonferroni
            over copies). Modules that already agreed before signing are not counted: the
            unsigned ticket scores p ≈ 1.
        image_text: What zbar read from the restored symbol (cross-check), or ``None``.
        copies: Per-copy ``(bit_agreement, p_value)``.
        erasures: Modules handed to the decoder as erasures (copies disagreeing).
        defense_applied: Layers where the add-on defense kept only the top-k magnitudes.
        decode_reason: Why decoding failed, if it did.
        combination: How copies were combined for the successful decode (``single``, ``any``
            — kept in any copy, ``all``, ``majority``, ``erasures``).
        seconds: Extraction and decoding time.
    """

    text: str | None
    matches: bool
    bit_agreement: float
    p_value: float
    image_text: str | None = None
    copies: list[dict[str, float]] = field(default_factory=list)
    erasures: int = 0
    defense_applied: list[str] = field(default_factory=list)
    decode_reason: str | None = None
    combination: str = "single"
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _region_masks(weights: Mapping[str, torch.Tensor], section: Mapping[str, Any], *, defense: bool
                  ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The suspect's masks of the signed layers, from its weights, with the add-on defense."""
    for name, shape in section["param_shapes"].items():
        if name not in weights:
            raise KeyMismatchError(f"The suspect has no parameter '{name}' named in the key; wrong architecture?")
        if list(weights[name].shape) != list(shape):
            raise KeyMismatchError(f"'{name}' has shape {tuple(weights[name].shape)} in the suspect, {tuple(shape)} "
                                   "in the key; the key belongs to another architecture.")
    names = list(dict.fromkeys(r["param"] for r in section["regions"]))
    signed = {n: weights[n] for n in names}
    if not defense:
        return recover_masks(signed), []
    kept = {n: int(section["layer_kept"].get(n, 0)) or weights[n].numel() for n in names}
    masks = recover_masks(signed, kept)
    defended = [n for n in names if int(masks[n].sum()) < int((weights[n] != 0).sum())]
    return masks, defended


def _decode_copies(reads: list[tuple[np.ndarray, bool]], *, version: int, ecc: str, mask_pattern: int
                   ) -> tuple[qr.QRDecodeResult, np.ndarray, np.ndarray, str]:
    """Decode one or more copies: try the combinations each attack model suggests.

    Pruning attacks only turn kept kernels into pruned ones, so "kept in any copy" is the
    best estimate after pruning; add-on noise does the opposite ("kept in all copies");
    modules on which the copies disagree are unreliable and can be handed to the
    decoder as erasures. The first combination that Reed–Solomon-decodes to a valid QR
    bitstream wins (a false decode needs a valid codeword *and* a valid bitstream).
    """
    first_inverted = reads[0][1]
    kept = np.stack([bits ^ inv for bits, inv in reads])  # True = kernel kept, per copy
    n = kept.shape[1]
    none = np.zeros(n, dtype=bool)
    if len(reads) == 1:
        candidates = [("single", kept[0], none)]
    else:
        disagree = kept.any(axis=0) & ~kept.all(axis=0)
        votes = kept.sum(axis=0)
        majority = votes * 2 > len(reads)
        tie = votes * 2 == len(reads)
        candidates = [("any", kept.any(axis=0), none), ("majority", majority, tie), ("all", kept.all(axis=0), none),
                      ("erasures", kept.any(axis=0), disagree)]
    best = None
    for how, k, erase in candidates:
        bits = k ^ first_inverted
        res = qr.decode_known(bits, version=version, ecc=ecc, mask_pattern=mask_pattern,
                              erasures=erase if erase.any() else None)
        if best is None:
            best = (res, bits, erase, how)
        if res.ok:
            return res, bits, erase, how
    assert best is not None
    return best


def extract_signature(
    source: Any,
    key: OwnershipKey | str | os.PathLike,
    *,
    defense: bool = True,
    cross_check: bool = True,
) -> SignatureEvidence:
    """Read and decode the signature from a suspect model.

    Args:
        source: A :class:`~hf_lottery_verify.suspect.Suspect` already read, or anything
            :func:`~hf_lottery_verify.suspect.read_suspect` accepts (a model, a folder, a file
            of any supported layout, a state dict, a Hub repo id). Nothing the suspect says
            about itself is used: the mask comes from its weights.
        key: The owner's key (or its path) with a ``signature`` section.
        defense: Apply the add-on defense (per layer, keep the ``k`` largest magnitudes when
            the suspect has more non-zeros than the signed ticket had).
        cross_check: Also decode the restored symbol with zbar.

    Returns:
        The evidence (decoded text, bit agreement, p-value, ...).

    Raises:
        KeyMismatchError: The key does not fit the suspect (missing layer, other shapes).
        KeyFileError: ``key`` cannot be read.
    """
    if not isinstance(key, OwnershipKey):
        key = OwnershipKey.load(key)
    section = key.section(SIGNATURE_SECTION)
    suspect = source if isinstance(source, Suspect) else read_suspect(source)
    weights = suspect.state_dict
    t0 = time.perf_counter()
    masks, defended = _region_masks(weights, section, defense=defense)
    qrp = section["qr"]
    version, ecc, mpat = int(qrp["version"]), str(qrp["ecc"]), int(qrp["mask_pattern"])
    data = qr.data_map(version)
    n = int(section["num_data_modules"])
    expected = np.unpackbits(np.frombuffer(bytes.fromhex(section["data_bits"]), dtype=np.uint8))[:n].astype(bool)
    reads, per_copy = [], []
    for rd in section["regions"]:
        region = Region(**{k: rd[k] for k in ("param", "row", "col", "size", "agreement", "inverted")})
        m = masks[region.param]
        if region.row + region.size > m.shape[0] or region.col + region.size > m.shape[1]:
            raise KeyMismatchError(f"The key's region in '{region.param}' lies outside the suspect's layer.")
        sq = squeeze_mask(m)
        window = sq[region.row: region.row + region.size, region.col: region.col + region.size].cpu().numpy()
        bits = window[data]
        if region.inverted:
            bits = ~bits
        q = float(sq.double().mean())
        target_kept = expected ^ region.inverted  # kept-ness the signature asked for
        agree = int((bits == expected).sum())
        # The test uses only the modules the embedding changed: the region was chosen where
        # the unsigned mask already agreed most, so agreement elsewhere is no evidence of a
        # signature (the unsigned ticket itself would look significant).
        changed = (np.unpackbits(np.frombuffer(bytes.fromhex(rd["changed_bits"]), dtype=np.uint8))[:n].astype(bool)
                   if "changed_bits" in rd else np.ones(n, dtype=bool))
        agree_changed = int((bits == expected)[changed].sum())
        p = module_agreement_p_value(agree_changed, ones=int((target_kept & changed).sum()),
                                     zeros=int((~target_kept & changed).sum()), q=q)
        per_copy.append({"param": region.param, "bit_agreement": agree / n, "changed_modules": int(changed.sum()),
                         "changed_agreement": agree_changed / max(1, int(changed.sum())), "p_value": p})
        reads.append((bits, region.inverted))
    result, combined, erasures, how = _decode_copies(reads, version=version, ecc=ecc, mask_pattern=mpat)
    image_text = None
    if cross_check:
        full = qr.restore(combined, version=version, ecc=ecc, mask_pattern=mpat)
        try:
            image_text = qr.decode_image(full)
        except ImportError:
            image_text = None
    agree_all = int((combined == expected).sum())
    # the strongest copy's evidence, Bonferroni-corrected over copies (no product: copies of
    # one suspect are not independent under every null)
    p_value = min(c["p_value"] for c in per_copy) * len(per_copy)
    return SignatureEvidence(
        text=result.text if result.ok else None,
        matches=bool(result.ok and result.text == section["text"]),
        bit_agreement=agree_all / n,
        p_value=min(1.0, p_value),
        image_text=image_text,
        copies=per_copy,
        erasures=int(erasures.sum()),
        defense_applied=defended,
        decode_reason=None if result.ok else result.reason,
        combination=how,
        seconds=time.perf_counter() - t0,
    )
