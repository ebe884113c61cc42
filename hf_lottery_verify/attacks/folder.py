"""``attack_folder``: attack a saved model folder and save the result (behind ``hf-lottery attack``)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import json_safe
from ..masks import count_kept, count_total
from .registry import get_attack, run_attack

__all__ = ["attack_folder", "save_attacked"]


def _widened(model: nn.Module) -> bool:
    """The model's tensors no longer fit its architecture (dummy channels)."""
    import timm

    with torch.device("meta"):
        fresh = timm.create_model(model.config.arch, num_classes=model.config.num_labels,
                                  in_chans=model.config.in_chans, **(model.config.model_args or {}))
    shapes = {n: tuple(t.shape) for n, t in fresh.state_dict().items()}
    return any(shapes.get(n) != tuple(t.shape) for n, t in model.timm_model.state_dict().items())


def save_attacked(model: nn.Module, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Save an attacked model the way a thief would publish it.

    Models that still fit their architecture go through ``save_pretrained`` (no public claim);
    widened ones (dummy channels) cannot be rebuilt from their config, so their timm state
    dict is written to ``model.safetensors`` and the config to ``config.json`` directly
    (verifiers read such suspects raw).

    Args:
        model (`nn.Module`): The attacked model.
        out_dir (`str` or `os.PathLike`): Folder to write.

    Returns:
        ``{"widened": bool, "files": [...]}``.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    widened = _widened(model)
    if widened:
        state = {n: t.detach().cpu().contiguous() for n, t in model.timm_model.state_dict().items()}
        save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
        model.config.to_json_file(str(out / "config.json"))
    else:
        model.save_pretrained(out)
    return {"widened": widened, "files": sorted(p.name for p in out.iterdir())}


def attack_folder(
    name: str,
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    params: Mapping[str, Any] | None = None,
    dataset: str | None = None,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    key_out: str | os.PathLike | None = None,
    dataset_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Load a model folder (masks from its weights), run an attack, save the result, report.

    Args:
        name (`str`): A registered attack (``hf_lottery_verify.attacks.list_attacks()``).
        model_dir (`str` or `os.PathLike`): The stolen model's folder (or anything
            :func:`~hf_lottery_verify.load_model` reads).
        out_dir (`str` or `os.PathLike`): Where the attacked model goes.
        params (`Mapping[str, Any]`, *optional*): The attack's parameters.
        dataset (`str`, *optional*): Training data for attacks that train (a
            :func:`~hf_lottery_verify.data.load_image_dataset` name).
        data_dir (`str` or `os.PathLike`, *optional*): Its files.
        seed (`int`, *optional*, defaults to 0): Seed of the attack (and of loading the data).
        key_out (`str` or `os.PathLike`, *optional*): For ``fake3``: where to save the thief's
            key (outside ``out_dir``).
        dataset_options (`Mapping[str, Any]`, *optional*): Loader options (``train_limit``, ...).

    Returns:
        A JSON-safe report: attack, parameters, seed, folders, densities before and after,
        whether the model was widened, files written, seconds.

    Raises:
        UnknownNameError: Unknown attack or parameter.
        DatasetError: The attack needs data and ``dataset`` is missing.
        CheckpointError: ``model_dir`` cannot be loaded.
        KeyFileError: ``key_out`` lies inside ``out_dir``.
    """
    from ..data import load_image_dataset
    from ..loading import load_model

    t0 = time.perf_counter()
    spec = get_attack(name)
    params = dict(params or {})
    model = load_model(model_dir, masks="weights")
    data = None
    if dataset is not None:
        data = load_image_dataset(dataset, data_dir=data_dir, seed=seed, **dict(dataset_options or {}))
    report: dict[str, Any] = {"attack": name, "kind": spec.kind, "function_preserving": spec.function_preserving,
                              "params": json_safe(params), "seed": seed, "model_dir": str(model_dir),
                              "out_dir": str(out_dir), "dataset": dataset,
                              "density_before": count_kept(model.masks) / max(1, count_total(model.masks))}
    if name == "fake3":
        from ..ownership_key import check_key_outside
        from .forgery import forge_signature

        if key_out is not None:
            check_key_outside(key_out, out_dir)
        attacked, key = forge_signature(model, seed=seed, data=data, **params)
        if key_out is not None:
            key.save(key_out)
            report["attacker_key"] = str(key_out)
    else:
        attacked = run_attack(name, model, data=data, seed=seed, **params)
        attacked.ownership_claim = None  # a re-published copy drops the owner's public claim (fake3 carries his own)
    masks = attacked.masks
    report["density_after"] = count_kept(masks) / max(1, count_total(masks)) if masks else 1.0
    report.update(save_attacked(attacked, out_dir))
    report["seconds"] = round(time.perf_counter() - t0, 3)
    (Path(out_dir) / "attack.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    report["files"] = sorted(p.name for p in Path(out_dir).iterdir())
    return report
