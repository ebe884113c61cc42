from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models.resnet import BasicBlock, Bottleneck

import hf_lottery_verify as hlv
from hf_lottery_verify.architectures import CIFAR_ARCHS, CifarResNet, ZeroPadShortcut, create_resnet, stage_names

EXPECTED_PARAMS = {
    "cifar_resnet8": 78_042,
    "cifar_resnet20": 272_474,  # option B: 1x1-conv shortcuts (2,752 parameters more than the paper's)
    "cifar_resnet32": 466_906,
    "cifar_resnet56": 855_770,
    "cifar_resnet8_a": 75_290,
    "cifar_resnet20_a": 269_722,  # the paper's ResNet-20 ("0.27M", the reference code's res20s)
    "cifar_resnet32_a": 464_154,
    "cifar_resnet56_a": 853_018,
    "cifar_resnet18": 11_173_962,
    "cifar_resnet50": 23_520_842,
}


@pytest.mark.parametrize("arch", CIFAR_ARCHS)
def test_parameter_counts_and_forward(arch: str) -> None:
    model = timm.create_model(arch, num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMS[arch]
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)


def test_cifar_resnet20_structure() -> None:
    model = timm.create_model("cifar_resnet20")
    assert tuple(model.conv1.weight.shape) == (16, 3, 3, 3)
    assert model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    assert isinstance(model.layer4, torch.nn.Identity)
    assert stage_names(model) == ["layer1", "layer2", "layer3"]
    assert [len(getattr(model, s)) for s in stage_names(model)] == [3, 3, 3]
    assert [getattr(model, s)[0].conv1.out_channels for s in stage_names(model)] == [16, 32, 64]
    # CIFAR stem keeps the resolution until layer2: 32 -> 32 -> 16 -> 8
    assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 64, 8, 8)


def test_grayscale_and_other_label_counts() -> None:
    model = create_resnet("cifar_resnet20", num_classes=100, in_chans=1)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 100)


def test_imagenet_resnet_works_too() -> None:
    model = hlv.SparseResNetForImageClassification(hlv.SparseResNetConfig(arch="resnet18", num_labels=5))
    assert model(torch.randn(1, 3, 64, 64)).logits.shape == (1, 5)
    assert "conv1.weight" not in model.prunable_names()
    assert "layer1.0.conv1.weight" in model.prunable_names()


def test_unknown_architecture_suggests_names() -> None:
    with pytest.raises(hlv.UnknownArchitectureError) as info:
        create_resnet("cifar_resnet21")
    assert "cifar_resnet20" in info.value.suggestions
    assert "Did you mean" in str(info.value)


def test_non_resnet_is_refused() -> None:
    with pytest.raises(hlv.UnsupportedArchitectureError, match="not a ResNet"):
        create_resnet("mobilenetv3_small_050")


def test_no_pretrained_weights_for_cifar_variants() -> None:
    with pytest.raises(ValueError, match="No pretrained weights"):
        timm.create_model("cifar_resnet8", pretrained=True)


# --------------------------------------------------------------------------- option A (zero-padding shortcuts)


def test_zero_pad_shortcut_matches_the_reference_lambda() -> None:
    x = torch.randn(2, 16, 8, 8)
    planes = 32
    want = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4), "constant", 0)  # res20s' LambdaLayer
    got = ZeroPadShortcut(planes // 4)(x)
    assert torch.equal(got, want)
    assert got.shape == (2, 32, 4, 4)
    assert list(ZeroPadShortcut(8).parameters()) == [] and ZeroPadShortcut(8).state_dict() == {}
    assert torch.equal(ZeroPadShortcut(1, 2, stride=1)(x)[:, 1:17], x)
    assert "pad_before=8, pad_after=8, stride=2" in repr(ZeroPadShortcut(8))
    with pytest.raises(ValueError, match="non-negative"):
        ZeroPadShortcut(-1)


def test_cifar_resnet20_a_structure_and_names() -> None:
    model = timm.create_model("cifar_resnet20_a")
    assert stage_names(model) == ["layer1", "layer2", "layer3"]
    shortcuts = {name: m for name, m in model.named_modules() if isinstance(m, ZeroPadShortcut)}
    assert sorted(shortcuts) == ["layer2.0.downsample", "layer3.0.downsample"]
    assert [(m.pad_before, m.pad_after, m.stride) for m in shortcuts.values()] == [(8, 8, 2), (16, 16, 2)]
    assert model.layer1[0].downsample is None
    # timm's names: those of the option-B network without its shortcut convolutions and norms.
    option_b = timm.create_model("cifar_resnet20").state_dict()
    names = list(model.state_dict())
    assert names == [k for k in option_b if ".downsample." not in k]
    for name, tensor in model.state_dict().items():
        assert tensor.shape == option_b[name].shape
    assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 64, 8, 8)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert timm.get_pretrained_cfg("cifar_resnet20_a").input_size == (3, 32, 32)


def test_cifar_resnet20_a_in_the_sparse_model(tmp_path) -> None:
    torch.manual_seed(0)
    model = hlv.SparseResNetForImageClassification(hlv.SparseResNetConfig(arch="cifar_resnet20_a", num_labels=10))
    assert not any("downsample" in n for n in model.prunable_names())
    masks = model.prune_(density=0.1)
    assert set(masks) == set(model.prunable_names()) and abs(model.density - 0.1) < 1e-3
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x).logits
    model.save_pretrained(tmp_path / "r20a")
    loaded = hlv.load_model(tmp_path / "r20a")
    assert loaded.config.arch == "cifar_resnet20_a"
    assert all(torch.equal(loaded.masks[n], m) for n, m in model.masks.items())
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, before)
    # A plain timm model takes the loaded weights strictly.
    timm.create_model("cifar_resnet20_a").load_state_dict(loaded.timm_model.state_dict(), strict=True)


def test_zero_pad_needs_doubling_stages() -> None:
    with pytest.raises(ValueError, match="planes // 4"):
        CifarResNet(Bottleneck, (1, 1, 1), channels=(16, 32, 64), shortcut="zero_pad")
    with pytest.raises(ValueError, match="Unknown shortcut"):
        CifarResNet(BasicBlock, (1, 1, 1), channels=(16, 32, 64), shortcut="option_c")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="avg_down"):
        CifarResNet(BasicBlock, (1, 1, 1), channels=(16, 32, 64), shortcut="zero_pad", avg_down=True)
