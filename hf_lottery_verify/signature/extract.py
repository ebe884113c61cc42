"""Reading a suspect: its mask from the weights, the add-on defense, decoding the copies, p-values."""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import qr
from ..errors import KeyMismatchError, SignatureError
from ..key_sections import SignatureSection
from ..masks import squeeze_mask
from ..ownership_key import KeyLike, OwnershipKey, as_key
from ..recovery import recover_masks
from ..stats import binomial_log_pmf
from .combine import combine_copies, combine_pairs
from .embed import signature_secret
from .slots import Slots, derive_slots
from .whitening import whitening_stream

__all__ = ["SignatureEvidence", "extract_signature", "agreement_p_value", "signature_layout", "signature_positions",
           "MIN_DECODE_SECURITY_BITS"]


@dataclass
class SignatureEvidence:
    """What the suspect's mask says about the signature.

    Attributes:
        text: Decoded text (known-format decoder), or ``None``.
        matches: ``text`` equals the key's text: a valid Reed–Solomon decode of it with at
            least :data:`MIN_DECODE_SECURITY_BITS` of margin against chance, plus the bits of
            the decoder's own candidate search (``required_bits``).
        bit_agreement: Fraction of data modules (combined over copies) equal to the key's.
        p_value: Probability that an unrelated mask of the same per-layer density agrees with
            the signature on at least as many modules (Bonferroni over copies; pair coding:
            intact pairs reading the target pattern, among the intact ones). Per copy the
            larger of the exact binomial tail and the tail against random slot sets of the
            suspect's own stage (:func:`decoy_p_value`), which measures how much real masks vary.
        image_text: What zbar read from the restored symbol (cross-check), or ``None``.
        copies: Per copy: where it lives, bit agreement, p-value.
        erasures: Modules handed to the decoder as erasures (copies disagreeing).
        defense_applied: Layers where the add-on defense kept only the top-k magnitudes.
        decode_reason: Why decoding failed or does not count, if so.
        combination: How copies were combined for the decode (``single``, ``any`` — kept
            reads win, ``majority``, ``all`` — pruned reads win, ``erasures``, ``weighted``,
            ``pairs``, ``fullness`` or ``fullness-flat`` — pairs vote, or ``copy<c>`` alone).
        security_bits: ``-log2`` of the chance that random data decodes as this one did.
        required_bits: Security a decode needs here: :data:`MIN_DECODE_SECURITY_BITS` plus
            ``log2`` of the candidate combinations the decoder tried.
        own_order_p_value: The p-value in the suspect's own channel order, when the
            alignment found no copy (the report's ``p_value`` is then the larger of the two).
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
    security_bits: float = 0.0
    required_bits: float = 0.0
    own_order_p_value: float | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _CopyRead:
    """One copy as read from the suspect: data bit = ``kept ^ stream`` where ``valid``.

    Single coding: ``kept`` is the module's kernel, valid unless the kernel is function-free
    (``erased``: a thief may have written anything there). Pair coding: ``kept`` is the
    first kernel of the pair, valid when the second one reads the opposite (an intact pair);
    both kept or both pruned is an erasure of this copy's module (function-free kernels read
    as pruned, so a pair never reads intact on a function-free kept kernel).
    """

    kept: np.ndarray  # (n,) kernel kept in the suspect
    stream: np.ndarray  # (n,) whitening
    layer: np.ndarray  # (n,) index into ``layers``
    layers: list[str]
    info: dict[str, Any]
    valid: np.ndarray | None = None  # (n,) pair coding: the pair reads one kept, one pruned
    null_p: np.ndarray | None = None  # (n,) pair coding: P(an unrelated intact pair reads the target pattern)
    fullness: np.ndarray | None = None  # (n,) pair coding: f_a - f_b, f = min(kept weights, module_weights) / it
    decoys: np.ndarray | None = None  # (DECOYS, n * width) kernel reads at random positions of the same stage
    erased: np.ndarray | None = None  # (n,) single coding: the module's kernel is function-free (an erasure)


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
errors with probability below ``2^-40`` per candidate the decoder tries
(:func:`~hf_lottery_verify.qr.decode_security_bits`). A claimant who grinds secrets gets a
fresh random reading per secret, so forging a decode takes about ``2^40`` tries — each a
full extraction — however the tries are spent (secrets, texts, the few layout choices)."""


def _decode(reads: list[_CopyRead], *, symbol: qr.QRSymbol) -> tuple[qr.QRDecodeResult, np.ndarray, np.ndarray, str,
                                                                       float]:
    """The first candidate combination that decodes with the required security (else the most
    secure decode, else the first candidate), and the security required."""
    kept = np.stack([r.kept for r in reads])
    stream = np.stack([r.stream for r in reads])
    paired = np.array([r.valid is not None for r in reads])
    n = kept.shape[1]
    valid = np.stack([r.valid if r.valid is not None else ~r.erased if r.erased is not None
                      else np.ones(n, dtype=bool) for r in reads])
    if paired.any():
        fullness = np.stack([r.fullness if r.fullness is not None else np.zeros(n) for r in reads])
        candidates = combine_pairs(kept, stream, valid, fullness, paired)
    else:
        candidates = combine_copies(kept, stream, valid)
    required = MIN_DECODE_SECURITY_BITS + math.log2(len(candidates))
    best = None
    for how, bits, erase, rel in candidates:
        res = qr.decode_known(bits, version=symbol.version, ecc=symbol.ecc, mask_pattern=symbol.mask_pattern,
                              erasures=erase if erase.any() else None,
                              reliability=None if how.startswith("copy") or how in ("single", "erasures") else rel)
        if res.ok and res.security_bits >= required:
            return res, bits, erase, how, required
        if best is None or (res.ok and (not best[0].ok or res.security_bits > best[0].security_bits)):
            best = (res, bits, erase, how)
    assert best is not None
    return (*best, required)


@functools.lru_cache(maxsize=16)
def _arch_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """Shapes of the architecture's stage convolutions (they depend on neither labels nor input channels)."""
    from ..architectures import create_resnet

    with torch.device("meta"):
        model = create_resnet(arch.split(".")[0])
    return {n: tuple(p.shape) for n, p in model.named_parameters() if p.dim() == 4}


def signature_layout(key: OwnershipKey) -> tuple[SignatureSection, qr.QRSymbol, list[Slots]]:
    """The key's signature as the verifier sees it: the section, the QR symbol and every copy's slots.

    Everything but the text and the signer's few choices is recomputed here — the symbol
    from the text (smallest version, the encoder's mask pattern), the stages and slots from
    the key's secret and the architecture — so a key cannot place a copy anywhere a model's
    mask already spells a text.

    Args:
        key (`OwnershipKey`): A key with a ``signature`` section.

    Returns:
        ``(section, symbol, slots)``.

    Raises:
        KeyMismatchError: The key has no signature section, or its layout is not one this
            architecture can hold (a layout the library's signer never writes).
        KeyFileError: The section is malformed.
    """
    section = key.signature()
    symbol = qr.encode(section.text, ecc=section.ecc)
    try:
        slots = derive_slots(signature_secret(key), _arch_shapes(key.arch), symbol.num_data_modules,
                             widths=section.widths, coding=section.coding, layers=section.layers)
    except SignatureError as exc:
        raise KeyMismatchError(f"The key's signature layout ({section.copies} copies, widths {list(section.widths)}, "
                               f"coding {section.coding}) is not one the signer writes for '{key.arch}': {exc}") from exc
    return section, symbol, slots


def _live_weights(weights: Mapping[str, torch.Tensor], key: OwnershipKey
                  ) -> tuple[Mapping[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """The weights with every function-free entry zeroed (:mod:`hf_lottery_verify.liveness`) and where the live
    positions are; unchanged, and ``None``, when the state dict does not hold the whole architecture."""
    from ..errors import HfLotteryError
    from ..liveness import liveness, without_dead

    model_args = (key.sections.get("reference") or {}).get("model_args")
    try:
        dead = liveness(weights, arch=key.arch, model_args=model_args)
    except (HfLotteryError, KeyError):
        return weights, None
    return without_dead(weights, dead), dead.live


def _read(weights: Mapping[str, torch.Tensor], section: SignatureSection, symbol: qr.QRSymbol, slots: list[Slots],
          secret: bytes, shapes: Mapping[str, tuple[int, ...]], *, kept: Mapping[str, int] | None,
          live: Mapping[str, torch.Tensor] | None = None) -> tuple[list[_CopyRead], list[str]]:
    names = list(dict.fromkeys(name for s in slots for name in s.params))
    for name in names:
        if name not in weights or tuple(weights[name].shape) != tuple(shapes[name]):
            got = tuple(weights[name].shape) if name in weights else "nothing"
            raise KeyMismatchError(f"The signature's layer '{name}' is {got} in the suspect; the key belongs to "
                                   "another architecture, or the suspect must be re-aligned to the key's reference.")
    masks = recover_masks({n: weights[n] for n in names}, {n: kept[n] for n in names if n in kept} if kept else None)
    defended = [n for n in names if kept and n in kept and int(torch.count_nonzero(weights[n])) > kept[n]]
    density = {name: float(squeeze_mask(masks[name]).double().mean()) for name in names}
    n = symbol.num_data_modules
    data_bits = symbol.data_bits()
    reads = []
    for c, (s, width) in enumerate(zip(slots, section.widths, strict=True)):
        count = np.zeros(n * width, dtype=np.int64)
        erased = np.zeros(n * width, dtype=bool)
        for name, pos, kernels in s.per_param():
            m = masks[name]
            count[pos] = m.reshape(m.shape[0] * m.shape[1], -1)[torch.from_numpy(kernels)].sum(dim=1).numpy()
            if live is not None and name in live:
                erased[pos] = ~live[name][:, :, 0, 0].reshape(-1)[torch.from_numpy(kernels)].numpy()
        kernel_kept = count > 0
        stage_kept = torch.cat([masks[p].reshape(masks[p].shape[0] * masks[p].shape[1], -1).any(dim=1)
                                for p in s.params]).numpy()
        decoys = _decoy_reads(stage_kept, n * width, seed=secret + b"decoys/%d" % c)
        info = {"stage": s.stage, "layers": len(s.params), "width": width, "q": [density[p] for p in s.params]}
        layer = s.param_index.astype(np.int64)
        stream = whitening_stream(secret, c, n)
        if width == 1:
            reads.append(_CopyRead(kept=kernel_kept, stream=stream, layer=layer, layers=list(s.params), info=info,
                                   decoys=decoys, erased=erased if erased.any() else None))
            continue
        pair, q = kernel_kept.reshape(n, 2), np.asarray(info["q"])[layer].reshape(n, 2)
        mw = section.module_weights
        # an unrelated mask reads pattern (1, 0) with probability q_a (1 - q_b), (0, 1) with (1 - q_a) q_b:
        # given an intact pair, the target pattern with their ratio (1/2 at equal densities), whatever
        # made the pairs intact (another owner's pair coding at the same slots included)
        target = data_bits ^ stream
        p10, p01 = q[:, 0] * (1 - q[:, 1]), (1 - q[:, 0]) * q[:, 1]
        null_p = np.where(target, p10, p01) / np.maximum(p10 + p01, 1e-12)
        reads.append(_CopyRead(kept=pair[:, 0].copy(), stream=stream, layer=layer[0::2], layers=list(s.params),
                               info=info, valid=pair[:, 0] != pair[:, 1], null_p=null_p,
                               fullness=(np.minimum(count[0::2], mw) - np.minimum(count[1::2], mw)) / mw,
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


def _weights_of(source: Any) -> Mapping[str, torch.Tensor]:
    """The timm state dict of a model, a state dict, or a read suspect (its ``state_dict`` mapping)."""
    if isinstance(source, nn.Module):
        net = getattr(source, "timm_model", source)
        return {name: value.detach().cpu() for name, value in net.state_dict().items()}
    state = source if isinstance(source, Mapping) else getattr(source, "state_dict", None)
    if not isinstance(state, Mapping):
        raise TypeError(f"extract_signature() reads weights, not {type(source).__name__}: read a folder, file or "
                        "Hub repo with hf_lottery_verify.read_suspect(...) first.")
    return state


def extract_signature(
    source: Any,
    *,
    key: KeyLike,
    kept: Mapping[str, int] | None = None,
    cross_check: bool = True,
) -> SignatureEvidence:
    """Read and decode the signature from a suspect model.

    Args:
        source (`Any`): The suspect's weights: a model, a state dict under timm's names (e.g.
            weights already re-aligned to the key's reference model), or a
            :class:`~hf_lottery_verify.suspect.Suspect` — read folders, files of any supported
            layout and Hub repo ids with :func:`~hf_lottery_verify.suspect.read_suspect` first.
            Nothing the suspect says about itself is used: the mask comes from its weights.
        key (`OwnershipKey`, `str` or `os.PathLike`): The owner's key (or its path) with a
            ``signature`` section.
        kept (`Mapping[str, int]`, *optional*): The add-on defense: per layer, the kept count
            of the published model (from the key's committed reference); a suspect layer with
            more non-zeros keeps only that many largest magnitudes. Without it the mask is the
            non-zero pattern.
        cross_check (`bool`, *optional*, defaults to `True`): Also decode the restored symbol with zbar.

    Returns:
        The :class:`SignatureEvidence` (decoded text, bit agreement, p-value, ...).

    Raises:
        KeyMismatchError: The key does not fit the suspect (missing layer, other shapes) or
            has no signature section, or its layout is not one the signer writes.
        KeyFileError: ``key`` cannot be read.
        TypeError: ``source`` is a path or a repo id (read it with ``read_suspect`` first).
    """
    key = as_key(key)
    section, symbol, slots = signature_layout(key)
    state = _weights_of(source)
    t0 = time.perf_counter()
    secret = signature_secret(key)
    weights, live = _live_weights(state, key)
    reads, defended = _read(weights, section, symbol, slots, secret, _arch_shapes(key.arch), kept=kept, live=live)
    expected = symbol.data_bits()
    per_copy = []
    for r in reads:
        target_kept = expected ^ r.stream
        agree = r.kept == target_kept
        extra: dict[str, Any] = {}
        if r.valid is None:
            groups = [(int((target_kept & (r.layer == li)).sum()), int((~target_kept & (r.layer == li)).sum()), q)
                      for li, q in enumerate(r.info["q"])]
        else:  # intact pairs in the target pattern, among the intact ones; Bin(count, p) per null probability
            agree &= r.valid
            values, counts = np.unique(np.round(r.null_p[r.valid], 12), return_counts=True)  # type: ignore[index]
            groups = [(int(k), 0, float(v)) for v, k in zip(values, counts, strict=True)]
            extra["erased"] = float((~r.valid).mean())
        if r.erased is not None:
            agree &= ~r.erased
            extra["erased"] = float(r.erased.mean())
        matches = int(agree.sum())
        p_binomial = agreement_p_value(matches, groups)
        d = r.decoys
        stats = ((d == target_kept).sum(axis=1) if r.valid is None
                 else ((d[:, 0::2] != d[:, 1::2]) & (d[:, 0::2] == target_kept)).sum(axis=1))
        p_decoys = decoy_p_value(matches, stats)
        info = {k: v for k, v in r.info.items() if k != "q"}
        per_copy.append({**info, "bit_agreement": float(agree.mean()), **extra, "p_binomial": p_binomial,
                         "p_decoys": p_decoys, "p_value": max(p_binomial, p_decoys)})
    result, combined, erasures, how, required = _decode(reads, symbol=symbol)
    image_text = None
    if cross_check:
        try:
            image_text = qr.decode_image(qr.restore(combined, version=symbol.version, ecc=symbol.ecc,
                                                    mask_pattern=symbol.mask_pattern))
        except ImportError:
            image_text = None
    # the strongest copy's evidence, Bonferroni-corrected over copies (no product: copies of
    # one suspect are not independent under every null)
    p_value = min(c["p_value"] for c in per_copy) * len(per_copy)
    secure = result.ok and result.security_bits >= required
    reason = None if result.ok else result.reason
    if result.ok and not secure:
        reason = (f"decoded with {result.erased_codewords} erased and {result.corrected_codewords} corrected codewords: "
                  f"random data decodes that way with probability 2^-{result.security_bits:.0f} (evidence needs "
                  f"2^-{required:.0f}), so the text is no evidence")
    return SignatureEvidence(
        text=result.text if result.ok else None,
        matches=bool(secure and result.text == section.text),
        bit_agreement=float((combined == expected).mean()),
        p_value=min(1.0, p_value),
        image_text=image_text,
        copies=per_copy,
        erasures=int(erasures.sum()),
        defense_applied=defended,
        decode_reason=reason,
        combination=how,
        security_bits=round(float(result.security_bits), 1),
        required_bits=round(required, 1),
        seconds=time.perf_counter() - t0,
    )


def signature_positions(key: OwnershipKey) -> dict[str, torch.Tensor]:
    """Weight-shaped boolean maps of every kernel that carries a module of the key's signature.

    :func:`~hf_lottery_verify.keymask.lock_model` keeps these out of a key mask, so a locked
    signed ticket still carries its whole signature.

    Args:
        key (`OwnershipKey`): A key with a ``signature`` section.

    Returns:
        ``{param: bool tensor of the parameter's shape}`` for every parameter holding modules.

    Raises:
        KeyMismatchError: The key has no signature section or its layout does not fit the architecture.
    """
    _, _, slots = signature_layout(key)
    shapes = _arch_shapes(key.arch)
    maps: dict[str, torch.Tensor] = {}
    for s in slots:
        for name, kernel_map in s.kernel_maps(shapes).items():
            maps[name] = maps[name] | kernel_map if name in maps else kernel_map
    return {name: m[:, :, None, None].expand(shapes[name]).clone() for name, m in maps.items()}
