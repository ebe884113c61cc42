"""CIFAR-style ResNets registered with timm, and the architecture lookup the library uses.

Importing this module (``import hf_lottery_verify`` does) registers:

====================  ============  ==========================  ==========  =======================
name                  block         stages (blocks / channels)  shortcut    parameters (10 classes)
====================  ============  ==========================  ==========  =======================
``cifar_resnet8``     BasicBlock    1,1,1 / 16,32,64            B (conv)    78,042
``cifar_resnet20``    BasicBlock    3,3,3 / 16,32,64            B (conv)    272,474
``cifar_resnet32``    BasicBlock    5,5,5 / 16,32,64            B (conv)    466,906
``cifar_resnet56``    BasicBlock    9,9,9 / 16,32,64            B (conv)    855,770
``cifar_resnet8_a``   BasicBlock    1,1,1 / 16,32,64            A (pad)     75,290
``cifar_resnet20_a``  BasicBlock    3,3,3 / 16,32,64            A (pad)     269,722
``cifar_resnet32_a``  BasicBlock    5,5,5 / 16,32,64            A (pad)     464,154
``cifar_resnet56_a``  BasicBlock    9,9,9 / 16,32,64            A (pad)     853,018
``cifar_resnet18``    BasicBlock    2,2,2,2 / 64..512           B (conv)    11,173,962
``cifar_resnet50``    Bottleneck    3,4,6,3 / 64..512           B (conv)    23,520,842
====================  ============  ==========================  ==========  =======================

All use a 3×3 stride-1 stem convolution and no max-pool (the CIFAR stem), and timm's
own parameter names (``conv1.weight``, ``layer2.0.conv1.weight``, ``fc.weight``), so
masks and checkpoints line up with ImageNet-style timm ResNets.

**Shortcuts.** He et al. (2016) give two kinds of shortcut for a block that changes
shape. Option A is parameter-free: subsample by 2 and zero-pad the new channels
(:class:`ZeroPadShortcut`, a block's ``downsample``). Option B is a 1×1 convolution
with batch norm (timm's ``downsample`` ``Sequential``). **The paper's ResNet-20 is
option A** (the reference code's ``res20s``, "0.27M" parameters): use the ``*_a``
variants to reproduce it. The names without ``_a`` keep option B (timm's own
construction, 2,752 more parameters on the 16-32-64 networks); they are not the
paper's network.

Example:
    >>> import timm, hf_lottery_verify
    >>> model = timm.create_model("cifar_resnet20_a", num_classes=10)
    >>> sum(p.numel() for p in model.parameters())
    269722
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

import timm
import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from .errors import ConfigError, UnknownArchitectureError, UnsupportedArchitectureError

__all__ = [
    "CifarResNet",
    "ZeroPadShortcut",
    "CIFAR_ARCHS",
    "create_resnet",
    "check_architecture",
    "is_arch_name",
    "check_model_args",
    "MODEL_ARGS",
    "stage_names",
]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class ZeroPadShortcut(nn.Module):
    """He et al.'s option-A shortcut: subsample, then zero-pad channels (no parameters).

    Computes ``F.pad(x[:, :, ::stride, ::stride], (0, 0, 0, 0, pad_before, pad_after))``:
    input channel ``i`` becomes output channel ``i + pad_before``; the ``pad_before``
    first and ``pad_after`` last output channels are zero. The reference code's
    ``LambdaLayer`` pads ``planes // 4`` channels on each side.

    Args:
        pad_before: Zero channels added before the input channels.
        pad_after: Zero channels added after them; defaults to ``pad_before``.
        stride: Spatial subsampling step (2 where a stage halves the resolution).

    Raises:
        ValueError: A negative padding or a stride below 1.

    Example:
        >>> shortcut = ZeroPadShortcut(8)
        >>> shortcut(torch.ones(1, 16, 32, 32)).shape
        torch.Size([1, 32, 16, 16])
    """

    def __init__(self, pad_before: int, pad_after: int | None = None, *, stride: int = 2) -> None:
        super().__init__()
        pad_after = pad_before if pad_after is None else pad_after
        if pad_before < 0 or pad_after < 0 or stride < 1:
            raise ValueError(
                f"ZeroPadShortcut needs non-negative paddings and a positive stride; got pad_before={pad_before}, "
                f"pad_after={pad_after}, stride={stride}."
            )
        self.pad_before = int(pad_before)
        self.pad_after = int(pad_after)
        self.stride = int(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Subsample and zero-pad ``x`` (``(batch, C, H, W)``) to ``C + pad_before + pad_after`` channels."""
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))

    def extra_repr(self) -> str:
        return f"pad_before={self.pad_before}, pad_after={self.pad_after}, stride={self.stride}"


class CifarResNet(ResNet):
    """A timm :class:`~timm.models.resnet.ResNet` with a CIFAR stem and 3 or 4 stages.

    Args:
        block: Residual block type (``BasicBlock`` or ``Bottleneck``).
        layers: Blocks per stage; three or four stages.
        channels: Base width of each stage (same length as ``layers``).
        num_classes: Number of output classes.
        in_chans: Number of input channels (3 for CIFAR, 1 for Fashion-MNIST).
        shortcut (`str`, *optional*, defaults to `"conv"`): How blocks that change shape
            bypass their residual branch: ``"conv"`` (option B, timm's 1×1 convolution
            with batch norm) or ``"zero_pad"`` (option A, a parameter-free
            :class:`ZeroPadShortcut` that subsamples and pads ``planes // 4`` zero
            channels on each side, as the paper's ResNet-20).
        **kwargs: Any other :class:`~timm.models.resnet.ResNet` argument (drop rates,
            ``zero_init_last``, ``norm_layer``, ...).

    Raises:
        ValueError: Not 3 or 4 stages, an unknown ``shortcut``, or ``"zero_pad"`` where a
            stage does not double the width (option A pads ``planes // 4`` per side) or
            ``avg_down`` is asked for.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, ...],
        *,
        channels: tuple[int, ...],
        num_classes: int = 10,
        in_chans: int = 3,
        shortcut: Literal["conv", "zero_pad"] = "conv",
        **kwargs: Any,
    ) -> None:
        if len(layers) not in (3, 4) or len(layers) != len(channels):
            raise ValueError(
                f"CifarResNet needs 3 or 4 stages with one width each; got layers={layers}, channels={channels}."
            )
        if shortcut not in ("conv", "zero_pad"):
            raise ValueError(f"Unknown shortcut '{shortcut}': use 'conv' (option B) or 'zero_pad' (option A).")
        if shortcut == "zero_pad" and kwargs.get("avg_down"):
            raise ValueError("avg_down applies to convolution shortcuts; it cannot be combined with shortcut='zero_pad'.")
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
        if shortcut == "zero_pad":
            self._use_zero_pad_shortcuts(stem_chs, channels, expansion)
        self.feature_info = [dict(num_chs=stem_chs, reduction=1, module="act1")] + [
            dict(num_chs=c * expansion, reduction=2**i, module=f"layer{i + 1}") for i, c in enumerate(channels)
        ]

    def _use_zero_pad_shortcuts(self, stem_chs: int, channels: tuple[int, ...], expansion: int) -> None:
        """Replace every ``downsample`` convolution by an option-A :class:`ZeroPadShortcut`."""
        in_chs = stem_chs
        for stage_idx, planes in enumerate(channels):
            first = getattr(self, f"layer{stage_idx + 1}")[0]
            out_chs = planes * expansion
            if first.downsample is not None:
                pad = planes // 4
                if in_chs + 2 * pad != out_chs:
                    raise ValueError(
                        f"shortcut='zero_pad' pads planes // 4 = {pad} channels on each side, which does not take "
                        f"stage {stage_idx + 1} from {in_chs} to {out_chs} channels; use shortcut='conv'."
                    )
                first.downsample = ZeroPadShortcut(pad, pad, stride=int(first.stride))
            in_chs = out_chs


_CFG = {
    "url": "",
    "num_classes": 10,
    "input_size": (3, 32, 32),
    "crop_pct": 1.0,
    "interpolation": "bilinear",
    "mean": CIFAR10_MEAN,
    "std": CIFAR10_STD,
    "first_conv": "conv1",
    "classifier": "fc",
    "license": "apache-2.0",
}
"""timm's pretrained config of every variant, but for ``pool_size`` (the last feature map: 8×8 narrow, 4×4 wide)."""


_NARROW = (16, 32, 64)
_WIDE = (64, 128, 256, 512)
_NARROW_DEPTHS = {"cifar_resnet8": 1, "cifar_resnet20": 3, "cifar_resnet32": 5, "cifar_resnet56": 9}
# The constructor arguments of every registered name (the table in the module docstring).
_VARIANTS: dict[str, dict[str, Any]] = {
    **{name: dict(block=BasicBlock, layers=(n,) * 3, channels=_NARROW) for name, n in _NARROW_DEPTHS.items()},
    **{f"{name}_a": dict(block=BasicBlock, layers=(n,) * 3, channels=_NARROW, shortcut="zero_pad")
       for name, n in _NARROW_DEPTHS.items()},
    "cifar_resnet18": dict(block=BasicBlock, layers=(2, 2, 2, 2), channels=_WIDE),
    "cifar_resnet50": dict(block=Bottleneck, layers=(3, 4, 6, 3), channels=_WIDE),
}

default_cfgs = generate_default_cfgs(
    {name: {**_CFG, "pool_size": (4, 4) if spec["channels"] == _WIDE else (8, 8)} for name, spec in _VARIANTS.items()})


def _create(variant: str, pretrained: bool, **kwargs: Any) -> CifarResNet:
    cfg = kwargs.get("pretrained_cfg")
    source = cfg.get("source") if isinstance(cfg, dict) else getattr(cfg, "source", None)
    if pretrained and source not in ("hf-hub", "local-dir"):
        # timm passes a pretrained_cfg with a source when it loads "hf-hub:<repo>" or
        # "local-dir:<folder>" (a checkpoint saved by this library); there is no registry of
        # published weights for these names.
        raise ValueError(
            f"No pretrained weights are published for '{variant}'; build it with pretrained=False "
            "and train it (hf-lottery find-ticket), load a checkpoint with load_model(), or use timm's "
            "'hf-hub:<repo>' / 'local-dir:<folder>' names."
        )
    return build_model_with_cfg(CifarResNet, variant, pretrained, **kwargs)


def _entrypoint(name: str) -> Callable[..., CifarResNet]:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
        return _create(name, pretrained, **_VARIANTS[name], **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name  # timm registers the function under its name
    entrypoint.__doc__ = f"Build ``{name}`` (see the table in :mod:`hf_lottery_verify.architectures`)."
    return entrypoint


for _name in _VARIANTS:
    globals()[_name] = register_model(_entrypoint(_name))

CIFAR_ARCHS: tuple[str, ...] = tuple(_VARIANTS)


def _rate(v: Any) -> bool:
    return type(v) in (int, float) and 0 <= v < 1


MODEL_ARGS: dict[str, Callable[[Any], bool]] = {
    "drop_rate": _rate, "drop_path_rate": _rate, "global_pool": lambda v: v in ("avg", "max", "avgmax"),
    "zero_init_last": lambda v: type(v) is bool,
    "stem_width": lambda v: type(v) is int and 1 <= v <= 1024,
    "channels": lambda v: isinstance(v, (list, tuple)) and 1 <= len(v) <= 4 and all(
        type(c) is int and 1 <= c <= 1024 for c in v),
}
"""The only extra ``timm.create_model`` arguments this library passes on (from a config or a key),
each with the test its value must pass: dropout rates in [0, 1), the head's pooling, timm's zero scale
of each block's last batch norm (``zero_init_last``), and the
widths of narrow ResNets (at most 1024 per stage)."""
_ARCH_NAME = re.compile(r"[A-Za-z0-9_]{1,100}(\.[A-Za-z0-9_-]{1,100})?")


def is_arch_name(arch: Any) -> bool:
    """Whether ``arch`` has the form of a timm model name (``resnet18``, ``resnet18.a1_in1k``): no path, no
    ``hf-hub:`` prefix, at most 201 characters."""
    return isinstance(arch, str) and _ARCH_NAME.fullmatch(arch) is not None


def check_model_args(model_args: Mapping[str, Any]) -> dict[str, Any]:
    """``model_args`` checked against :data:`MODEL_ARGS`, without timm's own ``num_classes`` and ``in_chans``.

    Args:
        model_args (`Mapping[str, Any]`): Extra ``timm.create_model`` arguments (from a config, say).

    Returns:
        The accepted arguments.

    Raises:
        ConfigError: Any other argument (``checkpoint_path``, ``pretrained_cfg``, ...) or value.
    """
    out = {}
    for name, value in model_args.items():
        if name in ("num_classes", "in_chans"):
            continue
        if name not in MODEL_ARGS or not MODEL_ARGS[name](value):
            raise ConfigError(f"model_args {str(name)[:40]!r}={str(value)[:40]} is not accepted: only "
                              f"{', '.join(MODEL_ARGS)} (within their ranges) are passed to timm.")
        out[name] = value
    return out


def check_architecture(arch: str) -> None:
    """Raise unless ``arch`` names a timm model that this library can wrap.

    Args:
        arch: A timm model name, with or without a pretrained tag (``resnet18.a1_in1k``).

    Raises:
        UnknownArchitectureError: ``arch`` is not a timm model name (any other type, a path,
            a ``hf-hub:`` name, ...); close names are suggested.
    """
    if not is_arch_name(arch):
        raise UnknownArchitectureError(str(arch)[:80])
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
        **model_args: Extra constructor arguments for ``timm.create_model``: only
            :data:`MODEL_ARGS` (``num_classes``, ``in_chans`` and ``pretrained`` are ignored;
            ``zero_init_last=True`` keeps timm's zero scale in each block's last batch norm, by default
            every batch norm starts at scale 1).

    Returns:
        The model, in training mode, on the CPU.

    Raises:
        UnknownArchitectureError: ``arch`` is not a timm model.
        UnsupportedArchitectureError: ``arch`` is a timm model but not a ResNet.
        ConfigError: ``model_args`` holds anything else than :data:`MODEL_ARGS`.
    """
    check_architecture(arch)
    model_args = check_model_args({k: v for k, v in model_args.items() if k != "pretrained"})
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_chans, **model_args)
    if not isinstance(model, ResNet):
        raise UnsupportedArchitectureError(arch, model_class=type(model).__name__)
    if not model_args.get("zero_init_last", False):
        # timm zero-initialises every block's last batch norm: the residual branches then do nothing until training
        # moves them, and option A's zero-padded channels stay 0 for good (ReLU'(0) = 0 stops their gradient)
        for block in model.modules():
            if isinstance(block, (BasicBlock, Bottleneck)):
                nn.init.ones_((block.bn3 if isinstance(block, Bottleneck) else block.bn2).weight)
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
