"""``config.json`` read by an allow-list: the fields this library uses, each checked for type
and range; everything else is dropped.

A suspect's config is attacker-controlled and even an owner's folder may have been edited,
so nothing is passed through: ``model_args`` keeps only
:data:`~hf_lottery_verify.architectures.MODEL_ARGS`, and ``pretrained_cfg`` only its
``mean``, ``std`` and ``input_size`` (never a ``file``, ``url``, ``hf_hub_id`` or
``checkpoint_path`` that timm would fetch or load).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..architectures import check_model_args, is_arch_name
from ..errors import CheckpointError, CorruptCheckpointError
from .fileformat import CONFIG_NAME
from .files import read_json

__all__ = ["read_config", "clean_config", "CONFIG_FIELDS", "MAX_LABELS", "MAX_CHANNELS", "MAX_IMAGE_SIDE"]

MAX_LABELS = 100_000
MAX_CHANNELS = 64
MAX_IMAGE_SIDE = 1024


def _rule(test: Callable[[Any], bool], what: str) -> Callable[[Any], Any]:
    """A check that returns the value when ``test`` accepts it and otherwise says what it must be."""

    def check(value: Any) -> Any:
        if not test(value):
            raise ValueError(f"must be {what}")
        return value

    return check


def _int(lo: int, hi: int) -> Callable[[Any], Any]:
    return _rule(lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool) and lo <= v <= hi,
                 f"an integer from {lo} to {hi}")


def _number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _numbers(*, positive: bool) -> Callable[[Any], Any]:
    return _rule(lambda v: isinstance(v, (list, tuple)) and 1 <= len(v) <= MAX_CHANNELS and all(
        _number(x) and (x > 0 or not positive) for x in v),
        f"a list of 1 to {MAX_CHANNELS} finite numbers{' above 0' if positive else ''}")


def _model_args(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("must be an object")
    return check_model_args(value)  # a ConfigError (a ValueError) says which argument is refused


def _pretrained_cfg(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("must be an object")
    return {k: check(value[k]) for k, check in _PRETRAINED.items() if value.get(k) is not None}


_ARCH = _rule(is_arch_name, "a timm model name such as 'resnet18'")
_PRETRAINED = {"mean": _numbers(positive=False), "std": _numbers(positive=True), "input_size": _rule(
    lambda v: isinstance(v, list) and len(v) == 3 and type(v[0]) is int and 1 <= v[0] <= MAX_CHANNELS and all(
        type(x) is int and 1 <= x <= MAX_IMAGE_SIDE for x in v[1:]),
    f"[channels, height, width] with at most {MAX_CHANNELS} channels and sides of at most {MAX_IMAGE_SIDE}")}
CONFIG_FIELDS: dict[str, Callable[[Any], Any]] = {
    "model_type": _rule(lambda v: isinstance(v, str), "a string"), "arch": _ARCH, "architecture": _ARCH,
    "id2label": _rule(lambda v: isinstance(v, dict) and len(v) <= MAX_LABELS and all(
        k.isascii() and k.isdigit() and int(k) < MAX_LABELS and isinstance(x, str) for k, x in v.items()),
        "an object of class indices to label strings"),
    "label2id": _rule(lambda v: isinstance(v, dict) and len(v) <= MAX_LABELS and all(
        type(x) is int and 0 <= x < MAX_LABELS for x in v.values()), "an object of labels to class indices"),
    "label_names": _rule(lambda v: isinstance(v, list) and len(v) <= MAX_LABELS and all(
        isinstance(x, str) for x in v), f"a list of at most {MAX_LABELS:,} strings"),
    "in_chans": _int(1, MAX_CHANNELS), "image_size": _int(1, MAX_IMAGE_SIDE),
    "image_mean": _numbers(positive=False), "image_std": _numbers(positive=True),
    "density": _rule(lambda v: _number(v) and 0 <= v <= 1, "a number from 0 to 1"),
    "schema_version": _int(0, 10**6), "model_args": _model_args, "pretrained_cfg": _pretrained_cfg,
}
"""The fields read from ``config.json``, each with its check (which returns the clean value
or raises ``ValueError`` saying what the field must be)."""


def clean_config(raw: Any, *, where: str, notes: list[str] | None = None) -> dict[str, Any]:
    """The fields of :data:`CONFIG_FIELDS` in a parsed ``config.json``, checked; others are dropped.

    Args:
        raw: The parsed JSON.
        where (`str`): The file, for messages.
        notes (`list[str]`, *optional*): For untrusted configs (hints only): a bad field is
            then dropped with a note appended here instead of raising.

    Returns:
        The clean fields (``null`` ones left out).

    Raises:
        CorruptCheckpointError: (without ``notes``) ``raw`` is not an object or a field is
            of the wrong type or out of range.
    """
    if not isinstance(raw, dict):
        raise CorruptCheckpointError(f"{where} is not a JSON object.", path=where)
    out = {}
    for name, check in CONFIG_FIELDS.items():
        if raw.get(name) is None:
            continue
        try:
            out[name] = check(raw[name])
        except ValueError as exc:
            message = f"{where}: '{name}' is refused: {exc}"
            if notes is None:
                raise CorruptCheckpointError(f"{message}; fix or remove the field.", path=where) from None
            notes.append(f"{message}; ignored the field")
    return out


def read_config(folder: str | os.PathLike, *, notes: list[str] | None = None) -> dict[str, Any] | None:
    """The folder's ``config.json``, clean (see :func:`clean_config`), or ``None`` when there is none.

    Args:
        folder (`str` or `os.PathLike`): The model folder.
        notes (`list[str]`, *optional*): For untrusted folders: an unreadable config is
            ignored (``None``) and a bad field dropped, each with a note here, instead of raising.

    Raises:
        CheckpointError: (without ``notes``) The file is not a regular file, too large, not
            a JSON object, or has a bad field.
    """
    path = Path(folder) / CONFIG_NAME
    if not os.path.lexists(path):
        return None
    try:
        return clean_config(read_json(path), where=str(path), notes=notes)
    except CheckpointError as exc:
        if notes is None:
            raise
        notes.append(f"{CONFIG_NAME} ignored: {exc}")
        return None
