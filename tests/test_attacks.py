"""What each attack does: pruning (targeted), add-on, fine-tuning, forgeries, the key-less QR search."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import hf_lottery_verify as hlv
from hf_lottery_verify.attacks import (
    addon_attack,
    distill_attack,
    fake1_attack,
    fake2_attack,
    finetune_attack,
    forge_signature,
    locate_rewrite_attack,
    locate_windows,
    prune_attack,
    prune_finetune_attack,
)
from hf_lottery_verify.attacks.distill import DISTILL_TRAINING
from hf_lottery_verify.attacks.finetune import ATTACK_TRAINING
from hf_lottery_verify.attacks.locate import rewrite_kernels
from hf_lottery_verify.attacks.qrsearch import parity_screen
from hf_lottery_verify.errors import DatasetError, MaskError, UnknownNameError
from hf_lottery_verify.masks import count_kept, masks_from_weights, squeeze_mask
from hf_lottery_verify.recovery import recover_masks
from hf_lottery_verify.signature import embed_signature

from .helpers import make_model, tiny_data

SECRET = bytes(range(32)).hex()
FAST = replace(ATTACK_TRAINING, lr=0.05, batch_size=64)


def _key(arch: str = "cifar_resnet20", secret: str = SECRET) -> hlv.OwnershipKey:
    return hlv.OwnershipKey(arch=arch, secret=secret)


def check(model, key):
    return hlv.verify_model(model, key=key, require_anchor=False)


def test_prune_attack_removes_the_share_and_leaves_input_alone() -> None:
    model = make_model(density=0.3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kept = count_kept(model.masks)
    for method in ("magnitude", "random"):
        attacked = prune_attack(model, fraction=0.2, method=method, seed=1)
        assert count_kept(attacked.masks) == kept - round(0.2 * kept)
        for name, mask in attacked.masks.items():
            assert torch.all(attacked.timm_parameters()[name][~mask] == 0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="magnitude"):
        prune_attack(model, fraction=0.1, method="snip")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        prune_attack(model, fraction=1.5)


def test_prune_attack_restricted_to_a_stage_or_to_layers() -> None:
    model = make_model(density=0.3)
    masks = model.masks
    stage = [n for n in masks if n.startswith("layer2.")]
    attacked = prune_attack(model, fraction=1.0, stage="layer2")
    for name, mask in attacked.masks.items():
        if name in stage:
            assert not mask.any(), name
        else:
            assert torch.equal(mask, masks[name]), name
    one = stage[0]
    attacked = prune_attack(model, fraction=0.5, layers=one, scope="layer")
    assert int(attacked.masks[one].sum()) == int(masks[one].sum()) - round(0.5 * int(masks[one].sum()))
    assert all(torch.equal(attacked.masks[n], masks[n]) for n in masks if n != one)
    with pytest.raises(UnknownNameError, match="layer1"):
        prune_attack(model, fraction=0.1, stage="layer9")
    with pytest.raises(MaskError, match="not masked"):
        prune_attack(model, fraction=0.1, layers=["fc.weight"])


def test_addon_attack_and_the_defense_that_undoes_it() -> None:
    model = make_model(density=0.2)
    attacked = addon_attack(model, rate=0.02, scale=0.1, seed=0)
    grew = count_kept(attacked.masks) - count_kept(model.masks)
    pruned = sum(int((~m).sum()) for m in model.masks.values())
    assert abs(grew - 0.02 * pruned) <= len(model.masks)
    kept = {n: int(m.sum()) for n, m in model.masks.items()}
    defended = recover_masks({n: attacked.timm_parameters()[n] for n in kept}, kept)
    # with small noise the defense recovers the original masks exactly
    assert all(torch.equal(defended[n], model.masks[n]) for n in kept)


def test_finetune_masked_keeps_the_mask_dense_fills_it_and_another_dataset_gets_a_new_head() -> None:
    model = make_model(num_labels=4, density=0.2)
    data = tiny_data(train_size=128, test_size=32)
    masked = finetune_attack(model, data=data, epochs=1, train=FAST, seed=0)
    assert all(torch.equal(masked.masks[n], model.masks[n]) for n in model.masks)
    assert not masked.training
    assert any(not torch.equal(masked.timm_parameters()[n], model.timm_parameters()[n]) for n in model.masks)
    dense = finetune_attack(model, data=data, epochs=1, train=FAST, mode="dense", seed=0)
    assert count_kept(dense.masks) > 2 * count_kept(model.masks)
    other = finetune_attack(model, dataset="synthetic", epochs=1, train=FAST, train_limit=128,
                            dataset_options={"num_classes": 3, "image_size": 8, "train_size": 128, "test_size": 8},
                            seed=0)
    assert other.config.num_labels == 3 and other.timm_model.fc.out_features == 3
    assert model.timm_model.fc.out_features == 4
    with pytest.raises(ValueError, match="mode"):
        finetune_attack(model, data=data, mode="sideways")
    with pytest.raises(DatasetError, match="labels"):
        finetune_attack(make_model(num_labels=2, density=0.2), data=data, epochs=1)


def test_prune_finetune_prunes_then_trains_under_the_pruned_mask() -> None:
    model = make_model(num_labels=4, density=0.3)
    data = tiny_data(train_size=128, test_size=32)
    attacked = prune_finetune_attack(model, fraction=0.4, data=data, epochs=1, train=FAST, seed=1)
    pruned = prune_attack(model, fraction=0.4)
    assert all(torch.equal(attacked.masks[n], pruned.masks[n]) for n in pruned.masks)
    assert count_kept(attacked.masks) == count_kept(model.masks) - round(0.4 * count_kept(model.masks))


def test_distill_trains_a_fresh_student_pruned_to_the_victims_counts_from_a_seed() -> None:
    model = make_model(num_labels=4, density=0.2)
    data = tiny_data(train_size=128, test_size=32)
    options = {"data": data, "epochs": 1, "masked_epochs": 1, "train": replace(DISTILL_TRAINING, batch_size=64)}
    student = distill_attack(model, seed=3, **options)
    assert {n: int(m.sum()) for n, m in student.masks.items()} == {n: int(m.sum()) for n, m in model.masks.items()}
    assert not any(torch.equal(student.masks[n], model.masks[n]) for n in model.masks)  # nothing is copied
    again = distill_attack(model, seed=3, **options)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in student.state_dict().items())
    smaller = distill_attack(model, seed=3, arch="cifar_resnet8_a", hard=True, **options)
    assert smaller.config.arch == "cifar_resnet8_a" and count_kept(smaller.masks) == count_kept(model.masks)
    assert not distill_attack(model, seed=3, **{**options, "masked_epochs": 0}).masks  # a dense student
    with pytest.raises(DatasetError):
        distill_attack(model, seed=3)
    with pytest.raises(ValueError, match="temperature"):
        distill_attack(model, data=data, temperature=0)


def test_fake1_switches_on_a_key_sized_set_and_fake2_keeps_the_mask() -> None:
    model = make_model(density=0.2)
    kept = count_kept(model.masks)
    forged = fake1_attack(model, ratio=0.05, seed=2)
    assert count_kept(forged.masks) == kept + round(0.05 * kept)
    assert all(torch.equal(forged.masks[n] & model.masks[n], model.masks[n]) for n in model.masks)
    noisy = fake2_attack(model, scale=0.2, seed=2)
    assert all(torch.equal(noisy.masks[n], model.masks[n]) for n in model.masks)
    n = "layer2.0.conv2.weight"
    diff = (noisy.timm_parameters()[n] - model.timm_parameters()[n])[model.masks[n]]
    spread = model.timm_parameters()[n][model.masks[n]].std()
    assert 0.1 * spread < diff.std() < 0.4 * spread


@pytest.mark.slow
def test_fake3_the_thiefs_key_verifies_his_copy_but_the_owners_still_does_too() -> None:
    owner_model = make_model("cifar_resnet20", density=0.1, seed=1)
    owner_key = embed_signature(owner_model, "alice 2026", key=_key(), seed=0)
    forged, thief_key = forge_signature(owner_model, text="mallory 2026", seed=7)
    assert thief_key.secret != owner_key.secret
    assert check(forged, thief_key).verdict == "owned"
    still = check(forged, owner_key)
    assert still.verdict == "owned", still.signature
    on_original = check(owner_model, thief_key)
    assert on_original.verdict != "owned" and on_original.signature.text is None
    assert on_original.signature.p_value > 1e-3  # the thief's modules do not agree with the original


@pytest.mark.slow
def test_fake3_leaves_the_owners_signature_readable_when_the_owner_signed_with_rewind_weights() -> None:
    owner_model = make_model("cifar_resnet20", density=0.1, seed=1)
    rewind = make_model("cifar_resnet20", seed=1).timm_model.state_dict()  # W_0 of the same initialisation
    owner_key = embed_signature(owner_model, "alice 2026", key=_key(), seed=0, rewind=rewind)
    forged, thief_key = forge_signature(owner_model, seed=7)
    assert check(forged, thief_key).verdict == "owned"
    assert check(forged, owner_key).verdict == "owned"


def test_rewrite_kernels_flips_occupancy_and_keeps_the_kept_count() -> None:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(32, 32, 3, 3, generator=gen) * (torch.rand(32, 32, 3, 3, generator=gen) < 0.15)
    before = squeeze_mask(w != 0)
    kernels = torch.zeros(32, 32, dtype=torch.bool)
    kernels[4:12, 4:12] = True
    kept = int((w != 0).sum())
    rewrite_kernels(w, kernels, protect=kernels, gen=gen)
    after = squeeze_mask(w != 0)
    assert torch.equal(after[kernels], ~before[kernels])
    assert int((w != 0).sum()) == kept


def test_parity_screen_accepts_every_valid_symbol_of_both_polarities() -> None:
    from hf_lottery_verify import qr
    from hf_lottery_verify.attacks.qrsearch import _mod2_matmul

    checks, targets = parity_screen(1, "H")
    for text in ("alice", "0123456789", "OWNER 2026", "ü"):
        for pattern in (0, 5):
            bits = qr.encode(text, version=1, ecc="H", mask_pattern=pattern).data_bits()
            assert (_mod2_matmul(bits[None], checks.T)[0] == targets[pattern]).all()
            assert (_mod2_matmul((~bits)[None], checks.T)[0] == targets[8 + pattern]).all()


def _plant_contiguous_qr(model, text: str, name: str = "layer2.1.conv1.weight") -> None:
    """The public reference code's layout: one QR symbol as a contiguous window of kernels (no key, no whitening)."""
    from hf_lottery_verify import qr

    symbol = qr.encode(text, version=1, ecc="H")
    masks = {n: m.clone() for n, m in model.masks.items()}
    w = model.timm_parameters()[name]
    with torch.no_grad():
        for r in range(symbol.size):
            for c in range(symbol.size):
                keep = bool(symbol.modules[r, c])
                masks[name][r, c] = False
                if keep:
                    masks[name][r, c, 1, 1] = True
                    w[r, c, 1, 1] = 0.5
    model.set_masks(masks)


@pytest.mark.slow
def test_locate_rewrite_finds_and_erases_a_contiguous_signature_without_the_key() -> None:
    model = make_model("cifar_resnet20", density=0.1)
    _plant_contiguous_qr(model, "alice")
    hits = locate_windows(masks_from_weights(model.timm_parameters(), model.prunable_names()), max_version=1)
    assert {(h.param, h.row, h.col, h.text) for h in hits} >= {("layer2.1.conv1.weight", 0, 0, "alice")}
    attacked = locate_rewrite_attack(model, seed=0, flip_share=0.5, max_version=1)
    assert abs(attacked.density - model.density) < 1e-12
    assert not locate_windows(attacked.masks, max_version=1)


def test_locate_rewrite_finds_nothing_in_a_keyed_signature_and_falls_back() -> None:
    model = make_model(density=0.2)
    embed_signature(model, "alice", key=_key("cifar_resnet8"), seed=0)
    masks = masks_from_weights(model.timm_parameters(), model.prunable_names())
    assert locate_windows(masks, max_version=1) == []
    attacked = locate_rewrite_attack(model, max_version=1, flip_share=0.25, seed=0)
    changed = [n for n in masks if not torch.equal(squeeze_mask(attacked.masks[n]), squeeze_mask(masks[n]))]
    assert changed and all(n.startswith(("layer1.", "layer2.")) for n in changed)
    assert all(int(attacked.masks[n].sum()) == int(masks[n].sum()) for n in masks)
    with pytest.raises(ValueError, match="flip_share"):
        locate_rewrite_attack(model, flip_share=2.0)
