from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForImageClassification
from transformers.modeling_outputs import ImageClassifierOutputWithNoAttention

import hf_lottery_verify as hlv

from .helpers import make_model


def test_outputs_are_transformers_image_classification_outputs() -> None:
    model = make_model()
    out = model(torch.randn(3, 3, 32, 32), labels=torch.tensor([0, 1, 2]), output_hidden_states=True)
    assert isinstance(out, ImageClassifierOutputWithNoAttention)
    assert out.logits.shape == (3, 10) and out.loss.ndim == 0
    assert out.hidden_states[0].shape == (3, 64, 8, 8)
    tup = model(torch.randn(1, 3, 32, 32), return_dict=False)
    assert isinstance(tup, tuple) and tup[0].shape == (1, 10)


def test_config_defaults_and_auto_registration() -> None:
    cfg = hlv.SparseResNetConfig()
    assert cfg.model_type == "sparse_resnet" and cfg.num_labels == 10 and cfg.arch == "cifar_resnet20"
    assert isinstance(AutoConfig.for_model("sparse_resnet", arch="cifar_resnet8"), hlv.SparseResNetConfig)
    model = AutoModelForImageClassification.from_config(hlv.SparseResNetConfig(arch="cifar_resnet8", num_labels=4))
    assert isinstance(model, hlv.SparseResNetForImageClassification)
    assert model(torch.randn(1, 3, 32, 32)).logits.shape == (1, 4)


def test_constructor_keeps_timm_initialisation() -> None:
    torch.manual_seed(0)
    model = hlv.SparseResNetForImageClassification(hlv.SparseResNetConfig(arch="cifar_resnet8"))
    # every batch norm starts at scale 1 (timm's zero-initialised last one would leave each residual branch
    # function-free until training moves it); zero_init_last=True restores timm's
    assert torch.all(model.timm_model.layer1[0].bn2.weight == 1)
    zero = hlv.SparseResNetForImageClassification(hlv.SparseResNetConfig(arch="cifar_resnet8",
                                                                         model_args={"zero_init_last": True}))
    assert torch.all(zero.timm_model.layer1[0].bn2.weight == 0)
    # kaiming fan_out init: std ~ sqrt(2 / (16*9)) ~ 0.118, far from transformers' 0.02
    assert model.timm_model.layer1[0].conv1.weight.std() > 0.08


def test_prune_sets_masks_and_zeroes_weights() -> None:
    model = make_model("cifar_resnet20")
    masks = model.prune_(density=0.1)
    assert abs(model.density - 0.1) < 1e-5
    params = model.timm_parameters()
    for name, mask in masks.items():
        assert torch.all(params[name][~mask] == 0)
    assert "conv1.weight" not in masks and "fc.weight" not in masks
    # pruning again removes a share of what is left
    model.prune_(fraction=0.5)
    assert abs(model.density - 0.05) < 1e-5


def test_masks_property_is_a_copy() -> None:
    model = make_model(density=0.5)
    masks = model.masks
    masks.clear()
    assert len(model.masks) > 0
