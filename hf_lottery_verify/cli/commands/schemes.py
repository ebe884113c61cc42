"""The ownership schemes on a ticket folder: ``sign`` (V2), ``extract``, ``triggers`` (V3), ``retrain``."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path
from typing import Any

from ...configs import TrainConfig
from .. import command
from .._parsing import build, emit, flat
from ..args import (
    DataArgs,
    EvalDataArgs,
    ExtractArgs,
    OutputArgs,
    OverwriteArgs,
    RetrainArgs,
    SignArgs,
    SignatureOptions,
    TriggersArgs,
)


@command(
    "sign", help="Scheme V2: embed a keyed QR-code signature into a ticket's mask",
    description="Embed TEXT as a QR code into the sparse mask, whitened and placed by a secret kept in the key, "
                "keeping the number of kept weights unchanged; save the signed ticket to --out and the private "
                "key to --key-out. Retrain the signed ticket afterwards (hf-lottery retrain).",
    dataclass_types=[SignArgs, SignatureOptions, EvalDataArgs, OverwriteArgs, OutputArgs],
    arguments=[("model_dir", dict(help="a saved sparse model folder (e.g. find-ticket's ticket/)"))])
def _sign(args: Namespace) -> int:
    from ...workflows import sign_folder

    report = sign_folder(args.model_dir, signature=args.signature, key_out=args.key_out, out_dir=args.out,
                         owner=args.owner, rewind_dir=args.rewind, options=build(SignatureOptions, args).embed_kwargs(),
                         dataset=args.dataset, data_dir=args.data_dir, test_limit=args.test_limit,
                         compact=args.compact)
    before, after = report.get("accuracy_before"), report.get("accuracy_after")
    emit(args, report, lambda: (
        f"signed {args.model_dir} with {args.signature!r} ({report['copies']} cop"
        f"{'y' if report['copies'] == 1 else 'ies'}); density unchanged at {report['density']:.4%}\n"
        + (f"accuracy {before:.2f}% -> {after:.2f}% ({after - before:+.2f}) before retraining\n"
           if before is not None else "")
        + f"signed ticket: {args.out}\nprivate key: {args.key_out} (keep it; never upload it)\n"
        "NOTE: the signed ticket still needs retraining from its rewind weights under the signed mask "
        "(hf-lottery retrain) before you publish it: embedding changes the mask."))
    return 0


@command(
    "extract", help="Scheme V2: read and decode the signature from a suspect with the key",
    description="Recover the suspect's mask from its non-zero weights (keeping per layer at most the published "
                "kept count when the key holds a reference), read the slots derived from the key's secret, decode "
                "the QR code and report the bit agreement and its p-value. Exit status 0 when the signature "
                "decodes to the key's text, 1 otherwise. (hf-lottery verify runs every scheme, re-aligns channels "
                "first and checks the key's anchor.)",
    dataclass_types=[ExtractArgs, OutputArgs],
    arguments=[("model", dict(help="suspect folder, .safetensors file or Hub repo id"))])
def _extract(args: Namespace) -> int:
    from ...alignment import reference_from_key
    from ...ownership_key import OwnershipKey
    from ...signature import extract_signature
    from ...suspect import read_suspect

    key = OwnershipKey.load(args.key)
    reference = reference_from_key(key)
    kept = {n: int(m.sum()) for n, m in reference.masks.items()} if reference is not None else None
    ev = extract_signature(read_suspect(args.model), key=key, kept=kept)
    emit(args, ev.to_dict(), lambda: f"decoded text: {ev.text!r} ({'matches the key' if ev.matches else 'no match'})\n"
         f"bit agreement: {ev.bit_agreement:.4f}; p-value under an unrelated mask: {ev.p_value:.3g}")
    return 0 if ev.matches else 1


@command(
    "triggers", help="Scheme V3: add a secret trigger set to your ownership key",
    description="Derive a trigger set from the key's secret: abstract out-of-distribution images (or an "
                "Adi-style folder's images) with random labels nobody can choose. Retraining with the key then "
                "teaches the model these labels; verification regenerates them and queries the suspect.",
    dataclass_types=[TriggersArgs, OutputArgs])
def _triggers(args: Namespace) -> int:
    from ...architectures import check_architecture
    from ...errors import KeyFileError
    from ...ownership_key import OwnershipKey
    from ...triggers import add_triggers, load_adi_trigger_set, triggers_from_key

    images = None
    if args.adi:
        images = load_adi_trigger_set(args.adi, mode=args.adi_mode, num_classes=args.num_classes,
                                      image_size=args.image_size, channels=args.channels)
    if Path(args.key).exists():
        key = OwnershipKey.load(args.key)
    elif args.arch:
        check_architecture(args.arch)
        key = OwnershipKey(arch=args.arch)
    else:
        raise KeyFileError(f"{args.key} does not exist; pass --arch to create a new key.")
    key = add_triggers(key, num_classes=args.num_classes, n=args.n, image_size=args.image_size,
                       channels=args.channels, images=images)
    key.save(args.key, extend=True)
    triggers = triggers_from_key(key)
    report = {"key": args.key, "n": len(triggers), "num_classes": triggers.num_classes, "source": triggers.source,
              "digest": triggers.digest()}
    emit(args, report, lambda: f"added {len(triggers)} trigger images ({triggers.source}, labels derived from the "
         f"key's secret) to {args.key}; retrain with the key (hf-lottery retrain) so the model learns them")
    return 0


@command(
    "retrain", help="retrain a signed ticket from its rewind weights (with the key's trigger set)",
    description="Train the signed ticket's mask from the rewind weights W_k over epochs [k, epochs) of the "
                "schedule, mixing the key's trigger images into every batch when the key has a trigger set. The "
                "mask, and so the signature and the density, stay exactly the same. Works under `accelerate "
                "launch`.",
    dataclass_types=[RetrainArgs, DataArgs, flat(TrainConfig, group="training recipe (TrainConfig)"),
                     OverwriteArgs, OutputArgs],
    arguments=[("model_dir", dict(help="the signed ticket (hf-lottery sign's --out)"))])
def _retrain(args: Namespace) -> int:
    from ...retrain import retrain_folder
    from ...training import make_accelerator

    config = build(TrainConfig, args)
    accelerator = make_accelerator(config, cpu=args.cpu or None)
    report = retrain_folder(args.model_dir, rewind_dir=args.rewind, key_path=args.key, dataset=args.dataset,
                            out_dir=args.out, config=config, rewind_epoch=args.rewind_epoch, data_dir=args.data_dir,
                            train_limit=args.train_limit, test_limit=args.test_limit,
                            triggers_per_batch=args.triggers_per_batch, accelerator=accelerator,
                            progress=not args.json)
    if not accelerator.is_main_process:
        return 0

    def pct(v: Any) -> str:
        return "n/a" if v is None else f"{v:.2f}%"

    after = report.get("trigger_agreement_after")
    emit(args, report, lambda: (
        f"accuracy: signed {pct(report.get('accuracy_signed'))} -> retrained {pct(report.get('accuracy_retrained'))}\n"
        + (f"trigger agreement: {report.get('trigger_agreement_before') or 0:.0%} -> {after:.0%}\n"
           if after is not None else "")
        + f"retrained ticket: {args.out} (mask and density unchanged)"))
    return 0
