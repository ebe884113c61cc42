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


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(what)


def _int_in(lo: int, hi: int) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        _need(isinstance(v, numbers.Integral) and not isinstance(v, bool) and lo <= v <= hi,
              f"must be an integer from {lo} to {hi}")
        return int(v)

    return check


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _numbers(*, positive: bool) -> Callable[[Any], list[float]]:
    def check(v: Any) -> list[float]:
        _need(isinstance(v, (list, tuple)) and 1 <= len(v) <= MAX_CHANNELS
              and all(_is_number(x) and (x > 0 or not positive) for x in v),
              f"must be a list of 1 to {MAX_CHANNELS} finite numbers{' above 0' if positive else ''}")
        return [float(x) for x in v]

    return check


def _text(v: Any) -> str:
    _need(isinstance(v, str) and len(v) <= 1000, "must be a string of at most 1000 characters")
    return v


def _arch(v: Any) -> str:
    _need(is_arch_name(v), "must be a timm model name such as 'resnet18'")
    return v


def _density(v: Any) -> float:
    _need(_is_number(v) and 0 <= v <= 1, "must be a number from 0 to 1")
    return float(v)


def _label_names(v: Any) -> list[str]:
    _need(isinstance(v, list) and len(v) <= MAX_LABELS and all(isinstance(x, str) for x in v),
          f"must be a list of at most {MAX_LABELS:,} strings")
    return v


def _id2label(v: Any) -> dict[str, str]:
    _need(isinstance(v, dict) and len(v) <= MAX_LABELS and all(
        k.isascii() and k.isdigit() and int(k) < MAX_LABELS and isinstance(x, str) for k, x in v.items()),
        "must be an object of class indices to label strings")
    return v


def _label2id(v: Any) -> dict[str, int]:
    _need(isinstance(v, dict) and len(v) <= MAX_LABELS and all(
        type(x) is int and 0 <= x < MAX_LABELS for x in v.values()), "must be an object of labels to class indices")
    return v


def _model_args(v: Any) -> dict[str, Any]:
    _need(isinstance(v, dict), "must be an object")
    return check_model_args(v)  # ConfigError (a ValueError) names what is refused


def _input_size(v: Any) -> list[int]:
    _need(isinstance(v, list) and len(v) == 3 and type(v[0]) is int and 1 <= v[0] <= MAX_CHANNELS
          and all(type(x) is int and 1 <= x <= MAX_IMAGE_SIDE for x in v[1:]),
          f"must be [channels, height, width] with at most {MAX_CHANNELS} channels and sides of at most {MAX_IMAGE_SIDE}")
    return v


_PRETRAINED = {"mean": _numbers(positive=False), "std": _numbers(positive=True), "input_size": _input_size}


def _pretrained_cfg(v: Any) -> dict[str, Any]:
    _need(isinstance(v, dict), "must be an object")
    return {k: check(v[k]) for k, check in _PRETRAINED.items() if v.get(k) is not None}


CONFIG_FIELDS: dict[str, Callable[[Any], Any]] = {
    "model_type": _text, "arch": _arch, "architecture": _arch,
    "num_labels": _int_in(1, MAX_LABELS), "num_classes": _int_in(0, MAX_LABELS),
    "id2label": _id2label, "label2id": _label2id, "label_names": _label_names,
    "in_chans": _int_in(1, MAX_CHANNELS), "image_size": _int_in(1, MAX_IMAGE_SIDE),
    "image_mean": _numbers(positive=False), "image_std": _numbers(positive=True),
    "density": _density, "schema_version": _int_in(0, 10**6), "model_args": _model_args,
    "pretrained_cfg": _pretrained_cfg,
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
