"""``hf-lottery demo``: the whole workflow, end to end."""

from __future__ import annotations

import json
from argparse import Namespace
from dataclasses import dataclass, field
from typing import Any

from .. import command
from .._parsing import write
from ..args import OutputArgs


@dataclass
class DemoArgs:
    """Options of the demo walkthrough."""

    _argument_group_name = "demo"
    arch: str = field(default="cifar_resnet20", metadata={"help": "timm architecture"})
    density: float = field(default=0.05, metadata={"help": "kept fraction of prunable weights"})
    out: str | None = field(default=None, metadata={"help": "keep the saved folders here (default: a temporary one)"})
    seed: int = field(default=0, metadata={"help": "initialisation seed"})
    find_ticket: bool = field(default=False, metadata={"help": "find the ticket by a short IMP run on Fashion-MNIST"})


@command("demo")
def _demo_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="walk through the library and write what it did",
                       description="Build or find a ticket, sign it, verify it, lock it with a key mask.",
                       dataclass_types=[DemoArgs, OutputArgs])
    p.set_defaults(handler=_demo)


def _demo(args: Namespace) -> int:
    from ...demo import run_demo

    report = run_demo(out_dir=args.out, arch=args.arch, density=args.density, seed=args.seed,
                      find_ticket=args.find_ticket, log=None if args.json else write)
    if args.json:
        write(json.dumps(report, indent=2, default=str))
    ok = (all(v.get("reloaded_bit_exact", True) for v in report.values() if isinstance(v, dict))
          and report["reloaded_outputs_identical"] and report["signature"]["decoded"] is not None
          and report["keymask"]["restored_bit_exact"])
    return 0 if ok else 1
