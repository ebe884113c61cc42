"""Images for a model or an endpoint: input spec, PNG encoding, decoded-image adaptation (normalisation: the
model's own, :func:`~hf_lottery_verify.data.resolve_normalization`).

Shared by the query client (:mod:`.query`) and the server (:mod:`hf_lottery_verify.serve`), so
both preprocess an image the same way.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..data import resolve_normalization

__all__ = ["encode_png", "model_input_spec", "pil_to_model_input", "resolve_normalization"]


def _config(model: nn.Module) -> Any:
    return getattr(model, "config", None)


def model_input_spec(model: nn.Module) -> tuple[int, int | None]:
    """The input channels and image side a model expects.

    Reads ``model.config.in_chans`` / ``image_size`` (this library's models), else timm's
    ``pretrained_cfg["input_size"]`` for the channels, else the first convolution's
    ``in_channels``.

    Args:
        model (`nn.Module`): The model.

    Returns:
        `tuple[int, int | None]`: ``(in_chans, image_size)``; ``image_size`` is ``None`` when the
        model does not say (convolutional models accept any size).
    """
    cfg = _config(model)
    in_chans = getattr(cfg, "in_chans", None)
    size = getattr(cfg, "image_size", None)
    if in_chans is None:
        inner = getattr(model, "timm_model", model)
        input_size = (getattr(inner, "pretrained_cfg", None) or {}).get("input_size")
        if input_size:
            in_chans = input_size[0]
        else:
            conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
            in_chans = conv.in_channels if conv is not None else 3
    return int(in_chans), (int(size) if size else None)


def _tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """One uint8 ``C×H×W`` image (C = 1, 3 or 4) as a PIL image."""
    c = image.shape[0]
    array = image.detach().cpu().permute(1, 2, 0).contiguous().numpy()
    if c == 1:
        return Image.fromarray(array[:, :, 0], mode="L")
    if c == 3:
        return Image.fromarray(array, mode="RGB")
    if c == 4:
        return Image.fromarray(array, mode="RGBA")
    raise ValueError(f"Images need 1, 3 or 4 channels to be encoded, got {c}.")


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


def pil_to_model_input(image: Image.Image, *, in_chans: int, image_size: int | None) -> torch.Tensor:
    """A decoded image as the uint8 ``C×H×W`` tensor a model takes (shared by server and client).

    Converts to ``L`` or ``RGB`` (PIL's conversion), then resizes bilinearly to
    ``image_size × image_size`` only when the size differs.

    Args:
        image (`PIL.Image.Image`): The decoded image, any mode PIL can convert.
        in_chans (`int`): 1 (grayscale) or 3 (RGB).
        image_size (`int`, *optional*): Side to resize to; ``None`` keeps the size.

    Returns:
        `torch.Tensor`: ``uint8`` ``in_chans × H × W``.

    Raises:
        ValueError: ``in_chans`` is neither 1 nor 3.
    """
    if in_chans not in (1, 3):
        raise ValueError(f"Only 1- or 3-channel models can take decoded images, got in_chans={in_chans}.")
    mode = "L" if in_chans == 1 else "RGB"
    if image.mode != mode:
        image = image.convert(mode)
    if image_size is not None and image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
