"""``hf-lottery demo``: the owner's whole job and a thief's attacks, end to end, on real data."""

from __future__ import annotations

import json
from argparse import Namespace

from ...configs import DemoConfig
from .. import command
from .._parsing import build, write
from ..args import OutputArgs


@command(
    "demo", help="find, sign, retrain, lock, push, verify and attack a ticket on Fashion-MNIST; write a report",
    description="Find a ticket by IMP on Fashion-MNIST (offline), sign it (V2 QR + V3 triggers), retrain it, "
                "lock a copy with a key mask (V1), push it to a local Hub the demo starts, verify it by repo id, "
                "run three attacks and verify again. Writes report.json, summary.md, the model card, the badge "
                "and PNG plots into --out. Exit status 0 when every verification says 'owned'. Re-running with "
                "the same --out resumes.",
    dataclass_types=[DemoConfig, OutputArgs])
def _demo(args: Namespace) -> int:
    from ...workflows.demo import run_demo

    report = run_demo(build(DemoConfig, args), log=None if args.json else write, progress=not args.json)
    if args.json:
        write(json.dumps(report, indent=2, default=str))
    return 0 if report["ok"] else 1
