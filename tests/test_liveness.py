"""Which weights can influence the output (hf_lottery_verify.liveness)."""

from __future__ import annotations

import pytest
import torch

import hf_lottery_verify as hlv
from hf_lottery_verify.liveness import dead_weights_warning, liveness, prune_dead, without_dead

from .helpers import make_model


def _eval_model(arch: str, *, density: float = 0.3, seed: int = 0) -> hlv.SparseResNetForImageClassification:
    """A ticket with batch norms as training leaves them (no scale at 0, random statistics)."""
    model = make_model(arch, num_labels=4, density=density, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
                m.running_mean.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
    return model.eval()


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.timm_model.state_dict().items()}


def _logits(arch: str, state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    model = make_model(arch, num_labels=4)
    model.timm_model.load_state_dict(state)
    with torch.no_grad():
        return model.eval()(x).logits


def _flood(state: dict[str, torch.Tensor], dead, seed: int = 1) -> dict[str, torch.Tensor]:
    """Every function-free weight and batch-norm statistic overwritten with large noise."""
    gen = torch.Generator().manual_seed(seed)
    out = dict(state)
    for name, live in dead.live.items():
        out[name] = torch.where(live, state[name], 100 * torch.randn(state[name].shape, generator=gen))
    for conv, row in dead.rows.items():
        for t in ("running_mean", "running_var"):
            name = f"{dead.norms[conv]}.{t}"
            out[name] = torch.where(row, state[name], 1 + 50 * torch.rand(row.shape, generator=gen))
    return out


@pytest.mark.parametrize("arch", ["cifar_resnet8", "cifar_resnet8_a", "cifar_resnet20_a"])
def test_a_trained_ticket_has_no_function_free_weights_and_flooding_changes_nothing(arch: str) -> None:
    state = _state(_eval_model(arch, density=0.5))
    dead = liveness(state, arch=arch)
    assert dead.gone_blocks == () and not any(z.any() for z in dead.zero.values())
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(_logits(arch, _flood(state, dead), x), _logits(arch, state, x))


def test_identity_block_zero_pad_channels_and_unread_channels_are_function_free() -> None:
    arch = "cifar_resnet20_a"
    state = _state(_eval_model(arch))
    for t in ("weight", "bias"):  # a residual branch whose last batch norm is zero: the block is an identity
        state[f"layer1.1.bn2.{t}"].zero_()
    state["layer2.0.bn2.weight"][:8] = 0  # padded channels 0..7 of stage 2 that the first block no longer writes
    state["layer2.0.bn2.bias"][:8] = -0.5
    state["layer2.1.conv2.weight"][:, 3] = 0  # channel 3 of layer2.1's internal space: nothing reads it
    dead = liveness(state, arch=arch)
    assert dead.gone_blocks == ("layer1.1",)
    assert not dead.live["layer1.1.conv1.weight"].any() and not dead.live["layer1.1.conv2.weight"].any()
    # 0..7 are zero after layer2.0 (only layer2.1 and layer2.2 write them afterwards): time-agnostic, they stay live
    assert not dead.zero["layer2.0"].any() and dead.zero["layer2.0.conv1"].sum() == 0
    assert not dead.rows["layer2.1.conv1.weight"][3] and not dead.live["layer2.1.conv1.weight"][3].any()
    assert dead.live["layer2.1.conv1.weight"][4].all()
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    flooded = _flood(state, dead)
    assert torch.equal(_logits(arch, flooded, x), _logits(arch, state, x))
    clean = without_dead(flooded, liveness(flooded, arch=arch))
    assert torch.allclose(_logits(arch, clean, x), _logits(arch, state, x), atol=1e-5)
    assert liveness(clean, arch=arch).dead_kept(clean) == {}
    assert sum(dead.dead_kept(flooded).values()) > sum(dead.dead_kept(state).values()) > 0


def test_stage_padding_never_written_is_zero_and_the_columns_reading_it_are_free() -> None:
    arch = "cifar_resnet8_a"  # one block per stage: whatever layer2.0 does not write stays zero
    state = _state(_eval_model(arch))
    for t in ("weight", "bias"):
        state[f"layer2.0.bn2.{t}"][:8] = 0
    dead = liveness(state, arch=arch)
    assert dead.zero["layer2.0"][:8].all() and not dead.zero["layer2.0"][8:].any()
    assert not dead.live["layer3.0.conv1.weight"][:, :8].any() and dead.live["layer3.0.conv1.weight"][:, 8:].all()
    # layer3's stream carries layer2's zeros on at offset 16
    assert dead.zero["layer3.0"][16:24].sum() == 0  # ... but layer3.0's branch writes them
    masks = {n: state[n] != 0 for n in ("layer3.0.conv1.weight", "layer2.0.conv2.weight")}
    pruned = prune_dead(masks, state, arch=arch)
    assert not pruned["layer3.0.conv1.weight"][:, :8].any() and not pruned["layer2.0.conv2.weight"][:8].any()
    assert pruned["layer2.0.conv2.weight"][8:].equal(masks["layer2.0.conv2.weight"][8:])


def test_masks_nan_and_infinite_weights_and_the_warning() -> None:
    arch = "cifar_resnet8"
    state = _state(_eval_model(arch))
    masks = {n: state[n] != 0 for n in state if n.endswith("conv1.weight") or n.endswith("conv2.weight")}
    assert liveness({**state, **masks}, arch=arch).dead_nonzero == liveness(state, arch=arch).dead_nonzero
    state["layer1.0.conv2.weight"][0, 0, 0, 0] = float("nan")  # never taken for a zero
    assert liveness(state, arch=arch).rows["layer1.0.conv2.weight"][0]
    assert dead_weights_warning(state, arch=arch) is None
    for t in ("weight", "bias"):
        state[f"layer3.0.bn2.{t}"].zero_()
        state[f"layer3.0.downsample.1.{t}"].zero_()
    text = dead_weights_warning(state, arch=arch)
    assert text and "cannot influence its output" in text and "prune_dead" in text
    assert dead_weights_warning({"fc.weight": torch.ones(4, 64)}, arch=arch) is None  # not a whole model
