from __future__ import annotations

import numpy as np
import pytest
import torch

import hf_lottery_verify as hlv
from hf_lottery_verify.codecs import decode_positions, encode_positions, pack_bits, unpack_bits
from hf_lottery_verify.masks import (
    count_kept,
    density,
    masks_from_weights,
    prunable_parameter_names,
    squeeze_mask,
    timm_parameters,
)
from hf_lottery_verify.pruning import PRUNING_METHODS, global_top_k, magnitude_prune, prune, random_prune, top_k_mask
from hf_lottery_verify.training import MaskEnforcer

from .helpers import make_model


def _params_and_masks(model):
    params = model.timm_parameters()
    return params, {n: torch.ones_like(params[n], dtype=torch.bool) for n in model.prunable_names()}


def test_timm_parameters_of_a_model_a_timm_network_and_a_state_dict() -> None:
    model = make_model("cifar_resnet8")
    expected = model.timm_parameters()
    for source in (model, model.timm_model):
        got = timm_parameters(source)
        assert list(got) == list(expected) and all(got[n] is expected[n] for n in expected)
    detached = timm_parameters(model, detach=True)
    assert not any(t.requires_grad for t in detached.values())
    assert all(detached[n].data_ptr() == expected[n].data_ptr() for n in expected)
    wrapped = model.state_dict()  # timm_model.<name>, buffers included
    from_sd = timm_parameters(wrapped)
    assert set(expected) <= set(from_sd) and "bn1.running_mean" in from_sd
    assert from_sd["conv1.weight"] is wrapped["timm_model.conv1.weight"]
    # a bare name wins over its prefixed twin
    mixed = {"timm_model.fc.bias": torch.zeros(2), "fc.bias": torch.ones(2)}
    assert bool(timm_parameters(mixed)["fc.bias"].eq(1).all())
    with pytest.raises(TypeError, match="state dict"):
        timm_parameters([1, 2])


def test_default_prunable_set_is_all_convs_but_stem() -> None:
    model = make_model("cifar_resnet20")
    names = prunable_parameter_names(model.timm_model)
    assert "conv1.weight" not in names and "fc.weight" not in names
    assert "layer2.0.downsample.0.weight" in names
    assert len(names) == 18 + 2  # 9 blocks x 2 convs + 2 shortcut convs
    with_all = prunable_parameter_names(model.timm_model, include_stem=True, include_classifier=True)
    assert with_all[0] == "conv1.weight" and with_all[-1] == "fc.weight" and len(with_all) == len(names) + 2


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("density", [0.5, 0.2, 0.0137])
def test_magnitude_pruning_hits_exact_density(scope: str, density: float) -> None:
    params, masks = _params_and_masks(make_model("cifar_resnet20"))
    new = magnitude_prune(params, masks, density=density, scope=scope)
    total = sum(m.numel() for m in masks.values())
    if scope == "global":
        assert count_kept(new) == round(density * total)
    else:
        for mask in new.values():
            assert int(mask.sum()) == round(density * mask.numel())


def test_global_magnitude_keeps_the_largest_weights() -> None:
    params, masks = _params_and_masks(make_model())
    new = magnitude_prune(params, masks, density=0.3)
    kept = torch.cat([params[n].detach().abs()[new[n]] for n in new])
    dropped = torch.cat([params[n].detach().abs()[~new[n]] for n in new])
    assert kept.min() >= dropped.max()


def test_fraction_prunes_share_of_kept_and_never_revives() -> None:
    params, masks = _params_and_masks(make_model())
    first = magnitude_prune(params, masks, fraction=0.2)
    second = magnitude_prune(params, first, fraction=0.2)
    n1, n2 = count_kept(first), count_kept(second)
    assert n2 == n1 - round(0.2 * n1)
    assert all(not (second[n] & ~first[n]).any() for n in first)


def test_random_pruning_is_seeded() -> None:
    _, masks = _params_and_masks(make_model())
    a = random_prune(masks, fraction=0.5, seed=3)
    b = random_prune(masks, fraction=0.5, seed=3)
    c = random_prune(masks, fraction=0.5, seed=4)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)
    assert count_kept(a) == count_kept(masks) - round(0.5 * count_kept(masks))


def test_prune_registry_and_errors() -> None:
    params, masks = _params_and_masks(make_model())
    assert set(PRUNING_METHODS) == {"global_magnitude", "layer_magnitude", "global_random", "layer_random"}
    with pytest.raises(hlv.UnknownNameError, match="global_magnitude"):
        prune(params, masks, method="snip", density=0.5)
    with pytest.raises(hlv.DensityError, match="exactly one"):
        prune(params, masks, density=0.5, fraction=0.5)
    with pytest.raises(hlv.DensityError):
        prune(params, masks, density=1.5)
    half = prune(params, masks, density=0.5)
    with pytest.raises(hlv.DensityError, match="only remove"):
        prune(params, half, density=0.8)


def test_top_k_breaks_ties_by_position() -> None:
    s = torch.tensor([1.0, 3.0, 3.0, 3.0, 2.0, float("-inf")])
    assert top_k_mask(s, 2).tolist() == [False, True, True, False, False, False]
    assert top_k_mask(s, 5).sum() == 5
    with pytest.raises(hlv.DensityError, match="selectable"):
        top_k_mask(s, 6)
    with pytest.raises(ValueError, match="NaN"):
        top_k_mask(torch.tensor([float("nan"), 1.0]), 1)


def test_spar_rspar_squeeze() -> None:
    m = torch.zeros(4, 3, 3, 3, dtype=torch.bool)
    m[0, 1, 2, 2] = True
    m[3, 0, 0, 0] = True
    m[3, 0, 1, 1] = True
    assert density(m) == 3 / m.numel()
    sq = squeeze_mask(m)
    assert sq.shape == (4, 3)
    assert sq.nonzero().tolist() == [[0, 1], [3, 0]]


def test_bit_packing_matches_numpy_and_round_trips() -> None:
    gen = torch.Generator().manual_seed(0)
    for shape in [(1,), (7,), (8,), (3, 5, 3, 3), (64, 64, 3, 3)]:
        m = torch.rand(shape, generator=gen) < 0.3
        packed = pack_bits(m)
        assert packed.dtype == torch.uint8 and packed.numel() == (m.numel() + 7) // 8
        assert np.array_equal(packed.numpy(), np.packbits(m.numpy().ravel(), bitorder="big"))
        assert torch.equal(unpack_bits(packed, shape), m)
    with pytest.raises(hlv.MaskError, match="cannot hold"):
        unpack_bits(torch.zeros(2, dtype=torch.uint8), (100,))


@pytest.mark.parametrize("p", [0.0, 0.001, 0.02, 0.5, 1.0])
def test_position_code_round_trips(p: float) -> None:
    m = torch.rand(64, 32, 3, 3, generator=torch.Generator().manual_seed(1)) < p
    low, high, bits = encode_positions(m)
    assert torch.equal(decode_positions(low, high, bits, kept=int(m.sum()), shape=m.shape), m)
    if 0 < p <= 0.02:  # far smaller than a bit-packed mask
        assert low.numel() + high.numel() < pack_bits(m).numel() / 2


def test_position_code_detects_corruption() -> None:
    m = torch.rand(1000) < 0.1
    low, high, bits = encode_positions(m)
    with pytest.raises(hlv.MaskError):
        decode_positions(low, high, bits, kept=int(m.sum()) + 3, shape=m.shape)


def test_masks_from_weights_reads_nonzeros(tiny_model) -> None:
    derived = masks_from_weights(tiny_model.timm_parameters(), tiny_model.prunable_names())
    assert all(torch.equal(derived[n], tiny_model.masks[n]) for n in derived)


@pytest.mark.parametrize("optimizer", ["sgd_momentum_wd", "sgd_nesterov", "adamw"])
def test_pruned_weights_stay_exactly_zero_through_20_steps(optimizer: str) -> None:
    model = make_model(density=0.1).train()
    params = list(model.parameters())
    if optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    else:
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=optimizer == "sgd_nesterov")
    enforcer = MaskEnforcer(model.timm_parameters(), model.masks)
    enforcer.attach(opt)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    before = {n: p.detach().clone() for n, p in model.timm_parameters().items()}
    for _ in range(20):
        opt.zero_grad()
        model(x, labels=y).loss.backward()
        opt.step()
    after = model.timm_parameters()
    for name, mask in model.masks.items():
        w = after[name].detach()
        assert torch.all(w[~mask] == 0), name
        assert torch.all(torch.signbit(w[~mask]) == 0), "pruned weights must be +0.0"
        assert not torch.equal(w[mask], before[name][mask]), "kept weights must still train"
    if optimizer != "adamw":
        for name, mask in model.masks.items():
            buf = opt.state[after[name]]["momentum_buffer"]
            assert torch.all(buf[~mask] == 0), "momentum of pruned weights must stay zero"
    enforcer.remove()


def test_set_masks_validates(tiny_model) -> None:
    masks = tiny_model.masks
    name = next(iter(masks))
    with pytest.raises(hlv.MaskError, match="unknown parameter"):
        tiny_model.set_masks({"layer9.conv.weight": masks[name]})
    with pytest.raises(hlv.MaskError, match="torch.bool"):
        tiny_model.set_masks({name: masks[name].float()})
    with pytest.raises(hlv.MaskError, match="shape"):
        tiny_model.set_masks({name: masks[name][:1]})


def test_masks_follow_the_model_across_dtype_moves(tiny_model) -> None:
    tiny_model.to(torch.float64)
    assert all(m.dtype == torch.bool for m in tiny_model.masks.values())
    tiny_model.half()
    assert all(m.dtype == torch.bool for m in tiny_model.masks.values())


def test_global_top_k_splits_back_in_mapping_order() -> None:
    scores = {"a": torch.tensor([[0.5, 3.0], [1.0, -float("inf")]]), "b": torch.tensor([2.0, 3.0, 0.1])}
    chosen = global_top_k(scores, 3)
    assert chosen["a"].tolist() == [[False, True], [False, False]]
    assert chosen["b"].tolist() == [True, True, False]
    # ties go to the earlier tensor in mapping order
    tied = global_top_k({"x": torch.ones(2), "y": torch.ones(2)}, 3)
    assert tied["x"].tolist() == [True, True] and tied["y"].tolist() == [True, False]
    with pytest.raises(hlv.DensityError):
        global_top_k(scores, 7)
