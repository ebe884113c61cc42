"""Training throughput under a fixed 20%-dense mask: the library's loop against a plain loop.

Plain loop (the usual CIFAR script): a torchvision Dataset with per-sample CPU transforms
(RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize), a DataLoader with
worker processes, fp32, batch 128, masks re-applied after every optimizer step.

Library loop: hf_lottery_verify.training.Trainer — device-resident uint8 data with
on-device crop/flip, bf16 autocast, channels_last, optional torch.compile, batch 512,
masks enforced by gradient hooks plus a post-step hook.

Both train on the same random CIFAR-shaped data (throughput does not depend on content).

Usage:
    python bench/train_throughput.py                      # GPU: cifar_resnet20 and cifar_resnet18
    python bench/train_throughput.py --tiny               # CPU smoke test (CI)
    python bench/train_throughput.py --json bench/results/train_throughput_h100.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

import hf_lottery_verify as hlv
from hf_lottery_verify.data import ImageData
from hf_lottery_verify.masks import apply_masks_
from hf_lottery_verify.training import TrainConfig, Trainer, make_accelerator


class _PerSampleCIFAR(Dataset):
    """uint8 images transformed one at a time on the CPU, as torchvision scripts do."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, size: int) -> None:
        import torchvision.transforms.v2 as T

        self.images, self.labels = images, labels
        self.tf = T.Compose([T.RandomCrop(size, padding=4), T.RandomHorizontalFlip(), T.ToDtype(torch.float32, scale=True),
                             T.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.tf(self.images[i]), self.labels[i]


def _model(arch: str, device: torch.device) -> hlv.SparseResNetForImageClassification:
    torch.manual_seed(0)
    model = hlv.SparseResNetForImageClassification(hlv.SparseResNetConfig(arch=arch))
    model.prune_(density=0.2)
    return model.to(device)


def plain_loop(arch: str, data: ImageData, *, device: torch.device, batch_size: int, workers: int,
               steps: int, warmup: int) -> float:
    model = _model(arch, device).train()
    masks = model.masks
    params = model.timm_parameters()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    loader = DataLoader(_PerSampleCIFAR(data.images, data.labels, data.image_size), batch_size=batch_size,
                        shuffle=True, num_workers=workers, drop_last=True, pin_memory=device.type == "cuda",
                        persistent_workers=workers > 0)
    done, seen, t0 = 0, 0, None
    while done < steps + warmup:
        for x, y in loader:
            if done == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0, seen = time.perf_counter(), 0
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = torch.nn.functional.cross_entropy(model(x).logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            apply_masks_(params, masks)
            done += 1
            seen += y.numel()
            if done >= steps + warmup:
                break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - t0)


def library_loop(arch: str, data: ImageData, *, config: TrainConfig, accelerator, epochs: int) -> float:
    model = _model(arch, accelerator.device)
    trainer = Trainer(model, data, config, accelerator=accelerator, progress=False)
    history = trainer.train(end_epoch=epochs)
    trainer.close()
    timed = history[1:] or history  # the first epoch pays for compilation and warm-up
    return sum(r.images_per_s * r.seconds for r in timed) / sum(r.seconds for r in timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["cifar_resnet20", "cifar_resnet18"])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke mode: small data, few steps")
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--plain-batch", type=int, default=128)
    parser.add_argument("--plain-workers", type=int, default=8)
    parser.add_argument("--plain-steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--compile-mode", default="max-autotune-no-cudagraphs")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.tiny:
        args.archs = ["cifar_resnet8"]
        args.images, args.plain_workers, args.plain_steps, args.batch, args.epochs = 1024, 2, 8, 128, 2
        args.compile, args.precision = False, "fp32"

    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    gen = torch.Generator().manual_seed(0)
    data = ImageData(torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=gen),
                     torch.randint(0, 10, (args.images,), generator=gen), 10, (0.4914, 0.4822, 0.4465),
                     (0.2470, 0.2435, 0.2616), "random-cifar")
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=0.2, schedule="onecycle",
                         precision=args.precision, compile=args.compile, compile_mode=args.compile_mode)
    accelerator = make_accelerator(config, cpu=device.type == "cpu")
    machine = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({platform.processor() or 'x86_64'})"
    rows = []
    for arch in args.archs:
        plain = plain_loop(arch, data, device=device, batch_size=args.plain_batch, workers=args.plain_workers,
                           steps=args.plain_steps, warmup=max(2, args.plain_steps // 10))
        lib = library_loop(arch, data, config=config, accelerator=accelerator, epochs=args.epochs)
        rows.append({"arch": arch, "plain_img_s": plain, "library_img_s": lib, "ratio": lib / plain})
    print(f"machine: {machine}; torch {torch.__version__}; 20%-dense masks")
    print(f"plain: batch {args.plain_batch}, {args.plain_workers} workers, fp32 | library: batch {args.batch}, "
          f"{args.precision}, compile={args.compile}")
    print(f"{'arch':<16}{'plain img/s':>14}{'library img/s':>16}{'ratio':>8}")
    for r in rows:
        print(f"{r['arch']:<16}{r['plain_img_s']:>14,.0f}{r['library_img_s']:>16,.0f}{r['ratio']:>8.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine, "torch": torch.__version__, "args": vars(args) | {
            "json": str(args.json)}, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
