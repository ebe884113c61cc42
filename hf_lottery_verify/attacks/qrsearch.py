"""The key-less QR window search a thief runs with only the public checkpoint and this library.

A QR symbol written as one contiguous window of a layer's squeezed mask (the paper's
Algorithm 2; this library's ``layout="regions"``) can be found without any key: try every
masked conv, QR version, window offset, ECC level, mask pattern and polarity and hand the
window's data modules to :func:`hf_lottery_verify.qr.decode_known`. Done naively that is
``64`` decodes per window (about 0.25 ms each for version 1), minutes per layer.

:func:`locate_windows` screens first. Valid QR data modules form an affine space over
GF(2): the unmasked bits of every symbol of one version and ECC level lie in the binary
image of the Reed–Solomon code. Its structure is learnt from the pinned public encoder
alone (:func:`hf_lottery_verify.qr.encode`): the differences between encodings of random
texts span the code, and random vectors of its dual give 64 parity checks. A window passes
the screen when its checks equal those of a reference encoding under one of the 8 mask
patterns (or their complement, for the inverted polarity) — one matrix product for all
windows of a layer — and every survivor is confirmed by ``decode_known``. Intact symbols
(as published by their owner) are found in milliseconds; the screen does not look for
damaged ones (a thief attacks the published checkpoint, whose signature is intact).
A keyed signature (whitened bits at scattered slots) passes nothing, by design.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from .. import qr
from ..masks import squeeze_mask

__all__ = ["LocatedWindow", "locate_windows", "parity_screen"]

logger = logging.getLogger(__name__)

_CHECKS = 64
_BATCH = 64
_SCREEN_SEED = 0x51  # fixed: the screen is a property of the QR standard, not of any model


@dataclass(frozen=True)
class LocatedWindow:
    """A square window of a squeezed mask that decodes as a QR symbol.

    Attributes:
        param: Masked parameter (conv weight) holding it.
        row: First output channel of the window.
        col: First input channel of the window.
        version: QR version (side ``17 + 4·version``).
        ecc: ECC level.
        mask_pattern: QR mask pattern.
        inverted: Dark modules are *pruned* kernels (``False``: dark = kept).
        text: The decoded text.
    """

    param: str
    row: int
    col: int
    version: int
    ecc: str
    mask_pattern: int
    inverted: bool
    text: str

    @property
    def size(self) -> int:
        return qr.symbol_size(self.version)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- GF(2) algebra


def _mod2_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` over GF(2) for 0/1 arrays (float32 BLAS; exact while inner sums stay below 2**24)."""
    return (a.astype(np.float32) @ b.astype(np.float32)).astype(np.int64) & 1


def _rref(rows: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Reduced row echelon form over GF(2) of a 0/1 uint8 matrix: ``(nonzero rows, pivot columns)``."""
    a = rows.copy()
    pivots: list[int] = []
    r = 0
    for c in range(a.shape[1]):
        if r == a.shape[0]:
            break
        below = np.flatnonzero(a[r:, c])
        if below.size == 0:
            continue
        p = r + int(below[0])
        if p != r:
            a[[r, p]] = a[[p, r]]
        others = np.flatnonzero(a[:, c])
        others = others[others != r]
        a[others] ^= a[r]
        pivots.append(c)
        r += 1
    return a[:r], pivots


def _extend(basis: np.ndarray, pivots: list[int], new: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Add ``new`` rows to an RREF ``basis`` (pivot columns hold one 1 each): the RREF of their span."""
    if pivots:
        new = new ^ _mod2_matmul(new[:, pivots], basis).astype(np.uint8)
    fresh, fresh_pivots = _rref(new)
    if not fresh_pivots:
        return basis, pivots
    if pivots:
        basis = basis ^ _mod2_matmul(basis[:, fresh_pivots], fresh).astype(np.uint8)
    return np.vstack([basis, fresh]), pivots + fresh_pivots


def _random_text(rng: np.random.Generator, version: int, ecc: str) -> str:
    cap = qr.capacity(version, ecc)
    kind = rng.integers(5)
    if kind == 4 and cap >= 24:  # mixed segments: a run of 20+ digits inside byte text gets its own segment
        run = "".join(map(str, rng.integers(0, 10, int(rng.integers(20, max(21, 2 * cap - 8))))))
        head = "".join(chr(int(c)) for c in rng.integers(97, 123, int(rng.integers(0, 3))))
        return head + run + "x"
    if kind == 0:  # numeric mode
        return "".join(map(str, rng.integers(0, 10, int(rng.integers(0, 2 * cap + 1)))))
    if kind == 1:  # alphanumeric mode
        alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
        return "".join(alphabet[i] for i in rng.integers(0, len(alphabet), int(rng.integers(0, cap + cap // 2 + 1))))
    # byte mode, with non-ASCII characters so that every payload bit varies
    hi = 256 if kind in (2, 4) else 128
    n = int(rng.integers(0, cap + 1))
    return "".join(chr(int(c)) for c in rng.integers(32, hi, n))


@functools.lru_cache(maxsize=64)
def parity_screen(version: int, ecc: str) -> tuple[np.ndarray, np.ndarray]:
    """Parity checks of one QR version and ECC level, learnt from the public encoder.

    Args:
        version (`int`): QR version.
        ecc (`str`): ECC level.

    Returns:
        ``(checks, targets)``: ``checks`` is a ``(64, n)`` 0/1 matrix over the data modules
        (zero on modules no codeword depends on, such as remainder bits); ``targets`` is
        ``(16, 64)``: the checks of a valid symbol under mask pattern ``p`` (row ``p``) and
        of its complement (row ``8 + p``).
    """
    rng = np.random.default_rng([_SCREEN_SEED, version, ord(ecc)])
    base = qr.encode("", version=version, ecc=ecc, mask_pattern=0).data_bits().astype(np.uint8)
    n = base.size
    basis, pivots = np.zeros((0, n), dtype=np.uint8), []
    seen = np.zeros(n, dtype=bool)
    while True:
        batch = []
        while len(batch) < _BATCH:
            try:
                bits = qr.encode(_random_text(rng, version, ecc), version=version, ecc=ecc, mask_pattern=0).data_bits()
            except qr.QRCapacityError:
                continue
            batch.append(bits.astype(np.uint8) ^ base)
        diffs = np.stack(batch)
        seen |= diffs.any(axis=0)
        rank = len(pivots)
        basis, pivots = _extend(basis, pivots, diffs)
        if len(pivots) == rank:
            break
    active = np.flatnonzero(seen)
    free = np.setdiff1d(active, np.asarray(pivots, dtype=np.int64))
    x_free = rng.integers(0, 2, (_CHECKS, free.size), dtype=np.uint8)
    checks = np.zeros((_CHECKS, n), dtype=np.uint8)
    checks[:, free] = x_free
    if pivots:
        checks[:, pivots] = _mod2_matmul(x_free, basis[:, free].T)
    logger.debug("QR v%d-%s: code dimension %d of %d data modules (%d vary).", version, ecc, len(pivots), n,
                 active.size)
    refs = np.stack([qr.encode("", version=version, ecc=ecc, mask_pattern=p).data_bits() for p in range(8)])
    targets = _mod2_matmul(refs, checks.T)
    ones = _mod2_matmul(np.ones((1, n)), checks.T)[0]
    return checks, np.vstack([targets, targets ^ ones]).astype(np.uint8)


# --------------------------------------------------------------------------- the search


def _packed(bits: np.ndarray) -> np.ndarray:
    return np.packbits(bits.astype(bool), axis=-1).view(np.uint64)[..., 0]


def locate_windows(
    masks: Mapping[str, torch.Tensor],
    *,
    versions: Sequence[int] | None = None,
    max_version: int = 5,
) -> list[LocatedWindow]:
    """Every square window of the masks' squeezed layers that decodes as a QR symbol (no key needed).

    Args:
        masks (`Mapping[str, torch.Tensor]`): Masks by parameter name (a published model's
            non-zero pattern, e.g. :func:`~hf_lottery_verify.masks.masks_from_weights`).
        versions (`Sequence[int]`, *optional*): QR versions to try; ``1..max_version`` when ``None``.
        max_version (`int`, *optional*, defaults to 5): Largest version tried when ``versions``
            is ``None`` (version 5-H holds 46 bytes; learning a version's screen costs about
            ``2 n`` encodings once per process, ``n`` its data modules).

    Every 2-D/4-D mask is searched under every ECC level; the search stops after the first
    version (in increasing order) with a hit: copies of one signature share a version.

    Returns:
        The decodable windows, by version, then layer order, then offset.
    """
    squeezed = {n: squeeze_mask(m).cpu().numpy() for n, m in masks.items() if m.dim() in (2, 4)}
    hits: list[LocatedWindow] = []
    for version in (versions if versions is not None else range(1, max_version + 1)):
        s = qr.symbol_size(version)
        dmap = qr.data_map(version)
        for name, sq in squeezed.items():
            if s > min(sq.shape):
                continue
            windows = np.lib.stride_tricks.sliding_window_view(sq, (s, s))
            n_cols = windows.shape[1]
            bits = windows[..., dmap].reshape(-1, int(dmap.sum()))
            for ecc in qr.ECC_LEVELS:
                checks, targets = parity_screen(version, ecc)
                syndromes = _packed(_mod2_matmul(bits, checks.T))
                wanted = _packed(targets)
                for flat, which in zip(*np.nonzero(syndromes[:, None] == wanted[None, :]), strict=True):
                    pattern, inverted = int(which) % 8, bool(which >= 8)
                    window = ~bits[flat] if inverted else bits[flat]
                    res = qr.decode_known(window, version=version, ecc=ecc, mask_pattern=pattern)
                    if res.ok:
                        row, col = divmod(int(flat), n_cols)
                        hits.append(LocatedWindow(name, row, col, version, ecc, pattern, inverted, str(res.text)))
        if hits:
            break
    return hits
