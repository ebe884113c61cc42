"""``find-ticket`` (IMP with late rewinding) and ``split-key`` (Scheme V1)."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

from ...configs import IMPConfig, TrainConfig
from .. import command
from .._parsing import build, emit, flat
from ..args import DataArgs, FindTicketArgs, OutputArgs, OverwriteArgs, SplitKeyArgs


@command(
    "find-ticket", help="find an extreme ticket by IMP with late rewinding",
    description="Train a dense model, then prune by global magnitude and rewind until pruning 1% more no longer "
                "matches the dense accuracy. Re-running the same command resumes. Works under `accelerate "
                "launch`.",
    dataclass_types=[FindTicketArgs, DataArgs, flat(IMPConfig, exclude=("train",), group="search (IMPConfig)"),
                     flat(TrainConfig, group="training recipe of every round (TrainConfig)"), OutputArgs])
def _find_ticket(args: Namespace) -> int:
    from ...data import load_image_dataset
    from ...imp import find_extreme_ticket
    from ...training import make_accelerator

    train = build(TrainConfig, args)
    config = build(IMPConfig, args, train=train)
    accelerator = make_accelerator(train, cpu=args.cpu or None)
    data = load_image_dataset(args.dataset, data_dir=args.data_dir, seed=train.seed, train_limit=args.train_limit,
                              test_limit=args.test_limit)
    result = find_extreme_ticket(args.arch, data, out_dir=args.out, config=config, accelerator=accelerator,
                                 progress=not args.json)
    if not accelerator.is_main_process:
        return 0
    emit(args, result.to_dict(), lambda: (
        f"dense accuracy {result.dense_accuracy:.2f}%; extreme ticket: {result.ticket_density:.4%} of prunable "
        f"weights at {result.ticket_accuracy:.2f}% ({len(result.rounds) - 1} rounds, {result.seconds:.0f} s"
        f"{'' if result.finished else ', stopped by --max-rounds'})\nticket: {result.ticket_dir}\n"
        f"rewind weights: {result.rewind_dir}\nround log: {Path(args.out) / 'rounds.json'}"))
    return 0


@command(
    "split-key", help="Scheme V1: split a ticket's mask into a private key and a public locked mask",
    description="Score the kept weights, move the top --ratio of them into a private key and write a public folder "
                "with the locked ticket (key weights removed). load_with_key() restores the ticket.",
    dataclass_types=[SplitKeyArgs, OverwriteArgs, OutputArgs],
    arguments=[("model_dir", dict(help="a saved sparse model folder"))])
def _split_key(args: Namespace) -> int:
    from ...errors import ConfigError
    from ...workflows import split_key_folder

    options = {k: v for k, v in (("sources", args.sources), ("weights", args.weights)) if v is not None}
    if options and args.score != "betweenness":
        raise ConfigError("--sources and --weights apply to --score betweenness only.")
    report = split_key_folder(args.model_dir, ratio=args.ratio, score=args.score, seed=args.seed,
                              key_out=args.key_out, out_dir=args.out, compact=args.compact, **options)
    emit(args, report, lambda: (
        f"locked ticket: {report['out_dir']} ({report['density_locked']:.4%} density, {report['n']} key weights "
        f"removed; restored bit-exactly with the key: {report['verified']})\nprivate key: {report['key_out']} "
        "(keep it; never upload it)"))
    return 0
