"""Key-mask scorers (Scheme V1): the registry and the ``omp``, ``ewp``, ``betweenness`` and ``random`` scores.

A scorer maps a ticket and its masks to one ``float64`` score per masked weight; the
split (:func:`~hf_lottery_verify.keymask.split_key_mask`) puts the ``n`` highest-scoring
kept weights into the key. The registry keys are the CLI values of ``--score``:

* ``omp``: one-shot magnitude ``|w|``;
* ``ewp``: edge-weight-product over all input→output paths of the real network (PHEW),
  computed in closed form as SynFlow's score;
* ``betweenness``: edge betweenness of the channel graph (:mod:`hf_lottery_verify.keymask.graph`),
  computed with python-igraph; shortest paths prefer strong kernels (edge length
  ``1/Σ|kernel|``, ``weights="inverse"``);
* ``random``: seeded uniform scores.

Which weights are scored: by default the model's own (the trained ticket ``W ⊙ M``).
Algorithm 1 scores whatever weights it is given with the mask, and the paper's reference
code scored the rewind weights ``W_k``; pass them as ``score_weights`` to
:func:`compute_scores` or :func:`~hf_lottery_verify.keymask.split_key_mask` to do the
same. ``bench/results/keymask_scoring_choices_cpu.md`` measures both choices: keys
scored on the trained weights cost the locked ticket ~5.5 points more accuracy than keys
scored on ``W_k`` (omp and ewp, 8 tickets), which protect no better than a random key, so
the trained weights stay the default.

Every scorer is deterministic: the same model, masks, seed and options give bit-identical
scores in every process (no set iteration order or ``hash()`` is involved; tested with
different ``PYTHONHASHSEED`` values).
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn

from ..architectures import stage_names
from ..errors import DensityError, MaskError, UnknownNameError
from ._common import _model_masks, _ordered_names, _scoring_model, _weights
from .graph import EDGE_WEIGHT, ChannelGraph, build_channel_graph, timm_resnet

__all__ = [
    "Scorer",
    "register_scorer",
    "list_scorers",
    "get_scorer",
    "compute_scores",
    "score_magnitude",
    "score_ewp",
    "score_betweenness",
    "score_random",
    "BETWEENNESS_WEIGHTS",
]

logger = logging.getLogger(__name__)


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


def compute_scores(
    model: nn.Module,
    *,
    score: str = "omp",
    masks: Mapping[str, torch.Tensor] | None = None,
    seed: int = 0,
    score_weights: nn.Module | Mapping[str, torch.Tensor] | None = None,
    **options: Any,
) -> dict[str, torch.Tensor]:
    """Score every masked weight with a registered scorer.

    Args:
        model: A :class:`~hf_lottery_verify.SparseResNetForImageClassification` (or a timm ResNet with ``masks`` given).
        score (`str`, *optional*, defaults to `"omp"`): A name from :func:`list_scorers`.
        masks (`Mapping[str, torch.Tensor]`, *optional*): Masks to score; defaults to ``model.masks``.
        seed (`int`, *optional*, defaults to 0): Seed for random scorers and sampling.
        score_weights (`nn.Module` or `Mapping[str, torch.Tensor]`, *optional*): Weights to
            score instead of ``model``'s, under ``model``'s masks: typically the dense rewind
            weights ``W_k`` (as the paper's reference code did). A model of the same
            architecture or a state dict keyed by timm parameter names (``conv1.weight``)
            or by the wrapper's (``timm_model.conv1.weight``); every parameter must be
            present. ``None`` scores ``model``'s own weights (the trained ticket).
        **options: Scorer options (see each scorer).

    Returns:
        ``float64`` CPU score tensors shaped like the weights, by parameter name.

    Raises:
        UnknownNameError: ``score`` is not registered.
        MaskError: The model has no masks.
        MissingWeightsError, ShapeMismatchError: ``score_weights`` lacks a parameter or
            has another shape (it belongs to another architecture).
        TypeError: ``score_weights`` is neither a module nor a mapping.

    Example:
        >>> trained = compute_scores(ticket, score="omp")                          # doctest: +SKIP
        >>> at_rewind = compute_scores(ticket, score="omp", score_weights=rewind)  # doctest: +SKIP
    """
    scorer = get_scorer(score)
    masks = dict(masks) if masks is not None else _model_masks(model)
    _ordered_names(model, masks)  # mask names must be the model's parameters
    scored = _scoring_model(model, score_weights)
    scores = scorer(scored, masks, seed=seed, **options)
    out = {}
    for name, mask in masks.items():
        s = scores.get(name)
        if s is None or tuple(s.shape) != tuple(mask.shape):
            raise MaskError(f"Scorer '{score}' returned no score of shape {tuple(mask.shape)} for '{name}'.",
                            param_name=name)
        out[name] = s.detach().to("cpu", torch.float64)
    return out


# --------------------------------------------------------------------------- scorers


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


WeightMode = Literal["inverse", "neglog", "none", "abs_length", "abs"]

BETWEENNESS_WEIGHTS: tuple[str, ...] = ("inverse", "neglog", "none", "abs_length")
"""Edge-length modes of the ``betweenness`` scorer (``"abs"`` is a deprecated alias of ``"abs_length"``)."""

_DEPRECATED_WEIGHTS = {"abs": ("abs_length", "0.3.0")}


def _resolve_weight_mode(mode: str) -> str:
    if mode in _DEPRECATED_WEIGHTS:
        new, version = _DEPRECATED_WEIGHTS[mode]
        warnings.warn(
            f"betweenness weights='{mode}' is deprecated and will be removed in {version}: it is now called "
            f"'{new}' (Σ|kernel| used as a shortest-path *length*, so the key prefers the weakest kernels). "
            "The default is 'inverse' (length 1/Σ|kernel|); pass weights='abs_length' to keep the old scores.",
            FutureWarning, stacklevel=3)
        return new
    if mode not in BETWEENNESS_WEIGHTS:
        raise UnknownNameError("betweenness weight mode", str(mode), available=BETWEENNESS_WEIGHTS)
    return mode


def _edge_lengths(weight: np.ndarray, mode: str) -> np.ndarray | None:
    """Shortest-path lengths of the channel-graph edges for a (resolved) weight mode.

    igraph needs strictly positive lengths: a kept kernel whose weights are all exactly 0
    gets half the smallest positive strength, and a ``neglog`` length of 0 (the strongest
    edges) becomes half the smallest positive ``neglog`` length.
    """
    if mode == "none":
        return None
    positive = weight[weight > 0]
    floor = float(positive.min()) / 2 if positive.size else 1.0
    w = np.maximum(weight, floor)
    if mode == "abs_length":
        return w
    if mode == "inverse":
        return 1.0 / w
    # neglog: -log(strength / max strength); a path's length is -log of its strength product.
    length = np.log(w.max()) - np.log(w)
    pos = length[length > 0]
    return np.maximum(length, float(pos.min()) / 2 if pos.size else 1.0)


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
    weights: WeightMode = "inverse",
    sources: int | None = None,
    include_classifier: bool = False,
    tiebreak: bool = True,
) -> dict[str, torch.Tensor]:
    """Edge betweenness centrality of the channel graph (python-igraph).

    The graph is :func:`~hf_lottery_verify.keymask.graph.build_channel_graph`: one edge per kernel
    with a kept weight, shortcuts included, paths following the real forward graph. Each
    kernel's betweenness is given to all of its kept weights.

    **Edge lengths.** As in the paper, an edge's *strength* is ``Σ|kernel|`` over its kept
    weights (shortcut and add edges: 1, an identity kernel). igraph (like networkx) treats
    edge weights as *lengths* of shortest paths, so the strength must be turned into a
    length that is short for strong kernels, or the key ends up holding the weakest
    connections, against the paper's intent (important connections lie on many shortest
    paths). The modes:

    * ``"inverse"`` (default): length ``1/Σ|kernel|``;
    * ``"neglog"``: length ``−log(Σ|kernel| / max Σ|kernel|)``, so a shortest path is the
      path of largest strength product;
    * ``"none"``: hop counts (strength ignored, as in the paper's reference code);
    * ``"abs_length"``: length ``Σ|kernel|``, the literal reading of the paper's text and
      this library's default up to 0.2.0 (deprecated alias ``"abs"``): strong kernels are
      *long*, so shortest paths avoid them and betweenness rises as strength falls.

    Why ``"inverse"`` is the default (``bench/results/keymask_scoring_choices_cpu.md``: 8
    trained 4%-dense ``cifar_resnet20_a`` Fashion-MNIST tickets, key ratio 0.2): the
    Spearman correlation between a kernel's betweenness and its strength is −0.86 for
    ``"abs_length"``, +0.32 for ``"inverse"``, +0.21 for ``"neglog"`` and −0.35 for
    ``"none"``; retrained without the key, the locked ticket loses 4.9 ± 0.7 points with
    ``"inverse"``, 5.8 ± 1.2 with ``"neglog"``, 5.5 ± 0.4 with ``"none"`` (the three are
    within noise of each other), but only 1.6 ± 1.4 with ``"abs_length"``, no more than a
    random key (2.0 ± 0.9). ``"inverse"`` is the mode that uses the paper's edge weight so
    that strong connections are central. Zero-sum kept kernels get half the smallest
    positive strength (igraph needs positive lengths).

    **Tie-break.** Many kernels share a betweenness value (and all weights of one kernel
    do), so the score is ``b + δ·|w|/max|w|`` (max over kept weights) with ``δ`` a quarter of the smallest gap
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
    correlation of ~0.96 with the exact scores and ~0.90 overlap of the top 5% (default
    ``"inverse"`` lengths; ~0.93 and ~0.91 with ``"abs_length"``).

    Args:
        model: The ticket.
        masks: Masked parameters to score.
        seed (`int`, *optional*, defaults to 0): Seed for the source sample.
        weights (`str`, *optional*, defaults to `"inverse"`): Edge-length mode: ``"inverse"``,
            ``"neglog"``, ``"none"`` or ``"abs_length"`` (see above).
        sources (`int`, *optional*): Number of sampled sources; ``None`` computes exact betweenness.
        include_classifier (`bool`, *optional*, defaults to `False`): Add the logits and
            the classifier's kernels to the graph.
        tiebreak (`bool`, *optional*, defaults to `True`): Add the in-kernel magnitude tie-break.

    Returns:
        ``float64`` scores by parameter name (0 for weights of fully pruned kernels).

    Raises:
        UnknownNameError: Unknown ``weights`` mode.
        DensityError: ``sources`` is not positive.

    Warns:
        FutureWarning: ``weights="abs"`` (renamed ``"abs_length"``).
    """
    mode = _resolve_weight_mode(weights)
    graph = build_channel_graph(model, masks, include_classifier=include_classifier)
    lengths = _edge_lengths(graph.weight, mode)
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
    # Largest kept |w| (pruned entries do not count: the scores depend on W ⊙ M only).
    max_abs = max((float(params[n].abs()[masks[n].to(params[n].device, torch.bool)].max())
                   for n in masks if bool(masks[n].any())), default=0.0) or 1.0
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

