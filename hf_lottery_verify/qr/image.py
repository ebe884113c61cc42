"""Decoding module matrices as images with ZBar (an independent cross-check)."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from .layout import _as_square_modules

__all__ = ["decode_image"]


def decode_image(modules: np.ndarray) -> str | None:
    """Decode a module matrix with the ZBar image decoder (independent cross-check).

    The matrix is rendered black on white (a 4-module quiet zone, 4 pixels per module) and scanned
    by ZBar through `pyzbar`'s ctypes bindings with only the QR symbology enabled. Where the ZBar library supports it (0.23+), the
    scanner runs in binary mode so the payload bytes come back unconverted and are decoded as
    UTF-8 (Latin-1 fallback); otherwise ZBar's own character-set guess is used, which can
    misread short non-ASCII UTF-8 payloads as Shift-JIS.

    Args:
        modules (`np.ndarray`): Full square bool matrix, `True` = dark, without quiet zone.

    Returns:
        `str` or `None`: The decoded text, or `None` if ZBar finds no QR code.

    Raises:
        `ImportError`: If `pyzbar` or the ZBar system library is missing.
        [`QRParameterError`]: If `modules` is not square.
    """
    pixels = np.where(np.pad(_as_square_modules(modules), 4, constant_values=False), 0, 255).astype(np.uint8)
    image = Image.fromarray(np.repeat(np.repeat(pixels, 4, axis=0), 4, axis=1))
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
