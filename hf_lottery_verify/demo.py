"""The end-to-end walkthrough behind ``hf-lottery demo``.

Steps (each reports what it did as one entry of the result dict, which the CLI prints as
text or JSON):

1. ticket: build a CIFAR ResNet-20 and prune it by global magnitude — or, with
   ``find_ticket=True``, run a short IMP search on real Fashion-MNIST;
2. storage: save it in the dense and compact layouts and reload both bit-exactly;
3. Scheme V2: sign it with a QR code at save time (key kept outside the folder), extract
   the signature from the saved folder, then again after a 20% pruning attack;
4. Scheme V1: split a key mask off the ticket, check the public folder carries no key
   weights, and restore the ticket with the key.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .configuration_sparse_resnet import SparseResNetConfig
from .loading import load_model
from .modeling_sparse_resnet import SparseResNetForImageClassification

__all__ = ["run_demo"]


def _same(a: SparseResNetForImageClassification, b: SparseResNetForImageClassification) -> bool:
    sa, sb = a.timm_model.state_dict(), b.timm_model.state_dict()
    return all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa) and all(
        torch.equal(a.masks[k].cpu(), b.masks[k].cpu()) for k in a.masks)


def _ticket(out: Path, arch: str, density: float, seed: int, find_ticket: bool,
            say: Callable[[str], None]) -> tuple[SparseResNetForImageClassification, dict[str, Any]]:
    if not find_ticket:
        torch.manual_seed(seed)
        model = SparseResNetForImageClassification(SparseResNetConfig(arch=arch))
        n_params = sum(p.numel() for p in model.timm_model.parameters())
        t0 = time.perf_counter()
        model.prune_(density=density)
        say(f"built {arch} ({n_params:,} parameters) and pruned {len(model.masks)} conv weights by global "
            f"magnitude to {model.density:.4%} density")
        return model, {"method": "global_magnitude", "arch": arch, "parameters": n_params, "density": model.density,
                       "seconds": round(time.perf_counter() - t0, 4)}
    from .data import load_image_dataset
    from .imp import IMPConfig, find_extreme_ticket
    from .training import TrainConfig

    data = load_image_dataset("fashion_mnist", seed=seed, train_limit=4000, test_limit=1000)
    config = IMPConfig(train=TrainConfig(epochs=3, batch_size=128, lr=0.2, schedule="onecycle", pad=2),
                       rewind_epoch=1, ratios=(0.5, 0.3), epsilon=2.0, max_rounds=3, init_seed=seed)
    say(f"searching a ticket for {arch} on {len(data.train)} Fashion-MNIST images (3 IMP rounds, CPU-sized)")
    result = find_extreme_ticket(arch, data, out_dir=out / "imp", config=config, progress=False)
    model = load_model(result.ticket_dir)
    say(f"IMP: dense {result.dense_accuracy:.2f}% -> ticket {result.ticket_accuracy:.2f}% at "
        f"{result.ticket_density:.2%} density in {result.seconds:.0f} s")
    return model, {"method": "imp", **{k: v for k, v in result.to_dict().items() if k != "rounds"}}


def run_demo(*, out_dir: str | Path | None = None, arch: str = "cifar_resnet20", density: float = 0.05,
             seed: int = 0, find_ticket: bool = False, signature: str = "hf-lottery-demo:owner",
             log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Walk through the library: ticket, storage, Scheme V2 signature, Scheme V1 key mask.

    Args:
        out_dir: Where to write the folders and keys (a temporary folder when ``None``).
        arch: timm architecture.
        density: Target density when pruning without IMP.
        seed: Seed of initialisation, signing and splitting.
        find_ticket: Run a short IMP search on Fashion-MNIST instead of one-shot pruning.
        signature: Text to embed.
        log: Callable taking one line of progress text (``print`` in the CLI), or ``None``.

    Returns:
        A JSON-serialisable dict of what was done and measured.
    """
    from .attacks import prune_attack
    from .keymask import load_with_key
    from .signature import extract_signature
    from .workflows import split_key_folder

    say = log or (lambda _line: None)
    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="hf-lottery-demo-")
        out_dir = tmp.name
    out = Path(out_dir)
    report: dict[str, Any] = {"arch": arch, "out_dir": str(out)}
    try:
        model, report["ticket"] = _ticket(out, arch, density, seed, find_ticket, say)
        report["prune"] = report["ticket"]
        for layout, compact in (("dense", False), ("compact", True)):
            folder = out / f"ticket-{layout}"
            model.save_pretrained(folder, compact=compact)
            size = (folder / "model.safetensors").stat().st_size
            exact = _same(model, load_model(folder))
            report[f"save_{layout}"] = {"folder": str(folder), "bytes": size, "reloaded_bit_exact": exact}
            say(f"saved the {layout} layout to {folder} ({size / 1e6:.2f} MB); reloaded bit-exact: {exact}")
        with torch.no_grad():
            x = torch.randn(4, model.config.in_chans, 32, 32, generator=torch.Generator().manual_seed(seed))
            same = torch.equal(model.eval()(x).logits, load_model(out / "ticket-dense")(x).logits)
        report["reloaded_outputs_identical"] = same

        # Scheme V2: signature in the mask, injected at save time
        keys = out / "keys"
        signed_dir = out / "signed"
        model.save_pretrained(signed_dir, signature=signature, key_path=keys / "owner.json",
                              signature_options={"seed": seed})
        from .ownership_key import OwnershipKey

        sec = OwnershipKey.load(keys / "owner.json").section("signature")
        ev = extract_signature(signed_dir, keys / "owner.json")
        attacked = extract_signature(prune_attack(load_model(signed_dir), fraction=0.2), keys / "owner.json")
        report["signature"] = {
            "qr": sec["qr"], "copies": len(sec["regions"]), "density_after": model.density,
            "decoded": ev.text, "bit_agreement": ev.bit_agreement, "p_value": ev.p_value,
            "decoded_after_20pct_pruning": attacked.text, "bit_agreement_after_attack": attacked.bit_agreement,
        }
        say(f"signed with {signature!r} (QR v{sec['qr']['version']}-{sec['qr']['ecc']}, {len(sec['regions'])} copies, "
            f"density unchanged at {model.density:.4%}); key written to {keys / 'owner.json'}")
        say(f"extracted from {signed_dir}: {ev.text!r}, bit agreement {ev.bit_agreement:.3f}, "
            f"p-value {ev.p_value:.1e}; after pruning 20% more: {attacked.text!r} "
            f"({attacked.bit_agreement:.3f})")

        # Scheme V1: key mask
        public = out / "locked"
        v1 = split_key_folder(signed_dir, ratio=0.05, score="omp", seed=seed, key_out=keys / "owner.json",
                              out_dir=public)
        locked = load_model(public)
        restored = load_with_key(public, keys / "owner.json")
        original = load_model(signed_dir)
        report["keymask"] = {"n": v1["n"], "locked_density": locked.density, "restored_bit_exact": _same(original, restored),
                             "public_has_no_key_weights": v1.get("verified", False)}
        say(f"split a key of {v1['n']} weights (5%, omp) off the ticket: public folder {public} at "
            f"{locked.density:.4%} density; restored with the key bit-exactly: {report['keymask']['restored_bit_exact']}")
    finally:
        if tmp is not None:
            tmp.cleanup()
            report["out_dir"] = None
    return report
