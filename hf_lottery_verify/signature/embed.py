"""Writing the signature into the mask with every kept-weight count unchanged (both layouts)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import qr
from ..errors import SignatureError, SignatureTooLargeError
from ..masks import MaskDict, squeeze_mask, timm_parameters
from ..ownership_key import SIGNATURE_SECTION, OwnershipKey, mask_digest
from .regions import candidate_layers, find_regions, signature_capacity
from .slots import draw_slots, keyed_capacity, plan_stages, signature_stages, stage_kernels
from .whitening import WHITENING, parse_secret, whitening_stream
from .writing import restore_kept_counts, write_kernels

__all__ = ["embed_signature", "LAYOUTS", "CODINGS"]

logger = logging.getLogger(__name__)

HEAVY_SIGNATURE_SHARE = 0.25
"""Share of a ticket's kept weights a signature may move (switch on or clear) before ``embed_signature`` warns."""

LAYOUTS = ("keyed", "regions")
"""``keyed``: whitened bits at keyed slots spread over stages (default). ``regions``: the
earlier contiguous windows of one layer, found by FFT search (kept so old keys and the
paper's exact Algorithm 2 stay available; a key-less window search finds them)."""
KEYED_LAYOUT_VERSION = 2
"""1: one kernel per data module (``coding="single"``); 2 adds the pair coding (``coding`` in the
section, ``width`` per copy)."""
CODINGS = ("auto", "pairs", "single")
"""Keyed layout: ``pairs`` writes each data module as two complementary kernels (one kept, one
pruned): pruning or add-on noise that flips one of them leaves an *erasure* (both kept or both
pruned), which Reed–Solomon corrects at half the cost of an error, instead of a wrong bit;
it takes twice the kernels. ``single``: one kernel per module (layout version 1). ``auto``:
the stages of the single coding, each copy paired where its stage holds the pairs at
``max_occupancy`` and single where not (e.g. ResNet-20's small ``layer1``, which magnitude
pruning spares most), copy by copy while the expected moves stay within
:data:`HEAVY_SIGNATURE_SHARE` of the ticket (an extreme ticket stays single); the section
says ``mixed`` when both occur."""


def _model_stages(model: nn.Module) -> list[str] | None:
    from ..architectures import stage_names

    net = getattr(model, "timm_model", model)
    names = stage_names(net)
    return names or None


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


def _encode(text: str, *, version: int | None, ecc: str, mask_pattern: int | None, max_bytes: int,
            where: str) -> qr.QRSymbol:
    try:
        return qr.encode(text, version=version, ecc=ecc, mask_pattern=mask_pattern)
    except qr.QRCapacityError as exc:
        raise SignatureTooLargeError(
            f"Signature of {len(text.encode())} bytes does not fit a QR symbol{f' of version {version}' if version else ''} "
            f"at ecc {ecc}: {exc} The largest capacity of this model is {max_bytes} bytes ({where}). Shorten the "
            "text or use a lower ecc level.", max_chars=max_bytes) from exc


def _finish(model: nn.Module, params: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor],
            new_masks: MaskDict, kept_before: Mapping[str, int], *, per_layer_exact: bool) -> None:
    for name in weights:
        params[name].copy_(weights[name].to(params[name].device))
    if hasattr(model, "set_masks"):
        model.set_masks(new_masks)
    if sum(int(m.sum()) for m in new_masks.values()) != sum(kept_before.values()):  # pragma: no cover - invariant
        raise SignatureError("Internal error: embedding changed the total number of kept weights.")
    if per_layer_exact and any(int(new_masks[n].sum()) != kept_before[n] for n in new_masks):  # pragma: no cover
        raise SignatureError("Internal error: embedding changed a layer's number of kept weights.")


def _common_fields(symbol: qr.QRSymbol, text: str, new_masks: MaskDict, params: Mapping[str, torch.Tensor],
                   changes: Mapping[str, int], **extra: Any) -> dict[str, Any]:
    data_bits = symbol.data_bits()
    layer_kept = {n: int(m.sum()) for n, m in new_masks.items()}
    min_mag = {n: float(params[n].detach().abs()[new_masks[n].to(params[n].device)].min())
               for n in new_masks if layer_kept[n]}
    return {
        "scheme": "V2",
        **extra,
        "text": text,
        "qr": {"version": symbol.version, "ecc": symbol.ecc, "mask_pattern": symbol.mask_pattern},
        "size": symbol.size,
        "data_bits": np.packbits(data_bits).tobytes().hex(),
        "num_data_modules": int(data_bits.size),
        "signed_mask_digest": mask_digest(new_masks),
        "layer_kept": layer_kept,
        "min_kept_magnitude": min_mag,
        "param_shapes": {n: list(m.shape) for n, m in new_masks.items()},
        "changes": dict(changes),
    }


def _add(total: dict[str, int], counts: Mapping[str, int]) -> None:
    for k, v in counts.items():
        total[k] = total.get(k, 0) + v


@torch.no_grad()
def embed_signature(
    model: nn.Module,
    text: str,
    *,
    secret: bytes | str | None = None,
    seed: int = 0,
    layout: str = "keyed",
    copies: int | None = None,
    module_weights: int = 2,
    ecc: str = "H",
    version: int | None = None,
    mask_pattern: int | None = None,
    layers: Sequence[str] | str | None = None,
    max_occupancy: float = 0.5,
    max_layer_share: float | None = None,
    polarity: str = "auto",
    coding: str = "auto",
    rewind: nn.Module | Mapping[str, torch.Tensor] | None = None,
    key: OwnershipKey | None = None,
) -> OwnershipKey:
    """Embed ``text`` as a keyed QR signature into the model's sparse mask, in place.

    Keyed layout (default): the QR symbol's data-module bits are XORed with a keyed stream
    (one per copy) and written to keyed pseudo-random kernels ("slots") of one stage per
    copy, spread over that stage's spatial convs; a 1 keeps the kernel (switching on
    ``module_weights`` seeded positions of an empty one), a 0 clears it — with the pair
    coding (default wherever a stage holds it) each module takes two kernels, the second the complement
    of the first, so that a flipped kernel shows as an erasure. Then every layer's
    kept count is restored exactly outside the slots. Without the secret the written bits
    look like noise and their positions are unknown; the key records the slots explicitly.

    Args:
        model (`nn.Module`): A :class:`~hf_lottery_verify.SparseResNetForImageClassification` with masks.
        text (`str`): The signature (e.g. an owner id and a date).
        secret (`bytes` or `str`, *optional*): The keyed layout's secret (bytes or hex, at
            least 16 bytes); 32 fresh random bytes when ``None``. Stored (hex) in the key.
        seed (`int`, *optional*, defaults to 0): Seed of the non-secret choices (which
            positions of a kernel are switched on, drawn values). Same secret, seed, model
            and text → bit-identical masks, weights and signature section.
        layout (`str`, *optional*, defaults to `"keyed"`): ``"keyed"`` or ``"regions"`` (the
            earlier contiguous windows; a key-less search finds them: use only for tests and
            the paper's exact Algorithm 2).
        copies (`int`, *optional*): Copies of the symbol. Keyed: ``None`` makes 3, one per
            stage that holds a copy at ``max_occupancy`` (earliest first) and, with only two
            such stages, a second one in the roomier stage on kernels of its own while the
            ticket can pay for it; copies never all share one stage. Regions:
            non-overlapping windows, ``None`` = 2.
        module_weights (`int`, *optional*, defaults to 2): Minimum kept weights of a kernel
            that encodes a 1 (1 = the paper's); 2 resists random pruning and add-on noise.
        ecc (`str`, *optional*, defaults to `"H"`): QR error-correction level.
        version (`int`, *optional*): QR version; the smallest that fits when ``None``.
        mask_pattern (`int`, *optional*): QR mask pattern; the encoder's choice when ``None``.
        layers (`Sequence[str]` or `str`, *optional*): Candidate layers. Keyed: ``None`` (the
            spatial convs of every stage), ``"all"`` (1×1 convs too) or a list of names.
            Regions: see :func:`~hf_lottery_verify.signature.candidate_layers`.
        max_occupancy (`float`, *optional*, defaults to 0.5): Keyed: largest share of a
            stage's kernels one copy may occupy.
        max_layer_share (`float`, *optional*): Keyed: largest share of a copy one layer may
            hold (``None``: slots fall on layers in proportion to their size).
        polarity (`str`, *optional*, defaults to `"auto"`): Regions only (``auto``,
            ``dark_kept``, ``dark_pruned``); whitening makes it moot for the keyed layout.
        rewind (`nn.Module` or `Mapping[str, torch.Tensor]`, *optional*): Rewind weights
            ``W_k`` (model or timm-named state dict): values of switched-on weights.
        key (`OwnershipKey`, *optional*): An existing key to add the ``signature`` section to.

    Returns:
        The :class:`OwnershipKey` with its ``signature`` section (and slot tensors) filled.

    Raises:
        SignatureTooLargeError: ``text`` does not fit; the message names the largest capacity.
        SignatureError: The model has no masks or nothing pruned, bad options, or fewer
            stages than ``copies`` can hold a copy.

    Example:
        >>> key = embed_signature(ticket, "alice 2026", rewind=rewind_weights)   # doctest: +SKIP
        >>> extract_signature(ticket, key).matches                              # doctest: +SKIP
        True
    """
    if layout not in LAYOUTS:
        raise SignatureError(f"Unknown signature layout {layout!r}: use one of {LAYOUTS}.")
    if polarity not in ("auto", "dark_kept", "dark_pruned"):
        raise SignatureError(f"Unknown polarity {polarity!r}: use 'auto', 'dark_kept' or 'dark_pruned'.")
    if copies is not None and copies < 1:
        raise SignatureError(f"copies must be at least 1, got {copies}.")
    if module_weights < 1:
        raise SignatureError(f"module_weights must be at least 1, got {module_weights}.")
    if coding not in CODINGS:
        raise SignatureError(f"Unknown coding {coding!r}: use one of {CODINGS}.")
    t0 = time.perf_counter()
    if layout == "regions":
        section, tensors = _embed_regions(model, text, seed=seed, layers=layers, ecc=ecc, version=version,
                                          mask_pattern=mask_pattern, copies=2 if copies is None else copies,
                                          module_weights=module_weights, polarity=polarity, rewind=rewind)
    else:
        if not 0 < max_occupancy <= 1:
            raise SignatureError(f"max_occupancy must lie in (0, 1], got {max_occupancy}.")
        section, tensors = _embed_keyed(model, text, secret=parse_secret(secret), seed=seed, layers=layers, ecc=ecc,
                                        version=version, mask_pattern=mask_pattern, copies=copies,
                                        module_weights=module_weights, max_occupancy=max_occupancy,
                                        max_layer_share=max_layer_share, coding=coding, rewind=rewind)
    kept = sum(int(m.sum()) for m in model.masks.values()) or 1
    moved = int(section["changes"].get("switched_on", 0)) + int(section["changes"].get("cleared_weights", 0))
    section["moved_share"] = round(moved / kept, 4)
    if moved > HEAVY_SIGNATURE_SHARE * kept:
        logger.warning(
            "The signature switched on or cleared %d weights, %.0f%% of the ticket's %d kept weights; retraining may "
            "not recover the accuracy (measured: -8.6 points at 1%% density, docs/RESULTS.md). At extreme density "
            "use copies=1 and module_weights=1, or a shorter text.", moved, 100 * moved / kept, kept)
    key = key or OwnershipKey(arch=getattr(getattr(model, "config", None), "arch", type(model).__name__))
    key.set_section(SIGNATURE_SECTION, section, tensors=tensors)
    logger.info("Embedded a %s QR v%d-%s signature (%d copies) in %.3f s; changes %s", layout,
                section["qr"]["version"], ecc, len(section["regions"]), time.perf_counter() - t0, section["changes"])
    return key


def _embed_keyed(model: nn.Module, text: str, *, secret: bytes, seed: int, layers: Sequence[str] | str | None,
                 ecc: str, version: int | None, mask_pattern: int | None, copies: int | None, module_weights: int,
                 max_occupancy: float, max_layer_share: float | None, coding: str,
                 rewind: nn.Module | Mapping[str, torch.Tensor] | None
                 ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    masks, params, rewind_sd = _prepare(model, rewind)
    stages = _model_stages(model)
    candidates = signature_stages(masks, layers=layers, stages=stages)
    width = 2 if coding == "pairs" else 1  # auto: stages planned as for single, paired where they can
    cap_bytes, cap_version, cap_stage = keyed_capacity(masks, ecc=ecc, layers=layers, stages=stages,
                                                        max_occupancy=max_occupancy, width=width)
    if cap_stage is None:
        raise SignatureTooLargeError(
            f"No stage of this model can hold even a version-1 QR symbol ({qr.num_data_modules(1)} data modules, "
            f"{width} kernel(s) each) at <= {max_occupancy:.0%} of its candidate kernels; pass layers='all', a higher "
            "max_occupancy" + (", coding='single'" if width > 1 else "") + " or sign a wider model.", max_chars=0)
    where = f"QR version {cap_version}-{ecc} in stage '{cap_stage}' at <= {max_occupancy:.0%} of its kernels"
    symbol = _encode(text, version=version, ecc=ecc, mask_pattern=mask_pattern, max_bytes=cap_bytes, where=where)
    n = symbol.num_data_modules
    if symbol.version > cap_version:
        raise SignatureTooLargeError(
            f"Signature of {len(text.encode())} bytes needs QR version {symbol.version}-{ecc} ({n} data modules); "
            f"the largest capacity available is {cap_bytes} bytes ({where}). Shorten the text, use a lower ecc "
            "level, or raise max_occupancy.", max_chars=cap_bytes)
    chosen = plan_stages(candidates, masks, n * width, copies=copies, max_occupancy=max_occupancy)
    if copies is None:  # a stage's second copy only where the ticket can pay for it (not at extreme density)
        chosen = _affordable(masks, candidates, chosen, n * width, module_weights=module_weights)
    widths = ([2] * len(chosen) if coding == "pairs" else [1] * len(chosen) if coding == "single"
              else _auto_widths(masks, candidates, chosen, n, max_occupancy=max_occupancy,
                                module_weights=module_weights))
    gen = torch.Generator().manual_seed(seed)
    kept_before = {name: int(m.sum()) for name, m in masks.items()}
    new_masks = {name: m.detach().cpu().clone() for name, m in masks.items()}
    data_bits = symbol.data_bits()
    shapes = {name: tuple(m.shape) for name, m in masks.items()}
    all_slots: list = []
    for c, (stage, w) in enumerate(zip(chosen, widths, strict=True)):  # a stage's later copies avoid its earlier ones
        all_slots.append(draw_slots(secret, shapes, stage, candidates[stage], n * w, c,
                                    max_layer_share=max_layer_share, taken=all_slots))
    written = list(dict.fromkeys(name for s in all_slots for name in s.params))
    weights = {name: params[name].detach().cpu().clone() for name in written}
    changes: dict[str, int] = {}
    records, tensors = [], {}
    protected: dict[str, torch.Tensor] = {}
    for c, (slots, width) in enumerate(zip(all_slots, widths, strict=True)):
        target = data_bits ^ whitening_stream(secret, c, n)  # True = kernel kept
        if width == 2:  # slot 2j holds the module, slot 2j + 1 its complement
            target = np.stack([target, ~target], axis=1).reshape(-1)
        changed = np.zeros(n * width, dtype=bool)
        per_param = {}
        for name, pos, kernels in slots.per_param():
            in_c = new_masks[name].shape[1]
            o = torch.from_numpy(kernels // in_c)
            i = torch.from_numpy(kernels % in_c)
            want = torch.from_numpy(target[pos])
            before = new_masks[name][o, i].reshape(len(pos), -1).any(dim=1).numpy()
            changed[pos] = before != target[pos]
            _add(changes, write_kernels(weights[name], new_masks[name], o, i, want,
                                        rewind=rewind_sd.get(name) if rewind_sd is not None else None,
                                        gen=gen, module_weights=module_weights))
            per_param[name] = int(pos.size)
        for name, m in slots.kernel_maps({p: new_masks[p].shape for p in slots.params}).items():
            protected[name] = protected[name] | m if name in protected else m
        changed = changed.reshape(n, width).any(axis=1)  # a module changed when any of its kernels did
        records.append({"copy": c, "stage": slots.stage, "width": width, "params": list(slots.params), "slots": len(slots),
                        "per_param": per_param, "changed": int(changed.sum()),
                        "changed_bits": np.packbits(changed).tobytes().hex()})
        tensors.update(slots.to_tensors(c))
    _add(changes, restore_kept_counts(params, weights, new_masks, kept_before, protected, rewind=rewind_sd, gen=gen))
    _finish(model, params, weights, new_masks, kept_before, per_layer_exact="compensated_elsewhere" not in changes)
    section = _common_fields(
        symbol, text, new_masks, params, changes, layout="keyed", layout_version=KEYED_LAYOUT_VERSION,
        secret=secret.hex(), whitening=WHITENING, coding={(1,): "single", (2,): "pairs"}.get(tuple(set(widths)), "mixed"),
        seed=seed, copies=len(records),
        module_weights=module_weights,
        max_occupancy=max_occupancy, max_layer_share=max_layer_share)
    section["regions"] = records
    return section, tensors


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
                 max_occupancy: float, module_weights: int) -> list[int]:
    """Pair every copy, in order, whose stage still holds ``2n`` more kernels at ``max_occupancy``
    (with its other copies), as long as the expected moves stay within
    :data:`HEAVY_SIGNATURE_SHARE` of the ticket (an extreme ticket has too few kept weights to
    pay for pairs; it keeps the single coding)."""
    budget = HEAVY_SIGNATURE_SHARE * sum(int(m.sum()) for m in masks.values())
    widths = [1] * len(chosen)
    used = {s: n * list(chosen).count(s) for s in chosen}
    cost = sum(_expected_moves(masks, candidates[s], n, module_weights) for s in chosen)
    for c, stage in enumerate(chosen):
        if used[stage] + n > max_occupancy * stage_kernels(masks, candidates[stage]):
            continue
        extra = _expected_moves(masks, candidates[stage], n, module_weights)  # a second kernel per module
        if cost + extra <= budget:
            widths[c], cost, used[stage] = 2, cost + extra, used[stage] + n
    return widths


def _embed_regions(model: nn.Module, text: str, *, seed: int, layers: Sequence[str] | str | None, ecc: str,
                   version: int | None, mask_pattern: int | None, copies: int, module_weights: int, polarity: str,
                   rewind: nn.Module | Mapping[str, torch.Tensor] | None
                   ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The earlier layout: contiguous windows of one layer found by FFT search (Algorithm 2 with copies)."""
    masks, params, rewind_sd = _prepare(model, rewind)
    cap_bytes, cap_version, cap_layer = signature_capacity(masks, ecc=ecc, layers=layers, layout="regions")
    if cap_layer is None:
        raise SignatureTooLargeError("No candidate conv layer can hold even a version-1 QR symbol (21×21 kernels); "
                                     "pass layers='all' or sign a wider model.", max_chars=0)
    where = f"QR version {cap_version}-{ecc} in '{cap_layer}'" + ("" if layers == "all" else
                                                                   "; layers='all' considers every layer")
    symbol = _encode(text, version=version, ecc=ecc, mask_pattern=mask_pattern, max_bytes=cap_bytes, where=where)
    try:
        fits = bool(candidate_layers(masks, symbol.size, layers=layers))
    except SignatureError:
        fits = False
    if not fits:
        raise SignatureTooLargeError(
            f"Signature of {len(text.encode())} bytes does not fit: the largest capacity available is {cap_bytes} "
            f"bytes ({where}). Shorten the text or use a lower ecc level.", max_chars=cap_bytes)
    regions = find_regions(masks, symbol, layers=layers, copies=copies, polarity=polarity)
    gen = torch.Generator().manual_seed(seed)
    kept_before = {n: int(m.sum()) for n, m in masks.items()}
    changes: dict[str, int] = {}
    new_masks = {n: m.detach().cpu().clone() for n, m in masks.items()}
    weights = {n: params[n].detach().cpu().clone() for n in dict.fromkeys(r.param for r in regions)}
    protected: dict[str, torch.Tensor] = {}
    records = []
    rows, cols = np.nonzero(symbol.data_map)
    for region in regions:
        target = ~symbol.modules if region.inverted else symbol.modules
        before = squeeze_mask(new_masks[region.param])[region.row: region.row + symbol.size,
                                                       region.col: region.col + symbol.size].numpy()
        changed = (before != target)[symbol.data_map]
        records.append({**asdict(region), "changed_bits": np.packbits(changed).tobytes().hex(),
                        "changed": int(changed.sum())})
        o, i = torch.from_numpy(rows + region.row), torch.from_numpy(cols + region.col)
        _add(changes, write_kernels(weights[region.param], new_masks[region.param], o, i,
                                    torch.from_numpy(target[rows, cols]),
                                    rewind=rewind_sd[region.param] if rewind_sd is not None else None,
                                    gen=gen, module_weights=module_weights))
        shape = new_masks[region.param].shape
        inside = protected.get(region.param, torch.zeros(shape[0], shape[1], dtype=torch.bool))
        inside[region.row: region.row + region.size, region.col: region.col + region.size] = True
        protected[region.param] = inside
    _add(changes, restore_kept_counts(params, weights, new_masks, kept_before, protected, rewind=rewind_sd, gen=gen))
    _finish(model, params, weights, new_masks, kept_before, per_layer_exact="compensated_elsewhere" not in changes)
    section = _common_fields(symbol, text, new_masks, params, changes, layout="regions", seed=seed, copies=copies,
                             module_weights=module_weights)
    section["regions"] = records
    return section, {}

