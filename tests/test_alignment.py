"""Channel re-alignment of structurally edited suspects (hf_lottery_verify.alignment)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

import hf_lottery_verify as hlv
from hf_lottery_verify.alignment import (
    Reference,
    align_suspect,
    make_reference,
    recover_aligned_masks,
    reference_from_key,
    with_reference,
)
from hf_lottery_verify.alignment.evidence import has_evidence
from hf_lottery_verify.attacks.structural import add_dummy_channels, densify, permute_channels, rescale_channels
from hf_lottery_verify.errors import KeyMismatchError
from hf_lottery_verify.liveness import prune_dead
from hf_lottery_verify.loading import load_model
from hf_lottery_verify.ownership_key import OwnershipKey
from hf_lottery_verify.spaces import channel_spaces

SMALL = {"channels": (8, 16, 32, 64), "stem_width": 8}

# (id, arch, model_args, input side)
ARCHS = [
    ("cifar_resnet8", "cifar_resnet8", None, 16),
    ("cifar_resnet20_a", "cifar_resnet20_a", None, 16),
    ("bottleneck_resnet26", "resnet26", SMALL, 32),
]


def _randomise_batch_norms(model: nn.Module, seed: int) -> None:
    """Non-trivial eval-mode batch norms, as after training (timm zero-initialises the last one of each block)."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.weight.data = 0.5 + torch.rand(n, generator=gen)
            module.bias.data = 0.2 * torch.randn(n, generator=gen)
            module.running_mean.data = 0.2 * torch.randn(n, generator=gen)
            module.running_var.data = 0.5 + torch.rand(n, generator=gen)


def _ticket(arch: str, model_args: dict | None, *, density: float = 0.1, seed: int = 0,
            random_bn: bool = True) -> hlv.SparseResNetForImageClassification:
    """A ticket as IMP leaves it: no kept weight that cannot influence the output."""
    torch.manual_seed(seed)
    model = hlv.SparseResNetForImageClassification(hlv.SparseResNetConfig(arch=arch, model_args=model_args))
    model.prune_(density=density)
    if random_bn:
        _randomise_batch_norms(model, seed=seed + 1)
    model.set_masks(prune_dead(model.masks, model.timm_model.state_dict(), arch=arch, model_args=model_args))
    return model.eval()


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        out = model(x)
    return getattr(out, "logits", out)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in getattr(model, "timm_model", model).state_dict().items()}


def _permutations(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Per space: the suspect channel each reference channel went to under ``permute_channels(model, seed=seed)``.

    Read off the (distinct, random) running means of each space's first batch norm.
    """
    old, new = _state(model), _state(permute_channels(model, seed=seed))
    out = {}
    for space in channel_spaces(model.timm_model):
        if space.norms:
            key = f"{space.norms[0][1]}.running_mean"
            out[space.name] = torch.tensor([int((new[key] == v).nonzero()[0]) for v in old[key]])
    return out


def _fingerprint(tensors: dict[str, torch.Tensor], norm: str) -> torch.Tensor:
    """``running_mean / sqrt(running_var)``: unchanged by both kinds of rescaling."""
    return tensors[f"{norm}.running_mean"].double() / tensors[f"{norm}.running_var"].double().sqrt()


def _kept_share(masks: dict[str, torch.Tensor], reference: Reference) -> float:
    """Share of the reference's kept weights that can influence its output found in ``masks``."""
    live = reference.live_only.masks
    hit = sum(int((masks[n] & live[n]).sum()) for n in live)
    return hit / sum(int(m.sum()) for m in live.values())


@pytest.fixture(scope="module", params=ARCHS, ids=[a[0] for a in ARCHS])
def case(request) -> tuple[hlv.SparseResNetForImageClassification, Reference, torch.Tensor, dict]:
    _, arch, model_args, side = request.param
    model = _ticket(arch, model_args)
    x = torch.randn(3, 3, side, side, generator=torch.Generator().manual_seed(2))
    return model, make_reference(model), x, _permutations(model, seed=1)


# Every exactly function-preserving attack (and combinations), applied to the ticket.
ATTACKS = {
    "permute": lambda m: permute_channels(m, seed=1),
    "rescale_bn": lambda m: rescale_channels(m, seed=2, mode="bn"),
    "rescale_relu": lambda m: rescale_channels(m, seed=2, mode="relu"),
    "rescale_both": lambda m: rescale_channels(m, seed=2),
    "dummy_duplicate": lambda m: add_dummy_channels(m, seed=3, per_space=2),
    "dummy_zero_out": lambda m: add_dummy_channels(m, seed=3, mode="zero_out"),
    "permute_rescale": lambda m: rescale_channels(permute_channels(m, seed=1), seed=2),
    "all": lambda m: add_dummy_channels(rescale_channels(permute_channels(m, seed=1), seed=2), seed=3, per_space=2),
    "all_zero_out": lambda m: add_dummy_channels(rescale_channels(permute_channels(m, seed=1), seed=2, mode="relu"),
                                                 seed=4, mode="zero_out"),
}


# --------------------------------------------------------------------------- the reference


def test_reference_round_trips_through_a_saved_key(tmp_path) -> None:
    model = _ticket("cifar_resnet20_a", None, density=0.05)
    reference = make_reference(model)
    assert reference.arch == "cifar_resnet20_a" and reference.in_chans == 3 and reference.num_classes == 10
    assert set(reference.masks) == set(model.masks)
    assert reference.mask_digest == hlv.ownership_key.mask_digest(model.masks)
    blank = OwnershipKey(arch="cifar_resnet20_a")
    assert reference_from_key(blank) is None
    key = with_reference(blank, model)
    assert "reference" not in blank.sections  # a new key, the given one unchanged
    assert key.commitment() != blank.commitment()  # the public commitment covers the reference
    assert key.sections["reference"]["published"]["num_labels"] == 10  # how black-box checks query it
    json.dumps(key.sections)
    key.save(tmp_path / "k.json")
    loaded = reference_from_key(OwnershipKey.load(tmp_path / "k.json"))
    assert loaded is not None and loaded.arch == reference.arch and loaded.shapes == reference.shapes
    for field in ("masks", "row_norms", "col_norms", "tensors"):
        a, b = getattr(reference, field), getattr(loaded, field)
        assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a), field
    assert loaded.mask_digest == reference.mask_digest
    with pytest.raises(KeyMismatchError, match="already holds a 'reference' section"):
        with_reference(key, model)  # recorded once, when the model is published
    with pytest.raises(KeyMismatchError, match="cifar_resnet8"):
        with_reference(OwnershipKey(arch="cifar_resnet8"), model)


def test_a_reference_whose_shapes_do_not_fit_the_architecture_is_refused() -> None:
    """A hostile key could declare any shapes; they are checked against the architecture before
    anything is decoded from them."""
    key = with_reference(OwnershipKey(arch="cifar_resnet8"), _ticket("cifar_resnet8", None))
    for edit in ({"layer1.0.conv1.weight": [10**6, 16, 3, 3]}, {"layer9.0.conv1.weight": [4, 4, 3, 3]},
                 {"fc.weight": [10**7, 64]}):
        data = json.loads(json.dumps(key.sections["reference"]))
        data["shapes"].update(edit)
        hostile = OwnershipKey(arch="cifar_resnet8", sections={"reference": data}, tensors=dict(key.tensors))
        with pytest.raises(KeyMismatchError, match="reference"):
            reference_from_key(hostile)
    data = json.loads(json.dumps(key.sections["reference"]))
    other = OwnershipKey(arch="cifar_resnet20", sections={"reference": data}, tensors=dict(key.tensors))
    with pytest.raises(KeyMismatchError, match="describes a 'cifar_resnet8'"):
        reference_from_key(other)


def test_reference_is_compact() -> None:
    model = _ticket("cifar_resnet20", None, density=0.02)
    reference = make_reference(model)
    data, tensors = reference.to_section()
    dense_bytes = sum(p.numel() * 4 for p in model.parameters())
    assert reference.nbytes() < dense_bytes / 8  # a few tens of kB for a ~1 MB model
    assert any(k.startswith("mask.low.") for k in tensors)  # sparse masks use the Elias–Fano code
    assert "tensor.conv1.weight" in tensors and "tensor.fc.weight" in tensors  # stem and small classifier in full
    assert not any(k == f"tensor.{n}" for n in model.masks for k in tensors)  # masked weights only as norms


def test_reference_from_state_dict_and_bad_masks() -> None:
    model = _ticket("cifar_resnet8", None)
    state = _state(model)
    reference = make_reference(state, arch="cifar_resnet8")
    assert set(reference.masks) == set(model.masks)  # non-zero pattern of every conv but the stem
    assert all(torch.equal(reference.masks[n], model.masks[n]) for n in model.masks)
    with pytest.raises(hlv.CheckpointError, match="arch"):
        make_reference(state)
    with pytest.raises(hlv.MaskError, match="shape"):
        make_reference(model, masks={"layer1.0.conv1.weight": torch.ones(3, 3, dtype=torch.bool)})


def test_damaged_reference_section_raises() -> None:
    key = with_reference(OwnershipKey(arch="cifar_resnet8"), _ticket("cifar_resnet8", None))
    data = json.loads(json.dumps(key.sections["reference"]))
    data["format"] = 99
    broken = OwnershipKey(arch="cifar_resnet8", sections={"reference": data}, tensors=dict(key.tensors))
    with pytest.raises(KeyMismatchError, match="format"):
        reference_from_key(broken)
    tensors = {k: v for k, v in key.tensors.items() if not k.startswith("reference.mask.")}
    with pytest.raises(KeyMismatchError, match="damaged"):
        reference_from_key(OwnershipKey(arch="cifar_resnet8", sections=dict(key.sections), tensors=tensors))


def _aligned_model(alignment):
    return load_model(alignment.state_dict, arch=alignment.arch, model_args=alignment.model_args)


# --------------------------------------------------------------------------- exact attacks


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_alignment_undoes_structural_attacks(case, attack: str) -> None:
    model, reference, x, perms = case
    attacked = ATTACKS[attack](model)
    alignment = align_suspect(_state(attacked), reference)
    assert alignment.confidence > 0.95, alignment.summary
    # The aligned tensors have the reference's shapes and compute what the suspect computes.
    assert {n: tuple(t.shape) for n, t in alignment.state_dict.items()} == reference.shapes
    aligned = _aligned_model(alignment)
    expected = _logits(attacked, x)
    assert float((_logits(aligned, x) - expected).abs().max()) <= 1e-4
    assert float((expected - _logits(model, x)).abs().max()) <= 1e-4
    # Masks come back exactly, in the reference's coordinates.
    masks = recover_aligned_masks(alignment, reference)
    assert all(torch.equal(masks[n], reference.live_only.masks[n]) for n in reference.masks)
    # Each reference channel went to the channel the permutation put it in (exactly, when nothing was added;
    # else to a channel with the same scale-invariant batch norm fingerprint: itself or a copy).
    permuted = attack.startswith(("permute", "all"))
    widened = "dummy" in attack or attack.startswith("all")
    suspect = _state(attacked)
    for name, st in alignment.spaces.items():
        if st.method == "fixed":
            continue
        space = next(s for s in reference.spaces if s.name == name)
        seen = has_evidence(reference, space)  # a channel with nothing kept around it may go anywhere: it does nothing
        if not widened:
            assert torch.equal(st.mapping[seen], (perms[name] if permuted else torch.arange(st.size))[seen]), name
        want, got = _fingerprint(reference.tensors, space.norms[0][1]), _fingerprint(suspect, space.norms[0][1])
        assert torch.allclose(got[st.mapping][seen], want[seen], rtol=1e-3, atol=1e-4), name
    assert alignment.permuted == permuted
    assert alignment.rescaled == ("rescale" in attack or attack.startswith("all"))
    assert alignment.widened == ("dummy" in attack or attack.startswith("all"))
    json.dumps(alignment.to_dict())


def test_rescaling_is_estimated(case) -> None:
    model, reference, _, _ = case
    alignment = align_suspect(_state(rescale_channels(model, seed=2)), reference)
    weights = model.timm_parameters()
    for name in reference.masks:  # the scale-undone weights are the reference's own
        got = alignment.recovery_weight(name)
        assert torch.allclose(got, weights[name].detach().double(), rtol=1e-4, atol=1e-6), name


def test_unmodified_model_is_the_identity(case) -> None:
    model, reference, _, _ = case
    state = _state(model)
    alignment = align_suspect(state, reference)
    assert alignment.confidence == pytest.approx(1.0)
    assert not (alignment.permuted or alignment.rescaled or alignment.widened)
    assert all(s.identity and s.method in ("fixed", "exact") for s in alignment.spaces.values())
    assert all(alignment.state_dict[n].data_ptr() == state[n].data_ptr() for n in state)  # nothing copied
    assert "0 permuted" in alignment.summary


def test_densified_unpermuted_model_takes_the_diagonal(case) -> None:
    model, reference, _, _ = case
    alignment = align_suspect(_state(densify(model, seed=3, scale=1e-4)), reference)
    assert not alignment.permuted and alignment.confidence > 0.9
    assert all(s.identity for s in alignment.spaces.values())
    methods = [s.method for s in alignment.spaces.values()]
    assert methods.count("diagonal") >= len(methods) // 2  # the full comparison only where a row lost its weights
    assert _kept_share(recover_aligned_masks(alignment, reference), reference) == 1.0


def test_zero_padding_shortcuts_follow_their_source() -> None:
    model = _ticket("cifar_resnet20_a", None)
    reference = make_reference(model)
    alignment = align_suspect(_state(permute_channels(model, seed=5)), reference)
    injected = [s for s in reference.spaces if s.injection is not None]
    assert injected
    for space in injected:
        inj = space.injection
        source, target = alignment.spaces[inj.source].mapping, alignment.spaces[space.name].mapping
        assert torch.equal(target[inj.offset:inj.offset + source.numel()], inj.offset + source)


def test_dead_channels_are_matched_by_their_consumers() -> None:
    """A channel without kept producer weights (and batch norms all alike) is told apart by who reads it."""
    model = _ticket("cifar_resnet8", None, density=0.3, random_bn=False)
    masks = model.masks
    for c in (2, 5):
        masks["layer1.0.conv1.weight"][c] = False
        model.timm_model.layer1[0].bn1.bias.data[c] = 0.5  # a constant channel: what reads it still matters
    model.set_masks(masks)
    reference = make_reference(model)
    alignment = align_suspect(_state(permute_channels(model, seed=7)), reference)
    truth = _permutations_by_weights(model, seed=7)
    st = alignment.spaces["layer1.0.conv1"]
    assert int(st.mapping[2]) == int(truth[2]) and int(st.mapping[5]) == int(truth[5])
    assert st.method == "refined"
    masks = recover_aligned_masks(alignment, reference)
    assert all(torch.equal(masks[n], reference.live_only.masks[n]) for n in reference.masks)


def _permutations_by_weights(model: nn.Module, seed: int) -> torch.Tensor:
    """Where ``permute_channels`` sent each channel of layer1.0.conv1's space (read off the consumer's columns)."""
    old = model.timm_model.state_dict()["layer1.0.conv2.weight"]
    new_model = permute_channels(model, seed=seed)
    new = new_model.timm_model.state_dict()["layer1.0.conv2.weight"]
    # Rows are permuted too: compare sorted column contents.
    def key(t: torch.Tensor, c: int) -> torch.Tensor:
        return torch.sort(t[:, c].flatten()).values

    return torch.tensor([next(j for j in range(new.shape[1]) if torch.equal(key(new, j), key(old, c)))
                         for c in range(old.shape[1])])


# --------------------------------------------------------------------------- not a copy


@pytest.mark.parametrize("density", [0.05, 0.2])
def test_unrelated_model_gets_low_confidence(density: float) -> None:
    model = _ticket("cifar_resnet20_a", None, density=density)
    reference = make_reference(model)
    other = _ticket("cifar_resnet20_a", None, density=density, seed=123)
    for suspect in (other, densify(other, seed=1, scale=1e-3), permute_channels(other, seed=2)):
        alignment = align_suspect(_state(suspect), reference)
        assert alignment.confidence < 0.3, alignment.summary
        # Recovery reads the suspect's own pattern, never the reference's positions.
        assert _kept_share(recover_aligned_masks(alignment, reference), reference) < 0.5
    stolen = align_suspect(_state(permute_channels(model, seed=2)), reference)
    assert stolen.confidence > 0.95


@pytest.mark.parametrize("suspect_arch", ["cifar_resnet20", "cifar_resnet8_a", "resnet10t"])
def test_another_architecture_raises(suspect_arch: str) -> None:
    reference = make_reference(_ticket("cifar_resnet8", None))
    with pytest.raises(KeyMismatchError, match="not a cifar_resnet8"):
        align_suspect(_state(_ticket(suspect_arch, None)), reference)


def test_incompatible_shapes_raise() -> None:
    model = _ticket("cifar_resnet8", None)
    reference = make_reference(model)
    other_labels = hlv.SparseResNetForImageClassification(hlv.SparseResNetConfig(arch="cifar_resnet8", num_labels=4))
    with pytest.raises(KeyMismatchError, match="fc.weight"):
        align_suspect(_state(other_labels), reference)
    state = dict(_state(model))
    state["layer1.0.conv2.weight"] = state["layer1.0.conv2.weight"][:, :-1]  # one column short
    with pytest.raises(KeyMismatchError, match="disagree"):
        align_suspect(state, reference)
    gray = hlv.SparseResNetForImageClassification(hlv.SparseResNetConfig(arch="cifar_resnet8", in_chans=1))
    with pytest.raises(KeyMismatchError, match="input channels"):
        align_suspect(_state(gray), reference)


def test_recovery_of_an_unknown_layer_raises() -> None:
    model = _ticket("cifar_resnet8", None)
    reference = make_reference(model)
    alignment = align_suspect(_state(model), reference)
    with pytest.raises(hlv.UnknownNameError, match="conv1.weight"):
        recover_aligned_masks(alignment, reference, ["conv1.weight"])  # the stem is not masked
    assert set(recover_aligned_masks(alignment, reference, ["layer1.0.conv1.weight"])) == {"layer1.0.conv1.weight"}


def test_prefixes_and_missing_batch_counters_are_accepted() -> None:
    model = _ticket("cifar_resnet8", None)
    reference = make_reference(model)
    state = {f"timm_model.{k}": v for k, v in _state(model).items() if not k.endswith("num_batches_tracked")}
    alignment = align_suspect(state, reference)
    assert alignment.confidence == pytest.approx(1.0)
    _aligned_model(alignment)  # loads strictly


# --------------------------------------------------------------------------- densified suspects


def _both(m, order: str, scale: float, mode: str = "both"):
    if order == "rescale_then_densify":
        return densify(rescale_channels(permute_channels(m, seed=1), seed=2, mode=mode), seed=4, scale=scale)
    return rescale_channels(densify(permute_channels(m, seed=1), seed=4, scale=scale), seed=2, mode=mode)


@pytest.mark.parametrize("scale", [1e-4, 1e-3])
@pytest.mark.parametrize("order", ["rescale_then_densify", "densify_then_rescale"])
@pytest.mark.parametrize("mode", ["bn", "relu"])
def test_densified_and_rescaled_masks_come_back(order: str, scale: float, mode: str) -> None:
    model = _ticket("cifar_resnet20_a", None, density=0.05)
    reference = make_reference(model)
    alignment = align_suspect(_state(_both(model, order, scale, mode)), reference)
    assert alignment.confidence > 0.9
    assert _kept_share(recover_aligned_masks(alignment, reference), reference) >= 0.995


@pytest.mark.parametrize("scale", [1e-4, 1e-3])
def test_densified_then_rescaled_both_ways(scale: float) -> None:
    model = _ticket("cifar_resnet20_a", None, density=0.05)
    reference = make_reference(model)
    alignment = align_suspect(_state(_both(model, "densify_then_rescale", scale)), reference)
    assert _kept_share(recover_aligned_masks(alignment, reference), reference) >= 0.995


def test_rescaled_both_ways_then_densified() -> None:
    """Row and column factors multiply (a spread of 400² in raw magnitudes), then flat noise is added: some kept
    weights fall inside the noise band, where no magnitude tells them apart. Per-row counts keep the loss to that."""
    model = _ticket("cifar_resnet20_a", None, density=0.05)
    reference = make_reference(model)
    alignment = align_suspect(_state(_both(model, "rescale_then_densify", 1e-4)), reference)
    assert _kept_share(recover_aligned_masks(alignment, reference), reference) >= 0.99


def test_all_attacks_together_with_densify(case) -> None:
    model, reference, _, _ = case
    attacked = permute_channels(add_dummy_channels(rescale_channels(densify(model, seed=4, scale=1e-3), seed=2),
                                                   seed=3, per_space=2), seed=1)
    alignment = align_suspect(_state(attacked), reference)
    assert alignment.confidence > 0.9 and alignment.permuted and alignment.widened
    assert _kept_share(recover_aligned_masks(alignment, reference), reference) >= 0.995


def test_further_pruned_copy_aligns() -> None:
    model = _ticket("cifar_resnet20_a", None, density=0.1)
    reference = make_reference(model)
    pruned = permute_channels(copy.deepcopy(model), seed=1)
    pruned.prune_(fraction=0.3)
    alignment = align_suspect(_state(pruned), reference)
    assert alignment.confidence > 0.8
    masks = recover_aligned_masks(alignment, reference)
    assert all(bool((masks[n] <= reference.masks[n]).all()) for n in masks)  # a subset, in the right places
    assert _kept_share(masks, reference) == pytest.approx(0.7, abs=0.01)


@pytest.mark.parametrize("transform", ["flip_lr", "rot90", "antitranspose"])
def test_turned_kernels_are_turned_back(case, transform: str) -> None:
    """Every k×k kernel flipped or rotated alike (the thief turns the inputs to match): the stem tells how."""
    from hf_lottery_verify.attacks import mirror_attack

    model, reference, x, _ = case
    attacked = permute_channels(mirror_attack(model, transform=transform, wrap=False), seed=1)
    alignment = align_suspect(_state(attacked), reference)
    assert alignment.transform == transform and alignment.confidence > 0.95, alignment.summary
    assert f"kernels turned back ({transform})" in alignment.summary
    assert float((_logits(_aligned_model(alignment), x) - _logits(model, x)).abs().max()) <= 1e-4
    masks = recover_aligned_masks(alignment, reference)
    assert all(torch.equal(masks[n], reference.live_only.masks[n]) for n in reference.masks)
