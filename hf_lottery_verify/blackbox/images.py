"""Images for a model or an endpoint: input spec, PNG encoding, decoded-image adaptation (normalisation: the
model's own, :func:`~hf_lottery_verify.data.resolve_normalization`).

Shared by the query client (:mod:`.query`) and the server (:mod:`hf_lottery_verify.serve`), so
both preprocess an image the same way.
"""

from __future__ import annotations

import io

import torch
from PIL import Image
from torch import nn

__all__ = ["encode_png", "model_input_spec"]


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
    cfg = getattr(model, "config", None)
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
