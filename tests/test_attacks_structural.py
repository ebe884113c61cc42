"""Function-preserving structural attacks (hf_lottery_verify.attacks.structural)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import hf_lottery_verify as hlv
from hf_lottery_verify.architectures import ZeroPadShortcut
from hf_lottery_verify.attacks.structural import (
    add_dummy_channels,
    densify,
    permute_channels,
    rescale_channels,
)
from hf_lottery_verify.spaces import channel_spaces

SMALL = {"channels": (8, 16, 32, 64), "stem_width": 8}

# (id, arch, model_args, input side)
ARCHS = [
    ("cifar_resnet8", "cifar_resnet8", None, 16),
    ("cifar_resnet20_a", "cifar_resnet20_a", None, 16),
    ("bottleneck_resnet26", "resnet26", SMALL, 32),
    ("imagenet_resnet10t", "resnet10t", SMALL, 32),
]

# Every exactly function-preserving attack with its options.
EXACT = {
    "permute": (permute_channels, {}),
    "permute_internal": (permute_channels, {"spaces": "internal"}),
    "permute_streams": (permute_channels, {"spaces": "streams"}),
    "rescale": (rescale_channels, {}),
    "rescale_bn": (rescale_channels, {"mode": "bn"}),
    "rescale_relu": (rescale_channels, {"mode": "relu"}),
    "dummy_duplicate": (add_dummy_channels, {"per_space": 2}),
    "dummy_zero_out": (add_dummy_channels, {"mode": "zero_out"}),
    "dummy_streams": (add_dummy_channels, {"spaces": "streams", "per_space": 3}),
}


def _randomise_batch_norms(model: nn.Module, seed: int) -> None:
    """Non-trivial eval-mode batch norms (timm zero-initialises the last one of each block)."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.weight.data = 0.5 + torch.rand(n, generator=gen)
            module.bias.data = 0.2 * torch.randn(n, generator=gen)
            module.running_mean.data = 0.2 * torch.randn(n, generator=gen)
            module.running_var.data = 0.5 + torch.rand(n, generator=gen)


def _ticket(arch: str, model_args: dict | None, *, density: float = 0.3) -> hlv.SparseResNetForImageClassification:
    torch.manual_seed(0)
    model = hlv.SparseResNetForImageClassification(hlv.SparseResNetConfig(arch=arch, model_args=model_args))
    model.prune_(density=density)
    _randomise_batch_norms(model, seed=1)
    return model.eval()


@pytest.fixture(scope="module", params=ARCHS, ids=[a[0] for a in ARCHS])
def case(request) -> tuple[hlv.SparseResNetForImageClassification, torch.Tensor]:
    _, arch, model_args, side = request.param
    x = torch.randn(3, 3, side, side, generator=torch.Generator().manual_seed(2))
    return _ticket(arch, model_args), x


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        out = model(x)
    return getattr(out, "logits", out)


def _snapshot(model: hlv.SparseResNetForImageClassification) -> tuple[dict, dict]:
    return ({k: v.clone() for k, v in model.timm_model.state_dict().items()},
            {k: v.clone() for k, v in model.masks.items()})


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- all exact attacks


@pytest.mark.parametrize("attack", list(EXACT))
def test_outputs_unchanged_and_input_untouched(case, attack: str) -> None:
    model, x = case
    fn, options = EXACT[attack]
    before = _snapshot(model)
    attacked = fn(model, seed=5, **options)
    assert attacked is not model and attacked.timm_model is not model.timm_model
    after = _snapshot(model)
    assert _same(before[0], after[0]) and _same(before[1], after[1])  # the input model is untouched
    reference = _logits(model, x)
    assert float((_logits(attacked, x) - reference).abs().max()) <= 1e-4
    # The weights did change (the attack is not a no-op).
    state = attacked.timm_model.state_dict()
    assert any(state[k].shape != v.shape or not torch.equal(state[k], v) for k, v in before[0].items())
    # Masks describe the attacked weights; nothing pruned came back, nothing kept was lost.
    params = attacked.timm_parameters()
    assert attacked.masks.keys() == model.masks.keys()
    for name, mask in attacked.masks.items():
        assert torch.equal(mask, params[name] != 0), name
    # Same seed, same result.
    again = fn(model, seed=5, **options)
    assert _same(state, again.timm_model.state_dict()) and _same(attacked.masks, again.masks)


@pytest.mark.parametrize("attack", ["permute", "rescale", "dummy_duplicate", "dummy_zero_out"])
def test_exact_in_float64(case, attack: str) -> None:
    model, x = case
    fn, options = EXACT[attack]
    exact = copy.deepcopy(model).double()  # a copy: the fixture is shared
    attacked = fn(exact, seed=11, **options)
    assert float((_logits(attacked, x.double()) - _logits(exact, x.double())).abs().max()) <= 1e-10


def test_different_seeds_differ(case) -> None:
    model, _ = case
    for fn in (permute_channels, rescale_channels, add_dummy_channels):
        a = fn(model, seed=1).timm_model.state_dict()
        b = fn(model, seed=2).timm_model.state_dict()
        assert not _same(a, b), fn.__name__


# --------------------------------------------------------------------------- permutation


def test_permutation_moves_weights_and_masks(case) -> None:
    model, _ = case
    attacked = permute_channels(model, seed=3)
    old, new = model.timm_model.state_dict(), attacked.timm_model.state_dict()
    moved = 0
    for name, tensor in old.items():
        assert new[name].shape == tensor.shape
        # A permutation of entries: same multiset of values.
        assert torch.equal(torch.sort(new[name].flatten().float()).values, torch.sort(tensor.flatten().float()).values)
        moved += not torch.equal(new[name], tensor)
    assert moved > len(old) // 2
    for name, mask in model.masks.items():
        got = attacked.masks[name]
        assert int(got.sum()) == int(mask.sum()) and not torch.equal(got, mask)
        # Row and column kept-counts are permutations of the original ones.
        for dim in (0, 1):
            other = tuple(d for d in range(mask.dim()) if d != dim)
            assert torch.equal(torch.sort(got.sum(dim=other)).values, torch.sort(mask.sum(dim=other)).values)


def test_permutation_selections() -> None:
    model = _ticket("cifar_resnet8", None)
    old = model.timm_model.state_dict()
    internal = permute_channels(model, seed=4, spaces="internal").timm_model.state_dict()
    assert torch.equal(internal["bn1.weight"], old["bn1.weight"]) and torch.equal(internal["fc.weight"], old["fc.weight"])
    assert not torch.equal(internal["layer1.0.bn1.weight"], old["layer1.0.bn1.weight"])
    streams = permute_channels(model, seed=4, spaces="streams").timm_model.state_dict()
    assert torch.equal(streams["layer1.0.bn1.weight"], old["layer1.0.bn1.weight"])
    assert not torch.equal(streams["bn1.weight"], old["bn1.weight"])
    assert not torch.equal(streams["fc.weight"], old["fc.weight"])
    with pytest.raises(ValueError, match="selection"):
        permute_channels(model, seed=0, spaces="blocks")  # type: ignore[arg-type]


def test_zero_pad_injection_keeps_padding_channels_together() -> None:
    model = _ticket("cifar_resnet8_a", None)
    attacked = permute_channels(model, seed=8, spaces="streams")
    # Recover each stream's permutation from a producer's batch norm (distinct random values).
    old, new = model.timm_model.state_dict(), attacked.timm_model.state_dict()

    def perm_of(bn: str) -> torch.Tensor:
        o, n = old[f"{bn}.running_mean"], new[f"{bn}.running_mean"]
        return torch.tensor([int((o == v).nonzero()) for v in n])

    stem, layer2 = perm_of("bn1"), perm_of("layer2.0.bn2")
    assert not torch.equal(stem, torch.arange(16))
    assert torch.equal(layer2[8:24], 8 + stem)  # pi_B(i + 8) = 8 + pi_A(i)
    pads = torch.cat([layer2[:8], layer2[24:]])
    assert set(pads.tolist()) == set(range(8)) | set(range(24, 32))


# --------------------------------------------------------------------------- rescaling


def test_rescale_modes_touch_the_right_tensors() -> None:
    model = _ticket("cifar_resnet8", None)
    old = model.timm_model.state_dict()
    bn = rescale_channels(model, seed=1, mode="bn").timm_model.state_dict()
    ratio = bn["layer1.0.conv1.weight"].flatten(1).abs().sum(1) / old["layer1.0.conv1.weight"].flatten(1).abs().sum(1)
    assert float(ratio.min()) >= 0.05 * (1 - 1e-5) and float(ratio.max()) <= 20.0 * (1 + 1e-5)
    assert float(ratio.max() / ratio.min()) > 10  # factors spread over [0.05, 20]
    assert not torch.equal(bn["layer1.0.bn1.running_var"], old["layer1.0.bn1.running_var"])
    assert torch.equal(bn["fc.weight"], old["fc.weight"])  # "bn" never touches consumers
    relu = rescale_channels(model, seed=1, mode="relu").timm_model.state_dict()
    assert torch.equal(relu["layer1.0.bn1.running_var"], old["layer1.0.bn1.running_var"])
    assert not torch.equal(relu["layer1.0.bn1.bias"], old["layer1.0.bn1.bias"])
    assert not torch.equal(relu["fc.weight"], old["fc.weight"])
    assert torch.equal(relu["fc.bias"], old["fc.bias"])
    assert torch.equal(relu["conv1.weight"], old["conv1.weight"])  # the input is never rescaled
    # One factor per stream channel: the stem's and layer1.0's batch norms scale alike.
    f_stem = relu["bn1.weight"] / old["bn1.weight"]
    torch.testing.assert_close(relu["layer1.0.bn2.weight"] / old["layer1.0.bn2.weight"], f_stem)
    for name, mask in model.masks.items():
        assert torch.equal(rescale_channels(model, seed=1).masks[name], mask)


def test_rescale_compensates_the_eps_term_exactly() -> None:
    model = _ticket("cifar_resnet8", None)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eps = 0.5  # a large eps: ignoring it would change the outputs visibly
    model = model.double()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    attacked = rescale_channels(model, seed=2, mode="bn")
    assert float((_logits(attacked, x) - _logits(model, x)).abs().max()) <= 1e-10


def test_rescale_rejects_bad_arguments() -> None:
    model = _ticket("cifar_resnet8", None)
    with pytest.raises(ValueError, match="low"):
        rescale_channels(model, seed=0, low=0.0)
    with pytest.raises(ValueError, match="low"):
        rescale_channels(model, seed=0, low=2.0, high=1.0)
    with pytest.raises(ValueError, match="mode"):
        rescale_channels(model, seed=0, mode="gamma")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- dummy channels


def test_dummy_channels_widen_every_space(case) -> None:
    model, x = case
    attacked = add_dummy_channels(model, seed=6, per_space=2)
    before = {s.name: s.size for s in channel_spaces(model)}
    after = {s.name: s.size for s in channel_spaces(attacked)}
    for s in channel_spaces(model):
        if s.kind == "input":
            assert after[s.name] == before[s.name]
        elif s.injection is None:
            assert after[s.name] == before[s.name] + 2
        else:  # own extras plus the source's, carried over by the zero-padding shortcut
            grown = after[s.injection.source] - before[s.injection.source]
            assert after[s.name] == before[s.name] + 2 + grown
    old, new = model.timm_model.state_dict(), attacked.timm_model.state_dict()
    assert old.keys() == new.keys()
    assert any(new[k].shape != v.shape for k, v in old.items())
    assert new["fc.weight"].shape[1] > old["fc.weight"].shape[1]
    assert attacked.config.arch == model.config.arch
    # The state dict alone (as a thief would publish it) describes the widened spaces.
    from_state = channel_spaces(new, arch=model.config.arch, model_args=model.config.model_args)
    assert {s.name: s.size for s in from_state} == after
    for module in attacked.modules():
        if isinstance(module, ZeroPadShortcut):
            assert module.pad_before in (8, 16) and module.pad_after > module.pad_before


def test_duplicate_copies_rows_and_splits_columns() -> None:
    model = _ticket("cifar_resnet8", None)
    attacked = add_dummy_channels(model, seed=9, per_space=1, spaces="internal")
    old, new = model.timm_model.state_dict(), attacked.timm_model.state_dict()
    rows_old, rows_new = old["layer1.0.conv1.weight"], new["layer1.0.conv1.weight"]
    assert rows_new.shape[0] == 17 and torch.equal(rows_new[:16], rows_old)
    src = next(i for i in range(16) if torch.equal(rows_old[i], rows_new[16]))
    assert torch.equal(new["layer1.0.bn1.running_var"][16], old["layer1.0.bn1.running_var"][src])
    cols_old, cols_new = old["layer1.0.conv2.weight"], new["layer1.0.conv2.weight"]
    torch.testing.assert_close(cols_new[:, src] + cols_new[:, 16], cols_old[:, src])
    kept = cols_old[:, src] != 0
    share = cols_new[:, 16][kept] / cols_old[:, src][kept]
    assert float(share.min()) > 0 and float(share.max()) < 1 and float(share.std()) > 0.05  # not a plain half
    assert torch.equal(new["bn1.weight"], old["bn1.weight"])  # streams not selected


def test_zero_out_channels_are_random_rows_nobody_reads() -> None:
    model = _ticket("cifar_resnet8", None)
    attacked = add_dummy_channels(model, seed=9, per_space=2, mode="zero_out")
    new = attacked.timm_model.state_dict()
    assert bool((new["layer1.0.conv2.weight"][:, 16:] == 0).all())  # consumers ignore the new channels
    assert bool((new["fc.weight"][:, 64:] == 0).all())
    fresh_rows = new["layer1.0.conv1.weight"][16:]
    assert bool((fresh_rows != 0).any())
    # Drawn like the layer's kept weights: about the layer's density of non-zeros.
    density = float((model.timm_model.state_dict()["layer2.0.conv2.weight"] != 0).float().mean())
    fresh = new["layer2.0.conv2.weight"][32:]
    assert abs(float((fresh != 0).float().mean()) - density) < 0.1


def test_dummy_rejects_bad_arguments() -> None:
    model = _ticket("cifar_resnet8", None)
    with pytest.raises(ValueError, match="per_space"):
        add_dummy_channels(model, seed=0, per_space=0)
    with pytest.raises(ValueError, match="mode"):
        add_dummy_channels(model, seed=0, mode="noise")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- densify and composition


def test_densify_fills_every_pruned_position(case) -> None:
    model, x = case
    attacked = densify(model, seed=4)
    params, old = attacked.timm_parameters(), model.timm_parameters()
    for name, mask in model.masks.items():
        assert bool((params[name][~mask] != 0).all()), name
        assert torch.equal(params[name][mask], old[name][mask])
        assert bool(attacked.masks[name].all())
    reference = _logits(model, x)
    assert float((_logits(attacked, x) - reference).abs().max()) <= 1e-2 * max(1.0, float(reference.abs().max()))
    with pytest.raises(ValueError, match="scale"):
        densify(model, seed=0, scale=0.0)


def _top_k_recovery(suspect: nn.Module, ticket: hlv.SparseResNetForImageClassification, *,
                    normalise: bool = False) -> float:
    """Share of the ticket's kept positions that a per-layer top-k on |w| finds in the suspect."""
    params, found, total = suspect.timm_parameters(), 0, 0
    for name, mask in ticket.masks.items():
        w = params[name].detach().double().abs()
        for _ in range(30 if normalise else 0):  # undo per-row and per-column scales (Sinkhorn-like)
            w = w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            w = w / w.transpose(0, 1).flatten(1).norm(dim=1).view(1, -1, 1, 1)
        k = int(mask.sum())
        found += int(mask.flatten()[w.flatten().topk(k).indices].sum())
        total += k
    return found / total


def test_densify_with_rescale_defeats_naive_top_k() -> None:
    model = _ticket("cifar_resnet8", None, density=0.05)
    assert _top_k_recovery(densify(model, seed=1), model) == 1.0
    noisy_then_scaled = rescale_channels(densify(model, seed=1, scale=1e-3), seed=2)
    naive = _top_k_recovery(noisy_then_scaled, model)
    assert naive < 0.95
    assert _top_k_recovery(noisy_then_scaled, model, normalise=True) > max(0.99, naive)
    assert _top_k_recovery(densify(rescale_channels(model, seed=2), seed=1, scale=1e-3), model) < 0.95


def test_attacks_compose_and_accept_bare_timm_models() -> None:
    model = _ticket("cifar_resnet20_a", None)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    stolen = permute_channels(rescale_channels(add_dummy_channels(model, seed=1), seed=2), seed=3)
    assert float((_logits(stolen, x) - _logits(model, x)).abs().max()) <= 1e-4
    net = model.timm_model
    bare = rescale_channels(permute_channels(net, seed=1), seed=2)
    assert isinstance(bare, nn.Module) and not hasattr(bare, "masks")
    assert float((_logits(bare, x) - _logits(net, x)).abs().max()) <= 1e-4

