"""Publishing a ticket: a folder (:func:`publish_folder`) or a Hub commit (:func:`push_model`).

A publication writes config, weights, masks, the public claim (``ownership_claim.json``), a
model card and an ownership badge — never the private key, never a pickle. The key gains the
alignment reference of the published model (recorded once, here) and, after a push, the anchor
of the publishing commit (:mod:`hf_lottery_verify.anchors`). Above the Hub I/O
(:mod:`hf_lottery_verify.hub`) and below the model class, whose ``push_to_hub`` calls in here.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .alignment import with_reference
from .anchors import CLAIM_FILE, record_anchor
from .cards import card_results, render_badge, render_model_card, save_card_files
from .errors import HubError
from .hub import _hub_errors, _reachable
from .ownership_key import REFERENCE_SECTION, KeyLike, OwnershipKey, check_key_outside
from .storage import WEIGHTS_INDEX_NAME

__all__ = ["Publication", "publish", "publish_folder", "push_model"]

@dataclass
class Publication:
    """What publishing a model did.

    Attributes:
        key: The owner's key as it now is: with the reference of the published model and, after a
            push, the anchor of the publishing commit (``None`` when published without a key).
        claim: The public claim written into the model (``None`` without a key).
        folder: The folder written (:func:`publish_folder`), or ``None``.
        repo_id: The repo named in the claim and the card.
        commit: The commit sha (:func:`push_model`), or ``None``.
        url: The commit's URL, or ``None``.
    """

    key: Any
    claim: dict[str, Any] | None
    folder: Path | None = None
    repo_id: str | None = None
    commit: str | None = None
    url: str | None = None


def _key_and_path(key: Any) -> tuple[Any, Path | None]:
    if key is None or isinstance(key, OwnershipKey):
        return key, None
    return OwnershipKey.load(key), Path(key)


def publish_folder(
    model: Any,
    folder: str | os.PathLike,
    *,
    repo_id: str,
    key: Any = None,
    owner: str | None = None,
    eval_results: Any = None,
    card_data: Mapping[str, Any] | None = None,
    compact: bool = False,
) -> Publication:
    """Write exactly what :func:`push_model` uploads into ``folder``: weights, masks, claim, card, badge.

    With a key, the key gains the reference of this model (once: a key that already holds
    one keeps it) and the model carries the key's public claim (header metadata,
    ``ownership_claim.json``, the card); without one, the claim the model already carries
    (if any) is published as it is. Publishing a folder does not anchor the key: do it
    with :func:`~hf_lottery_verify.anchors.anchor_key` (``hf-lottery anchor``) before the
    folder goes public.

    Args:
        model: The model to publish.
        folder (`str` or `os.PathLike`): Destination folder (created when missing).
        repo_id (`str`): ``owner/name`` the card and the claim name.
        key (`OwnershipKey`, `str` or `os.PathLike`, *optional*): The owner's key, or its path
            (the file then gains the reference; it is never written into ``folder``).
        owner (`str`, *optional*): Public owner name (default: the one the model's claim names).
        eval_results, card_data, compact: As in :func:`push_model`.

    Returns:
        The :class:`Publication` (``key`` with the reference).

    Raises:
        KeyFileError: The key is unreadable, or its path lies inside ``folder``.
        KeyMismatchError: The key belongs to another architecture.
        CardError: The card metadata is invalid.
    """
    key, key_path = _key_and_path(key)
    folder = Path(folder)
    claim = None
    if key is not None:
        if key_path is not None:
            check_key_outside(key_path, folder)
        if REFERENCE_SECTION not in key.sections:
            key = with_reference(key, model)
            if key_path is not None:
                key.save(key_path, extend=True)
        model.ownership_claim = key.public_claim(owner=owner or (model.ownership_claim or {}).get("owner"),
                                                 repo_id=repo_id)
    claim = model.ownership_claim
    model.save_pretrained(folder, compact=compact)
    if claim is not None:
        (folder / CLAIM_FILE).write_text(json.dumps(claim, indent=2, sort_keys=True))
    card = render_model_card(repo_id=repo_id, arch=model.config.arch, num_labels=model.config.num_labels,
                             density=model.density, claim=claim, card_data=dict(card_data or {}),
                             remote_code=not compact, **card_results(eval_results))
    save_card_files(folder, card, render_badge(status="protected" if claim else "unverified"))
    return Publication(key=key, claim=claim, folder=folder, repo_id=repo_id)


def push_model(
    model: Any,
    repo_id: str,
    *,
    key: Any = None,
    owner: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    card_data: Mapping[str, Any] | None = None,
    eval_results: Any = None,
    compact: bool = False,
) -> Publication:
    """Publish a :class:`~hf_lottery_verify.SparseResNetForImageClassification` in one commit, and anchor the key.

    The folder is assembled in a temporary directory — ``config.json``,
    ``model.safetensors``, ``masks.safetensors``, ``ownership_claim.json``, ``README.md``
    (the model card) and ``ownership_badge.svg`` — and uploaded with one ``upload_folder``
    call; stale weight files of earlier commits are deleted in the same commit. The private
    key is never in that folder. With a key, the commit is the key's anchor: the Hub dates
    it, and the returned key records it.

    Args:
        model: The model to publish.
        repo_id (`str`): ``owner/name``.
        key (`OwnershipKey`, `str` or `os.PathLike`, *optional*): The owner's key or its path.
            With a path the key file gains the reference (before the upload) and the anchor
            (after it); a key file only ever gains records.
        owner (`str`, *optional*): Public owner name for the claim and the card.
        private (`bool`, *optional*): Create the repo as private (a verifier then needs your
            token to read the anchor).
        token (`str` or `bool`, *optional*): Hub token.
        revision (`str`, *optional*): Branch to commit to (created from the default branch
            when missing).
        commit_message (`str`, *optional*): Commit title.
        card_data (`Mapping[str, Any]`, *optional*): Extra model-card metadata.
        eval_results (`RetrainResult` or `Mapping[str, Any]`, *optional*): What the card's model-index
            reports: the result of :func:`~hf_lottery_verify.retrain.retrain` (its test accuracy and data), or
            ``accuracy`` (percent, as :func:`~hf_lottery_verify.training.evaluate` returns it), ``dataset``
            (a built-in name such as ``fashion_mnist`` or a Hub dataset id) and ``split`` (``"test"``).
        compact (`bool`, *optional*, defaults to `False`): Publish the compact layout
            (smaller; not loadable by plain timm).

    Returns:
        The :class:`Publication` (``commit``, ``url``, and ``key`` with its new anchor).

    Raises:
        HubError: The upload failed or the server is unreachable.
        KeyFileError: The key is unreadable.
    """
    from huggingface_hub import HfApi

    problem = _reachable()
    if problem is not None:
        raise HubError(f"Cannot push to the Hub: {problem}.")
    key_obj, key_path = _key_and_path(key)
    with tempfile.TemporaryDirectory(prefix="hf-lottery-push-") as tmp:
        pub = publish_folder(model, Path(tmp) / "repo", repo_id=repo_id, key=key_path or key_obj, owner=owner,
                             eval_results=eval_results, card_data=card_data, compact=compact)
        api = HfApi()
        with _hub_errors(repo_id, revision):
            api.create_repo(repo_id, private=private, token=token, exist_ok=True)
            if revision is not None:
                with contextlib.suppress(Exception):
                    api.create_branch(repo_id, branch=revision, token=token, exist_ok=True)
            message = commit_message or ("Publish ownership-protected sparse ticket" if pub.claim else
                                         "Publish sparse ticket")
            info = api.upload_folder(
                repo_id=repo_id, folder_path=str(pub.folder), token=token, revision=revision, commit_message=message,
                delete_patterns=["*.safetensors", WEIGHTS_INDEX_NAME, "*.bin", "*.pt", "*.pth", "*.ckpt"])
    anchored = pub.key
    if anchored is not None:
        anchored = record_anchor(anchored, repo_id, info.oid, token=token)
        if key_path is not None:
            anchored.save(key_path, extend=True)
    return Publication(key=anchored, claim=pub.claim, repo_id=repo_id, commit=info.oid,
                       url=str(getattr(info, "commit_url", "") or ""))


def publish(model: Any, repo_id: str, *, key: KeyLike | None = None, folder: str | os.PathLike | None = None,
            owner: str | None = None, **options: Any) -> Publication:
    """Publish a ticket: one Hub commit that anchors the key, or (with ``folder``) a folder to upload elsewhere.

    The one path behind ``model.push_to_hub``, ``hf-lottery push`` and the demo. Either way
    the key gains the reference of the published model (recorded once, here); only a Hub
    commit anchors it (for a folder, run :func:`~hf_lottery_verify.anchors.anchor_key` once
    it is public).

    Args:
        model: The ticket to publish.
        repo_id (`str`): ``owner/name`` (the card and the claim name it).
        key (`OwnershipKey`, `str` or `os.PathLike`, *optional*): The key or its file (the file gains records).
        folder (`str` or `os.PathLike`, *optional*): Write this folder instead of pushing.
        owner (`str`, *optional*): Public owner name for the claim and the card.
        **options: The other options of :func:`push_model` (or :func:`publish_folder`).

    Returns:
        The :class:`Publication`.
    """
    if folder is not None:
        return publish_folder(model, folder, repo_id=repo_id, key=key, owner=owner, **options)
    return push_model(model, repo_id, key=key, owner=owner, **options)
