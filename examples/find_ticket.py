# Find an extreme lottery ticket by IMP with late rewinding (Chen et al., NeurIPS 2021, Section 4.1).
#
# Shows: training a dense CIFAR ResNet, rewinding to epoch k, and pruning by global magnitude with the
# paper's shrinking ratio schedule until pruning more loses more than epsilon points. Writes ticket/ and
# rewind/ (loadable with hf_lottery_verify.load_model) plus rounds.json to --out; re-running resumes.
# Flags come from the library's config dataclasses (TrainConfig, IMPConfig) via HfArgumentParser.
#
#     python examples/find_ticket.py --dataset fashion_mnist --arch cifar_resnet20_a --out runs/fmnist
#     accelerate launch --num_processes 2 examples/find_ticket.py --dataset cifar10 --out runs/c10 \
#         --precision bf16 --epochs 182 --schedule multistep --lr 0.1 --rewind_epoch 3
from __future__ import annotations

from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import HfArgumentParser

from hf_lottery_verify.cli import build, flat
from hf_lottery_verify.cli.args import DataArgs, FindTicketArgs
from hf_lottery_verify.configs import IMPConfig, TrainConfig


def main() -> None:
    parser = HfArgumentParser([FindTicketArgs, DataArgs, flat(IMPConfig, exclude=("train",)), flat(TrainConfig)],
                              description="Find an extreme lottery ticket (IMP with late rewinding).")
    run, data_args, _, _ = parser.parse_args_into_dataclasses()
    args = parser.parse_args()
    train = build(TrainConfig, args)
    config = build(IMPConfig, args, train=train)

    from hf_lottery_verify.data import load_image_dataset
    from hf_lottery_verify.imp import find_extreme_ticket

    accelerator = Accelerator(cpu=run.cpu, mixed_precision={"fp32": "no"}.get(train.precision, train.precision))
    set_seed(train.seed)
    data = load_image_dataset(data_args.dataset, data_dir=data_args.data_dir, seed=train.seed,
                              train_limit=data_args.train_limit, test_limit=data_args.test_limit)
    result = find_extreme_ticket(run.arch, data, out_dir=run.out, config=config, accelerator=accelerator)
    accelerator.print(f"dense {result.dense_accuracy:.2f}% -> ticket {result.ticket_accuracy:.2f}% "
                      f"at {result.ticket_density:.3%} density in {result.seconds:.0f} s; saved to {result.ticket_dir}")
    accelerator.end_training()


if __name__ == "__main__":
    main()
