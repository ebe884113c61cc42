"""Does ``hf-lottery serve`` hold under load and abuse? Throughput, slow clients, large images.

Starts ``hf-lottery serve`` on a tiny saved ``cifar_resnet8`` in a subprocess (so its memory
and threads are its own; ``PYTHONPATH`` picks which copy of the package is served) and runs:

* ``load``: ``--clients`` (200) threads, released together by a barrier, each POSTing one
  32×32 PNG with ``http.client`` (one connection each, timeout ``--timeout``); requests/s,
  p50/p99 latency, dropped (no answer before the timeout) and failed (another status) counts;
* ``slowloris``: ``--slow`` (100) connections that send a valid ``GET /`` one byte every
  ``--slow-interval`` seconds, while a normal client queries every 0.5 s; how long the server
  lets them hold their connection (until it closes it or answers), its peak thread count, and
  how the normal client fared meanwhile;
* ``large``: ``--large`` (16) concurrent ``--large-side``² (4096²) PNGs (smooth, so each
  body is well under the 10 MiB limit); the server's peak RSS (``VmHWM``, reset before the
  phase through ``/proc/<pid>/clear_refs``) against its RSS before, and the statuses.

Results go under ``--label`` in ``--out`` (other labels in the file are kept), so one file
holds a before/after comparison:

    python bench/serve_load.py --label after
    git archive main | tar -x -C /tmp/serve-main     # main's serve.py, served from a copy
    PYTHONPATH=/tmp/serve-main python bench/serve_load.py --label before --note "main's serve.py"
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path


def _proc_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _post(port: int, body: bytes, timeout: float) -> tuple[int | str, float]:
    """``(HTTP status, or the error's name when no answer came, seconds)``."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/", body, {"Content-Type": "image/png"})
        resp = conn.getresponse()
        resp.read()
        return resp.status, time.perf_counter() - t0
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__, time.perf_counter() - t0
    finally:
        conn.close()


def _concurrent(port: int, bodies: list[bytes], timeout: float) -> tuple[list[tuple[int | str, float]], float]:
    results: list[tuple[int | str, float]] = [("not run", 0.0)] * len(bodies)
    barrier = threading.Barrier(len(bodies) + 1)

    def client(i: int) -> None:
        barrier.wait()
        results[i] = _post(port, bodies[i], timeout)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(len(bodies))]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return results, time.perf_counter() - t0


def _summary(results: list[tuple[int | str, float]], wall: float) -> dict:
    ok = sorted(s for status, s in results if status == 200)
    q = statistics.quantiles(ok, n=100) if len(ok) > 1 else ok * 99
    outcomes = [str(status) for status, _ in results]
    return {"requests": len(results), "answered_200": len(ok),
            "dropped": sum(isinstance(status, str) for status, _ in results),  # no HTTP answer at all
            "failed": sum(isinstance(status, int) and status != 200 for status, _ in results),
            "outcomes": {o: outcomes.count(o) for o in sorted(set(outcomes))},
            "wall_s": round(wall, 3), "requests_per_s": round(len(ok) / wall, 1) if wall else None,
            "p50_s": round(q[49], 4) if ok else None, "p99_s": round(q[98], 4) if ok else None,
            "max_s": round(ok[-1], 4) if ok else None}


def _slowloris(port: int, pid: int, n: int, interval: float, small: bytes) -> dict:
    request = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: slow\r\n\r\n".encode()
    held: list[float] = []
    lock = threading.Lock()
    done = threading.Event()

    def slow() -> None:
        t0 = time.perf_counter()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                for byte in request:
                    s.sendall(bytes([byte]))
                    s.settimeout(interval)
                    try:
                        s.recv(4096)  # an answer (408, or 200 once the request is complete) or the close
                        break
                    except TimeoutError:
                        continue
                else:
                    s.settimeout(30)
                    s.recv(4096)
        except OSError:
            pass
        with lock:
            held.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=slow, daemon=True) for _ in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    peak_threads, probes = 0, []

    def watch() -> None:
        nonlocal peak_threads
        while not done.is_set():
            peak_threads = max(peak_threads, _proc_status(pid, "Threads"))
            probes.append(_post(port, small, 10.0))
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    answered = [s for status, s in probes if status == 200]
    return {"connections": n, "byte_interval_s": interval, "request_bytes": len(request),
            "held_max_s": round(max(held), 2), "held_median_s": round(statistics.median(held), 2),
            "all_closed_after_s": round(time.perf_counter() - t0, 2), "server_peak_threads": peak_threads,
            "normal_requests_meanwhile": len(probes), "normal_answered": len(answered),
            "normal_max_latency_s": round(max(answered), 3) if answered else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", default="after")
    parser.add_argument("--note", default="", help="what is served (e.g. which commit's serve.py)")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--slow", type=int, default=100)
    parser.add_argument("--slow-interval", type=float, default=1.0)
    parser.add_argument("--large", type=int, default=16)
    parser.add_argument("--large-side", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "serve_load_cpu.json"))
    args = parser.parse_args()

    import numpy as np
    import torch

    import hf_lottery_verify as hlv
    from hf_lottery_verify.blackbox import encode_png

    work = Path(tempfile.mkdtemp(prefix="serve-load-"))
    torch.manual_seed(args.seed)
    hlv.SparseResNetForImageClassification(hlv.SparseResNetConfig(arch="cifar_resnet8", num_labels=10)) \
        .save_pretrained(work / "model")
    g = torch.Generator().manual_seed(args.seed)
    small = [encode_png(x) for x in torch.randint(0, 256, (args.clients, 3, 32, 32), generator=g, dtype=torch.uint8)]
    rng = np.random.default_rng(args.seed)
    side = args.large_side
    ramp = np.add.outer(np.arange(side), np.arange(side)) // 32  # smooth: a small PNG that decodes to side²
    large = []
    for _ in range(args.large):
        rgb = np.stack([(ramp + rng.integers(0, 256)) % 256 for _ in range(3)]).astype(np.uint8)
        large.append(encode_png(torch.from_numpy(rgb)))

    proc = subprocess.Popen([sys.executable, "-c", "from hf_lottery_verify.cli import main; raise SystemExit(main())", "serve", str(work / "model"),
                             "--port", "0"], stdout=subprocess.PIPE, text=True, cwd=work)  # cwd: not this checkout
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not match:
            raise SystemExit(f"the server did not start: {line!r}")
        port, pid = int(match.group(1)), proc.pid
        _post(port, small[0], 30)  # warm up
        result: dict = {"package": str(Path(hlv.__file__).parent), "note": args.note,
                        "load_average_1m_at_start": round(os.getloadavg()[0], 2)}
        results, wall = _concurrent(port, small, args.timeout)
        result["load"] = _summary(results, wall) | {"server_threads_after": _proc_status(pid, "Threads")}
        print("load", json.dumps(result["load"]), flush=True)
        result["slowloris"] = _slowloris(port, pid, args.slow, args.slow_interval, small[0])
        print("slowloris", json.dumps(result["slowloris"]), flush=True)
        rss_before = _proc_status(pid, "VmRSS")
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        results, wall = _concurrent(port, large, args.timeout)
        result["large"] = _summary(results, wall) | {
            "images": args.large, "side": side, "png_bytes_mean": int(statistics.mean(map(len, large))),
            "rss_before_mb": round(rss_before / 1024, 1),
            "peak_rss_mb": round(_proc_status(pid, "VmHWM") / 1024, 1),
            "added_mb": round((_proc_status(pid, "VmHWM") - rss_before) / 1024, 1)}
        print("large", json.dumps(result["large"]), flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.exists() else {}
    data.update({"benchmark": "serve_load",
                 "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), "
                            f"{platform.python_version()}, torch {torch.__version__}"})
    data[args.label] = {"command": "python bench/serve_load.py " + " ".join(
        f"--{k.replace('_', '-')} {v!r}" if k == "note" else f"--{k.replace('_', '-')} {v}"
        for k, v in vars(args).items() if k != "out"),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seed": args.seed, **result}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
