"""Values of the function modules: finder, timing and alignment patterns, format and version information.

[`restore`] puts these values back around the data modules; [`encode`] reads the format
information to check what the pinned `qrcode` encoder produced.
"""

from __future__ import annotations

import functools

import numpy as np

from .layout import (
    _ECC_FORMAT_BITS,
    ECC_LEVELS,
    BoolArray,
    _alignment_centers,
    _finder_anchor_positions,
    _readonly,
)

# BCH generator polynomials and mask of the format / version information (ISO/IEC 18004 Annex C, D).
_FORMAT_GENERATOR = 0b10100110111
_FORMAT_XOR_MASK = 0b101010000010010
_VERSION_GENERATOR = 0b1111100100101


def _bch_remainder(value: int, generator: int) -> int:
    degree = generator.bit_length() - 1
    rem = value << degree
    while rem.bit_length() > degree:
        rem ^= generator << (rem.bit_length() - generator.bit_length())
    return rem


def _format_word(ecc: str, mask_pattern: int) -> int:
    data = (_ECC_FORMAT_BITS[ecc] << 3) | mask_pattern
    return ((data << 10) | _bch_remainder(data, _FORMAT_GENERATOR)) ^ _FORMAT_XOR_MASK


def _version_word(version: int) -> int:
    return (version << 12) | _bch_remainder(version, _VERSION_GENERATOR)


def _format_positions(size: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Positions of format bit i (LSB first) for the two copies (same layout as `qrcode`)."""
    first = [(i, 8) if i < 6 else (i + 1, 8) if i < 8 else (size - 15 + i, 8) for i in range(15)]
    second = [(8, size - 1 - i) if i < 8 else (8, 7) if i == 8 else (8, 14 - i) for i in range(15)]
    return first, second


def _version_positions(size: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Positions of version bit i (LSB first) for the two copies."""
    upper_right = [(i // 3, size - 11 + i % 3) for i in range(18)]
    lower_left = [(size - 11 + i % 3, i // 3) for i in range(18)]
    return upper_right, lower_left


@functools.cache
def _fixed_pattern_values(version: int) -> BoolArray:
    """Values of finders, separators, timing, alignment and dark module (format/version unset)."""
    n = 17 + 4 * version
    out = np.zeros((n, n), dtype=bool)
    finder = np.zeros((7, 7), dtype=bool)
    finder[[0, 6], :] = True
    finder[:, [0, 6]] = True
    finder[2:5, 2:5] = True
    for r, c in _finder_anchor_positions(n):
        out[r : r + 7, c : c + 7] = finder
    timing = np.arange(n) % 2 == 0
    out[6, 8 : n - 8] = timing[8 : n - 8]
    out[8 : n - 8, 6] = timing[8 : n - 8]
    alignment = np.ones((5, 5), dtype=bool)
    alignment[1:4, 1:4] = False
    alignment[2, 2] = True
    for r, c in _alignment_centers(version):
        out[r - 2 : r + 3, c - 2 : c + 3] = alignment
    out[n - 8, 8] = True
    return _readonly(out)


@functools.cache
def _function_template(version: int, ecc: str, mask_pattern: int) -> BoolArray:
    """Full symbol with all function modules set and every data module light."""
    n = 17 + 4 * version
    out = _fixed_pattern_values(version).copy()
    word = _format_word(ecc, mask_pattern)
    for copy in _format_positions(n):
        for i, (r, c) in enumerate(copy):
            out[r, c] = bool((word >> i) & 1)
    if version >= 7:
        vword = _version_word(version)
        for copy in _version_positions(n):
            for i, (r, c) in enumerate(copy):
                out[r, c] = bool((vword >> i) & 1)
    return _readonly(out)


def _read_format_info(modules: np.ndarray) -> tuple[str, int, int]:
    """Closest `(ecc, mask_pattern)` to the first format-information copy, with its distance."""
    positions, _ = _format_positions(modules.shape[0])
    word = sum(int(bool(modules[r, c])) << i for i, (r, c) in enumerate(positions))
    candidates = (((word ^ _format_word(e, m)).bit_count(), e, m) for e in ECC_LEVELS for m in range(8))
    distance, ecc, mask = min(candidates)
    return ecc, mask, distance
