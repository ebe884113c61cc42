"""Checkpoint size of a 2%-dense CIFAR ResNet-18: dense layout vs compact layout.

Usage:
    python bench/storage_size.py [--arch cifar_resnet18] [--density 0.02] [--json PATH]

Prunes a randomly initialised model by global magnitude to the target density, saves
both layouts, reloads them and checks that weights and masks come back bit-exact.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import hf_lottery_verify as hlv
from hf_lottery_verify.codecs import pack_bits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="cifar_resnet18")
    parser.add_argument("--density", type=float, default=0.02)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = hlv.SparseResNetForImageClassification(hlv.SparseResNetConfig(arch=args.arch))
    model.prune_(density=args.density)
    n_params = sum(p.numel() for p in model.timm_model.parameters())
    packed_mask_bytes = sum(pack_bits(m).numel() for m in model.masks.values())
    results = {"arch": args.arch, "density": model.density, "parameters": n_params,
               "dense_fp32_bytes_no_masks": 4 * sum(t.numel() for t in model.timm_model.state_dict().values()
                                                    if t.is_floating_point()),
               "bit_packed_masks_bytes": packed_mask_bytes}
    ref = model.timm_model.state_dict()
    with tempfile.TemporaryDirectory() as tmp:
        for layout, compact in (("dense", False), ("compact", True)):
            folder = Path(tmp) / layout
            t0 = time.perf_counter()
            model.save_pretrained(folder, compact=compact)
            t_save = time.perf_counter() - t0
            t0 = time.perf_counter()
            back = hlv.load_model(folder)
            t_load = time.perf_counter() - t0
            exact = all(torch.equal(ref[k], v) for k, v in back.timm_model.state_dict().items()) and all(
                torch.equal(model.masks[k], back.masks[k]) for k in model.masks
            )
            results[f"{layout}_file_bytes"] = (folder / "model.safetensors").stat().st_size
            results[f"{layout}_save_s"] = round(t_save, 3)
            results[f"{layout}_load_s"] = round(t_load, 3)
            results[f"{layout}_bit_exact"] = exact
    mb = 1e6
    print(f"{args.arch} at {results['density']:.4%} density ({n_params:,} parameters)")
    print(f"  dense fp32 weights alone      {results['dense_fp32_bytes_no_masks'] / mb:8.2f} MB")
    print(f"  bit-packed masks alone        {results['bit_packed_masks_bytes'] / mb:8.2f} MB")
    for layout in ("dense", "compact"):
        print(f"  {layout:<7} model.safetensors    {results[f'{layout}_file_bytes'] / mb:8.2f} MB"
              f"  (save {results[f'{layout}_save_s']:.2f} s, load {results[f'{layout}_load_s']:.2f} s,"
              f" bit-exact: {results[f'{layout}_bit_exact']})")
    print(f"  compact / dense               {results['compact_file_bytes'] / results['dense_file_bytes']:8.3f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
