# QR decoder robustness: random module flips in the data area of a version-5-H symbol.
#
# For each flip rate p, flips p% of the data modules (uniformly at random, function patterns
# untouched) and reports how often each decoder recovers the exact text:
#   - image:    ZBar via pyzbar on the rendered symbol (decode_image)
#   - rs:       known-format Reed-Solomon decoding (decode_known)
#   - rs+erasures: decode_known with the flipped positions passed as erasures
# plus the median wall time of one decode. CPU only, single process.
#
# Usage (from the repository root; the package must be importable, e.g. `pip install -e .`
# or `PYTHONPATH=.`):
#   python bench/qr_decoder_robustness.py --trials 100 --seed 0 --json bench/results/qr_robustness.json
"""Benchmark the QR decoders of `hf_lottery_verify.qr` against random module flips."""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hf_lottery_verify.qr import QRSymbol, decode_image, decode_known, encode

DEFAULT_PAYLOAD = "hf-lottery-verify: owner=alice model=r20"
DEFAULT_RATES = (2.0, 3.0, 4.0, 6.0, 8.0)
METHODS = ("image", "rs", "rs+erasures")


@dataclass(frozen=True)
class MethodStats:
    success_rate: float
    median_ms: float


@dataclass(frozen=True)
class RateResult:
    flip_percent: float
    flipped_modules: int
    methods: dict[str, MethodStats]


def _decode(method: str, noisy: np.ndarray, flipped: np.ndarray, symbol: QRSymbol) -> str | None:
    if method == "image":
        return decode_image(noisy)
    params = {"version": symbol.version, "ecc": symbol.ecc, "mask_pattern": symbol.mask_pattern}
    erasures = flipped if method == "rs+erasures" else None
    return decode_known(noisy, erasures=erasures, **params).text


def run_rate(symbol: QRSymbol, flip_percent: float, *, trials: int, rng: np.random.Generator) -> RateResult:
    """Run `trials` random flip patterns at one rate and collect success rates and timings."""
    data_idx = np.flatnonzero(symbol.data_map.ravel())
    n_flip = round(flip_percent / 100.0 * data_idx.size)
    hits = dict.fromkeys(METHODS, 0)
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    for _ in range(trials):
        flipped = np.zeros(symbol.modules.size, dtype=bool)
        flipped[rng.choice(data_idx, size=n_flip, replace=False)] = True
        flipped = flipped.reshape(symbol.modules.shape)
        noisy = symbol.modules ^ flipped
        for method in METHODS:
            start = time.perf_counter()
            text = _decode(method, noisy, flipped, symbol)
            times[method].append((time.perf_counter() - start) * 1000.0)
            hits[method] += text == symbol.text
    return RateResult(
        flip_percent=flip_percent,
        flipped_modules=n_flip,
        methods={m: MethodStats(hits[m] / trials, statistics.median(times[m])) for m in METHODS},
    )


def format_table(results: list[RateResult]) -> str:
    header = f"{'flip %':>6} {'modules':>7} | " + " | ".join(f"{m:>11} {'ms':>6}" for m in METHODS)
    lines = [header, "-" * len(header)]
    for r in results:
        cells = " | ".join(f"{r.methods[m].success_rate:>11.2f} {r.methods[m].median_ms:>6.2f}" for m in METHODS)
        lines.append(f"{r.flip_percent:>6g} {r.flipped_modules:>7d} | {cells}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=100, help="random flip patterns per rate (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the flip patterns (default 0)")
    parser.add_argument(
        "--rates", type=float, nargs="+", default=list(DEFAULT_RATES), help="flip rates in percent of data modules"
    )
    parser.add_argument("--payload", default=DEFAULT_PAYLOAD, help="text to encode")
    parser.add_argument("--version", type=int, default=5, help="QR version (default 5)")
    parser.add_argument("--ecc", default="H", choices=["L", "M", "Q", "H"], help="ECC level (default H)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON to this path")
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    symbol = encode(args.payload, version=args.version, ecc=args.ecc)
    rng = np.random.default_rng(args.seed)
    # Warm the caches (placement order, RS codecs) so timings measure steady-state decoding.
    decode_known(symbol.modules, version=symbol.version, ecc=symbol.ecc, mask_pattern=symbol.mask_pattern)
    results = [run_rate(symbol, p, trials=args.trials, rng=rng) for p in args.rates]
    print(
        f"QR {symbol.version}-{symbol.ecc}, mask {symbol.mask_pattern}, {symbol.num_data_modules} data modules, "
        f"payload {len(args.payload.encode('utf-8'))} bytes, {args.trials} trials per rate, seed {args.seed}"
    )
    print("success rate (exact text) and median ms per decode")
    print(format_table(results))
    if args.json is not None:
        report = {
            "symbol": symbol.to_dict(),
            "trials": args.trials,
            "seed": args.seed,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "results": [asdict(r) for r in results],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
