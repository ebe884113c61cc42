"""The 8 symmetries of a square (hf_lottery_verify.symmetry)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hf_lottery_verify.symmetry import DIHEDRAL, dihedral, inverse, transform_kernels


def test_the_eight_symmetries_are_distinct_and_each_has_its_inverse() -> None:
    x = torch.arange(9.0).reshape(3, 3)
    images = {name: dihedral(x, name) for name in DIHEDRAL}
    assert len({tuple(v.flatten().tolist()) for v in images.values()}) == 8
    for name in DIHEDRAL:
        assert torch.equal(dihedral(dihedral(x, name), inverse(name)), x)
    assert torch.equal(dihedral(x, "rot90"), torch.rot90(x, 1))
    with pytest.raises(ValueError, match="Unknown symmetry"):
        dihedral(x, "shear")


@pytest.mark.parametrize("name", DIHEDRAL)
def test_turned_kernels_compute_the_turned_function(name: str) -> None:
    gen = torch.Generator().manual_seed(0)
    x, k = torch.randn(2, 3, 9, 9, generator=gen), torch.randn(4, 3, 3, 3, generator=gen)
    turned = transform_kernels({"w": k, "bn": torch.ones(4)}, name)
    assert turned["bn"] is not None and torch.equal(turned["bn"], torch.ones(4))
    # conv(g(x), g(K)) = g(conv(x, K)): a network with every kernel turned by g answers f'(g(x)) = f(x)
    assert torch.allclose(F.conv2d(dihedral(x, name), turned["w"], padding=1), dihedral(F.conv2d(x, k, padding=1), name),
                          atol=1e-5)
    assert torch.equal(transform_kernels({"pointwise": k[:, :, :1, :1]}, name)["pointwise"], k[:, :, :1, :1])
