"""Named seeds: :func:`derive_seed` hashes named parts into one 63-bit seed, so streams
for different purposes (epoch order, augmentation, subsets, triggers) never overlap."""

from __future__ import annotations

import hashlib
from typing import Any

__all__ = ["derive_seed"]


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed derived from named parts (``derive_seed(seed, "epoch", 3)``).

    Hashing canonical text avoids ad-hoc ``seed + epoch`` arithmetic, whose streams overlap.
    """
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
