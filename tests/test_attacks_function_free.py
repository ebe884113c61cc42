"""Attacks on weights that do nothing: flood_dead and remove_blocks (hf_lottery_verify.attacks.function_free)."""

from __future__ import annotations

import pytest
import torch

from hf_lottery_verify.alignment import align_suspect, make_reference, recover_aligned_masks
from hf_lottery_verify.attacks import run_attack
from hf_lottery_verify.errors import DatasetError
from hf_lottery_verify.liveness import liveness

from .test_liveness import _eval_model


def _logits(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x).logits


def test_identity_blocks_and_their_flood_change_nothing_and_are_read_as_gone() -> None:
    model = _eval_model("cifar_resnet20_a", density=0.3)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    made = run_attack("remove_blocks", model, blocks=2, stage="layer1", seed=0)
    flooded = run_attack("flood_dead", made, scale=10.0, seed=1)
    assert torch.allclose(_logits(flooded, x), _logits(made, x), atol=1e-5)
    state = flooded.timm_model.state_dict()
    dead = liveness(state, arch="cifar_resnet20_a")
    assert dead.gone_blocks == ("layer1.1", "layer1.2")
    assert float(state["layer1.2.conv1.weight"].abs().max()) > 5 * float(model.timm_model.state_dict()[
        "layer1.2.conv1.weight"].abs().max())  # the flood outranks every real weight ...
    reference = make_reference(model)
    alignment = align_suspect(state, reference)  # ... and changes nothing verification reads
    masks = recover_aligned_masks(alignment, reference)
    assert alignment.gone_blocks == {"layer1.1": "function-free", "layer1.2": "function-free"}
    for name in reference.masks:
        if not name.startswith(("layer1.1.", "layer1.2.")):
            assert torch.equal(masks[name], reference.live_only.masks[name]), name
        else:
            assert not masks[name].any(), name


def test_deleted_blocks_are_found_again_in_the_renumbered_stage() -> None:
    model = _eval_model("cifar_resnet20", density=0.3)
    deleted = run_attack("remove_blocks", model, mode="delete", blocks=1, stage="layer2", seed=0)
    names = set(deleted.timm_model.state_dict())
    assert "layer2.2.conv1.weight" not in names and "layer2.1.conv1.weight" in names
    # the thief may delete the middle block: the last one is renumbered into its place
    full = model.timm_model.state_dict()
    state = {k: v for k, v in full.items() if not k.startswith(("layer2.1.", "layer2.2."))}
    state.update({k.replace("layer2.2.", "layer2.1."): v for k, v in full.items() if k.startswith("layer2.2.")})
    reference = make_reference(model)
    alignment = align_suspect(state, reference)
    assert alignment.gone_blocks == {"layer2.1": "missing"} and alignment.confidence > 0.8, alignment.summary
    assert torch.equal(alignment.state_dict["layer2.2.conv1.weight"], full["layer2.2.conv1.weight"])


def test_reinit_keeps_the_kept_counts_and_fine_tuning_needs_data() -> None:
    model = _eval_model("cifar_resnet8", density=0.3)
    fresh = run_attack("remove_blocks", model, mode="reinit", blocks=1, stage="layer2", seed=0)
    before, after = model.timm_model.state_dict(), fresh.timm_model.state_dict()
    w0, w1 = before["layer2.0.conv1.weight"], after["layer2.0.conv1.weight"]
    assert int((w0 != 0).sum()) == int((w1 != 0).sum()) and not torch.equal(w0, w1)
    assert torch.equal(before["layer2.0.downsample.0.weight"], after["layer2.0.downsample.0.weight"])
    with pytest.raises(DatasetError):
        run_attack("remove_blocks", model, epochs=1)
    with pytest.raises(ValueError, match="mode"):
        run_attack("remove_blocks", model, mode="shred")
