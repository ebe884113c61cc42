"""The QR bitstream: mode indicators, character-count lengths and parsing of the data codewords.

Encoding is left to the pinned `qrcode` package; this module only reads a bitstream back (numeric,
alphanumeric, byte, Kanji and ECI segments, terminator and padding), for [`decode_known`].
"""

from __future__ import annotations

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


def _char_count_bits(mode: int, version: int) -> int:
    return _CHAR_COUNT_BITS[mode][0 if version <= 9 else (1 if version <= 26 else 2)]


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
