"""Keeping the trigger set in the owner's :class:`~hf_lottery_verify.OwnershipKey` (section ``triggers``, digest-checked)."""

from __future__ import annotations

from ..errors import DatasetError, KeyFileError
from ..ownership_key import TRIGGERS_SECTION, OwnershipKey
from ..stats import binomial_threshold
from .evidence import DEFAULT_ALPHA
from .sets import TriggerSet

__all__ = ["REFERENCE_BATCH_SIZE", "TRIGGERS_SECTION", "add_triggers_to_key", "triggers_from_key"]

REFERENCE_BATCH_SIZE = 128
"""The reference code mixes one trigger image into each batch of (about) 128 training images."""

_FORMAT = 1


def add_triggers_to_key(
    key: OwnershipKey,
    triggers: TriggerSet,
    *,
    per_batch: int = 1,
    alpha: float = DEFAULT_ALPHA,
) -> None:
    """Store the trigger set in the key's ``triggers`` section (images and labels as tensors).

    Args:
        key (`OwnershipKey`): The owner's key; its ``triggers`` section is replaced.
        triggers (`TriggerSet`): The set to keep.
        per_batch (`int`, *optional*, defaults to 1): Trigger images per
            :data:`REFERENCE_BATCH_SIZE` (128) training images during retraining; retraining
            with batch size ``B`` mixes ``max(1, round(per_batch * B / 128))`` into each batch.
        alpha (`float`, *optional*, defaults to 1e-6): Significance level of the trigger test;
            the section also records the matches it needs (``threshold``).

    Raises:
        ValueError: ``per_batch < 1`` or ``alpha`` outside ``(0, 1]``.
    """
    if per_batch < 1:
        raise ValueError(f"per_batch must be 1 or more, got {per_batch}.")
    n = len(triggers)
    section = {
        "scheme": "V3",
        "format": _FORMAT,
        "n": n,
        "num_classes": triggers.num_classes,
        "image_size": triggers.image_size,
        "channels": triggers.channels,
        "source": triggers.source,
        "seed": triggers.seed,
        "digest": triggers.digest(),
        "per_batch": int(per_batch),
        "reference_batch_size": REFERENCE_BATCH_SIZE,
        "alpha": float(alpha),
        "threshold": binomial_threshold(n, 1.0 / triggers.num_classes, alpha),
    }
    key.set_section(TRIGGERS_SECTION, section, {"images": triggers.images, "labels": triggers.labels})


def triggers_from_key(key: OwnershipKey) -> TriggerSet:
    """The trigger set kept in a key, checked against its digest.

    Args:
        key (`OwnershipKey`): A key with a ``triggers`` section.

    Returns:
        The :class:`TriggerSet`, bit-identical to the one stored.

    Raises:
        KeyMismatchError: The key has no ``triggers`` section.
        KeyFileError: The section's tensors are missing, malformed or altered (digest mismatch).
    """
    section = key.section(TRIGGERS_SECTION)
    tensors = key.section_tensors(TRIGGERS_SECTION)
    missing = [name for name in ("images", "labels") if name not in tensors]
    if missing:
        raise KeyFileError(f"The key's triggers section lacks its tensors {missing}; the key's tensor file is "
                           "incomplete. Use the key file written together with its .tensors.safetensors file.")
    try:
        triggers = TriggerSet(tensors["images"], tensors["labels"], int(section["num_classes"]),
                              str(section.get("source", "procedural")), section.get("seed"))
    except (DatasetError, KeyError, TypeError, ValueError) as exc:
        raise KeyFileError(f"The key's trigger set is malformed: {exc}") from exc
    digest = triggers.digest()
    if digest != section.get("digest") or len(triggers) != section.get("n"):
        raise KeyFileError("The key's trigger set was altered: its images/labels no longer match the recorded "
                           f"digest ({digest[:12]}… vs {str(section.get('digest'))[:12]}…).")
    return triggers
