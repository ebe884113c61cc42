"""CIFAR-style ResNets registered with timm, and the architecture lookup the library uses.

Importing this module (``import hf_lottery_verify`` does) registers:

==================  ============  ==========================  ==========
name                block         stages (blocks / channels)  parameters
==================  ============  ==========================  ==========
``cifar_resnet8``   BasicBlock    1,1,1 / 16,32,64            ~78k
``cifar_resnet20``  BasicBlock    3,3,3 / 16,32,64            ~0.27M
``cifar_resnet32``  BasicBlock    5,5,5 / 16,32,64            ~0.47M
``cifar_resnet56``  BasicBlock    9,9,9 / 16,32,64            ~0.86M
``cifar_resnet18``  BasicBlock    2,2,2,2 / 64..512           ~11.2M
``cifar_resnet50``  Bottleneck    3,4,6,3 / 64..512           ~23.5M
==================  ============  ==========================  ==========

All use a 3×3 stride-1 stem convolution and no max-pool (the CIFAR stem), and timm's
own parameter names (``conv1.weight``, ``layer2.0.conv1.weight``, ``fc.weight``), so
masks and checkpoints line up with ImageNet-style timm ResNets. Shortcuts that change
shape are 1×1 convolutions with batch norm (He et al.'s option B); the paper's
ResNet-20 numbers used the same kind of network.

Example:
    >>> import timm, hf_lottery_verify
    >>> model = timm.create_model("cifar_resnet20", num_classes=10)
    >>> sum(p.numel() for p in model.parameters())
    272474
"""

from __future__ import annotations

import difflib
from typing import Any

import timm
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from .errors import UnknownArchitectureError, UnsupportedArchitectureError

__all__ = [
    "CifarResNet",
    "CIFAR_ARCHS",
    "create_resnet",
    "check_architecture",
    "stage_names",
]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class CifarResNet(ResNet):
    """A timm :class:`~timm.models.resnet.ResNet` with a CIFAR stem and 3 or 4 stages.

    Args:
        block: Residual block type (``BasicBlock`` or ``Bottleneck``).
        layers: Blocks per stage; three or four stages.
        channels: Base width of each stage (same length as ``layers``).
        num_classes: Number of output classes.
        in_chans: Number of input channels (3 for CIFAR, 1 for Fashion-MNIST).
        **kwargs: Any other :class:`~timm.models.resnet.ResNet` argument (drop rates,
            ``zero_init_last``, ``norm_layer``, ...).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, ...],
        *,
        channels: tuple[int, ...],
        num_classes: int = 10,
        in_chans: int = 3,
        **kwargs: Any,
    ) -> None:
        if len(layers) not in (3, 4) or len(layers) != len(channels):
            raise ValueError(
                f"CifarResNet needs 3 or 4 stages with one width each; got layers={layers}, channels={channels}."
            )
        stem_chs = channels[0]
        # timm sizes layer1's input from the stem: a 'deep' stem of width c/2 hands over c
        # channels, which we then replace by the CIFAR stem (one 3x3 stride-1 conv).
        super().__init__(
            block,
            layers,
            channels=channels,
            num_classes=num_classes,
            in_chans=in_chans,
            stem_type="deep",
            stem_width=stem_chs // 2,
            **kwargs,
        )
        self.conv1 = nn.Conv2d(in_chans, stem_chs, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.maxpool = nn.Identity()
        if len(layers) == 3:
            # timm's forward_features calls layer1..layer4 unconditionally.
            self.layer4 = nn.Identity()
        expansion = block.expansion
        self.feature_info = [dict(num_chs=stem_chs, reduction=1, module="act1")] + [
            dict(num_chs=c * expansion, reduction=2**i, module=f"layer{i + 1}") for i, c in enumerate(channels)
        ]


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "pool_size": (8, 8),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": CIFAR10_MEAN,
        "std": CIFAR10_STD,
        "first_conv": "conv1",
        "classifier": "fc",
        "license": "apache-2.0",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        "cifar_resnet8": _cfg(),
        "cifar_resnet20": _cfg(),
        "cifar_resnet32": _cfg(),
        "cifar_resnet56": _cfg(),
        "cifar_resnet18": _cfg(pool_size=(4, 4)),
        "cifar_resnet50": _cfg(pool_size=(4, 4)),
    }
)


def _create(variant: str, pretrained: bool, **kwargs: Any) -> CifarResNet:
    if pretrained:
        raise ValueError(
            f"No pretrained weights are published for '{variant}'; build it with pretrained=False "
            "and train it (hf-lottery find-ticket) or load your own checkpoint with load_model()."
        )
    return build_model_with_cfg(CifarResNet, variant, pretrained, **kwargs)


_NARROW = (16, 32, 64)
_WIDE = (64, 128, 256, 512)


@register_model
def cifar_resnet8(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-8 for CIFAR (one BasicBlock per stage): the library's test-size network."""
    return _create("cifar_resnet8", pretrained, **dict(block=BasicBlock, layers=(1, 1, 1), channels=_NARROW), **kwargs)


@register_model
def cifar_resnet20(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-20 for CIFAR (He et al. 2016, Section 4.2), 1×1-conv shortcuts."""
    return _create("cifar_resnet20", pretrained, **dict(block=BasicBlock, layers=(3, 3, 3), channels=_NARROW), **kwargs)


@register_model
def cifar_resnet32(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-32 for CIFAR."""
    return _create("cifar_resnet32", pretrained, **dict(block=BasicBlock, layers=(5, 5, 5), channels=_NARROW), **kwargs)


@register_model
def cifar_resnet56(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-56 for CIFAR."""
    return _create("cifar_resnet56", pretrained, **dict(block=BasicBlock, layers=(9, 9, 9), channels=_NARROW), **kwargs)


@register_model
def cifar_resnet18(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-18 with a CIFAR stem (3×3 stride-1 conv, no max-pool)."""
    return _create("cifar_resnet18", pretrained, **dict(block=BasicBlock, layers=(2, 2, 2, 2), channels=_WIDE), **kwargs)


@register_model
def cifar_resnet50(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-50 with a CIFAR stem (3×3 stride-1 conv, no max-pool)."""
    return _create("cifar_resnet50", pretrained, **dict(block=Bottleneck, layers=(3, 4, 6, 3), channels=_WIDE), **kwargs)


CIFAR_ARCHS: tuple[str, ...] = (
    "cifar_resnet8",
    "cifar_resnet20",
    "cifar_resnet32",
    "cifar_resnet56",
    "cifar_resnet18",
    "cifar_resnet50",
)


def check_architecture(arch: str) -> None:
    """Raise unless ``arch`` names a timm model that this library can wrap.

    Args:
        arch: A timm model name, with or without a pretrained tag (``resnet18.a1_in1k``).

    Raises:
        UnknownArchitectureError: ``arch`` is not a timm model; close names are suggested.
    """
    base = arch.split(".", 1)[0]
    if not timm.is_model(base):
        known = timm.list_models("*resnet*")
        raise UnknownArchitectureError(arch, suggestions=difflib.get_close_matches(base, known, n=3))


def create_resnet(arch: str, *, num_classes: int = 10, in_chans: int = 3, **model_args: Any) -> ResNet:
    """Build a randomly initialised timm ResNet by name.

    Args:
        arch: A timm ResNet name (``resnet18``, ``cifar_resnet20``, ...).
        num_classes: Number of output classes.
        in_chans: Number of input channels.
        **model_args: Extra constructor arguments passed to ``timm.create_model``.

    Returns:
        The model, in training mode, on the CPU.

    Raises:
        UnknownArchitectureError: ``arch`` is not a timm model.
        UnsupportedArchitectureError: ``arch`` is a timm model but not a ResNet.
    """
    check_architecture(arch)
    model_args = {k: v for k, v in model_args.items() if k not in ("num_classes", "in_chans", "pretrained")}
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_chans, **model_args)
    if not isinstance(model, ResNet):
        raise UnsupportedArchitectureError(arch, model_class=type(model).__name__)
    return model


def stage_names(model: nn.Module) -> list[str]:
    """Names of the residual stages that hold blocks (``layer1`` ... ``layer3``/``layer4``).

    Args:
        model: A timm ResNet.

    Returns:
        Stage module names in forward order, skipping ``nn.Identity`` placeholders.
    """
    return [
        name
        for name in ("layer1", "layer2", "layer3", "layer4")
        if isinstance(getattr(model, name, None), nn.Sequential)
    ]
