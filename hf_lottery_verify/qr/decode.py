"""Known-format decoding: Reed-Solomon blocks with erasures and GMD, then bitstream parsing.

[`decode_known`] needs the version, ECC level and mask pattern (stored in the key file), so unlike
an image decoder it never has to locate or read the format information of a damaged symbol.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import reedsolo

from .bitstream import _parse_bitstream, _ParseError
from .layout import (
    _as_data_vector,
    _check_ecc,
    _check_mask_pattern,
    _check_version,
    _mask_vector,
    _placement_order,
    _readonly,
    _rs_block_structure,
)

__all__ = ["QRDecodeResult", "decode_known", "decode_security_bits"]

# GMD retries leave at least this many check symbols of a block un-erased. With every check
# symbol erased, any received word "decodes", so such a candidate carries no evidence; measured on
# 5-H symbols with 6-10 % flipped modules, it only added wrong-but-parseable decodings.
_GMD_SPARE_CHECK_SYMBOLS = 2

# Exceptions reedsolo may raise on an uncorrectable block.
_RS_DECODE_ERRORS = (reedsolo.ReedSolomonError, ZeroDivisionError, ValueError, IndexError)


# --------------------------------------------------------------------------------------------
# Reed-Solomon block structure
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Block:
    stream_index: npt.NDArray[np.intp]  # positions of this block's codewords in the codeword stream
    data_count: int

    @property
    def ec_count(self) -> int:
        return int(self.stream_index.size) - self.data_count


@functools.cache
def _block_layout(version: int, ecc: str) -> tuple[_Block, ...]:
    """How the interleaved codeword stream splits into RS blocks."""
    structure = _rs_block_structure(version, ecc)
    data_idx: list[list[int]] = [[] for _ in structure]
    ec_idx: list[list[int]] = [[] for _ in structure]
    pos = 0
    for i in range(max(dc for _, dc in structure)):
        for b, (_, dc) in enumerate(structure):
            if i < dc:
                data_idx[b].append(pos)
                pos += 1
    for i in range(max(total - dc for total, dc in structure)):
        for b, (total, dc) in enumerate(structure):
            if i < total - dc:
                ec_idx[b].append(pos)
                pos += 1
    return tuple(
        _Block(stream_index=_readonly(np.asarray(d + e, dtype=np.intp)), data_count=dc)
        for d, e, (_, dc) in zip(data_idx, ec_idx, structure, strict=True)
    )


@functools.cache
def _rs_codec(nsym: int) -> reedsolo.RSCodec:
    # QR: GF(256) with primitive polynomial 0x11d, generator 2, first consecutive root 0.
    return reedsolo.RSCodec(nsym, nsize=255, fcr=0, prim=0x11D, generator=2, c_exp=8)


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QRDecodeResult:
    """Outcome of [`decode_known`].

    Args:
        text (`str` or `None`): Decoded text, `None` on failure.
        ok (`bool`): Whether all RS blocks decoded and the bitstream parsed.
        corrected_codewords (`int`): Codewords changed by RS decoding (errors and erasures).
        erased_codewords (`int`): Codewords treated as erasures in the accepted decoding
            (from `erasures` and from GMD retries).
        failed_blocks (`int`): RS blocks that could not be decoded (0 when `ok`).
        reason (`str` or `None`): Why decoding failed, `None` when `ok`.
        security_bits (`float`): When `ok`: ``-log2`` of the chance that random data decodes
            with these erasures and errors ([`decode_security_bits`]); 0 otherwise.
    """

    text: str | None
    ok: bool
    corrected_codewords: int = 0
    erased_codewords: int = 0
    failed_blocks: int = 0
    reason: str | None = None
    security_bits: float = 0.0


@dataclass(frozen=True)
class _BlockDecode:
    data: bytes
    corrected: int
    erased: int
    errors: int = 0  # changed codewords outside the erasures
    length: int = 0  # codewords in the block
    nsym: int = 0  # its check codewords


def _rs_decode_block(received: bytes, nsym: int, erase_pos: list[int]) -> _BlockDecode | None:
    try:
        _, full, _ = _rs_codec(nsym).decode(received, erase_pos=erase_pos or None)
    except _RS_DECODE_ERRORS:
        return None
    n_data = len(received) - nsym
    changed = [i for i, (a, b) in enumerate(zip(full, received, strict=True)) if a != b]
    errors = len(set(changed) - set(erase_pos))
    return _BlockDecode(data=bytes(full[:n_data]), corrected=len(changed), erased=len(erase_pos), errors=errors,
                        length=len(received), nsym=nsym)


def decode_security_bits(blocks: Sequence[tuple[int, int, int, int]]) -> float:
    """How unlikely a decode is by chance: ``-log2`` of the probability that a random word decodes.

    For a block of ``n`` codewords with ``ec`` check codewords, decoded with ``e`` erasures and
    ``t`` errors, a uniformly random word lies within ``t`` errors of some codeword of the
    punctured code with probability at most ``V(n − e, t) / 256^(ec − e)``, where
    ``V(m, t) = Σ_{i ≤ t} C(m, i) 255^i``; blocks multiply. Many erasures or errors leave few
    check symbols unused, and then even random data decodes (a 1-H block with 17 erasures
    decodes anything): a decode is only evidence when this figure is large.

    Args:
        blocks (`Sequence[tuple[int, int, int, int]]`): ``(n, ec, e, t)`` per block.

    Returns:
        The security in bits (at least 0).
    """
    bits = 0.0
    for n, ec, e, t in blocks:
        m = max(0, n - e)
        volume = sum(math.comb(m, i) * 255**i for i in range(0, min(t, m) + 1))
        bits += 8 * max(0, ec - e) - math.log2(volume)
    return max(0.0, bits)


def _gmd_candidates(
    received: bytes,
    nsym: int,
    base_erasures: list[int],
    reliability: np.ndarray,
    exclude: _BlockDecode | None,
) -> Iterator[_BlockDecode]:
    """Decodings with 2, 4, ... extra erasures at the least reliable codewords (distinct results)."""
    base = set(base_erasures)
    order = [int(p) for p in np.argsort(reliability, kind="stable") if int(p) not in base]
    available = min(nsym - _GMD_SPARE_CHECK_SYMBOLS - len(base), len(order))
    counts = list(range(2, available + 1, 2))
    if available > 0 and available % 2:
        counts.append(available)
    seen = {exclude.data} if exclude is not None else set()
    for k in counts:
        decoded = _rs_decode_block(received, nsym, sorted(base.union(order[:k])))
        if decoded is not None and decoded.data not in seen:
            seen.add(decoded.data)
            yield decoded


def _parse_or_reason(decodes: list[_BlockDecode], version: int, *, strict_utf8: bool) -> tuple[str | None, str | None]:
    """`(text, None)` when the data codewords parse, else `(None, why)`."""
    try:
        return _parse_bitstream(b"".join(d.data for d in decodes), version, strict_utf8=strict_utf8), None
    except _ParseError as exc:
        return None, str(exc)


def _success(text: str, decodes: list[_BlockDecode]) -> QRDecodeResult:
    return QRDecodeResult(
        text=text,
        ok=True,
        corrected_codewords=sum(d.corrected for d in decodes),
        erased_codewords=sum(d.erased for d in decodes),
        security_bits=decode_security_bits([(d.length, d.nsym, d.erased, d.errors) for d in decodes]),
    )


def decode_known(
    data: np.ndarray,
    *,
    version: int,
    ecc: str,
    mask_pattern: int,
    erasures: np.ndarray | None = None,
    reliability: np.ndarray | None = None,
) -> QRDecodeResult:
    """Decode the data modules of a QR symbol whose version, ECC level and mask are known.

    The data modules are read in the standard zig-zag placement order, unmasked, assembled into
    8-bit codewords, de-interleaved into the Reed-Solomon blocks and decoded block by block
    (GF(256), primitive polynomial 0x11d, generator 2, first consecutive root 0). A codeword with
    at least one erased module is passed to RS as an erasure, so each block decodes when
    `2 * errors + erasures <= ec_codewords`.

    With `reliability`, generalized-minimum-distance (GMD) decoding is used when plain decoding
    fails: a failing block is retried with its 2, 4, ... least reliable codewords (a codeword's
    reliability is the minimum over its 8 modules) additionally erased, up to two fewer erasures
    than the block has EC codewords (an all-erased check part would "decode" any input), and the
    first combination that RS-decodes *and* parses as a valid QR bitstream (valid modes and
    counts, standard terminator and padding, byte data valid UTF-8) is accepted. When all blocks
    decode but the bitstream does not parse, the blocks that RS changed are retried the same way.

    Args:
        data (`np.ndarray`):
            Full `(size, size)` matrix (only data modules are read) or the 1-D data-bit vector
            (row-major data modules). Non-bool values are interpreted as `value != 0`.
        version (`int`): QR version, 1..40.
        ecc (`str`): ECC level, one of "L", "M", "Q", "H".
        mask_pattern (`int`): Data mask 0..7.
        erasures (`np.ndarray`, *optional*):
            Bool array shaped like `data`, `True` at modules known to be unreliable.
        reliability (`np.ndarray`, *optional*):
            Float array shaped like `data`, higher = more trustworthy. Enables GMD retries.

    Returns:
        [`QRDecodeResult`]: `ok=False` with a `reason` when the symbol cannot be decoded; this
        function does not raise for undecodable data.

    Raises:
        [`QRParameterError`]: If `version`, `ecc` or `mask_pattern` is invalid, or an array has a
            shape that matches neither the module matrix nor the data-bit vector.

    Example:

    >>> import numpy as np
    >>> from hf_lottery_verify.qr import decode_known, encode
    >>> symbol = encode("owner: alice", ecc="H")
    >>> params = {"version": symbol.version, "ecc": "H", "mask_pattern": symbol.mask_pattern}
    >>> erased = np.zeros(symbol.num_data_modules, dtype=bool)
    >>> erased[::8] = True  # 45 modules in 20+ codewords: more than 2-H corrects as errors
    >>> noisy = symbol.data_bits() ^ erased
    >>> decode_known(noisy, **params).ok
    False
    >>> decode_known(noisy, erasures=erased, **params).text
    'owner: alice'
    """
    version = _check_version(version)
    ecc = _check_ecc(ecc)
    mask_pattern = _check_mask_pattern(mask_pattern)
    bits = _as_data_vector(data, version, name="data")
    layout = _block_layout(version, ecc)
    n_codewords = sum(int(block.stream_index.size) for block in layout)
    order = _placement_order(version)[: 8 * n_codewords]

    unmasked = np.logical_xor(bits, _mask_vector(version, mask_pattern))
    codewords = np.packbits(unmasked[order].reshape(n_codewords, 8), axis=1).ravel()
    if erasures is not None:
        erased_cw = _as_data_vector(erasures, version, name="erasures")[order].reshape(n_codewords, 8).any(axis=1)
    else:
        erased_cw = np.zeros(n_codewords, dtype=bool)
    cw_reliability = None
    if reliability is not None:
        rel = _as_data_vector(reliability, version, name="reliability", dtype=float)
        cw_reliability = np.nan_to_num(rel[order].reshape(n_codewords, 8), nan=-np.inf).min(axis=1)

    received = [codewords[block.stream_index].tobytes() for block in layout]
    base_erasures = [np.flatnonzero(erased_cw[block.stream_index]).tolist() for block in layout]
    first = [
        _rs_decode_block(rx, block.ec_count, er) for rx, block, er in zip(received, layout, base_erasures, strict=True)
    ]
    failed = [b for b, d in enumerate(first) if d is None]
    parse_error: str | None = None
    if not failed:
        decodes = [d for d in first if d is not None]
        text, parse_error = _parse_or_reason(decodes, version, strict_utf8=False)
        if text is not None:
            return _success(text, decodes)

    if cw_reliability is not None:
        # Blocks to retry: the failed ones, or (parse failure) the ones RS changed, which may be
        # miscorrections.
        suspects = failed or [b for b, d in enumerate(first) if d is not None and d.corrected]
        candidates: dict[int, list[_BlockDecode]] = {}
        for b in suspects:
            gmd = _gmd_candidates(
                received[b], layout[b].ec_count, base_erasures[b], cw_reliability[layout[b].stream_index], first[b]
            )
            candidates[b] = ([first[b]] if first[b] is not None else []) + list(gmd)
        if all(candidates[b] for b in suspects):
            result = _search_gmd(first, candidates, suspects, version)
            if result is not None:
                return result
        still_failed = sum(1 for b in suspects if not candidates[b])
        return QRDecodeResult(
            text=None,
            ok=False,
            failed_blocks=still_failed,
            reason=(
                f"GMD decoding failed: {still_failed} of {len(layout)} RS blocks uncorrectable"
                if still_failed
                else "GMD decoding failed: no combination of block decodings parses as a valid QR bitstream"
            ),
        )
    if parse_error is not None:
        return QRDecodeResult(
            text=None, ok=False, reason=f"RS decoding succeeded but the data is not a valid QR bitstream: {parse_error}"
        )
    return QRDecodeResult(
        text=None,
        ok=False,
        failed_blocks=len(failed),
        reason=f"{len(failed)} of {len(layout)} RS blocks uncorrectable",
    )


def _search_gmd(
    first: list[_BlockDecode | None],
    candidates: dict[int, list[_BlockDecode]],
    suspects: list[int],
    version: int,
) -> QRDecodeResult | None:
    """Try the first candidate of every suspect block, then vary one block at a time."""
    current: list[_BlockDecode] = []
    for b, decoded in enumerate(first):
        chosen = candidates[b][0] if b in candidates else decoded
        if chosen is None:  # pragma: no cover - every failed block is a suspect with candidates
            return None
        current.append(chosen)
    trials = [current] + [[*current[:b], alternative, *current[b + 1:]]
                          for b in suspects for alternative in candidates[b][1:]]
    for trial in trials:
        text, _ = _parse_or_reason(trial, version, strict_utf8=True)
        if text is not None:
            return _success(text, trial)
    return None
