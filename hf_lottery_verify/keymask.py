"""Scheme V1 of Chen et al. (NeurIPS 2021): key masks (Algorithm 1).

The owner splits a ticket's mask ``M`` into a small *key mask* ``M_s`` and the *locked
mask* ``M_l = M − M_s``: every kept weight of ``W ⊙ M`` gets a score, pruned entries get
``−∞``, and the ``n = round(ratio · |M|)`` highest scores form the key. The owner publishes
``W ⊙ M_l`` (a ticket that loses accuracy when retrained without the key) and keeps the
key (``M_s`` and the key weights ``W ⊙ M_s``) private; ``M_l + M_s`` restores ``M``.

Scorers live in a registry whose keys are the CLI values of ``--score``:

* ``omp``: one-shot magnitude ``|w|``;
* ``ewp``: edge-weight-product over all input→output paths of the real network (PHEW),
  computed in closed form as SynFlow's score;
* ``betweenness``: edge betweenness of the channel graph (:mod:`hf_lottery_verify.graph`),
  computed with python-igraph;
* ``random``: seeded uniform scores.

Example:
    >>> from hf_lottery_verify.keymask import lock_model, load_with_key
    >>> locked, key = lock_model(model, ratio=0.05, score="ewp")   # doctest: +SKIP
    >>> locked.save_pretrained("public/")                           # doctest: +SKIP
    >>> key.save("~/keys/ticket.key.json")                          # doctest: +SKIP
    >>> full = load_with_key("public/", key)                        # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn

from .architectures import stage_names
from .errors import CheckpointError, DensityError, KeyFileError, KeyMismatchError, MaskError, UnknownNameError
from .graph import EDGE_WEIGHT, ChannelGraph, build_channel_graph, timm_resnet
from .masks import MaskDict, count_kept, count_total, pack_bits, top_k_mask, unpack_bits
from .ownership_key import OwnershipKey, check_key_outside, mask_digest

__all__ = [
    "KEYMASK_SECTION",
    "Scorer",
    "register_scorer",
    "list_scorers",
    "get_scorer",
    "compute_scores",
    "score_magnitude",
    "score_ewp",
    "score_betweenness",
    "score_random",
    "split_key_mask",
    "merge_key_mask",
    "fake_key_masks",
    "lock_model",
    "load_with_key",
    "split_key_folder",
]

logger = logging.getLogger(__name__)

KEYMASK_SECTION = "keymask"
"""Name of the V1 section in an :class:`~hf_lottery_verify.ownership_key.OwnershipKey`."""

_MASK_TENSOR = "mask."
_VALUES_TENSOR = "values."


# --------------------------------------------------------------------------- scorer registry


class Scorer(Protocol):
    """A scorer maps a model and its masks to one ``float64`` score tensor per masked parameter.

    Scores of pruned entries are ignored (the split sets them to ``−∞``). Higher scores go
    into the key first.
    """

    def __call__(
        self, model: nn.Module, masks: Mapping[str, torch.Tensor], *, seed: int, **options: Any
    ) -> dict[str, torch.Tensor]: ...


_SCORERS: dict[str, Scorer] = {}


def register_scorer(name: str) -> Callable[[Scorer], Scorer]:
    """Register a scorer under ``name`` (the value of the CLI's ``--score``).

    Args:
        name: Registry key.

    Returns:
        A decorator that registers and returns the scorer unchanged.

    Example:
        >>> @register_scorer("ones")                                        # doctest: +SKIP
        ... def score_ones(model, masks, *, seed):
        ...     return {n: torch.ones(m.shape, dtype=torch.float64) for n, m in masks.items()}
    """

    def decorator(fn: Scorer) -> Scorer:
        if name in _SCORERS:
            warnings.warn(f"Overwriting the key-mask scorer '{name}'.", stacklevel=2)
        _SCORERS[name] = fn
        return fn

    return decorator


def list_scorers() -> list[str]:
    """Names of the registered scorers, sorted."""
    return sorted(_SCORERS)


def get_scorer(name: str) -> Scorer:
    """Look a scorer up by name.

    Args:
        name: A name from :func:`list_scorers`.

    Returns:
        The scorer.

    Raises:
        UnknownNameError: ``name`` is not registered; the message lists the valid names.
    """
    if name not in _SCORERS:
        raise UnknownNameError("key-mask scorer", name, available=_SCORERS)
    return _SCORERS[name]


def _ordered_names(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> list[str]:
    """Masked parameter names in the model's ``named_parameters`` (forward) order.

    The global ranking breaks ties by position, so the order must not depend on how a
    mask dict happened to be built or loaded.
    """
    params = [n for n, _ in timm_resnet(model).named_parameters()]
    unknown = [n for n in masks if n not in set(params)]
    if unknown:
        raise MaskError(f"Masks for unknown parameters {unknown[:3]}; mask names are timm parameter names.",
                        param_name=unknown[0])
    return [n for n in params if n in masks]


def _model_masks(model: nn.Module) -> MaskDict:
    masks = getattr(model, "masks", None)
    if not masks:
        raise MaskError("The model has no masks: prune it first (model.prune_(density=...)) or load a sparse ticket.")
    return dict(masks)


def compute_scores(
    model: nn.Module,
    *,
    score: str = "omp",
    masks: Mapping[str, torch.Tensor] | None = None,
    seed: int = 0,
    **options: Any,
) -> dict[str, torch.Tensor]:
    """Score every masked weight with a registered scorer.

    Args:
        model: A :class:`~hf_lottery_verify.SparseResNetForImageClassification` (or a timm ResNet with ``masks`` given).
        score (`str`, *optional*, defaults to `"omp"`): A name from :func:`list_scorers`.
        masks (`Mapping[str, torch.Tensor]`, *optional*): Masks to score; defaults to ``model.masks``.
        seed (`int`, *optional*, defaults to 0): Seed for random scorers and sampling.
        **options: Scorer options (see each scorer).

    Returns:
        ``float64`` CPU score tensors shaped like the weights, by parameter name.

    Raises:
        UnknownNameError: ``score`` is not registered.
        MaskError: The model has no masks.
    """
    scorer = get_scorer(score)
    masks = dict(masks) if masks is not None else _model_masks(model)
    scores = scorer(model, masks, seed=seed, **options)
    out = {}
    for name, mask in masks.items():
        s = scores.get(name)
        if s is None or tuple(s.shape) != tuple(mask.shape):
            raise MaskError(f"Scorer '{score}' returned no score of shape {tuple(mask.shape)} for '{name}'.",
                            param_name=name)
        out[name] = s.detach().to("cpu", torch.float64)
    return out


# --------------------------------------------------------------------------- scorers


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in timm_resnet(model).named_parameters()}


@register_scorer("omp")
def score_magnitude(model: nn.Module, masks: Mapping[str, torch.Tensor], *, seed: int = 0) -> dict[str, torch.Tensor]:
    """One-shot magnitude: the score of a weight is ``|w|``.

    Args:
        model: The ticket.
        masks: Masked parameters to score.
        seed: Unused (the score is deterministic).

    Returns:
        ``float64`` scores by parameter name.
    """
    params = _weights(model)
    return {n: params[n].to("cpu", torch.float64).abs() for n in masks}


@register_scorer("random")
def score_random(model: nn.Module, masks: Mapping[str, torch.Tensor], *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Uniform random scores from a CPU generator seeded with ``seed``.

    Args:
        model: The ticket (fixes the order in which parameters draw their numbers).
        masks: Masked parameters to score.
        seed: Generator seed; the same seed gives the same scores.

    Returns:
        ``float64`` scores in ``[0, 1)`` by parameter name.
    """
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.rand(tuple(masks[n].shape), generator=gen, dtype=torch.float64)
            for n in _ordered_names(model, masks)}


_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.GELU, nn.Mish, nn.Hardswish)


def _linearised_copy(net: nn.Module, masks: Mapping[str, torch.Tensor]) -> tuple[nn.Module, dict[str, nn.Parameter]]:
    """A float64 copy of ``net`` computing the path sums: weights ``|W ⊙ M|``, biases zero,
    batch norm and activations replaced by identities, max-pooling by average pooling."""
    lin = copy.deepcopy(net)
    for parent in list(lin.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, (nn.modules.batchnorm._BatchNorm, *_ACTIVATIONS)):
                setattr(parent, child_name, nn.Identity())
            elif isinstance(child, nn.MaxPool2d):
                setattr(parent, child_name, nn.AvgPool2d(
                    child.kernel_size, child.stride, child.padding, ceil_mode=child.ceil_mode, count_include_pad=True))
    with torch.no_grad():
        for name, p in lin.named_parameters():
            if name.endswith("bias"):
                p.data = torch.zeros(p.shape, dtype=torch.float64)
            else:
                value = p.detach().to("cpu", torch.float64).abs()
                if name in masks:
                    value.mul_(masks[name].to("cpu"))
                p.data = value
            p.requires_grad_(name in masks)
    lin.double().eval()
    leaves = {name: p for name, p in lin.named_parameters() if name in masks}
    return lin, leaves


@register_scorer("ewp")
def score_ewp(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    *,
    seed: int = 0,
    input_size: tuple[int, int] | None = None,
    renormalize: bool = True,
) -> dict[str, torch.Tensor]:
    """Edge-weight-product (PHEW): the sum, over all input→output paths of the real network
    that pass through a weight, of the product of ``|w|`` along the path.

    This equals SynFlow's closed form, computed with one forward and one backward pass: a
    float64 copy of the timm model with ``|W ⊙ M|`` as weights (``|W|`` for unmasked
    parameters), zero biases, batch norm and activations replaced by identities (exact for
    ReLU, as every activation is non-negative) and max-pooling replaced by average pooling,
    is fed an all-ones input of the model's input size; the score of ``w`` is
    ``|w| · ∂(Σ outputs)/∂|w|``. Residual connections are part of the forward pass, so
    every path through them counts. The global average pooling contributes the same
    constant factor ``1/(H·W)`` to every path (so does a replaced max-pool, ``1/k²``), so it
    does not change the ranking; a kernel tap counts once per output pixel it reaches, as
    in the real network (taps that only meet zero padding at the border count less).

    Products span ``1e-2 … 1e50`` on real tickets, beyond float32. With ``renormalize``,
    every block output is divided by its maximum during the forward pass. Every
    input→output path crosses every block output, so this divides every score by the same
    factor; the factor is multiplied back when the result is representable in float64,
    and otherwise the scores are returned divided by it (the ranking, all a key split
    needs, is unchanged) with a warning.

    Args:
        model: The ticket.
        masks: Masked parameters to score.
        seed: Unused (the score is deterministic).
        input_size (`tuple[int, int]`, *optional*): ``(height, width)`` of the all-ones input;
            defaults to the model's ``pretrained_cfg["input_size"]``.
        renormalize (`bool`, *optional*, defaults to `True`): Rescale block outputs as above.

    Returns:
        ``float64`` scores by parameter name.

    Raises:
        FloatingPointError: The path sums overflow float64 (with ``renormalize=False``, or
            inside a single residual block).
    """
    net = timm_resnet(model)
    lin, leaves = _linearised_copy(net, masks)
    logs: list[float] = []

    def rescale(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        peak = float(output.detach().amax())
        if not math.isfinite(peak):
            raise FloatingPointError("EWP path sums overflowed float64 inside one residual block.")
        if peak <= 0.0:
            return output
        logs.append(math.log(peak))
        return output / peak

    if renormalize:
        for stage in stage_names(lin):
            for block in getattr(lin, stage).children():
                block.register_forward_hook(rescale)
    first_conv = next(m for m in lin.modules() if isinstance(m, nn.Conv2d))
    if input_size is None:
        cfg = getattr(net, "pretrained_cfg", None) or {}
        input_size = tuple(cfg.get("input_size", (3, 224, 224))[-2:])
    x = torch.ones((1, first_conv.in_channels, *input_size), dtype=torch.float64)
    total = lin(x).sum()
    if not bool(torch.isfinite(total)):
        raise FloatingPointError(
            "EWP path sums overflowed float64 (total = inf/nan); use renormalize=True, which rescales every "
            "block output and keeps the ranking exact."
        )
    if float(total.detach()) == 0.0:
        logger.warning("No input→output path survives in this ticket (or, with renormalize=False, the path sums "
                       "underflowed float64): every EWP score is 0.")
    names = list(leaves)
    grads = torch.autograd.grad(total, [leaves[n] for n in names], allow_unused=True)
    scaled = {}
    for name, grad in zip(names, grads, strict=True):
        w = leaves[name].detach()
        scaled[name] = w * grad if grad is not None else torch.zeros_like(w)
    log_scale = sum(logs)
    if not logs:
        return scaled
    out = {}
    factor = math.exp(log_scale) if log_scale < 700.0 else math.inf
    for name, s in scaled.items():
        raw = s * factor
        if not bool(torch.isfinite(raw).all()) or bool(((raw == 0) & (s != 0)).any()):
            logger.warning(
                "EWP scores exceed the float64 range by a common factor exp(%.1f); returning them divided "
                "by it (the ranking is unchanged).", log_scale)
            return scaled
        out[name] = raw
    return out


WeightMode = Literal["abs", "inverse", "none"]


def _edge_lengths(weight: np.ndarray, mode: WeightMode) -> np.ndarray | None:
    if mode == "none":
        return None
    positive = weight[weight > 0]
    floor = float(positive.min()) / 2 if positive.size else 1.0
    w = np.maximum(weight, floor)  # igraph needs strictly positive lengths (a kept weight may be exactly 0)
    if mode == "abs":
        return w
    if mode == "inverse":
        return 1.0 / w
    raise UnknownNameError("betweenness weight mode", str(mode), available=("abs", "inverse", "none"))


def _allocate_sources(counts: np.ndarray, importance: np.ndarray, k: int) -> np.ndarray:
    """How many sources to draw from each stratum: ``∝ importance``, at least one, at most
    the stratum's size (water-filling: strata that would get more than they hold take all
    their nodes and the rest is shared again)."""
    take = np.zeros(counts.shape, dtype=np.int64)
    active = importance > 0
    while active.any():
        budget = k - int(take[~active].sum())
        share = budget * importance[active] / importance[active].sum()
        full = share >= counts[active]
        if not full.any():
            take[active] = np.clip(np.round(share), 1, counts[active]).astype(np.int64)
            break
        idx = np.flatnonzero(active)[full]
        take[idx] = counts[idx]
        active[idx] = False
    return take


def _stratified_sources(graph: ChannelGraph, k: int, rng: np.random.Generator) -> list[tuple[np.ndarray, float]]:
    """Sample about ``k`` source nodes, stratified by activation point; return
    ``(sources, scale)`` per point so that the scaled sum is an unbiased estimate.

    A source's contribution grows with the part of the graph below it, so a point gets
    sources in proportion to ``its nodes × the edges leaving it or later points`` (a
    Neyman-style allocation); points with no edge below them contribute nothing and are
    skipped.
    """
    offsets = graph.point_offsets
    counts = np.diff(offsets)
    src_sorted = np.sort(graph.src)
    downstream = src_sorted.size - np.searchsorted(src_sorted, offsets[:-1])
    take = _allocate_sources(counts, counts * downstream.astype(np.float64), k)
    strata = []
    for p, (size, n) in enumerate(zip(counts.tolist(), take.tolist(), strict=True)):
        if n:
            nodes = np.sort(rng.choice(size, size=n, replace=False)) + offsets[p]
            strata.append((nodes, size / n))
    return strata


@register_scorer("betweenness")
def score_betweenness(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    *,
    seed: int = 0,
    weights: WeightMode = "abs",
    sources: int | None = None,
    include_classifier: bool = False,
    tiebreak: bool = True,
) -> dict[str, torch.Tensor]:
    """Edge betweenness centrality of the channel graph (python-igraph).

    The graph is :func:`~hf_lottery_verify.graph.build_channel_graph`: one edge per kernel
    with a kept weight, shortcuts included, paths following the real forward graph. Each
    kernel's betweenness is given to all of its kept weights.

    **Edge weights.** As in the paper, an edge's weight is ``Σ|kernel|`` over its kept
    weights. igraph (like networkx) treats weights as *lengths* of shortest paths, so with
    ``weights="abs"`` (the paper's literal choice, the default) strong kernels are *long*
    and shortest paths avoid them. ``weights="inverse"`` uses ``1/Σ|kernel|`` (strong
    kernels are short, the reading that matches "important connections"), ``"none"`` counts
    hops. Shortcut and add edges have weight 1 (an identity kernel). Zero-sum kept kernels
    get half the smallest positive length (igraph needs positive lengths).

    **Tie-break.** Many kernels share a betweenness value (and all weights of one kernel
    do), so the score is ``b + δ·|w|/max|w|`` with ``δ`` a quarter of the smallest gap
    between distinct betweenness values: the term orders weights inside a kernel (and
    across kernels of equal betweenness) by magnitude, and is too small to reorder kernels
    with different betweenness, even after float rounding.

    **Sampling.** Exact betweenness runs one shortest-path search per node (~3 s for a
    2%-dense CIFAR ResNet-18, ~3 min for a ResNet-50 on 2 cores). ``sources=k`` runs
    searches from about ``k`` seeded random nodes, stratified by activation point: each
    point gets sources in proportion to its nodes times the edges below it (sources early
    in the network reach more of it), at least one and at most all of its nodes; each
    point's sum is scaled by ``its nodes / drawn nodes``, an unbiased estimate of the exact
    value. On a 2%-dense CIFAR ResNet-18, 2048 of 5827 sources give a Spearman rank
    correlation of ~0.93 with the exact edge scores and ~0.91 overlap of the top 5%.

    Args:
        model: The ticket.
        masks: Masked parameters to score.
        seed (`int`, *optional*, defaults to 0): Seed for the source sample.
        weights (`str`, *optional*, defaults to `"abs"`): ``"abs"``, ``"inverse"`` or ``"none"``.
        sources (`int`, *optional*): Number of sampled sources; ``None`` computes exact betweenness.
        include_classifier (`bool`, *optional*, defaults to `False`): Add the logits and
            the classifier's kernels to the graph.
        tiebreak (`bool`, *optional*, defaults to `True`): Add the in-kernel magnitude tie-break.

    Returns:
        ``float64`` scores by parameter name (0 for weights of fully pruned kernels).

    Raises:
        UnknownNameError: Unknown ``weights`` mode.
        DensityError: ``sources`` is not positive.
    """
    graph = build_channel_graph(model, masks, include_classifier=include_classifier)
    lengths = _edge_lengths(graph.weight, weights)
    g = graph.to_igraph(attributes=False)
    if lengths is not None:
        g.es["weight"] = lengths.tolist()
    w_arg = "weight" if lengths is not None else None
    if sources is None or sources >= graph.num_nodes:
        bc = np.asarray(g.edge_betweenness(directed=True, weights=w_arg), dtype=np.float64)
    else:
        if sources <= 0:
            raise DensityError(f"sources must be a positive number of sampled nodes, got {sources}.")
        rng = np.random.default_rng(seed)
        bc = np.zeros(graph.num_edges, dtype=np.float64)
        for nodes, scale in _stratified_sources(graph, sources, rng):
            part = g.edge_betweenness(directed=True, weights=w_arg, sources=nodes.tolist())
            bc += scale * np.asarray(part, dtype=np.float64)

    is_weight = graph.kind == EDGE_WEIGHT
    delta = 0.0
    if tiebreak:
        distinct = np.unique(bc[is_weight])
        gaps = np.diff(distinct)
        delta = float(gaps.min()) / 4 if gaps.size else 1.0
    params = _weights(model)
    max_abs = max((float(params[n].abs().max()) for n in masks if params[n].numel()), default=0.0) or 1.0
    out = {}
    for name in masks:
        w = params[name].to("cpu", torch.float64)
        kernel_scores = torch.zeros(w.shape[0], w.shape[1], dtype=torch.float64)
        if name in graph.param_names:
            e = np.flatnonzero(graph.param == graph.param_names.index(name))
            kernel_scores[torch.from_numpy(graph.out_channel[e]), torch.from_numpy(graph.in_channel[e])] = (
                torch.from_numpy(bc[e]))
        else:
            logger.warning("'%s' is not in the channel graph; its betweenness is 0.", name)
        score = kernel_scores.reshape(*kernel_scores.shape, *([1] * (w.dim() - 2))).expand(w.shape).clone()
        if delta:
            score += delta * (w.abs() / max_abs)
        out[name] = score
    return out


# --------------------------------------------------------------------------- split and merge


def _check_ratio(ratio: float) -> None:
    if not (isinstance(ratio, int | float) and math.isfinite(ratio) and 0.0 < ratio < 1.0):
        raise DensityError(f"ratio must lie strictly between 0 and 1 (the key's share of the kept weights), got {ratio}.")


def _split_flat(flat: torch.Tensor, masks: Mapping[str, torch.Tensor], names: list[str]) -> MaskDict:
    out, start = {}, 0
    for name in names:
        numel = masks[name].numel()
        out[name] = flat[start : start + numel].view(masks[name].shape)
        start += numel
    return out


def split_key_mask(
    model: nn.Module,
    *,
    ratio: float,
    score: str = "omp",
    seed: int = 0,
    **score_options: Any,
) -> tuple[MaskDict, MaskDict]:
    """Algorithm 1: split the model's masks ``M`` into key masks ``M_s`` and locked masks ``M_l``.

    Every kept weight of ``W ⊙ M`` is scored, pruned entries get ``−∞``, and the
    ``n = round(ratio · |M|)`` highest scores over all masked parameters together form the
    key (:func:`~hf_lottery_verify.masks.top_k_mask` on the global concatenation in forward
    parameter order: ties are broken by position, so ``|M_s| = n`` exactly). NaN scores
    raise ``ValueError``.

    Args:
        model: A sparse ticket with masks.
        ratio (`float`): Share of the kept weights that go into the key, in ``(0, 1)``.
        score (`str`, *optional*, defaults to `"omp"`): A name from :func:`list_scorers`.
        seed (`int`, *optional*, defaults to 0): Seed for random scorers and sampling.
        **score_options: Options of the scorer (e.g. ``sources=512`` for ``betweenness``).

    Returns:
        ``(key_masks, locked_masks)``: boolean mask dicts with ``key | locked == M`` and
        ``key & locked`` empty.

    Raises:
        DensityError: ``ratio`` is outside ``(0, 1)`` or gives an empty or full key.
        MaskError: The model has no masks.
        UnknownNameError: ``score`` is not registered.

    Example:
        >>> key, locked = split_key_mask(model, ratio=0.05, score="omp")   # doctest: +SKIP
    """
    _check_ratio(ratio)
    masks = _model_masks(model)
    names = _ordered_names(model, masks)
    kept = count_kept(masks)
    n = round(ratio * kept)
    if n < 1 or n >= kept:
        raise DensityError(f"ratio {ratio} of {kept} kept weights gives a key of {n} weights; "
                           "choose a ratio that leaves both the key and the locked mask non-empty.")
    scores = compute_scores(model, score=score, masks=masks, seed=seed, **score_options)
    cpu_masks = {name: masks[name].to("cpu") for name in names}
    # Pruned entries score -inf and n <= kept, so they are never chosen: ranking only the
    # kept entries (kept in their global order) selects the same n entries, with the same
    # position tie-break, as top_k_mask over the whole concatenation — 50x less work at 2%.
    positions = [torch.nonzero(cpu_masks[name].reshape(-1)).reshape(-1) for name in names]
    kept_scores = torch.cat([scores[name].reshape(-1)[pos] for name, pos in zip(names, positions, strict=True)])
    chosen = top_k_mask(kept_scores, n)
    key, start = {}, 0
    for name, pos in zip(names, positions, strict=True):
        flat = torch.zeros(cpu_masks[name].numel(), dtype=torch.bool)
        flat[pos[chosen[start : start + pos.numel()]]] = True
        start += pos.numel()
        key[name] = flat.view(cpu_masks[name].shape).to(masks[name].device)
    locked = {name: masks[name] & ~key[name] for name in names}
    return key, locked


def merge_key_mask(locked: Mapping[str, torch.Tensor], key: Mapping[str, torch.Tensor]) -> MaskDict:
    """Restore ``M = M_l + M_s`` bit-exactly.

    Args:
        locked: Locked masks.
        key: Key masks for the same parameters.

    Returns:
        The full masks.

    Raises:
        MaskError: The parameter sets or shapes differ, a mask is not boolean, or the masks overlap.
    """
    if set(locked) != set(key):
        diff = sorted(set(locked) ^ set(key))
        raise MaskError(f"Locked and key masks cover different parameters: {diff[:4]}.", param_name=diff[0])
    out = {}
    for name, lm in locked.items():
        km = key[name]
        if lm.dtype != torch.bool or km.dtype != torch.bool:
            raise MaskError(f"Masks for '{name}' must be torch.bool.", param_name=name)
        if tuple(lm.shape) != tuple(km.shape):
            raise MaskError(f"Locked mask {tuple(lm.shape)} and key mask {tuple(km.shape)} of '{name}' differ in shape.",
                            param_name=name)
        km = km.to(lm.device)
        overlap = int((lm & km).sum())
        if overlap:
            raise MaskError(f"Locked and key masks of '{name}' overlap in {overlap} entries; they are not a split "
                            "of one mask.", param_name=name)
        out[name] = lm | km
    return out


def fake_key_masks(
    locked_masks_or_model: Mapping[str, torch.Tensor] | nn.Module,
    *,
    n: int,
    seed: int = 0,
) -> MaskDict:
    """Random key masks of ``n`` entries drawn from the locked mask's pruned positions.

    The paper's ambiguity attack "fake1": an attacker who only has the locked ticket
    claims a random key of the right size.

    Args:
        locked_masks_or_model: Locked masks, or a model whose masks are the locked masks.
        n (`int`): Size of the fake key (the real key's ``n``).
        seed (`int`, *optional*, defaults to 0): Seed of the CPU generator.

    Returns:
        Boolean key masks disjoint from the locked masks, with exactly ``n`` entries.

    Raises:
        DensityError: ``n`` is negative or exceeds the number of pruned positions.
    """
    if isinstance(locked_masks_or_model, nn.Module):
        locked = _model_masks(locked_masks_or_model)
        names = _ordered_names(locked_masks_or_model, locked)
    else:
        locked = dict(locked_masks_or_model)
        names = list(locked)
    pruned = count_total(locked) - count_kept(locked)
    if not 0 <= n <= pruned:
        raise DensityError(f"A fake key of {n} entries cannot be drawn from {pruned} pruned positions.")
    gen = torch.Generator().manual_seed(seed)
    flat = torch.cat([
        torch.rand(locked[name].numel(), generator=gen, dtype=torch.float64).masked_fill(
            locked[name].reshape(-1).cpu(), -math.inf)
        for name in names
    ])
    fake = _split_flat(top_k_mask(flat, n), locked, names)
    return {name: fake[name].to(locked[name].device) for name in names}


# --------------------------------------------------------------------------- distribution


def _arch(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    arch = getattr(config, "arch", None)
    if not arch:
        raise KeyMismatchError("Key masks need a SparseResNetForImageClassification (its config names the architecture).")
    return str(arch)


def lock_model(
    model: nn.Module,
    *,
    ratio: float,
    score: str = "omp",
    seed: int = 0,
    key: OwnershipKey | None = None,
    **score_options: Any,
) -> tuple[nn.Module, OwnershipKey]:
    """Split a ticket into a publishable locked model and a private key.

    The locked model is a copy whose weights are ``W ⊙ M_l`` and whose masks are the
    locked masks: the key weights are zero in it, so a saved folder carries none of them.
    The key's ``keymask`` section records ``ratio``, ``score``, ``seed``, the scorer
    options, ``n``, per-parameter shapes and counts, and the SHA-256 digests of the full
    and the locked masks; its tensors are ``mask.<param>`` (bit-packed key mask, ``U8``)
    and ``values.<param>`` (the key weights, 1-D, row-major order, the weights' dtype).

    Args:
        model: A :class:`~hf_lottery_verify.SparseResNetForImageClassification` with masks.
        ratio (`float`): Share of the kept weights that go into the key, in ``(0, 1)``.
        score (`str`, *optional*, defaults to `"omp"`): A name from :func:`list_scorers`.
        seed (`int`, *optional*, defaults to 0): Seed for random scorers and sampling.
        key (`OwnershipKey`, *optional*): An existing key to add the section to (its other
            sections are kept); a new key otherwise.
        **score_options: Options of the scorer.

    Returns:
        ``(locked_model, key)``.

    Raises:
        KeyMismatchError: ``key`` belongs to another architecture.
        DensityError, MaskError, UnknownNameError: As in :func:`split_key_mask`.
    """
    arch = _arch(model)
    if key is not None and key.arch.split(".")[0] != arch.split(".")[0]:
        raise KeyMismatchError(f"The given key belongs to architecture '{key.arch}', the model is '{arch}'.")
    full = _model_masks(model)
    names = _ordered_names(model, full)
    key_masks, locked = split_key_mask(model, ratio=ratio, score=score, seed=seed, **score_options)
    params = _weights(model)
    locked_model = copy.deepcopy(model)
    locked_model.set_masks(locked)
    per_param = {}
    tensors: dict[str, torch.Tensor] = {}
    for name in names:
        km = key_masks[name]
        tensors[_MASK_TENSOR + name] = pack_bits(km)
        tensors[_VALUES_TENSOR + name] = params[name][km.to(params[name].device)].detach().cpu().clone()
        per_param[name] = {"shape": list(km.shape), "key": int(km.sum()), "locked": int(locked[name].sum())}
    n = count_kept(key_masks)
    section = {
        "scheme": "V1 key masks (Algorithm 1)",
        "ratio": float(ratio),
        "score": score,
        "seed": int(seed),
        "score_options": _json_safe(score_options),
        "n": n,
        "kept": count_kept(full),
        "dtype": str(next(iter(params.values())).dtype).replace("torch.", ""),
        "params": per_param,
        "mask_digest": mask_digest(full),
        "locked_digest": mask_digest(locked),
    }
    if key is None:
        key = OwnershipKey(arch=arch)
    elif KEYMASK_SECTION in key.sections:
        logger.warning("Replacing the existing '%s' section of the ownership key.", KEYMASK_SECTION)
    key.set_section(KEYMASK_SECTION, section, tensors)
    logger.info("Locked %s: key of %d of %d kept weights (score=%s).", arch, n, section["kept"], score)
    return locked_model, key


def _json_safe(options: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in options.items():
        if isinstance(v, tuple):
            v = list(v)
        if not isinstance(v, str | int | float | bool | list | type(None)):
            v = repr(v)
        out[k] = v
    return out


def load_with_key(
    folder_or_model: str | os.PathLike | nn.Module,
    key: OwnershipKey | str | os.PathLike,
) -> nn.Module:
    """Rebuild the full ticket ``W ⊙ M`` from a locked model and its key, bit-exactly.

    Args:
        folder_or_model: A locked folder (or Hub repo id, or file) or an in-memory locked
            model (which is copied, not modified).
        key: The :class:`OwnershipKey`, or the path of its JSON file.

    Returns:
        A :class:`~hf_lottery_verify.SparseResNetForImageClassification` with the full masks
        and the key weights restored.

    Raises:
        KeyMismatchError: The key has no ``keymask`` section or does not fit: another
            architecture, a missing parameter or shape, a key overlapping the locked mask,
            a mask digest that differs after the merge.
        KeyFileError: ``key`` is a path that cannot be read.
        CheckpointError: The folder cannot be loaded.
    """
    from .modeling_sparse_resnet import load_model

    if not isinstance(key, OwnershipKey):
        key = OwnershipKey.load(key)
    if isinstance(folder_or_model, nn.Module):
        model = copy.deepcopy(folder_or_model)
    else:
        model = load_model(folder_or_model)
    arch = _arch(model)
    if key.arch.split(".")[0] != arch.split(".")[0]:
        raise KeyMismatchError(f"This key was made for architecture '{key.arch}', the model is '{arch}'.")
    section = key.section(KEYMASK_SECTION)
    tensors = key.section_tensors(KEYMASK_SECTION)
    params = model.timm_parameters()
    masks = model.masks
    key_masks, values = {}, {}
    for name, info in section.get("params", {}).items():
        shape = tuple(info["shape"])
        if name not in params:
            raise KeyMismatchError(f"The key holds '{name}', which the model ({arch}) does not have.")
        if tuple(params[name].shape) != shape:
            raise KeyMismatchError(f"The key's '{name}' has shape {shape}, the model's {tuple(params[name].shape)}.")
        if name not in masks:
            raise KeyMismatchError(f"The model has no mask for '{name}', which the key covers; it is not the locked ticket.")
        packed, vals = tensors.get(_MASK_TENSOR + name), tensors.get(_VALUES_TENSOR + name)
        if packed is None or vals is None:
            raise KeyMismatchError(f"The key lacks the tensors of '{name}'; the key file is incomplete.")
        try:
            km = unpack_bits(packed, shape)
        except MaskError as exc:
            raise KeyMismatchError(f"The key mask of '{name}' is damaged: {exc}") from exc
        if vals.dim() != 1 or vals.numel() != int(km.sum()):
            raise KeyMismatchError(f"The key holds {vals.numel()} values for '{name}' but its mask has {int(km.sum())}.")
        overlap = int((km & masks[name].cpu()).sum())
        if overlap:
            raise KeyMismatchError(
                f"The key mask of '{name}' overlaps the model's mask in {overlap} entries: this model is not the "
                "locked ticket the key was made for (or it is the full ticket already)."
            )
        key_masks[name], values[name] = km, vals
    merged = dict(masks)
    merged.update(merge_key_mask({n: masks[n].cpu() for n in key_masks}, key_masks))
    if mask_digest(merged) != section.get("mask_digest"):
        raise KeyMismatchError(
            "After merging the key, the masks differ from the ticket the key was made for (digest mismatch): the "
            "locked model was pruned, re-masked or belongs to another ticket."
        )
    with torch.no_grad():
        for name, km in key_masks.items():
            p = params[name]
            vals = values[name]
            if vals.dtype != p.dtype:
                logger.warning("Key values of '%s' are %s, the model's weights %s; casting (not bit-exact).",
                               name, vals.dtype, p.dtype)
            p[km.to(p.device)] = vals.to(p.device, p.dtype)
    model.set_masks(merged)
    return model


def split_key_folder(
    model_dir: str | os.PathLike,
    *,
    ratio: float,
    score: str = "omp",
    seed: int = 0,
    key_out: str | os.PathLike,
    out_dir: str | os.PathLike,
    compact: bool = False,
    overwrite_key: bool = False,
    **score_options: Any,
) -> dict[str, Any]:
    """``hf-lottery split-key``: lock a saved ticket, write the locked folder and the key.

    After writing, the locked folder is read back and merged with the key to check that
    the full ticket comes back bit-exactly and that no key weight was published.

    Args:
        model_dir: The full ticket (folder, file or Hub repo id).
        ratio (`float`): Share of the kept weights that go into the key, in ``(0, 1)``.
        score (`str`, *optional*, defaults to `"omp"`): A name from :func:`list_scorers`.
        seed (`int`, *optional*, defaults to 0): Seed for random scorers and sampling.
        key_out: The key's JSON path; must lie outside ``out_dir``. An existing key file
            gets the ``keymask`` section added (its other sections are kept).
        out_dir: Folder for the locked model (the one to publish).
        compact (`bool`, *optional*, defaults to `False`): Save the locked model in the compact layout.
        overwrite_key (`bool`, *optional*, defaults to `False`): Replace a ``keymask``
            section already present in ``key_out``.
        **score_options: Options of the scorer.

    Returns:
        A JSON-safe report: ``n``, kept counts, densities, digests, timings, ``verified``.

    Raises:
        KeyFileError: ``key_out`` lies inside ``out_dir``, or already holds a key mask and
            ``overwrite_key`` is not set.
        CheckpointError: ``out_dir`` is ``model_dir``, or the ticket cannot be loaded.
        DensityError, UnknownNameError: Bad ``ratio`` or ``score``.
    """
    from .modeling_sparse_resnet import load_model

    check_key_outside(key_out, out_dir)
    if Path(model_dir).exists() and Path(model_dir).resolve() == Path(out_dir).resolve():
        raise CheckpointError("out_dir must differ from model_dir: the locked ticket would overwrite the full one.",
                              path=str(out_dir))
    existing = None
    if Path(key_out).exists():
        existing = OwnershipKey.load(key_out)
        if KEYMASK_SECTION in existing.sections and not overwrite_key:
            raise KeyFileError(f"{key_out} already holds a key mask; pass overwrite_key=True (or another path) — "
                               "the old key is the only way to restore the ticket it locked.")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    model = load_model(model_dir)
    timings["load_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    locked_model, key = lock_model(model, ratio=ratio, score=score, seed=seed, key=existing, **score_options)
    timings["split_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    locked_model.save_pretrained(out_dir, compact=compact)
    key_path = key.save(key_out)
    timings["save_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    published = load_model(out_dir)
    restored = load_with_key(published, key)
    full_params, restored_params, published_params = (
        model.timm_parameters(), restored.timm_parameters(), published.timm_parameters())
    key_masks = {n: unpack_bits(key.section_tensors(KEYMASK_SECTION)[_MASK_TENSOR + n], info["shape"])
                 for n, info in key.section(KEYMASK_SECTION)["params"].items()}
    no_key_weights = all(
        not bool(published_params[n].detach().cpu()[km].ne(0).any()) for n, km in key_masks.items())
    bit_exact = all(torch.equal(full_params[n].detach(), restored_params[n].detach()) for n in full_params) and all(
        torch.equal(model.masks[n].cpu(), restored.masks[n].cpu()) for n in model.masks)
    timings["verify_s"] = time.perf_counter() - t0
    if not (no_key_weights and bit_exact):
        raise CheckpointError("Verification of the split failed: the locked folder and key do not restore the ticket "
                              f"(no key weights published: {no_key_weights}, bit-exact: {bit_exact}).",
                              path=str(out_dir))
    section = key.section(KEYMASK_SECTION)
    full = model.masks
    total = count_total(full)
    return {
        "model_dir": str(model_dir),
        "out_dir": str(out_dir),
        "key_out": str(key_path),
        "arch": key.arch,
        "ratio": float(ratio),
        "score": score,
        "seed": int(seed),
        "score_options": section["score_options"],
        "n": section["n"],
        "kept": section["kept"],
        "locked_kept": section["kept"] - section["n"],
        "masked_weights": total,
        "density_full": section["kept"] / total,
        "density_locked": (section["kept"] - section["n"]) / total,
        "density_key": section["n"] / total,
        "mask_digest": section["mask_digest"],
        "locked_digest": section["locked_digest"],
        "compact": bool(compact),
        "verified": True,
        "timings": {k: round(v, 4) for k, v in timings.items()},
    }
