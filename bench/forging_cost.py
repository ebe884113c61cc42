"""What forging a claim costs: grinding secrets against a model the claimant did not sign.

A claimant who writes a key after seeing a model cannot place the signature's slots or choose
trigger labels (both are derived from the key's secret, docs/SECURITY.md); what is left is to
try secrets until chance produces evidence. This script measures, on one machine:

* V2: the time of one try (derive the slots of a fresh secret, read the victim's mask there,
  try every combination the decoder tries) and, over ``--v2-tries`` secrets, the best security
  margin chance reached (a decode counts only with >= 40 bits plus log2 of the candidates);
* V3: the time of one try on the forger's cheapest route — fixed (loaded) trigger images whose
  answers he computes once, so a try is the key's scrypt stretch plus the label derivation —
  and on the procedural route (``--procedural-tries``: regenerate 100 images and query the
  victim); over ``--v3-tries`` secrets, how often chance agreement reached the inconclusive
  level (p <= 1e-3) against the exact binomial rate, and the smallest p-value.

The extrapolated cost of one forged ``owned`` verdict is the measured time per try over the
success probability per try (2^-42.8 for V2; 1e-12 for V3).

Usage:
    python bench/forging_cost.py                       # writes bench/results/forging_cost_cpu.json
    python bench/forging_cost.py --v2-tries 200 --v3-tries 200 --out /tmp/f.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers import make_model  # noqa: E402

from hf_lottery_verify.ownership_key import OwnershipKey  # noqa: E402
from hf_lottery_verify.signature import MIN_DECODE_SECURITY_BITS, embed_signature, extract_signature  # noqa: E402
from hf_lottery_verify.stats import trigger_p_value  # noqa: E402
from hf_lottery_verify.triggers import add_triggers, predict_labels, triggers_from_key  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="cifar_resnet20")
    parser.add_argument("--v2-tries", type=int, default=1000)
    parser.add_argument("--v3-tries", type=int, default=2000)
    parser.add_argument("--procedural-tries", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "forging_cost_cpu.json"))
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    victim = make_model(args.arch, density=0.1, seed=args.seed)  # Alice's signed ticket (her key is not used)
    embed_signature(victim, "alice 2026", key=OwnershipKey(arch=args.arch))
    victim.eval()

    t0 = time.perf_counter()
    best_bits, decoded, times = 0.0, 0, []
    for i in range(args.v2_tries):
        t = time.perf_counter()
        forged = OwnershipKey(arch=args.arch, secret=f"{args.seed:08x}{i:056x}").with_section(
            "signature", {"text": "mallory 2026", "widths": [2, 2, 2]})
        ev = extract_signature(victim, key=forged, cross_check=False)
        times.append(time.perf_counter() - t)
        decoded += ev.text is not None
        best_bits = max(best_bits, ev.security_bits if ev.text is not None else 0.0)
        assert not ev.matches
    v2_try = statistics.median(times)
    required = ev.required_bits
    v2 = {"tries": args.v2_tries, "seconds": round(time.perf_counter() - t0, 1), "median_try_s": round(v2_try, 4),
          "decodes_of_any_text": decoded, "best_security_bits_of_a_decode": best_bits, "required_bits": required,
          "expected_tries_per_forgery": 2.0 ** required,
          "cpu_years_per_forgery": 2.0 ** required * v2_try / 3.15e7}

    from hf_lottery_verify.triggers import make_trigger_set

    fixed = make_trigger_set(100, num_classes=10, seed=args.seed)
    answers = predict_labels(victim, fixed, mean=(0.5,) * 3, std=(0.5,) * 3)  # computed once by the forger
    t0 = time.perf_counter()
    hits, best_p, times = 0, 1.0, []
    level = 1e-3
    for i in range(args.v3_tries):
        t = time.perf_counter()
        key = add_triggers(OwnershipKey(arch=args.arch, secret=f"{args.seed + 1:08x}{i:056x}"), num_classes=10,
                           images=fixed.images)
        p = trigger_p_value(int((answers == triggers_from_key(key).labels).sum()), 100, 10)
        times.append(time.perf_counter() - t)
        hits += p <= level
        best_p = min(best_p, p)
    v3_try = statistics.median(times)
    procedural = []
    for i in range(args.procedural_tries):
        t = time.perf_counter()
        triggers = triggers_from_key(add_triggers(OwnershipKey(arch=args.arch, secret=f"{i + 7:064x}"),
                                                  num_classes=10, n=100))
        predict_labels(victim, triggers, mean=(0.5,) * 3, std=(0.5,) * 3)
        procedural.append(time.perf_counter() - t)
    rate = trigger_p_value(21, 100, 10)  # the smallest match count at p <= 1e-3 is 21 of 100
    v3 = {"tries": args.v3_tries, "seconds": round(time.perf_counter() - t0, 1), "median_try_s": round(v3_try, 4),
          "route": "loaded images, answers cached", "inconclusive_level": level,
          "hits_at_inconclusive_level": hits, "expected_hits": round(args.v3_tries * rate, 3), "smallest_p": best_p,
          "victim_answers_distinct_classes": int(answers.unique().numel()),
          "procedural_route_median_try_s": round(statistics.median(procedural), 3) if procedural else None,
          "owned_alpha": 1e-12, "expected_tries_per_forgery": 1e12,
          "cpu_years_per_forgery": 1e12 * v3_try / 3.15e7}
    result = {
        "benchmark": "forging_cost",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads",
        "command": "python bench/forging_cost.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seed": args.seed, "arch": args.arch,
        "min_decode_security_bits": MIN_DECODE_SECURITY_BITS, "v2": v2, "v3": v3,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
