# Find an extreme lottery ticket by IMP with late rewinding (Chen et al., NeurIPS 2021, Section 4.1).
#
# Trains a dense CIFAR ResNet, rewinds to epoch k, and prunes by global magnitude with the
# paper's shrinking ratio schedule until pruning 1% more loses more than epsilon points.
# Runs on a CPU, one GPU, or several under Accelerate:
#
#     python examples/find_ticket.py --dataset fashion_mnist --out runs/fmnist-r20
#     accelerate launch --num_processes 2 examples/find_ticket.py --dataset cifar10 --out runs/c10-r20
#
# On one H100/H200 the short recipe below (12 one-cycle epochs per round, bf16) reaches a
# ticket of about 2% density within a point of dense in minutes; the paper's recipe is
# --schedule multistep --epochs 182 --lr 0.1. Re-running the same command resumes.
from __future__ import annotations

import argparse

from accelerate import Accelerator
from accelerate.utils import set_seed

import hf_lottery_verify  # noqa: F401  (registers the CIFAR ResNets)
from hf_lottery_verify.data import load_image_dataset
from hf_lottery_verify.imp import IMPConfig, find_extreme_ticket
from hf_lottery_verify.training import TrainConfig


def training_function(args: argparse.Namespace) -> None:
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, schedule=args.schedule,
                        weight_decay=args.weight_decay, precision=args.precision, compile=args.compile,
                        pad=args.pad, seed=args.seed)
    accelerator = Accelerator(cpu=args.cpu, mixed_precision={"fp32": "no"}.get(args.precision, args.precision))
    set_seed(args.seed)  # before the model is built: the seed also fixes the initial weights
    data = load_image_dataset(args.dataset, data_dir=args.data_dir, seed=args.seed,
                              train_limit=args.train_limit, test_limit=args.test_limit)
    config = IMPConfig(train=train, rewind_epoch=args.rewind_epoch, ratios=tuple(args.ratios),
                       epsilon=args.epsilon, max_rounds=args.max_rounds, init_seed=args.seed)
    result = find_extreme_ticket(args.arch, data, out_dir=args.out, config=config, accelerator=accelerator)
    accelerator.print(f"dense {result.dense_accuracy:.2f}% -> ticket {result.ticket_accuracy:.2f}% "
                      f"at {result.ticket_density:.3%} density in {result.seconds:.0f} s; saved to {result.ticket_dir}")
    accelerator.end_training()


def main() -> None:
    parser = argparse.ArgumentParser(description="Find an extreme lottery ticket (IMP with late rewinding).")
    parser.add_argument("--arch", default="cifar_resnet20")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--train-limit", type=int, default=None)
    parser.add_argument("--test-limit", type=int, default=None)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=0.4)
    parser.add_argument("--schedule", default="onecycle", choices=["onecycle", "multistep", "cosine", "constant"])
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--pad", type=int, default=2)
    parser.add_argument("--rewind-epoch", type=int, default=1)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.2, 0.1, 0.05, 0.01])
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--max-rounds", type=int, default=None)
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpu", action="store_true")
    training_function(parser.parse_args())


if __name__ == "__main__":
    main()
