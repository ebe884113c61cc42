"""Running an in-memory model on ``uint8`` image batches: adapt, normalise, forward, check the logits.

:class:`_ModelRunner` does it for black-box queries of an ``nn.Module`` (:mod:`.local`) and for
the HTTP server (:mod:`hf_lottery_verify.serve`), so both see a model the same way.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..data import normalize, pil_to_model_input, resolve_normalization
from .images import _tensor_to_pil


class _ModelRunner:
    """Normalise uint8 batches and return a model's logits (also used by the server).

    The input channels are ``model.config.in_chans`` (this library's models), else the first
    convolution's; the image side is ``model.config.image_size``, ``None`` when the model does not
    say (convolutional models accept any size: images are then passed at their own size).
    """

    def __init__(self, model: nn.Module, *, image_mean: Any = None, image_std: Any = None) -> None:
        self.model = model
        cfg = getattr(model, "config", None)
        conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        self.in_chans = int(getattr(cfg, "in_chans", None) or (conv.in_channels if conv is not None else 3))
        self.image_size: int | None = getattr(cfg, "image_size", None)
        self.mean, self.std = resolve_normalization(model, image_mean, image_std, in_chans=self.in_chans)
        param = next(model.parameters(), None)
        self.device = param.device if param is not None else torch.device("cpu")
        self.dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32

    def adapt(self, images: torch.Tensor) -> torch.Tensor:
        """Convert channels / resize exactly as the server does with a decoded image."""
        _, c, h, w = images.shape
        if c == self.in_chans and (self.image_size is None or h == w == self.image_size):
            return images
        return torch.stack([pil_to_model_input(_tensor_to_pil(x), in_chans=self.in_chans,
                                               image_size=self.image_size) for x in images])

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        x = normalize(self.adapt(images).to(self.device), self.mean, self.std).to(self.dtype)
        out = self.model(x)
        logits = getattr(out, "logits", None)
        if logits is None:
            logits = out[0] if isinstance(out, (tuple, list)) else out
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != len(images):
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"The model returned {shape} for {len(images)} images; expected logits (N, classes).")
        return logits.float().cpu()
