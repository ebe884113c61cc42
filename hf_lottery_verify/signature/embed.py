"""Writing the signature into the mask with every kept-weight count unchanged."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import qr
from ..errors import KeyMismatchError, SignatureError, SignatureTooLargeError
from ..key_sections import SignatureSection
from ..masks import MaskDict, timm_parameters
from ..ownership_key import SIGNATURE_SECTION, KeyLike, OwnershipKey, as_key, mask_digest
from .slots import MAX_OCCUPANCY, derive_slots, keyed_capacity, plan_stages, signature_stages, stage_kernels
from .whitening import whitening_stream
from .writing import restore_kept_counts, write_kernels

__all__ = ["sign", "embed_signature", "CODINGS", "signature_secret"]

logger = logging.getLogger(__name__)

HEAVY_SIGNATURE_SHARE = 0.25
"""Share of a ticket's kept weights a signature may move (switch on or clear) before ``embed_signature`` warns."""
CODINGS = ("auto", "pairs", "single")
"""``pairs`` writes each data module as two complementary kernels (one kept, one pruned):
pruning or add-on noise that flips one of them leaves an *erasure* (both kept or both
pruned), which Reed–Solomon corrects at half the cost of an error, instead of a wrong bit;
it takes twice the kernels. ``single``: one kernel per module. ``auto``: the stages of the
single coding, each copy paired where its stage holds the pairs at
:data:`~hf_lottery_verify.signature.slots.MAX_OCCUPANCY` and single where not (e.g.
ResNet-20's small ``layer1``, which magnitude pruning spares most), copy by copy while the
expected moves stay within :data:`HEAVY_SIGNATURE_SHARE` of the ticket (an extreme ticket
stays single); the key records every copy's width."""


def sign(model: nn.Module, text: str, *, key: KeyLike | None = None, owner: str | None = None,
         **options: Any) -> OwnershipKey:
    """Sign a ticket (Scheme V2): embed ``text`` into its mask and give it the new key's public claim.

    The one path behind ``save_pretrained(signature=...)``, ``push_to_hub(signature=...)`` and
    ``hf-lottery sign``: :func:`embed_signature`, then ``model.ownership_claim`` (the key's
    commitment, written into the weights header when saved). A key *file* only ever grows:
    it is created, or gains the ``signature`` section.

    Args:
        model (`nn.Module`): The ticket (masks set), changed in place.
        text (`str`): The signature.
        key (`OwnershipKey`, `str` or `os.PathLike`, *optional*): The key, or its file (created
            when missing, extended otherwise); a fresh key when ``None``.
        owner (`str`, *optional*): Public owner name for the claim.
        **options: Keyword options of :func:`embed_signature` (``copies``, ``ecc``, ``seed``, ``rewind``, ...).

    Returns:
        The new :class:`OwnershipKey` (with its ``signature`` section).

    Raises:
        SignatureError: The model already carries a signature claim, or the text does not fit.
        KeyMismatchError: The key already holds a signature or belongs to another architecture.
    """
    if "V2" in (getattr(model, "ownership_claim", None) or {}).get("schemes", ()):
        raise SignatureError("This model already carries a QR signature claim; signing it again would overwrite "
                             "parts of the first one. Sign the unsigned ticket instead.")
    path = None if key is None or isinstance(key, OwnershipKey) else Path(key)
    key = embed_signature(model, text, key=as_key(path) if path is not None and path.exists() else
                          (None if path is not None else key), **options)
    if path is not None:
        key.save(path, extend=True)
    model.ownership_claim = key.public_claim(owner=owner)
    return key


def signature_secret(key: OwnershipKey) -> bytes:
    """The secret the signature's slots and whitening are derived from (from the key's secret)."""
    return key.derive("signature")


def _prepare(model: nn.Module, rewind: nn.Module | Mapping[str, torch.Tensor] | None
             ) -> tuple[MaskDict, dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    masks: MaskDict = dict(getattr(model, "masks", {}) or {})
    if not masks:
        raise SignatureError("The model has no masks: prune it (model.prune_ or find-ticket) before signing.")
    if all(bool(m.all()) for m in masks.values()):
        raise SignatureError("Nothing in this model is pruned (every mask keeps every weight), so there is no room "
                             "to write a signature at constant density: prune it first (model.prune_ or "
                             "find-ticket), then sign the ticket.")
    rewind_sd = None
    if rewind is not None:
        sd = rewind.timm_model.state_dict() if hasattr(rewind, "timm_model") else dict(rewind)
        rewind_sd = {n: t.detach().cpu() for n, t in sd.items()}
    return masks, timm_parameters(model), rewind_sd


def _add(total: dict[str, int], counts: Mapping[str, int]) -> None:
    for k, v in counts.items():
        total[k] = total.get(k, 0) + v


@torch.no_grad()
def embed_signature(
    model: nn.Module,
    text: str,
    *,
    key: OwnershipKey | None = None,
    copies: int | None = None,
    module_weights: int = 2,
    ecc: str = "H",
    layers: str = "spatial",
    coding: str = "auto",
    seed: int = 0,
    rewind: nn.Module | Mapping[str, torch.Tensor] | None = None,
) -> OwnershipKey:
    """Embed ``text`` as a keyed QR signature into the model's sparse mask, in place; return the key.

    The QR symbol's data-module bits are XORed with a keyed stream (one per copy) and
    written to keyed pseudo-random kernels ("slots") of one stage per copy, spread over that
    stage's convs; a 1 keeps the kernel (switching on ``module_weights`` seeded positions of
    an empty one), a 0 clears it — with the pair coding each module takes two kernels, the
    second the complement of the first, so that a flipped kernel shows as an erasure. Then
    every layer's kept count is restored exactly outside the slots. The slots and the
    whitening are derived from the key's secret (never stored), so without the key the
    written bits look like noise at unknown positions, and a key written later cannot place
    them where a model's mask already spells a text.

    Args:
        model (`nn.Module`): A :class:`~hf_lottery_verify.SparseResNetForImageClassification` with masks.
        text (`str`): The signature (e.g. an owner id and a date).
        key (`OwnershipKey`, *optional*): The key to derive the secret from and add the
            ``signature`` section to (a new key with a fresh secret when ``None``).
        copies (`int`, *optional*): Copies of the symbol; ``None`` makes 3, one per stage that
            holds a copy (earliest first) and, with only two such stages, a second one in the
            roomier stage on kernels of its own while the ticket can pay for it.
        module_weights (`int`, *optional*, defaults to 2): Minimum kept weights of a kernel
            that encodes a 1 (1 = the paper's); 2 resists random pruning and add-on noise.
        ecc (`str`, *optional*, defaults to `"H"`): QR error-correction level; the version is
            the smallest that holds the text and the mask pattern the encoder's choice.
        layers (`str`, *optional*, defaults to `"spatial"`): ``"spatial"`` (the k×k convs of
            every stage) or ``"all"`` (1×1 convs too).
        coding (`str`, *optional*, defaults to `"auto"`): ``auto``, ``pairs`` or ``single``
            (see :data:`CODINGS`).
        seed (`int`, *optional*, defaults to 0): Seed of the non-secret choices (which
            positions of a kernel are switched on, drawn values). Same key, seed, model and
            text → bit-identical masks, weights and signature section.
        rewind (`nn.Module` or `Mapping[str, torch.Tensor]`, *optional*): Rewind weights
            ``W_k`` (model or timm-named state dict): values of switched-on weights.

    Returns:
        A new :class:`OwnershipKey`: ``key`` (or a fresh one) with its ``signature`` section.

    Raises:
        SignatureTooLargeError: ``text`` does not fit; the message names the largest capacity.
        SignatureError: The model has no masks or nothing pruned, or bad options.
        KeyMismatchError: ``key`` already holds a signature or belongs to another architecture.

    Example:
        >>> key = embed_signature(ticket, "alice 2026", rewind=rewind_weights)   # doctest: +SKIP
        >>> extract_signature(ticket, key=key).matches                          # doctest: +SKIP
        True
    """
    if not text:
        raise SignatureError("The signature text is empty: pass the text to embed (e.g. 'alice 2026').")
    if copies is not None and copies < 1:
        raise SignatureError(f"copies must be at least 1, got {copies}.")
    if not 1 <= module_weights <= 9:
        raise SignatureError(f"module_weights must lie in 1..9, got {module_weights}.")
    if coding not in CODINGS:
        raise SignatureError(f"Unknown coding {coding!r}: use one of {CODINGS}.")
    arch = getattr(getattr(model, "config", None), "arch", type(model).__name__)
    key = key or OwnershipKey(arch=arch)
    if key.arch != str(arch).split(".")[0]:
        raise KeyMismatchError(f"The key belongs to architecture '{key.arch}', the model is a '{arch}'.")
    if SIGNATURE_SECTION in key.sections:  # before anything is written into the model
        raise KeyMismatchError("This key already holds a signature; a key signs one ticket. Start a new "
                               "OwnershipKey for this one.")
    t0 = time.perf_counter()
    section = _embed(model, text, secret=signature_secret(key), seed=seed, layers=layers, ecc=ecc, copies=copies,
                     module_weights=module_weights, coding=coding, rewind=rewind)
    kept = sum(int(m.sum()) for m in model.masks.values()) or 1
    moved = int(section["changes"].get("switched_on", 0)) + int(section["changes"].get("cleared_weights", 0))
    section["moved_share"] = round(moved / kept, 4)
    if moved > HEAVY_SIGNATURE_SHARE * kept:
        logger.warning(
            "The signature switched on or cleared %d weights, %.0f%% of the ticket's %d kept weights; retraining may "
            "not recover the accuracy (measured: -8.6 points at 1%% density, docs/RESULTS.md). At extreme density "
            "use copies=1 and module_weights=1, or a shorter text.", moved, 100 * moved / kept, kept)
    key = key.with_section(SIGNATURE_SECTION, SignatureSection.from_dict(section).to_dict())
    logger.info("Embedded a QR %s signature (%d copies) in %.3f s; changes %s", ecc, len(section["widths"]),
                time.perf_counter() - t0, section["changes"])
    return key


def _embed(model: nn.Module, text: str, *, secret: bytes, seed: int, layers: str, ecc: str, copies: int | None,
           module_weights: int, coding: str, rewind: nn.Module | Mapping[str, torch.Tensor] | None) -> dict[str, Any]:
    masks, params, rewind_sd = _prepare(model, rewind)
    shapes = {name: tuple(m.shape) for name, m in masks.items()}
    candidates = signature_stages(shapes, layers=layers)
    width = 2 if coding == "pairs" else 1  # auto: stages planned as for single, paired where they can
    cap_bytes, cap_version, cap_stage = keyed_capacity(shapes, ecc=ecc, layers=layers, width=width)
    if cap_stage is None:
        raise SignatureTooLargeError(
            f"No stage of this model can hold even a version-1 QR symbol ({qr.num_data_modules(1)} data modules, "
            f"{width} kernel(s) each) at <= {MAX_OCCUPANCY:.0%} of its candidate kernels; pass layers='all'"
            + (", coding='single'" if width > 1 else "") + " or sign a wider model.", max_chars=0)
    try:
        symbol = qr.encode(text, ecc=ecc)
    except qr.QRCapacityError as exc:
        symbol = None
        problem = str(exc)
    if symbol is None or symbol.version > cap_version:
        raise SignatureTooLargeError(
            f"Signature of {len(text.encode())} bytes does not fit: the largest capacity of this model is {cap_bytes} "
            f"bytes (QR version {cap_version}-{ecc} in stage '{cap_stage}'). Shorten the text or use a lower ecc "
            f"level{': ' + problem if symbol is None else ''}.", max_chars=cap_bytes)
    n = symbol.num_data_modules
    chosen = plan_stages(candidates, shapes, n * width, copies=copies)
    if copies is None:  # a stage's second copy only where the ticket can pay for it (not at extreme density)
        chosen = _affordable(masks, candidates, chosen, n * width, module_weights=module_weights)
    widths = ([2] * len(chosen) if coding == "pairs" else [1] * len(chosen) if coding == "single"
              else _auto_widths(masks, candidates, chosen, n, module_weights=module_weights))
    all_slots = derive_slots(secret, shapes, n, widths=widths, coding=coding, layers=layers)
    if [s.stage for s in all_slots] != chosen:  # pragma: no cover - invariant of plan_stages
        raise SignatureError("Internal error: the derived layout differs from the planned one.")
    gen = torch.Generator().manual_seed(seed)
    kept_before = {name: int(m.sum()) for name, m in masks.items()}
    new_masks = {name: m.detach().cpu().clone() for name, m in masks.items()}
    data_bits = symbol.data_bits()
    weights = {name: params[name].detach().cpu().clone() for name in dict.fromkeys(p for s in all_slots for p in s.params)}
    changes: dict[str, int] = {}
    protected: dict[str, torch.Tensor] = {}
    for c, (slots, w) in enumerate(zip(all_slots, widths, strict=True)):
        target = data_bits ^ whitening_stream(secret, c, n)  # True = kernel kept
        if w == 2:  # slot 2j holds the module, slot 2j + 1 its complement
            target = np.stack([target, ~target], axis=1).reshape(-1)
        for name, pos, kernels in slots.per_param():
            in_c = new_masks[name].shape[1]
            _add(changes, write_kernels(weights[name], new_masks[name], torch.from_numpy(kernels // in_c),
                                        torch.from_numpy(kernels % in_c), torch.from_numpy(target[pos]),
                                        rewind=rewind_sd.get(name) if rewind_sd is not None else None,
                                        gen=gen, module_weights=module_weights))
        for name, m in slots.kernel_maps(shapes).items():
            protected[name] = protected[name] | m if name in protected else m
    _add(changes, restore_kept_counts(params, weights, new_masks, kept_before, protected, rewind=rewind_sd, gen=gen))
    for name in weights:
        params[name].copy_(weights[name].to(params[name].device))
    if hasattr(model, "set_masks"):
        model.set_masks(new_masks)
    if sum(int(m.sum()) for m in new_masks.values()) != sum(kept_before.values()):  # pragma: no cover - invariant
        raise SignatureError("Internal error: embedding changed the total number of kept weights.")
    _warn_function_free(model, protected)
    return {"text": text, "widths": widths, "ecc": ecc, "coding": coding, "layers": layers,
            "module_weights": module_weights, "seed": seed, "signed_mask_digest": mask_digest(new_masks),
            "changes": changes, "layer_kept": {n: int(m.sum()) for n, m in new_masks.items()}}


def _warn_function_free(model: nn.Module, slots: Mapping[str, torch.Tensor]) -> None:
    """Warn when much of the signed ticket cannot influence its output (verification reads none of it)."""
    from ..liveness import dead_weights_warning

    config = getattr(model, "config", None)
    text = dead_weights_warning(getattr(model, "timm_model", model).state_dict(), marked=slots,
                                arch=str(getattr(config, "arch", "")).split(".")[0],
                                model_args=getattr(config, "model_args", None))
    if text:
        logger.warning("Signing: %s", text)


def _expected_moves(masks: MaskDict, params: Sequence[str], slots: int, module_weights: int) -> float:
    """Weights a copy of ``slots`` kernels is expected to move: half its kernels must be kept
    (switch on ``module_weights`` where empty), half cleared (all their kept weights)."""
    per_kernel = torch.cat([masks[p].reshape(masks[p].shape[0] * masks[p].shape[1], -1).sum(dim=1) for p in params])
    density = float((per_kernel > 0).double().mean())
    kept_per_kernel = float(per_kernel[per_kernel > 0].double().mean()) if density > 0 else 0.0
    return slots / 2 * ((1 - density) * module_weights + density * kept_per_kernel)


def _affordable(masks: MaskDict, candidates: Mapping[str, Sequence[str]], chosen: Sequence[str], n: int, *,
                module_weights: int) -> list[str]:
    """``chosen`` without the repeated-stage copies whose expected moves would pass the budget."""
    budget = HEAVY_SIGNATURE_SHARE * sum(int(m.sum()) for m in masks.values())
    kept: list[str] = []
    cost = 0.0
    for stage in chosen:
        extra = _expected_moves(masks, candidates[stage], n, module_weights)
        if stage in kept and cost + extra > budget:
            continue
        kept.append(stage)
        cost += extra
    return kept


def _auto_widths(masks: MaskDict, candidates: Mapping[str, Sequence[str]], chosen: Sequence[str], n: int, *,
                 module_weights: int) -> list[int]:
    """Pair every copy, in order, whose stage still holds ``2n`` more kernels at :data:`MAX_OCCUPANCY`
    (with its other copies), as long as the expected moves stay within
    :data:`HEAVY_SIGNATURE_SHARE` of the ticket (an extreme ticket has too few kept weights to
    pay for pairs; it keeps the single coding)."""
    budget = HEAVY_SIGNATURE_SHARE * sum(int(m.sum()) for m in masks.values())
    widths = [1] * len(chosen)
    used = {s: n * list(chosen).count(s) for s in chosen}
    cost = sum(_expected_moves(masks, candidates[s], n, module_weights) for s in chosen)
    for c, stage in enumerate(chosen):
        if used[stage] + n > MAX_OCCUPANCY * stage_kernels({p: masks[p].shape for p in candidates[stage]}, candidates[stage]):
            continue
        extra = _expected_moves(masks, candidates[stage], n, module_weights)  # a second kernel per module
        if cost + extra <= budget:
            widths[c], cost, used[stage] = 2, cost + extra, used[stage] + n
    return widths
