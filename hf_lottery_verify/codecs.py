"""Bit-level encodings of masks for storage: packed bits and an Elias–Fano position code.

Both are pure tensor functions with no I/O; :mod:`hf_lottery_verify.storage` and the
ownership key use them to store masks compactly in safetensors (``U8`` tensors).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from .errors import MaskError

__all__ = ["pack_bits", "unpack_bits", "encode_positions", "decode_positions"]

_BIT_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
_BIT_SHIFTS = torch.arange(7, -1, -1, dtype=torch.uint8)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Pack a boolean tensor into bytes, 8 entries per byte, most significant bit first.

    Matches ``numpy.packbits(mask.ravel(), bitorder="big")``.

    Args:
        mask: Boolean tensor of any shape (read in row-major order).

    Returns:
        A 1-D ``torch.uint8`` tensor of ``ceil(numel / 8)`` bytes, on the CPU.
    """
    flat = mask.detach().reshape(-1).to("cpu", torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return (flat.view(-1, 8) * _BIT_WEIGHTS).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, shape: Iterable[int]) -> torch.Tensor:
    """Inverse of :func:`pack_bits`.

    Args:
        packed: 1-D ``uint8`` tensor.
        shape: Shape of the boolean tensor to rebuild.

    Returns:
        A boolean tensor of ``shape``.

    Raises:
        MaskError: ``packed`` is too short for ``shape``.
    """
    shape = tuple(int(s) for s in shape)
    numel = math.prod(shape)
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() * 8 < numel:
        raise MaskError(
            f"Packed mask of {packed.numel()} {packed.dtype} bytes cannot hold shape {shape} "
            f"({numel} bits); the file is corrupt or was written for another architecture."
        )
    bits = (packed.unsqueeze(1) >> _BIT_SHIFTS) & 1
    return bits.reshape(-1)[:numel].view(shape).bool()


def encode_positions(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Elias–Fano code of the kept positions: about ``2 + log2(N/k)`` bits per kept weight.

    For a 2%-dense layer that is ~7.6 bits per kept weight instead of the 400 bits a
    bit-packed mask spends per kept weight (one per entry), and it is computed with tensor
    operations only.

    Args:
        mask: Boolean tensor of any shape.

    Returns:
        ``(low, high, low_bits)``: packed low bits, packed unary high bits (both ``uint8``)
        and the number of low bits per position.
    """
    flat = mask.detach().reshape(-1).cpu()
    n, idx = flat.numel(), torch.nonzero(flat).reshape(-1)
    k = idx.numel()
    low_bits = max(0, int(math.floor(math.log2(n / k)))) if k else 0
    if low_bits:
        shifts = torch.arange(low_bits - 1, -1, -1, dtype=torch.int64)
        low = pack_bits(((idx.unsqueeze(1) >> shifts) & 1).bool())
    else:
        low = torch.zeros(0, dtype=torch.uint8)
    high_vec = torch.zeros(k + (n >> low_bits) + 1, dtype=torch.bool)
    high_vec[(idx >> low_bits) + torch.arange(k)] = True
    return low, pack_bits(high_vec), low_bits


def decode_positions(low: torch.Tensor, high: torch.Tensor, low_bits: int, *, kept: int, shape: Iterable[int]) -> torch.Tensor:
    """Inverse of :func:`encode_positions`.

    Args:
        low: Packed low bits.
        high: Packed high bits.
        low_bits: Low bits per position.
        kept: Number of kept positions.
        shape: Shape of the mask.

    Returns:
        The boolean mask.

    Raises:
        MaskError: The code is inconsistent with ``kept`` and ``shape``.
    """
    shape = tuple(int(s) for s in shape)
    n = math.prod(shape)
    high_len = kept + (n >> low_bits) + 1
    high_vec = unpack_bits(high, (high_len,))
    ones = torch.nonzero(high_vec).reshape(-1)
    if ones.numel() != kept:
        raise MaskError(f"Position code holds {ones.numel()} positions, the header says {kept}; the file is corrupt.")
    idx = (ones - torch.arange(kept)) << low_bits
    if low_bits:
        bits = unpack_bits(low, (kept, low_bits)).to(torch.int64)
        idx |= (bits << torch.arange(low_bits - 1, -1, -1, dtype=torch.int64)).sum(dim=1)
    if kept and (int(idx.max()) >= n or not bool((idx[1:] > idx[:-1]).all())):
        raise MaskError("Position code points outside the tensor or is not increasing; the file is corrupt.")
    out = torch.zeros(n, dtype=torch.bool)
    out[idx] = True
    return out.view(shape)
