"""Function-preserving structural attacks a thief runs on a stolen ticket for free.

Yan et al. (USENIX Security 2023) showed that renaming, rescaling and duplicating
neurons removes most white-box watermarks at no cost in accuracy: the network computes
exactly the same function, but every weight sits somewhere else or has another value.
A verifier must therefore re-align the suspect's channels to the owner's reference
before it reads a mask. These attacks produce such suspects; all are built on
:mod:`hf_lottery_verify.spaces` and hold for **eval-mode** semantics (batch norm uses
its running statistics).

* :func:`permute_channels` — renumber the channels of every space (exact).
* :func:`rescale_channels` — multiply channels by positive factors and compensate in
  the following batch norm (``mode="bn"``) or in the consumers behind the ReLU
  (``mode="relu"``) (exact up to float rounding).
* :func:`add_dummy_channels` — widen spaces by duplicated channels (consumer columns
  split between original and copy) or by random channels nobody reads (exact up to
  float rounding; the layers change shape).
* :func:`densify` — fill every pruned position with tiny noise (not exact: outputs move
  by about ``scale`` relative to the layer's weights).

Each attack takes a :class:`~hf_lottery_verify.SparseResNetForImageClassification` (or a
bare timm ResNet), returns a new model (a deep copy) and leaves its input untouched.
Attacks compose: ``densify(rescale_channels(permute_channels(m, seed=1), seed=2), seed=3)``.
Each lives in its own module, all importable from here: :mod:`.permutation`,
:mod:`.rescaling`, :mod:`.widening` and :mod:`.densification` (shared plumbing in
:mod:`._common`); this module holds the overview and declares them to the registry with
their default sweeps (``densify`` is the one that moves outputs, by about its ``scale``).

**Masks.** The attacked model's masks describe its own weights, as a thief's re-saved
checkpoint would: permuted like the weights, unchanged by rescaling (zeros stay zeros),
rebuilt from the non-zero weights after widening or densifying. The verifier never
trusts them anyway (it reads masks off the weights).

**Densify plus rescale.** A verifier that recovers a densified suspect's mask by a
per-layer top-``k`` on ``|w|`` (``k`` from the owner's key) assumes that the kept
weights of a layer share one scale. :func:`rescale_channels` breaks that: a weight's
row and column factors spread the entries of one layer over a ratio of up to 400²,
so noise in scaled-up rows and columns outranks kept weights in scaled-down ones.
Measured on a 5%-dense ``cifar_resnet20_a`` (share of the kept positions that
per-layer top-``k`` finds): densify alone 100%; rescale then densify 99.4%
(``scale=1e-4``) / 87% (``1e-3``); densify then rescale 93% / 79%. Undo the
per-channel scales before taking the top ``k``: normalising every row and column of
a weight (alternating passes, Sinkhorn-like) brings the densify-then-rescale suspect
back to 99.6–100% (the scales act on weights and noise alike, and the normalised form
does not depend on them), but not a rescale-then-densify one (its noise floor is flat
and normalising lifts it in scaled-down rows); there use the per-channel kept counts of
the re-aligned reference, or the noise floor as a threshold.
"""

from __future__ import annotations

from ._common import SpaceSelection as SpaceSelection
from .densification import densify
from .permutation import permute_channels
from .registry import register_attack
from .rescaling import rescale_channels
from .widening import add_dummy_channels

__all__ = [
    "permute_channels",
    "rescale_channels",
    "add_dummy_channels",
    "densify",
]

register_attack("permute", kind="structural", function_preserving=True,
                variants={"all": {"spaces": "all"}})(permute_channels)
register_attack("rescale", kind="structural", function_preserving=True, strength="high", sweep=(2.0, 20.0, 400.0),
                variants={"both": {"mode": "both"}})(rescale_channels)
register_attack("dummy", kind="structural", function_preserving=True, strength="per_space", sweep=(1, 4, 16),
                variants={"duplicate": {"mode": "duplicate"}, "zero_out": {"mode": "zero_out"}})(add_dummy_channels)
register_attack("densify", kind="structural", strength="scale", sweep=(1e-4, 1e-3, 1e-2))(densify)
