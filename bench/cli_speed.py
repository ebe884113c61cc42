"""How fast ``hf-lottery`` answers ``--help`` and user errors (issue 19: under 1.5 s on a quiet 2-core machine).

Each command runs ``--repeat`` times in a fresh process; the median and worst wall times go to
``bench/results/cli_speed_cpu.json``, with the machine's load average before and after (a busy
machine reads slower). Nothing is asserted: the figures are the result.

    PYTHONPATH=$PWD python bench/cli_speed.py [--repeat 5] [--out bench/results/cli_speed_cpu.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "--help": ["--help"],
    "verify --help": ["verify", "--help"],
    "missing model folder": ["sign", "/no/such/ticket", "--signature", "x", "--key-out", "/tmp/k.json", "--out", "/tmp/o"],
    "missing key": ["verify", "alice/model", "--key", "/no/such/key.json"],
    "missing suspect path": ["verify", "./no/such/folder", "--key", __file__],
    "--out is the input": ["retrain", ".", "--rewind", ".", "--out", "."],
    "bad flag value": ["calibrate", "--key", __file__, "--n", "many"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "cli_speed_cpu.json")
    args = parser.parse_args()
    exe = [sys.executable, "-c", "import sys; from hf_lottery_verify.cli import main; sys.exit(main())"]
    load_before, rows = os.getloadavg(), {}
    for name, words in COMMANDS.items():
        times, codes = [], set()
        for _ in range(args.repeat):
            start = time.perf_counter()
            done = subprocess.run([*exe, *words], capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            codes.add(done.returncode)
        rows[name] = {"command": "hf-lottery " + " ".join(words), "median_s": round(statistics.median(times), 3),
                      "max_s": round(max(times), 3), "exit_codes": sorted(codes),
                      "stderr": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""}
        print(f"{name:24s} median {rows[name]['median_s']:.2f} s  max {rows[name]['max_s']:.2f} s  exit {sorted(codes)}")
    result = {"machine": f"{platform.machine()} CPU, {os.cpu_count()} cores", "python": platform.python_version(),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "repeat": args.repeat,
              "command": "python bench/cli_speed.py " + " ".join(sys.argv[1:]),
              "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
