"""Attacks a thief may run on a stolen ticket, each a function ``model -> model``.

* :mod:`.removal` — the paper's removal attacks (Section 5): one-shot magnitude or random
  pruning, add-on noise.
"""

from __future__ import annotations

from .removal import addon_attack, prune_attack

__all__ = ["prune_attack", "addon_attack"]
