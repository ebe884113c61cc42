"""Training throughput under a fixed 20%-dense mask: the library's loop beside two plain loops, in one run.

Three loops train the same masked model on the same random CIFAR-shaped data (throughput
does not depend on content); every number of one run comes from the same process, so
compare them as ratios:

* ``plain_loader`` — the usual CIFAR script: a Dataset with per-sample CPU transforms
  (RandomCrop(32, padding=4), RandomHorizontalFlip, ToDtype, Normalize), a DataLoader with
  worker processes, fp32, the masks re-applied after every optimizer step (the
  "plain" row of ANCHORS.md).
* ``plain_tensor`` — a plain tensor loop: device-resident uint8 data, the same on-device
  crop/flip, normalisation written inline, the library's batch size and precision, the
  masks re-applied after every step. It isolates what the library's loop adds or saves.
* ``library`` — :class:`hf_lottery_verify.training.Trainer` with the masked model:
  device-resident data, on-device augmentation, Accelerate autocast, channels-last and
  optional ``torch.compile``, masks enforced by :class:`~hf_lottery_verify.training.MaskEnforcer`.

The first library epoch (compilation, warm-up) and the first plain steps are not timed.
``--repeats`` runs the three loops in turn that many times; the median of each loop's
images/s is reported, and the median of the per-repeat ratios library / plain.

Presets:

* default (GPU): ANCHORS.md's H200 configuration — ``cifar_resnet20`` and ``cifar_resnet18``,
  50,000 images, library and plain_tensor at batch 512, bf16 autocast, channels-last,
  ``torch.compile``; plain_loader at batch 128, 8 workers, fp32.
* ``--tiny`` (CPU): ``cifar_resnet20`` at CIFAR shape, 1,024 images, batch 32 everywhere,
  fp32, no compile, one intra-op thread and one loader worker, 5 repeats: 32 timed steps
  per loop and repeat. On a shared 2-core machine the load of other processes moves every
  figure; the per-repeat ratios (library / plain, measured seconds apart) move much less.

Usage:
    python bench/train_throughput.py --json bench/results/train_throughput_h200.json
    python bench/train_throughput.py --tiny --label after --json bench/results/train_throughput_cpu.json

With ``--label`` the run is stored under ``runs[label]`` of the JSON file, next to the runs
already there (e.g. ``before`` and ``after`` of a change).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

import hf_lottery_verify as hlv
from hf_lottery_verify.data import ImageData, augment_batch
from hf_lottery_verify.masks import apply_masks_
from hf_lottery_verify.training import TrainConfig, Trainer, make_accelerator

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class _PerSampleCIFAR(Dataset):
    """uint8 images transformed one at a time on the CPU, as torchvision scripts do."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, size: int) -> None:
        import torchvision.transforms.v2 as T

        self.images, self.labels = images, labels
        self.tf = T.Compose([T.RandomCrop(size, padding=4), T.RandomHorizontalFlip(),
                             T.ToDtype(torch.float32, scale=True), T.Normalize(CIFAR_MEAN, CIFAR_STD)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tf(self.images[i]), self.labels[i]


def _model(arch: str, device: torch.device, *, density: float) -> hlv.SparseResNetForImageClassification:
    torch.manual_seed(0)
    model = hlv.SparseResNetForImageClassification(hlv.SparseResNetConfig(arch=arch))
    model.prune_(density=density)
    return model.to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_loader_loop(arch: str, data: ImageData, *, device: torch.device, batch_size: int, workers: int,
                      steps: int, warmup: int, density: float) -> float:
    """Per-sample CPU transforms, a DataLoader with workers, fp32, masks re-applied after each step."""
    model = _model(arch, device, density=density).train()
    masks, params = model.masks, model.timm_parameters()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    loader = DataLoader(_PerSampleCIFAR(data.images, data.labels, data.image_size), batch_size=batch_size,
                        shuffle=True, num_workers=workers, drop_last=True, pin_memory=device.type == "cuda",
                        persistent_workers=workers > 0)
    done, seen, t0 = 0, 0, 0.0
    while done < steps + warmup:
        for x, y in loader:
            if done == warmup:
                _sync(device)
                t0, seen = time.perf_counter(), 0
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x).logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            apply_masks_(params, masks)
            done += 1
            seen += y.numel()
            if done >= steps + warmup:
                break
    _sync(device)
    return seen / (time.perf_counter() - t0)


def plain_tensor_loop(arch: str, data: ImageData, *, device: torch.device, batch_size: int, precision: str,
                      channels_last: bool, compile_model: bool, compile_mode: str | None, steps: int, warmup: int,
                      density: float) -> float:
    """Device-resident uint8 data, on-device crop/flip, inline normalisation, masks re-applied after each step."""
    model = _model(arch, device, density=density).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    masks, params = model.masks, model.timm_parameters()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    forward = torch.compile(model, mode=compile_mode) if compile_model else model
    images, labels = data.images.to(device), data.labels.to(device)
    mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1) * 255
    std = torch.tensor(data.std, device=device).view(1, -1, 1, 1) * 255
    gen = torch.Generator(device=device).manual_seed(0)
    n = len(labels)
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    seen, t0 = 0, 0.0
    for done in range(steps + warmup):
        if done == warmup:
            _sync(device)
            t0, seen = time.perf_counter(), 0
        idx = torch.randint(0, n, (batch_size,), device=device, generator=gen)
        x = augment_batch(images[idx], pad=4, flip=True, generator=gen)
        x = (x.float() - mean) / std
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            loss = F.cross_entropy(forward(x).logits.float(), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        apply_masks_(params, masks)
        seen += batch_size
    _sync(device)
    return seen / (time.perf_counter() - t0)


def library_loop(arch: str, data: ImageData, *, config: TrainConfig, accelerator: Any, density: float) -> float:
    """The library's Trainer; the first epoch (compilation, warm-up) is not timed."""
    model = _model(arch, accelerator.device, density=density)
    trainer = Trainer(model, data, config, accelerator=accelerator, progress=False)
    try:
        history = trainer.train()
    finally:
        trainer.close()
    timed = history[1:] or history
    return sum(r.images_per_s * r.seconds for r in timed) / sum(r.seconds for r in timed)


def _machine(device: torch.device) -> dict[str, Any]:
    cpu_name = platform.processor() or "x86_64"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu_name, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "platform": platform.platform(), "python": platform.python_version(),
                            "torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    info["summary"] = info.get("gpu") or f"CPU ({cpu_name}, {info['cpus']} cores)"
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=None, help="architectures (default per preset)")
    parser.add_argument("--tiny", action="store_true", help="CPU preset: cifar_resnet20, 2,048 images, batch 64, fp32")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--density", type=float, default=0.2)
    parser.add_argument("--plain-batch", type=int, default=None, help="plain_loader batch size")
    parser.add_argument("--plain-workers", type=int, default=None, help="plain_loader DataLoader workers")
    parser.add_argument("--batch", type=int, default=None, help="library and plain_tensor batch size")
    parser.add_argument("--epochs", type=int, default=None, help="library epochs (the first is not timed)")
    parser.add_argument("--precision", default=None, choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--compile-mode", default=None,
                        help="torch.compile mode: default, reduce-overhead (CUDA graphs), max-autotune-no-cudagraphs")
    parser.add_argument("--repeats", type=int, default=None, help="runs of the three loops; medians are reported")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--loops", nargs="+", default=["plain_loader", "plain_tensor", "library"],
                        choices=["plain_loader", "plain_tensor", "library"])
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is visible")
    parser.add_argument("--json", type=Path, default=None, help="write (or merge into) this JSON file")
    parser.add_argument("--label", default=None, help="store the run under runs[LABEL] of --json")
    parser.add_argument("--note", default=None, help="free text stored with the run (e.g. the code version)")
    args = parser.parse_args()

    preset = ({"archs": ["cifar_resnet20"], "images": 1024, "plain_batch": 32, "plain_workers": 1, "batch": 32,
               "epochs": 2, "precision": "fp32", "compile": False, "compile_mode": "default", "repeats": 5,
               "threads": 1}
              if args.tiny else
              {"archs": ["cifar_resnet20", "cifar_resnet18"], "images": 50_000, "plain_batch": 128,
               "plain_workers": 8, "batch": 512, "epochs": 4, "precision": "bf16", "compile": True,
               "compile_mode": "default", "repeats": 1, "threads": None})
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    compile_mode = None if args.compile_mode == "default" else args.compile_mode
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device("cuda" if torch.cuda.is_available() and not (args.tiny or args.cpu) else "cpu")
    gen = torch.Generator().manual_seed(0)
    data = ImageData(torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=gen),
                     torch.randint(0, 10, (args.images,), generator=gen), 10, CIFAR_MEAN, CIFAR_STD, "random-cifar")
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=0.2, schedule="onecycle",
                         precision=args.precision, compile=args.compile, compile_mode=compile_mode)
    accelerator = make_accelerator(config, cpu=device.type == "cpu")
    steps = (args.images // args.batch) * (args.epochs - 1)  # as many timed steps as the library's timed epochs
    warmup = max(2, steps // 10)
    rows = []
    for arch in args.archs:
        samples: dict[str, list[float]] = {name: [] for name in args.loops}
        for _ in range(args.repeats):
            if "plain_loader" in samples:
                samples["plain_loader"].append(plain_loader_loop(
                    arch, data, device=device, batch_size=args.plain_batch, workers=args.plain_workers,
                    steps=steps * args.batch // args.plain_batch, warmup=warmup, density=args.density))
            if "plain_tensor" in samples:
                samples["plain_tensor"].append(plain_tensor_loop(
                    arch, data, device=device, batch_size=args.batch, precision=args.precision,
                    channels_last=device.type == "cuda", compile_model=args.compile, compile_mode=compile_mode,
                    steps=steps, warmup=warmup, density=args.density))
            if "library" in samples:
                samples["library"].append(library_loop(arch, data, config=config, accelerator=accelerator,
                                                       density=args.density))
        row: dict[str, Any] = {"arch": arch}
        for name, values in samples.items():
            row[f"{name}_img_s"] = round(statistics.median(values), 1)
            row[f"{name}_img_s_all"] = [round(v, 1) for v in values]
        if "library" in samples:
            for name in ("plain_loader", "plain_tensor"):
                if name in samples:
                    ratios = [lib / plain for lib, plain in zip(samples["library"], samples[name], strict=True)]
                    row[f"ratio_library_{name}"] = round(statistics.median(ratios), 3)
                    row[f"ratio_library_{name}_all"] = [round(v, 3) for v in ratios]
        rows.append(row)

    machine = _machine(device)
    print(f"machine: {machine['summary']}; torch {torch.__version__}; {args.density:.0%}-dense masks; "  # noqa: T201
          f"median of {args.repeats}")
    print(f"plain_loader: batch {args.plain_batch}, {args.plain_workers} workers, fp32 | plain_tensor and "  # noqa: T201
          f"library: batch {args.batch}, {args.precision}, compile={args.compile}")
    for r in rows:
        cells = "  ".join(f"{name} {r[f'{name}_img_s']:,.0f} img/s" for name in args.loops)
        ratios = "  ".join(f"{k.removeprefix('ratio_')} {v:.3f}" for k, v in r.items()
                           if k.startswith("ratio_") and not k.endswith("_all"))
        print(f"{r['arch']:<16}{cells}  |  {ratios}")  # noqa: T201
    if args.json:
        run = {"machine": machine, "command": shlex.join([Path(sys.executable).name, *sys.argv]),
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "library_path": str(Path(hlv.__file__).parent), "note": args.note,
               "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "timed_steps": steps, "loadavg": [round(v, 2) for v in os.getloadavg()], "rows": rows}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        if args.label:
            doc = json.loads(args.json.read_text()) if args.json.is_file() else {}
            doc.setdefault("runs", {})[args.label] = run
        else:
            doc = run
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
