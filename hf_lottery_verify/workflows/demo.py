"""``hf-lottery demo``: the owner's whole job and a thief's three attacks, end to end, on real data.

Steps (each one line of progress, one entry of ``report.json``):

1. **ticket** — IMP with late rewinding on Fashion-MNIST (short schedule, resumable);
2. **sign** — Scheme V2: a keyed QR signature in the mask, plus a Scheme V3 trigger set;
3. **retrain** — from the rewind weights under the signed mask, triggers mixed in;
4. **key mask** — Scheme V1: a locked copy (key weights removed, signature kernels
   protected) and the full ticket restored from the key;
5. **publish** — push to a local Hub server the demo starts (or write a folder) with the
   model card and ownership badge;
6. **verify** — ``verify_hub_model`` by repo id;
7. **attacks** — magnitude pruning, a permutation + BN-compensated rescaling republished by
   the thief under his own repo, and masked fine-tuning; each verified again; then a
   pruning-strength sweep;
8. **report** — ``report.json``, ``summary.md``, the card and badge, PNG plots.

Everything random follows ``DemoConfig.seed``. The demo's owner secret is derived from that
seed so the run is reproducible; a real owner lets :func:`~hf_lottery_verify.signature.embed_signature`
draw a fresh secret.
"""

from __future__ import annotations

import atexit
import copy
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..configs import DemoConfig

__all__ = ["run_demo", "PRUNE_SWEEP"]

PRUNE_SWEEP = (0.1, 0.2, 0.3, 0.5, 0.7)


class _Steps:
    """Numbered progress lines with elapsed time."""

    def __init__(self, log: Callable[[str], None] | None) -> None:
        self.log, self.t0 = log, time.perf_counter()

    def __call__(self, message: str) -> None:
        if self.log is not None:
            self.log(f"[{time.perf_counter() - self.t0:6.1f}s] {message}")


def _start_local_hub() -> tuple[Any, str | None, Any]:
    """A local Hub the Hub client talks to: started here, or the one already at ``HF_ENDPOINT``'s loopback port.

    Returns ``(server started here or None, user name, server this process serves at HF_ENDPOINT
    or None)``; the last one gives the thief an account. The user is ``None`` when
    ``huggingface_hub`` was already imported pointing at a real Hub (the demo then
    publishes to a folder instead).
    """
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import constants  # run_demo pointed it at HF_ENDPOINT's local Hub when it could

    from ..localhub import DEFAULT_USER, LocalHub, reserved_socket

    endpoint = urlsplit(constants.ENDPOINT)
    if endpoint.hostname != "127.0.0.1" or endpoint.port is None:
        return None, None, None  # the client was imported pointing at a real Hub: never push the demo there
    with socket.socket() as probe:
        probe.settimeout(0.5)
        running = probe.connect_ex(("127.0.0.1", endpoint.port)) == 0
    hub = None if running else LocalHub(port=endpoint.port, sock=reserved_socket(endpoint.port)).start()
    return hub, DEFAULT_USER, LocalHub.serving_at(endpoint.port)


def _evidence(report: Any) -> dict[str, Any]:
    v2, v3 = report.signature, report.triggers
    return {"verdict": report.verdict, "reason": (report.reasons or [""])[0],
            "v2_text": v2 and v2.text, "v2_bit_agreement": v2 and v2.bit_agreement, "v2_p_value": v2 and v2.p_value,
            "v3_agreement": v3 and v3.agreement, "v3_p_value": v3 and v3.p_value, "commit_sha": report.commit_sha,
            "anchor": report.anchor, "seconds": report.timings.get("total_s")}


def run_demo(config: DemoConfig | None = None, *, log: Callable[[str], None] | None = print,
             progress: bool = True) -> dict[str, Any]:
    """Run the walkthrough and write its report folder.

    Args:
        config (`DemoConfig`, *optional*): Settings (defaults: the CPU walkthrough).
        log (`Callable[[str], None]`, *optional*, defaults to `print`): Progress lines (``None``: silent).
        progress (`bool`, *optional*, defaults to `True`): Per-batch training progress bars.

    Returns:
        The report (also written to ``<out>/report.json``); ``report["ok"]`` is true when the
        published model and every attacked copy verify as ``owned``.

    Raises:
        ConfigError: Inconsistent settings, or ``device="cuda"`` without a CUDA device.
        DatasetError: The dataset cannot be read (install ``dataset-fashion-mnist``).
    """
    config = config or DemoConfig()
    if config.hub == "local" and "huggingface_hub" not in sys.modules:
        from ..localhub.environment import configure_hub_environment

        configure_hub_environment()  # before anything imports huggingface_hub (it reads HF_ENDPOINT once)
    import torch
    from huggingface_hub import hf_hub_download

    from ..attacks import run_attack
    from ..configs import IMPConfig
    from ..data import derive_seed, load_image_dataset
    from ..errors import ConfigError
    from ..imp import find_extreme_ticket, load_rewind
    from ..keymask import lock_model
    from ..loading import load_model, load_with_key
    from ..ownership_key import OwnershipKey, mask_digest
    from ..publishing import publish_folder, push_model
    from ..retrain import retrain
    from ..signature import embed_signature, signature_positions
    from ..signature.embed import HEAVY_SIGNATURE_SHARE
    from ..training import TrainConfig, evaluate, make_accelerator
    from ..triggers import add_triggers
    from ..verify import verify_hub_model, verify_model
    from .demo_report import write_report

    v = config.resolved()
    v.setdefault("epsilon", 5.0 if config.preset == "reduced" else 2.0)
    say = _Steps(log)
    out = Path(config.out)
    work = out / "work"
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA device; use --device cpu.")
    work.mkdir(parents=True, exist_ok=True)
    hub, user, thief_hub = _start_local_hub() if config.hub == "local" else (None, None, None)  # fail before training
    if hub is not None:
        atexit.register(hub.stop)  # also when a later step raises
    report: dict[str, Any] = {"config": v, "steps": {}}
    steps = report["steps"]
    t_start = time.perf_counter()

    # 1. data and ticket -------------------------------------------------------------------
    data = load_image_dataset(v["dataset"], data_dir=v["data_dir"], seed=v["seed"], train_limit=v["train_limit"],
                              test_limit=v["test_limit"])
    say(f"data: {v['dataset']}, {len(data.train)} training / {len(data.test)} test images, "
        f"{data.num_classes} classes, {data.train.image_size}px")
    train_cfg = TrainConfig(epochs=v["epochs"], batch_size=v["batch_size"], lr=0.2, schedule="onecycle",
                            weight_decay=5e-4, pad=2, seed=v["seed"])
    accelerator = make_accelerator(train_cfg, cpu={"cpu": True, "cuda": False}.get(config.device))
    imp_cfg = IMPConfig(train=train_cfg, rewind_epoch=v["rewind_epoch"], ratios=v["ratios"], epsilon=v["epsilon"],
                        max_rounds=v["max_rounds"], init_seed=v["seed"])
    say(f"1/8 ticket: IMP on {v['arch']}, ratios {list(v['ratios'])}, {v['max_rounds']} round(s) of "
        f"{v['epochs'] - v['rewind_epoch']} epochs after a {v['epochs']}-epoch dense run (resumes from {work / 'imp'})")
    imp = find_extreme_ticket(v["arch"], data, out_dir=work / "imp", config=imp_cfg, accelerator=accelerator,
                              progress=progress)
    ticket = load_model(imp.ticket_dir)
    rewind = {k: t.detach().cpu().clone() for k, t in load_rewind(work / "imp").timm_model.state_dict().items()}
    steps["ticket"] = {"dense_accuracy": imp.dense_accuracy, "ticket_accuracy": imp.ticket_accuracy,
                       "density": imp.ticket_density, "rounds": [r.__dict__ for r in imp.rounds],
                       "seconds": round(imp.seconds, 1)}
    say(f"   dense {imp.dense_accuracy:.2f}% -> ticket {imp.ticket_accuracy:.2f}% at {imp.ticket_density:.2%} density")

    # 2-3. sign (V2), triggers (V3), retrain ------------------------------------------------
    key_path = out / "owner.key.json"
    signed_dir = work / "signed"
    identity = {"ticket_mask": mask_digest(ticket.masks), "signature": config.signature, "seed": v["seed"],
                "triggers": v["triggers"], "epochs": v["epochs"], "rewind_epoch": v["rewind_epoch"]}
    earlier = json.loads((work / "signing.json").read_text()) if (work / "signing.json").is_file() else {}
    if earlier.get("identity") == identity and key_path.is_file() and (signed_dir / "config.json").is_file():
        say("2/8 sign + 3/8 retrain: reusing the signed, retrained ticket and key of an earlier run")
        published = load_model(signed_dir)
        key = OwnershipKey.load(key_path)
        steps.update({k: earlier[k] for k in ("sign", "retrain")})
    else:
        if key_path.is_file() or signed_dir.exists():  # the demo's own files from a run with other settings
            say("   the signed ticket and key in this folder came from other settings (ticket, text, seed or "
                "schedule): signing again")
            for stale in [key_path, *out.glob("owner.key.json.tensors.*"), work / "signing.json"]:
                stale.unlink(missing_ok=True)
            shutil.rmtree(signed_dir, ignore_errors=True)
        signed = copy.deepcopy(ticket)
        # demo only: a secret derived from the seed, so runs repeat (a real key draws 32 random bytes)
        owner_key = OwnershipKey(arch=ticket.config.arch, secret=(derive_seed(v["seed"], "demo-owner-secret")
                                                                   .to_bytes(8, "little") * 4).hex())
        options: dict[str, Any] = {}
        key = embed_signature(signed, config.signature, key=owner_key, seed=v["seed"], rewind=rewind)
        if key.signature().moved_share > HEAVY_SIGNATURE_SHARE:  # extreme ticket: the paper's lighter QR
            options = {"copies": 1, "module_weights": 1}
            say(f"   the default signature would move {key.signature().moved_share:.0%} of this "
                f"{imp.ticket_density:.2%}-dense ticket: signing with {options} instead")
            signed = copy.deepcopy(ticket)
            key = embed_signature(signed, config.signature, key=owner_key, seed=v["seed"], rewind=rewind, **options)
        sec = key.signature()
        signed_acc = evaluate(signed, data.test, accelerator=accelerator)["accuracy"]
        say(f"2/8 sign: QR {sec.ecc}, {sec.copies} keyed copies (widths {list(sec.widths)}); accuracy before "
            f"retraining {signed_acc:.2f}%")
        key = add_triggers(key, num_classes=data.num_classes, n=v["triggers"], image_size=data.train.image_size,
                           channels=data.train.in_chans, per_batch=16)
        say(f"3/8 retrain: from the epoch-{v['rewind_epoch']} weights under the signed mask, "
            f"{v['triggers']} triggers (derived from the key's secret) mixed in")
        rr = retrain(signed, rewind=rewind, data=data, config=train_cfg, rewind_epoch=v["rewind_epoch"], key=key,
                     accelerator=accelerator, progress=progress, unsigned_accuracy=imp.ticket_accuracy)
        published = rr.model
        published.save_pretrained(signed_dir)
        signing = {"sign": {"ecc": sec.ecc, "copies": sec.copies, "widths": list(sec.widths),
                            "accuracy_before_retraining": signed_acc, "options": options,
                            "moved_share": sec.moved_share},
                   "retrain": {k: val for k, val in rr.to_dict().items() if not isinstance(val, (list, dict))}}
        (work / "signing.json").write_text(json.dumps({"identity": identity, **signing}, indent=2, default=str))
        key.save(key_path)  # last: a run interrupted before this point signs again instead of finding a lone key
        steps.update(signing)
    published_acc = evaluate(published, data.test, accelerator=accelerator)["accuracy"]
    agreement = steps["retrain"].get("trigger_agreement_after")
    say(f"   retrained: {published_acc:.2f}% (unsigned ticket {imp.ticket_accuracy:.2f}%), trigger agreement "
        f"{'—' if agreement is None else f'{agreement:.0%}'}")

    # 4. Scheme V1 key mask ------------------------------------------------------------------
    locked, v1_key = lock_model(published, ratio=config.key_ratio, score="omp", seed=v["seed"],
                                protect=signature_positions(key))
    locked_dir, v1_key_path = work / "v1-locked", work / "v1.key.json"
    shutil.rmtree(locked_dir, ignore_errors=True)
    v1_key_path.unlink(missing_ok=True)
    locked.save_pretrained(locked_dir)
    v1_key.save(v1_key_path)
    restored = load_with_key(locked_dir, key=v1_key_path)
    steps["keymask"] = {"ratio": config.key_ratio, "score": "omp",
                        "accuracy_locked": evaluate(locked, data.test, accelerator=accelerator)["accuracy"],
                        "accuracy_with_key": evaluate(restored, data.test, accelerator=accelerator)["accuracy"],
                        "key_weights": int(v1_key.section("keymask")["n"])}
    say(f"4/8 key mask (V1): {config.key_ratio:.0%} of the kept weights into a key; locked copy "
        f"{steps['keymask']['accuracy_locked']:.2f}%, restored with the key {steps['keymask']['accuracy_with_key']:.2f}%")

    # 5-6. publish and verify -----------------------------------------------------------------
    eval_results = {"accuracy": published_acc, "dataset": v["dataset"], "split": "test"}
    published.ownership_claim = None
    if config.hub == "local" and user is None:
        say("   huggingface_hub was imported pointing at a real Hub before the demo started: publishing to a folder")
    if user is not None:
        dataset_name = re.sub(r"[^A-Za-z0-9_.]+", "-", Path(v["dataset"].split(":")[-1]).name or v["dataset"]).strip("-")
        repo_id = f"{user}/{v['arch']}-{dataset_name or 'data'}-signed"
        pub = push_model(published, repo_id, key=key_path, owner=config.owner, eval_results=eval_results)
        target: str = repo_id
        anchor = pub.key.anchors[-1]
        steps["publish"] = {"mode": "local hub", "repo_id": repo_id, "endpoint": os.environ.get("HF_ENDPOINT"),
                            "commit": pub.commit, "anchor": anchor.to_dict()}
        say(f"5/8 publish: pushed {repo_id} (commit {pub.commit[:8]}) to the local Hub with card and badge; the "
            f"commit anchors the key (server date {anchor.date})")
    else:
        target = str(work / "published")
        shutil.rmtree(target, ignore_errors=True)
        publish_folder(published, target, repo_id=f"{config.owner}/{v['arch']}-signed", key=key_path,
                       owner=config.owner, eval_results=eval_results)
        steps["publish"] = {"mode": "folder", "folder": target}
        say(f"5/8 publish: wrote {target} with card and badge (not anchored: verdicts below are unanchored checks)")
    anchored = user is not None
    for name in ("README.md", "ownership_badge.svg"):  # the published card and badge, into the report folder
        shutil.copy(hf_hub_download(target, name) if anchored else Path(target) / name, out / name)
    verified = verify_hub_model(target, key=key_path, require_anchor=anchored)
    steps["verify"] = _evidence(verified)
    say(f"6/8 verify {target}: {verified.verdict} — {steps['verify']['reason']}")

    # 7. attacks ---------------------------------------------------------------------------------
    attacks: list[dict[str, Any]] = []

    def record(name: str, attacked: Any, verdict_report: Any, **extra: Any) -> None:
        acc = evaluate(attacked, data.test, accelerator=accelerator)["accuracy"]
        row = {"attack": name, "accuracy": acc, "accuracy_change": acc - published_acc, **extra,
               **_evidence(verdict_report)}
        attacks.append(row)
        v2, v3 = row["v2_bit_agreement"], row["v3_agreement"]
        say(f"   {name}: accuracy {acc:.2f}% ({acc - published_acc:+.2f}), verdict {row['verdict']}, "
            f"V2 bits {'—' if v2 is None else f'{v2:.3f}'}, V3 agreement {'—' if v3 is None else f'{v3:.0%}'}")

    say("7/8 attacks on the published copy")
    pruned = run_attack("prune", published, fraction=0.2, seed=v["seed"])
    record("prune 20% (global magnitude)", pruned, verify_model(pruned, key=key_path, require_anchor=anchored))
    thief = run_attack("rescale", run_attack("permute", published, seed=v["seed"]), seed=v["seed"])
    thief.ownership_claim = None
    if thief_hub is not None:
        thief_repo = f"mallory/{v['arch']}-totally-original"
        push_model(thief, thief_repo, token=thief_hub.add_user("mallory"))  # the thief's own account
    else:
        thief_repo = str(work / "thief")
        shutil.rmtree(thief_repo, ignore_errors=True)
        thief.save_pretrained(thief_repo)
    thief_report = verify_hub_model(thief_repo, key=key_path, require_anchor=anchored)
    record("permute + BN-compensated rescale (republished by the thief)", thief, thief_report, republished=thief_repo)
    tuned = run_attack("finetune", published, data=data, epochs=1, mode="masked", train_limit=v["finetune_limit"],
                       train={"batch_size": v["batch_size"]}, seed=v["seed"])
    record("masked fine-tuning, 1 epoch", tuned, verify_model(tuned, key=key_path, require_anchor=anchored))
    steps["attacks"] = attacks

    sweep = []
    for fraction in PRUNE_SWEEP:
        attacked = run_attack("prune", published, fraction=fraction, seed=v["seed"])
        ev = _evidence(verify_model(attacked, key=key_path, require_anchor=anchored))
        sweep.append({"fraction": fraction, "accuracy": evaluate(attacked, data.test, accelerator=accelerator)["accuracy"],
                      "decoded": ev["v2_text"] == config.signature, **ev})
    steps["prune_sweep"] = sweep
    say("   pruning sweep: " + ", ".join(f"{r['fraction']:.0%} -> {r['verdict']} ({r['accuracy']:.1f}%)"
                                         for r in sweep))

    # 8. report ----------------------------------------------------------------------------------
    report["published_accuracy"] = published_acc
    report["ok"] = steps["verify"]["verdict"] == "owned" and all(r["verdict"] == "owned" for r in attacks)
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    written = write_report(out, report)
    say(f"8/8 report: {', '.join(str(p.relative_to(out)) for p in written)} in {out} "
        f"({report['seconds']:.0f} s in all; {'owned before and after every attack' if report['ok'] else 'NOT all owned'})")
    return report  # a local Hub started here serves until the process exits (atexit stops it)
