"""The earlier ``regions`` layout: contiguous windows of one layer, found by FFT search.

Kept so that keys made before the keyed layout still verify, and for the paper's exact
Algorithm 2 (``embed_signature(..., layout="regions")``). Its weakness is the reason the
keyed layout exists: a window of the squeezed mask that decodes as a QR symbol can be found
without any key by trying every layer, offset and format (:func:`find_decodable_windows`),
and then rewritten.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .. import qr
from ..errors import SignatureError, SignatureTooLargeError
from ..masks import squeeze_mask
from ..ownership_key import SIGNATURE_SECTION

__all__ = ["SIGNATURE_SECTION", "Region", "WindowHit", "candidate_layers", "region_agreement", "find_regions",
           "signature_capacity", "find_decodable_windows"]



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
    if polarity not in ("auto", "dark_kept", "dark_pruned"):
        raise SignatureError(f"Unknown polarity {polarity!r}: use 'auto', 'dark_kept' or 'dark_pruned'.")
    if copies < 1:
        raise SignatureError(f"copies must be at least 1, got {copies}.")
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
        window = squeeze_mask(masks[r.param])[r.row: r.row + s, r.col: r.col + s].cpu().numpy()
        target = ~symbol.modules if r.inverted else symbol.modules
        exact = int((window == target)[data].sum())
        out.append(Region(r.param, r.row, r.col, s, exact / n_data, r.inverted))
    return out


def signature_capacity(masks: Mapping[str, torch.Tensor], *, ecc: str = "H",
                       layers: Sequence[str] | str | None = None, layout: str = "keyed",
                       max_occupancy: float = 0.5) -> tuple[int, int, str | None]:
    """Largest byte-mode payload one copy of the signature can carry.

    Args:
        masks (`Mapping[str, torch.Tensor]`): The ticket's masks.
        ecc (`str`, *optional*, defaults to `"H"`): QR error-correction level.
        layers (`Sequence[str]` or `str`, *optional*): Candidate layers (see
            :func:`~hf_lottery_verify.signature.slots.signature_stages` for the keyed layout,
            :func:`candidate_layers` for regions).
        layout (`str`, *optional*, defaults to `"keyed"`): ``"keyed"`` or ``"regions"``.
        max_occupancy (`float`, *optional*, defaults to 0.5): Keyed: largest share of a
            stage's kernels one copy may take.

    Returns:
        ``(max_bytes, version, where)`` — ``where`` is the stage (keyed) or the layer
        (regions) that holds the largest symbol; ``(0, 0, None)`` when not even version 1 fits.
    """
    if layout == "keyed":
        from .slots import keyed_capacity

        return keyed_capacity(masks, ecc=ecc, layers=layers, max_occupancy=max_occupancy)
    if layout != "regions":
        raise SignatureError(f"Unknown signature layout {layout!r}: use 'keyed' or 'regions'.")
    for v in range(40, 0, -1):
        try:
            names = candidate_layers(masks, qr.symbol_size(v), layers=layers)
        except SignatureError:
            continue
        if names:
            return qr.capacity(v, ecc), v, names[0]
    return 0, 0, None


@dataclass(frozen=True)
class WindowHit:
    """A square window of a squeezed mask that decodes as a QR symbol (see :func:`find_decodable_windows`)."""

    param: str
    row: int
    col: int
    version: int
    ecc: str
    mask_pattern: int
    inverted: bool
    text: str


def find_decodable_windows(
    masks: Mapping[str, torch.Tensor],
    *,
    versions: Sequence[int] | None = None,
    ecc_levels: Sequence[str] = qr.ECC_LEVELS,
    mask_patterns: Sequence[int] = tuple(range(8)),
    layers: Sequence[str] | None = None,
    max_hits: int | None = None,
) -> list[WindowHit]:
    """A key-less search for a contiguous QR window, as a thief with only the public model would run it.

    For every masked conv (or the named ``layers``), every QR version that fits, every
    square window offset, every ECC level and mask pattern and both polarities (dark =
    kept, dark = pruned), the window's data modules are handed to the known-format decoder.
    It finds a ``regions``-layout signature in seconds (and then knows exactly which kernels
    to rewrite); a ``keyed`` signature is whitened and scattered, so nothing decodes.

    Args:
        masks (`Mapping[str, torch.Tensor]`): Masks (e.g. ``recover_masks(weights)``: the
            non-zero pattern of a published model).
        versions (`Sequence[int]`, *optional*): QR versions to try; every version that fits a
            layer when ``None``.
        ecc_levels (`Sequence[str]`, *optional*): ECC levels to try (all four by default).
        mask_patterns (`Sequence[int]`, *optional*): Mask patterns to try (all eight by default).
        layers (`Sequence[str]`, *optional*): Layers to search; every 2-D or 4-D mask by default.
        max_hits (`int`, *optional*): Stop after this many hits.

    Returns:
        The windows that decode, in search order.
    """
    hits: list[WindowHit] = []
    names = list(layers) if layers is not None else [n for n, m in masks.items() if m.dim() in (2, 4)]
    for name in names:
        sq = squeeze_mask(masks[name]).cpu().numpy()
        for v in (versions if versions is not None else range(1, 41)):
            s = qr.symbol_size(v)
            if s > min(sq.shape):
                continue
            windows = np.lib.stride_tricks.sliding_window_view(sq, (s, s))[..., qr.data_map(v)]
            for row in range(windows.shape[0]):
                for col in range(windows.shape[1]):
                    bits = windows[row, col]
                    for ecc in ecc_levels:
                        for mp in mask_patterns:
                            for inverted in (False, True):
                                res = qr.decode_known(~bits if inverted else bits, version=v, ecc=ecc,
                                                      mask_pattern=mp)
                                if res.ok:
                                    hits.append(WindowHit(name, row, col, v, ecc, mp, inverted, str(res.text)))
                                    if max_hits is not None and len(hits) >= max_hits:
                                        return hits
    return hits
