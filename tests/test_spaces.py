"""Channel spaces of timm ResNets (hf_lottery_verify.spaces)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

import hf_lottery_verify as hlv
from hf_lottery_verify.architectures import CifarResNet
from hf_lottery_verify.errors import (
    CheckpointError,
    MissingWeightsError,
    UnknownArchitectureError,
    UnsupportedArchitectureError,
)
from hf_lottery_verify.spaces import (
    ChannelSpace,
    InconsistentChannelsError,
    Injection,
    UnsupportedStructureError,
    channel_spaces,
    tensor_spaces,
)

SMALL = {"channels": (8, 16, 32, 64), "stem_width": 8}

# (id, arch, model_args): every supported kind of stem, block and shortcut.
KINDS = [
    ("cifar_basic_conv_shortcut", "cifar_resnet8", None),
    ("cifar_basic_zero_pad", "cifar_resnet8_a", None),
    ("cifar_resnet20_zero_pad", "cifar_resnet20_a", None),
    ("imagenet_stem_basic", "resnet18", SMALL),
    ("deep_tiered_stem_avg_down", "resnet10t", SMALL),
    ("imagenet_stem_bottleneck", "resnet26", SMALL),
    ("deep_stem_bottleneck_avg_down", "resnet26d", SMALL),
]


def _model(arch: str, model_args: dict | None = None, **kwargs) -> hlv.SparseResNetForImageClassification:
    return hlv.SparseResNetForImageClassification(hlv.SparseResNetConfig(arch=arch, model_args=model_args, **kwargs))


def _check_coverage(spaces: list[ChannelSpace], net: nn.Module) -> None:
    """Every conv weight produces one space and consumes one; BN tensors produce one; fc.weight consumes one."""
    state = net.state_dict()
    produced = Counter(n for s in spaces for n in s.producers)
    consumed = Counter(n for s in spaces for n in s.consumers)
    convs = {f"{n}.weight" for n, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    norms = {f"{n}.{t}" for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)
             for t in ("weight", "bias", "running_mean", "running_var")}
    assert set(produced) == convs | norms
    assert set(consumed) == convs | {"fc.weight"}
    assert set(produced.values()) == {1} and set(consumed.values()) == {1}
    assert set(produced) | set(consumed) <= set(state)
    for space in spaces:
        for name in space.producers:
            assert state[name].shape[0] == space.size, (space.name, name)
        for name in space.consumers:
            assert state[name].shape[1] == space.size, (space.name, name)
        assert [c for c, _ in space.norms] == [p for p in space.producers if p in convs]
        for conv, norm in space.norms:
            assert f"{norm}.running_var" in space.producers and conv in space.producer_convs
    assert spaces[0].kind == "input" and spaces[0].fixed and spaces[0].producers == ()
    assert [s.kind for s in spaces].count("input") == 1
    assert len({s.name for s in spaces}) == len(spaces)
    assert all(s.homogeneous for s in spaces[1:])  # timm ResNets use ReLU throughout
    # Forward (topological) order: a space comes after the space its first producer reads.
    position = {s.name: i for i, s in enumerate(spaces)}
    axes = tensor_spaces(spaces)
    for space in spaces[1:]:
        first_conv = space.norms[0][0]
        assert axes[first_conv][0] == space.name
        assert position[axes[first_conv][1]] < position[space.name], space.name
    for space in spaces:
        if space.injection is not None:
            assert position[space.injection.source] < position[space.name]


@pytest.mark.parametrize(("arch", "model_args"), [k[1:] for k in KINDS], ids=[k[0] for k in KINDS])
def test_every_tensor_is_covered_exactly_once(arch: str, model_args: dict | None) -> None:
    model = _model(arch, model_args)
    spaces = channel_spaces(model)
    _check_coverage(spaces, model.timm_model)
    # The same description from the bare timm model, the architecture name and the state dict.
    assert channel_spaces(model.timm_model) == spaces
    assert channel_spaces(arch, model_args=model_args) == spaces
    assert channel_spaces(model.timm_model.state_dict(), arch=arch, model_args=model_args) == spaces


def test_cifar_resnet8_spaces_in_detail() -> None:
    spaces = channel_spaces(_model("cifar_resnet8"))
    assert [(s.name, s.kind, s.size) for s in spaces] == [
        ("input", "input", 3),
        ("stem", "stream", 16),
        ("layer1.0.conv1", "internal", 16),
        ("layer2.0.conv1", "internal", 32),
        ("layer2.0", "stream", 32),
        ("layer3.0.conv1", "internal", 64),
        ("layer3.0", "stream", 64),
    ]
    stem = spaces[1]
    assert stem.producers == (
        "conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
        "layer1.0.conv2.weight", "layer1.0.bn2.weight", "layer1.0.bn2.bias", "layer1.0.bn2.running_mean",
        "layer1.0.bn2.running_var",
    )
    assert stem.consumers == ("layer1.0.conv1.weight", "layer2.0.conv1.weight", "layer2.0.downsample.0.weight")
    assert stem.norms == (("conv1.weight", "bn1"), ("layer1.0.conv2.weight", "layer1.0.bn2"))
    layer2 = spaces[4]
    assert layer2.norms == (("layer2.0.downsample.0.weight", "layer2.0.downsample.1"),
                            ("layer2.0.conv2.weight", "layer2.0.bn2"))
    assert spaces[-1].consumers == ("fc.weight",)
    assert spaces[0].consumers == ("conv1.weight",)
    assert all(s.injection is None for s in spaces)


def test_zero_pad_streams_and_injections() -> None:
    spaces = channel_spaces("cifar_resnet20_a")
    streams = [s for s in spaces if s.kind == "stream"]
    assert [(s.name, s.size, s.injection) for s in streams] == [
        ("stem", 16, None),
        ("layer2.0", 32, Injection(source="stem", offset=8, module="layer2.0.downsample")),
        ("layer3.0", 64, Injection(source="layer2.0", offset=16, module="layer3.0.downsample")),
    ]
    # One stream spans the stem and every block of stage 1: 1 + 3 producing convs, 3 + 1 readers.
    assert len(streams[0].norms) == 4
    assert streams[0].consumers == ("layer1.0.conv1.weight", "layer1.1.conv1.weight", "layer1.2.conv1.weight",
                                    "layer2.0.conv1.weight")
    assert not any("downsample" in n for s in spaces for n in (*s.producers, *s.consumers))
    assert streams[-1].consumers[-1] == "fc.weight"
    assert sum(s.kind == "internal" for s in spaces) == 9


def test_deep_stem_internal_spaces() -> None:
    spaces = channel_spaces("resnet10t", model_args=SMALL)
    assert [(s.name, s.kind) for s in spaces[:4]] == [
        ("input", "input"), ("conv1.0", "internal"), ("conv1.3", "internal"), ("stem", "stream")]
    assert spaces[1].producers == ("conv1.0.weight", "conv1.1.weight", "conv1.1.bias", "conv1.1.running_mean",
                                   "conv1.1.running_var")
    assert spaces[1].consumers == ("conv1.3.weight",)
    assert spaces[3].norms[0] == ("conv1.6.weight", "bn1")
    layer2 = next(s for s in spaces if s.name == "layer2.0")
    assert layer2.norms[0] == ("layer2.0.downsample.1.weight", "layer2.0.downsample.2")  # after the avg_down pool


def test_tensor_spaces() -> None:
    axes = tensor_spaces(channel_spaces("cifar_resnet8"))
    assert axes["conv1.weight"] == ("stem", "input")
    assert axes["layer1.0.conv2.weight"] == ("stem", "layer1.0.conv1")
    assert axes["layer2.0.downsample.0.weight"] == ("layer2.0", "stem")
    assert axes["layer2.0.bn1.running_var"] == ("layer2.0.conv1", None)
    assert axes["fc.weight"] == (None, "layer3.0")
    assert "fc.bias" not in axes


def test_state_dict_with_other_shapes_prefixes_and_in_chans() -> None:
    state = _model("cifar_resnet8_a", in_chans=1).timm_model.state_dict()
    spaces = channel_spaces({f"timm_model.{k}": v for k, v in state.items()}, arch="cifar_resnet8_a")
    assert spaces[0].size == 1
    # A widened stream (three extra channels in the stem stream, as a thief's dummy channels).
    wide = dict(state)
    stem = next(s for s in spaces if s.name == "stem")
    for name in stem.producers:
        wide[name] = torch.cat([state[name], state[name][:3]], dim=0)
    for name in stem.consumers:
        wide[name] = torch.cat([state[name], state[name][:, :3]], dim=1)
    sizes = {s.name: s.size for s in channel_spaces(wide, arch="cifar_resnet8_a")}
    assert sizes["stem"] == 19 and sizes["layer2.0"] == 32


def test_state_dict_errors() -> None:
    state = _model("cifar_resnet8").timm_model.state_dict()
    with pytest.raises(CheckpointError, match="arch="):
        channel_spaces(state)
    missing = {k: v for k, v in state.items() if k != "layer1.0.bn1.running_var"}
    with pytest.raises(MissingWeightsError, match="layer1.0.bn1.running_var"):
        channel_spaces(missing, arch="cifar_resnet8")
    broken = dict(state)
    broken["layer1.0.bn1.weight"] = torch.ones(15)
    with pytest.raises(InconsistentChannelsError, match="layer1.0.bn1.weight") as info:
        channel_spaces(broken, arch="cifar_resnet8")
    assert (info.value.space, info.value.expected, info.value.got) == ("layer1.0.conv1", 16, 15)
    assert isinstance(info.value, ValueError)
    with pytest.raises(UnknownArchitectureError):
        channel_spaces("cifar_resnet9")
    with pytest.raises(TypeError):
        channel_spaces(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("build", "module"),
    [
        (lambda: ResNet(BasicBlock, [1, 1, 1, 1], channels=(8, 16, 32, 64),
                        block_args={"attn_layer": "se"}), "layer1.0.se"),
        (lambda: ResNet(Bottleneck, [1, 1, 1, 1], channels=(8, 16, 32, 64), cardinality=2, base_width=8),
         "layer1.0.conv2"),
        (lambda: ResNet(BasicBlock, [1, 1, 1, 1], channels=(8, 16, 32, 64), stem_type="deep", stem_width=8,
                        replace_stem_pool=True), "maxpool"),
        (lambda: ResNet(BasicBlock, [1, 1, 1, 1], channels=(8, 16, 32, 64), global_pool="catavgmax"),
         "global_pool"),
        (lambda: CifarResNet(BasicBlock, (1, 1, 1), channels=(8, 16, 32), norm_layer=lambda c, **kw: nn.GroupNorm(
            2, c)), "bn1"),
    ],
    ids=["squeeze_excitation", "grouped_conv", "stem_pool_conv", "concat_pool", "group_norm"],
)
def test_unsupported_structures_raise(build, module: str) -> None:
    with pytest.raises(UnsupportedStructureError) as info:
        channel_spaces(build())
    assert info.value.module == module
    assert isinstance(info.value, UnsupportedArchitectureError) and isinstance(info.value, ValueError)
    assert module in str(info.value)


def test_non_resnet_raises() -> None:
    with pytest.raises(UnsupportedArchitectureError, match="not a ResNet"):
        channel_spaces(nn.Sequential(nn.Conv2d(3, 3, 1)))
