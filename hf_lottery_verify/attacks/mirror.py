"""Kernels flipped or rotated: the ``mirror`` attack, and ``combined`` attacks that chain registered ones.

Turning every k×k kernel by one symmetry ``g`` of the square (:mod:`hf_lottery_verify.symmetry`)
makes the network answer ``f'(g(x)) = f(x)``: behind an input wrapper that applies ``g`` the
thief serves the owner's function (up to the sampling grid of strided convolutions), and on a
data set that looks the same mirrored he does not even need the wrapper. The kernels' occupancy
(which kernels are kept) is unchanged, their inner patterns are not.

:func:`combined_attack` runs a named recipe of registered attacks in a row (the combinations
issue 17 lists); a recipe may name any registered attack, ``distill`` included once it exists.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from ..configs import TrainConfig
from ..symmetry import DIHEDRAL, dihedral, transform_kernels
from ._common import _prepare, _remask
from .registry import get_attack, register_attack, run_attack

__all__ = ["mirror_attack", "combined_attack", "RECIPES"]


def _turn_input(module: nn.Module, args: tuple[Any, ...], *, transform: str) -> tuple[Any, ...]:
    """A forward pre-hook (bound by :func:`functools.partial`) that turns the input images: the thief's wrapper."""
    return (dihedral(args[0], transform), *args[1:])


@register_attack("mirror", kind="structural", variants={
    "flip_lr": {"transform": "flip_lr"}, "flip_ud": {"transform": "flip_ud"}, "rot180": {"transform": "rot180"},
    "rot90": {"transform": "rot90"}, "flip_lr_bare": {"transform": "flip_lr", "wrap": False}})
@torch.no_grad()
def mirror_attack(model: nn.Module, *, transform: str = "flip_lr", wrap: bool = True, seed: int = 0) -> nn.Module:
    """Turn every k×k kernel by one symmetry, and (``wrap``) the input images alike.

    Args:
        model (`nn.Module`): The stolen ticket; not modified.
        transform (`str`, *optional*, defaults to `"flip_lr"`): One of
            :data:`~hf_lottery_verify.symmetry.DIHEDRAL` but ``identity``.
        wrap (`bool`, *optional*, defaults to `True`): Turn the inputs too (a forward pre-hook
            on the network), so the model answers as the original; ``False`` serves the turned
            network as is (what a thief does on a mirror-symmetric data set).
        seed (`int`, *optional*, defaults to 0): Unused (nothing is random).

    Returns:
        The attacked copy.

    Raises:
        ValueError: An unknown ``transform``.
    """
    if transform not in DIHEDRAL[1:]:
        raise ValueError(f"Unknown transform {transform!r}: use one of {DIHEDRAL[1:]}.")
    attacked, net, _masks = _prepare(model)
    net.load_state_dict(transform_kernels(net.state_dict(), transform))
    if wrap:
        net.register_forward_pre_hook(functools.partial(_turn_input, transform=transform))
    return _remask(attacked)


RECIPES: dict[str, tuple[tuple[str, dict[str, Any]], ...]] = {
    "mirror+permute": (("mirror", {"transform": "flip_lr"}), ("permute", {})),
    "identity+flood": (("remove_blocks", {"blocks": 2, "stage": "layer1"}), ("flood_dead", {})),
    "identity+finetune+flood+mirror+permute": (
        ("remove_blocks", {"blocks": 2, "stage": "layer1", "epochs": 1}), ("flood_dead", {}),
        ("mirror", {"transform": "flip_lr"}), ("permute", {})),
    "delete+finetune+flood+rot180+permute": (
        ("remove_blocks", {"blocks": 2, "stage": "layer1", "mode": "delete", "epochs": 1}), ("flood_dead", {}),
        ("mirror", {"transform": "rot180"}), ("permute", {})),
    "reinit+finetune+bare_mirror": (("remove_blocks", {"blocks": 1, "mode": "reinit", "epochs": 1}),
                                    ("mirror", {"transform": "flip_lr", "wrap": False})),
}
"""Named chains of registered attacks (``(name, parameters)`` steps, run in order)."""


def combined_attack(model: nn.Module, *, recipe: str = "identity+finetune+flood+mirror+permute", data: Any = None,
                    train_limit: int | None = None, train: TrainConfig | None = None, seed: int = 0) -> nn.Module:
    """Run a recipe of :data:`RECIPES`: each step a registered attack with its parameters.

    Args:
        model (`nn.Module`): The stolen ticket; not modified.
        recipe (`str`, *optional*): A name of :data:`RECIPES`.
        data (`DatasetPair` or `ImageData`, *optional*): Training data for steps that train.
        train_limit (`int`, *optional*): Passed to every step that takes it.
        train (`TrainConfig`, *optional*): The training recipe of every step that trains.
        seed (`int`, *optional*, defaults to 0): Seed of every step.

    Returns:
        The attacked copy.

    Raises:
        UnknownNameError: An unknown recipe or step.
    """
    from ..errors import UnknownNameError

    if recipe not in RECIPES:
        raise UnknownNameError("recipe", recipe, available=RECIPES)
    shared = {"train_limit": train_limit, "train": train}
    for name, params in RECIPES[recipe]:  # run_attack hands data only to the steps that take it
        extra = {k: v for k, v in shared.items() if v is not None and k in get_attack(name).parameters()}
        model = run_attack(name, model, data=data, seed=seed, **{**extra, **params})
    return model


register_attack("combined", kind="removal", variants={name: {"recipe": name} for name in RECIPES})(combined_attack)
