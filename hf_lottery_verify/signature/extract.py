"""Reading a suspect: its mask from the weights, the add-on defense, decoding the copies, p-values."""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from .. import qr
from ..errors import KeyMismatchError, SignatureError
from ..masks import squeeze_mask
from ..ownership_key import SIGNATURE_SECTION, OwnershipKey
from ..recovery import recover_masks
from ..stats import binomial_log_pmf
from ..suspect import Suspect, read_suspect
from .combine import combine_copies, combine_pairs
from .slots import Slots, draw_slots
from .whitening import WHITENING, parse_secret, whitening_stream

__all__ = ["SignatureEvidence", "extract_signature", "combine_copies", "combine_pairs", "agreement_p_value",
           "slots_are_derived", "signature_positions"]


@dataclass
class SignatureEvidence:
    """What the suspect's mask says about the signature.

    Attributes:
        text: Decoded text (known-format decoder), or ``None``.
        matches: ``text`` equals the key's text (a valid Reed–Solomon decode of it, with at
            least ``MIN_DECODE_SECURITY_BITS`` of margin against chance).
        bit_agreement: Fraction of data modules (combined over copies) equal to the key's.
        p_value: Probability that an unrelated mask of the same per-layer density agrees with
            the signature on at least as many of the modules the embedding *changed*
            (Bonferroni over copies; pair coding: intact pairs reading the target pattern, among the
            intact ones). Modules that already agreed before signing are not
            counted: the unsigned ticket scores p ≈ 1. Per copy the larger of the exact
            binomial tail and the tail against random slot sets of the suspect's own stage
            (:func:`decoy_p_value`), which measures how much real masks vary.
        image_text: What zbar read from the restored symbol (cross-check), or ``None``.
        copies: Per copy: where it lives, bit agreement, changed modules, p-value.
        erasures: Modules handed to the decoder as erasures (copies disagreeing).
        defense_applied: Layers where the add-on defense kept only the top-k magnitudes.
        decode_reason: Why decoding failed, if it did.
        combination: How copies were combined for the decode (``single``, ``any`` — kept
            reads win, ``majority``, ``all`` — pruned reads win, ``erasures``, ``weighted``,
            ``pairs``, ``fullness`` or ``fullness-flat`` — pairs vote, or ``copy<c>`` alone).
        layout: The key's signature layout (``keyed`` or ``regions``).
        slots_verified: Keyed layout: the key's slots are the ones its secret derives (when
            not, the key was edited or forged after the fact and ``matches`` is ``False``);
            ``None`` for the ``regions`` layout.
        security_bits: ``-log2`` of the chance that random data decodes as this one did.
        seconds: Extraction and decoding time.
    """

    text: str | None
    matches: bool
    bit_agreement: float
    p_value: float
    image_text: str | None = None
    copies: list[dict[str, Any]] = field(default_factory=list)
    erasures: int = 0
    defense_applied: list[str] = field(default_factory=list)
    decode_reason: str | None = None
    combination: str = "single"
    layout: str = "keyed"
    slots_verified: bool | None = None
    security_bits: float = 0.0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _CopyRead:
    """One copy as read from the suspect: data bit = ``kept ^ stream`` where ``valid``.

    Single coding: ``kept`` is the module's kernel, always valid. Pair coding: ``kept`` is the
    first kernel of the pair, valid when the second one reads the opposite (an intact pair);
    both kept or both pruned is an erasure of this copy's module.
    """

    kept: np.ndarray  # (n,) kernel kept in the suspect
    stream: np.ndarray  # (n,) whitening (keyed) or the polarity (regions)
    layer: np.ndarray  # (n,) index into ``layers``
    layers: list[str]
    changed: np.ndarray  # (n,) modules the embedding changed
    info: dict[str, Any]
    valid: np.ndarray | None = None  # (n,) pair coding: the pair reads one kept, one pruned
    null_p: np.ndarray | None = None  # (n,) pair coding: P(an unrelated intact pair reads the target pattern)
    fullness: np.ndarray | None = None  # (n,) pair coding: f_a - f_b, f = min(kept weights, module_weights) / it
    decoys: np.ndarray | None = None  # (DECOYS, n * width) kernel reads at random positions of the same stage


def _unpack(hex_bits: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(hex_bits), dtype=np.uint8))[:n].astype(bool)


def agreement_p_value(agree: int, groups: Sequence[tuple[int, int, float]]) -> float:
    """P-value of ``agree`` matching modules when each group's kernels are kept at its own rate.

    Under the null of an unrelated mask, a module of a layer with squeezed density ``q``
    matches a target 1 with probability ``q`` and a target 0 with ``1 − q``, independently;
    the number of matches is ``Σ_l Bin(ones_l, q_l) + Bin(zeros_l, 1 − q_l)``, whose exact
    tail is computed by convolving the binomial pmfs (log-scaled).

    Args:
        agree (`int`): Observed matching modules.
        groups (`Sequence[tuple[int, int, float]]`): ``(ones, zeros, q)`` per layer; ``q`` is
            clipped to ``[1e-9, 1 − 1e-9]``.

    Returns:
        ``P(X >= agree)``.
    """
    dist, log_scale = np.ones(1), 0.0
    for ones, zeros, q in groups:
        q = min(max(q, 1e-9), 1 - 1e-9)
        for n, p in ((ones, q), (zeros, 1 - q)):
            if n == 0:
                continue
            lp = binomial_log_pmf(n, p)
            m = float(lp.max())
            dist = np.convolve(dist, np.exp(lp - m))
            log_scale += m
            top = float(dist.max())
            dist /= top
            log_scale += math.log(top)
    if agree <= 0:
        return 1.0
    if agree >= dist.size:
        return 0.0
    tail = float(dist[agree:].sum())
    return 0.0 if tail == 0 else min(1.0, math.exp(math.log(tail) + log_scale))


MIN_DECODE_SECURITY_BITS = 40.0
"""A decode counts as evidence only when random data would decode with these erasures and
errors with probability below ``2^-40`` (:func:`~hf_lottery_verify.qr.decode_security_bits`).
Without it a key written after the fact could be ground: try secrets until a combination
erases all but a few check symbols of every block, "decode" whatever the owner's mask reads
there, and claim the resulting text (measured: about 2,000 secrets, 5 s, for a 1-H symbol)."""


def _decode(reads: list[_CopyRead], *, version: int, ecc: str, mask_pattern: int
            ) -> tuple[qr.QRDecodeResult, np.ndarray, np.ndarray, str]:
    """The first candidate combination that decodes to a valid QR bitstream with at least
    ``MIN_DECODE_SECURITY_BITS`` (else the most secure decode, else the first candidate)."""
    kept = np.stack([r.kept for r in reads])
    stream = np.stack([r.stream for r in reads])
    paired = np.array([r.valid is not None for r in reads])
    if paired.any():
        n = kept.shape[1]
        valid = np.stack([r.valid if r.valid is not None else np.ones(n, dtype=bool) for r in reads])
        fullness = np.stack([r.fullness if r.fullness is not None else np.zeros(n) for r in reads])
        candidates = combine_pairs(kept, stream, valid, fullness, paired)
    else:
        candidates = combine_copies(kept, stream)
    best = None
    for how, bits, erase, rel in candidates:
        res = qr.decode_known(bits, version=version, ecc=ecc, mask_pattern=mask_pattern,
                              erasures=erase if erase.any() else None,
                              reliability=None if how.startswith("copy") or how in ("single", "erasures") else rel)
        if res.ok and res.security_bits >= MIN_DECODE_SECURITY_BITS:
            return res, bits, erase, how
        if best is None or (res.ok and (not best[0].ok or res.security_bits > best[0].security_bits)):
            best = (res, bits, erase, how)
    assert best is not None
    return best


def _check_params(weights: Mapping[str, torch.Tensor], names: Sequence[str], section: Mapping[str, Any]) -> None:
    shapes = section.get("param_shapes", {})
    for name in names:
        if name not in weights:
            raise KeyMismatchError(f"The suspect has no parameter '{name}' named in the key; wrong architecture, or "
                                   "pass weights aligned to the key's reference model.")
        if name in shapes and list(weights[name].shape) != list(shapes[name]):
            raise KeyMismatchError(f"'{name}' has shape {tuple(weights[name].shape)} in the suspect, "
                                   f"{tuple(shapes[name])} in the key; the key belongs to another architecture, or "
                                   "the suspect's channels must be re-aligned to the key's reference first.")


def _suspect_masks(weights: Mapping[str, torch.Tensor], names: Sequence[str], section: Mapping[str, Any], *,
                   defense: bool) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The suspect's masks of the signed layers, from its weights, with the add-on defense."""
    _check_params(weights, names, section)
    signed = {n: weights[n] for n in names}
    if not defense:
        return recover_masks(signed), []
    kept = {n: int(section["layer_kept"].get(n, 0)) or weights[n].numel() for n in names}
    masks = recover_masks(signed, kept)
    return masks, [n for n in names if int(torch.count_nonzero(weights[n])) > kept[n]]


def _read_keyed(weights: Mapping[str, torch.Tensor], section: Mapping[str, Any], tensors: Mapping[str, torch.Tensor],
                n: int, *, defense: bool) -> tuple[list[_CopyRead], list[str]]:
    from .embed import KEYED_LAYOUT_VERSION

    if int(section.get("layout_version", 1)) > KEYED_LAYOUT_VERSION:
        raise KeyMismatchError(f"The key's keyed layout version {section.get('layout_version')} is newer than this "
                               f"version of hf_lottery_verify reads ({KEYED_LAYOUT_VERSION}); upgrade it.")
    if section.get("whitening", WHITENING) != WHITENING:
        raise KeyMismatchError(f"The key's whitening {section.get('whitening')!r} is unknown to this version of "
                               "hf_lottery_verify; upgrade it.")
    secret = parse_secret(section["secret"])
    widths = [_width(section, rec) for rec in section["regions"]]
    slots = [Slots.from_key(rec, tensors, c, n * w) for c, (rec, w) in enumerate(zip(section["regions"], widths,
                                                                                      strict=True))]
    shapes = section["param_shapes"]
    for s in slots:
        for name in s.params:
            if name not in shapes:
                raise KeyMismatchError(f"The key's slots name '{name}', which its param_shapes do not list.")
    names = list(dict.fromkeys(name for s in slots for name in s.params))
    masks, defended = _suspect_masks(weights, names, section, defense=defense)
    density = {name: float(squeeze_mask(masks[name]).double().mean()) for name in names}
    reads = []
    for c, (s, rec, width) in enumerate(zip(slots, section["regions"], widths, strict=True)):
        count = np.zeros(n * width, dtype=np.int64)
        for name, pos, kernels in s.per_param():
            m = masks[name]
            if kernels.max() >= m.shape[0] * m.shape[1]:
                raise KeyMismatchError(f"The key's slots in '{name}' lie outside the suspect's layer.")
            flat = m.reshape(m.shape[0] * m.shape[1], -1)
            count[pos] = flat[torch.from_numpy(kernels)].sum(dim=1).numpy()
        kept = count > 0
        stage_kept = torch.cat([masks[p].reshape(masks[p].shape[0] * masks[p].shape[1], -1).any(dim=1)
                                for p in s.params]).numpy()
        decoys = _decoy_reads(stage_kept, n * width, seed=secret + b"decoys/%d" % c)
        info = {"stage": s.stage, "layers": len(s.params), "q": [density[p] for p in s.params]}
        layer = s.param_index.astype(np.int64)
        if width == 1:
            reads.append(_CopyRead(kept=kept, stream=whitening_stream(secret, c, n), layer=layer, layers=list(s.params),
                                   changed=_unpack(rec["changed_bits"], n), info=info, decoys=decoys))
            continue
        pair, q = kept.reshape(n, 2), np.asarray(info["q"])[layer].reshape(n, 2)
        mw = max(1, int(section.get("module_weights", 1)))
        # an unrelated mask reads pattern (1, 0) with probability q_a (1 - q_b), (0, 1) with (1 - q_a) q_b:
        # given an intact pair, the target pattern with their ratio (1/2 at equal densities), whatever
        # made the pairs intact (another owner's pair coding at the same slots included)
        stream = whitening_stream(secret, c, n)
        target = _unpack(section["data_bits"], n) ^ stream
        p10, p01 = q[:, 0] * (1 - q[:, 1]), (1 - q[:, 0]) * q[:, 1]
        null_p = np.where(target, p10, p01) / np.maximum(p10 + p01, 1e-12)
        reads.append(_CopyRead(kept=pair[:, 0].copy(), stream=stream, layer=layer[0::2], layers=list(s.params),
                               changed=_unpack(rec["changed_bits"], n), info=info, valid=pair[:, 0] != pair[:, 1],
                               null_p=null_p, fullness=(np.minimum(count[0::2], mw) - np.minimum(count[1::2], mw)) / mw,
                               decoys=decoys))
    return reads, defended


DECOYS = 256
"""Random slot sets per copy whose agreement calibrates the copy's p-value on the suspect itself."""


def _decoy_reads(stage_kept: np.ndarray, k: int, *, seed: bytes) -> np.ndarray:
    """Kernel reads at ``DECOYS`` random position sets of ``k`` kernels of the stage (seeded by the key)."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(seed).digest()[:8], "little"))
    k = min(k, stage_kept.size)
    return np.stack([stage_kept[rng.choice(stage_kept.size, size=k, replace=False)] for _ in range(DECOYS)])


def decoy_p_value(observed: int, decoy_stats: np.ndarray) -> float:
    """Upper-tail p-value of ``observed`` against the decoy statistics (normal approximation).

    The binomial null of :func:`agreement_p_value` treats kernels as independent at their
    layer's density; real masks have denser and sparser channels, so agreement varies more
    than that model allows and its p-values come out too small on unrelated models. The same
    statistic at random slot sets of the same stage of the *suspect* measures the actual
    spread; the p-value is the normal tail at the observed value.

    Args:
        observed (`int`): The statistic at the key's slots.
        decoy_stats (`np.ndarray`): The statistic at each decoy slot set.

    Returns:
        ``P(Z >= (observed − mean) / sd)``.
    """
    mean = float(decoy_stats.mean())
    sd = max(float(decoy_stats.std(ddof=1)), 0.5)
    return 0.5 * math.erfc((observed - mean) / sd / math.sqrt(2))


def _width(section: Mapping[str, Any], record: Mapping[str, Any]) -> int:
    """Kernels per data module of one keyed copy (2 for the pair coding)."""
    coding = str(section.get("coding", "single"))
    if coding not in ("single", "pairs", "mixed"):
        raise KeyMismatchError(f"The key's signature coding {coding!r} is unknown to this version of "
                               "hf_lottery_verify; upgrade it.")
    width = int(record.get("width", 2 if coding == "pairs" else 1))
    if width not in (1, 2):
        raise KeyMismatchError(f"The key's copy width {width} is unknown to this version of hf_lottery_verify.")
    return width


def slots_are_derived(section: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> bool:
    """Whether a keyed key's recorded slots are exactly the ones its secret derives.

    A key whose slots were chosen freely (written after seeing a model, to sit where its mask
    already spells the text) fails this check, so its decode is not evidence.

    Args:
        section (`Mapping[str, Any]`): The key's keyed ``signature`` section.
        tensors (`Mapping[str, torch.Tensor]`): Its tensors (without the section prefix).

    Returns:
        ``True`` when every copy's slots equal the HMAC derivation from the secret.
    """
    secret = parse_secret(section["secret"])
    share = section.get("max_layer_share")
    earlier: list[Slots] = []
    for c, rec in enumerate(section["regions"]):
        n = int(section["num_data_modules"]) * _width(section, rec)
        recorded = Slots.from_key(rec, tensors, c, n)
        try:
            derived = draw_slots(secret, section["param_shapes"], recorded.stage, recorded.params, n, c,
                                 max_layer_share=share, taken=earlier)
        except (SignatureError, KeyError):
            return False
        if not recorded.same_as(derived):
            return False
        earlier.append(derived)
    return True


def _read_regions(weights: Mapping[str, torch.Tensor], section: Mapping[str, Any], n: int, *, defense: bool
                  ) -> tuple[list[_CopyRead], list[str]]:
    names = list(dict.fromkeys(r["param"] for r in section["regions"]))
    masks, defended = _suspect_masks(weights, names, section, defense=defense)
    data = qr.data_map(int(section["qr"]["version"]))
    reads = []
    for rd in section["regions"]:
        m, row, col, size = masks[rd["param"]], int(rd["row"]), int(rd["col"]), int(rd["size"])
        if row + size > m.shape[0] or col + size > m.shape[1]:
            raise KeyMismatchError(f"The key's region in '{rd['param']}' lies outside the suspect's layer.")
        sq = squeeze_mask(m)
        kept = sq[row: row + size, col: col + size].cpu().numpy()[data]
        changed = _unpack(rd["changed_bits"], n) if "changed_bits" in rd else np.ones(n, dtype=bool)
        reads.append(_CopyRead(kept=kept, stream=np.full(n, bool(rd["inverted"])), layer=np.zeros(n, dtype=np.int64),
                               layers=[rd["param"]], changed=changed,
                               info={"param": rd["param"], "q": [float(sq.double().mean())]}))
    return reads, defended


def extract_signature(
    source: Any,
    key: OwnershipKey | str | os.PathLike,
    *,
    defense: bool = True,
    cross_check: bool = True,
) -> SignatureEvidence:
    """Read and decode the signature from a suspect model.

    Args:
        source (`Any`): A :class:`~hf_lottery_verify.suspect.Suspect` already read, or anything
            :func:`~hf_lottery_verify.suspect.read_suspect` accepts (a model, a folder, a file
            of any supported layout, a state dict — e.g. weights already re-aligned to the
            key's reference model —, a Hub repo id). Nothing the suspect says about itself
            is used: the mask comes from its weights.
        key (`OwnershipKey`, `str` or `os.PathLike`): The owner's key (or its path) with a
            ``signature`` section (``keyed`` layout, or ``regions`` from earlier versions).
        defense (`bool`, *optional*, defaults to `True`): Apply the add-on defense (per layer,
            keep the ``k`` largest magnitudes when the suspect has more non-zeros than the
            signed ticket had).
        cross_check (`bool`, *optional*, defaults to `True`): Also decode the restored symbol with zbar.

    Returns:
        The :class:`SignatureEvidence` (decoded text, bit agreement, p-value, ...).

    Raises:
        KeyMismatchError: The key does not fit the suspect (missing layer, other shapes, slots
            outside a layer) or has no signature section.
        KeyFileError: ``key`` cannot be read.
    """
    if not isinstance(key, OwnershipKey):
        key = OwnershipKey.load(key)
    section = key.section(SIGNATURE_SECTION)
    layout = str(section.get("layout", "regions"))
    if layout not in ("keyed", "regions"):
        raise KeyMismatchError(f"The key's signature layout {layout!r} is unknown to this version of "
                               "hf_lottery_verify; upgrade it.")
    if isinstance(source, Suspect):
        suspect = source
    else:
        suspect = read_suspect(source, shapes={k: tuple(v) for k, v in section.get("param_shapes", {}).items()})
    weights = suspect.state_dict
    t0 = time.perf_counter()
    qrp = section["qr"]
    version, ecc, mpat = int(qrp["version"]), str(qrp["ecc"]), int(qrp["mask_pattern"])
    n = int(section["num_data_modules"])
    verified = None
    if layout == "keyed":
        tensors = key.section_tensors(SIGNATURE_SECTION)
        reads, defended = _read_keyed(weights, section, tensors, n, defense=defense)
        verified = slots_are_derived(section, tensors)
    else:
        reads, defended = _read_regions(weights, section, n, defense=defense)
    expected = _unpack(section["data_bits"], n)
    per_copy = []
    for r in reads:
        target_kept = expected ^ r.stream
        agree = r.kept == target_kept
        extra: dict[str, Any] = {}
        if r.valid is None:
            groups = [(int((target_kept & r.changed & (r.layer == li)).sum()),
                       int((~target_kept & r.changed & (r.layer == li)).sum()), q)
                      for li, q in enumerate(r.info["q"])]
        else:  # intact pairs in the target pattern, among the intact ones; Bin(count, p) per null probability
            agree &= r.valid
            counted = r.changed & r.valid
            values, counts = np.unique(np.round(r.null_p[counted], 12), return_counts=True)  # type: ignore[index]
            groups = [(int(k), 0, float(v)) for v, k in zip(values, counts, strict=True)]
            extra["erased"] = float((~r.valid).mean())
        agree_changed = int((agree & r.changed).sum())
        info = {k: v for k, v in r.info.items() if k != "q"}
        p_binomial = agreement_p_value(agree_changed, groups)
        p_decoys = None
        if r.decoys is not None:  # the same statistic at random slot sets of the suspect's stage
            d = r.decoys
            if r.valid is None:
                stats = ((d == target_kept) & r.changed).sum(axis=1)
            else:
                stats = ((d[:, 0::2] != d[:, 1::2]) & (d[:, 0::2] == target_kept) & r.changed).sum(axis=1)
            p_decoys = decoy_p_value(agree_changed, stats)
        per_copy.append({**info, "bit_agreement": float(agree.mean()), **extra,
                         "changed_modules": int(r.changed.sum()),
                         "changed_agreement": agree_changed / max(1, int(r.changed.sum())),
                         "p_binomial": p_binomial, "p_decoys": p_decoys,
                         "p_value": max(p_binomial, p_decoys) if p_decoys is not None else p_binomial})
    result, combined, erasures, how = _decode(reads, version=version, ecc=ecc, mask_pattern=mpat)
    image_text = None
    if cross_check:
        try:
            image_text = qr.decode_image(qr.restore(combined, version=version, ecc=ecc, mask_pattern=mpat))
        except ImportError:
            image_text = None
    # the strongest copy's evidence, Bonferroni-corrected over copies (no product: copies of
    # one suspect are not independent under every null)
    p_value = min(c["p_value"] for c in per_copy) * len(per_copy)
    reason = None if result.ok else result.reason
    secure = result.ok and result.security_bits >= MIN_DECODE_SECURITY_BITS
    if result.ok and not secure:
        reason = (f"decoded with {result.erased_codewords} erased and {result.corrected_codewords} corrected codewords: "
                  f"random data decodes that way with probability 2^-{result.security_bits:.0f} (evidence needs "
                  f"2^-{MIN_DECODE_SECURITY_BITS:.0f}), so the text is no evidence")
    if verified is False:
        reason = ("the key's slots are not the ones its secret derives: the key was edited or written after the "
                  "fact, so a decode is no evidence" + (f" ({reason})" if reason else ""))
    return SignatureEvidence(
        text=result.text if result.ok else None,
        matches=bool(secure and result.text == section["text"] and verified is not False),
        bit_agreement=float((combined == expected).mean()),
        p_value=min(1.0, p_value),
        image_text=image_text,
        copies=per_copy,
        erasures=int(erasures.sum()),
        defense_applied=defended,
        decode_reason=reason,
        combination=how,
        layout=layout,
        slots_verified=verified,
        security_bits=round(float(result.security_bits), 1),
        seconds=time.perf_counter() - t0,
    )


def signature_positions(key: OwnershipKey) -> dict[str, torch.Tensor]:
    """Weight-shaped boolean maps of every kernel that carries a module of the key's signature.

    Pass them as ``protect=`` to :func:`~hf_lottery_verify.keymask.lock_model` (or
    ``split_key_mask``) to lock a signed ticket without moving any signature module into
    the key mask.

    Args:
        key (`OwnershipKey`): A key with a ``signature`` section (keyed or regions layout).

    Returns:
        ``{param: bool tensor of the parameter's shape}`` for every parameter holding modules.

    Raises:
        KeyMismatchError: The key has no signature section or its slots are unreadable.
    """
    section = key.section(SIGNATURE_SECTION)
    shapes = {n: [int(v) for v in s] for n, s in section["param_shapes"].items()}
    maps: dict[str, torch.Tensor] = {}
    if str(section.get("layout", "regions")) == "keyed":
        tensors = key.section_tensors(SIGNATURE_SECTION)
        for c, rec in enumerate(section["regions"]):
            n = int(section["num_data_modules"]) * _width(section, rec)
            for name, kernel_map in Slots.from_key(rec, tensors, c, n).kernel_maps(shapes).items():
                maps[name] = maps[name] | kernel_map if name in maps else kernel_map
    else:
        for rd in section["regions"]:
            name, row, col, size = rd["param"], int(rd["row"]), int(rd["col"]), int(rd["size"])
            m = maps.get(name, torch.zeros(shapes[name][0], shapes[name][1], dtype=torch.bool))
            m[row: row + size, col: col + size] = True
            maps[name] = m
    return {name: m[:, :, None, None].expand(shapes[name]).clone() for name, m in maps.items()}
