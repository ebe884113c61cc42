"""Keyed placement: which kernels hold each copy of the signature ("slots").

Each copy of the QR data modules goes to a keyed pseudo-random set of kernel positions
``(param, out, in)`` of **one stage** (``layer1``, ``layer2``, ... of a timm ResNet), drawn
without replacement over the union of the stage's candidate convs, so a copy is spread over
all of that stage's layers; copies go to different stages (a model with only two eligible
stages gets a third copy in the roomier one, on kernels of its own), so no single layer
group holds them all. With the single coding (keys of layout version 1) slot ``j`` of a copy
holds data module ``j`` (row-major order of the symbol's data modules); with the pair coding
(a copy of ``width`` 2, layout version 2) slots ``2j`` and ``2j + 1`` hold module ``j`` as a
complementary pair (one kept, one pruned), so an attack that flips one kernel of the pair
leaves a detectable erasure instead of a wrong bit.

The slots are recorded *explicitly* in the key (per copy: a small ``int16`` array of
indices into the copy's parameter list, and an ``int32`` array of flat kernel indices
``out * in_channels + in``), so extraction reads them back rather than depending on the
derivation. It still re-derives them once to *check* them: slots a key could name freely
would let a forger write a key, after seeing any model, whose slots sit exactly where that
model's mask already spells the text; slots that must equal the secret's HMAC derivation
cannot be chosen that way (each try of a secret gives fresh random positions).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .. import qr
from ..errors import KeyMismatchError, SignatureError
from .whitening import keyed_sample

__all__ = [
    "Slots",
    "stage_of",
    "signature_stages",
    "stage_kernels",
    "plan_stages",
    "draw_slots",
    "keyed_capacity",
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

    def same_as(self, other: Slots) -> bool:
        """Whether two slot sets are identical (stage, parameters and every position, in order)."""
        return (self.stage == other.stage and self.params == other.params
                and np.array_equal(self.param_index.astype(np.int64), other.param_index.astype(np.int64))
                and np.array_equal(self.kernel_index.astype(np.int64), other.kernel_index.astype(np.int64)))

    def kernel_maps(self, shapes: Mapping[str, Sequence[int]]) -> dict[str, torch.Tensor]:
        """``(out, in)`` boolean maps of the slot kernels, per parameter."""
        maps = {}
        for name, _, kernels in self.per_param():
            out_c, in_c = int(shapes[name][0]), int(shapes[name][1])
            m = torch.zeros(out_c * in_c, dtype=torch.bool)
            m[torch.from_numpy(kernels)] = True
            maps[name] = m.view(out_c, in_c)
        return maps

    def to_tensors(self, copy: int) -> dict[str, torch.Tensor]:
        """The slot arrays as key tensors (``slots.<copy>.param``, ``slots.<copy>.kernel``)."""
        return {f"slots.{copy}.param": torch.from_numpy(self.param_index.astype(np.int16)),
                f"slots.{copy}.kernel": torch.from_numpy(self.kernel_index.astype(np.int32))}

    @classmethod
    def from_key(cls, record: Mapping, tensors: Mapping[str, torch.Tensor], copy: int, n: int) -> Slots:
        """Read one copy's slots back from the key (its section record and tensors).

        Raises:
            KeyMismatchError: The key's slot tensors are missing or inconsistent.
        """
        try:
            p = tensors[f"slots.{copy}.param"].numpy().astype(np.int64)
            k = tensors[f"slots.{copy}.kernel"].numpy().astype(np.int64)
        except KeyError as exc:
            raise KeyMismatchError(f"The key's signature has no slot tensors for copy {copy}; the key's tensor file "
                                   "is missing or was made by another tool.") from exc
        params = tuple(record["params"])
        if p.shape != (n,) or k.shape != (n,) or (n and (p.min() < 0 or p.max() >= len(params) or k.min() < 0)):
            raise KeyMismatchError(f"The key's slots of copy {copy} are inconsistent with its signature section.")
        return cls(stage=str(record["stage"]), params=params, param_index=p, kernel_index=k)


def stage_of(name: str, stages: Sequence[str] | None = None) -> str | None:
    """The stage a parameter belongs to (first dotted component), or ``None`` outside every stage.

    Args:
        name (`str`): timm parameter name (``layer2.0.conv1.weight``).
        stages (`Sequence[str]`, *optional*): The model's stage names
            (:func:`hf_lottery_verify.architectures.stage_names`); by default any ``layer<N>``.
    """
    head = name.split(".", 1)[0]
    if stages is not None:
        return head if head in stages else None
    return head if _STAGE.match(head) else None


def signature_stages(
    masks: Mapping[str, torch.Tensor],
    *,
    layers: Sequence[str] | str | None = None,
    stages: Sequence[str] | None = None,
) -> dict[str, list[str]]:
    """Candidate parameters of every stage, in network order.

    Args:
        masks (`Mapping[str, torch.Tensor]`): The ticket's masks (network order).
        layers (`Sequence[str]` or `str`, *optional*): ``None`` (default): the spatial
            (k×k, k > 1) masked convs; ``"all"``: every masked conv (1×1 included); or an
            explicit list of parameter names.
        stages (`Sequence[str]`, *optional*): The model's stage names; by default ``layer<N>``.

    Returns:
        ``{stage: [param, ...]}`` for the stages that have any candidate.

    Raises:
        SignatureError: A named layer is unknown, not a conv or outside every stage.
    """
    if isinstance(layers, str) and layers != "all":
        layers = [layers]
    if isinstance(layers, (list, tuple)):
        for name in layers:
            if name not in masks:
                raise SignatureError(f"'{name}' is not a masked parameter of this model.")
            if masks[name].dim() != 4 or stage_of(name, stages) is None:
                raise SignatureError(f"'{name}' is not a conv weight inside a residual stage; it cannot hold slots.")
        chosen = [n for n in masks if n in set(layers)]
    else:
        chosen = [n for n, m in masks.items() if m.dim() == 4 and stage_of(n, stages) is not None
                  and (layers == "all" or m.shape[2] * m.shape[3] > 1)]
    out: dict[str, list[str]] = {}
    for name in chosen:
        out.setdefault(stage_of(name, stages), []).append(name)  # type: ignore[arg-type]
    return out


def stage_kernels(masks: Mapping[str, torch.Tensor], params: Sequence[str]) -> int:
    """Number of kernels ``(out, in)`` over ``params``."""
    return sum(int(masks[n].shape[0]) * int(masks[n].shape[1]) for n in params)


def plan_stages(
    candidates: Mapping[str, Sequence[str]],
    masks: Mapping[str, torch.Tensor],
    n_modules: int,
    *,
    copies: int | None,
    max_occupancy: float,
) -> list[str]:
    """The stage of every copy: each eligible stage once, earliest first, then — when at least
    two stages hold copies — extra copies in the stage with the most room left.

    Earlier stages are preferred (the paper's "low-level layers": denser, with larger
    weights, so one-shot magnitude pruning removes fewer of them). A model with only two
    eligible stages (ResNet-8) still gets three copies, the third beside one of the others
    on kernels of its own; copies never all share one stage.

    Args:
        candidates (`Mapping[str, Sequence[str]]`): :func:`signature_stages`' result.
        masks (`Mapping[str, torch.Tensor]`): The ticket's masks.
        n_modules (`int`): Kernels per copy.
        copies (`int`, *optional*): Copies wanted; ``None`` = 3 where the stages hold them.
        max_occupancy (`float`): Largest share of a stage's kernels its copies may take together.

    Returns:
        Stage names, one per copy.

    Raises:
        SignatureError: ``copies`` is below 1, or the stages cannot hold that many copies.
    """
    if copies is not None and copies < 1:
        raise SignatureError(f"copies must be at least 1, got {copies}.")
    room = {s: max_occupancy * stage_kernels(masks, params) for s, params in candidates.items()}
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
            f"({', '.join(eligible) or 'no stage'} at <= {max_occupancy:.0%} of their kernels, and copies never all "
            "share one stage); lower copies (or leave copies=None), shorten the text, lower ecc, or raise "
            "max_occupancy.")
    return chosen


def draw_slots(
    secret: bytes,
    shapes: Mapping[str, Sequence[int]],
    stage: str,
    params: Sequence[str],
    n_modules: int,
    copy: int,
    *,
    max_layer_share: float | None = None,
    taken: Sequence[Slots] = (),
) -> Slots:
    """Draw one copy's slots: ``n_modules`` keyed kernel positions over the stage's parameters.

    Args:
        secret (`bytes`): The owner's secret (label ``slots/<copy>/<stage>``).
        shapes (`Mapping[str, Sequence[int]]`): Shapes of the parameters (``(out, in, kh, kw)``).
        stage (`str`): The stage.
        params (`Sequence[str]`): Its candidate parameters, in network order.
        n_modules (`int`): Data modules per copy.
        copy (`int`): Copy index.
        max_layer_share (`float`, *optional*): Largest share of the copy one parameter may
            hold (``None``: no cap; slots then fall on each layer in proportion to its size).
        taken (`Sequence[Slots]`, *optional*): Earlier copies in the same stage (same
            parameters), whose kernels this copy must avoid.

    Returns:
        The :class:`Slots`.

    Raises:
        SignatureError: The stage (or the cap) leaves too few positions.
    """
    sizes = np.array([int(shapes[n][0]) * int(shapes[n][1]) for n in params], dtype=np.int64)
    groups = np.repeat(np.arange(len(params)), sizes)
    caps = None
    if max_layer_share is not None:
        if not 0 < max_layer_share <= 1:
            raise SignatureError(f"max_layer_share must lie in (0, 1], got {max_layer_share}.")
        caps = [math.ceil(max_layer_share * n_modules)] * len(params)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    exclude = [offsets[t.param_index.astype(np.int64)] + t.kernel_index.astype(np.int64) for t in taken
               if t.stage == stage and tuple(t.params) == tuple(params)]
    try:
        flat = keyed_sample(secret, b"slots/%d/%s" % (copy, stage.encode()), int(sizes.sum()), n_modules,
                            groups=groups if caps else None, group_caps=caps,
                            exclude=np.concatenate(exclude) if exclude else None)
    except SignatureError as exc:
        raise SignatureError(f"Stage '{stage}' cannot hold {n_modules} slots with max_layer_share={max_layer_share}: "
                             f"{exc} Raise max_layer_share or leave it None.") from exc
    param_index = groups[flat]
    kernel_index = flat - offsets[param_index]
    return Slots(stage=stage, params=tuple(params), param_index=param_index.astype(np.int16),
                 kernel_index=kernel_index.astype(np.int32))


def keyed_capacity(
    masks: Mapping[str, torch.Tensor],
    *,
    ecc: str = "H",
    layers: Sequence[str] | str | None = None,
    stages: Sequence[str] | None = None,
    max_occupancy: float = 0.5,
    width: int = 1,
) -> tuple[int, int, str | None]:
    """Largest byte-mode payload one keyed copy can carry.

    Args:
        masks (`Mapping[str, torch.Tensor]`): The ticket's masks.
        ecc (`str`, *optional*, defaults to `"H"`): QR error-correction level.
        layers (`Sequence[str]` or `str`, *optional*): Candidate layers (see :func:`signature_stages`).
        stages (`Sequence[str]`, *optional*): The model's stage names.
        max_occupancy (`float`, *optional*, defaults to 0.5): Largest share of a stage's kernels.
        width (`int`, *optional*, defaults to 1): Kernels per data module (2 for the pair coding).

    Returns:
        ``(max_bytes, version, stage)``; ``(0, 0, None)`` when not even version 1 fits.
    """
    candidates = signature_stages(masks, layers=layers, stages=stages)
    best = (0, 0, None)
    for stage, params in candidates.items():
        room = max_occupancy * stage_kernels(masks, params)
        fits = [v for v in range(1, 41) if width * qr.num_data_modules(v) <= room]
        if fits and fits[-1] > best[1]:
            best = (qr.capacity(fits[-1], ecc), fits[-1], stage)
    return best
