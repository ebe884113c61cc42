# Sign a ticket, retrain it with a trigger set, and publish it to the Hub (Schemes V2 and V3).
#
# Shows the owner's side after examples/find_ticket.py, in Python:
#   1. embed_signature: a keyed QR code in the sparse mask (Scheme V2), placed where the key's secret says;
#   2. add_triggers: a trigger set (Scheme V3) whose images and labels are derived from the same secret;
#   3. retrain: from the rewind weights under the signed mask, trigger images mixed into every batch;
#   4. publish_folder + push_model: the folder (--out) and one Hub commit with the weights, the masks, a model
#      card and an ownership badge. The key file (--key_out) gains the published model's alignment reference
#      and the anchor: the Hub commit, dated by the server, that publishes the key's commitment. Only a key
#      anchored before a suspect appeared can make it `owned`.
# --local_hub starts a Hub server on this machine instead of using huggingface.co (offline trial).
#
#     python examples/sign_retrain_push.py --run runs/fmnist --repo_id you/r20-ticket --key_out keys/r20.json \
#         --out runs/fmnist/published --signature "you 2026" --dataset fashion_mnist --train_limit 10000 \
#         --epochs 4 --lr 0.2 --schedule onecycle --local_hub
#     accelerate launch examples/sign_retrain_push.py --run runs/c10 --repo_id you/r20 --key_out k.json --out pub \
#         --signature "you 2026" --dataset cifar10 --epochs 182 --schedule multistep --lr 0.1
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field


def _local_hub_asked(argv: list[str]) -> bool:
    """``--local_hub`` (or ``--local_hub true``/``=true``), read before transformers imports huggingface_hub."""
    for i, word in enumerate(argv):
        name, _, value = word.partition("=")
        if name in ("--local_hub", "--local-hub"):
            value = value or (argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("-") else "true")
            return value.lower() in ("true", "1", "yes", "y")
    return False


# --local_hub: point huggingface_hub at this machine before anything imports it (transformers does, below)
LOCAL_PORT = None
if _local_hub_asked(sys.argv[1:]):
    from hf_lottery_verify.localhub import configure_hub_environment

    LOCAL_PORT = configure_hub_environment()

from transformers import HfArgumentParser  # noqa: E402

from hf_lottery_verify.cli import build, flat  # noqa: E402
from hf_lottery_verify.cli.args import DataArgs, SignatureOptions  # noqa: E402
from hf_lottery_verify.configs import TrainConfig  # noqa: E402


@dataclass
class PublishArgs:
    """What to sign and where to publish it."""

    run: str = field(metadata={"help": "find_ticket's --out folder (ticket/ and rewind/ inside)"})
    repo_id: str = field(metadata={"help": "Hub repo to push to (owner/name)"})
    key_out: str = field(metadata={"help": "where to write the private key (never overwritten; keep it private)"})
    out: str = field(metadata={"help": "folder for the signed, retrained model (what is pushed; attack it with "
                                       "examples/attack_suite.py)"})
    signature: str = field(metadata={"help": "text of the QR signature"})
    owner: str | None = field(default=None, metadata={"help": "public owner name on the card"})
    triggers: int = field(default=100, metadata={"help": "trigger images (Scheme V3); 0 for none"})
    triggers_per_batch: int = field(default=16, metadata={"help": "trigger images per 128 training images"})
    local_hub: bool = field(default=False, metadata={"help": "start a local Hub server and push there"})
    cpu: bool = field(default=False, metadata={"help": "train on the CPU even when a GPU is visible"})


def main() -> None:
    parser = HfArgumentParser([PublishArgs, DataArgs, flat(SignatureOptions, exclude=("seed",)), flat(TrainConfig)],
                              description="Sign a ticket (V2), retrain it with triggers (V3) and push it to the Hub.")
    args = parser.parse_args()
    from accelerate import Accelerator

    from hf_lottery_verify import load_model
    from hf_lottery_verify.data import load_image_dataset
    from hf_lottery_verify.localhub import LocalHub, reserved_socket
    from hf_lottery_verify.publishing import publish_folder, push_model
    from hf_lottery_verify.retrain import read_rewind_epoch, retrain
    from hf_lottery_verify.signature import embed_signature
    from hf_lottery_verify.triggers import add_triggers
    from hf_lottery_verify.verify import verify_hub_model

    # the local Hub's one user owns --repo_id's namespace and holds the HF_TOKEN configure_hub_environment exported
    hub = LocalHub(port=LOCAL_PORT, sock=reserved_socket(LOCAL_PORT),
                   users={args.repo_id.split("/")[0]: os.environ["HF_TOKEN"]}).start() if LOCAL_PORT else None
    train = build(TrainConfig, args)
    accelerator = Accelerator(cpu=args.cpu, mixed_precision={"fp32": "no"}.get(train.precision, train.precision))
    data = load_image_dataset(args.dataset, data_dir=args.data_dir, seed=train.seed, train_limit=args.train_limit,
                              test_limit=args.test_limit)
    ticket = load_model(os.path.join(args.run, "ticket"))
    rewind = load_model(os.path.join(args.run, "rewind"))
    rewind_epoch = read_rewind_epoch(os.path.join(args.run, "rewind")) or 0

    key = embed_signature(ticket, args.signature, rewind=rewind, **build(SignatureOptions, args).embed_kwargs())
    if args.triggers:  # images and labels derived from the key's secret: nobody can choose them after the fact
        key = add_triggers(key, num_classes=data.num_classes, n=args.triggers, image_size=data.train.image_size,
                           channels=data.train.in_chans, per_batch=args.triggers_per_batch)
    result = retrain(ticket, rewind=rewind, data=data, config=train, rewind_epoch=rewind_epoch, key=key,
                     accelerator=accelerator)
    accelerator.print(f"retrained: {result.accuracy_retrained:.2f}% (signed, before: {result.accuracy_signed:.2f}%), "
                      f"trigger agreement {result.trigger_agreement_after}")
    if accelerator.is_main_process:
        model = result.model
        key.save(args.key_out)  # refuses to overwrite an existing key
        # the folder first (the key file gains the model's reference), then the commit that anchors the key;
        # the card reports the retrained test accuracy and the data
        publish_folder(model, args.out, repo_id=args.repo_id, key=args.key_out, owner=args.owner, eval_results=result)
        pushed = push_model(model, args.repo_id, key=args.key_out, owner=args.owner, eval_results=result)
        print(f"pushed {args.repo_id} at {pushed.commit[:8]}; private key: {args.key_out} (anchored: "
              f"{pushed.key.anchors[-1].date})")
        report = verify_hub_model(args.repo_id, key=args.key_out)  # what anyone holding the key can check
        print(f"verify_hub_model({args.repo_id!r}): {report.verdict} - {report.reasons[0] if report.reasons else ''}")
    accelerator.end_training()
    if hub is not None:
        hub.stop()


if __name__ == "__main__":
    main()
