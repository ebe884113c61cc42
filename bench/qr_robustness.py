"""Scheme V2 robustness: does the QR signature of a retrained ticket survive removal attacks?

Pipeline (all through the library):
  1. dense training with a rewind checkpoint, one-shot global magnitude pruning to --density
     and retraining from the rewind weights (a late-rewinding ticket), or --ticket/--rewind
     folders from `hf-lottery find-ticket`;
  2. embed_signature(..., copies=C) for each C in --copies, retrain the signed ticket from
     the rewind weights (masks fixed), report the accuracy change;
  3. attacks: one-shot magnitude pruning (OMP) and random pruning of 5–50% of the kept
     weights, add-on noise on 0.5–10% of the pruned positions (with the owner's defense);
     for each: decode success rate, bit agreement, p-value, attacked accuracy.

Paper (ResNet-20/CIFAR-10, Figures 3–4, Table 8): the QR decodes after 5% and 10% OMP,
at 20% only with a manual repair tool; add-on up to 0.5–1%.

Usage:
    python bench/qr_robustness.py --out bench/results/qr_robustness_cpu   # CPU size (~15 min on 2 cores)
    python bench/qr_robustness.py --tiny                                  # smoke test
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import hf_lottery_verify as hlv
from hf_lottery_verify.attacks import addon_attack, prune_attack
from hf_lottery_verify.data import load_image_dataset
from hf_lottery_verify.signature import embed_signature, extract_signature
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
    p.add_argument("--signature", default="hf-lottery:owner")
    p.add_argument("--configs", nargs="+", default=["1x1", "1x3", "2x2"],
                   help="signature settings to compare, COPIESxMODULE_WEIGHTS (1x1 is the paper's)")
    p.add_argument("--trials", type=int, default=3, help="seeds per random attack")
    p.add_argument("--omp", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3, 0.5])
    p.add_argument("--random", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3, 0.5])
    p.add_argument("--addon", type=float, nargs="+", default=[0.005, 0.01, 0.02, 0.05, 0.1])
    p.add_argument("--addon-scale", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--out", type=Path, default=None, help="write results.json and results.md here")
    args = p.parse_args()
    if args.tiny:
        args.arch, args.dataset, args.train_limit, args.test_limit = "cifar_resnet20", "synthetic", 512, 128
        args.epochs, args.trials, args.omp, args.random, args.addon = 2, 1, [0.2], [0.05], [0.01]
        args.configs = ["1x1", "2x2"]
    t_start = time.perf_counter()
    data = load_image_dataset(args.dataset, seed=args.seed, train_limit=args.train_limit, test_limit=args.test_limit)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, schedule="onecycle",
                      weight_decay=5e-4, pad=2)
    acc = make_accelerator(cfg)
    ticket, rewind = make_ticket(args, data, cfg, acc)
    ticket_acc = evaluate(ticket, data.test, accelerator=acc)["accuracy"]
    results = {"machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads" if not torch.cuda.is_available()
               else torch.cuda.get_device_name(), "args": {k: (str(v) if isinstance(v, Path) else v)
                                                          for k, v in vars(args).items()},
               "ticket_accuracy": ticket_acc, "ticket_density": ticket.density, "runs": []}
    for setting in args.configs:
        copies, module_weights = (int(v) for v in setting.split("x"))
        signed = _clone(ticket)
        key = embed_signature(signed, args.signature, seed=args.seed, copies=copies, module_weights=module_weights,
                              rewind=rewind)
        before_retrain = evaluate(signed, data.test, accelerator=acc)["accuracy"]
        masks = signed.masks
        signed.timm_model.load_state_dict(rewind.timm_model.state_dict())
        signed.set_masks(masks)
        signed_acc = _train(signed, data, cfg, acc, start_epoch=args.rewind_epoch)
        clean = extract_signature(signed, key)
        run = {"copies": copies, "module_weights": module_weights, "region": key.section("signature")["regions"],
               "qr": key.section("signature")["qr"], "changes": key.section("signature")["changes"],
               "accuracy_signed_no_retrain": before_retrain, "accuracy_signed_retrained": signed_acc,
               "accuracy_change": signed_acc - ticket_acc, "clean": clean.to_dict(), "attacks": []}
        print(f"\ncopies={copies} module_weights={module_weights}: v{run['qr']['version']}-{run['qr']['ecc']} in "
              f"{[r['param'] for r in run['region']]}; accuracy {ticket_acc:.2f} -> {signed_acc:.2f} "
              f"(no retrain {before_retrain:.2f}); clean decode: {clean.matches}")
        plan = [("omp", f) for f in args.omp] + [("random", f) for f in args.random] + \
               [("addon", r) for r in args.addon]
        for kind, amount in plan:
            trials = 1 if kind == "omp" else args.trials
            rows = []
            for t in range(trials):
                if kind == "addon":
                    attacked = addon_attack(signed, rate=amount, scale=args.addon_scale, seed=t)
                else:
                    attacked = prune_attack(signed, fraction=amount, method="magnitude" if kind == "omp" else "random",
                                            seed=t)
                ev = extract_signature(attacked, key)
                no_def = extract_signature(attacked, key, defense=False) if kind == "addon" else None
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
                     "paper": PAPER.get((kind, amount), "")}
            if kind == "addon":
                entry["decode_rate_without_defense"] = sum(r["decoded_without_defense"] for r in rows) / trials
            run["attacks"].append(entry)
            print(f"  {kind:<7}{amount:>6.1%}  decode {entry['decode_rate']:.2f} (zbar {entry['zbar_rate']:.2f})  "
                  f"bits {entry['bit_agreement']:.3f}  p<={entry['max_p_value']:.1e}  acc {entry['accuracy']:.2f}"
                  + (f"  [paper: {entry['paper']}]" if entry["paper"] else ""))
        results["runs"].append(run)
    results["seconds"] = time.perf_counter() - t_start
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
        (args.out / "results.md").write_text(_markdown(results))
    print(f"\ntotal {results['seconds']:.0f} s")


def _clone(model):
    import copy

    return copy.deepcopy(model)


def _markdown(results: dict) -> str:
    a = results["args"]
    lines = [f"# QR signature robustness ({a['arch']}, {a['dataset']}, {results['machine']})", "",
             f"Command: `python bench/qr_robustness.py {' '.join(f'--{k.replace(chr(95), chr(45))} {v}' for k, v in a.items() if k in ('arch', 'dataset', 'density', 'epochs', 'train_limit', 'test_limit'))}`",
             f"Ticket: {results['ticket_density']:.2%} density, {results['ticket_accuracy']:.2f}% test accuracy; "
             f"total time {results['seconds']:.0f} s.", ""]
    for run in results["runs"]:
        lines += [f"## copies = {run['copies']}, module_weights = {run['module_weights']} (QR v{run['qr']['version']}-{run['qr']['ecc']}, "
                  f"{', '.join(r['param'] for r in run['region'])})", "",
                  f"Accuracy after signing and retraining: {run['accuracy_signed_retrained']:.2f}% "
                  f"(change {run['accuracy_change']:+.2f} points).", "",
                  "| attack | amount | decode rate | zbar | bit agreement | max p-value | accuracy | paper |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for e in run["attacks"]:
            lines.append(f"| {e['attack']} | {e['amount']:.1%} | {e['decode_rate']:.2f} | {e['zbar_rate']:.2f} | "
                         f"{e['bit_agreement']:.3f} | {e['max_p_value']:.1e} | {e['accuracy']:.2f} | {e['paper']} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
