"""``SparseResNetConfig``: the transformers configuration of a sparse timm ResNet."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from transformers import PretrainedConfig

from . import _registration
from .errors import CheckpointError, ConfigError
from .storage.config import CONFIG_FIELDS

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .storage import CheckpointContents

__all__ = ["SparseResNetConfig", "CONFIG_SCHEMA_VERSION", "TIMM_FIELDS", "config_from_checkpoint"]

CONFIG_SCHEMA_VERSION = 1
DEFAULT_NUM_LABELS = 10
TIMM_FIELDS = ("architecture", "num_classes", "num_features", "global_pool", "pretrained_cfg", "label_names")
"""Keys that timm reads from ``config.json`` (``timm.create_model("hf-hub:...")``); written beside ours."""


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
        image_mean (`tuple[float, ...]`, *optional*):
            Per-channel normalisation mean of the inputs (fractions of 255): the training
            data's, recorded by the first training (IMP, retraining); ``None`` until then.
            Every consumer reads it through :func:`~hf_lottery_verify.data.resolve_normalization`.
        image_std (`tuple[float, ...]`, *optional*):
            Per-channel normalisation standard deviation; as ``image_mean``.
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
    image_mean: tuple[float, ...] | None = None
    image_std: tuple[float, ...] | None = None
    density: float | None = None
    schema_version: int = CONFIG_SCHEMA_VERSION

    def __post_init__(self, **kwargs: Any) -> None:
        for name in TIMM_FIELDS:  # timm's own fields of config.json are derived, never stored twice
            kwargs.pop(name, None)
        for name in ("arch", "in_chans", "image_size", "image_mean", "image_std", "density", "model_args"):
            value = getattr(self, name)
            try:  # the checks of config.json; model_args loses timm's num_classes and in_chans
                value = None if value is None else CONFIG_FIELDS[name](value)
            except ValueError as exc:
                raise ConfigError(f"SparseResNetConfig: '{name}' is refused: {exc}") from None
            setattr(self, name, tuple(map(float, value)) if name in ("image_mean", "image_std") and value else value)
        if self.id2label is None and kwargs.get("num_labels") is None:
            kwargs["num_labels"] = DEFAULT_NUM_LABELS  # CIFAR-10 / Fashion-MNIST, not transformers' 2
        super().__post_init__(**kwargs)

    def timm_fields(self, *, num_features: int | None = None) -> dict[str, Any]:
        """timm's view of this model, as written into ``config.json`` next to transformers' fields.

        With them, ``timm.create_model("hf-hub:<repo>", pretrained=True)`` builds and
        strict-loads a pushed model without this package (for timm's own architectures).

        Args:
            num_features (`int`, *optional*): Width of the pooled features (informative).

        Returns:
            ``architecture``, ``num_classes``, ``num_features``, ``global_pool``,
            ``model_args`` and ``pretrained_cfg`` (input size, mean, std, classifier, ...),
            plus ``label_names``.
        """
        fields: dict[str, Any] = {
            "architecture": self.arch,
            "num_classes": self.num_labels,
            "global_pool": "avg",
            "pretrained_cfg": {
                "input_size": [self.in_chans, self.image_size, self.image_size],
                "fixed_input_size": False,
                "interpolation": "bilinear",
                "crop_pct": 1.0,
                "crop_mode": "center",
                **({} if self.image_mean is None or self.image_std is None
                   else {"mean": list(self.image_mean), "std": list(self.image_std)}),
                "num_classes": self.num_labels,
                "first_conv": "conv1",
                "classifier": "fc",
                "custom_load": False,
            },
            "label_names": [self.id2label[i] for i in range(self.num_labels)],
        }
        if num_features is not None:
            fields["num_features"] = num_features
        return fields

    def _with_timm_fields(self, out: dict[str, Any]) -> dict[str, Any]:
        out.update(self.timm_fields(), image_processor_type="SparseResNetImageProcessor")  # transformers reads a
        # local folder's processor from config.json when it looks like timm's (it has a pretrained_cfg)
        out["model_args"] = {**(self.model_args or {}), "in_chans": self.in_chans}
        return out

    def to_dict(self) -> dict[str, Any]:
        """transformers' dict plus timm's fields (see :meth:`timm_fields`) and timm's ``model_args``."""
        return self._with_timm_fields(super().to_dict())

    def to_diff_dict(self) -> dict[str, Any]:
        """What ``save_pretrained`` writes: the non-default fields, and always timm's fields."""
        return self._with_timm_fields(super().to_diff_dict())




def _infer_shape_args(state_dict: Mapping[str, torch.Tensor], arch: str) -> tuple[int | None, int | None]:
    """(num_labels, in_chans) read off the classifier and stem weights."""
    import timm

    cfg = timm.get_pretrained_cfg(arch.split(".")[0])
    first_conv = (cfg.first_conv if cfg else None) or "conv1"
    classifier = (cfg.classifier if cfg else None) or "fc"
    first = first_conv if isinstance(first_conv, str) else first_conv[0]
    head = classifier if isinstance(classifier, str) else classifier[0]
    stem = state_dict.get(f"{first}.weight")
    fc = state_dict.get(f"{head}.weight")
    return (int(fc.shape[0]) if fc is not None else None, int(stem.shape[1]) if stem is not None else None)


def config_from_checkpoint(
    contents: CheckpointContents,
    *,
    arch: str | None,
    num_labels: int | None,
    in_chans: int | None,
    model_args: Mapping[str, Any] | None = None,
) -> SparseResNetConfig:
    """The configuration of a checkpoint read by :func:`~hf_lottery_verify.storage.read_checkpoint`.

    This library's own ``config.json`` is taken as is; a timm or transformers config gives its
    architecture, labels and normalisation; the classifier and stem weights give the number of
    labels and input channels unless ``num_labels``/``in_chans`` are passed.

    Raises:
        CheckpointError: The architecture cannot be told (pass ``arch``).
        UnknownArchitectureError, UnsupportedArchitectureError: Not a timm ResNet.
    """
    from .architectures import check_architecture

    cfg = dict(contents.config or {})
    if cfg.get("model_type") == SparseResNetConfig.model_type and arch is None:
        config = SparseResNetConfig.from_dict(cfg)
    else:
        arch = arch or cfg.get("arch") or cfg.get("architecture") or contents.metadata.get("arch")
        if arch is None:
            raise CheckpointError(
                "Cannot tell the architecture of this checkpoint (no config.json with 'architecture'); "
                "pass arch='resnet18' (or the right timm name).",
                path=contents.path,
            )
        check_architecture(arch)
        model_args = dict(model_args or cfg.get("model_args") or {})
        label_names = cfg.get("label_names")
        kwargs: dict[str, Any] = {}
        if label_names and (num_labels is None or num_labels == len(label_names)):
            kwargs["id2label"] = dict(enumerate(label_names))
        pretrained = cfg.get("pretrained_cfg") or {}  # read_config kept only its checked mean, std and input_size
        if pretrained.get("mean") and pretrained.get("std"):
            kwargs.update(image_mean=tuple(pretrained["mean"]), image_std=tuple(pretrained["std"]))
        config = SparseResNetConfig(arch=arch.split(".")[0], model_args=model_args or None, **kwargs)
    check_architecture(config.arch)
    inferred_labels, inferred_chans = _infer_shape_args(contents.state_dict, config.arch)
    labels = num_labels or inferred_labels
    if labels is not None and labels != config.num_labels:
        config.num_labels = labels
    chans = in_chans or inferred_chans
    if chans is not None:
        config.in_chans = chans
    return config


# transformers was imported at the top of this module, before SparseResNetConfig existed, so the import hook
# could not register then; now it can (see hf_lottery_verify._registration)
_registration.install_hooks()
