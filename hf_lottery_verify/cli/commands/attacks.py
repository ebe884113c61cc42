"""Testing the evidence: ``attack`` (a registered attack on a model folder) and ``calibrate`` (null models)."""

from __future__ import annotations

import json
from argparse import Namespace
from typing import Any

from .. import command
from .._parsing import emit, write
from ..args import AttackArgs, CalibrateArgs, DataArgs, OutputArgs, OverwriteArgs


def _parse_params(pairs: list[str]) -> dict[str, Any]:
    """``["fraction=0.2", "method=random"]`` → ``{"fraction": 0.2, "method": "random"}`` (JSON values)."""
    from ...errors import ConfigError

    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ConfigError(f"--param takes key=value pairs, got {pair!r}.")
        try:
            params[name.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            params[name.replace("-", "_")] = value
    return params


@command(
    "attack", help="run a registered removal, structural or forgery attack on a model folder",
    description="Load the model (masks from its weights, as a thief would), run the attack and save the result. "
                "NAME 'list' prints the registered attacks with their parameters.",
    dataclass_types=[AttackArgs, DataArgs, OverwriteArgs, OutputArgs],
    arguments=[("name", dict(help="attack name (or 'list')")),
               ("model_dir", dict(nargs="?", default=None, help="the model folder to attack"))])
def _attack(args: Namespace) -> int:
    from ...attacks import attack_folder, attack_table
    from ...errors import ConfigError

    if args.name == "list":
        table = attack_table()
        emit(args, table, lambda: "\n".join(f"{row['name']:16s} {row.get('kind', ''):10s} {row.get('description', '')}"
                                            for row in table))
        return 0
    if args.model_dir is None or args.out is None:
        raise ConfigError("attack needs MODEL_DIR and --out OUT_DIR (or NAME 'list').")
    report = attack_folder(args.name, args.model_dir, args.out, params=_parse_params(args.param),
                           dataset=args.dataset if args.dataset else None, data_dir=args.data_dir, seed=args.seed)
    emit(args, report, lambda: f"{args.name} attack on {args.model_dir} saved to {args.out}")
    return 0


@command(
    "calibrate", help="false-claim rate of a key: verify it against null models of its architecture",
    description="Run verification with the key against N independently initialised, pruned, trained and "
                "other owners' signed models, and report how often it would wrongly say 'owned' (with an exact "
                "95% upper bound) and the p-value distributions.",
    dataclass_types=[CalibrateArgs, DataArgs, OutputArgs])
def _calibrate(args: Namespace) -> int:
    from ...calibration import calibrate_key_file

    needs_data = "trained" in args.kinds
    report = calibrate_key_file(args.key, n=args.n, kinds=args.kinds, dataset=args.dataset if needs_data else None,
                                data_dir=args.data_dir, seed=args.seed,
                                progress=None if args.json else (lambda line: write(line)))
    emit(args, report, lambda: (
        f"false 'owned': {report.get('false_owned')} of {report.get('n')} null models "
        f"(one-sided 95% upper bound on the rate: {report.get('upper_95')})"))
    return 0 if not report.get("false_owned") else 1
