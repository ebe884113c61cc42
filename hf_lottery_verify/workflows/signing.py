"""Signing a saved ticket folder (``hf-lottery sign``): embed, measure, save the ticket and the key."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import KeyFileError
from ..ownership_key import SIGNATURE_SECTION, OwnershipKey, check_key_outside

__all__ = ["sign_folder"]


def sign_folder(
    model_dir: str | os.PathLike,
    *,
    signature: str,
    key_out: str | os.PathLike,
    out_dir: str | os.PathLike,
    owner: str | None = None,
    rewind_dir: str | os.PathLike | None = None,
    options: Mapping[str, Any] | None = None,
    dataset: str | None = None,
    data_dir: str | os.PathLike | None = None,
    test_limit: int | None = None,
    compact: bool = False,
) -> dict[str, Any]:
    """Sign a ticket folder with a keyed QR signature (Scheme V2, :func:`~hf_lottery_verify.signature.sign`) and save
    the result and the key.

    The key file is never overwritten: a new one is written, or the ``signature`` section is
    added to an existing key that has none. The signed ticket carries the public claim (a
    hash commitment to the key) in its header. It still needs retraining from its rewind
    weights before it is published (:func:`hf_lottery_verify.retrain.retrain_folder`).

    Args:
        model_dir (`str` or `os.PathLike`): The ticket (folder, file or Hub repo id).
        signature (`str`): Text to embed.
        key_out (`str` or `os.PathLike`): The private key file (refused inside ``out_dir``).
        out_dir (`str` or `os.PathLike`): Where to save the signed ticket.
        owner (`str`, *optional*): Public owner name for the claim.
        rewind_dir (`str` or `os.PathLike`, *optional*): Rewind weights: values for switched-on weights.
        options (`Mapping[str, Any]`, *optional*): Keyword arguments of
            :func:`~hf_lottery_verify.signature.embed_signature` (copies, ecc, secret, seed, ...).
        dataset (`str`, *optional*): Measure the accuracy before and after embedding on its test split.
        data_dir (`str` or `os.PathLike`, *optional*): Dataset files or cache folder.
        test_limit (`int`, *optional*): Evaluate on at most this many test samples.
        compact (`bool`, *optional*, defaults to `False`): Save in the compact layout.

    Returns:
        A JSON-safe report: folders, copies, density, accuracies, embedding changes.

    Raises:
        KeyFileError: ``key_out`` lies inside ``out_dir`` or already holds a signature.
        SignatureError, SignatureTooLargeError: The signature cannot be embedded, or the ticket is signed already.
        CheckpointError: The ticket cannot be loaded.
    """
    from ..data import load_image_dataset
    from ..loading import load_model
    from ..signature import sign
    from ..training import evaluate

    check_key_outside(key_out, out_dir)
    existing = OwnershipKey.load(key_out) if Path(key_out).exists() else None
    if existing is not None and SIGNATURE_SECTION in existing.sections:
        raise KeyFileError(f"{key_out} already holds a signature; write the new key to another path (the old one "
                           "proves ownership of the models signed with it).")
    model = load_model(model_dir)
    opts = dict(options or {})
    if rewind_dir is not None:
        opts["rewind"] = load_model(rewind_dir)
    eval_data = load_image_dataset(dataset, data_dir=data_dir, test_limit=test_limit).test if dataset else None
    before = evaluate(model, eval_data)["accuracy"] if eval_data is not None else None
    key = sign(model, signature, key=key_out, owner=owner, **opts)  # the key file gains the signature section
    after = evaluate(model, eval_data)["accuracy"] if eval_data is not None else None
    model.save_pretrained(out_dir, compact=compact)
    section = key.signature()
    return {"model_dir": str(model_dir), "out": str(out_dir), "key_out": str(key_out), "copies": section.copies,
            "widths": list(section.widths), "density": model.density, "accuracy_before": before,
            "accuracy_after": after, "accuracy_change": None if before is None else after - before,
            "needs_retraining": True, "changes": section.changes}
