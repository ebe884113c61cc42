"""The trigger set of an :class:`~hf_lottery_verify.OwnershipKey`: derived from its secret, never chosen.

A key records only the *size* of its trigger set (:class:`~hf_lottery_verify.key_sections.TriggerSection`).
Every label is derived from the key's secret, and so are procedural images; loaded images
(e.g. Adi et al.'s) are kept in the key's tensors, which its commitment covers. So nobody
can label images with a model's own predictions and call that a trigger set (the chosen-label
forgery), and a claimant who grinds secrets gets fresh random labels with every try.
"""

from __future__ import annotations

import hashlib

import torch

from ..errors import ConfigError, KeyFileError
from ..key_sections import TriggerSection
from ..ownership_key import TRIGGERS_SECTION, OwnershipKey
from .procedural import make_trigger_set
from .sets import TriggerSet

__all__ = ["REFERENCE_BATCH_SIZE", "TRIGGERS_SECTION", "add_triggers", "triggers_from_key"]

REFERENCE_BATCH_SIZE = 128
"""The reference code mixes one trigger image into each batch of (about) 128 training images."""


def _seed(key: OwnershipKey, label: str) -> int:
    return int.from_bytes(key.derive(label)[:8], "big") >> 1


def _images_digest(images: torch.Tensor) -> str:
    h = hashlib.sha256(str(tuple(images.shape)).encode())
    h.update(images.contiguous().numpy().tobytes())
    return h.hexdigest()


def add_triggers(
    key: OwnershipKey,
    *,
    num_classes: int,
    n: int = 100,
    image_size: int = 32,
    channels: int = 3,
    images: TriggerSet | torch.Tensor | None = None,
    per_batch: int = 1,
) -> OwnershipKey:
    """A copy of ``key`` with a trigger set (Scheme V3) derived from its secret.

    Args:
        key (`OwnershipKey`): The owner's key (without a trigger set).
        num_classes (`int`): Classes of the model; labels are drawn uniformly from them.
        n (`int`, *optional*, defaults to 100): Procedural trigger images (ignored with ``images``).
        image_size (`int`, *optional*, defaults to 32): Side of procedural images.
        channels (`int`, *optional*, defaults to 3): 1 or 3, for procedural images.
        images (`TriggerSet` or `torch.Tensor`, *optional*): Your own images instead (a
            ``uint8`` N×C×H×W tensor, or a loaded set such as
            :func:`~hf_lottery_verify.triggers.load_adi_trigger_set`'s, whose labels are
            replaced by labels derived from the secret).
        per_batch (`int`, *optional*, defaults to 1): Trigger images per
            :data:`REFERENCE_BATCH_SIZE` (128) training images during retraining.

    Returns:
        The new key; :func:`triggers_from_key` regenerates the set from it.

    Raises:
        ConfigError: An option is out of range (see :class:`TriggerSection`), or the images
            are not a uint8 batch of square images.
        KeyMismatchError: The key already holds a trigger set.
    """
    tensors = None
    if images is not None:
        pixels = images.images if isinstance(images, TriggerSet) else images
        if (not isinstance(pixels, torch.Tensor) or pixels.dtype != torch.uint8 or pixels.dim() != 4
                or pixels.shape[-1] != pixels.shape[-2]):
            raise ConfigError("images must be a uint8 N×C×H×W tensor of square images, or a TriggerSet.")
        n, channels, image_size = int(pixels.shape[0]), int(pixels.shape[1]), int(pixels.shape[-1])
        tensors = {"images": pixels.contiguous().cpu()}
    try:
        section = TriggerSection(n=n, num_classes=num_classes, image_size=image_size, channels=channels,
                                 source="images" if tensors else "procedural",
                                 images_digest=_images_digest(tensors["images"]) if tensors else None,
                                 per_batch=per_batch)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Cannot make this trigger set: {exc}.") from exc
    return key.with_section(TRIGGERS_SECTION, section.to_dict(), tensors)


def triggers_from_key(key: OwnershipKey) -> TriggerSet:
    """The key's trigger set, regenerated: procedural images and every label from the key's secret.

    Args:
        key (`OwnershipKey`): A key with a ``triggers`` section.

    Returns:
        The :class:`TriggerSet`; the same key gives the same bytes on every machine.

    Raises:
        KeyMismatchError: The key has no ``triggers`` section.
        KeyFileError: The section is malformed, or its loaded images are missing or altered.
    """
    section = key.triggers()
    if section.source == "procedural":
        made = make_trigger_set(section.n, num_classes=section.num_classes, image_size=section.image_size,
                                channels=section.channels, seed=_seed(key, "triggers/procedural"))
        return TriggerSet(made.images, made.labels, section.num_classes, "procedural")
    images = key.section_tensors(TRIGGERS_SECTION).get("images")
    if images is None or _images_digest(images) != section.images_digest or tuple(images.shape) != (
            section.n, section.channels, section.image_size, section.image_size):
        raise KeyFileError("The key's trigger images are missing or were altered (they no longer match the recorded "
                           "digest); restore the key's files from your backup.")
    gen = torch.Generator().manual_seed(_seed(key, "triggers/labels"))
    labels = torch.randint(0, section.num_classes, (section.n,), generator=gen)
    return TriggerSet(images, labels, section.num_classes, "images")
