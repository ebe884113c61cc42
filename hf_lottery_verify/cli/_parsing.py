"""Argument parsing of ``hf-lottery``: flags built from dataclasses by ``transformers.HfArgumentParser``.

Every flag of every command is a typed dataclass field with its help text beside it (the
run configurations in :mod:`hf_lottery_verify.configs`, the per-command arguments in
:mod:`hf_lottery_verify.cli.args`); nothing is declared twice and nothing is read out of
docstrings. User errors print one line and exit with status 2.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from argparse import Namespace
from collections.abc import Callable
from typing import Any, NoReturn

from transformers import HfArgumentParser

__all__ = ["Parser", "flat", "build", "write", "emit", "EXIT_USAGE"]

EXIT_USAGE = 2


class Parser(HfArgumentParser):
    """``HfArgumentParser`` whose errors are one line (``hf-lottery CMD: error: ...``) and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def flat(cls: type, *, exclude: tuple[str, ...] = (), group: str | None = None) -> type:
    """A dataclass with ``cls``'s fields minus ``exclude`` (e.g. ``IMPConfig`` without its nested ``train``).

    Args:
        cls (`type`): A dataclass.
        exclude (`tuple[str, ...]`, *optional*): Field names to leave out.
        group (`str`, *optional*): The help section the fields appear under.

    Returns:
        A new dataclass type with the same field declarations (types, defaults, help).
    """
    import typing

    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        kwargs: dict[str, Any] = {"metadata": f.metadata}
        if f.default is not dataclasses.MISSING:
            kwargs["default"] = f.default
        if f.default_factory is not dataclasses.MISSING:
            kwargs["default_factory"] = f.default_factory
        specs.append((f.name, hints[f.name], dataclasses.field(**kwargs)))
    new = dataclasses.make_dataclass(f"{cls.__name__}Flags", specs)
    new._argument_group_name = group or cls.__name__
    return new


def build(cls: type, args: Namespace, **overrides: Any) -> Any:
    """Instantiate dataclass ``cls`` from the parsed flags of its fields (plus ``overrides``)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.init and hasattr(args, f.name)}
    values.update(overrides)
    return cls(**values)


def write(text: str) -> None:
    """Write one block of output to stdout (a newline is added)."""
    sys.stdout.write(text.rstrip("\n") + "\n")


def emit(args: Namespace, data: Any, text: Callable[[], str]) -> None:
    """Print ``data`` as JSON under ``--json``, else the human-readable ``text()`` (built only then)."""
    write(json.dumps(data, indent=2, default=str) if args.json else text())
