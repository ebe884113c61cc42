"""Speed of channel re-alignment on 2%-dense CIFAR ResNets (2 CPU cores; goal: an unmodified
cifar_resnet50 aligns well under 1 s, the whole verification of such a repo in at most 2 s).

Measures, best of --repeats runs, per architecture:
  * ``make_reference`` (owner side, once) and the reference's size in the key (JSON + tensors);
  * the liveness analysis of the model's state dict (every verification runs it on the suspect)
    and the reference's live part (``Reference.live_only``, once per verification);
  * reading it back from the key section (``Reference.from_section``: the declared shapes are
    checked against the architecture before anything is decoded; every verification pays it);
  * ``align_suspect`` on the unmodified model (the common case: the diagonal is checked and
    accepted), on a permuted copy (full comparisons and assignments), on a permuted,
    rescaled and widened copy (duplicates folded), and on a permuted copy whose kernels are
    all mirrored (the orientation is found from the stem first);
  * ``recover_aligned_masks`` after the unmodified and the permuted alignment;
  * the alignment's confidence on each suspect and on an independently initialised model.

Tickets are randomly initialised models pruned by global magnitude (no training): at 2% the
deep 3x3 layers of cifar_resnet50 keep almost nothing, so many channels are dead; trained
tickets are more even. Run once per --threads value (torch intra-op threads).

Usage:
    python bench/alignment_speed.py --threads 1 2 --json bench/results/alignment_speed_cpu.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

import hf_lottery_verify as hlv
from hf_lottery_verify.alignment import Reference, align_suspect, make_reference, recover_aligned_masks
from hf_lottery_verify.attacks import mirror_attack
from hf_lottery_verify.attacks.structural import add_dummy_channels, permute_channels, rescale_channels
from hf_lottery_verify.liveness import liveness


def best_of(fn: Any, repeats: int) -> tuple[Any, float, float]:
    """``(result, best wall seconds, CPU seconds of that run)``."""
    best, cpu, out = float("inf"), 0.0, None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall = time.perf_counter() - t0
        if wall < best:
            best, cpu = wall, time.process_time() - c0
    return out, best, cpu


def ticket(arch: str, density: float, seed: int) -> hlv.SparseResNetForImageClassification:
    torch.manual_seed(seed)
    model = hlv.SparseResNetForImageClassification(hlv.SparseResNetConfig(arch=arch))
    model.prune_(density=density)
    return model.eval()


def bench_arch(arch: str, args: argparse.Namespace) -> dict[str, Any]:
    model = ticket(arch, args.density, args.seed)
    reference, t_ref, _ = best_of(lambda: make_reference(model), max(1, args.repeats // 2))
    data, tensors = reference.to_section()
    _, t_load, _ = best_of(lambda: Reference.from_section(data, tensors), args.repeats)
    _, t_live_ref, _ = best_of(lambda: Reference.from_section(data, tensors).live_only, args.repeats)
    state = {k: v.detach() for k, v in model.timm_model.state_dict().items()}
    _, t_live, _ = best_of(lambda: liveness(state, arch=arch), args.repeats)
    row: dict[str, Any] = {
        "arch": arch, "density": round(model.density, 6), "make_reference_s": round(t_ref, 4),
        "load_reference_s": round(t_load, 4), "liveness_s": round(t_live, 4),
        "reference_live_only_s": round(t_live_ref - t_load, 4),
        "reference_bytes": reference.nbytes(), "reference_json_bytes": len(json.dumps(data)),
        "reference_tensor_bytes": sum(t.numel() * t.element_size() for t in tensors.values()),
    }
    suspects = {
        "unmodified": model,
        "permuted": permute_channels(model, seed=1),
        "permuted_rescaled_widened": add_dummy_channels(rescale_channels(permute_channels(model, seed=1), seed=2),
                                                        seed=3, per_space=2),
        "mirrored_permuted": permute_channels(mirror_attack(model, transform="flip_lr", wrap=False), seed=1),
        "unrelated": ticket(arch, args.density, args.seed + 1),
    }
    for label, suspect in suspects.items():
        state = {k: v.detach() for k, v in suspect.timm_model.state_dict().items()}
        repeats = args.repeats if label in ("unmodified", "permuted") else 1
        alignment, wall, cpu = best_of(lambda s=state: align_suspect(s, reference), repeats)
        entry = {"align_s": round(wall, 4), "align_cpu_s": round(cpu, 4), "confidence": round(alignment.confidence, 4),
                 "permuted": alignment.permuted, "rescaled": alignment.rescaled, "widened": alignment.widened,
                 "transform": alignment.transform}
        if label != "unrelated":
            masks, t_rec, _ = best_of(lambda a=alignment: recover_aligned_masks(a, reference), 1)
            exact = all(torch.equal(masks[n], reference.live_only.masks[n]) for n in reference.masks)
            entry.update(recover_s=round(t_rec, 4), masks_exact=exact)
        row[label] = entry
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", nargs="+", default=["cifar_resnet20", "cifar_resnet50"])
    p.add_argument("--density", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    load_start = os.getloadavg()
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        rows += [{"threads": threads, **bench_arch(arch, args)} for arch in args.archs]
    result = {
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, {platform.platform()}",
        "loadavg_start": [round(v, 2) for v in load_start],
        "loadavg_end": [round(v, 2) for v in os.getloadavg()],
        "command": "python " + " ".join(sys.argv),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "note": ("best of --repeats wall-clock runs; align_cpu_s is the process CPU time of that run. Measured "
                 "on a shared machine (see loadavg): wall times grow with the load, and with 2 torch threads "
                 "OpenMP spin-waits under oversubscription inflate CPU time too"),
        "results": rows,
    }
    for row in rows:
        print(f"[{row['threads']} thread(s)] {row['arch']} at {row['density']:.1%}: reference {row['reference_bytes'] / 1e3:.0f} kB "
              f"(make {row['make_reference_s']:.2f} s, read back from the key {row['load_reference_s']:.3f} s)")
        for label in ("unmodified", "permuted", "permuted_rescaled_widened", "unrelated"):
            e = row[label]
            extra = f", recover {e['recover_s']:.2f} s, masks exact {e['masks_exact']}" if "recover_s" in e else ""
            print(f"  {label:26s} align {e['align_s']:.3f} s (cpu {e['align_cpu_s']:.3f} s), "
                  f"confidence {e['confidence']:.3f}{extra}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
