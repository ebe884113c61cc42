"""Scheme V2 robustness: does the QR signature of a retrained ticket survive removal attacks?

Pipeline (all through the library):
  1. dense training with a rewind checkpoint, one-shot global magnitude pruning to --density
     and retraining from the rewind weights (a late-rewinding ticket), or --ticket/--rewind
     folders from `hf-lottery find-ticket`;
  2. for each signature setting in --configs (``keyed`` = the defaults; ``keyed:CxM`` with C
     copies and M weights per module; ``/pairs`` or ``/single`` picks the coding), embed with a
     fixed key secret, retrain the signed ticket from the rewind weights (masks fixed), report
     the accuracy change;
  3. attacks, each with the decode success rate, bit agreement, p-value and attacked accuracy:
     one-shot magnitude pruning (OMP) and random pruning of 5–50% of the kept weights;
     add-on noise on 0.5–10% of the pruned positions (with the owner's defense: the kept
     counts of the key's reference of the published model); pruning aimed at one stage (OMP
     of 50% / 100% of one stage's k×k convs, for every stage);
  4. the key-less attack a thief can run (``locate_rewrite``): search every conv, window
     offset, QR version up to the signature's, ECC level, mask pattern and polarity for a
     decodable window (no key), rewrite what it finds (or blind windows when nothing
     decodes) and fine-tune one epoch (masks fixed), then try to verify.

Lukas et al.'s bar: an attack succeeds if it removes the evidence at a cost of at most 5
accuracy points. Paper (ResNet-20/CIFAR-10, Figures 3–4, Table 8): the QR decodes after 5%
and 10% OMP, at 20% only with a manual repair tool; add-on up to 0.5–1%.

Usage:
    python bench/qr_robustness.py --out bench/results/qr_robustness_cpu   # CPU size (~1.5 h on 2 cores)
    python bench/qr_robustness.py --tiny                                  # smoke test
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import hf_lottery_verify as hlv
from hf_lottery_verify.alignment import reference_from_key, with_reference
from hf_lottery_verify.attacks import addon_attack, locate_rewrite_attack, locate_windows, prune_attack
from hf_lottery_verify.data import load_image_dataset
from hf_lottery_verify.ownership_key import OwnershipKey
from hf_lottery_verify.pruning import global_top_k
from hf_lottery_verify.recovery import recover_masks
from hf_lottery_verify.signature import embed_signature, extract_signature, signature_layout
from hf_lottery_verify.training import TrainConfig, Trainer, evaluate, make_accelerator

PAPER = {  # Chen et al. 2021, ResNet-20 / CIFAR-10: does the QR decode?
    ("omp", 0.05): "yes", ("omp", 0.10): "yes", ("omp", 0.20): "repair tool only", ("omp", 0.30): "no",
    ("omp", 0.50): "no", ("addon", 0.005): "yes", ("addon", 0.01): "partly", ("addon", 0.02): "no",
}


def _train(model, data, cfg, acc, *, start_epoch=0, capture=None):
    trainer = Trainer(model, data.train, cfg, test_data=data.test, accelerator=acc, progress=False)
    hook = None
    if capture is not None:
        def hook(epoch, t):
            if epoch == capture[0]:
                capture[1].update({k: v.detach().clone() for k, v in t.unwrapped().timm_model.state_dict().items()})
    trainer.train(start_epoch=start_epoch, on_epoch_end=hook)
    trainer.close()
    return trainer.history[-1].test_accuracy


def make_ticket(args, data, cfg, acc):
    if args.ticket:
        return hlv.load_model(args.ticket), hlv.load_model(args.rewind)
    torch.manual_seed(args.seed)
    model = hlv.SparseResNetForImageClassification(hlv.SparseResNetConfig(
        arch=args.arch, num_labels=data.num_classes, in_chans=data.train.in_chans))
    rewind_sd: dict = {}
    dense_acc = _train(model, data, cfg, acc, capture=(args.rewind_epoch - 1, rewind_sd))
    model.prune_(density=args.density)
    masks = model.masks
    model.timm_model.load_state_dict(rewind_sd)
    model.set_masks(masks)
    ticket_acc = _train(model, data, cfg, acc, start_epoch=args.rewind_epoch)
    rewind = hlv.SparseResNetForImageClassification(model.config)
    rewind.timm_model.load_state_dict(rewind_sd)
    print(f"dense {dense_acc:.2f}% -> ticket {ticket_acc:.2f}% at {model.density:.2%} density")
    return model, rewind


def stage_attack(model, stage: str, fraction: float):
    """OMP of ``fraction`` of the kept weights of one stage's k×k convs (pruning aimed at one stage)."""
    attacked = copy.deepcopy(model)
    masks = attacked.masks
    names = [n for n, m in masks.items() if n.startswith(stage + ".") and m.dim() == 4 and m.shape[-1] > 1]
    params = attacked.timm_parameters()
    kept = int(sum(int(masks[n].sum()) for n in names))
    scores = {n: (-params[n].detach().abs().double()).masked_fill(~masks[n], -np.inf) for n in names}
    remove = global_top_k(scores, round(fraction * kept))  # the smallest kept magnitudes of the stage
    for n in names:
        masks[n] = masks[n] & ~remove[n]
    attacked.set_masks(masks)
    return attacked


def keyless_search(model, max_version: int) -> tuple[list, float]:
    """What a thief finds without the key: every decodable QR window of the public non-zero pattern."""
    masks = recover_masks({n: p.detach() for n, p in model.timm_parameters().items() if p.dim() == 4})
    t0 = time.perf_counter()
    hits = locate_windows(masks, versions=range(1, max_version + 1))
    return hits, time.perf_counter() - t0


def parse_config(setting: str) -> dict:
    """``keyed`` / ``keyed:CxM``, optionally ``/pairs``, ``/single`` or ``/auto`` (the coding)."""
    setting, _, coding = setting.partition("/")
    layout, _, shape = setting.partition(":")
    if layout != "keyed" or coding not in ("", "auto", "pairs", "single"):
        raise SystemExit(f"unknown config {setting!r}: use keyed[:CxM][/pairs|/single|/auto]")
    opts: dict = {"coding": coding or "auto"}
    if shape:
        copies, module_weights = (int(v) for v in shape.split("x"))
        opts.update(copies=copies, module_weights=module_weights)
    return opts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="cifar_resnet20")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--train-limit", type=int, default=12000)
    p.add_argument("--test-limit", type=int, default=2000)
    p.add_argument("--density", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--rewind-epoch", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--ticket", default=None, help="ticket folder from find-ticket (skips step 1)")
    p.add_argument("--rewind", default=None, help="rewind folder from find-ticket")
    p.add_argument("--save-ticket", type=Path, default=None,
                   help="save the ticket and rewind weights here (reuse them with --ticket/--rewind)")
    p.add_argument("--signature", default="hf-lottery:owner")
    p.add_argument("--configs", nargs="+", default=["keyed", "keyed/single"],
                   help="signature settings: keyed (defaults) or keyed:CxM (C copies, M module weights), optionally "
                        "/pairs, /single or /auto (the coding)")
    p.add_argument("--trials", type=int, default=3, help="seeds per random attack")
    p.add_argument("--omp", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3, 0.5])
    p.add_argument("--random", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3, 0.5])
    p.add_argument("--addon", type=float, nargs="+", default=[0.005, 0.01, 0.02, 0.05, 0.1])
    p.add_argument("--stage", type=float, nargs="+", default=[0.5, 1.0], help="OMP fractions of one stage")
    p.add_argument("--addon-scale", type=float, default=0.5)
    p.add_argument("--no-keyless-search", action="store_true", help="skip step 4")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md (e.g. bench/results/qr_robustness_cpu)")
    args = p.parse_args()
    if args.tiny:
        args.arch, args.dataset, args.train_limit, args.test_limit = "cifar_resnet20", "synthetic", 512, 128
        args.epochs, args.trials, args.omp, args.random, args.addon = 2, 1, [0.2], [0.05], [0.01]
        args.stage = [1.0]
    t_start = time.perf_counter()
    data = load_image_dataset(args.dataset, seed=args.seed, train_limit=args.train_limit, test_limit=args.test_limit)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, schedule="onecycle",
                      weight_decay=5e-4, pad=2)
    acc = make_accelerator(cfg)
    ticket, rewind = make_ticket(args, data, cfg, acc)
    if args.save_ticket:
        ticket.save_pretrained(args.save_ticket / "ticket")
        rewind.save_pretrained(args.save_ticket / "rewind")
    ticket_acc = evaluate(ticket, data.test, accelerator=acc)["accuracy"]
    results = {"machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads" if not torch.cuda.is_available()
               else torch.cuda.get_device_name(), "command": "python " + " ".join(sys.argv),
               "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "seed": args.seed,
               "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "ticket_accuracy": ticket_acc, "ticket_density": ticket.density, "runs": []}
    stages = sorted({n.split(".")[0] for n in ticket.masks if n.startswith("layer")})
    for setting in args.configs:
        opts = parse_config(setting)
        signed = copy.deepcopy(ticket)
        owner = OwnershipKey(arch=signed.config.arch, secret="ab" * 32)  # a fixed secret: runs repeat
        key = embed_signature(signed, args.signature, key=owner, seed=args.seed, rewind=rewind, **opts)
        sec, symbol, slots = signature_layout(key)
        before_retrain = evaluate(signed, data.test, accelerator=acc)["accuracy"]
        masks = signed.masks
        signed.timm_model.load_state_dict(rewind.timm_model.state_dict())
        signed.set_masks(masks)
        signed_acc = _train(signed, data, cfg, acc, start_epoch=args.rewind_epoch)
        # the owner's add-on defense: the kept counts of the published (retrained) model, from the key's reference
        kept = {n: int(m.sum()) for n, m in reference_from_key(with_reference(key, signed)).masks.items()}
        clean = extract_signature(signed, key=key, kept=kept)
        where = [s.stage for s in slots]
        qr_format = {"version": symbol.version, "ecc": symbol.ecc}
        run = {"config": setting, "copies": sec.copies, "widths": list(sec.widths),
               "module_weights": sec.module_weights, "where": where, "qr": qr_format, "changes": sec.changes,
               "accuracy_signed_no_retrain": before_retrain, "accuracy_signed_retrained": signed_acc,
               "accuracy_change": signed_acc - ticket_acc, "clean": clean.to_dict(), "attacks": []}
        print(f"\n{setting}: v{symbol.version}-{symbol.ecc}, {sec.copies} copies (widths {list(sec.widths)}) in "
              f"{where}; accuracy {ticket_acc:.2f} -> {signed_acc:.2f} (no retrain {before_retrain:.2f}); clean "
              f"decode: {clean.matches}")
        plan = ([("omp", f) for f in args.omp] + [("random", f) for f in args.random]
                + [("addon", r) for r in args.addon] + [(f"stage {s}", f) for s in stages for f in args.stage])
        for kind, amount in plan:
            trials = args.trials if kind in ("random", "addon") else 1
            rows = []
            for t in range(trials):
                if kind == "addon":
                    attacked = addon_attack(signed, rate=amount, scale=args.addon_scale, seed=t)
                elif kind.startswith("stage"):
                    attacked = stage_attack(signed, kind.split()[1], amount)
                else:
                    attacked = prune_attack(signed, fraction=amount, method="magnitude" if kind == "omp" else "random",
                                            seed=t)
                ev = extract_signature(attacked, key=key, kept=kept)
                no_def = extract_signature(attacked, key=key) if kind == "addon" else None
                a = evaluate(attacked, data.test, accelerator=acc)["accuracy"]
                rows.append({"decoded": ev.matches, "bit_agreement": ev.bit_agreement, "p_value": ev.p_value,
                             "accuracy": a, "decoded_without_defense": no_def.matches if no_def else None,
                             "zbar": ev.image_text == args.signature})
            entry = {"attack": kind, "amount": amount, "trials": trials,
                     "decode_rate": sum(r["decoded"] for r in rows) / trials,
                     "zbar_rate": sum(r["zbar"] for r in rows) / trials,
                     "bit_agreement": statistics.mean(r["bit_agreement"] for r in rows),
                     "max_p_value": max(r["p_value"] for r in rows),
                     "accuracy": statistics.mean(r["accuracy"] for r in rows),
                     "accuracy_drop": signed_acc - statistics.mean(r["accuracy"] for r in rows),
                     "paper": PAPER.get((kind, amount), "")}
            entry["removed_within_5_points"] = entry["decode_rate"] < 1 and entry["accuracy_drop"] <= 5
            if kind == "addon":
                entry["decode_rate_without_defense"] = sum(r["decoded_without_defense"] for r in rows) / trials
            run["attacks"].append(entry)
            print(f"  {kind:<13}{amount:>6.1%}  decode {entry['decode_rate']:.2f} (zbar {entry['zbar_rate']:.2f})  "
                  f"bits {entry['bit_agreement']:.3f}  p<={entry['max_p_value']:.1e}  acc {entry['accuracy']:.2f}"
                  + (f"  [paper: {entry['paper']}]" if entry["paper"] else ""))
        if not args.no_keyless_search:
            hits, seconds = keyless_search(signed, symbol.version)
            search = {"versions": f"1..{symbol.version}", "seconds": seconds, "found": [h.to_dict() for h in hits]}
            print(f"  key-less window search (versions {search['versions']}, all ECC/masks/polarities): "
                  f"{len(hits)} hit(s) in {seconds:.0f} s")
            # the thief rewrites what he found, or blind windows when nothing decodes, then fine-tunes one epoch
            attacked = locate_rewrite_attack(signed, data=data, versions=range(1, symbol.version + 1), epochs=1,
                                             lr=cfg.lr * 0.1, seed=args.seed)
            ev = extract_signature(attacked, key=key, kept=kept)
            a = evaluate(attacked, data.test, accelerator=acc)["accuracy"]
            search.update(rewrite_decoded=ev.matches, rewrite_p_value=ev.p_value, rewrite_accuracy=a,
                          rewrite_accuracy_drop=signed_acc - a)
            print(f"  locate_rewrite + 1 epoch fine-tuning: decode {ev.matches}, p {ev.p_value:.1e}, accuracy "
                  f"{a:.2f} ({a - signed_acc:+.2f})")
            run["keyless_search"] = search
        results["runs"].append(run)
    results["seconds"] = time.perf_counter() - t_start
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        args.out.with_suffix(".md").write_text(_markdown(results))
    print(f"\ntotal {results['seconds']:.0f} s")


def _markdown(results: dict) -> str:
    a = results["args"]
    lines = [f"# QR signature robustness ({a['arch']}, {a['dataset']}, {results['machine']})", "",
             f"Command: `{results['command']}` (seed {results['seed']}, {results['date']})", "",
             f"Ticket: {results['ticket_density']:.2%} density, {results['ticket_accuracy']:.2f}% test accuracy; "
             f"total time {results['seconds']:.0f} s. \"removed ≤5\": the attack removed the evidence at a cost of at "
             "most 5 accuracy points (Lukas et al.'s bar).", ""]
    for run in results["runs"]:
        lines += [f"## {run['config']}: {run['copies']} copies (widths {run['widths']}) × {run['module_weights']} "
                  f"weights (QR v{run['qr']['version']}-{run['qr']['ecc']}; {', '.join(run['where'])})", "",
                  f"Accuracy after signing and retraining: {run['accuracy_signed_retrained']:.2f}% "
                  f"(change {run['accuracy_change']:+.2f} points; before retraining "
                  f"{run['accuracy_signed_no_retrain']:.2f}%).", "",
                  "| attack | amount | decode rate | zbar | bit agreement | max p-value | accuracy | removed ≤5 | paper |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for e in run["attacks"]:
            lines.append(f"| {e['attack']} | {e['amount']:.1%} | {e['decode_rate']:.2f} | {e['zbar_rate']:.2f} | "
                         f"{e['bit_agreement']:.3f} | {e['max_p_value']:.1e} | {e['accuracy']:.2f} | "
                         f"{'**yes**' if e['removed_within_5_points'] else 'no'} | {e['paper']} |")
        s = run.get("keyless_search")
        if s:
            lines += ["", f"Key-less window search (every conv, offset, QR version {s['versions']}, ECC level, mask "
                      f"pattern, polarity): {len(s['found'])} decodable window(s) in {s['seconds']:.0f} s."]
            where = "; ".join(f"`{h['text']}` in {h['param']} at ({h['row']}, {h['col']})" for h in s["found"])
            lines.append(f"{'Found ' + where + '. Rewriting those windows' if s['found'] else 'Rewriting blind windows'}"
                         f" (locate_rewrite) and fine-tuning one epoch (masks fixed): decodes {s['rewrite_decoded']}, "
                         f"p-value {s['rewrite_p_value']:.1e}, accuracy {s['rewrite_accuracy']:.2f}% "
                         f"({-s['rewrite_accuracy_drop']:+.2f} points).")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
