"""Registry entries for the structural attacks of :mod:`.structural` (permute, rescale, dummy, densify).

:mod:`.structural` holds the attacks themselves; this module only declares them to the
registry with their metadata and default sweeps. ``permute``, ``rescale`` and ``dummy``
preserve the function exactly in eval mode (up to float rounding); ``densify`` moves
outputs by about its ``scale``.
"""

from __future__ import annotations

from .registry import register_attack
from .structural import add_dummy_channels, densify, permute_channels, rescale_channels

__all__: list[str] = []

register_attack("permute", kind="structural", function_preserving=True,
                variants={"all": {"spaces": "all"}})(permute_channels)
register_attack("rescale", kind="structural", function_preserving=True, strength="high", sweep=(2.0, 20.0, 400.0),
                variants={"both": {"mode": "both"}})(rescale_channels)
register_attack("dummy", kind="structural", function_preserving=True, strength="per_space", sweep=(1, 4, 16),
                variants={"duplicate": {"mode": "duplicate"}, "zero_out": {"mode": "zero_out"}})(add_dummy_channels)
register_attack("densify", kind="structural", strength="scale", sweep=(1e-4, 1e-3, 1e-2))(densify)
