"""``SparseResNetConfig``: the transformers configuration of a sparse timm ResNet."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

__all__ = ["SparseResNetConfig", "CONFIG_SCHEMA_VERSION"]

CONFIG_SCHEMA_VERSION = 1
DEFAULT_NUM_LABELS = 10


class SparseResNetConfig(PretrainedConfig):
    r"""Configuration of :class:`~hf_lottery_verify.SparseResNetForImageClassification`.

    Args:
        arch (`str`, *optional*, defaults to `"cifar_resnet20"`):
            The timm architecture name (any timm ResNet or one of this library's
            ``cifar_resnet*`` variants).
        in_chans (`int`, *optional*, defaults to 3):
            Number of input image channels.
        image_size (`int`, *optional*, defaults to 32):
            Side of the (square) input images the model was trained on.
        model_args (`dict`, *optional*):
            Extra keyword arguments for ``timm.create_model`` (``drop_rate``, ...).
        density (`float`, *optional*):
            Fraction of prunable weights kept, recorded at save time (informative).
        schema_version (`int`, *optional*, defaults to 1):
            Version of this configuration's layout.
        num_labels, id2label, label2id:
            As in every transformers configuration; ``num_labels`` defaults to 10.

    Example:
        >>> from hf_lottery_verify import SparseResNetConfig
        >>> SparseResNetConfig(arch="cifar_resnet8", num_labels=10).model_type
        'sparse_resnet'
    """

    model_type = "sparse_resnet"

    arch: str = "cifar_resnet20"
    in_chans: int = 3
    image_size: int = 32
    model_args: dict[str, Any] | None = None
    density: float | None = None
    schema_version: int = CONFIG_SCHEMA_VERSION

    def __post_init__(self, **kwargs: Any) -> None:
        if self.model_args:
            # timm writes num_classes into model_args; the label count lives in num_labels.
            self.model_args = {k: v for k, v in self.model_args.items() if k not in ("num_classes", "in_chans")}
        if self.id2label is None and kwargs.get("num_labels") is None:
            kwargs["num_labels"] = DEFAULT_NUM_LABELS  # CIFAR-10 / Fashion-MNIST, not transformers' 2
        super().__post_init__(**kwargs)
