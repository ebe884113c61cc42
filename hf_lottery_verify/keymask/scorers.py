"""Key-mask scorers (Scheme V1): the registry, :func:`compute_scores` and the ``omp`` and ``random`` scores.

A scorer maps a ticket and its masks to one ``float64`` score per masked weight; the
split (:func:`~hf_lottery_verify.keymask.split_key_mask`) puts the ``n`` highest-scoring
kept weights into the key. The registry keys are the CLI values of ``--score``:

* ``omp``: one-shot magnitude ``|w|``;
* ``ewp``: edge-weight-product over all input→output paths of the real network (PHEW),
  computed in closed form as SynFlow's score (:mod:`hf_lottery_verify.keymask.ewp`);
* ``betweenness``: edge betweenness of the channel graph (:mod:`hf_lottery_verify.keymask.graph`),
  computed with python-igraph; shortest paths prefer strong kernels (edge length
  ``1/Σ|kernel|``, ``weights="inverse"``; :mod:`hf_lottery_verify.keymask.betweenness`);
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

import warnings
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import torch
from torch import nn

from ..errors import MaskError, UnknownNameError
from ..masks import timm_parameters
from ._common import _model_masks, _ordered_names, _scoring_model
from .betweenness import BETWEENNESS_WEIGHTS, score_betweenness
from .ewp import score_ewp

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
    params = timm_parameters(model, detach=True)
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


# The scorers of their own modules, registered after omp and random (the order they always had).
register_scorer("ewp")(score_ewp)
register_scorer("betweenness")(score_betweenness)
