"""The 8 symmetries of a square (the dihedral group D4), acting on images and convolution kernels.

Flipping or rotating every k×k kernel of a network the same way makes it compute the same
function of the flipped or rotated image: with ``g`` applied to every kernel,
``conv(g(x), g(K)) = g(conv(x, K))`` (exactly for stride 1 and symmetric padding, up to the
sampling grid of strided convolutions), and global pooling forgets the orientation, so the
transformed network ``f'`` answers ``f'(g(x)) = f(x)``. A thief can ship ``f'`` behind an input
wrapper, or on a data set that looks the same mirrored, at little or no cost; a verifier
must therefore read kernels and query trigger images in all 8 orientations.

Example:
    >>> import torch
    >>> x = torch.arange(4.0).reshape(1, 2, 2)
    >>> dihedral(x, "flip_lr").tolist()
    [[[1.0, 0.0], [3.0, 2.0]]]
    >>> torch.equal(dihedral(dihedral(x, "rot90"), inverse("rot90")), x)
    True
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

__all__ = ["DIHEDRAL", "dihedral", "inverse", "transform_kernels"]

DIHEDRAL = ("identity", "flip_lr", "flip_ud", "rot180", "transpose", "antitranspose", "rot90", "rot270")
"""The 8 symmetries of a square, identity first."""

_INVERSE = {"rot90": "rot270", "rot270": "rot90"}


def dihedral(x: torch.Tensor, name: str) -> torch.Tensor:
    """Apply one symmetry to the last two dimensions of ``x`` (which must be equal unless it is a flip).

    Args:
        x (`torch.Tensor`): Images ``(..., H, W)`` or kernels ``(out, in, k, k)``.
        name (`str`): One of :data:`DIHEDRAL`.

    Returns:
        The transformed tensor (a new tensor, or ``x`` itself for ``"identity"``).

    Raises:
        ValueError: An unknown name.
    """
    if name == "identity":
        return x
    if name == "flip_lr":
        return x.flip(-1)
    if name == "flip_ud":
        return x.flip(-2)
    if name == "rot180":
        return x.flip(-2, -1)
    if name == "transpose":
        return x.transpose(-2, -1).contiguous()
    if name == "antitranspose":
        return x.transpose(-2, -1).flip(-2, -1)
    if name in ("rot90", "rot270"):
        return torch.rot90(x, 1 if name == "rot90" else -1, dims=(-2, -1))
    raise ValueError(f"Unknown symmetry {name!r}: use one of {DIHEDRAL}.")


def inverse(name: str) -> str:
    """The symmetry that undoes ``name``."""
    return _INVERSE.get(name, name)


def transform_kernels(tensors: Mapping[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """Every square k×k (k > 1) convolution kernel of a state dict transformed by ``name``; other tensors as they are.

    Args:
        tensors (`Mapping[str, torch.Tensor]`): A state dict.
        name (`str`): One of :data:`DIHEDRAL`.

    Returns:
        A new dict (untouched tensors are the same objects).
    """
    return {k: dihedral(v, name) if v.dim() == 4 and v.shape[-1] == v.shape[-2] > 1 else v
            for k, v in tensors.items()}
