"""Writing the QR data modules into the mask with the kept-weight count unchanged."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict

import numpy as np
import torch
from torch import nn

from .. import qr
from ..errors import SignatureError, SignatureTooLargeError
from ..masks import MaskDict, squeeze_mask
from ..ownership_key import OwnershipKey, mask_digest
from ..pruning import top_k_mask
from .regions import SIGNATURE_SECTION, Region, candidate_layers, find_regions, signature_capacity

__all__ = ["embed_signature", "timm_params"]

logger = logging.getLogger(__name__)


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


def timm_params(model: nn.Module) -> dict[str, torch.Tensor]:
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
    params = timm_params(model)
    rewind_sd = None
    if rewind is not None:
        rewind_sd = rewind.timm_model.state_dict() if hasattr(rewind, "timm_model") else dict(rewind)
    gen = torch.Generator().manual_seed(seed)
    kept_before = {n: int(m.sum()) for n, m in masks.items()}
    changes: dict[str, int] = {}
    new_masks = {n: m.detach().cpu().clone() for n, m in masks.items()}
    weights = {n: params[n].detach().cpu().clone() for n in {r.param for r in regions}}
    region_records = []
    for region in regions:
        target = ~symbol.modules if region.inverted else symbol.modules
        before = squeeze_mask(new_masks[region.param])[region.row: region.row + symbol.size,
                                                       region.col: region.col + symbol.size].numpy()
        # the modules this embedding had to change: the evidence that the mask was *signed*,
        # as opposed to merely agreeing by chance (or because the region was chosen to agree)
        changed = (before != target)[symbol.data_map]
        region_records.append({**asdict(region), "changed_bits": np.packbits(changed).tobytes().hex(),
                               "changed": int(changed.sum())})
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
        logger.warning("The signature regions fill most of their layer; %d weights were rebalanced in other layers "
                       "(smallest magnitudes / largest rewind values). The total kept count is unchanged.", done)
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
        "regions": region_records,
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
    logger.info("Embedded a %d×%d QR (v%d-%s) in %s; changes %s", symbol.size, symbol.size, symbol.version, ecc,
                [(r.param, r.row, r.col) for r in regions], changes)
    return key
