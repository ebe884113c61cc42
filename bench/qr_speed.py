"""Speed of Scheme V2 on a cifar_resnet50-sized mask set (2 CPU cores; goal: extraction in milliseconds).

Measures, best of --repeats runs, with the default (keyed) layout:
  * embedding with the defaults (slot derivation, whitening, writing, kept-count restoration,
    key section);
  * deriving the layout from the key alone (``signature_layout``: QR symbol, stages and slots
    recomputed from the key's secret and the architecture — the slots are never stored, so
    every verification pays this);
  * extraction + known-format decode from a suspect already read (``read_suspect``), with and
    without the zbar cross-check, and from the in-memory model (reading its weights included).

Usage:
    python bench/qr_speed.py --json bench/results/qr_speed_cpu.json
    python bench/qr_speed.py --arch cifar_resnet20 --density 0.1 --repeats 1     # a quick run
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

import torch

import hf_lottery_verify as hlv
from hf_lottery_verify.ownership_key import OwnershipKey
from hf_lottery_verify.signature import embed_signature, extract_signature, signature_layout
from hf_lottery_verify.suspect import read_suspect


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="cifar_resnet50")
    p.add_argument("--density", type=float, default=0.02)
    p.add_argument("--text", default="hf-lottery:owner@2026")
    p.add_argument("--seed", type=int, default=0, help="model init seed and signature seed")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    model = hlv.SparseResNetForImageClassification(hlv.SparseResNetConfig(arch=args.arch))
    model.prune_(density=args.density)
    owner = OwnershipKey(arch=args.arch, secret="ab" * 32)  # a fixed secret: runs repeat
    dc = best_of(lambda: copy.deepcopy(model), max(1, args.repeats // 2))  # subtracted from the embed timings

    embed = best_of(lambda: embed_signature(copy.deepcopy(model), args.text, key=owner, seed=args.seed),
                    max(1, args.repeats // 2))
    signed = copy.deepcopy(model)
    key = embed_signature(signed, args.text, key=owner, seed=args.seed)
    sec, symbol, slots = signature_layout(key)
    layout = best_of(lambda: signature_layout(dataclasses.replace(key)), args.repeats)
    suspect = read_suspect(signed)
    extract = best_of(lambda: extract_signature(suspect, key=key, cross_check=False), args.repeats)
    extract_zbar = best_of(lambda: extract_signature(suspect, key=key, cross_check=True), args.repeats)
    extract_model = best_of(lambda: extract_signature(signed, key=key, cross_check=False), max(1, args.repeats // 2))
    ev = extract_signature(suspect, key=key)

    rows = {
        "machine": f"{platform.machine()} CPU, torch threads={torch.get_num_threads()}",
        "command": "python " + " ".join(sys.argv),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": args.seed,
        "arch": args.arch, "density": args.density,
        "qr": f"v{symbol.version}-{symbol.ecc} ({symbol.num_data_modules} data modules)",
        "keyed": {
            "copies": sec.copies, "widths": list(sec.widths), "stages": [s.stage for s in slots],
            "slot_layers": sum(len(s.params) for s in slots),
            "embed_s": max(0.0, embed - dc), "derive_layout_s": layout,
            "extract_decode_s": extract, "extract_decode_zbar_s": extract_zbar,
            "extract_from_model_s": extract_model, "decoded": ev.matches,
            "security_bits": ev.security_bits, "required_bits": ev.required_bits,
            "compensated_elsewhere": sec.changes.get("compensated_elsewhere", 0),
        },
    }
    k = rows["keyed"]
    print(f"{args.arch} at {args.density:.0%} density, QR {rows['qr']} ({rows['machine']})")
    print(f"keyed: {k['copies']} copies (widths {k['widths']}) in {', '.join(k['stages'])} ({k['slot_layers']} layers)")
    print(f"  embedding (defaults)                     {k['embed_s'] * 1e3:8.1f} ms")
    print(f"  layout derived from the key              {layout * 1e3:8.1f} ms")
    print(f"  extraction + decode                      {extract * 1e3:8.1f} ms   decoded: {ev.matches} "
          f"({ev.security_bits:.0f} of {ev.required_bits:.0f} bits needed)")
    print(f"  extraction + decode + zbar cross-check   {extract_zbar * 1e3:8.1f} ms")
    print(f"  the same, reading the in-memory model    {extract_model * 1e3:8.1f} ms")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
