"""Keyed placement: which kernels hold each copy of the signature ("slots"), derived, never stored.

Each copy of the QR data modules goes to a keyed pseudo-random set of kernel positions
``(param, out, in)`` of **one stage** (``layer1``, ``layer2``, ... of a timm ResNet), drawn
without replacement over the union of the stage's candidate convs, so a copy is spread over
all of that stage's layers; copies go to different stages (a model with only two eligible
stages gets a third copy in the roomier one, on kernels of its own), so no single layer
group holds them all. With the single coding slot ``j`` of a copy holds data module ``j``
(row-major order of the symbol's data modules); with the pair coding (a copy of width 2)
slots ``2j`` and ``2j + 1`` hold module ``j`` as a complementary pair (one kept, one pruned),
so an attack that flips one kernel of the pair leaves a detectable erasure instead of a wrong bit.

:func:`derive_slots` computes every copy's stage and slots from the secret, the
architecture's shapes, the symbol's size and the signer's few recorded choices (coding,
widths, candidate layers): signing and verification call the same function, and a key has
no way to name a stage, a layer or a position. A claimant who writes a key after seeing a
model can therefore only try secrets — each one gives fresh random positions — never fit
the positions to the model's mask.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .. import qr
from ..errors import SignatureError
from .whitening import keyed_sample

__all__ = [
    "Slots",
    "stage_of",
    "signature_stages",
    "stage_kernels",
    "plan_stages",
    "draw_slots",
    "derive_slots",
    "keyed_capacity",
    "MAX_OCCUPANCY",
]

_STAGE = re.compile(r"^layer\d+$")


@dataclass(frozen=True)
class Slots:
    """Where one copy lives.

    Attributes:
        stage: The stage (``"layer2"``).
        params: The stage's parameters that hold slots, in network order.
        param_index: For every data module, the index of its parameter in ``params`` (``int16``).
        kernel_index: For every data module, its flat kernel index ``out * in_channels + in`` (``int32``).
    """

    stage: str
    params: tuple[str, ...]
    param_index: np.ndarray
    kernel_index: np.ndarray

    def __len__(self) -> int:
        return int(self.kernel_index.size)

    def per_param(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """``(param, module positions, kernel indices)`` for each parameter that holds slots."""
        out = []
        for p, name in enumerate(self.params):
            where = np.flatnonzero(self.param_index == p)
            if where.size:
                out.append((name, where, self.kernel_index[where].astype(np.int64)))
        return out

    def kernel_maps(self, shapes: Mapping[str, Sequence[int]]) -> dict[str, torch.Tensor]:
        """``(out, in)`` boolean maps of the slot kernels, per parameter."""
        maps = {}
        for name, _, kernels in self.per_param():
            out_c, in_c = int(shapes[name][0]), int(shapes[name][1])
            m = torch.zeros(out_c * in_c, dtype=torch.bool)
            m[torch.from_numpy(kernels)] = True
            maps[name] = m.view(out_c, in_c)
        return maps


def stage_of(name: str) -> str | None:
    """The stage a parameter belongs to (``layer<N>``, its first dotted component), or ``None`` outside every stage."""
    head = name.split(".", 1)[0]
    return head if _STAGE.match(head) else None


Shapes = Mapping[str, Sequence[int]]
MAX_OCCUPANCY = 0.5
"""Largest share of a stage's candidate kernels its copies may take together."""


def signature_stages(shapes: Shapes, *, layers: str = "spatial") -> dict[str, list[str]]:
    """Candidate parameters of every stage, in network order.

    Args:
        shapes (`Mapping[str, Sequence[int]]`): Shapes of the masked parameters (network order).
        layers (`str`, *optional*, defaults to `"spatial"`): ``"spatial"``: the k×k convs
            (k > 1) inside stages; ``"all"``: every conv inside a stage (1×1 included).

    Returns:
        ``{stage: [param, ...]}`` for the stages that have any candidate.

    Raises:
        SignatureError: ``layers`` is neither value.
    """
    if layers not in ("spatial", "all"):
        raise SignatureError(f"layers must be 'spatial' or 'all', got {layers!r}.")
    out: dict[str, list[str]] = {}
    for name, shape in shapes.items():
        stage = stage_of(name)
        if len(shape) == 4 and stage is not None and (layers == "all" or int(shape[2]) * int(shape[3]) > 1):
            out.setdefault(stage, []).append(name)
    return out


def stage_kernels(shapes: Shapes, params: Sequence[str]) -> int:
    """Number of kernels ``(out, in)`` over ``params``."""
    return sum(int(shapes[n][0]) * int(shapes[n][1]) for n in params)


def plan_stages(candidates: Mapping[str, Sequence[str]], shapes: Shapes, n_modules: int, *, copies: int | None
                ) -> list[str]:
    """The stage of every copy: each eligible stage once, earliest first, then — when at least
    two stages hold copies — extra copies in the stage with the most room left.

    Earlier stages are preferred (the paper's "low-level layers": denser, with larger
    weights, so one-shot magnitude pruning removes fewer of them). A model with only two
    eligible stages (ResNet-8) still gets three copies, the third beside one of the others
    on kernels of its own; copies never all share one stage. ``plan_stages(copies=k)`` is
    the first ``k`` stages of ``plan_stages(copies=None)`` whenever those hold ``k``.

    Args:
        candidates (`Mapping[str, Sequence[str]]`): :func:`signature_stages`' result.
        shapes (`Mapping[str, Sequence[int]]`): Shapes of the parameters.
        n_modules (`int`): Kernels per copy.
        copies (`int`, *optional*): Copies wanted; ``None`` = 3 where the stages hold them.

    Returns:
        Stage names, one per copy.

    Raises:
        SignatureError: ``copies`` is below 1, or the stages cannot hold that many copies.
    """
    if copies is not None and copies < 1:
        raise SignatureError(f"copies must be at least 1, got {copies}.")
    room = {s: MAX_OCCUPANCY * stage_kernels(shapes, params) for s, params in candidates.items()}
    eligible = [s for s in candidates if n_modules <= room[s]]
    wanted = 3 if copies is None else copies
    chosen = eligible[:wanted]
    for s in chosen:
        room[s] -= n_modules
    while len(chosen) < wanted and len(set(chosen)) >= 2:
        roomiest = max(eligible, key=lambda s: room[s])
        if room[roomiest] < n_modules:
            break
        chosen.append(roomiest)
        room[roomiest] -= n_modules
    if copies is not None and len(chosen) < copies:
        raise SignatureError(
            f"Only {len(chosen)} cop{'y' if len(chosen) == 1 else 'ies'} of {n_modules} kernels fit "
            f"({', '.join(eligible) or 'no stage'} at <= {MAX_OCCUPANCY:.0%} of their kernels, and copies never all "
            "share one stage); lower copies (or leave copies=None), shorten the text or lower ecc.")
    return chosen


def draw_slots(secret: bytes, shapes: Shapes, stage: str, params: Sequence[str], n_modules: int, copy: int, *,
               taken: Sequence[Slots] = ()) -> Slots:
    """Draw one copy's slots: ``n_modules`` keyed kernel positions over the stage's parameters.

    Args:
        secret (`bytes`): The signature's secret (label ``slots/<copy>/<stage>``).
        shapes (`Mapping[str, Sequence[int]]`): Shapes of the parameters (``(out, in, kh, kw)``).
        stage (`str`): The stage.
        params (`Sequence[str]`): Its candidate parameters, in network order.
        n_modules (`int`): Kernels this copy takes.
        copy (`int`): Copy index.
        taken (`Sequence[Slots]`, *optional*): Earlier copies in the same stage, whose kernels
            this copy must avoid.

    Returns:
        The :class:`Slots`.

    Raises:
        SignatureError: The stage leaves too few positions.
    """
    sizes = np.array([int(shapes[n][0]) * int(shapes[n][1]) for n in params], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    exclude = [offsets[t.param_index.astype(np.int64)] + t.kernel_index.astype(np.int64) for t in taken
               if t.stage == stage and tuple(t.params) == tuple(params)]
    flat = keyed_sample(secret, b"slots/%d/%s" % (copy, stage.encode()), int(sizes.sum()), n_modules,
                        exclude=np.concatenate(exclude) if exclude else None)
    groups = np.repeat(np.arange(len(params)), sizes)
    param_index = groups[flat]
    return Slots(stage=stage, params=tuple(params), param_index=param_index.astype(np.int16),
                 kernel_index=(flat - offsets[param_index]).astype(np.int32))


def derive_slots(secret: bytes, shapes: Shapes, n_modules: int, *, widths: Sequence[int], coding: str,
                 layers: str = "spatial") -> list[Slots]:
    """Every copy's stage and slots, from the secret, the shapes and the signer's recorded choices.

    Signing and verification both call this; nothing of the result is stored in a key.

    Args:
        secret (`bytes`): The signature's secret.
        shapes (`Mapping[str, Sequence[int]]`): Shapes of the architecture's parameters.
        n_modules (`int`): Data modules of the QR symbol.
        widths (`Sequence[int]`): Kernels per module of each copy (1 or 2).
        coding (`str`): The signer's coding option (``auto`` and ``single`` plan stages for
            one kernel per module, ``pairs`` for two).
        layers (`str`, *optional*, defaults to `"spatial"`): Candidate layers (see :func:`signature_stages`).

    Returns:
        One :class:`Slots` per copy.

    Raises:
        SignatureError: The architecture cannot hold this layout (a key for another
            architecture, or a layout the signer never writes).
    """
    candidates = signature_stages(shapes, layers=layers)
    chosen = plan_stages(candidates, shapes, n_modules * (2 if coding == "pairs" else 1), copies=len(widths))
    used = {s: 0 for s in chosen}
    for stage, w in zip(chosen, widths, strict=True):
        used[stage] += n_modules * w
    full = [s for s in chosen if used[s] > stage_kernels(shapes, candidates[s])]
    if full:
        raise SignatureError(f"Stage {full[0]} cannot hold copies of {n_modules} modules at widths {list(widths)}.")
    out: list[Slots] = []
    for c, (stage, w) in enumerate(zip(chosen, widths, strict=True)):  # a stage's later copies avoid its earlier ones
        out.append(draw_slots(secret, shapes, stage, candidates[stage], n_modules * w, c, taken=out))
    return out


def keyed_capacity(shapes: Shapes, *, ecc: str = "H", layers: str = "spatial", width: int = 1
                   ) -> tuple[int, int, str | None]:
    """Largest byte-mode payload one keyed copy can carry.

    Args:
        shapes (`Mapping[str, Sequence[int]]`): Shapes of the masked parameters.
        ecc (`str`, *optional*, defaults to `"H"`): QR error-correction level.
        layers (`str`, *optional*, defaults to `"spatial"`): Candidate layers (see :func:`signature_stages`).
        width (`int`, *optional*, defaults to 1): Kernels per data module (2 for the pair coding).

    Returns:
        ``(max_bytes, version, stage)``; ``(0, 0, None)`` when not even version 1 fits.
    """
    best = (0, 0, None)
    for stage, params in signature_stages(shapes, layers=layers).items():
        room = MAX_OCCUPANCY * stage_kernels(shapes, params)
        fits = [v for v in range(1, 41) if width * qr.num_data_modules(v) <= room]
        if fits and fits[-1] > best[1]:
            best = (qr.capacity(fits[-1], ecc), fits[-1], stage)
    return best
