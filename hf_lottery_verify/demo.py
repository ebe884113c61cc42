"""The end-to-end walkthrough behind ``hf-lottery demo``.

It grows with the library; each step reports what it did as one entry of the result
dict, which the CLI prints as text or JSON.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from .configuration_sparse_resnet import SparseResNetConfig
from .modeling_sparse_resnet import SparseResNetForImageClassification, load_model

__all__ = ["run_demo"]


def run_demo(*, out_dir: str | Path | None = None, arch: str = "cifar_resnet20", density: float = 0.05,
             seed: int = 0, log: Any = None) -> dict[str, Any]:
    """Build a ResNet, prune it, save it in both layouts and reload it bit-exactly.

    Args:
        out_dir: Where to write the model folders (a temporary folder when ``None``).
        arch: timm architecture.
        density: Target fraction of prunable weights to keep.
        seed: Seed for weight initialisation.
        log: Callable taking one line of progress text (``print`` in the CLI), or ``None``.

    Returns:
        A JSON-serialisable dict of what was done and measured.
    """
    say = log or (lambda _line: None)
    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="hf-lottery-demo-")
        out_dir = tmp.name
    out = Path(out_dir)
    report: dict[str, Any] = {"arch": arch, "out_dir": str(out)}
    try:
        torch.manual_seed(seed)
        model = SparseResNetForImageClassification(SparseResNetConfig(arch=arch))
        n_params = sum(p.numel() for p in model.timm_model.parameters())
        say(f"built {arch}: {n_params:,} parameters")
        t0 = time.perf_counter()
        model.prune_(density=density)
        report["prune"] = {"method": "global_magnitude", "target_density": density,
                           "density": model.density, "masked_parameters": len(model.masks),
                           "seconds": round(time.perf_counter() - t0, 4)}
        say(f"pruned {len(model.masks)} conv weights by global magnitude to {model.density:.4%} density")
        reference = {k: v.clone() for k, v in model.timm_model.state_dict().items()}
        for layout, compact in (("dense", False), ("compact", True)):
            folder = out / f"{arch}-{layout}"
            model.save_pretrained(folder, compact=compact)
            size = (folder / "model.safetensors").stat().st_size
            back = load_model(folder)
            exact = all(torch.equal(reference[k], v) for k, v in back.timm_model.state_dict().items()) and all(
                torch.equal(model.masks[k].cpu(), back.masks[k].cpu()) for k in model.masks)
            report[f"save_{layout}"] = {"folder": str(folder), "bytes": size, "reloaded_bit_exact": exact}
            say(f"saved {layout} layout to {folder} ({size / 1e6:.2f} MB); reloaded bit-exact: {exact}")
        with torch.no_grad():
            x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
            same = torch.equal(model.eval()(x).logits, back(x).logits)
        report["reloaded_outputs_identical"] = same
        say(f"reloaded model gives identical logits: {same}")
    finally:
        if tmp is not None:
            tmp.cleanup()
            report["out_dir"] = None
    return report
