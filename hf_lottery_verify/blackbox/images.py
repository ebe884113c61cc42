"""Images sent to an endpoint: lossless PNG encoding of ``uint8`` tensors (:func:`encode_png`); the
tensor-to-PIL step is shared with :mod:`.runner`, which adapts images for an in-memory model as the
server (:mod:`hf_lottery_verify.serve`) does."""

from __future__ import annotations

import io

import torch
from PIL import Image

__all__ = ["encode_png"]


def _tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """One uint8 ``C×H×W`` image (C = 1, 3 or 4) as a PIL image."""
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(image.shape[0])
    if mode is None:
        raise ValueError(f"Images need 1, 3 or 4 channels to be encoded, got {image.shape[0]}.")
    array = image.detach().cpu().permute(1, 2, 0).contiguous().numpy()
    return Image.fromarray(array[:, :, 0] if mode == "L" else array, mode=mode)


def encode_png(image: torch.Tensor) -> bytes:
    """Encode one uint8 ``C×H×W`` image as PNG (lossless, so the suspect sees the exact pixels).

    Args:
        image (`torch.Tensor`): ``uint8`` tensor with 1 (L), 3 (RGB) or 4 (RGBA) channels.

    Returns:
        `bytes`: The PNG file.
    """
    buf = io.BytesIO()
    _tensor_to_pil(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
