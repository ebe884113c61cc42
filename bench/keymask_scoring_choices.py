#!/usr/bin/env python
# ---------------------------------------------------------------------------------------------------------
# Scheme V1 key masks: which scoring choices protect a ticket? Two questions, measured on real tickets.
#
#   1. Betweenness edge lengths. igraph treats edge weights as shortest-path LENGTHS, so using the paper's
#      edge weight Σ|kernel| as the length ("abs_length", the old default) makes shortest paths avoid strong
#      kernels. For each length mode ("abs_length", "inverse" = 1/Σ|kernel|, "neglog" = −log of the
#      normalised strength, "none" = hops) this measures the Spearman correlation between a kernel's
#      betweenness and its strength Σ|kernel|, and the Figure-2 quantity: how much accuracy the locked
#      ticket loses when it is retrained from the rewind weights without the key.
#   2. Which weights Algorithm 1 scores: the trained ticket (the library's default) or the rewind weights
#      W_k (the paper's reference code), for omp and ewp; same Figure-2 quantity, plus the overlap of the
#      two keys.
#
# Every seed is one ticket: a dense cifar_resnet20_a (the paper's option-A ResNet-20) trained on a
# Fashion-MNIST subset with a short one-cycle schedule, pruned by IMP with late rewinding
# (find_extreme_ticket), then split by every configuration; keymask_fidelity retrains the full mask once
# and every locked mask from W_k with the same training seed, so only the mask differs between arms. A
# random key is run as a control (the drop any key of that size causes).
#
# Hardware: CPU. One seed (ticket search plus 10 retraining arms of 3 epochs on 2,000 images) costs about
# 185 CPU-seconds with one torch thread, so the default 8 seeds take about 12.5 minutes on 2 idle cores
# (two processes); on the shared 2-core machine of the recorded run (load average 7-16) the wall time was
# 82 minutes. Arms are cached in --work-dir, so seeds run in parallel processes and a last call with every
# seed only writes the report:
#     for s in 0 1 2 3 4 5 6 7; do python bench/keymask_scoring_choices.py --seeds $s --threads 1 --no-report & done
#     wait; python bench/keymask_scoring_choices.py --threads 1
# Writes bench/results/keymask_scoring_choices_cpu.{json,md} (machine, commands, seeds, date, every arm).
# ---------------------------------------------------------------------------------------------------------
"""Measure Scheme V1 scoring choices: betweenness edge lengths and trained vs rewind weights (Figure-2 drop)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import hf_lottery_verify  # noqa: F401  (registers the CIFAR ResNets with timm)
from hf_lottery_verify import load_model
from hf_lottery_verify.data import DatasetPair, load_image_dataset
from hf_lottery_verify.imp import IMPConfig, find_extreme_ticket
from hf_lottery_verify.keymask import compute_scores, split_key_mask
from hf_lottery_verify.keymask.graph import build_channel_graph
from hf_lottery_verify.masks import count_kept
from hf_lottery_verify.training import TrainConfig, make_accelerator
from hf_lottery_verify.workflows import keymask_fidelity

RESULT_NAME = "keymask_scoring_choices_cpu"
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class BenchConfig:
    """Settings of the measurement (every field is a ``--flag``).

    Attributes:
        arch: timm architecture of the tickets.
        dataset: Dataset name.
        train_limit: Training images.
        test_limit: Test images.
        data_seed: Seed of the data subsets (the same for every ticket).
        epochs: Epochs of the schedule (dense run; retraining runs rewind_epoch..epochs).
        batch_size: Batch size.
        lr: Peak learning rate.
        weight_decay: L2 weight decay.
        pad: Random-crop padding.
        rewind_epoch: Late-rewinding epoch k.
        imp_ratio: Pruning ratio of every IMP round.
        imp_rounds: IMP rounds (density (1 - imp_ratio) ** imp_rounds).
        ratio: Key share rspar(M_s, M) of the kept weights.
        seeds: Ticket seeds: initialisation, data order and split seed of one ticket each.
        betweenness_modes: Betweenness edge-length modes to compare (question 1).
        weight_scorers: Scorers compared on trained vs rewind weights (question 2).
        controls: Scorers run once as controls (trained weights).
    """

    arch: str = "cifar_resnet20_a"
    dataset: str = "fashion_mnist"
    train_limit: int = 2000
    test_limit: int = 2000
    data_seed: int = 0
    epochs: int = 4
    batch_size: int = 64
    lr: float = 0.1
    weight_decay: float = 1e-4
    pad: int = 2
    rewind_epoch: int = 1
    imp_ratio: float = 0.8
    imp_rounds: int = 2
    ratio: float = 0.2
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7)
    betweenness_modes: tuple[str, ...] = ("abs_length", "inverse", "neglog", "none")
    weight_scorers: tuple[str, ...] = ("omp", "ewp")
    controls: tuple[str, ...] = ("random",)

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, schedule="onecycle",
                           weight_decay=self.weight_decay, pad=self.pad, seed=seed, eval_batch_size=500)

    def arms(self) -> list[dict[str, Any]]:
        """Every configuration, in run order: ``{label, question, score, scored_on, options}``."""
        out = [{"label": f"betweenness/{m}", "question": 1, "score": "betweenness", "scored_on": "trained",
                "options": {"weights": m}} for m in self.betweenness_modes]
        for score in self.weight_scorers:
            for on in ("trained", "rewind"):
                out.append({"label": f"{score}/{on}", "question": 2, "score": score, "scored_on": on, "options": {}})
        out += [{"label": f"{s}/trained", "question": 0, "score": s, "scored_on": "trained", "options": {}}
                for s in self.controls]
        return out


# ------------------------------------------------------------------------------------------------ helpers


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation with average ranks for ties."""

    def ranks(x: np.ndarray) -> np.ndarray:
        _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
        ends = np.cumsum(counts)
        return (ends - (counts - 1) / 2.0)[inverse]

    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def kernel_spearman(ticket: torch.nn.Module, mode: str) -> dict[str, float]:
    """Spearman of betweenness (no tie-break) against kernel strength Σ|kernel|, over kernels with a kept
    weight; and of the scorer's weight scores (with tie-break) against |w|, over kept weights."""
    masks = ticket.masks
    graph = build_channel_graph(ticket, masks)
    raw = compute_scores(ticket, score="betweenness", weights=mode, tiebreak=False)
    bc, strength = [], []
    for name in masks:
        e = graph.edges_of(name)
        kernel = raw[name].flatten(2)[..., 0] if raw[name].dim() > 2 else raw[name]
        bc.append(kernel[graph.out_channel[e], graph.in_channel[e]].numpy())
        strength.append(graph.weight[e])
    scores = compute_scores(ticket, score="betweenness", weights=mode)
    params = ticket.timm_parameters()
    s = torch.cat([scores[n][masks[n]] for n in masks]).numpy()
    a = torch.cat([params[n].detach().abs().double()[masks[n]] for n in masks]).numpy()
    return {"spearman_kernel_strength": spearman(np.concatenate(bc), np.concatenate(strength)),
            "spearman_weight_abs": spearman(s, a)}


def key_stats(ticket: torch.nn.Module, key: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean |w| (trained weights) of the key relative to the mean over all kept weights."""
    params, masks = ticket.timm_parameters(), ticket.masks
    in_key = torch.cat([params[n].detach().abs()[key[n]] for n in key])
    kept = torch.cat([params[n].detach().abs()[masks[n]] for n in masks])
    return {"key_mean_abs_over_kept": float(in_key.mean() / kept.mean())}


def jaccard(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    inter = sum(int((a[n] & b[n]).sum()) for n in a)
    union = sum(int((a[n] | b[n]).sum()) for n in a)
    return inter / union if union else 1.0


def machine_description() -> dict[str, Any]:
    return {
        "summary": f"{os.cpu_count()}-core CPU, no GPU" if not torch.cuda.is_available()
        else f"{os.cpu_count()}-core CPU, GPU: {torch.cuda.get_device_name()}",
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def command() -> str:
    """This process's command line (the text of ``--note`` options, which fill the Notes section, left out)."""
    argv, notes, skip = [], 0, False
    for arg in sys.argv:
        if skip:
            skip = False
        elif arg == "--note":
            notes, skip = notes + 1, True
        elif arg.startswith("--note="):
            notes += 1
        else:
            argv.append(arg)
    return shlex.join(["python", *argv]) + (f"  # plus {notes} --note lines (the Notes section)" if notes else "")


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def save_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)


# ------------------------------------------------------------------------------------------------ one seed


def run_seed(config: BenchConfig, seed: int, data: DatasetPair, work: Path, progress: bool) -> dict[str, Any]:
    """Find the ticket of ``seed`` and run every arm not cached yet; returns the seed's record."""
    cache_path = work / f"seed{seed}" / "arms.json"
    record = load_json(cache_path)
    settings = json.loads(json.dumps(dataclasses.asdict(config) | {"seeds": None}))  # tuples as JSON lists
    if record.get("config") not in (None, settings):
        raise SystemExit(f"{cache_path} holds arms of other settings; pass another --work-dir.")
    record["config"] = settings
    record.setdefault("arms", {})
    train_config = config.train_config(seed)
    acc = make_accelerator(train_config, cpu=True)

    t0, c0 = time.perf_counter(), time.process_time()
    imp = find_extreme_ticket(
        config.arch, data, out_dir=work / f"seed{seed}" / "imp", accelerator=acc, progress=progress,
        config=IMPConfig(train=train_config, rewind_epoch=config.rewind_epoch, ratios=(config.imp_ratio,),
                         epsilon=100.0, max_rounds=config.imp_rounds, init_seed=seed))
    ticket, rewind = load_model(imp.ticket_dir), load_model(imp.rewind_dir)
    if "ticket" not in record:
        record["ticket"] = {"dense_accuracy": imp.dense_accuracy, "ticket_accuracy": imp.ticket_accuracy,
                            "density": imp.ticket_density, "kept": count_kept(ticket.masks),
                            "seconds": round(time.perf_counter() - t0, 1),
                            "cpu_s": round(time.process_time() - c0, 1), "command": command(),
                            "rounds": [dataclasses.asdict(r) for r in imp.rounds]}
        save_json(cache_path, record)
    print(f"seed {seed}: ticket density {imp.ticket_density:.4f}, accuracy {imp.ticket_accuracy:.2f}% "
          f"(dense {imp.dense_accuracy:.2f}%)", flush=True)

    # Spearman of every betweenness mode on this trained ticket (cheap, always recomputed).
    record["spearman"] = {m: kernel_spearman(ticket, m) for m in config.betweenness_modes}

    keys: dict[str, dict[str, torch.Tensor]] = {}
    for arm in config.arms():
        score_weights = rewind if arm["scored_on"] == "rewind" else None
        key, _ = split_key_mask(ticket, ratio=config.ratio, score=arm["score"], seed=seed,
                                score_weights=score_weights, **arm["options"])
        keys[arm["label"]] = key
        if arm["label"] in record["arms"]:
            continue
        full = record.get("full_accuracy")
        t1, c1 = time.perf_counter(), time.process_time()
        result = keymask_fidelity(ticket, rewind, data=data, train_config=train_config,
                                  rewind_epoch=config.rewind_epoch, key_masks=key, seed=seed, fake_trials=0,
                                  full_accuracy=full, accelerator=acc, progress=progress)
        if full is None:
            record["full_accuracy"] = result.full_accuracy
        row = {**arm, "seed": seed, **result.to_dict(), **key_stats(ticket, key),
               "wall_s": round(time.perf_counter() - t1, 1), "cpu_s": round(time.process_time() - c1, 1),
               "command": command(),
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        record["arms"][arm["label"]] = row
        save_json(cache_path, record)
        print(f"seed {seed} {arm['label']:>22}: n={result.n} with key {result.full_accuracy:.2f}%, without "
              f"{result.locked_accuracy:.2f}% (drop {result.locked_drop:+.2f}), {row['wall_s']:.0f} s", flush=True)
    overlaps = {}
    for score in config.weight_scorers:
        overlaps[score] = jaccard(keys[f"{score}/trained"], keys[f"{score}/rewind"])
    record["trained_vs_rewind_key_jaccard"] = overlaps
    labels = list(keys)
    record["key_jaccard_vs_omp_trained"] = {lab: jaccard(keys[lab], keys["omp/trained"]) for lab in labels
                                            if "omp/trained" in keys}
    save_json(cache_path, record)
    return record


# ------------------------------------------------------------------------------------------------ report


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def _se(values: list[float]) -> float:
    """Standard error of the mean (sample standard deviation / sqrt(n))."""
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


def git_state() -> dict[str, Any]:
    """HEAD and the files of the working tree that differ from it (read-only git calls)."""
    import subprocess

    def run(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()
        except OSError:
            return ""

    changed = [line[3:] for line in run("status", "--porcelain", "--untracked-files=no").splitlines()]
    return {"head": run("rev-parse", "HEAD"), "changed_files": changed}


def markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    seeds = cfg["seeds"]
    recs = {int(s): report["seeds"][str(s)] for s in seeds}
    m = report["machine"]

    def drops(label: str) -> list[float]:
        return [recs[s]["arms"][label]["locked_drop"] for s in seeds]

    def cell(values: list[float]) -> str:
        return " | ".join(f"{v:+.2f}" for v in values) + f" | **{_mean(values):+.2f}** ± {_se(values):.2f}"

    def paired(a: str, b: str) -> str:
        diff = [x - y for x, y in zip(drops(a), drops(b), strict=True)]
        wins = sum(d > 0 for d in diff)
        return f"{_mean(diff):+.2f} ± {_se(diff):.2f} ({wins} of {len(diff)} seeds > 0)"

    seed_cols = " | ".join(f"seed {s}" for s in seeds)
    seed_sep = " | ".join("---" for _ in seeds)
    lines = [
        "# Scheme V1 scoring choices: betweenness edge lengths, trained vs rewind weights",
        "",
        f"Date: {report['date']}  ",
        f"Machine: {m['summary']} ({m['platform']}, torch {m['torch']}, {m['torch_threads']} torch thread(s) per "
        f"process, load average {m['loadavg']} at the report; the machine was shared with other jobs)  ",
        f"Code: git HEAD {report['git']['head'][:12]} plus the working tree's uncommitted changes (this bench, "
        "keymask/scorers.py, split.py, _common.py and colleagues' files)  ",
        "Commands (arms are cached per seed, so the seeds ran as parallel processes):",
        "",
        *[f"    {c}" for c in report["commands"]],
        "",
        f"Tickets: {cfg['arch']} on {cfg['dataset']} ({cfg['train_limit']} train / {cfg['test_limit']} test "
        f"images, data seed {cfg['data_seed']}), {cfg['epochs']}-epoch one-cycle schedule (lr {cfg['lr']}, batch "
        f"{cfg['batch_size']}), IMP with late rewinding to epoch {cfg['rewind_epoch']}: {cfg['imp_rounds']} rounds "
        f"of {cfg['imp_ratio']:g}. One ticket per seed (seed = initialisation, data order and split seed). Key "
        f"ratio {cfg['ratio']:g}. Every arm retrains from W_k with the same training seed; the drop is "
        "accuracy(full mask M) − accuracy(locked mask M_l), in points (larger = the key matters more). "
        "Accuracies are top-1 % on the test split.",
        "",
        "Means are over seeds, ± the standard error of the mean.",
        "",
        "| seed | dense | ticket (as found) | density | kept | n (key) | with key, retrained |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in seeds:
        t = recs[s]["ticket"]
        n = next(iter(recs[s]["arms"].values()))["n"]
        lines.append(f"| {s} | {t['dense_accuracy']:.2f} | {t['ticket_accuracy']:.2f} | {t['density']:.4f} | "
                     f"{t['kept']:,} | {n:,} | {recs[s]['full_accuracy']:.2f} |")
    lines += [
        "",
        "## 1. Betweenness edge lengths",
        "",
        "Spearman between a kernel's betweenness (no tie-break) and its strength Σ|kernel| over the kernels "
        "with a kept weight of the trained ticket, and locked-ticket drop without the key:",
        "",
        f"| edge length | Spearman {seed_cols} | mean | drop {seed_cols} | mean |",
        f"| --- | {seed_sep} | --- | {seed_sep} | --- |",
    ]
    for mode in cfg["betweenness_modes"]:
        rho = [recs[s]["spearman"][mode]["spearman_kernel_strength"] for s in seeds]
        lines.append(f"| `{mode}` | " + " | ".join(f"{r:+.3f}" for r in rho) + f" | **{_mean(rho):+.3f}** | "
                     + cell(drops(f"betweenness/{mode}")) + " |")
    for label in [f"{c}/trained" for c in cfg["controls"]] + ["omp/trained"]:
        if all(label in recs[s]["arms"] for s in seeds):
            lines.append(f"| (control: {label.split('/')[0]}) | " + " | ".join("" for _ in seeds) + " | | "
                         + cell(drops(label)) + " |")
    default = "inverse" if "inverse" in cfg["betweenness_modes"] else cfg["betweenness_modes"][0]
    lines += ["", f"Paired difference of the drop against `{default}` (same ticket and training seed):", ""]
    for mode in cfg["betweenness_modes"]:
        if mode != default:
            lines.append(f"* `{mode}` − `{default}`: {paired(f'betweenness/{mode}', f'betweenness/{default}')}")
    lines += [
        "",
        "## 2. Trained vs rewind weights",
        "",
        "Locked-ticket drop without the key when Algorithm 1 scores the trained ticket W_T ⊙ M or the rewind "
        "weights W_k ⊙ M; Jaccard overlap of the two keys:",
        "",
        f"| scorer | weights scored | drop {seed_cols} | mean | key Jaccard trained vs rewind {seed_cols} |",
        f"| --- | --- | {seed_sep} | --- | {seed_sep} |",
    ]
    for score in cfg["weight_scorers"]:
        for on in ("trained", "rewind"):
            jac = " | ".join(f"{recs[s]['trained_vs_rewind_key_jaccard'][score]:.3f}" for s in seeds) \
                if on == "rewind" else " | ".join("" for _ in seeds)
            lines.append(f"| {score} | {on} | " + cell(drops(f"{score}/{on}")) + f" | {jac} |")
    lines += ["", "Paired difference of the drop, trained − rewind (same ticket and training seed):", ""]
    for score in cfg["weight_scorers"]:
        lines.append(f"* {score}: {paired(f'{score}/trained', f'{score}/rewind')}")
    control = [f"{c}/trained" for c in cfg["controls"]]
    for score in cfg["weight_scorers"]:
        for on in ("trained", "rewind"):
            for c in control:
                lines.append(f"* {score}/{on} − {c.split('/')[0]} control: {paired(f'{score}/{on}', c)}")
    lines += [
        "",
        "## Every arm",
        "",
        "Wall seconds are inflated by other jobs on the shared machine; CPU seconds (one torch thread) are the "
        "cost on an idle core (recorded from seed 2 on).",
        "",
        "| seed | configuration | n | with key | without key | drop | locked ticket as is | key mean abs/kept mean "
        "abs (trained W) | key Jaccard vs omp/trained | arm wall s | arm CPU s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in seeds:
        for label, r in recs[s]["arms"].items():
            jac = recs[s].get("key_jaccard_vs_omp_trained", {}).get(label)
            lines.append(f"| {s} | {label} | {r['n']:,} | {r['full_accuracy']:.2f} | {r['locked_accuracy']:.2f} | "
                         f"{r['locked_drop']:+.2f} | {r['locked_ticket_accuracy']:.2f} | "
                         f"{r['key_mean_abs_over_kept']:.2f} | {'' if jac is None else f'{jac:.3f}'} | "
                         f"{r['wall_s']:.0f} | {r['cpu_s'] if r.get('cpu_s') is not None else '—'} |")
    if report.get("notes"):
        lines += ["", "## Notes", "", *report["notes"]]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"), help="output folder (default: %(default)s)")
    parser.add_argument("--name", default=RESULT_NAME, help="stem of the JSON and markdown files")
    parser.add_argument("--work-dir", default="/tmp/keymask_scoring_choices",
                        help="tickets and cached arms (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--progress", action="store_true", help="show epoch progress bars")
    parser.add_argument("--no-report", action="store_true", help="run the arms only (a later call writes the report)")
    parser.add_argument("--note", action="append", default=[], help="a line for the report's Notes section")
    for f in dataclasses.fields(BenchConfig):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, tuple):
            elem = type(f.default[0])
            parser.add_argument(flag, default=None, type=lambda v, elem=elem: tuple(elem(x) for x in v.split(",")))
        else:
            parser.add_argument(flag, default=None, type=type(f.default))
    return parser


def main() -> None:
    args = build_parser().parse_args()
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(BenchConfig)
                 if getattr(args, f.name) is not None}
    config = BenchConfig(**overrides)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work_dir)
    data = load_image_dataset(config.dataset, seed=config.data_seed, train_limit=config.train_limit,
                              test_limit=config.test_limit)
    t0 = time.perf_counter()
    records = {str(s): run_seed(config, s, data, work, args.progress) for s in config.seeds}
    if args.no_report:
        return
    commands = sorted({r["command"] for rec in records.values() for r in rec["arms"].values()}
                      | {rec["ticket"]["command"] for rec in records.values()}) + [command()]
    report = {
        "experiment": "Scheme V1 scoring choices (betweenness edge lengths; trained vs rewind weights)",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commands": commands,
        "machine": machine_description(),
        "git": git_state(),
        "config": dataclasses.asdict(config),
        "train_config": config.train_config(0).to_dict() | {"seed": "= ticket seed"},
        "data": {"name": data.train.name, "train": len(data.train), "test": len(data.test)},
        "seeds": records,
        "report_seconds": round(time.perf_counter() - t0, 1),
        "notes": args.note,
    }
    out = Path(args.out)
    save_json(out / f"{args.name}.json", report)
    table = markdown(report)
    (out / f"{args.name}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
