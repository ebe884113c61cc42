"""Attacks a thief may run on a stolen ticket, each a function ``model -> new model``, by name.

* :mod:`.registry` — :func:`register_attack`, :func:`list_attacks`, :func:`get_attack`,
  :func:`run_attack`: every attack with its kind (``removal``, ``structural``,
  ``forgery``), whether it needs training data, whether it preserves the function, and
  its default strength sweep;
* :mod:`.removal` — one-shot magnitude or random pruning (optionally of one stage or some
  layers), add-on noise (``prune``, ``addon``);
* :mod:`.finetune` — masked or dense fine-tuning, same or another dataset, and prune +
  fine-tune (``finetune``, ``prune_finetune``);
* :mod:`.structural` — function-preserving channel permutation, rescaling, dummy channels,
  and densification (``permute``, ``rescale``, ``dummy``, ``densify``), one module each:
  :mod:`.permutation`, :mod:`.rescaling`, :mod:`.widening`, :mod:`.densification`;
* :mod:`.function_free` — weights that do nothing flooded, blocks made identities, deleted or
  re-initialised (``flood_dead``, ``remove_blocks``);
* :mod:`.mirror` — kernels flipped or rotated behind an input wrapper (``mirror``), and chains
  of registered attacks (``combined``);
* :mod:`.distill` — a fresh ticket trained on the victim's probabilities, pruned to its kept
  counts (``distill``; removes the evidence: not protected);
* :mod:`.forgery` — the paper's ambiguity attacks (``fake1``, ``fake2``, ``fake3``;
  :func:`forge_signature` returns the thief's key too);
* :mod:`.locate` / :mod:`.qrsearch` — the key-less search for a decodable QR window and
  its rewrite (``locate_rewrite``);
* :func:`attack_folder` — a saved folder in, an attacked folder and a JSON report out
  (``hf-lottery attack``).
"""

from __future__ import annotations

from .distill import distill_attack
from .finetune import finetune_attack, prune_finetune_attack
from .folder import attack_folder, save_attacked
from .forgery import fake1_attack, fake2_attack, fake3_attack, forge_signature
from .function_free import flood_dead_attack, remove_blocks_attack
from .locate import locate_rewrite_attack
from .mirror import RECIPES, combined_attack, mirror_attack
from .qrsearch import LocatedWindow, locate_windows
from .registry import AttackSpec, attack_table, get_attack, list_attacks, register_attack, run_attack
from .removal import addon_attack, prune_attack
from .structural import add_dummy_channels, densify, permute_channels, rescale_channels

__all__ = [
    "AttackSpec",
    "register_attack",
    "list_attacks",
    "get_attack",
    "run_attack",
    "attack_table",
    "attack_folder",
    "save_attacked",
    "prune_attack",
    "addon_attack",
    "finetune_attack",
    "prune_finetune_attack",
    "permute_channels",
    "rescale_channels",
    "add_dummy_channels",
    "densify",
    "fake1_attack",
    "fake2_attack",
    "fake3_attack",
    "forge_signature",
    "locate_rewrite_attack",
    "locate_windows",
    "LocatedWindow",
    "flood_dead_attack",
    "remove_blocks_attack",
    "mirror_attack",
    "combined_attack",
    "distill_attack",
    "RECIPES",
]
