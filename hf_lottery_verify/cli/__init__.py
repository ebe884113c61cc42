"""The ``hf-lottery`` command line.

Commands (each with ``--help``; ``--json`` prints JSON and nothing else on stdout):

===============  ====================================================================
``demo``         the whole workflow on real Fashion-MNIST, with a report folder
``find-ticket``  IMP with late rewinding (resumable; works under ``accelerate launch``)
``split-key``    Scheme V1: private key mask and public locked ticket
``sign``         Scheme V2: keyed QR signature in the mask
``triggers``     Scheme V3: a secret trigger set in the key
``retrain``      retrain a signed ticket from its rewind weights (with triggers)
``extract``      read a suspect's signature with the key
``push``         publish to the Hub with a model card and an ownership badge; anchors the key
``anchor``       date a key's commitment in a Hub commit (models published elsewhere)
``verify``       verify a Hub repo, folder, file or endpoint against the key
``dispute``      several claimants' keys against one suspect: who anchored first
``serve``        serve a model on loopback in the Inference API shape
``attack``       run a registered attack on a model folder
``calibrate``    false-claim rate of a key over null models
``hub serve``    a local Hub on 127.0.0.1 for trying the Hub workflow offline
===============  ====================================================================

Flags come from dataclasses (:mod:`hf_lottery_verify.configs`, :mod:`.args`) through
``transformers.HfArgumentParser``. Parsing imports neither torch nor timm, so ``--help``
answers at once; each command imports what it needs. Exit status: 0 success (for
``verify``: owned), 1 a negative result (``verify``: not owned; ``extract``: no match),
3 inconclusive, 2 an error — always one line on stderr, never a traceback (``-v`` adds it).
Only a command's decision returns 1: anything that goes wrong on the way, an unexpected
exception (``RecursionError`` and ``MemoryError`` included) too, exits 2, so a crash never
reads as a verdict.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .. import _registration
from .._version import __version__

if TYPE_CHECKING:
    from ._parsing import Parser

__all__ = ["main", "build_parser", "COMMANDS", "flat", "build"]


def __getattr__(name: str) -> Any:
    """``flat`` and ``build`` (flags from the config dataclasses; used by ``examples/``), imported on first use."""
    if name in ("flat", "build"):
        from . import _parsing

        return getattr(_parsing, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


COMMANDS: dict[str, Callable[[Any], None]] = {}
"""Command name → function adding its sub-parser (filled by the command modules)."""
ORDER = ("demo", "find-ticket", "split-key", "sign", "triggers", "retrain", "extract", "push", "anchor", "verify",
         "dispute", "serve", "attack", "calibrate", "hub")
"""The order of ``--help``: the workflow's."""


def command(name: str, *, arguments: Sequence[tuple[str, dict[str, Any]]] = (),
            **parser_kwargs: Any) -> Callable[[Callable[[Any], int]], Callable[[Any], int]]:
    """Register the decorated function as the handler of command ``name``.

    Args:
        name (`str`): The command's name.
        arguments (`Sequence[tuple[str, dict]]`, *optional*): ``(name or flag, add_argument keywords)`` of the
            arguments not declared by a dataclass (positional ones).
        **parser_kwargs: The sub-parser's ``help``, ``description`` and ``dataclass_types``.
    """

    def deco(handler: Callable[[Any], int]) -> Callable[[Any], int]:
        def add_parser(sub: Any) -> None:
            p = sub.add_parser(name, **parser_kwargs)
            for flag, kwargs in arguments:
                p.add_argument(flag, **kwargs)
            p.set_defaults(handler=handler)

        COMMANDS[name] = add_parser
        return handler

    return deco


def build_parser() -> Parser:
    """The ``hf-lottery`` parser with every registered command."""
    from . import commands  # noqa: F401  (registers the commands)
    from ._parsing import Parser  # imports transformers (HfArgumentParser)

    parser = Parser(prog="hf-lottery",
                    description="Find, sign, publish and verify sparse winning tickets (Chen et al., NeurIPS 2021).")
    parser.add_argument("--version", action="version", version=f"hf-lottery {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in sorted(COMMANDS, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER)):
        COMMANDS[name](sub)
    return parser


def _demo_uses_local_hub(words: Sequence[str]) -> bool:
    """Whether ``words`` run ``demo`` with its local Hub (``--hub local``, the default), read before parsing."""
    command = next((w for w in words if not w.startswith("-")), None)
    if command != "demo":
        return False
    hub = "local"
    for i, w in enumerate(words):
        if w == "--hub" and i + 1 < len(words):
            hub = words[i + 1]
        elif w.startswith("--hub="):
            hub = w.split("=", 1)[1]
    return hub == "local"


def _check_inputs(args: Any) -> None:
    """What a command reads must exist and its ``--out`` must be free: checked before torch and transformers
    are imported, so that a user error answers at once."""
    import os

    from ..errors import CheckpointNotFoundError, KeyFileNotFoundError
    from .args import check_out_folder

    for name in ("model_dir", "rewind", "model", "target"):
        path = getattr(args, name, None)
        local = name in ("model_dir", "rewind") or str(path).startswith(("/", ".", "~"))  # no repo id starts so
        if isinstance(path, str) and local and not os.path.lexists(os.path.expanduser(path)):
            raise CheckpointNotFoundError(f"No such file or folder: {path}. Check the path.", path=path)
    keys = None if args.command == "triggers" else getattr(args, "key", None)  # triggers creates its key
    for key in [keys] if isinstance(keys, str) else keys or []:
        if not os.path.lexists(os.path.expanduser(key)):
            raise KeyFileNotFoundError(f"No ownership key at {key}. Pass the JSON key file written when the model "
                                       "was signed (--key-out); keys are never published with a model.", path=key)
    if getattr(args, "overwrite", None) is not None and getattr(args, "out", None):
        check_out_folder(args.out, getattr(args, "model_dir", None), getattr(args, "rewind", None),
                         overwrite=args.overwrite)


def _fail(args: Any, message: str) -> int:
    name = getattr(args, "command", None)
    line = " ".join(message.split())[:500]  # one line, whatever the message holds (it may quote hostile input)
    if getattr(args, "verbose", 0):
        import traceback

        traceback.print_exc()
    sys.stderr.write(f"hf-lottery{' ' + name if name else ''}: error: {line}\n")
    from ._parsing import EXIT_USAGE

    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hf-lottery``.

    Args:
        argv (`Sequence[str]`, *optional*): Arguments without the program name
            (``sys.argv[1:]`` when ``None``).

    Returns:
        The exit status.
    """
    _registration.suspend_hooks()  # parsing imports transformers for HfArgumentParser only
    words = list(sys.argv[1:] if argv is None else argv)
    if _demo_uses_local_hub(words) and "huggingface_hub" not in sys.modules:
        # the demo's local Hub: huggingface_hub reads HF_ENDPOINT once, when transformers imports it below
        from ..localhub.environment import configure_hub_environment

        configure_hub_environment()
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("huggingface_hub", "httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(max(level, logging.ERROR))
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    from ..errors import HfLotteryError

    try:
        _check_inputs(args)
        _registration.register()
        return int(args.handler(args))
    except HfLotteryError as exc:
        return _fail(args, str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
        return _fail(args, f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
    except KeyboardInterrupt:
        sys.stderr.write(f"hf-lottery {args.command}: interrupted (re-run the same command to resume where it "
                         "supports resuming)\n")
        return 130
    except Exception as exc:  # a bug or an unforeseen input: an error (2), never a verdict
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return _fail(args, f"unexpected {type(exc).__name__}{': ' + first if first else ''} (run with -v for "
                           "the traceback and report it)")


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
