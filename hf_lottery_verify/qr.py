"""QR-code symbols as boolean module matrices, with a known-format decoder.

This module is the QR layer of the lottery-ticket signature scheme (Chen et al., "You are caught
stealing my winning lottery ticket!", NeurIPS 2021): a QR code is encoded into a boolean matrix,
only its *data modules* are embedded into the sparse mask of a pruned network, and at verification
time the data modules are read back from the mask, the fixed function patterns are restored and the
text is decoded.

Conventions:

- A symbol is a 2-D `numpy` bool array of shape `(size, size)` with `size = 17 + 4 * version`;
  `True` is a dark module. Matrices never include a quiet zone.
- *Data modules* are all modules that are not function patterns (finder patterns with their
  separators, timing patterns, alignment patterns, both copies of the format information, both
  copies of the version information for versions >= 7, and the dark module). They include the
  remainder bits.
- A *data-bit vector* is the 1-D bool array of the data modules in row-major order
  (`modules[data_map(version)]`).

Encoding is pinned to the [`qrcode`](https://pypi.org/project/qrcode/) package so that a key file
holding `(text, version, ecc, mask_pattern)` always rebuilds the identical symbol. Decoding does not
depend on `qrcode`'s encoder: [`decode_known`] reads the data modules in the standard placement
order, removes the mask, de-interleaves the Reed-Solomon blocks and decodes them with `reedsolo`
(with erasure and generalized-minimum-distance support). [`decode_image`] is an independent
cross-check through the ZBar image decoder (`pyzbar`).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import qrcode
import qrcode.base
import qrcode.constants
import qrcode.util
import reedsolo
from PIL import Image

__all__ = [
    "ECC_LEVELS",
    "InvalidECCLevelError",
    "InvalidMaskPatternError",
    "InvalidVersionError",
    "QRCapacityError",
    "QRDecodeResult",
    "QRError",
    "QRParameterError",
    "QRSymbol",
    "bit_agreement",
    "capacity",
    "data_map",
    "decode_image",
    "decode_known",
    "encode",
    "function_pattern_map",
    "max_version_for_size",
    "num_data_modules",
    "render",
    "restore",
    "strip",
    "symbol_size",
]

BoolArray = npt.NDArray[np.bool_]

ECC_LEVELS: tuple[str, ...] = ("L", "M", "Q", "H")
"""Error-correction levels, from lowest (about 7 % recovery) to highest (about 30 %)."""

MIN_VERSION = 1
MAX_VERSION = 40

# The 2-bit error-correction indicator of the format information. `qrcode`'s ERROR_CORRECT_*
# constants are exactly these values, so they double as the `qrcode` argument.
_ECC_FORMAT_BITS: dict[str, int] = {
    "L": qrcode.constants.ERROR_CORRECT_L,  # 0b01
    "M": qrcode.constants.ERROR_CORRECT_M,  # 0b00
    "Q": qrcode.constants.ERROR_CORRECT_Q,  # 0b11
    "H": qrcode.constants.ERROR_CORRECT_H,  # 0b10
}

# BCH generator polynomials and mask of the format / version information (ISO/IEC 18004 Annex C, D).
_FORMAT_GENERATOR = 0b10100110111
_FORMAT_XOR_MASK = 0b101010000010010
_VERSION_GENERATOR = 0b1111100100101

# Mode indicators.
_MODE_TERMINATOR = 0b0000
_MODE_NUMERIC = 0b0001
_MODE_ALPHANUMERIC = 0b0010
_MODE_BYTE = 0b0100
_MODE_ECI = 0b0111
_MODE_KANJI = 0b1000

_ALPHANUMERIC_CHARSET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_PAD_BYTES = (0xEC, 0x11)

# Character-count indicator lengths for versions 1-9, 10-26 and 27-40.
_CHAR_COUNT_BITS: dict[int, tuple[int, int, int]] = {
    _MODE_NUMERIC: (10, 12, 14),
    _MODE_ALPHANUMERIC: (9, 11, 13),
    _MODE_BYTE: (8, 16, 16),
    _MODE_KANJI: (8, 10, 12),
}

# ECI assignment number -> Python codec (AIM ECI specification; the common subset).
_ECI_ENCODINGS: dict[int, str] = {
    0: "cp437",
    1: "latin-1",
    2: "cp437",
    3: "latin-1",
    **{eci: f"iso8859-{eci - 2}" for eci in range(4, 19) if eci != 14},
    20: "shift_jis",
    21: "cp1250",
    22: "cp1251",
    23: "cp1252",
    24: "cp1256",
    25: "utf-16-be",
    26: "utf-8",
    27: "ascii",
    28: "big5",
    29: "gb18030",
    30: "euc_kr",
}

# GMD retries leave at least this many check symbols of a block un-erased. With every check
# symbol erased, any received word "decodes", so such a candidate carries no evidence; measured on
# 5-H symbols with 6-10 % flipped modules, it only added wrong-but-parseable decodings.
_GMD_SPARE_CHECK_SYMBOLS = 2

# Exceptions reedsolo may raise on an uncorrectable block.
_RS_DECODE_ERRORS = (reedsolo.ReedSolomonError, ZeroDivisionError, ValueError, IndexError)


# --------------------------------------------------------------------------------------------
# Exceptions
# --------------------------------------------------------------------------------------------


class QRError(Exception):
    """Base class of the errors raised by this module."""


class QRParameterError(QRError, ValueError):
    """An argument (version, ECC level, mask pattern, array shape, ...) is invalid."""


class InvalidVersionError(QRParameterError):
    """The QR version is not an integer in 1..40."""


class InvalidECCLevelError(QRParameterError):
    """The error-correction level is not one of "L", "M", "Q", "H"."""


class InvalidMaskPatternError(QRParameterError):
    """The mask pattern is not an integer in 0..7."""


class QRCapacityError(QRError, ValueError):
    """The text does not fit the requested QR version / ECC level.

    Attributes:
        text_length (`int`): Length of the text in UTF-8 bytes.
        version (`int` or `None`): The requested version (`None` when any version was allowed).
        ecc (`str`): The ECC level.
        capacity (`int`): Byte-mode capacity in bytes of the requested version (of version 40
            when `version` is `None`).
    """

    def __init__(self, *, text_length: int, version: int | None, ecc: str, capacity: int) -> None:
        self.text_length = text_length
        self.version = version
        self.ecc = ecc
        self.capacity = capacity
        if version is None:
            where = f"any QR version (1-40) at ECC level {ecc} (at most {capacity} bytes in byte mode at version 40)"
            advice = "Use a shorter text or a lower ECC level (H > Q > M > L in overhead)."
        else:
            where = f"a version-{version} QR symbol at ECC level {ecc} (capacity {capacity} bytes in byte mode)"
            advice = "Use a shorter text, a lower ECC level (H > Q > M > L in overhead), or a larger version."
        super().__init__(f"Text of {text_length} bytes (UTF-8) does not fit {where}. {advice}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_capacity_error,
            (self.text_length, self.version, self.ecc, self.capacity),
        )


def _rebuild_capacity_error(text_length: int, version: int | None, ecc: str, capacity: int) -> QRCapacityError:
    return QRCapacityError(text_length=text_length, version=version, ecc=ecc, capacity=capacity)


# --------------------------------------------------------------------------------------------
# Argument validation
# --------------------------------------------------------------------------------------------


def _check_version(version: Any) -> int:
    if isinstance(version, bool):
        raise InvalidVersionError(f"QR version must be an integer in 1..40, got {version!r}.")
    try:
        value = operator.index(version)
    except TypeError:
        raise InvalidVersionError(f"QR version must be an integer in 1..40, got {version!r}.") from None
    if not MIN_VERSION <= value <= MAX_VERSION:
        raise InvalidVersionError(f"QR version must be in 1..40, got {value}.")
    return value


def _check_ecc(ecc: Any) -> str:
    if not isinstance(ecc, str) or ecc.upper() not in _ECC_FORMAT_BITS:
        raise InvalidECCLevelError(f'ECC level must be one of "L", "M", "Q", "H", got {ecc!r}.')
    return ecc.upper()


def _check_mask_pattern(mask_pattern: Any) -> int:
    if isinstance(mask_pattern, bool):
        raise InvalidMaskPatternError(f"Mask pattern must be an integer in 0..7, got {mask_pattern!r}.")
    try:
        value = operator.index(mask_pattern)
    except TypeError:
        raise InvalidMaskPatternError(f"Mask pattern must be an integer in 0..7, got {mask_pattern!r}.") from None
    if not 0 <= value <= 7:
        raise InvalidMaskPatternError(f"Mask pattern must be in 0..7, got {value}.")
    return value


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


# --------------------------------------------------------------------------------------------
# Symbol geometry
# --------------------------------------------------------------------------------------------


def symbol_size(version: int) -> int:
    """Side length in modules of a QR symbol (without quiet zone).

    Args:
        version (`int`): QR version, 1..40.

    Returns:
        `int`: `17 + 4 * version`.

    Raises:
        [`InvalidVersionError`]: If `version` is not in 1..40.
    """
    return 17 + 4 * _check_version(version)


def max_version_for_size(size: int) -> int:
    """Largest QR version whose symbol fits in a `size x size` grid.

    Args:
        size (`int`): Available side length in modules.

    Returns:
        `int`: The largest version `v` with `17 + 4 * v <= size` (capped at 40), or 0 if even a
        version-1 symbol (21 x 21) does not fit.
    """
    size = operator.index(size)
    if size < 21:
        return 0
    return min((size - 17) // 4, MAX_VERSION)


def _finder_anchor_positions(size: int) -> tuple[tuple[int, int], ...]:
    return ((0, 0), (0, size - 7), (size - 7, 0))


def _alignment_centers(version: int) -> list[tuple[int, int]]:
    """Alignment-pattern centres, excluding the three that would overlap finder patterns."""
    positions = qrcode.util.pattern_position(version)
    if not positions:
        return []
    first, last = positions[0], positions[-1]
    excluded = {(first, first), (first, last), (last, first)}
    return [(r, c) for r in positions for c in positions if (r, c) not in excluded]


@functools.cache
def function_pattern_map(version: int) -> BoolArray:
    """Boolean map of the function modules of a QR symbol.

    Function modules are the finder patterns with their separators, the timing patterns, the
    alignment patterns, both copies of the format information, both copies of the version
    information (versions >= 7) and the dark module. Everything else is a data module
    (including remainder bits).

    Args:
        version (`int`): QR version, 1..40.

    Returns:
        `np.ndarray`: Read-only bool array of shape `(size, size)`, `True` at function modules.
        The array is cached; copy it before modifying.

    Raises:
        [`InvalidVersionError`]: If `version` is not in 1..40.
    """
    version = _check_version(version)
    n = 17 + 4 * version
    fp = np.zeros((n, n), dtype=bool)
    # Finder + separator + format information (+ dark module at (n - 8, 8)).
    fp[0:9, 0:9] = True
    fp[0:9, n - 8 :] = True
    fp[n - 8 :, 0:9] = True
    # Timing patterns.
    fp[6, :] = True
    fp[:, 6] = True
    for r, c in _alignment_centers(version):
        fp[r - 2 : r + 3, c - 2 : c + 3] = True
    if version >= 7:
        fp[0:6, n - 11 : n - 8] = True
        fp[n - 11 : n - 8, 0:6] = True
    return _readonly(fp)


@functools.cache
def data_map(version: int) -> BoolArray:
    """Boolean map of the data modules of a QR symbol (complement of [`function_pattern_map`]).

    Args:
        version (`int`): QR version, 1..40.

    Returns:
        `np.ndarray`: Read-only bool array of shape `(size, size)`, `True` at data modules
        (codeword bits and remainder bits). The array is cached; copy it before modifying.

    Raises:
        [`InvalidVersionError`]: If `version` is not in 1..40.
    """
    return _readonly(~function_pattern_map(version))


def num_data_modules(version: int) -> int:
    """Number of data modules (codeword bits plus remainder bits) of a QR version.

    Args:
        version (`int`): QR version, 1..40.

    Returns:
        `int`: Length of the data-bit vector, e.g. 208 for version 1 and 1568 for version 7.

    Raises:
        [`InvalidVersionError`]: If `version` is not in 1..40.
    """
    return int(np.count_nonzero(data_map(version)))


@functools.cache
def _rs_block_structure(version: int, ecc: str) -> tuple[tuple[int, int], ...]:
    """`(total_codewords, data_codewords)` of every RS block, in block order."""
    return tuple(
        (block.total_count, block.data_count) for block in qrcode.base.rs_blocks(version, _ECC_FORMAT_BITS[ecc])
    )


def _num_data_codewords(version: int, ecc: str) -> int:
    return sum(dc for _, dc in _rs_block_structure(version, ecc))


def _char_count_bits(mode: int, version: int) -> int:
    return _CHAR_COUNT_BITS[mode][0 if version <= 9 else (1 if version <= 26 else 2)]


def capacity(version: int, ecc: str) -> int:
    """Maximum payload in bytes of a single byte-mode segment.

    Args:
        version (`int`): QR version, 1..40.
        ecc (`str`): ECC level, one of "L", "M", "Q", "H".

    Returns:
        `int`: Capacity in bytes (e.g. 7 for 1-H, 2953 for 40-L). Numeric or alphanumeric text
        can hold more characters.

    Raises:
        [`InvalidVersionError`]: If `version` is not in 1..40.
        [`InvalidECCLevelError`]: If `ecc` is not a valid level.
    """
    version = _check_version(version)
    ecc = _check_ecc(ecc)
    bits = 8 * _num_data_codewords(version, ecc) - 4 - _char_count_bits(_MODE_BYTE, version)
    return bits // 8


# --------------------------------------------------------------------------------------------
# Format / version information and function-pattern values
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Data placement, masks, codeword interleaving
# --------------------------------------------------------------------------------------------


@functools.cache
def _placement_order(version: int) -> npt.NDArray[np.intp]:
    """Indices into the row-major data-bit vector, in the standard zig-zag placement order."""
    dmap = data_map(version)
    n = dmap.shape[0]
    vector_index = np.cumsum(dmap.ravel()).reshape(n, n) - 1
    order: list[int] = []
    row, step = n - 1, -1
    for right in range(n - 1, 0, -2):
        if right <= 6:  # skip the vertical timing pattern
            right -= 1
        while True:
            for c in (right, right - 1):
                if dmap[row, c]:
                    order.append(int(vector_index[row, c]))
            row += step
            if row < 0 or row >= n:
                row -= step
                step = -step
                break
    result = np.asarray(order, dtype=np.intp)
    if result.size != vector_index.max() + 1:  # pragma: no cover - internal consistency
        raise AssertionError("placement order does not cover every data module")
    return _readonly(result)


def _mask_condition(mask_pattern: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """The eight data-mask conditions; `i` is the row and `j` the column."""
    if mask_pattern == 0:
        return (i + j) % 2 == 0
    if mask_pattern == 1:
        return i % 2 == 0
    if mask_pattern == 2:
        return j % 3 == 0
    if mask_pattern == 3:
        return (i + j) % 3 == 0
    if mask_pattern == 4:
        return (i // 2 + j // 3) % 2 == 0
    if mask_pattern == 5:
        return (i * j) % 2 + (i * j) % 3 == 0
    if mask_pattern == 6:
        return ((i * j) % 2 + (i * j) % 3) % 2 == 0
    return ((i * j) % 3 + (i + j) % 2) % 2 == 0


@functools.cache
def _mask_vector(version: int, mask_pattern: int) -> BoolArray:
    """The data mask evaluated at the data modules, as a row-major data-bit vector."""
    n = 17 + 4 * version
    i, j = np.indices((n, n))
    return _readonly(_mask_condition(mask_pattern, i, j)[data_map(version)])


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
# Array conversions
# --------------------------------------------------------------------------------------------


def _as_data_vector(array: Any, version: int, *, name: str, dtype: type = bool) -> np.ndarray:
    """Accept a full `(size, size)` matrix or a data-bit vector; return the data-bit vector."""
    arr = np.asarray(array)
    dmap = data_map(version)
    n = dmap.shape[0]
    n_data = num_data_modules(version)
    if arr.shape == (n, n):
        vec = arr[dmap]
    elif arr.shape == (n_data,):
        vec = arr
    else:
        raise QRParameterError(
            f"`{name}` must be a ({n}, {n}) module matrix or a ({n_data},) data-bit vector for a "
            f"version-{version} symbol, got shape {arr.shape}."
        )
    if dtype is bool:
        return vec != 0 if vec.dtype != np.bool_ else vec
    return vec.astype(dtype, copy=False)


def _version_from_size(size: int) -> int:
    if size < 21 or (size - 17) % 4 or (size - 17) // 4 > MAX_VERSION:
        raise QRParameterError(f"{size} is not a valid QR symbol size (17 + 4 * version, version 1..40).")
    return (size - 17) // 4


def _as_square_modules(modules: Any, *, name: str = "modules") -> BoolArray:
    arr = np.asarray(modules)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise QRParameterError(f"`{name}` must be a square 2-D array, got shape {arr.shape}.")
    return arr != 0 if arr.dtype != np.bool_ else arr


# --------------------------------------------------------------------------------------------
# Symbol and encoding
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QRSymbol:
    """An encoded QR symbol and the parameters that rebuild it.

    Args:
        text (`str`): The encoded text.
        version (`int`): QR version, 1..40.
        ecc (`str`): ECC level, one of "L", "M", "Q", "H".
        mask_pattern (`int`): Data mask pattern, 0..7.
        modules (`np.ndarray`): Full symbol, bool `(size, size)`, `True` = dark, no quiet zone.
        data_map (`np.ndarray`): Bool `(size, size)`, `True` at data modules.

    Arrays are stored as read-only copies. Equality compares the parameters and the modules.
    """

    text: str
    version: int
    ecc: str
    mask_pattern: int
    modules: np.ndarray
    data_map: np.ndarray

    def __post_init__(self) -> None:
        version = _check_version(self.version)
        ecc = _check_ecc(self.ecc)
        mask = _check_mask_pattern(self.mask_pattern)
        n = 17 + 4 * version
        modules = np.array(self.modules, dtype=bool)
        dmap = np.array(self.data_map, dtype=bool)
        if modules.shape != (n, n) or dmap.shape != (n, n):
            raise QRParameterError(
                f"A version-{version} symbol needs ({n}, {n}) arrays, got modules {modules.shape} "
                f"and data_map {dmap.shape}."
            )
        if not np.array_equal(dmap, data_map(version)):
            raise QRParameterError(f"`data_map` is not the data-module map of a version-{version} symbol.")
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "ecc", ecc)
        object.__setattr__(self, "mask_pattern", mask)
        object.__setattr__(self, "modules", _readonly(modules))
        object.__setattr__(self, "data_map", _readonly(dmap))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QRSymbol):
            return NotImplemented
        return (
            (self.text, self.version, self.ecc, self.mask_pattern)
            == (other.text, other.version, other.ecc, other.mask_pattern)
            and np.array_equal(self.modules, other.modules)
            and np.array_equal(self.data_map, other.data_map)
        )

    def __hash__(self) -> int:
        return hash((self.text, self.version, self.ecc, self.mask_pattern, self.modules.tobytes()))

    def __repr__(self) -> str:
        return (
            f"QRSymbol(text={self.text!r}, version={self.version}, ecc={self.ecc!r}, "
            f"mask_pattern={self.mask_pattern}, size={self.size})"
        )

    @property
    def size(self) -> int:
        """`int`: Side length in modules (`17 + 4 * version`)."""
        return int(self.modules.shape[0])

    @property
    def num_data_modules(self) -> int:
        """`int`: Number of data modules (length of [`QRSymbol.data_bits`])."""
        return int(np.count_nonzero(self.data_map))

    def data_bits(self) -> BoolArray:
        """The data modules in row-major order.

        Returns:
            `np.ndarray`: 1-D bool array of length `num_data_modules`.
        """
        return self.modules[self.data_map]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe parameters from which [`QRSymbol.from_dict`] rebuilds this symbol.

        Returns:
            `dict`: `{"text": str, "version": int, "ecc": str, "mask_pattern": int}`.
        """
        return {"text": self.text, "version": self.version, "ecc": self.ecc, "mask_pattern": self.mask_pattern}

    @classmethod
    def from_dict(cls, params: Mapping[str, Any]) -> QRSymbol:
        """Re-encode a symbol from the output of [`QRSymbol.to_dict`].

        Args:
            params (`Mapping[str, Any]`): Must contain "text", "version", "ecc" and "mask_pattern".

        Returns:
            [`QRSymbol`]: The re-encoded symbol (identical modules for identical parameters).

        Raises:
            [`QRParameterError`]: If a key is missing or a value is invalid.
            [`QRCapacityError`]: If the text does not fit (corrupted parameters).
        """
        missing = [key for key in ("text", "version", "ecc", "mask_pattern") if key not in params]
        if missing:
            raise QRParameterError(f"QR parameters are missing key(s) {missing}; got keys {sorted(params)}.")
        text = params["text"]
        if not isinstance(text, str):
            raise QRParameterError(f'QR parameter "text" must be a string, got {type(text).__name__}.')
        return encode(text, version=params["version"], ecc=params["ecc"], mask_pattern=params["mask_pattern"])


def _segments(text: str) -> list[qrcode.util.QRData]:
    # qrcode's default segmentation (QRCode.add_data(optimize=20)): numeric / alphanumeric runs of
    # at least 20 bytes get their own segment, the rest is byte mode (UTF-8, no ECI).
    return list(qrcode.util.optimal_data_chunks(text.encode("utf-8"), minimum=20))


def _bitstream_length(segments: list[qrcode.util.QRData], version: int) -> int:
    buffer = qrcode.util.BitBuffer()
    for seg in segments:
        buffer.put(seg.mode, 4)
        buffer.put(len(seg), qrcode.util.length_in_bits(seg.mode, version))
        seg.write(buffer)
    return len(buffer)


def _fits(segments: list[qrcode.util.QRData], version: int, ecc: str) -> bool:
    return _bitstream_length(segments, version) <= 8 * _num_data_codewords(version, ecc)


def encode(
    text: str,
    *,
    version: int | None = None,
    ecc: str = "H",
    mask_pattern: int | None = None,
) -> QRSymbol:
    """Encode text into a QR symbol with the pinned `qrcode` encoder.

    The text is UTF-8 encoded and segmented exactly as `qrcode.QRCode.add_data` does by default
    (numeric / alphanumeric runs of 20+ characters get their own segment; no ECI header), so the
    same inputs always give identical modules.

    Args:
        text (`str`): Text to encode.
        version (`int`, *optional*):
            QR version 1..40. If `None`, the smallest version that holds the text is used.
        ecc (`str`, *optional*, defaults to `"H"`):
            ECC level, one of "L", "M", "Q", "H" (case-insensitive).
        mask_pattern (`int`, *optional*):
            Data mask 0..7. If `None`, `qrcode` picks the mask with the lowest penalty score and
            the choice is recorded in the returned symbol.

    Returns:
        [`QRSymbol`]: The symbol; `to_dict()` gives the parameters to store in a key file.

    Raises:
        [`QRCapacityError`]: If the text does not fit `version` (or any version when `version` is
            `None`) at this ECC level.
        [`InvalidVersionError`], [`InvalidECCLevelError`], [`InvalidMaskPatternError`]:
            For invalid arguments.
        `TypeError`: If `text` is not a string.

    Example:

    >>> from hf_lottery_verify.qr import encode
    >>> symbol = encode("owner: alice", ecc="H")
    >>> symbol.version, symbol.size, symbol.num_data_modules
    (2, 25, 359)
    >>> encode("owner: alice", ecc="H", mask_pattern=symbol.mask_pattern) == symbol
    True
    """
    if not isinstance(text, str):
        raise TypeError(f"`text` must be a str, got {type(text).__name__}.")
    ecc = _check_ecc(ecc)
    if version is not None:
        version = _check_version(version)
    if mask_pattern is not None:
        mask_pattern = _check_mask_pattern(mask_pattern)

    segments = _segments(text)
    n_bytes = len(text.encode("utf-8"))
    # Checked here rather than by catching qrcode's DataOverflowError: qrcode 8.2's best_fit
    # raises a plain ValueError ("Invalid version (was 41 ...)") when nothing fits.
    if not _fits(segments, version or MAX_VERSION, ecc):
        raise QRCapacityError(
            text_length=n_bytes, version=version, ecc=ecc, capacity=capacity(version or MAX_VERSION, ecc)
        )

    qr = qrcode.QRCode(
        version=version,
        error_correction=_ECC_FORMAT_BITS[ecc],
        box_size=1,
        border=0,
        mask_pattern=mask_pattern,
    )
    for seg in segments:
        qr.add_data(seg)
    qr.make(fit=version is None)

    modules = np.array(qr.modules, dtype=bool)
    used_version = int(qr.version)
    read_ecc, read_mask, distance = _read_format_info(modules)
    if distance != 0 or read_ecc != ecc or (mask_pattern is not None and read_mask != mask_pattern):
        raise RuntimeError(  # pragma: no cover - would mean the pinned encoder changed behaviour
            f"qrcode produced unexpected format information ({read_ecc}, {read_mask}, distance {distance})."
        )
    return QRSymbol(
        text=text,
        version=used_version,
        ecc=ecc,
        mask_pattern=read_mask,
        modules=modules,
        data_map=data_map(used_version),
    )


def strip(symbol: QRSymbol | np.ndarray) -> BoolArray:
    """Data-bit vector of a symbol (its data modules in row-major order).

    Args:
        symbol ([`QRSymbol`] or `np.ndarray`):
            A symbol, or a full `(size, size)` module matrix (the version is inferred from the size).

    Returns:
        `np.ndarray`: 1-D bool array of length `num_data_modules(version)`.

    Raises:
        [`QRParameterError`]: If the matrix is not square or its size is not a QR size.
    """
    if isinstance(symbol, QRSymbol):
        return symbol.data_bits()
    modules = _as_square_modules(symbol)
    return modules[data_map(_version_from_size(modules.shape[0]))]


def restore(data: np.ndarray, *, version: int, ecc: str, mask_pattern: int) -> BoolArray:
    """Rebuild a full symbol from its data modules.

    Finder patterns, separators, timing and alignment patterns, the dark module, the format
    information for `(ecc, mask_pattern)` and (version >= 7) the version information are put back.

    Args:
        data (`np.ndarray`):
            Either a full `(size, size)` matrix (only data-module positions are read) or the 1-D
            data-bit vector. Non-bool values are interpreted as `value != 0`.
        version (`int`): QR version, 1..40.
        ecc (`str`): ECC level, one of "L", "M", "Q", "H".
        mask_pattern (`int`): Data mask 0..7.

    Returns:
        `np.ndarray`: New bool `(size, size)` array. For an unmodified symbol
        `restore(symbol.data_bits(), ...)` equals `symbol.modules`.

    Raises:
        [`QRParameterError`]: If an argument is invalid or `data` has the wrong shape.

    Example:

    >>> import numpy as np
    >>> from hf_lottery_verify.qr import encode, restore
    >>> symbol = encode("owner: alice", ecc="H")
    >>> full = restore(symbol.data_bits(), version=symbol.version, ecc="H", mask_pattern=symbol.mask_pattern)
    >>> bool(np.array_equal(full, symbol.modules))
    True
    """
    version = _check_version(version)
    ecc = _check_ecc(ecc)
    mask_pattern = _check_mask_pattern(mask_pattern)
    bits = _as_data_vector(data, version, name="data")
    out = _function_template(version, ecc, mask_pattern).copy()
    out[data_map(version)] = bits
    return out


# --------------------------------------------------------------------------------------------
# Known-format decoding
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
    """

    text: str | None
    ok: bool
    corrected_codewords: int = 0
    erased_codewords: int = 0
    failed_blocks: int = 0
    reason: str | None = None


@dataclass(frozen=True)
class _BlockDecode:
    data: bytes
    corrected: int
    erased: int


class _BitReader:
    def __init__(self, payload: bytes) -> None:
        self._value = int.from_bytes(payload, "big")
        self.length = 8 * len(payload)
        self.pos = 0

    @property
    def remaining(self) -> int:
        return self.length - self.pos

    def read(self, n: int) -> int:
        if n > self.remaining:
            raise _ParseError(f"bitstream ended inside a field ({n} bits needed, {self.remaining} left)")
        self.pos += n
        return (self._value >> (self.length - self.pos)) & ((1 << n) - 1)


class _ParseError(Exception):
    pass


def _read_numeric(reader: _BitReader, count: int) -> bytes:
    # Groups of 3 digits in 10 bits; a final group of 2 digits takes 7 bits, of 1 digit 4 bits.
    groups = [(10, 3)] * (count // 3) + {0: [], 1: [(4, 1)], 2: [(7, 2)]}[count % 3]
    digits: list[str] = []
    for width, n_digits in groups:
        value = reader.read(width)
        if value >= 10**n_digits:
            raise _ParseError(f"invalid numeric group {value}")
        digits.append(str(value).zfill(n_digits))
    return "".join(digits).encode("ascii")


def _read_alphanumeric(reader: _BitReader, count: int) -> bytes:
    chars: list[str] = []
    for _ in range(count // 2):
        value = reader.read(11)
        if value >= 45 * 45:
            raise _ParseError(f"invalid alphanumeric pair {value}")
        chars.append(_ALPHANUMERIC_CHARSET[value // 45] + _ALPHANUMERIC_CHARSET[value % 45])
    if count % 2:
        value = reader.read(6)
        if value >= 45:
            raise _ParseError(f"invalid alphanumeric character {value}")
        chars.append(_ALPHANUMERIC_CHARSET[value])
    return "".join(chars).encode("ascii")


def _read_kanji(reader: _BitReader, count: int) -> bytes:
    out = bytearray()
    for _ in range(count):
        value = reader.read(13)
        sjis = ((value // 0xC0) << 8) | (value % 0xC0)
        sjis += 0x8140 if sjis < 0x1F00 else 0xC140
        out += sjis.to_bytes(2, "big")
    return bytes(out)


def _read_eci(reader: _BitReader) -> int:
    first = reader.read(8)
    if first & 0x80 == 0:
        return first
    if first & 0xC0 == 0x80:
        return ((first & 0x3F) << 8) | reader.read(8)
    if first & 0xE0 == 0xC0:
        return ((first & 0x1F) << 16) | reader.read(16)
    raise _ParseError(f"invalid ECI designator prefix {first:#04x}")


def _check_padding(reader: _BitReader) -> None:
    """After the terminator: zero bits to the byte boundary, then alternating 0xEC / 0x11."""
    fill = (-reader.pos) % 8
    if fill > reader.remaining or reader.read(fill) != 0:
        raise _ParseError("non-zero bits after the terminator")
    i = 0
    while reader.remaining >= 8:
        if reader.read(8) != _PAD_BYTES[i % 2]:
            raise _ParseError("invalid pad codeword")
        i += 1


def _decode_text(pieces: list[tuple[str | None, bytes]], *, strict_utf8: bool) -> str:
    """Decode `(encoding, bytes)` runs; `None` = default (UTF-8, else Latin-1 unless strict)."""
    merged: list[tuple[str | None, bytearray]] = []
    for encoding, raw in pieces:
        if merged and merged[-1][0] == encoding:
            merged[-1][1].extend(raw)
        else:
            merged.append((encoding, bytearray(raw)))
    parts: list[str] = []
    for encoding, raw in merged:
        try:
            parts.append(raw.decode(encoding or "utf-8"))
        except UnicodeDecodeError:
            if encoding is not None or strict_utf8:
                raise _ParseError(f"byte data is not valid {encoding or 'utf-8'}") from None
            parts.append(raw.decode("latin-1"))
    return "".join(parts)


def _parse_bitstream(payload: bytes, version: int, *, strict_utf8: bool = False) -> str:
    """Parse the data codewords of a QR symbol into text; raises `_ParseError` when invalid."""
    reader = _BitReader(payload)
    pieces: list[tuple[str | None, bytes]] = []
    encoding: str | None = None
    while True:
        if reader.remaining < 4:  # terminator truncated at the end of the symbol
            if reader.read(reader.remaining) != 0:
                raise _ParseError("non-zero bits after the last segment")
            break
        mode = reader.read(4)
        if mode == _MODE_TERMINATOR:
            _check_padding(reader)
            break
        if mode == _MODE_ECI:
            eci = _read_eci(reader)
            if eci not in _ECI_ENCODINGS:
                raise _ParseError(f"unsupported ECI {eci}")
            encoding = _ECI_ENCODINGS[eci]
            continue
        if mode not in _CHAR_COUNT_BITS:
            raise _ParseError(f"unsupported mode indicator {mode:04b}")
        count = reader.read(_char_count_bits(mode, version))
        if mode == _MODE_NUMERIC:
            pieces.append((encoding, _read_numeric(reader, count)))
        elif mode == _MODE_ALPHANUMERIC:
            pieces.append((encoding, _read_alphanumeric(reader, count)))
        elif mode == _MODE_BYTE:
            if 8 * count > reader.remaining:
                raise _ParseError(f"byte segment of {count} bytes exceeds the bitstream")
            pieces.append((encoding, reader.read(8 * count).to_bytes(count, "big")))
        else:
            pieces.append(("shift_jis", _read_kanji(reader, count)))
    return _decode_text(pieces, strict_utf8=strict_utf8)


def _rs_decode_block(received: bytes, nsym: int, erase_pos: list[int]) -> _BlockDecode | None:
    try:
        _, full, _ = _rs_codec(nsym).decode(received, erase_pos=erase_pos or None)
    except _RS_DECODE_ERRORS:
        return None
    n_data = len(received) - nsym
    corrected = sum(a != b for a, b in zip(full, received, strict=True))
    return _BlockDecode(data=bytes(full[:n_data]), corrected=corrected, erased=len(erase_pos))


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


def _try_parse(decodes: list[_BlockDecode], version: int, *, strict_utf8: bool) -> str | None:
    return _parse_or_reason(decodes, version, strict_utf8=strict_utf8)[0]


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
    text = _try_parse(current, version, strict_utf8=True)
    if text is not None:
        return _success(text, current)
    for b in suspects:
        for alternative in candidates[b][1:]:
            trial = list(current)
            trial[b] = alternative
            text = _try_parse(trial, version, strict_utf8=True)
            if text is not None:
                return _success(text, trial)
    return None


# --------------------------------------------------------------------------------------------
# Rendering and image decoding
# --------------------------------------------------------------------------------------------


def render(modules: np.ndarray, *, border: int = 4, scale: int = 4) -> Image.Image:
    """Render a module matrix as a black-on-white grayscale image.

    Args:
        modules (`np.ndarray`): Square bool matrix, `True` = dark.
        border (`int`, *optional*, defaults to 4): Quiet zone width in modules.
        scale (`int`, *optional*, defaults to 4): Pixels per module.

    Returns:
        `PIL.Image.Image`: Mode "L" image of side `(size + 2 * border) * scale`.

    Raises:
        [`QRParameterError`]: If `modules` is not square, `border < 0` or `scale < 1`.
    """
    grid = _as_square_modules(modules)
    border = operator.index(border)
    scale = operator.index(scale)
    if border < 0 or scale < 1:
        raise QRParameterError(f"Need border >= 0 and scale >= 1, got border={border}, scale={scale}.")
    padded = np.pad(grid, border, constant_values=False)
    pixels = np.where(padded, 0, 255).astype(np.uint8)
    pixels = np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1)
    return Image.fromarray(pixels)


def decode_image(modules: np.ndarray, *, border: int = 4, scale: int = 4) -> str | None:
    """Decode a module matrix with the ZBar image decoder (independent cross-check).

    The matrix is rendered with [`render`] and scanned by ZBar through `pyzbar`'s ctypes
    bindings with only the QR symbology enabled. Where the ZBar library supports it (0.23+), the
    scanner runs in binary mode so the payload bytes come back unconverted and are decoded as
    UTF-8 (Latin-1 fallback); otherwise ZBar's own character-set guess is used, which can
    misread short non-ASCII UTF-8 payloads as Shift-JIS.

    Args:
        modules (`np.ndarray`): Full square bool matrix, `True` = dark, without quiet zone.
        border (`int`, *optional*, defaults to 4): Quiet zone width in modules.
        scale (`int`, *optional*, defaults to 4): Pixels per module.

    Returns:
        `str` or `None`: The decoded text, or `None` if ZBar finds no QR code.

    Raises:
        `ImportError`: If `pyzbar` or the ZBar system library is missing.
        [`QRParameterError`]: If `modules` is not square, `border < 0` or `scale < 1`.
    """
    image = render(modules, border=border, scale=scale)
    try:
        from pyzbar import wrapper as zbar
    except ImportError as exc:
        raise ImportError(
            "decode_image needs pyzbar and the ZBar shared library: `pip install pyzbar` and "
            f"`apt-get install -y libzbar0` (Debian/Ubuntu). Original error: {exc}"
        ) from exc
    raw = _zbar_scan_qr(zbar, image)
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


_ZBAR_FOURCC_Y800 = 0x30303859  # 8-bit grayscale


def _zbar_scan_qr(zbar: Any, image: Image.Image) -> bytes | None:
    """Payload of the first QR code ZBar finds in a mode "L" image (binary mode if supported)."""
    from ctypes import byref, c_int, c_void_p, cast, string_at

    pixels = image.tobytes()
    width, height = image.size
    scanner = zbar.zbar_image_scanner_create()
    if not scanner:  # pragma: no cover - allocation failure inside ZBar
        raise MemoryError("ZBar could not create an image scanner")
    try:
        zbar.zbar_image_scanner_set_config(scanner, zbar.ZBarSymbol.NONE, zbar.ZBarConfig.CFG_ENABLE, 0)
        zbar.zbar_image_scanner_set_config(scanner, zbar.ZBarSymbol.QRCODE, zbar.ZBarConfig.CFG_ENABLE, 1)
        symbology, config, value = c_int(), c_int(), c_int()
        if zbar.zbar_parse_config(b"qrcode.binary=1", byref(symbology), byref(config), byref(value)) == 0:
            zbar.zbar_image_scanner_set_config(scanner, symbology.value, config.value, value.value)
        zimage = zbar.zbar_image_create()
        if not zimage:  # pragma: no cover - allocation failure inside ZBar
            raise MemoryError("ZBar could not create an image")
        try:
            zbar.zbar_image_set_format(zimage, _ZBAR_FOURCC_Y800)
            zbar.zbar_image_set_size(zimage, width, height)
            zbar.zbar_image_set_data(zimage, cast(pixels, c_void_p), len(pixels), None)
            if zbar.zbar_scan_image(scanner, zimage) <= 0:
                return None
            symbol = zbar.zbar_image_first_symbol(zimage)
            while symbol:
                if symbol.contents.type == zbar.ZBarSymbol.QRCODE:
                    return string_at(zbar.zbar_symbol_get_data(symbol), zbar.zbar_symbol_get_data_length(symbol))
                symbol = zbar.zbar_symbol_next(symbol)
            return None
        finally:
            zbar.zbar_image_destroy(zimage)
    finally:
        zbar.zbar_image_scanner_destroy(scanner)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def bit_agreement(a: np.ndarray, b: np.ndarray, *, where: np.ndarray | None = None) -> float:
    """Fraction of positions where two bit arrays agree.

    Args:
        a (`np.ndarray`): Bit array (non-bool values are interpreted as `value != 0`).
        b (`np.ndarray`): Bit array of the same shape.
        where (`np.ndarray`, *optional*): Bool mask of the same shape selecting the positions.

    Returns:
        `float`: Agreement in [0, 1].

    Raises:
        [`QRParameterError`]: If the shapes differ or no position is selected.
    """
    a_arr, b_arr = np.asarray(a) != 0, np.asarray(b) != 0
    if a_arr.shape != b_arr.shape:
        raise QRParameterError(f"Shapes differ: {a_arr.shape} vs {b_arr.shape}.")
    equal = a_arr == b_arr
    if where is not None:
        mask = np.asarray(where, dtype=bool)
        if mask.shape != a_arr.shape:
            raise QRParameterError(f"`where` has shape {mask.shape}, expected {a_arr.shape}.")
        equal = equal[mask]
    if equal.size == 0:
        raise QRParameterError("No positions to compare.")
    return float(np.count_nonzero(equal)) / float(equal.size)
