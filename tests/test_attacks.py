from __future__ import annotations

import pytest
import torch

from hf_lottery_verify.attacks import addon_attack, prune_attack
from hf_lottery_verify.masks import count_kept
from hf_lottery_verify.recovery import recover_masks

from .helpers import make_model


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
