"""[`QRSymbol`] and the symbol-level operations: [`encode`], [`strip`] and [`restore`]."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import qrcode
import qrcode.util

from .errors import QRCapacityError, QRParameterError
from .layout import (
    _ECC_FORMAT_BITS,
    MAX_VERSION,
    BoolArray,
    _as_data_vector,
    _as_square_modules,
    _check_ecc,
    _check_mask_pattern,
    _check_version,
    _num_data_codewords,
    _readonly,
    _version_from_size,
    capacity,
    data_map,
)

__all__ = ["QRSymbol", "encode", "restore", "strip"]


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

    Build symbols with [`encode`] (or [`QRSymbol.from_dict`]), which checks the parameters; arrays
    are stored as read-only copies. Equality compares the parameters and the modules.
    """

    text: str
    version: int
    ecc: str
    mask_pattern: int
    modules: np.ndarray
    data_map: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "modules", _readonly(np.array(self.modules, dtype=bool)))
        object.__setattr__(self, "data_map", _readonly(np.array(self.data_map, dtype=bool)))

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

    qr = qrcode.QRCode(version=version, error_correction=_ECC_FORMAT_BITS[ecc])
    for seg in segments:
        qr.add_data(seg)
    if version is None:
        qr.best_fit()
    # what QRCode.make() does, with the chosen mask kept for the key file
    mask_pattern = qr.best_mask_pattern() if mask_pattern is None else mask_pattern
    qr.makeImpl(False, mask_pattern)
    used_version = int(qr.version)
    return QRSymbol(
        text=text,
        version=used_version,
        ecc=ecc,
        mask_pattern=mask_pattern,
        modules=np.array(qr.modules, dtype=bool),
        data_map=data_map(used_version),
    )


@functools.cache
def _function_template(version: int, ecc: str, mask_pattern: int) -> BoolArray:
    """Full symbol with every function module drawn by the pinned `qrcode` encoder and every data module light."""
    n = 17 + 4 * version
    qr = qrcode.QRCode(version=version, error_correction=_ECC_FORMAT_BITS[ecc])
    qr.modules_count, qr.modules = n, [[None] * n for _ in range(n)]
    for row, col in ((0, 0), (n - 7, 0), (0, n - 7)):
        qr.setup_position_probe_pattern(row, col)
    qr.setup_position_adjust_pattern()
    qr.setup_timing_pattern()
    qr.setup_type_info(False, mask_pattern)  # format information and the dark module
    if version >= 7:
        qr.setup_type_number(False)
    return _readonly(np.array([[cell is True for cell in row] for row in qr.modules], dtype=bool))


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
