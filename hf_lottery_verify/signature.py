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
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from . import qr
from .attacks import addon_defense
from .errors import KeyMismatchError, SignatureError, SignatureTooLargeError
from .masks import MaskDict, squeeze_mask, top_k_mask
from .ownership_key import OwnershipKey, mask_digest
from .stats import module_agreement_p_value

__all__ = [
    "SIGNATURE_SECTION",
    "Region",
    "SignatureEvidence",
    "candidate_layers",
    "region_agreement",
    "find_regions",
    "embed_signature",
    "extract_signature",
    "read_suspect_weights",
    "signature_capacity",
]

logger = logging.getLogger(__name__)

SIGNATURE_SECTION = "signature"


@dataclass(frozen=True)
class Region:
    """Where one copy of the symbol lives: rows ``row..row+size`` (output channels) and
    columns ``col..col+size`` (input channels) of the squeezed mask of ``param``."""

    param: str
    row: int
    col: int
    size: int
    agreement: float = 0.0
    inverted: bool = False

    def overlaps(self, other: Region) -> bool:
        return (self.param == other.param and self.row < other.row + other.size and other.row < self.row + self.size
                and self.col < other.col + other.size and other.col < self.col + self.size)


# --------------------------------------------------------------------------- candidates and search


def _stage_of(name: str) -> int:
    head = name.split(".", 1)[0]
    return int(head[5:]) if head.startswith("layer") and head[5:].isdigit() else 0


def candidate_layers(
    masks: Mapping[str, torch.Tensor],
    size: int,
    *,
    layers: Sequence[str] | str | None = None,
) -> list[str]:
    """Masked conv weights that can hold a ``size × size`` symbol.

    Args:
        masks: The ticket's masks.
        size: Symbol side in modules.
        layers: ``None`` (default): the spatial (k×k, k > 1) convs of the earliest stage
            that has any large enough — the paper's "low-level layers"; ``"all"``: every
            masked conv large enough; or an explicit list of parameter names.

    Returns:
        Parameter names in network order.

    Raises:
        SignatureError: An explicitly named layer is unknown or too small.
    """
    fits = {n: m for n, m in masks.items() if m.dim() == 4 and m.shape[0] >= size and m.shape[1] >= size}
    if isinstance(layers, str) and layers != "all":
        layers = [layers]
    if isinstance(layers, (list, tuple)):
        for name in layers:
            if name not in masks:
                raise SignatureError(f"'{name}' is not a masked parameter of this model.")
            if name not in fits:
                raise SignatureError(f"'{name}' (squeezed {tuple(masks[name].shape[:2])}) cannot hold a "
                                     f"{size}×{size} symbol.")
        return list(layers)
    if layers == "all":
        return list(fits)
    spatial = [n for n, m in fits.items() if m.shape[-1] > 1 or m.shape[-2] > 1]
    if not spatial:
        return list(fits)
    first = min(_stage_of(n) for n in spatial)
    return [n for n in spatial if _stage_of(n) == first]


@functools.lru_cache(maxsize=64)
def _kernel_spectrum(target_bytes: bytes, data_bytes: bytes, s: int, out_c: int, in_c: int
                     ) -> tuple[torch.Tensor, float]:
    target = np.frombuffer(target_bytes, dtype=bool).reshape(s, s)
    data = np.frombuffer(data_bytes, dtype=bool).reshape(s, s)
    d = torch.from_numpy(data.astype(np.float64))
    t = torch.from_numpy(target.astype(np.float64))
    kernel = d * (2 * t - 1)  # +1 where a kept kernel agrees, -1 where it disagrees
    base = float((d * (1 - t)).sum())  # agreement of an all-pruned window
    return torch.fft.rfft2(kernel.float(), s=(out_c, in_c)).conj(), base


def region_agreement(squeezed: torch.Tensor, target: np.ndarray, data: np.ndarray) -> torch.Tensor:
    """Agreeing data modules for every placement of ``target`` in ``squeezed`` (FFT correlation).

    Args:
        squeezed: 2-D boolean kernel mask ``(out, in)``.
        target: ``size × size`` target bits (True = kept).
        data: ``size × size`` map of data modules (function patterns are not counted).

    Returns:
        ``(out − size + 1) × (in − size + 1)`` float32 tensor of agreement counts. The
        opposite polarity's counts are ``data.sum()`` minus these. float32 FFT round-off is
        below 0.05 here (inputs are 0/±1 and at most ~4k data modules), far from the 0.5
        that rounding needs; :func:`find_regions` recounts the chosen windows exactly.
    """
    corr, base = _correlation(squeezed, target, data)
    return (corr + base).round()


def _correlation(squeezed: torch.Tensor, target: np.ndarray, data: np.ndarray) -> tuple[torch.Tensor, float]:
    """Un-rounded agreement map without its constant offset (``agreement = map + base``)."""
    out_c, in_c = squeezed.shape
    s = target.shape[0]
    spectrum, base = _kernel_spectrum(np.ascontiguousarray(target, dtype=bool).tobytes(),
                                      np.ascontiguousarray(data, dtype=bool).tobytes(), s, out_c, in_c)
    # circular correlation of size (out, in) equals the valid correlation for offsets that do not wrap
    spec = torch.fft.rfft2(squeezed.to(torch.float32).cpu())
    spec.mul_(spectrum)
    corr = torch.fft.irfft2(spec, s=(out_c, in_c))
    return corr[: out_c - s + 1, : in_c - s + 1], base


def _max_window_count(squeezed: torch.Tensor, s: int) -> int:
    """Most kept kernels in any ``s × s`` window (summed-area table, O(out·in))."""
    c = torch.nn.functional.pad(squeezed.to(torch.int32).cumsum(0).cumsum(1), (1, 0, 1, 0))
    win = c[s:, s:] - c[:-s, s:] - c[s:, :-s] + c[:-s, :-s]
    return int(win.max())


def find_regions(
    masks: Mapping[str, torch.Tensor],
    symbol: qr.QRSymbol,
    *,
    layers: Sequence[str] | str | None = None,
    copies: int = 1,
    polarity: str = "auto",
) -> list[Region]:
    """Best non-overlapping placements of ``symbol`` (most agreeing data modules first).

    Args:
        masks: The ticket's masks.
        symbol: The QR symbol.
        layers: Candidate layers (see :func:`candidate_layers`).
        copies: Number of regions to return.
        polarity: ``"auto"`` (best of both), ``"dark_kept"`` or ``"dark_pruned"``.

    Returns:
        ``copies`` regions, best first. All copies share one polarity, so that extraction
        can combine them module by module.

    Raises:
        SignatureTooLargeError: No candidate layer can hold the symbol.
        SignatureError: Fewer than ``copies`` non-overlapping regions exist.
    """
    if polarity == "auto" and copies > 1:
        options_found = []
        for pol in ("dark_kept", "dark_pruned"):
            try:
                options_found.append(find_regions(masks, symbol, layers=layers, copies=copies, polarity=pol))
            except SignatureError:
                continue
        if not options_found:
            raise SignatureError(f"Fewer than {copies} non-overlapping regions fit; lower copies.")
        return max(options_found, key=lambda regions: sum(r.agreement for r in regions))
    names = candidate_layers(masks, symbol.size, layers=layers)
    if not names:
        raise SignatureTooLargeError(
            f"No masked conv layer can hold a {symbol.size}×{symbol.size} QR symbol (version {symbol.version}).")
    data = symbol.data_map
    n_data = int(data.sum())
    options = {"auto": (False, True), "dark_kept": (False,), "dark_pruned": (True,)}[polarity]
    s = symbol.size
    order = {n: i for i, n in enumerate(names)}
    squeezed = {n: squeeze_mask(masks[n]) for n in names}
    # Agreement of the all-pruned window per polarity; each kept kernel in a window adds at
    # most 1, so base + (most kept kernels in any window) bounds a layer's best agreement.
    # Layers whose bound cannot beat the best so far skip the FFT entirely.
    base_kept = float((data & ~symbol.modules).sum())  # dark = kept: pruned modules agree where light
    bases = {False: base_kept, True: n_data - base_kept}
    bounds = {n: max(bases[inv] for inv in options) + _max_window_count(squeezed[n], s) for n in names}
    maps: dict[str, torch.Tensor] = {}
    base = 0.0
    chosen: list[Region] = []
    while len(chosen) < copies:
        best: Region | None = None
        for name in sorted(names, key=lambda n: (-bounds[n], order[n])):
            if best is not None and (bounds[name], -order[name]) <= (best.agreement, -order[best.param]):
                continue  # cannot beat (or tie earlier than) the best region found so far
            if name not in maps:
                maps[name], base = _correlation(squeezed[name], symbol.modules, data)
            agree = maps[name]
            taken = [r for r in chosen if r.param == name]
            for inverted in options:  # the inverted symbol agrees exactly where the symbol does not
                a = agree
                if taken:  # forbid windows overlapping an already chosen region in this layer
                    a = agree.clone()
                    for r in taken:
                        a[max(0, r.row - s + 1): r.row + s, max(0, r.col - s + 1): r.col + s] = (
                            math.inf if inverted else -math.inf)
                flat = int(torch.argmin(a) if inverted else torch.argmax(a))  # first extreme: deterministic
                row, col = divmod(flat, a.shape[1])
                value = float(a[row, col])
                if not math.isfinite(value):
                    continue
                value = round(n_data - (value + base) if inverted else value + base)
                if best is None or (value, -order[name]) > (best.agreement, -order[best.param]):
                    best = Region(name, row, col, s, value, inverted)
        if best is None:
            raise SignatureError(f"Only {len(chosen)} non-overlapping regions fit; lower copies.")
        chosen.append(best)
    # exact recount of the chosen windows (the FFT ran in float32)
    out = []
    for r in chosen:
        window = squeeze_mask(masks[r.param])[r.row: r.row + s, r.col: r.col + s].numpy()
        target = ~symbol.modules if r.inverted else symbol.modules
        exact = int((window == target)[data].sum())
        out.append(Region(r.param, r.row, r.col, s, exact / n_data, r.inverted))
    return out


def signature_capacity(masks: Mapping[str, torch.Tensor], *, ecc: str = "H",
                       layers: Sequence[str] | str | None = None) -> tuple[int, int, str | None]:
    """Largest byte-mode payload the candidate layers can carry.

    Args:
        masks: The ticket's masks.
        ecc: QR error-correction level.
        layers: Candidate layers (see :func:`candidate_layers`).

    Returns:
        ``(max_bytes, version, layer)``; ``(0, 0, None)`` when not even version 1 fits.
    """
    for v in range(40, 0, -1):
        try:
            names = candidate_layers(masks, qr.symbol_size(v), layers=layers)
        except SignatureError:
            continue
        if names:
            return qr.capacity(v, ecc), v, names[0]
    return 0, 0, None


# --------------------------------------------------------------------------- embedding


def _draw_like(kept_values: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` values drawn from the layer's kept weights (empirical distribution, random sign)."""
    if kept_values.numel() == 0:
        return torch.full((n,), 1e-2) * (torch.randint(0, 2, (n,), generator=gen) * 2 - 1)
    idx = torch.randint(0, kept_values.numel(), (n,), generator=gen)
    sign = torch.randint(0, 2, (n,), generator=gen) * 2 - 1
    return kept_values[idx].abs() * sign


def _region_kernel_mask(shape: torch.Size, regions: Sequence[Region], name: str) -> torch.Tensor:
    inside = torch.zeros(shape[0], shape[1], dtype=torch.bool)
    for r in regions:
        if r.param == name:
            inside[r.row: r.row + r.size, r.col: r.col + r.size] = True
    return inside


def _write_region(weight: torch.Tensor, mask: torch.Tensor, region: Region, target: np.ndarray, data: np.ndarray,
                  *, rewind: torch.Tensor | None, gen: torch.Generator, module_weights: int = 1) -> dict[str, int]:
    """Write the data modules of one region in place; returns change counts.

    A 0 clears its kernel. A 1 over an empty kernel switches on one seeded position; with
    ``module_weights > 1`` every 1-kernel is topped up to that many kept weights, so that
    pruning must remove all of them to flip the module.
    """
    rows, cols = np.nonzero(data)
    o = torch.from_numpy(rows + region.row)
    i = torch.from_numpy(cols + region.col)
    want = torch.from_numpy(target[rows, cols])
    kernels = mask[o, i].reshape(len(o), -1)  # (n_data, kh*kw)
    have = kernels.any(dim=1)
    kk = kernels.shape[1]
    # 0 over a kept kernel: clear it
    clear = have & ~want
    cleared_weights = int(kernels[clear].sum())
    mask[o[clear], i[clear]] = False
    weight[o[clear], i[clear]] = 0.0
    # 1 over a kernel with fewer than `need` kept weights: switch on seeded positions
    need = max(1, min(module_weights, kk))
    counts = kernels.sum(dim=1)
    short = want & (counts < need)
    n_short = int(short.sum())
    switched = 0
    if n_short:
        rows_k = kernels[short]  # (n_short, kk)
        scores = torch.rand(rows_k.shape, generator=gen).masked_fill(rows_k, -1.0)
        rank = torch.argsort(torch.argsort(scores, dim=1, descending=True), dim=1)
        pick = (rank < (need - counts[short])[:, None]) & ~rows_k
        r_idx, pos = torch.nonzero(pick, as_tuple=True)
        oo, ii = o[short][r_idx], i[short][r_idx]
        kw = weight.shape[3]
        py, px = pos // kw, pos % kw
        values = _draw_like(weight[mask], len(pos), gen).to(weight.dtype)
        if rewind is not None:
            from_rewind = rewind[oo, ii, py, px].to(weight.dtype)
            values = torch.where(from_rewind != 0, from_rewind, values)
        mask[oo, ii, py, px] = True
        weight[oo, ii, py, px] = values
        switched = len(pos)
    return {"switched_on": switched, "filled_kernels": int((~have & want).sum()), "cleared_kernels": int(clear.sum()),
            "cleared_weights": cleared_weights}


def _rebalance(weights: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor],
               eligible: Mapping[str, torch.Tensor], delta: int, *, rewind: Mapping[str, torch.Tensor] | None,
               gen: torch.Generator) -> int:
    """Undo a kept-count change of ``delta`` over the eligible positions of several layers.

    ``delta > 0``: prune the ``delta`` smallest-magnitude eligible kept weights.
    ``delta < 0``: switch on ``-delta`` eligible pruned positions, largest rewind magnitude
    first (seeded random without rewind weights), with rewind or drawn values.
    Works in place on ``weights``/``masks``; returns how many positions it changed (it
    does at most what the eligible positions allow).
    """
    names = list(eligible)
    if delta == 0 or not names:
        return 0
    if delta > 0:
        flat = torch.cat([weights[n].abs().double().masked_fill(~(masks[n] & eligible[n]), math.inf).reshape(-1)
                          for n in names])
        k = min(delta, int(torch.isfinite(flat).sum()))
        chosen = top_k_mask((-flat).masked_fill(~torch.isfinite(flat), -math.inf), k)
    else:
        parts = []
        for n in names:
            free = ~masks[n] & eligible[n]
            score = (rewind[n].abs().double() if rewind is not None else torch.zeros(masks[n].shape, dtype=torch.float64))
            score = score + torch.rand(masks[n].shape, generator=gen, dtype=torch.float64) * 1e-12
            parts.append(score.masked_fill(~free, -math.inf).reshape(-1))
        flat = torch.cat(parts)
        k = min(-delta, int((flat > -math.inf).sum()))
        chosen = top_k_mask(flat, k)
    start = 0
    for n in names:
        numel = masks[n].numel()
        pick = chosen[start: start + numel].view_as(masks[n])
        start += numel
        if not bool(pick.any()):
            continue
        if delta > 0:
            masks[n][pick] = False
            weights[n][pick] = 0.0
        else:
            values = _draw_like(weights[n][masks[n]], int(pick.sum()), gen).to(weights[n].dtype)
            if rewind is not None:
                r = rewind[n][pick].to(weights[n].dtype)
                values = torch.where(r != 0, r, values)
            masks[n][pick] = True
            weights[n][pick] = values
    return k


def _timm_params(model: nn.Module) -> dict[str, torch.Tensor]:
    if hasattr(model, "timm_parameters"):
        return model.timm_parameters()
    return dict(model.named_parameters())


@torch.no_grad()
def embed_signature(
    model: nn.Module,
    text: str,
    *,
    seed: int = 0,
    layers: Sequence[str] | str | None = None,
    ecc: str = "H",
    version: int | None = None,
    mask_pattern: int | None = None,
    copies: int = 2,
    module_weights: int = 2,
    polarity: str = "auto",
    rewind: nn.Module | Mapping[str, torch.Tensor] | None = None,
    key: OwnershipKey | None = None,
) -> OwnershipKey:
    """Embed ``text`` as a QR code into the model's sparse mask (Algorithm 2), in place.

    Args:
        model: A :class:`~hf_lottery_verify.SparseResNetForImageClassification` with masks.
        text: The signature (e.g. an owner id and a date).
        seed: Seed for switched-on positions and drawn values; same seed → same masks and key.
        layers: Candidate layers: ``None`` (low-level convs), ``"all"`` or a list of names.
        ecc: QR error-correction level (``H`` recovers the most damage).
        version: QR version; the smallest that fits when ``None``.
        mask_pattern: QR mask pattern; the encoder's choice when ``None``.
        copies: Non-overlapping copies of the symbol, in different layers when possible. The
            paper writes one; two copies let extraction combine them ("kept in any copy"
            undoes pruning, disagreements become erasures), which on a retrained ticket
            moved decoding from failing at 20% one-shot magnitude pruning to succeeding at
            50% (bench/qr_robustness.py).
        module_weights: Minimum kept weights in a kernel that encodes a 1 (the paper: 1);
            2 makes random pruning and add-on noise less likely to flip a module.
            ``copies=1, module_weights=1`` is the paper's Algorithm 2 exactly.
        polarity: ``auto``, ``dark_kept`` or ``dark_pruned``.
        rewind: Rewind weights ``W_k`` (model or state dict with timm names): values for
            switched-on weights, so that retraining from ``W_k`` starts from real weights.
        key: An existing key to add the ``signature`` section to.

    Returns:
        The :class:`OwnershipKey` with its ``signature`` section filled.

    Raises:
        SignatureTooLargeError: ``text`` does not fit any candidate layer; the message names
            the largest capacity available.
        SignatureError: The model has no masks, or the regions cannot be rebalanced.
    """
    t0 = time.perf_counter()
    masks: MaskDict = dict(getattr(model, "masks", {}) or {})
    if not masks:
        raise SignatureError("The model has no masks: prune it (model.prune_ or find-ticket) before signing.")
    cap_bytes, cap_version, cap_layer = signature_capacity(masks, ecc=ecc, layers=layers)
    if cap_layer is None:
        raise SignatureTooLargeError("No candidate conv layer can hold even a version-1 QR symbol (21×21 kernels); "
                                     "pass layers='all' or sign a wider model.", max_chars=0)
    where = f"QR version {cap_version}-{ecc} in '{cap_layer}'"
    hint = "" if layers == "all" else "; layers='all' considers every layer"
    try:
        symbol = qr.encode(text, version=version, ecc=ecc, mask_pattern=mask_pattern)
        fits = bool(candidate_layers(masks, symbol.size, layers=layers))
    except (qr.QRCapacityError, SignatureError):
        symbol, fits = None, False
    if not fits:
        raise SignatureTooLargeError(
            f"Signature of {len(text.encode())} bytes does not fit: the largest capacity available is {cap_bytes} "
            f"bytes ({where}{hint}). Shorten the text or use a lower ecc level.", max_chars=cap_bytes)
    assert symbol is not None
    regions = find_regions(masks, symbol, layers=layers, copies=copies, polarity=polarity)
    params = _timm_params(model)
    rewind_sd = None
    if rewind is not None:
        rewind_sd = rewind.timm_model.state_dict() if hasattr(rewind, "timm_model") else dict(rewind)
    gen = torch.Generator().manual_seed(seed)
    kept_before = {n: int(m.sum()) for n, m in masks.items()}
    changes: dict[str, int] = {}
    new_masks = {n: m.detach().cpu().clone() for n, m in masks.items()}
    weights = {n: params[n].detach().cpu().clone() for n in {r.param for r in regions}}
    for region in regions:
        target = ~symbol.modules if region.inverted else symbol.modules
        rw = rewind_sd[region.param].cpu() if rewind_sd is not None else None
        c = _write_region(weights[region.param], new_masks[region.param], region, target, symbol.data_map,
                          rewind=rw, gen=gen, module_weights=module_weights)
        for k, v in c.items():
            changes[k] = changes.get(k, 0) + v
    # Keep the kept count unchanged: first inside each signed layer (outside every region),
    # then, if a layer has no room left, across all masked layers outside the regions.
    rewind_cpu = {n: t.cpu() for n, t in rewind_sd.items()} if rewind_sd is not None else None
    outside = {n: (~_region_kernel_mask(m.shape, regions, n))[:, :, None, None].expand_as(m).clone()
               if m.dim() == 4 else torch.ones_like(m) for n, m in new_masks.items()}
    remainder = 0
    for name in list(weights):
        delta = int(new_masks[name].sum()) - kept_before[name]
        done = _rebalance({name: weights[name]}, new_masks, {name: outside[name]}, delta, rewind=rewind_cpu, gen=gen)
        changes["compensated_in_layer"] = changes.get("compensated_in_layer", 0) + done
        remainder += delta - done if delta > 0 else delta + done
    if remainder:
        for n in new_masks:
            weights.setdefault(n, params[n].detach().cpu().clone())
        done = _rebalance(weights, new_masks, outside, remainder, rewind=rewind_cpu, gen=gen)
        if done != abs(remainder):
            raise SignatureError("Not enough room outside the signature regions to keep the density unchanged.")
        changes["compensated_elsewhere"] = done
    for name in weights:
        params[name].copy_(weights[name].to(params[name].device))
    if hasattr(model, "set_masks"):
        model.set_masks(new_masks)
    if sum(int(m.sum()) for m in new_masks.values()) != sum(kept_before.values()):  # pragma: no cover - invariant
        raise SignatureError("Internal error: embedding changed the number of kept weights.")

    data_bits = symbol.data_bits()
    layer_kept = {n: int(m.sum()) for n, m in new_masks.items()}
    min_mag = {n: float(params[n].detach().abs()[new_masks[n].to(params[n].device)].min())
               for n in new_masks if layer_kept[n]}
    section = {
        "scheme": "V2",
        "text": text,
        "qr": {"version": symbol.version, "ecc": symbol.ecc, "mask_pattern": symbol.mask_pattern},
        "size": symbol.size,
        "regions": [asdict(r) for r in regions],
        "seed": seed,
        "copies": copies,
        "module_weights": module_weights,
        "data_bits": np.packbits(data_bits).tobytes().hex(),
        "num_data_modules": int(data_bits.size),
        "signed_mask_digest": mask_digest(new_masks),
        "layer_kept": layer_kept,
        "min_kept_magnitude": min_mag,
        "param_shapes": {n: list(m.shape) for n, m in new_masks.items()},
        "changes": changes,
        "seconds": round(time.perf_counter() - t0, 4),
    }
    key = key or OwnershipKey(arch=getattr(getattr(model, "config", None), "arch", type(model).__name__))
    key.set_section(SIGNATURE_SECTION, section)
    if hasattr(model, "signature_key"):
        model.signature_key = key
    logger.info("Embedded a %d×%d QR (v%d-%s) in %s; changes %s", symbol.size, symbol.size, symbol.version, ecc,
                [(r.param, r.row, r.col) for r in regions], changes)
    return key


# --------------------------------------------------------------------------- extraction


@dataclass
class SignatureEvidence:
    """What the suspect's mask says about the signature.

    Attributes:
        text: Decoded text (known-format decoder), or ``None``.
        matches: ``text`` equals the key's text.
        bit_agreement: Fraction of data modules (combined over copies) equal to the key's.
        p_value: Probability of at least this agreement for an unrelated mask of the same
            density.
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


def read_suspect_weights(source: Any, *, arch: str | None = None) -> dict[str, torch.Tensor]:
    """Weights of a suspect (model, folder, file, state dict) by timm name, on the CPU.

    Stored masks are never read: the mask comes from the weights.
    """
    if isinstance(source, nn.Module):
        params = _timm_params(source)
        return {k: v.detach().cpu() for k, v in params.items()}
    from .modeling_sparse_resnet import load_model

    model = load_model(source, arch=arch, masks="weights")
    return {k: v.detach() for k, v in model.timm_parameters().items()}


def _suspect_masks(weights: Mapping[str, torch.Tensor], section: Mapping[str, Any], *, defense: bool
                   ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The suspect's masks of the signed layers, from its non-zero weights, with the add-on defense."""
    for name, shape in section["param_shapes"].items():
        if name not in weights:
            raise KeyMismatchError(f"The suspect has no parameter '{name}' named in the key; wrong architecture?")
        if list(weights[name].shape) != list(shape):
            raise KeyMismatchError(f"'{name}' has shape {tuple(weights[name].shape)} in the suspect, {tuple(shape)} "
                                   "in the key; the key belongs to another architecture.")
    names = list(dict.fromkeys(r["param"] for r in section["regions"]))
    if not defense:
        return {n: weights[n] != 0 for n in names}, []
    kept = {n: int(section["layer_kept"].get(n, 0)) or weights[n].numel() for n in names}
    masks = addon_defense({n: weights[n] for n in names}, kept)
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
    arch: str | None = None,
    cross_check: bool = True,
) -> SignatureEvidence:
    """Read and decode the signature from a suspect model.

    Args:
        source: A model, a folder or file (this library's, plain timm or TimmWrapper layout),
            or a state dict.
        key: The owner's key (or its path) with a ``signature`` section.
        defense: Apply the add-on defense (per layer, keep the ``k`` largest magnitudes when
            the suspect has more non-zeros than the signed ticket had).
        arch: Architecture for sources without a config.
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
    weights = read_suspect_weights(source, arch=arch or key.arch)
    t0 = time.perf_counter()
    masks, defended = _suspect_masks(weights, section, defense=defense)
    qrp = section["qr"]
    version, ecc, mpat = int(qrp["version"]), str(qrp["ecc"]), int(qrp["mask_pattern"])
    data = qr.data_map(version)
    n = int(section["num_data_modules"])
    expected = np.unpackbits(np.frombuffer(bytes.fromhex(section["data_bits"]), dtype=np.uint8))[:n].astype(bool)
    reads, per_copy = [], []
    for rd in section["regions"]:
        region = Region(**rd)
        m = masks[region.param]
        if region.row + region.size > m.shape[0] or region.col + region.size > m.shape[1]:
            raise KeyMismatchError(f"The key's region in '{region.param}' lies outside the suspect's layer.")
        sq = squeeze_mask(m)
        window = sq[region.row: region.row + region.size, region.col: region.col + region.size].numpy()
        bits = window[data]
        if region.inverted:
            bits = ~bits
        q = float(sq.double().mean())
        target_kept = expected ^ region.inverted  # kept-ness the signature asked for
        agree = int((bits == expected).sum())
        p = module_agreement_p_value(agree, ones=int(target_kept.sum()), zeros=int((~target_kept).sum()), q=q)
        per_copy.append({"param": region.param, "bit_agreement": agree / n, "p_value": p})
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
    # combined p-value: the strongest single copy's evidence (copies are not independent
    # under the null of one unrelated mask per layer, so no product)
    p_value = min(c["p_value"] for c in per_copy) * len(per_copy)  # Bonferroni over copies
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
