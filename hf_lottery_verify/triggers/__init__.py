"""Scheme V3: trigger sets — out-of-distribution images with random labels, learnt in retraining.

The owner mixes a secret trigger set ``T = (T_x, T_y)`` into the retraining of the signed
ticket (:func:`hf_lottery_verify.retrain.retrain`); later, a black-box query of a suspect on
``T_x`` that answers ``T_y`` far more often than chance (``1 / num_classes`` per image, the
labels being random) is evidence of ownership (Adi et al., USENIX Security 2018; Chen et
al., NeurIPS 2021, Table 3).

* :class:`TriggerSet` (:mod:`.sets`) holds the images and labels, resizes them
  deterministically and identifies them by a digest.
* :func:`make_trigger_set` (:mod:`.procedural`) draws a fresh set: procedural abstract images
  (oriented gratings, checkerboards, rings, polygons, blobs, pixel noise in saturated colours)
  that no natural dataset contains, computed in float64 from seeded CPU generators and
  quantised to ``uint8``: the same seed gives the same bytes in every process and on every machine.
* :func:`load_adi_trigger_set` (:mod:`.adi`) reads Adi et al.'s public set (``pics/*.jpg`` and
  ``labels-cifar.txt``); label ``i`` binds to the ``i``-th file name in lexicographic order
  (``1.jpg, 10.jpg, 100.jpg, 11.jpg, …``), as the original ImageFolder loaders did.
  The public set is no secret: an owner should generate their own.
* :func:`add_triggers` / :func:`triggers_from_key` (:mod:`.key`) derive the set from the
  owner's :class:`~hf_lottery_verify.OwnershipKey` (section ``triggers``, digest-checked).
* :func:`trigger_evidence` (:mod:`.evidence`) turns a suspect's answers (``-1`` where it gave
  none) into an exact binomial p-value over *all* trigger images, so unanswered queries can
  only lower the evidence; :func:`predict_labels` gets the answers of an in-memory model.
"""

from __future__ import annotations

from .adi import load_adi_trigger_set
from .evidence import DEFAULT_ALPHA, TriggerEvidence, predict_labels, trigger_evidence
from .key import REFERENCE_BATCH_SIZE, TRIGGERS_SECTION, add_triggers, triggers_from_key
from .procedural import make_trigger_set
from .sets import TriggerSet

__all__ = [
    "TRIGGERS_SECTION",
    "DEFAULT_ALPHA",
    "REFERENCE_BATCH_SIZE",
    "TriggerSet",
    "TriggerEvidence",
    "make_trigger_set",
    "load_adi_trigger_set",
    "add_triggers",
    "triggers_from_key",
    "trigger_evidence",
    "predict_labels",
]
