from __future__ import annotations

import pytest
import timm
import torch

import hf_lottery_verify as hlv
from hf_lottery_verify.architectures import CIFAR_ARCHS, create_resnet, stage_names

EXPECTED_PARAMS = {
    "cifar_resnet8": 78_042,
    "cifar_resnet20": 272_474,  # the paper's "0.27M"
    "cifar_resnet32": 466_906,
    "cifar_resnet56": 855_770,
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
