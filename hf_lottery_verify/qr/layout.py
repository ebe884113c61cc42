"""Where things are in a QR symbol: versions, sizes, function-pattern and data maps, capacity.

Also the standard zig-zag placement order of the codeword bits, the eight data masks, argument
validation and the conversions between module matrices and data-bit vectors that the other
modules of `hf_lottery_verify.qr` share.
"""

from __future__ import annotations

import functools
import operator
from typing import Any

import numpy as np
import numpy.typing as npt
import qrcode.base
import qrcode.constants
import qrcode.util

from .errors import InvalidECCLevelError, InvalidMaskPatternError, InvalidVersionError, QRParameterError

__all__ = [
    "ECC_LEVELS",
    "capacity",
    "data_map",
    "function_pattern_map",
    "num_data_modules",
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


# --------------------------------------------------------------------------------------------
# Argument validation
# --------------------------------------------------------------------------------------------


def _check_int(value: Any, lo: int, hi: int, error: type[QRParameterError], what: str) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise error(f"{what} must be an integer in {lo}..{hi}, got {value!r}.") from None
    if not lo <= number <= hi:
        raise error(f"{what} must be in {lo}..{hi}, got {number}.")
    return number


def _check_version(version: Any) -> int:
    return _check_int(version, MIN_VERSION, MAX_VERSION, InvalidVersionError, "QR version")


def _check_ecc(ecc: Any) -> str:
    if not isinstance(ecc, str) or ecc.upper() not in _ECC_FORMAT_BITS:
        raise InvalidECCLevelError(f'ECC level must be one of "L", "M", "Q", "H", got {ecc!r}.')
    return ecc.upper()


def _check_mask_pattern(mask_pattern: Any) -> int:
    return _check_int(mask_pattern, 0, 7, InvalidMaskPatternError, "Mask pattern")


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
    bits = 8 * _num_data_codewords(version, ecc) - 4 - qrcode.util.length_in_bits(qrcode.util.MODE_8BIT_BYTE, version)
    return bits // 8


# --------------------------------------------------------------------------------------------
# Data placement and masks
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


@functools.cache
def _mask_vector(version: int, mask_pattern: int) -> BoolArray:
    """The data mask evaluated at the data modules, as a row-major data-bit vector."""
    n = 17 + 4 * version
    condition = np.vectorize(qrcode.util.mask_func(mask_pattern), otypes=[bool])  # the pinned encoder's masks
    return _readonly(condition(*np.indices((n, n)))[data_map(version)])


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
