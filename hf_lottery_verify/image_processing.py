"""``SparseResNetImageProcessor``: what ``AutoImageProcessor`` and ``pipeline("image-classification")`` use.

It turns any image into the model's input exactly as this library's own evaluation does:
grayscale or RGB as the model reads (PIL's conversion), a bilinear resize to the trained
size when the size differs, then the per-channel normalisation of the model's config
(:func:`~hf_lottery_verify.data.resolve_normalization`). ``save_pretrained`` writes it as
``preprocessor_config.json``; registered with ``AutoImageProcessor`` for the
``sparse_resnet`` model type.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoImageProcessor
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.image_transforms import to_pil_image

from . import _registration
from .atomic import write_json_atomic, write_text_atomic
from .cards.templates import _read_asset
from .configuration_sparse_resnet import SparseResNetConfig
from .data import Normalizer, pil_to_model_input, resolve_normalization

__all__ = ["SparseResNetImageProcessor", "REMOTE_CODE_NAME", "PROCESSOR_NAME", "save_loaders"]

REMOTE_CODE_NAME = "modeling_sparse_resnet.py"
"""The self-contained modeling file (``model_cards/``) saved beside dense weights: plain torch, timm and
transformers load the folder with ``trust_remote_code=True``; this library never runs it."""
PROCESSOR_NAME = "preprocessor_config.json"
REMOTE_CODE_AUTO_MAP: dict[str, Any] = {
    "AutoConfig": "modeling_sparse_resnet.SparseResNetConfig",
    "AutoModelForImageClassification": "modeling_sparse_resnet.SparseResNetForImageClassification",
    # [PIL, torchvision] form: the pipeline's optional video-processor lookup then fails quietly instead of
    # asking whether to run a "SparseResNetVideoProcessor" that does not exist
    "AutoImageProcessor": ["modeling_sparse_resnet.SparseResNetImageProcessor", None]}



class SparseResNetImageProcessor(BaseImageProcessor):
    r"""Image processor of :class:`~hf_lottery_verify.SparseResNetForImageClassification`.

    Args:
        in_chans (`int`, *optional*, defaults to 3): 1 (images become grayscale) or 3 (RGB).
        image_size (`int`, *optional*, defaults to 32): Side the images are resized to.
        image_mean (`Sequence[float]`): Per-channel mean (fractions of 255), the model's.
        image_std (`Sequence[float]`): Per-channel standard deviation, the model's.

    Example:
        >>> processor = SparseResNetImageProcessor.from_model_config(model.config)  # doctest: +SKIP
        >>> processor(image, return_tensors="pt")["pixel_values"].shape               # doctest: +SKIP
        torch.Size([1, 1, 28, 28])
    """

    model_input_names = ["pixel_values"]

    def __init__(self, in_chans: int = 3, image_size: int = 32, image_mean: Sequence[float] | None = None,
                 image_std: Sequence[float] | None = None, **kwargs: Any) -> None:
        super().__init__()  # a config.json read as processor config brings the model's other fields: ignored
        self.in_chans, self.image_size = int(in_chans), int(image_size)
        mean, std = resolve_normalization(None, image_mean, image_std, in_chans=self.in_chans)
        self.image_mean, self.image_std = list(mean), list(std)

    @classmethod
    def from_model_config(cls, config: SparseResNetConfig) -> SparseResNetImageProcessor:
        """The processor of a model with this config (its channels, size and normalisation)."""
        return cls(in_chans=config.in_chans, image_size=config.image_size, image_mean=config.image_mean,
                   image_std=config.image_std)

    def preprocess(self, images: Any, return_tensors: str | None = None, **kwargs: Any) -> BatchFeature:
        """Images (PIL, arrays or tensors, one or a list) → ``{"pixel_values": N×C×H×W float32}``."""
        images = images if isinstance(images, (list, tuple)) else [images]
        batch = torch.stack([pil_to_model_input(to_pil_image(image), in_chans=self.in_chans,
                                                image_size=self.image_size) for image in images])
        pixels = Normalizer(self.image_mean, self.image_std)(batch)
        return BatchFeature({"pixel_values": pixels}, tensor_type=return_tensors)


def save_loaders(config: SparseResNetConfig, folder: Path, *, compact: bool) -> None:
    """What other loaders need beside the weights: ``preprocessor_config.json`` (once the config knows its
    normalisation) and, for the dense layout, the self-contained modeling file ``auto_map`` names, which
    ``trust_remote_code=True`` loads without this library."""
    if config.image_mean is not None and config.image_std is not None:
        processor = SparseResNetImageProcessor.from_model_config(config).to_dict()
        auto_map = {} if compact else {"auto_map": {"AutoImageProcessor": REMOTE_CODE_AUTO_MAP["AutoImageProcessor"]}}
        write_json_atomic(folder / PROCESSOR_NAME, {**processor, **auto_map})
    if not compact:
        write_text_atomic(folder / REMOTE_CODE_NAME, _read_asset(REMOTE_CODE_NAME))


AutoImageProcessor.register(SparseResNetConfig, image_processor_classes={"pil": SparseResNetImageProcessor,
                                                                         "torchvision": SparseResNetImageProcessor},
                            exist_ok=True)

# imported first, this module made the configuration's registration wait for it (see hf_lottery_verify._registration)
_registration.install_hooks()
