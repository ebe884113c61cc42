"""Scheme V1 of Chen et al. (NeurIPS 2021): key masks (Algorithm 1).

The owner splits a ticket's mask ``M`` into a small *key mask* ``M_s`` and the *locked
mask* ``M_l = M − M_s``: every kept weight of ``W ⊙ M`` gets a score, pruned entries get
``−∞``, and the ``n = round(ratio · |M|)`` highest scores form the key. The owner publishes
``W ⊙ M_l`` (a ticket that loses accuracy when retrained without the key) and keeps the
key (``M_s`` and the key weights ``W ⊙ M_s``) private; ``M_l + M_s`` restores ``M``.

Modules:

* :mod:`~hf_lottery_verify.keymask.scorers`: the scorer registry (keys are the CLI values
  of ``--score``: ``omp``, ``ewp``, ``betweenness``, ``random``), the ``omp`` and ``random``
  scorers, and every scorer by name;
* :mod:`~hf_lottery_verify.keymask.ewp`: the ``ewp`` scorer (path products, PHEW/SynFlow);
* :mod:`~hf_lottery_verify.keymask.betweenness`: the ``betweenness`` scorer (igraph);
* :mod:`~hf_lottery_verify.keymask.split`: Algorithm 1 (:func:`split_key_mask`, which
  returns a :class:`KeySplit` ``(key_masks, locked_masks)``), the merge back
  (:func:`merge_key_mask`) and the fake1 ambiguity attack (:func:`fake_key_masks`);
* :mod:`~hf_lottery_verify.keymask.distribution`: the locked model and the private key
  (:func:`lock_model`, which returns a :class:`LockedTicket` ``(model, key)`` — locked model
  first, the reverse of :class:`KeySplit`; use the field names when in doubt —
  and :func:`load_with_key`).

Workflows on top of them live in :mod:`hf_lottery_verify.workflows`: locking a folder
(:func:`~hf_lottery_verify.workflows.split_key_folder`) and the fidelity experiment of the
paper's Figure 2 (:func:`~hf_lottery_verify.workflows.keymask_fidelity`).

Example:
    >>> from hf_lottery_verify.keymask import lock_model
    >>> from hf_lottery_verify.loading import load_with_key
    >>> locked, key = lock_model(model, ratio=0.05, score="ewp")   # doctest: +SKIP
    >>> locked.save_pretrained("public/")                           # doctest: +SKIP
    >>> key.save("~/keys/ticket.key.json")                          # doctest: +SKIP
    >>> full = load_with_key("public/", key=key)                        # doctest: +SKIP
"""

from __future__ import annotations

from .distribution import KEYMASK_SECTION, LockedTicket, key_parts, lock_model
from .scorers import (
    Scorer,
    compute_scores,
    get_scorer,
    list_scorers,
    register_scorer,
    score_betweenness,
    score_ewp,
    score_magnitude,
    score_random,
)
from .split import KeySplit, fake_key_masks, merge_key_mask, split_key_mask

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
    "KeySplit",
    "split_key_mask",
    "merge_key_mask",
    "fake_key_masks",
    "LockedTicket",
    "lock_model",
    "key_parts",
]
