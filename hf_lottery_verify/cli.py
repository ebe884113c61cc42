"""The ``hf-lottery`` command line.

Every subcommand has ``--help``; commands that report results print readable text, or
JSON with ``--json``. Subcommands are registered in :data:`COMMANDS` (name → builder),
so each one's flags sit next to its handler.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
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


def _field_help(cls: type) -> dict[str, str]:
    """Help text per field, read from the ``Attributes:`` section of a dataclass docstring."""
    doc = cls.__doc__ or ""
    out: dict[str, str] = {}
    section = doc.split("Attributes:", 1)[1] if "Attributes:" in doc else ""
    for m in re.finditer(r"^\s{8}(\w+(?:, \w+)*): (.+?)(?=^\s{8}\w+(?:, \w+)*: |\Z)", section, re.S | re.M):
        text = " ".join(m.group(2).split()).replace("%", "%%")
        for name in m.group(1).split(", "):
            out[name] = text
    return out


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, *, exclude: Sequence[str] = (),
                       prefix: str = "") -> None:
    """Add one ``--flag`` per field of a dataclass (the CLI and the config cannot drift).

    Bools become ``--x/--no-x``; tuples take comma-separated values; defaults come from
    the dataclass.
    """
    hints = typing.get_type_hints(cls)
    helps = _field_help(cls)
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        flag = "--" + prefix + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        hint = hints[f.name]
        text = helps.get(f.name, "").replace("``", "") + " (default: %(default)s)"
        origin = typing.get_origin(hint)
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if hint is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=text)
        elif origin is tuple:
            elem = args[0] if args else str
            parser.add_argument(flag, type=lambda v, elem=elem: tuple(elem(x) for x in v.split(",") if x),
                                default=default, help=text.replace(" (default: %(default)s)", " Comma-separated. (default: %(default)s)"))
        elif origin is typing.Literal:
            parser.add_argument(flag, choices=list(args), default=default, help=text)
        else:
            base = args[0] if args and origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) else hint
            if typing.get_origin(base) is typing.Literal:
                parser.add_argument(flag, choices=list(typing.get_args(base)), default=default, help=text)
            else:
                parser.add_argument(flag, type=base if base in (int, float, str) else str, default=default,
                                    help=text)


def dataclass_from_args(cls: type, args: argparse.Namespace, *, prefix: str = "", **overrides: Any) -> Any:
    """Build a dataclass from the flags :func:`add_dataclass_args` added."""
    values = {}
    for f in dataclasses.fields(cls):
        key = (prefix + f.name).replace("-", "_")
        if hasattr(args, key):
            values[f.name] = getattr(args, key)
    values.update(overrides)
    return cls(**values)


# --------------------------------------------------------------------------- demo


@_command("demo")
def _demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="walk through the library on a small model and print what it did",
                       description="Build a CIFAR ResNet and prune it (or --find-ticket: a short IMP search on "
                                   "Fashion-MNIST), save and reload it bit-exactly in both layouts, sign it with a "
                                   "QR code and extract it (also after a pruning attack), then split a key mask "
                                   "off it and restore it with the key.")
    p.add_argument("--arch", default="cifar_resnet20", help="timm architecture (default: %(default)s)")
    p.add_argument("--density", type=float, default=0.05, help="kept fraction of prunable weights (default: %(default)s)")
    p.add_argument("--out", default=None, help="keep the saved folders here (default: a temporary folder)")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed (default: %(default)s)")
    p.add_argument("--find-ticket", action="store_true",
                   help="find the ticket by a short IMP run on Fashion-MNIST (a few CPU minutes)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    report = run_demo(out_dir=args.out, arch=args.arch, density=args.density, seed=args.seed,
                      find_ticket=args.find_ticket, log=_say(args))
    _emit(args, report)
    ok = (all(v.get("reloaded_bit_exact", True) for v in report.values() if isinstance(v, dict))
          and report["reloaded_outputs_identical"] and report["signature"]["decoded"] is not None
          and report["keymask"]["restored_bit_exact"])
    return 0 if ok else 1


# --------------------------------------------------------------------------- find-ticket


@_command("find-ticket")
def _find_ticket_parser(sub: argparse._SubParsersAction) -> None:
    from .imp import IMPConfig
    from .training import TrainConfig

    p = sub.add_parser(
        "find-ticket", help="find an extreme ticket by IMP with late rewinding",
        description="Train a dense model, then prune by global magnitude and rewind until pruning 1% more "
                    "no longer matches the dense accuracy. Re-running the same command resumes. "
                    "Works under `accelerate launch`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", default="cifar_resnet20", help="timm architecture")
    p.add_argument("--dataset", default="fashion_mnist",
                   help="cifar10, cifar100, fashion_mnist, synthetic or imagefolder:<path>")
    p.add_argument("--data-dir", default=None, help="dataset files or cache folder")
    p.add_argument("--train-limit", type=int, default=None, help="use at most this many training samples")
    p.add_argument("--test-limit", type=int, default=None, help="use at most this many test samples")
    p.add_argument("--out", required=True, help="output and resume folder")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is visible")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    group = p.add_argument_group("search (IMPConfig)")
    add_dataclass_args(group, IMPConfig, exclude=("train",))
    group = p.add_argument_group("training recipe of every round (TrainConfig)")
    add_dataclass_args(group, TrainConfig)
    p.set_defaults(handler=_find_ticket)


def _find_ticket(args: argparse.Namespace) -> int:
    from .data import load_image_dataset
    from .imp import IMPConfig, find_extreme_ticket
    from .training import TrainConfig, make_accelerator

    train = dataclass_from_args(TrainConfig, args)
    config = dataclass_from_args(IMPConfig, args, train=train)
    accelerator = make_accelerator(train, cpu=args.cpu or None)
    data = load_image_dataset(args.dataset, data_dir=args.data_dir, seed=train.seed, train_limit=args.train_limit,
                              test_limit=args.test_limit)
    result = find_extreme_ticket(args.arch, data, out_dir=args.out, config=config, accelerator=accelerator,
                                 progress=not args.json)
    report = result.to_dict()
    if accelerator.is_main_process:
        if args.json:
            _emit(args, report)
        else:
            sys.stdout.write(
                f"dense accuracy {result.dense_accuracy:.2f}%; extreme ticket: {result.ticket_density:.4%} of "
                f"prunable weights at {result.ticket_accuracy:.2f}% ({len(result.rounds) - 1} rounds, "
                f"{result.seconds:.0f} s{'' if result.finished else ', stopped by --max-rounds'})\n"
                f"ticket: {result.ticket_dir}\nrewind weights: {result.rewind_dir}\n"
                f"round log: {Path(args.out) / 'rounds.json'}\n")
    return 0


# --------------------------------------------------------------------------- split-key


@_command("split-key")
def _split_key_parser(sub: argparse._SubParsersAction) -> None:
    from .keymask import list_scorers

    p = sub.add_parser(
        "split-key", help="Scheme V1: split a ticket's mask into a private key and a public locked mask",
        description="Score the kept weights, move the top --ratio of them into a private key and write a public "
                    "folder with the locked ticket (key weights removed). load_with_key() restores the ticket.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model_dir", help="a saved sparse model folder")
    p.add_argument("--ratio", type=float, required=True, help="share of the kept weights that goes into the key")
    p.add_argument("--score", choices=list_scorers(), default="omp", help="scorer of Algorithm 1")
    p.add_argument("--seed", type=int, default=0, help="seed (random scorer, betweenness sampling)")
    p.add_argument("--sources", type=int, default=None,
                   help="betweenness only: sample this many source channels (exact when omitted)")
    p.add_argument("--weights", choices=["abs", "inverse", "none"], default=None,
                   help="betweenness only: edge lengths from sum|kernel| (paper), its inverse, or hop counts")
    p.add_argument("--key-out", required=True, help="where to write the private ownership key (JSON)")
    p.add_argument("--out", required=True, help="public folder for the locked ticket")
    p.add_argument("--compact", action="store_true", help="save the locked ticket in the compact layout")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=_split_key)


def _split_key(args: argparse.Namespace) -> int:
    from .keymask import split_key_folder

    options = {k: v for k, v in (("sources", args.sources), ("weights", args.weights)) if v is not None}
    if options and args.score != "betweenness":
        raise SystemExit("--sources and --weights apply to --score betweenness only")
    report = split_key_folder(args.model_dir, ratio=args.ratio, score=args.score, seed=args.seed,
                              key_out=args.key_out, out_dir=args.out, compact=args.compact, **options)
    if args.json:
        _emit(args, report)
    else:
        sys.stdout.write(json.dumps(report, indent=2, default=str) + "\n")
    return 0


# --------------------------------------------------------------------------- sign / extract


@_command("sign")
def _sign_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sign", help="Scheme V2: embed a QR-code signature into a ticket's mask",
        description="Embed TEXT as a QR code into the sparse mask (Algorithm 2), keeping the number of kept "
                    "weights unchanged, and save the signed ticket to --out and the private key to --key-out. "
                    "Retrain the signed ticket afterwards (masks stay fixed) to recover accuracy.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model_dir", help="a saved sparse model folder (e.g. find-ticket's ticket/)")
    p.add_argument("--signature", required=True, help="text to embed (an owner id, a date, ...)")
    p.add_argument("--key-out", required=True, help="where to write the private ownership key (JSON)")
    p.add_argument("--out", required=True, help="folder for the signed ticket")
    p.add_argument("--rewind", default=None, help="rewind-weights folder: values for switched-on weights")
    p.add_argument("--copies", type=int, default=2,
                   help="non-overlapping copies of the symbol (1 = the paper's; 2 survives far heavier pruning)")
    p.add_argument("--module-weights", type=int, default=2,
                   help="minimum kept weights per kernel that encodes a 1 (1 = the paper's)")
    p.add_argument("--layers", default=None, help="'all' or comma-separated parameter names (default: low-level convs)")
    p.add_argument("--ecc", choices=["L", "M", "Q", "H"], default="H", help="QR error-correction level")
    p.add_argument("--version", type=int, default=None, help="QR version (default: smallest that fits)")
    p.add_argument("--seed", type=int, default=0, help="seed of switched-on positions and values")
    p.add_argument("--dataset", default=None, help="measure the accuracy change on this dataset's test split")
    p.add_argument("--data-dir", default=None, help="dataset files or cache folder")
    p.add_argument("--test-limit", type=int, default=None, help="evaluate on at most this many test samples")
    p.add_argument("--compact", action="store_true", help="save in the compact layout")
    p.add_argument("--owner", default=None, help="public owner name for the ownership claim")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=_sign)


def _sign(args: argparse.Namespace) -> int:
    from .data import load_image_dataset
    from .loading import load_model
    from .ownership_key import SIGNATURE_SECTION, OwnershipKey, check_key_outside, save_key_section
    from .signature import embed_signature
    from .training import evaluate

    check_key_outside(args.key_out, args.out)
    if Path(args.key_out).exists() and SIGNATURE_SECTION in OwnershipKey.load(args.key_out).sections:
        from .errors import KeyFileError

        raise KeyFileError(f"{args.key_out} already holds a signature; write the new key to another path (the old "
                           "one proves ownership of the models signed with it).")
    model = load_model(args.model_dir)
    options: dict[str, Any] = {"seed": args.seed, "copies": args.copies, "module_weights": args.module_weights,
                               "ecc": args.ecc, "version": args.version}
    if args.layers:
        options["layers"] = "all" if args.layers == "all" else args.layers.split(",")
    if args.rewind:
        options["rewind"] = load_model(args.rewind)
    eval_data = None
    if args.dataset:
        eval_data = load_image_dataset(args.dataset, data_dir=args.data_dir, test_limit=args.test_limit).test
    before = evaluate(model, eval_data)["accuracy"] if eval_data is not None else None
    key = embed_signature(model, args.signature, **{k: v for k, v in options.items() if v is not None})
    after = evaluate(model, eval_data)["accuracy"] if eval_data is not None else None
    key = save_key_section(key, args.key_out, SIGNATURE_SECTION)
    model.ownership_claim = key.public_claim(owner=args.owner)
    model.save_pretrained(args.out, compact=args.compact)
    sec = key.section(SIGNATURE_SECTION)
    report = {"out": args.out, "key_out": args.key_out, "qr": sec["qr"], "copies": sec.get("copies"),
              "density": model.density, "accuracy_before": before, "accuracy_after": after,
              "accuracy_change": None if before is None else after - before, "needs_retraining": True,
              "changes": sec.get("changes")}
    if args.json:
        _emit(args, report)
    else:
        sys.stdout.write(
            f"signed {args.model_dir} with {args.signature!r} (QR v{sec['qr']['version']}-{sec['qr']['ecc']}); "
            f"density unchanged at {model.density:.4%}\n"
            + (f"accuracy {before:.2f}% -> {after:.2f}% ({after - before:+.2f}) before retraining\n"
               if before is not None else "")
            + f"signed ticket: {args.out}\nprivate key: {args.key_out} (keep it; never upload it)\n"
            "NOTE: the signed ticket still needs retraining from its rewind weights under the signed mask "
            "(hf-lottery retrain) before you publish it; embedding changes the mask.\n")
    return 0


@_command("extract")
def _extract_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract", help="Scheme V2: read and decode the signature from a suspect model",
        description="Recover the suspect's mask from its non-zero weights, read the key's region(s), decode the "
                    "QR code and report the bit agreement and its p-value. Exit status 0 when the signature "
                    "decodes to the key's text, 1 otherwise.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="suspect folder or .safetensors file (this library's, timm or TimmWrapper layout)")
    p.add_argument("--key", required=True, help="the owner's key (JSON)")
    p.add_argument("--no-defense", action="store_true", help="do not apply the add-on defense")
    p.add_argument("--json", action="store_true", help="print the evidence as JSON")
    p.set_defaults(handler=_extract)


def _extract(args: argparse.Namespace) -> int:
    from .signature import extract_signature

    ev = extract_signature(args.model, args.key, defense=not args.no_defense)
    if args.json:
        _emit(args, ev.to_dict())
    else:
        sys.stdout.write(f"decoded text: {ev.text!r} ({'matches the key' if ev.matches else 'no match'})\n"
                         f"bit agreement: {ev.bit_agreement:.4f}; p-value under an unrelated mask: {ev.p_value:.3g}\n")
    return 0 if ev.matches else 1


# --------------------------------------------------------------------------- Scheme V3: triggers, retrain, serve


@_command("triggers")
def _triggers_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "triggers", help="Scheme V3: add a secret trigger set to your ownership key",
        description="Generate fresh out-of-distribution abstract images with random labels (or load an Adi-style "
                    "folder) and store them in the key's 'triggers' section. Retraining with the key then teaches "
                    "the model these labels; verification queries the suspect with them (black-box).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--key", required=True, help="the ownership key to add the trigger set to (created if missing)")
    p.add_argument("--num-classes", type=int, required=True, help="classes of the model's task")
    p.add_argument("--arch", default=None, help="architecture, when the key file does not exist yet")
    p.add_argument("--n", type=int, default=100, help="number of trigger images")
    p.add_argument("--image-size", type=int, default=32, help="side of the generated images")
    p.add_argument("--channels", type=int, default=3, help="channels of the generated images")
    p.add_argument("--seed", type=int, default=None, help="seed (default: a fresh random one, recorded in the key)")
    p.add_argument("--adi", default=None, help="use an Adi-style folder (pics/*.jpg + labels-cifar.txt) instead")
    p.add_argument("--adi-mode", choices=["resize", "center_crop"], default="resize",
                   help="Adi images: resize (sane) or the original centre crop")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_triggers)


def _triggers(args: argparse.Namespace) -> int:
    import secrets

    from .errors import KeyFileError
    from .ownership_key import TRIGGERS_SECTION, OwnershipKey, save_key_section
    from .triggers import add_triggers_to_key, load_adi_trigger_set, make_trigger_set

    if args.adi:
        triggers = load_adi_trigger_set(args.adi, mode=args.adi_mode, num_classes=args.num_classes,
                                        image_size=args.image_size, channels=args.channels)
    else:
        seed = args.seed if args.seed is not None else secrets.randbits(63)
        triggers = make_trigger_set(args.n, num_classes=args.num_classes, image_size=args.image_size,
                                    channels=args.channels, seed=seed)
    if Path(args.key).exists():
        arch = OwnershipKey.load(args.key).arch
    elif args.arch:
        arch = args.arch
    else:
        raise KeyFileError(f"{args.key} does not exist; pass --arch to create a new key.")
    key = OwnershipKey(arch=arch)
    add_triggers_to_key(key, triggers)
    key = save_key_section(key, args.key, TRIGGERS_SECTION)
    report = {"key": args.key, "n": len(triggers), "num_classes": triggers.num_classes, "source": triggers.source,
              "digest": triggers.digest()}
    if args.json:
        _emit(args, report)
    else:
        sys.stdout.write(f"added {len(triggers)} trigger images ({triggers.source}) to {args.key}; retrain with "
                         "the key (hf-lottery retrain) so the model learns them\n")
    return 0


@_command("retrain")
def _retrain_parser(sub: argparse._SubParsersAction) -> None:
    from .training import TrainConfig

    p = sub.add_parser(
        "retrain", help="retrain a signed ticket from its rewind weights (with the key's trigger set)",
        description="Train the signed ticket's mask from the rewind weights W_k over epochs [k, epochs) of the "
                    "schedule, mixing the key's trigger images into every batch when the key has a trigger set. "
                    "The mask, and so the signature and the density, stay exactly the same. Works under "
                    "`accelerate launch`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model_dir", help="the signed ticket (hf-lottery sign's --out)")
    p.add_argument("--rewind", required=True, help="the rewind weights (find-ticket's rewind/)")
    p.add_argument("--key", default=None, help="the ownership key (its trigger set is mixed in)")
    p.add_argument("--dataset", required=True, help="cifar10, cifar100, fashion_mnist, synthetic or imagefolder:<path>")
    p.add_argument("--data-dir", default=None, help="dataset files or cache folder")
    p.add_argument("--out", required=True, help="folder for the retrained ticket")
    p.add_argument("--rewind-epoch", type=int, default=None, help="epoch k (default: read from the rewind folder)")
    p.add_argument("--triggers-per-batch", type=int, default=None,
                   help="trigger images per batch (default: 1 per 128 training images)")
    p.add_argument("--train-limit", type=int, default=None, help="use at most this many training samples")
    p.add_argument("--test-limit", type=int, default=None, help="use at most this many test samples")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is visible")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    group = p.add_argument_group("training recipe (TrainConfig)")
    add_dataclass_args(group, TrainConfig)
    p.set_defaults(handler=_retrain)


def _retrain(args: argparse.Namespace) -> int:
    from .retrain import retrain_folder
    from .training import TrainConfig, make_accelerator

    config = dataclass_from_args(TrainConfig, args)
    accelerator = make_accelerator(config, cpu=args.cpu or None)
    report = retrain_folder(args.model_dir, rewind_dir=args.rewind, key_path=args.key, dataset=args.dataset,
                            out_dir=args.out, config=config, rewind_epoch=args.rewind_epoch, data_dir=args.data_dir,
                            train_limit=args.train_limit, test_limit=args.test_limit,
                            triggers_per_batch=args.triggers_per_batch, accelerator=accelerator,
                            progress=not args.json)
    if not accelerator.is_main_process:
        return 0
    if args.json:
        _emit(args, report)
    else:
        def pct(v: Any) -> str:
            return "n/a" if v is None else f"{v:.2f}%"

        sys.stdout.write(f"accuracy: signed {pct(report.get('accuracy_signed'))} -> retrained "
                         f"{pct(report.get('accuracy_retrained'))}"
                         + (f" (unsigned {pct(report.get('accuracy_unsigned'))})" if report.get('accuracy_unsigned')
                            is not None else "") + "\n")
        if report.get("trigger_agreement_after") is not None:
            sys.stdout.write(f"trigger agreement: {report.get('trigger_agreement_before'):.0%} -> "
                             f"{report['trigger_agreement_after']:.0%}\n")
        sys.stdout.write(f"retrained ticket: {args.out} (mask and density unchanged)\n")
    return 0


@_command("serve")
def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="serve a model on 127.0.0.1 in the Inference API image-classification shape",
        description="POST image bytes (or JSON {\"inputs\": base64}) to the printed URL and get "
                    "[{\"label\": ..., \"score\": ...}]. For testing black-box verification; loopback only "
                    "unless --allow-remote.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="model folder, file or Hub repo id")
    p.add_argument("--port", type=int, default=8000, help="port (0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host")
    p.add_argument("--top-k", type=int, default=5, help="labels per answer")
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from .serve import serve

    serve(args.model, host=args.host, port=args.port, top_k=args.top_k, allow_remote=args.allow_remote,
          on_ready=lambda line: (sys.stdout.write(line + "\n"), sys.stdout.flush()))
    return 0


# --------------------------------------------------------------------------- push / verify


@_command("push")
def _push_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "push", help="publish a saved ticket to the Hub with a model card and an ownership badge",
        description="Upload config, weights (plain timm layout), masks, a model card and an ownership badge in one "
                    "commit. With --signature the ticket is signed first and the private key written to --key-out; "
                    "with --key an existing key's public claim (a hash commitment) goes into the header and the "
                    "card. The key itself is never uploaded.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model_dir", help="a saved sparse model folder")
    p.add_argument("repo_id", help="owner/name on the Hub (HF_ENDPOINT selects the server)")
    p.add_argument("--signature", default=None, help="sign with this text before publishing (needs --key-out)")
    p.add_argument("--key-out", default=None, help="where to write the private key when signing")
    p.add_argument("--key", default=None, help="an existing private key whose public claim to publish")
    p.add_argument("--owner", default=None, help="public owner name in the claim and the card")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--revision", default=None, help="branch to commit to")
    p.add_argument("--message", default=None, help="commit message")
    p.add_argument("--token", default=None, help="Hub token (default: the logged-in one or HF_TOKEN)")
    p.add_argument("--accuracy", type=float, default=None, help="test accuracy in percent, for the card")
    p.add_argument("--dataset", default=None, help="dataset name for the card (e.g. cifar10)")
    p.add_argument("--compact", action="store_true", help="publish the compact layout (not loadable by plain timm)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_push)


def _push(args: argparse.Namespace) -> int:
    from .errors import KeyFileError
    from .loading import load_model

    if args.signature and not args.key_out:
        raise KeyFileError("--signature needs --key-out: the private key is the proof of ownership.")
    if args.key and args.signature:
        raise KeyFileError("Pass --key (publish an existing key's claim) or --signature/--key-out (sign now), "
                           "not both.")
    model = load_model(args.model_dir)
    info = model.push_to_hub(
        args.repo_id, signature=args.signature, key_path=args.key_out if args.signature else args.key,
        owner=args.owner, private=args.private or None, token=args.token, revision=args.revision,
        commit_message=args.message, eval_results={"accuracy": args.accuracy, "dataset": args.dataset})
    report = {"repo_id": args.repo_id, "commit": getattr(info, "oid", None), "url": str(getattr(info, "commit_url", "")),
              "claim": model.ownership_claim, "density": model.density}
    if args.json:
        _emit(args, report)
    else:
        sys.stdout.write(f"pushed {args.model_dir} to {args.repo_id} at commit {report['commit']}\n"
                         + (f"public claim: commitment {model.ownership_claim['key_commitment']}\n"
                            if model.ownership_claim else "no ownership claim (pass --signature or --key)\n")
                         + (f"private key: {args.key_out} (keep it; never upload it)\n" if args.signature else ""))
    return 0


@_command("verify")
def _verify_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify", help="verify a Hub repo, folder, file or endpoint against your private key",
        description="Read the suspect without trusting it, re-align its channels, decode the keyed QR signature "
                    "from its weights and query it on the secret trigger set. Exit status: 0 owned, 1 not owned, "
                    "3 inconclusive, 2 error.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("target", nargs="?", default=None, help="Hub repo id, local folder or .safetensors file")
    p.add_argument("--key", required=True, help="your private ownership key (JSON)")
    p.add_argument("--endpoint", default=None, help="verify a live inference endpoint (black-box, Scheme V3)")
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit")
    p.add_argument("--quick", action="store_true", help="only read the public claim from the weights header")
    p.add_argument("--local-files-only", action="store_true", help="use the Hub cache only (as HF_HUB_OFFLINE=1)")
    p.add_argument("--token", default=None, help="Hub token")
    p.add_argument("--no-priority", action="store_true", help="do not walk the repo's commit history")
    p.add_argument("--timeout", type=float, default=10.0, help="endpoint request timeout in seconds")
    p.add_argument("--retries", type=int, default=2, help="endpoint retries per request")
    p.add_argument("--budget", type=int, default=None, help="maximum endpoint requests")
    p.add_argument("--badge", default=None, help="also write an SVG badge of the verdict to this file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=_verify)


def _verify(args: argparse.Namespace) -> int:
    from .errors import CheckpointError
    from .verify import verify_hub_model, verify_model

    if (args.target is None) == (args.endpoint is None):
        raise CheckpointError("Give exactly one suspect: a TARGET (repo id, folder or file) or --endpoint URL.")
    if args.endpoint:
        report = verify_model(args.endpoint, args.key, timeout=args.timeout, retries=args.retries,
                              budget=args.budget)
    else:
        report = verify_hub_model(args.target, key=args.key, revision=args.revision, token=args.token,
                                  quick=args.quick, local_files_only=args.local_files_only,
                                  priority=not args.no_priority)
    if args.badge:
        from .atomic import write_text_atomic
        from .cards import render_badge

        write_text_atomic(args.badge, render_badge(status=report.verdict, label="ownership"))
    sys.stdout.write((report.to_json() if args.json else str(report)) + "\n")
    return report.exit_code


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
