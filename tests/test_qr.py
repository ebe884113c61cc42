"""Tests for hf_lottery_verify.qr: encoding, geometry, restore and the two decoders."""

from __future__ import annotations

import json
import string
import sys

import numpy as np
import pytest
import qrcode.base
import reedsolo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_lottery_verify import qr
from hf_lottery_verify.qr.bitstream import _parse_bitstream, _ParseError
from hf_lottery_verify.qr.decode import _block_layout
from hf_lottery_verify.qr.layout import _mask_vector, _placement_order

VERSIONS = range(1, 11)
MASKS = range(8)
NON_ASCII_POOL = "äöüßéèñçÅØ€£¥✓→★漢字かなカナ한글😀🚀"
ASCII_POOL = string.ascii_letters + string.digits + string.punctuation + " "
ALNUM_POOL = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"

# Remainder bits per version range (ISO/IEC 18004, Table 1).
REMAINDER_BITS = {
    1: 0,
    **dict.fromkeys(range(2, 7), 7),
    **dict.fromkeys(range(7, 14), 0),
    **dict.fromkeys(range(14, 21), 3),
    **dict.fromkeys(range(21, 28), 4),
    **dict.fromkeys(range(28, 35), 3),
    **dict.fromkeys(range(35, 41), 0),
}


def _random_text(rng: np.random.Generator, max_bytes: int, kind: str) -> str:
    """Seeded random text whose UTF-8 length is at most `max_bytes` (so it fits byte mode)."""
    n = int(rng.integers(1, max_bytes + 1))
    if kind == "numeric":
        return "".join(rng.choice(list(string.digits), size=n))
    if kind == "alnum":
        return "".join(rng.choice(list(ALNUM_POOL), size=n))
    pool = ASCII_POOL if kind == "ascii" else ASCII_POOL + NON_ASCII_POOL * 3
    out = ""
    while True:
        ch = str(rng.choice(list(pool)))
        if len((out + ch).encode("utf-8")) > n:
            return out or "x"
        out += ch


def _flip_codeword_bits(symbol: qr.QRSymbol, block: int, n_codewords: int) -> np.ndarray:
    """Module mask flipping one bit in each of the first `n_codewords` codewords of an RS block."""
    layout = _block_layout(symbol.version, symbol.ecc)
    order = _placement_order(symbol.version)
    vec = np.zeros(symbol.num_data_modules, dtype=bool)
    for cw in layout[block].stream_index[:n_codewords]:
        vec[order[8 * int(cw) + 3]] = True  # bit 3 of that codeword
    full = np.zeros_like(symbol.modules)
    full[symbol.data_map] = vec
    return full


def _data_bits_from_codewords(version: int, ecc: str, mask: int, data: bytes) -> np.ndarray:
    """Independent symbol builder: RS-encode data codewords, interleave, place and mask them."""
    layout = _block_layout(version, ecc)
    stream = np.zeros(sum(b.stream_index.size for b in layout), dtype=np.uint8)
    offset = 0
    for block in layout:
        message = data[offset : offset + block.data_count]
        offset += block.data_count
        codeword = reedsolo.RSCodec(block.ec_count).encode(message)
        stream[block.stream_index] = np.frombuffer(bytes(codeword), dtype=np.uint8)
    vec = np.zeros(qr.num_data_modules(version), dtype=bool)
    vec[_placement_order(version)[: 8 * stream.size]] = np.unpackbits(stream).astype(bool)
    return vec ^ _mask_vector(version, mask)


# ------------------------------------------------------------------------------------------
# Geometry
# ------------------------------------------------------------------------------------------


def test_data_module_counts_known_values() -> None:
    assert qr.num_data_modules(1) == 208
    assert qr.num_data_modules(7) == 1568
    assert qr.num_data_modules(40) == 29648


@pytest.mark.parametrize("version", range(1, 41))
def test_data_map_matches_codewords_plus_remainder(version: int) -> None:
    total_codewords = sum(b.total_count for b in qrcode.base.rs_blocks(version, 0))
    expected = 8 * total_codewords + REMAINDER_BITS[version]
    # Independent closed form (raw data modules per version).
    raw = (16 * version + 128) * version + 64
    if version >= 2:
        n_align = version // 7 + 2
        raw -= (25 * n_align - 10) * n_align - 55
        if version >= 7:
            raw -= 36
    dmap = qr.data_map(version)
    assert dmap.shape == (qr.symbol_size(version),) * 2
    assert int(dmap.sum()) == expected == raw == qr.num_data_modules(version)
    assert np.array_equal(dmap, ~qr.function_pattern_map(version))


def test_function_pattern_map_layout() -> None:
    fp = qr.function_pattern_map(7)
    n = fp.shape[0]
    assert fp[:9, :9].all() and fp[:9, n - 8 :].all() and fp[n - 8 :, :9].all()
    assert fp[6, :].all() and fp[:, 6].all()
    assert fp[:6, n - 11 : n - 8].all() and fp[n - 11 : n - 8, :6].all()  # version info
    assert fp[22 - 2 : 22 + 3, 22 - 2 : 22 + 3].all()  # central alignment pattern
    assert not fp[9, 9] and not fp[n - 1, n - 1]
    assert not qr.function_pattern_map(6)[:6, n - 15 : n - 12].all()  # no version info below v7
    with pytest.raises(ValueError):
        fp[0, 0] = False  # cached arrays are read-only


@pytest.mark.parametrize(
    ("version", "ecc", "expected"),
    [
        (1, "L", 17),
        (1, "M", 14),
        (1, "Q", 11),
        (1, "H", 7),
        (10, "L", 271),
        (10, "H", 119),
        (40, "L", 2953),
        (40, "M", 2331),
        (40, "Q", 1663),
        (40, "H", 1273),
    ],
)
def test_capacity_standard_values(version: int, ecc: str, expected: int) -> None:
    assert qr.capacity(version, ecc) == expected


@pytest.mark.parametrize(("version", "ecc"), [(1, "H"), (5, "Q"), (9, "L"), (10, "M"), (27, "H")])
def test_capacity_is_tight_for_byte_text(version: int, ecc: str) -> None:
    cap = qr.capacity(version, ecc)
    symbol = qr.encode("a" * cap, version=version, ecc=ecc)
    assert symbol.version == version
    with pytest.raises(qr.QRCapacityError):
        qr.encode("a" * (cap + 1), version=version, ecc=ecc)


# ------------------------------------------------------------------------------------------
# Round trips over versions 1-10 x all ECC levels x all masks
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("ecc", qr.ECC_LEVELS)
@pytest.mark.parametrize("version", VERSIONS)
def test_round_trip(version: int, ecc: str, mask: int) -> None:
    rng = np.random.default_rng([version, qr.ECC_LEVELS.index(ecc), mask])
    kind = ("ascii", "utf8", "numeric", "alnum")[(version + mask) % 4]
    text = _random_text(rng, qr.capacity(version, ecc), kind)

    symbol = qr.encode(text, version=version, ecc=ecc, mask_pattern=mask)
    assert (symbol.version, symbol.ecc, symbol.mask_pattern) == (version, ecc, mask)
    assert symbol.modules.shape == (symbol.size, symbol.size) == (17 + 4 * version,) * 2

    bits = qr.strip(symbol)
    assert bits.shape == (qr.num_data_modules(version),)
    assert np.array_equal(bits, symbol.data_bits())
    assert np.array_equal(qr.restore(bits, version=version, ecc=ecc, mask_pattern=mask), symbol.modules)

    result = qr.decode_known(bits, version=version, ecc=ecc, mask_pattern=mask)
    assert result.ok and result.text == text, result
    assert result.corrected_codewords == 0 and result.failed_blocks == 0 and result.reason is None
    assert qr.decode_image(symbol.modules) == text


@pytest.mark.parametrize("version", [11, 20, 27, 40])
def test_round_trip_large_versions(version: int) -> None:
    rng = np.random.default_rng(version)
    text = _random_text(rng, min(qr.capacity(version, "M"), 600), "utf8")
    symbol = qr.encode(text, version=version, ecc="M")
    bits = symbol.data_bits()
    assert np.array_equal(qr.restore(bits, version=version, ecc="M", mask_pattern=symbol.mask_pattern), symbol.modules)
    assert qr.decode_known(bits, version=version, ecc="M", mask_pattern=symbol.mask_pattern).text == text


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=120), ecc=st.sampled_from(qr.ECC_LEVELS))
def test_round_trip_property(text: str, ecc: str) -> None:
    symbol = qr.encode(text, ecc=ecc)
    params = {"version": symbol.version, "ecc": symbol.ecc, "mask_pattern": symbol.mask_pattern}
    assert np.array_equal(qr.restore(symbol.data_bits(), **params), symbol.modules)
    result = qr.decode_known(symbol.modules, **params)
    assert result.ok and result.text == text
    assert qr.decode_image(symbol.modules) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0123456789" * 5,
        "HELLO WORLD $%*+-./: 0123456789 ABCDEF",
        "prefix-" + "12345678901234567890123" + "-mid-" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ" + " ñ suffix",
        "ünïcödé ✓ 漢字 😀",
        "\x00\x01 control chars",
    ],
)
def test_segment_modes_round_trip(text: str) -> None:
    symbol = qr.encode(text, ecc="M")
    result = qr.decode_known(symbol.data_bits(), version=symbol.version, ecc="M", mask_pattern=symbol.mask_pattern)
    assert result.ok and result.text == text


def test_full_matrix_and_vector_inputs_agree() -> None:
    symbol = qr.encode("same input, two shapes", version=4, ecc="Q", mask_pattern=5)
    params = {"version": 4, "ecc": "Q", "mask_pattern": 5}
    assert qr.decode_known(symbol.modules, **params) == qr.decode_known(symbol.data_bits(), **params)
    ints = symbol.modules.astype(np.uint8)
    assert qr.decode_known(ints, **params).text == symbol.text


def test_restore_ignores_function_modules_of_input() -> None:
    symbol = qr.encode("restore only reads data modules", version=7, ecc="H", mask_pattern=2)
    rng = np.random.default_rng(0)
    scrambled = symbol.modules.copy()
    fp = qr.function_pattern_map(7)
    scrambled[fp] = rng.random(int(fp.sum())) < 0.5
    restored = qr.restore(scrambled, version=7, ecc="H", mask_pattern=2)
    assert np.array_equal(restored, symbol.modules)
    assert restored.flags.writeable


# ------------------------------------------------------------------------------------------
# Determinism and serialization
# ------------------------------------------------------------------------------------------


def test_encode_is_deterministic_and_from_dict_rebuilds() -> None:
    a = qr.encode("deterministic ✓", ecc="H")
    b = qr.encode("deterministic ✓", ecc="H")
    assert a == b and np.array_equal(a.modules, b.modules)
    params = json.loads(json.dumps(a.to_dict()))
    assert params == {"text": "deterministic ✓", "version": a.version, "ecc": "H", "mask_pattern": a.mask_pattern}
    rebuilt = qr.QRSymbol.from_dict(params)
    assert rebuilt == a and np.array_equal(rebuilt.modules, a.modules)
    assert hash(rebuilt) == hash(a)


def test_auto_mask_is_recorded_and_auto_version_is_smallest() -> None:
    symbol = qr.encode("x" * 20, ecc="H")
    assert symbol.version == 3  # 2-H holds 14 bytes, 3-H holds 24
    pinned = qr.encode("x" * 20, version=3, ecc="H", mask_pattern=symbol.mask_pattern)
    assert np.array_equal(pinned.modules, symbol.modules)


def test_symbol_arrays_are_read_only() -> None:
    symbol = qr.encode("read only", version=2)
    with pytest.raises(ValueError):
        symbol.modules[0, 0] = False
    assert "QRSymbol(text='read only', version=2" in repr(symbol)


def test_from_dict_missing_key() -> None:
    with pytest.raises(qr.QRParameterError, match="mask_pattern"):
        qr.QRSymbol.from_dict({"text": "a", "version": 1, "ecc": "H"})


# ------------------------------------------------------------------------------------------
# Argument errors
# ------------------------------------------------------------------------------------------


def test_capacity_error_fixed_version() -> None:
    with pytest.raises(qr.QRCapacityError) as info:
        qr.encode("x" * 8, version=1, ecc="H")
    err = info.value
    assert isinstance(err, ValueError)
    assert (err.text_length, err.version, err.ecc, err.capacity) == (8, 1, "H", 7)
    message = str(err)
    assert "capacity 7 bytes" in message and "shorter text" in message and "larger version" in message


def test_capacity_error_any_version() -> None:
    with pytest.raises(qr.QRCapacityError) as info:
        qr.encode("x" * 1274, ecc="H")
    assert info.value.version is None and info.value.capacity == 1273
    assert "lower ECC level" in str(info.value)


@pytest.mark.parametrize("ecc", ["X", "", "HH", None, 2])
def test_bad_ecc(ecc: object) -> None:
    with pytest.raises(qr.InvalidECCLevelError, match="ECC level"):
        qr.encode("a", ecc=ecc)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        qr.capacity(1, ecc)  # type: ignore[arg-type]


def test_ecc_is_case_insensitive() -> None:
    assert qr.encode("a", ecc="q").ecc == "Q"


@pytest.mark.parametrize("version", [0, 41, -1, 1.5, "5", True])
def test_bad_version(version: object) -> None:
    with pytest.raises(qr.InvalidVersionError, match="version"):
        qr.encode("a", version=version)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        qr.decode_known(np.zeros(208, bool), version=version, ecc="H", mask_pattern=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("mask", [-1, 8, 2.0, True])
def test_bad_mask_pattern(mask: object) -> None:
    with pytest.raises(qr.InvalidMaskPatternError, match="Mask pattern"):
        qr.encode("a", mask_pattern=mask)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        qr.restore(np.zeros(208, bool), version=1, ecc="H", mask_pattern=mask)  # type: ignore[arg-type]


def test_bad_shapes() -> None:
    with pytest.raises(qr.QRParameterError, match="data-bit vector"):
        qr.decode_known(np.zeros((25, 25), bool), version=1, ecc="H", mask_pattern=0)
    with pytest.raises(qr.QRParameterError):
        qr.restore(np.zeros(207, bool), version=1, ecc="H", mask_pattern=0)
    with pytest.raises(qr.QRParameterError):
        qr.strip(np.zeros((22, 22), bool))
    with pytest.raises(TypeError):
        qr.encode(b"bytes")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# Errors, erasures and GMD
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def symbol_5h() -> qr.QRSymbol:
    return qr.encode("hf-lottery-verify: owner=alice model=r20", version=5, ecc="H")


def _params(symbol: qr.QRSymbol) -> dict[str, object]:
    return {"version": symbol.version, "ecc": symbol.ecc, "mask_pattern": symbol.mask_pattern}


def test_errors_within_capacity_are_corrected(symbol_5h: qr.QRSymbol) -> None:
    flips = _flip_codeword_bits(symbol_5h, block=2, n_codewords=11)  # 5-H blocks have 22 EC codewords
    result = qr.decode_known(symbol_5h.modules ^ flips, **_params(symbol_5h))
    assert result.ok and result.text == symbol_5h.text
    assert result.corrected_codewords == 11 and result.erased_codewords == 0


def test_erasures_recover_beyond_error_capacity(symbol_5h: qr.QRSymbol) -> None:
    flips = _flip_codeword_bits(symbol_5h, block=0, n_codewords=18)  # 18 errors > 11 correctable
    noisy = symbol_5h.modules ^ flips
    plain = qr.decode_known(noisy, **_params(symbol_5h))
    assert not plain.ok and plain.text is None
    assert plain.failed_blocks == 1 and "uncorrectable" in plain.reason

    erased = qr.decode_known(noisy, erasures=flips, **_params(symbol_5h))
    assert erased.ok and erased.text == symbol_5h.text
    assert erased.erased_codewords == 18 and erased.corrected_codewords == 18

    # The same works with the data-bit vector form.
    vec = qr.decode_known(noisy[symbol_5h.data_map], erasures=flips[symbol_5h.data_map], **_params(symbol_5h))
    assert vec.ok and vec.text == symbol_5h.text


def test_erasures_combine_with_errors(symbol_5h: qr.QRSymbol) -> None:
    erased = _flip_codeword_bits(symbol_5h, block=1, n_codewords=12)
    extra_errors = _flip_codeword_bits(symbol_5h, block=1, n_codewords=17) & ~erased  # 5 more codewords
    noisy = symbol_5h.modules ^ erased ^ extra_errors
    result = qr.decode_known(noisy, erasures=erased, **_params(symbol_5h))  # 2*5 + 12 = 22 <= 22
    assert result.ok and result.text == symbol_5h.text


def test_too_many_erasures_fail(symbol_5h: qr.QRSymbol) -> None:
    flips = _flip_codeword_bits(symbol_5h, block=3, n_codewords=23)
    result = qr.decode_known(symbol_5h.modules ^ flips, erasures=flips, **_params(symbol_5h))
    assert not result.ok and result.failed_blocks == 1


def test_random_flips_with_erasures(symbol_5h: qr.QRSymbol) -> None:
    rng = np.random.default_rng(7)
    data_idx = np.flatnonzero(symbol_5h.data_map.ravel())
    flips = np.zeros(symbol_5h.modules.size, dtype=bool)
    flips[rng.choice(data_idx, size=round(0.08 * data_idx.size), replace=False)] = True
    flips = flips.reshape(symbol_5h.modules.shape)
    noisy = symbol_5h.modules ^ flips
    assert not qr.decode_known(noisy, **_params(symbol_5h)).ok
    assert qr.decode_image(noisy) is None
    result = qr.decode_known(noisy, erasures=flips, **_params(symbol_5h))
    assert result.ok and result.text == symbol_5h.text


def test_false_erasures_are_harmless(symbol_5h: qr.QRSymbol) -> None:
    erasures = _flip_codeword_bits(symbol_5h, block=0, n_codewords=20)  # erase 20 correct codewords
    result = qr.decode_known(symbol_5h.modules, erasures=erasures, **_params(symbol_5h))
    assert result.ok and result.text == symbol_5h.text and result.corrected_codewords == 0


def test_gmd_uses_reliability(symbol_5h: qr.QRSymbol) -> None:
    flips = _flip_codeword_bits(symbol_5h, block=0, n_codewords=16) | _flip_codeword_bits(
        symbol_5h, block=3, n_codewords=14
    )
    noisy = symbol_5h.modules ^ flips
    rng = np.random.default_rng(3)
    reliability = np.where(flips, rng.uniform(0.0, 0.3, flips.shape), rng.uniform(0.5, 1.0, flips.shape))

    plain = qr.decode_known(noisy, **_params(symbol_5h))
    assert not plain.ok and plain.failed_blocks == 2

    gmd = qr.decode_known(noisy, reliability=reliability, **_params(symbol_5h))
    assert gmd.ok and gmd.text == symbol_5h.text
    assert gmd.erased_codewords >= 2 * (16 - 11)

    # Uninformative reliability (flipped modules look trustworthy) does not help.
    misleading = np.where(flips, 1.0, rng.uniform(0.0, 0.5, flips.shape))
    assert not qr.decode_known(noisy, reliability=misleading, **_params(symbol_5h)).ok


@pytest.mark.parametrize("version", [1, 4, 10])
@pytest.mark.parametrize("ecc", qr.ECC_LEVELS)
def test_noise_is_rejected_without_exception(version: int, ecc: str) -> None:
    rng = np.random.default_rng(version * 10 + qr.ECC_LEVELS.index(ecc))
    n = qr.num_data_modules(version)
    for trial in range(3):
        bits = rng.random(n) < 0.5
        result = qr.decode_known(bits, version=version, ecc=ecc, mask_pattern=trial)
        assert not result.ok and result.text is None and result.reason
        gmd = qr.decode_known(bits, version=version, ecc=ecc, mask_pattern=trial, reliability=rng.random(n))
        assert not gmd.ok and gmd.text is None and gmd.reason


@pytest.mark.parametrize(("version", "ecc", "mask"), [(2, "M", 0), (5, "Q", 3), (8, "H", 6)])
def test_independent_builder_matches_qrcode(version: int, ecc: str, mask: int) -> None:
    symbol = qr.encode("interleaving check", version=version, ecc=ecc, mask_pattern=mask)
    n_data_codewords = sum(b.data_count for b in _block_layout(version, ecc))
    payload = bytearray()  # byte mode, 8-bit count (v < 10), terminator, pad
    bits = "0100" + format(18, "08b") + "".join(format(c, "08b") for c in b"interleaving check") + "0000"
    payload += bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8))
    while len(payload) < n_data_codewords:
        payload.append((0xEC, 0x11)[(len(payload) - len(bits) // 8) % 2])
    assert np.array_equal(_data_bits_from_codewords(version, ecc, mask, bytes(payload)), symbol.data_bits())


def test_rs_valid_but_invalid_bitstream_is_reported() -> None:
    data = bytes([0x30]) + bytes(15)  # mode 0011 (structured append): not produced by qrcode
    bits = _data_bits_from_codewords(1, "M", 2, data)
    result = qr.decode_known(bits, version=1, ecc="M", mask_pattern=2)
    assert not result.ok and "not a valid QR bitstream" in result.reason and "0011" in result.reason


def test_degenerate_inputs_do_not_raise() -> None:
    for bits in (np.zeros(208, bool), np.ones(208, bool)):
        for mask in MASKS:
            result = qr.decode_known(bits, version=1, ecc="L", mask_pattern=mask)
            assert isinstance(result, qr.QRDecodeResult)
            assert result.ok or result.reason, result  # a failed decode always says why


# ------------------------------------------------------------------------------------------
# Bitstream parser (invalid streams and modes qrcode never emits)
# ------------------------------------------------------------------------------------------


def _bitstream(fields: list[tuple[int, int]], n_bytes: int) -> bytes:
    bits = "".join(format(value, f"0{width}b") for value, width in fields)
    bits += "0" * min(4, 8 * n_bytes - len(bits))
    bits += "0" * (-len(bits) % 8)
    out = bytearray(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8))
    pad = (0xEC, 0x11)
    while len(out) < n_bytes:
        out.append(pad[(len(out) - len(bits) // 8) % 2])
    return bytes(out)


@pytest.mark.parametrize(
    "payload",
    [
        bytes([0b00110000]) + bytes(8),  # structured append: unsupported mode
        _bitstream([(0b1000, 4), (2, 8), (0x0D9F, 13), (0x1AAA, 13)], 9),  # Kanji: qrcode never writes it
        _bitstream([(0b0111, 4), (26, 8), (0b0100, 4), (1, 8), (0x41, 8)], 9),  # ECI: likewise
        _bitstream([(0b0001, 4), (3, 10), (1000, 10)], 9),  # numeric group out of range
        _bitstream([(0b0100, 4), (200, 8)], 9),  # byte count beyond the stream
        _bitstream([(0b0100, 4), (1, 8), (0x41, 8)], 9)[:-1] + b"\x00",  # bad padding
    ],
)
def test_parse_rejects_invalid(payload: bytes) -> None:
    with pytest.raises(_ParseError):
        _parse_bitstream(payload, 1)


# ------------------------------------------------------------------------------------------
# Rendering, image decoding, helpers
# ------------------------------------------------------------------------------------------


def test_decode_image_blank_returns_none() -> None:
    assert qr.decode_image(np.zeros((21, 21), bool)) is None


def test_decode_image_missing_zbar_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyzbar", None)
    monkeypatch.setitem(sys.modules, "pyzbar.wrapper", None)
    with pytest.raises(ImportError, match="apt-get install -y libzbar0"):
        qr.decode_image(qr.encode("a").modules)


def test_docstring_examples() -> None:
    import doctest

    result = doctest.testmod(qr)
    assert result.attempted > 0 and result.failed == 0
