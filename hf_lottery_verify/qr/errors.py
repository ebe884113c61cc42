"""Exceptions of the QR layer.

[`QRError`] is the base class of every error raised on purpose by `hf_lottery_verify.qr`; it
subclasses [`~hf_lottery_verify.errors.HfLotteryError`], so a caller can catch every error of the
library at once. The concrete errors also subclass `ValueError`.
"""

from __future__ import annotations

from hf_lottery_verify.errors import HfLotteryError

__all__ = [
    "InvalidECCLevelError",
    "InvalidMaskPatternError",
    "InvalidVersionError",
    "QRCapacityError",
    "QRError",
    "QRParameterError",
]


class QRError(HfLotteryError):
    """Base class of the errors raised by `hf_lottery_verify.qr`."""


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
