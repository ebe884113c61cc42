"""How long does verification of a Hub repo take? Full (download + evidence) and quick (header claim).

A signed 2%-dense ``cifar_resnet50`` (23.5M parameters, a 94 MB ``model.safetensors``) is
pushed to a local Hub server started in this process; the real huggingface_hub client
downloads it. Timed, each over several repetitions (median reported):

* ``full_cold``: ``verify_hub_model(repo, key=...)`` with an empty cache (download included);
* ``full_cached``: the same with the files already in the cache (what a re-check costs);
* ``quick``: ``verify_hub_model(..., quick=True)`` — the claim from the header, read with
  HTTP range requests, nothing else downloaded.

Targets (issue "Verification and the Hub"): full ≤ 2 s, quick ≤ 100 ms on 2 CPU cores.

    python bench/verify_speed.py                 # writes bench/results/verify_speed_cpu.json
    python bench/verify_speed.py --arch cifar_resnet20 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from hf_lottery_verify.localhub import LocalHub, configure_hub_environment, reserved_socket

PORT = configure_hub_environment()  # before anything imports huggingface_hub


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="cifar_resnet50")
    parser.add_argument("--density", type=float, default=0.02)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "verify_speed_cpu.json"))
    args = parser.parse_args()

    import torch

    import hf_lottery_verify as hlv

    hub = LocalHub(port=PORT, sock=reserved_socket(PORT), users={"bench": os.environ["HF_TOKEN"]}).start()
    work = Path(tempfile.mkdtemp(prefix="verify-speed-"))
    try:
        torch.manual_seed(0)
        model = hlv.SparseResNetForImageClassification(hlv.SparseResNetConfig(arch=args.arch, num_labels=10))
        model.prune_(density=args.density)
        t0 = time.perf_counter()
        model.save_pretrained(work / "ticket", signature="owner@example.org 2026", key=work / "key.json")
        sign_s = time.perf_counter() - t0
        repo = "bench/verify-speed"
        t0 = time.perf_counter()
        model.push_to_hub(repo, key=work / "key.json")  # the commit anchors the key
        push_s = time.perf_counter() - t0
        size = (work / "ticket" / "model.safetensors").stat().st_size

        def cache_dir() -> Path:
            return Path(os.environ["HF_HOME"]) / "hub"

        timings: dict[str, list[float]] = {"full_cold": [], "full_cached": [], "quick": []}
        verdicts = set()
        for _ in range(args.repeats):
            shutil.rmtree(cache_dir(), ignore_errors=True)
            t0 = time.perf_counter()
            report = hlv.verify_hub_model(repo, key=work / "key.json")
            timings["full_cold"].append(time.perf_counter() - t0)
            verdicts.add(report.verdict)
            t0 = time.perf_counter()
            report = hlv.verify_hub_model(repo, key=work / "key.json")
            timings["full_cached"].append(time.perf_counter() - t0)
            verdicts.add(report.verdict)
            t0 = time.perf_counter()
            quick = hlv.verify_hub_model(repo, key=work / "key.json", quick=True)
            timings["quick"].append(time.perf_counter() - t0)
        stages = report.timings
        result = {
            "benchmark": "verify_speed",
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_version()}, "
                       f"torch {torch.__version__}",
            "command": "python bench/verify_speed.py " + " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "arch": args.arch, "density": args.density, "weights_bytes": size, "repeats": args.repeats,
            "sign_s": round(sign_s, 3), "push_s": round(push_s, 3),
            "median_s": {k: round(statistics.median(v), 4) for k, v in timings.items()},
            "all_s": {k: [round(x, 4) for x in v] for k, v in timings.items()},
            "stages_of_last_cached_run_s": stages,
            "verdicts": sorted(verdicts), "quick_claim_matches_key": quick.claim_matches_key,
            "targets": {"full_s": 2.0, "quick_s": 0.1},
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result["median_s"], indent=2), "verdicts:", sorted(verdicts))
    finally:
        hub.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
