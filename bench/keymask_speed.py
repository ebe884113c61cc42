"""Key-mask (Scheme V1) scoring cost on 2%-dense CIFAR ResNet tickets.

Usage:
    python bench/keymask_speed.py [--archs cifar_resnet20 cifar_resnet18 cifar_resnet50]
        [--density 0.02] [--ratio 0.05] [--sources 2048 4096] [--exact-archs cifar_resnet20 cifar_resnet18]
        [--repeat 1] [--json PATH]

Tickets are randomly initialised models pruned by global magnitude to ``--density``
(no training: the graph sizes and costs match real tickets, the scores' values do not).
For every architecture the script times the channel-graph construction, each scorer
(``compute_scores``) and the full split (``split_key_mask``: scoring plus the global
top-n). Betweenness is computed exactly for ``--exact-archs`` and with ``--sources``
sampled sources (one run per value) for every architecture; where both exist, the rank agreement of the
sampled scores with the exact ones is reported (Spearman over kept weights, without the
in-kernel tie-break, and the overlap of the two keys of ``n = ratio · kept`` weights).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import hf_lottery_verify as hlv
from hf_lottery_verify.keymask import compute_scores, list_scorers, split_key_mask
from hf_lottery_verify.keymask.graph import build_channel_graph
from hf_lottery_verify.masks import count_kept


def _timed(fn: Any, repeat: int) -> tuple[Any, float]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation with average ranks for ties (no scipy needed)."""

    def ranks(x: np.ndarray) -> np.ndarray:
        _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
        ends = np.cumsum(counts)
        return (ends - (counts - 1) / 2.0)[inverse]

    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def _flat(scores: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> np.ndarray:
    return torch.cat([scores[n][masks[n].cpu()] for n in masks]).numpy()


def bench_arch(arch: str, args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    model = hlv.SparseResNetForImageClassification(hlv.SparseResNetConfig(arch=arch))
    model.prune_(density=args.density)
    masks = model.masks
    kept = count_kept(masks)
    graph, t_graph = _timed(lambda: build_channel_graph(model), args.repeat)
    row: dict[str, Any] = {"arch": arch, "density": round(model.density, 6), "kept": kept,
                           "nodes": graph.num_nodes, "edges": graph.num_edges, "graph_s": round(t_graph, 3),
                           "n": round(args.ratio * kept), "runs": {}}
    runs = []
    for score in list_scorers():
        if score != "betweenness":
            runs.append((score, score, {}))
    if arch in args.exact_archs:
        runs.append(("betweenness (exact)", "betweenness", {}))
    for k in args.sources:
        runs.append((f"betweenness (sources={k})", "betweenness", {"sources": k}))
    keys = {}
    for label, score, options in runs:
        _, t_score = _timed(lambda s=score, o=options: compute_scores(model, score=s, seed=0, **o), args.repeat)
        (key, _), t_split = _timed(
            lambda s=score, o=options: split_key_mask(model, ratio=args.ratio, score=s, seed=0, **o), args.repeat)
        keys[label] = key
        row["runs"][label] = {"score_s": round(t_score, 3), "split_s": round(t_split, 3)}
        print(f"  {arch:<15} {label:<28} score {t_score:7.2f} s   split {t_split:7.2f} s", flush=True)
    exact_label = "betweenness (exact)"
    if exact_label in keys and args.sources:
        exact = _flat(compute_scores(model, score="betweenness", tiebreak=False), masks)
        row["sampled_vs_exact"] = []
        for k in args.sources:
            sampled = _flat(compute_scores(model, score="betweenness", tiebreak=False, sources=k), masks)
            key = keys[f"betweenness (sources={k})"]
            overlap = sum(int((keys[exact_label][n] & key[n]).sum()) for n in masks) / row["n"]
            row["sampled_vs_exact"].append({"sources": k, "spearman": round(_spearman(exact, sampled), 4),
                                            "key_overlap": round(overlap, 4)})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["cifar_resnet20", "cifar_resnet18", "cifar_resnet50"])
    parser.add_argument("--density", type=float, default=0.02)
    parser.add_argument("--ratio", type=float, default=0.05, help="key share of the kept weights")
    parser.add_argument("--sources", type=int, nargs="*", default=[2048],
                        help="sampled betweenness sources; several values run several samples")
    parser.add_argument("--exact-archs", nargs="*", default=["cifar_resnet20", "cifar_resnet18"],
                        help="architectures whose exact betweenness is also computed (ResNet-50: ~3 min)")
    parser.add_argument("--repeat", type=int, default=1, help="report the best of this many runs")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    machine = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
               "torch": torch.__version__, "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    print(f"{machine['cpus']} CPUs, {machine['torch_threads']} torch threads, load {machine['loadavg_start']}")
    rows = [bench_arch(arch, args) for arch in args.archs]
    machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]

    print()
    print(f"| arch | kept | nodes | edges | graph s | scorer | score s | split s (n = {args.ratio:g}·kept) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        for label, run in row["runs"].items():
            print(f"| {row['arch']} | {row['kept']:,} | {row['nodes']:,} | {row['edges']:,} | {row['graph_s']:.2f} "
                  f"| {label} | {run['score_s']:.2f} | {run['split_s']:.2f} |")
    for row in rows:
        for agree in row.get("sampled_vs_exact", []):
            print(f"{row['arch']}: {agree['sources']} sampled of {row['nodes']:,} sources vs exact: Spearman "
                  f"{agree['spearman']:.3f}, key overlap {agree['key_overlap']:.3f} (n = {row['n']:,})")
    print(f"load average at the end: {machine['loadavg_end']}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "args": vars(args) | {"json": str(args.json)},
                                         "results": rows}, indent=2))


if __name__ == "__main__":
    main()
