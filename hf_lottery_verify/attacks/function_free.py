"""Attacks on the weights that do nothing: flooding function-free positions, and blocks made identities or removed.

A weight that cannot influence the output (:mod:`hf_lottery_verify.liveness`) is free to
rewrite; a residual block whose branch is zeroed is an exact identity (``ReLU(x + 0) = x``
for the non-negative stream), which makes every weight in it free too.

* :func:`flood_dead_attack` (``flood_dead``) — write large values into every function-free
  position (and random running statistics into the batch norms of rows that reach nothing):
  the output is unchanged, but a verifier that ranks weights by magnitude keeps the flood.
* :func:`remove_blocks_attack` (``remove_blocks``) — replace residual blocks by identities
  (``identity``), delete them from the network (``delete``: the stage renumbered, as
  ``del stage[i]`` does) or re-initialise them (``reinit``), optionally followed by masked
  fine-tuning to win the accuracy back.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn

from ..configs import TrainConfig
from ..errors import DatasetError
from ..liveness import liveness
from ..pruning import top_k_mask
from ..spaces import channel_spaces
from ._common import _prepare, _remask
from .registry import register_attack

__all__ = ["flood_dead_attack", "remove_blocks_attack"]


@register_attack("flood_dead", kind="removal", function_preserving=True, strength="scale", sweep=(1.0, 10.0))
@torch.no_grad()
def flood_dead_attack(model: nn.Module, *, scale: float = 10.0, seed: int = 0) -> nn.Module:
    """Fill every function-free weight with large noise (the output does not change).

    Args:
        model (`nn.Module`): The stolen ticket; not modified.
        scale (`float`, *optional*, defaults to 10.0): Noise standard deviation, times the
            largest kept magnitude of each layer (above 1 it outranks every real weight).
        seed (`int`, *optional*, defaults to 0): Seed of the noise.

    Returns:
        The attacked copy (masks: the non-zero pattern, flood included).
    """
    attacked, net, _masks = _prepare(model)
    state = net.state_dict()
    arch = str(getattr(getattr(model, "config", None), "arch", None) or "resnet").split(".")[0]
    dead = liveness(state, arch=arch, spaces=channel_spaces(net))
    gen = torch.Generator().manual_seed(seed)
    for name, live in dead.live.items():
        w = state[name]
        if bool(live.all()):
            continue
        top = float(w.abs().max()) or 1.0
        noise = torch.randn(w.shape, generator=gen).to(w.dtype) * scale * top
        w.copy_(torch.where(live, w, noise))
    for conv, row in dead.rows.items():
        norm = dead.norms[conv]
        for t, base in (("running_mean", 0.0), ("running_var", 1.0)):
            stats = state[f"{norm}.{t}"]
            noise = (base + torch.rand(stats.shape, generator=gen) * 10).to(stats.dtype)
            stats.copy_(torch.where(row, stats, noise))
    return _remask(attacked)


def _choose_blocks(net: nn.Module, *, blocks: int, stage: str | None, seed: int) -> list[tuple[str, int]]:
    """``blocks`` residual blocks to take out: those with an identity shortcut first (the last of a stage first), in
    ``stage`` or (seeded) anywhere; blocks with a downsampling shortcut only when no other is left."""
    from ..architectures import stage_names

    stages = [stage] if stage is not None else stage_names(net)
    plain, shortcut = [], []
    for s in stages:
        for i in reversed(range(len(getattr(net, s)))):
            (plain if getattr(getattr(net, s)[i], "downsample", None) is None else shortcut).append((s, i))
    if stage is None:
        order = torch.randperm(len(plain), generator=torch.Generator().manual_seed(seed)).tolist()
        plain = [plain[i] for i in order]
    return (plain + shortcut)[:blocks]


def _reset_branch(block: nn.Module, gen: torch.Generator | None) -> None:
    """Zero a residual block's branch (``gen`` ``None``: the block becomes an identity) or give it fresh weights
    (He-normal convs at each convolution's own kept count, unit batch norms); its shortcut stays."""
    for name, m in block.named_modules():
        if name.startswith("downsample"):
            continue
        if isinstance(m, nn.Conv2d) and gen is None:
            m.weight.zero_()
        elif isinstance(m, nn.Conv2d):
            kept = int((m.weight != 0).sum())
            w = torch.randn(m.weight.shape, generator=gen) * math.sqrt(2.0 / (m.out_channels * m.weight[0, 0].numel()))
            m.weight.copy_(torch.where(top_k_mask(w.abs(), kept), w, torch.zeros(())))
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()  # weight 1, bias 0, running mean 0, running variance 1
            if gen is None:
                m.weight.zero_()


@register_attack("remove_blocks", kind="removal", strength="blocks", sweep=(1, 2),
                 variants={"identity": {"mode": "identity", "stage": "layer1"},
                           "delete": {"mode": "delete", "stage": "layer1"},
                           "delete+finetune": {"mode": "delete", "stage": "layer1", "epochs": 1},
                           "reinit+finetune": {"mode": "reinit", "epochs": 1}})
@torch.no_grad()
def remove_blocks_attack(
    model: nn.Module,
    *,
    blocks: int = 1,
    mode: Literal["identity", "delete", "reinit"] = "identity",
    stage: str | None = None,
    data: Any = None,
    epochs: int = 0,
    train: TrainConfig | None = None,
    train_limit: int | None = None,
    seed: int = 0,
) -> nn.Module:
    """Take residual blocks out: make them identities, delete them, or re-initialise them; then maybe fine-tune.

    Args:
        model (`nn.Module`): The stolen ticket; not modified.
        blocks (`int`, *optional*, defaults to 1): How many blocks.
        mode (`str`, *optional*, defaults to `"identity"`): ``identity`` (branch zeroed: the
            block passes its input on), ``delete`` (removed from its stage; the later blocks
            are renumbered) or ``reinit`` (fresh weights at the same kept counts). A block with
            a downsampling shortcut cannot be deleted; it keeps only its shortcut.
        stage (`str`, *optional*): Take blocks from this stage only (the last ones first);
            otherwise from anywhere (seeded).
        data (`DatasetPair` or `ImageData`, *optional*): Training data, for ``epochs > 0``.
        epochs (`int`, *optional*, defaults to 0): Masked fine-tuning afterwards.
        train_limit (`int`, *optional*): At most this many training samples.
        train (`TrainConfig`, *optional*): The thief's training recipe (:data:`~hf_lottery_verify.attacks.registry.ATTACK_TRAINING`
            by default); ``epochs`` and ``seed`` here override its own.
        seed (`int`, *optional*, defaults to 0): Seed of the choice of blocks, new weights and training.

    Returns:
        The attacked copy (a deleted block is gone from its structure and state dict).

    Raises:
        ValueError: Unknown ``mode`` or ``blocks < 1``.
        DatasetError: ``epochs > 0`` without data.
    """
    if mode not in ("identity", "delete", "reinit"):
        raise ValueError(f"Unknown mode {mode!r}: use 'identity', 'delete' or 'reinit'.")
    if blocks < 1:
        raise ValueError(f"blocks must be at least 1, got {blocks}.")
    if epochs > 0 and data is None:
        raise DatasetError("remove_blocks with epochs > 0 fine-tunes: pass data=...")
    attacked, net, _masks = _prepare(model)
    gen = torch.Generator().manual_seed(seed)
    chosen = _choose_blocks(net, blocks=blocks, stage=stage, seed=seed)
    for s, i in sorted(chosen, key=lambda b: -b[1]):  # later blocks first: deleting renumbers the rest
        block = getattr(net, s)[i]
        if mode == "delete" and getattr(block, "downsample", None) is None:
            del getattr(net, s)[i]
        else:
            _reset_branch(block, gen if mode == "reinit" else None)
    _remask(attacked)
    if epochs > 0:
        from .finetune import finetune_attack

        with torch.enable_grad():
            attacked = finetune_attack(attacked, data=data, epochs=epochs, train_limit=train_limit, train=train,
                                       seed=seed)
    return attacked
