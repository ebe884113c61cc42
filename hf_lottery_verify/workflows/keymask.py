"""Locking a saved ticket folder with a key mask (``hf-lottery split-key``, Scheme V1)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, KeyFileError
from ..keymask.distribution import key_parts, lock_model
from ..loading import load_with_key
from ..masks import count_total
from ..ownership_key import KEYMASK_SECTION, OwnershipKey, check_key_outside

__all__ = ["split_key_folder"]


def split_key_folder(
    model_dir: str | os.PathLike,
    *,
    ratio: float,
    score: str = "omp",
    seed: int = 0,
    key_out: str | os.PathLike,
    out_dir: str | os.PathLike,
    compact: bool = False,
    **score_options: Any,
) -> dict[str, Any]:
    """``hf-lottery split-key``: lock a saved ticket, write the locked folder and the key.

    After writing, the locked folder is read back and merged with the key to check that
    the full ticket comes back bit-exactly and that no key weight was published.

    Args:
        model_dir: The full ticket (folder, file or Hub repo id).
        ratio (`float`): Share of the kept weights that go into the key, in ``(0, 1)``.
        score (`str`, *optional*, defaults to `"omp"`): A name from :func:`list_scorers`.
        seed (`int`, *optional*, defaults to 0): Seed for random scorers and sampling.
        key_out: The key's JSON path; must lie outside ``out_dir``. An existing key file
            gets the ``keymask`` section added (its other sections are kept); when it holds a
            signature, the signature's kernels stay out of the key mask, so the locked copy still verifies.
        out_dir: Folder for the locked model (the one to publish).
        compact (`bool`, *optional*, defaults to `False`): Save the locked model in the compact layout.
        **score_options: Options of the scorer.

    Returns:
        A JSON-safe report: ``n``, kept counts, densities, digests, timings, ``verified``.

    Raises:
        KeyFileError: ``key_out`` lies inside ``out_dir``, or already holds a key mask (a
            key section is never replaced: it restores the tickets locked with it).
        CheckpointError: ``out_dir`` is ``model_dir``, or the ticket cannot be loaded.
        DensityError, UnknownNameError: Bad ``ratio`` or ``score``.
    """
    from ..loading import load_model

    check_key_outside(key_out, out_dir)
    if Path(model_dir).exists() and Path(model_dir).resolve() == Path(out_dir).resolve():
        raise CheckpointError("out_dir must differ from model_dir: the locked ticket would overwrite the full one.",
                              path=str(out_dir))
    existing = OwnershipKey.load(key_out) if Path(key_out).exists() else None
    if existing is not None and KEYMASK_SECTION in existing.sections:
        raise KeyFileError(f"{key_out} already holds a key mask; write the new key to another path — "
                           "the old key is the only way to restore the ticket it locked.")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    model = load_model(model_dir)
    timings["load_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    locked_model, key = lock_model(model, ratio=ratio, score=score, seed=seed, key=existing, **score_options)
    timings["split_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    locked_model.save_pretrained(out_dir, compact=compact)
    key.save(key_out, extend=True)
    timings["save_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    published = load_model(out_dir)
    restored = load_with_key(published, key=key)  # checks that the merged masks are the ticket's (digest)
    full_params, restored_params, published_params = (
        model.timm_parameters(), restored.timm_parameters(), published.timm_parameters())
    section, key_masks, _ = key_parts(key)
    no_key_weights = all(
        not bool(published_params[n].detach().cpu()[km].ne(0).any()) for n, km in key_masks.items())
    bit_exact = all(torch.equal(full_params[n].detach(), restored_params[n].detach()) for n in full_params)
    timings["verify_s"] = time.perf_counter() - t0
    if not (no_key_weights and bit_exact):
        raise CheckpointError("Verification of the split failed: the locked folder and key do not restore the ticket "
                              f"(no key weights published: {no_key_weights}, bit-exact: {bit_exact}).",
                              path=str(out_dir))
    total = count_total(model.masks)
    return {
        "model_dir": str(model_dir),
        "out_dir": str(out_dir),
        "key_out": str(key_out),
        "arch": key.arch,
        "ratio": float(ratio),
        "score": score,
        "seed": int(seed),
        "score_options": section["score_options"],
        "n": section["n"],
        "kept": section["kept"],
        "locked_kept": section["kept"] - section["n"],
        "masked_weights": total,
        "density_full": section["kept"] / total,
        "density_locked": (section["kept"] - section["n"]) / total,
        "density_key": section["n"] / total,
        "mask_digest": section["mask_digest"],
        "locked_digest": section["locked_digest"],
        "compact": bool(compact),
        "verified": True,
        "timings": {k: round(v, 4) for k, v in timings.items()},
    }
