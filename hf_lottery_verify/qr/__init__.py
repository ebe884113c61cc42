"""QR-code symbols as boolean module matrices, with a known-format decoder.

This sub-package is the QR layer of the lottery-ticket signature scheme (Chen et al., "You are caught
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
holding `(text, version, ecc, mask_pattern)` always rebuilds the identical symbol; [`restore`] draws
the function patterns around the data modules with it too. Decoding does not
depend on `qrcode`'s encoder: [`decode_known`] reads the data modules in the standard placement
order, removes the mask, de-interleaves the Reed-Solomon blocks and decodes them with `reedsolo`
(with erasure and generalized-minimum-distance support). [`decode_image`] is an independent
cross-check through the ZBar image decoder (`pyzbar`).

Modules:

- `errors`: [`QRError`] and its subclasses.
- `layout`: versions, symbol sizes, function-pattern and data maps, capacity, placement order, masks.
- `symbol`: [`QRSymbol`], [`encode`], [`strip`], [`restore`].
- `bitstream`: mode indicators and parsing of the data codewords.
- `decode`: [`decode_known`] (Reed-Solomon with erasures and GMD) and [`QRDecodeResult`].
- `image`: [`decode_image`] (ZBar).

Everything public is re-exported here; import it from `hf_lottery_verify.qr`.
"""

from __future__ import annotations

from .decode import QRDecodeResult, decode_known, decode_security_bits
from .errors import (
    InvalidECCLevelError,
    InvalidMaskPatternError,
    InvalidVersionError,
    QRCapacityError,
    QRError,
    QRParameterError,
)
from .image import decode_image
from .layout import (
    ECC_LEVELS,
    capacity,
    data_map,
    function_pattern_map,
    num_data_modules,
    symbol_size,
)
from .symbol import QRSymbol, encode, restore, strip

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
    "capacity",
    "data_map",
    "decode_image",
    "decode_known",
    "decode_security_bits",
    "encode",
    "function_pattern_map",
    "num_data_modules",
    "restore",
    "strip",
    "symbol_size",
]

# `doctest.testmod(hf_lottery_verify.qr)` only collects objects defined in this module's own
# namespace; listing the re-exported functions and classes keeps their docstring examples in it.
__test__ = {name: obj for name, obj in ((name, globals()[name]) for name in __all__) if callable(obj)}
