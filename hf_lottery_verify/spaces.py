"""The *channel spaces* of a timm ResNet: the channel sets that function-preserving edits must treat alike.

A thief can renumber, rescale or duplicate the channels of a stolen network without
changing what it computes (Yan et al., USENIX Security 2023), as long as every tensor
that reads or writes a set of channels is changed the same way. This module names those
sets. A :class:`ChannelSpace` lists

* its **producers**: tensors whose dim 0 indexes the space: the weights of the
  convolutions that write it (and their biases, if any), plus the four tensors
  ``weight``, ``bias``, ``running_mean``, ``running_var`` of the batch norm that
  follows each of them;
* its **consumers**: tensors whose dim 1 indexes the space: the weights of the
  convolutions that read it and, for the last space, the classifier's ``fc.weight``
  columns;
* for a zero-padding shortcut (option A, :class:`~hf_lottery_verify.architectures.ZeroPadShortcut`),
  an :class:`Injection`: channel ``i`` of the source space *is* channel ``i + offset``
  of this one.

Kinds of space:

* ``"input"``: the image channels (fixed; no transformation may touch them);
* ``"internal"``: the output of a convolution inside a block (all but the block's last)
  or inside a deep stem (all but the stem's last), read by the next convolution only;
* ``"stream"``: a residual stream: the stem output and every block output joined to it
  by identity shortcuts. A block whose shortcut is a ``downsample`` convolution (also
  after an ``avg_down`` pool) or a zero-padding shortcut starts a new stream; its
  downsample convolution and batch norm are producers of the new stream and the
  convolution is a consumer of the previous one.

Every name is timm's canonical parameter/buffer name (``layer2.0.bn2.running_var``, no
``timm_model.`` prefix), so the description of an architecture applies to any
checkpoint of it, also one whose shapes were changed by a thief (a widened layer):
:func:`channel_spaces` then reads the sizes off the checkpoint.

Example:
    >>> from hf_lottery_verify.spaces import channel_spaces
    >>> spaces = channel_spaces("cifar_resnet8_a")
    >>> [(s.name, s.kind, s.size) for s in spaces][:3]
    [('input', 'input', 3), ('stem', 'stream', 16), ('layer1.0.conv1', 'internal', 16)]
    >>> spaces[4].injection
    Injection(source='stem', offset=8, module='layer2.0.downsample')
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from timm.models.resnet import ResNet
from torch import nn

from .architectures import ZeroPadShortcut, create_resnet, stage_names
from .errors import (  # the two structure errors are defined in errors.py and re-exported here
    CheckpointError,
    InconsistentChannelsError,
    MissingWeightsError,
    UnsupportedArchitectureError,
    UnsupportedStructureError,
)

__all__ = [
    "SpaceKind",
    "Injection",
    "ChannelSpace",
    "channel_spaces",
    "tensor_spaces",
    "UnsupportedStructureError",
    "InconsistentChannelsError",
]

SpaceKind = Literal["input", "internal", "stream"]

_BN_TENSORS = ("weight", "bias", "running_mean", "running_var")
# Activations that commute with a positive per-channel scale: f(a·x) = a·f(x) for a > 0.
_HOMOGENEOUS = (nn.ReLU, nn.LeakyReLU, nn.Identity)
_ELEMENTWISE = (*_HOMOGENEOUS, nn.ReLU6, nn.ELU, nn.SiLU, nn.GELU, nn.Mish, nn.Hardswish, nn.Sigmoid, nn.Tanh)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Injection:
    """Channels of one space copied into another by a zero-padding shortcut.

    Attributes:
        source: Name of the space whose channel ``i`` ...
        offset: ... appears as channel ``i + offset`` of the space holding this injection
            (the shortcut's ``pad_before``). The other channels of that space receive zeros
            from the shortcut.
        module: Name of the :class:`~hf_lottery_verify.architectures.ZeroPadShortcut` module.
    """

    source: str
    offset: int
    module: str


@dataclass(frozen=True)
class ChannelSpace:
    """One set of channels that function-preserving transformations must treat consistently.

    Attributes:
        name: ``"input"``; for an internal space the name of the convolution writing it
            (``"layer1.0.conv1"``, ``"conv1.0"``); for a stream ``"stem"`` or the name of the
            block that starts it (``"layer2.0"``).
        kind: ``"input"``, ``"internal"`` or ``"stream"``.
        size: Number of channels.
        producers: Tensors whose dim 0 indexes the space (conv weights and biases, batch
            norm ``weight``/``bias``/``running_mean``/``running_var``), in forward order.
        consumers: Tensors whose dim 1 indexes the space (conv weights, ``fc.weight``).
        norms: ``(conv weight, batch norm module)`` for every producing convolution: the
            batch norm that normalises that convolution's output.
        injection: For a stream started by a zero-padding shortcut, where its shortcut
            channels come from; ``None`` otherwise.
        homogeneous: Every read of the space goes through a positively homogeneous
            activation (ReLU), so a positive per-channel scale can move from the producers'
            batch norms to the consumers.
        rectified: Every write to the space ends in a ReLU, so a channel whose producers add
            only constants ``<= 0`` is exactly 0 (:mod:`hf_lottery_verify.liveness`).
    """

    name: str
    kind: SpaceKind
    size: int
    producers: tuple[str, ...] = ()
    consumers: tuple[str, ...] = ()
    norms: tuple[tuple[str, str], ...] = ()
    injection: Injection | None = None
    homogeneous: bool = False
    rectified: bool = False

    @property
    def fixed(self) -> bool:
        """Whether the space may not be transformed at all (the image input)."""
        return self.kind == "input"

    @property
    def producer_convs(self) -> tuple[str, ...]:
        """The conv weights among the producers."""
        return tuple(conv for conv, _ in self.norms)


@dataclass
class _Draft:
    name: str
    kind: SpaceKind
    size: int
    producers: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    norms: list[tuple[str, str]] = field(default_factory=list)
    injection: Injection | None = None
    homogeneous: bool = True
    rectified: bool = True

    def freeze(self) -> ChannelSpace:
        return ChannelSpace(**{k: tuple(v) if isinstance(v, list) else v for k, v in vars(self).items()})


# --------------------------------------------------------------------------- walking the model


class _Walker:
    def __init__(self, net: ResNet, arch: str) -> None:
        self.net = net
        self.arch = arch
        self.spaces: list[_Draft] = []

    def fail(self, module: str, reason: str) -> UnsupportedStructureError:
        return UnsupportedStructureError(self.arch, module=module, reason=reason)

    def new(self, name: str, kind: SpaceKind, size: int) -> _Draft:
        draft = _Draft(name=name, kind=kind, size=size, homogeneous=kind != "input", rectified=kind != "input")
        self.spaces.append(draft)
        return draft

    def check_conv(self, name: str, conv: nn.Module) -> nn.Conv2d:
        if not isinstance(conv, nn.Conv2d):
            raise self.fail(name, f"expected a Conv2d, found {type(conv).__name__}")
        if conv.groups != 1:
            raise self.fail(name, f"grouped convolution (groups={conv.groups})")
        return conv

    def check_norm(self, name: str, norm: nn.Module) -> nn.BatchNorm2d:
        if not isinstance(norm, nn.BatchNorm2d) or not norm.affine or not norm.track_running_stats:
            raise self.fail(name, f"expected an affine BatchNorm2d with running statistics, found {norm!r}")
        return norm

    def check_act(self, name: str, act: nn.Module | None) -> bool:
        if act is None:
            return True
        if not isinstance(act, _ELEMENTWISE):
            raise self.fail(name, f"activation {type(act).__name__} is not element-wise")
        return isinstance(act, _HOMOGENEOUS)

    def produce(self, space: _Draft, conv_name: str, conv: nn.Conv2d, norm_name: str, norm: nn.BatchNorm2d,
                homogeneous: bool, act: nn.Module | None = None) -> None:
        if conv.out_channels != space.size or norm.num_features != space.size:
            raise self.fail(conv_name, f"{conv.out_channels} output channels feed a space of {space.size}")
        space.producers.append(f"{conv_name}.weight")
        if conv.bias is not None:
            space.producers.append(f"{conv_name}.bias")
        space.producers.extend(f"{norm_name}.{t}" for t in _BN_TENSORS)
        space.norms.append((f"{conv_name}.weight", norm_name))
        space.homogeneous = space.homogeneous and homogeneous
        space.rectified = space.rectified and isinstance(act, (nn.ReLU, nn.ReLU6))

    def consume(self, space: _Draft, conv_name: str, conv: nn.Conv2d) -> None:
        if conv.in_channels != space.size:
            raise self.fail(conv_name, f"reads {conv.in_channels} channels from a space of {space.size}")
        space.consumers.append(f"{conv_name}.weight")

    def internal(self, current: _Draft, layers: list[tuple[str, nn.Conv2d, str, nn.BatchNorm2d, nn.Module | None]]
                 ) -> _Draft:
        """An internal space per ``(conv, norm, act)`` layer, each read by the next (the first reads ``current``)."""
        for conv_name, conv, norm_name, norm, act in layers:
            self.consume(current, conv_name, conv)
            current = self.new(conv_name, "internal", conv.out_channels)
            self.produce(current, conv_name, conv, norm_name, norm, self.check_act(f"{conv_name}.act", act), act)
        return current

    # ------------------------------------------------------------------ parts

    def stem(self) -> _Draft:
        net = self.net
        conv1 = getattr(net, "conv1", None)
        if isinstance(conv1, nn.Conv2d):
            layers: list[tuple[str, nn.Conv2d, str, nn.BatchNorm2d, nn.Module | None]] = []
            last_conv = ("conv1", self.check_conv("conv1", conv1))
        elif isinstance(conv1, nn.Sequential):
            children = list(conv1.named_children())
            layers = []
            i = 0
            while i < len(children) - 1:
                (c_name, conv), (n_name, norm) = children[i], children[i + 1]
                act = children[i + 2][1] if i + 2 < len(children) else None
                layers.append((f"conv1.{c_name}", self.check_conv(f"conv1.{c_name}", conv), f"conv1.{n_name}",
                               self.check_norm(f"conv1.{n_name}", norm), act))
                i += 3
            if i != len(children) - 1:
                raise self.fail("conv1", "a deep stem must be (conv, norm, act)* followed by a conv")
            c_name, conv = children[-1]
            last_conv = (f"conv1.{c_name}", self.check_conv(f"conv1.{c_name}", conv))
        else:
            raise self.fail("conv1", f"unknown stem {type(conv1).__name__}")
        first = layers[0][1] if layers else last_conv[1]
        current = self.internal(self.new("input", "input", first.in_channels), layers)
        bn1 = self.check_norm("bn1", getattr(net, "bn1", None))
        homogeneous = self.check_act("act1", getattr(net, "act1", None))
        pool = getattr(net, "maxpool", None)
        if pool is not None and not isinstance(pool, (nn.MaxPool2d, nn.AvgPool2d, nn.Identity)):
            raise self.fail("maxpool", f"stem pooling {type(pool).__name__} (only max/avg pooling or none)")
        conv_name, conv = last_conv
        self.consume(current, conv_name, conv)
        stream = self.new("stem", "stream", conv.out_channels)
        self.produce(stream, conv_name, conv, "bn1", bn1, homogeneous, getattr(net, "act1", None))
        return stream

    def block(self, prefix: str, block: nn.Module, stream: _Draft) -> _Draft:
        convs = []
        for k in (1, 2, 3):
            conv = getattr(block, f"conv{k}", None)
            if conv is None:
                break
            convs.append((f"{prefix}.conv{k}", self.check_conv(f"{prefix}.conv{k}", conv),
                          f"{prefix}.bn{k}", self.check_norm(f"{prefix}.bn{k}", getattr(block, f"bn{k}", None)),
                          getattr(block, f"act{k}", None)))
        if len(convs) < 2:
            raise self.fail(prefix, f"unknown block {type(block).__name__}")
        if getattr(block, "se", None) is not None:
            raise self.fail(f"{prefix}.se", "an attention gate")
        aa = getattr(block, "aa", None)
        if aa is not None and not isinstance(aa, nn.Identity):
            raise self.fail(f"{prefix}.aa", "an anti-aliasing filter")
        current = self.internal(stream, convs[:-1])
        conv_name, conv, norm_name, norm, act = convs[-1]
        self.consume(current, conv_name, conv)
        homogeneous = self.check_act(f"{prefix}.act{len(convs)}", act)
        downsample = getattr(block, "downsample", None)
        if downsample is None or isinstance(downsample, nn.Identity):
            out = stream
        elif isinstance(downsample, ZeroPadShortcut):
            out = self.new(prefix, "stream", conv.out_channels)
            if downsample.pad_before + stream.size + downsample.pad_after != out.size:
                raise self.fail(f"{prefix}.downsample", f"zero padding takes {stream.size} channels to "
                                f"{downsample.pad_before + stream.size + downsample.pad_after}, not {out.size}")
            out.injection = Injection(source=stream.name, offset=downsample.pad_before,
                                      module=f"{prefix}.downsample")
        elif isinstance(downsample, nn.Sequential):
            parts = list(downsample.named_children())
            pools = parts[:-2]
            if len(parts) < 2 or len(pools) > 1 or any(not isinstance(p, (nn.AvgPool2d, nn.Identity))
                                                       and type(p).__name__ != "AvgPool2dSame" for _, p in pools):
                raise self.fail(f"{prefix}.downsample", "a shortcut other than [avg pool,] conv, norm")
            (c_name, ds_conv), (n_name, ds_norm) = parts[-2], parts[-1]
            ds_conv_name, ds_norm_name = f"{prefix}.downsample.{c_name}", f"{prefix}.downsample.{n_name}"
            self.check_conv(ds_conv_name, ds_conv)
            self.check_norm(ds_norm_name, ds_norm)
            self.consume(stream, ds_conv_name, ds_conv)
            out = self.new(prefix, "stream", conv.out_channels)
            self.produce(out, ds_conv_name, ds_conv, ds_norm_name, ds_norm, homogeneous, act)
        else:
            raise self.fail(f"{prefix}.downsample", f"shortcut {type(downsample).__name__}")
        self.produce(out, conv_name, conv, norm_name, norm, homogeneous, act)
        return out

    def head(self, stream: _Draft) -> None:
        pool = getattr(self.net, "global_pool", None)
        mult = pool.feat_mult() if hasattr(pool, "feat_mult") else 1
        if mult != 1:
            raise self.fail("global_pool", "a pooling head that concatenates features")
        fc = getattr(self.net, "fc", None)
        if isinstance(fc, nn.Linear):
            if fc.in_features != stream.size:
                raise self.fail("fc", f"reads {fc.in_features} features from a space of {stream.size}")
            stream.consumers.append("fc.weight")
        elif fc is not None and not isinstance(fc, nn.Identity):
            raise self.fail("fc", f"classifier {type(fc).__name__}")

    def walk(self) -> list[ChannelSpace]:
        stream = self.stem()
        for stage in stage_names(self.net):
            for idx, block in getattr(self.net, stage).named_children():
                stream = self.block(f"{stage}.{idx}", block, stream)
        self.head(stream)
        return [d.freeze() for d in self.spaces]


def _arch_of(net: nn.Module) -> str:
    cfg = getattr(net, "pretrained_cfg", None) or {}
    return str(cfg.get("architecture", "?"))


def _spaces_of_module(model: nn.Module) -> list[ChannelSpace]:
    net = getattr(model, "timm_model", model)
    if not isinstance(net, ResNet):
        raise UnsupportedArchitectureError(_arch_of(net), model_class=type(net).__name__)
    return _Walker(net, _arch_of(net)).walk()


def _structure_of_arch(arch: str, model_args: Mapping[str, Any] | None) -> nn.Module:
    with torch.device("meta"):
        return create_resnet(arch.split(".", 1)[0], num_classes=10, **dict(model_args or {}))


@functools.lru_cache(maxsize=32)
def _arch_spaces(arch: str, model_args: str) -> list[ChannelSpace]:
    """The spaces of an architecture (cached: building even a meta-device ResNet-50 takes a tenth of a second)."""
    return _spaces_of_module(_structure_of_arch(arch, json.loads(model_args)))


def _sizes_from_state_dict(spaces: Sequence[ChannelSpace], state_dict: Mapping[str, torch.Tensor], *,
                           arch: str) -> list[ChannelSpace]:
    missing = [n for s in spaces for n in (*s.producers, *s.consumers) if n not in state_dict]
    if missing:
        raise MissingWeightsError(sorted(set(missing)), arch=arch)
    out = []
    by_name: dict[str, ChannelSpace] = {}
    for space in spaces:
        dims = [(n, 0) for n in space.producers] + [(n, 1) for n in space.consumers]
        size = int(state_dict[dims[0][0]].shape[dims[0][1]])
        for name, dim in dims:
            shape = tuple(state_dict[name].shape)
            got = shape[dim] if len(shape) > dim else -1
            if got != size:
                raise InconsistentChannelsError(space.name, param_name=name, expected=size, got=got)
        new = replace(space, size=size)
        if space.injection is not None:
            source = by_name[space.injection.source]
            if space.injection.offset + source.size > size:
                raise InconsistentChannelsError(space.name, param_name=space.injection.module,
                                                expected=size, got=space.injection.offset + source.size)
        by_name[space.name] = new
        out.append(new)
    return out


def channel_spaces(
    source: nn.Module | Mapping[str, torch.Tensor] | str,
    *,
    arch: str | None = None,
    model_args: Mapping[str, Any] | None = None,
) -> list[ChannelSpace]:
    """The channel spaces of a timm ResNet, in forward (topological) order.

    Args:
        source: A :class:`~hf_lottery_verify.SparseResNetForImageClassification`, a timm
            ResNet, an architecture name (built on the meta device, with 3 input channels:
            no memory, no weights) or a state dict (timm names; ``timm_model.``/``module.``
            prefixes are stripped) whose shapes give the sizes — the shapes may differ from
            the architecture's (a suspect with widened layers or one input channel).
        arch (`str`, *optional*): The architecture of a state dict ``source`` (required then).
        model_args (`Mapping[str, Any]`, *optional*): Extra ``timm.create_model`` arguments
            when ``source`` is a name or a state dict (``SparseResNetConfig.model_args``).

    Returns:
        The spaces: ``"input"`` first, then internal spaces and streams in the order the
        forward pass first writes them. Every conv weight is the producer of exactly one
        space and the consumer of exactly one; ``fc.weight`` consumes the last stream.

    Raises:
        UnsupportedArchitectureError: The model is not a timm ResNet;
            :class:`UnsupportedStructureError` (a subclass) when it uses a part whose
            channels cannot be followed (attention gates, grouped convolutions, ...).
        UnknownArchitectureError: ``arch`` (or ``source``) is not a timm model.
        CheckpointError: A state dict without ``arch``.
        MissingWeightsError: The state dict lacks a tensor of the architecture.
        InconsistentChannelsError: The state dict's tensors disagree on a space's size.

    Example:
        >>> spaces = channel_spaces("resnet18")
        >>> [s.name for s in spaces if s.kind == "stream"]
        ['stem', 'layer2.0', 'layer3.0', 'layer4.0']
    """
    if isinstance(source, nn.Module):
        return _spaces_of_module(source)
    if isinstance(source, str):
        return _spaces_of_module(_structure_of_arch(source, model_args))
    if isinstance(source, Mapping):
        from .storage import canonicalize_state_dict

        if arch is None:
            raise CheckpointError("channel_spaces(state_dict) needs arch=... (the timm architecture it belongs to).")
        state_dict = canonicalize_state_dict(source)
        spaces = _arch_spaces(arch, json.dumps(dict(model_args or {}), sort_keys=True, default=str))
        return _sizes_from_state_dict(spaces, state_dict, arch=arch)
    raise TypeError(f"channel_spaces() takes a model, a state dict or an architecture name, not {type(source).__name__}.")


def tensor_spaces(spaces: Sequence[ChannelSpace]) -> dict[str, tuple[str | None, str | None]]:
    """For every tensor named by ``spaces``: the space its dim 0 indexes and the one its dim 1 indexes.

    Args:
        spaces: The result of :func:`channel_spaces`.

    Returns:
        ``{tensor name: (space of dim 0 or None, space of dim 1 or None)}``; batch norm
        tensors have no dim-1 space, ``fc.weight`` no dim-0 space.
    """
    out: dict[str, tuple[str | None, str | None]] = {}
    for space in spaces:
        for name in space.producers:
            out[name] = (space.name, out.get(name, (None, None))[1])
        for name in space.consumers:
            out[name] = (out.get(name, (None, None))[0], space.name)
    return out
