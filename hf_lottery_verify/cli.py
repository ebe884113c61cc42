"""The ``hf-lottery`` command line.

Every subcommand has ``--help``; commands that report results print readable text, or
JSON with ``--json``. Subcommands are registered in :data:`COMMANDS` (name → builder),
so each one's flags sit next to its handler.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["main", "build_parser", "COMMANDS"]

Handler = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {}


def _command(name: str) -> Callable[[Callable[[argparse._SubParsersAction], None]], Callable]:
    def deco(builder: Callable[[argparse._SubParsersAction], None]) -> Callable:
        COMMANDS[name] = builder
        return builder

    return deco


def _emit(args: argparse.Namespace, report: dict[str, Any]) -> None:
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(report, indent=2, default=str) + "\n")


def _say(args: argparse.Namespace) -> Callable[[str], None]:
    if getattr(args, "json", False):
        return lambda line: logging.getLogger("hf_lottery_verify.cli").info(line)
    return lambda line: sys.stdout.write(line + "\n")


# --------------------------------------------------------------------------- demo


@_command("demo")
def _demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="walk through the library on a small model and print what it did",
                       description="Build a CIFAR ResNet, prune it, save it (dense and compact layouts), "
                                   "reload it and check the round trip is bit-exact.")
    p.add_argument("--arch", default="cifar_resnet20", help="timm architecture (default: %(default)s)")
    p.add_argument("--density", type=float, default=0.05, help="kept fraction of prunable weights (default: %(default)s)")
    p.add_argument("--out", default=None, help="keep the saved folders here (default: a temporary folder)")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    report = run_demo(out_dir=args.out, arch=args.arch, density=args.density, seed=args.seed, log=_say(args))
    _emit(args, report)
    ok = all(v.get("reloaded_bit_exact", True) for v in report.values() if isinstance(v, dict))
    return 0 if ok and report.get("reloaded_outputs_identical", True) else 1


# --------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    """The ``hf-lottery`` argument parser with every registered subcommand."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="hf-lottery",
        description="Find, sign, publish and verify sparse winning tickets (Chen et al., NeurIPS 2021).",
    )
    parser.add_argument("--version", action="version", version=f"hf-lottery {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for builder in COMMANDS.values():
        builder(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hf-lottery``.

    Args:
        argv: Arguments without the program name (``sys.argv[1:]`` when ``None``).

    Returns:
        The process exit status.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    from .errors import HfLotteryError

    try:
        return args.handler(args)
    except HfLotteryError as exc:
        sys.stderr.write(f"hf-lottery {args.command}: error: {exc}\n")
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
