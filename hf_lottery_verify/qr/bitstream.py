"""The QR bitstream: mode indicators, character-count lengths and parsing of the data codewords.

Encoding is left to the pinned `qrcode` package; this module only reads a bitstream back (numeric,
alphanumeric and byte segments, terminator and padding), for [`decode_known`]. Kanji and ECI
segments are refused as unsupported modes: `qrcode` never writes them, so a key-file symbol cannot
hold one.
"""

from __future__ import annotations

import qrcode.util

# Mode indicators.
_MODE_TERMINATOR = 0b0000
_MODE_NUMERIC = 0b0001
_MODE_ALPHANUMERIC = 0b0010
_MODE_BYTE = 0b0100

_ALPHANUMERIC_CHARSET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_PAD_BYTES = (0xEC, 0x11)

_SUPPORTED_MODES = (_MODE_NUMERIC, _MODE_ALPHANUMERIC, _MODE_BYTE)


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


def _decode_text(raw: bytes, *, strict_utf8: bool) -> str:
    """Decode the segments' bytes as UTF-8, else as Latin-1 (unless `strict_utf8`)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        if strict_utf8:
            raise _ParseError("byte data is not valid utf-8") from None
        return raw.decode("latin-1")


def _parse_bitstream(payload: bytes, version: int, *, strict_utf8: bool = False) -> str:
    """Parse the data codewords of a QR symbol into text; raises `_ParseError` when invalid."""
    reader = _BitReader(payload)
    pieces: list[bytes] = []
    while True:
        if reader.remaining < 4:  # terminator truncated at the end of the symbol
            if reader.read(reader.remaining) != 0:
                raise _ParseError("non-zero bits after the last segment")
            break
        mode = reader.read(4)
        if mode == _MODE_TERMINATOR:
            _check_padding(reader)
            break
        if mode not in _SUPPORTED_MODES:
            raise _ParseError(f"unsupported mode indicator {mode:04b}")
        count = reader.read(qrcode.util.length_in_bits(mode, version))
        if mode == _MODE_NUMERIC:
            pieces.append(_read_numeric(reader, count))
        elif mode == _MODE_ALPHANUMERIC:
            pieces.append(_read_alphanumeric(reader, count))
        else:
            if 8 * count > reader.remaining:
                raise _ParseError(f"byte segment of {count} bytes exceeds the bitstream")
            pieces.append(reader.read(8 * count).to_bytes(count, "big"))
    return _decode_text(b"".join(pieces), strict_utf8=strict_utf8)
