"""Anchors: dating a key's commitment by a clock the claimant does not control — the Hub's.

An owner *anchors* a key by publishing its commitment in a Hub commit made through the
HTTP commit API (:func:`push_model` does it with the commit that publishes the model;
:func:`anchor_key` with a small ``ownership_claim.json`` for owners who publish elsewhere).
The server dates that commit and the repo's creation; neither can be set by the client.
The key records where (:class:`~hf_lottery_verify.key_sections.Anchor`), but a verifier
trusts none of that record: :func:`check_anchor` reads the commit back from the Hub, checks
that it carries the key's commitment, and takes its time as the later of the commit's date
and the repo's creation date.

Which dates are trusted, and why: the repo's creation date is always set by the server. A
commit made through the HTTP commit API (this library, ``upload_folder``, the web editor) is
dated by the server too. A commit pushed with ``git`` carries the dates its author wrote,
which may be anything — so an anchor is never dated before its repo's creation, and an
owner who pushes with git can at most predate an anchor to when the repo was made.

:func:`first_appearance` answers the other half of the rule: when did the suspect's weights
first appear in public? For a Hub repo: the first commit whose weights file had exactly
these bytes; for a copy that still carries a public claim naming its repo: the same, looked
up there.
"""

from __future__ import annotations

import datetime as _dt
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import HubError
from .hub import _hub_errors, _reachable, hub_endpoint, is_offline
from .key_sections import Anchor
from .ownership_key import OwnershipKey

__all__ = ["CLAIM_FILE", "AnchorCheck", "Appearance", "anchor_key", "check_anchor", "record_anchor",
           "first_appearance"]

CLAIM_FILE = "ownership_claim.json"
"""The public claim, as a file of its own in every published commit: what an anchor check reads."""
MAX_COMMITS = 100
"""Most commits of a repo's history read to find a first appearance."""


@dataclass(frozen=True)
class AnchorCheck:
    """What the Hub says about one anchor of a key.

    Attributes:
        anchor: The key's record.
        verified: The commit exists in the repo and carries the key's commitment.
        time: The anchor's time (commit date, not before the repo's creation), when verified.
        reason: Why not verified, when not.
    """

    anchor: Anchor
    verified: bool
    time: _dt.datetime | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields."""
        return {"repo_id": self.anchor.repo_id, "commit": self.anchor.commit, "endpoint": self.anchor.endpoint,
                "verified": self.verified, "time": self.time.isoformat() if self.time else None, "reason": self.reason}


@dataclass(frozen=True)
class Appearance:
    """When a suspect's weights first appeared in public.

    Attributes:
        time: The date of the first commit that held these exact bytes.
        repo_id: The repo.
        commit: That commit.
        how: How it was found (``hub history``, ``claimed repo``, ``repo creation``).
    """

    time: _dt.datetime
    repo_id: str
    commit: str | None
    how: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields."""
        return {"time": self.time.isoformat(), "repo_id": self.repo_id, "commit": self.commit, "how": self.how}


def _api() -> Any:
    from huggingface_hub import HfApi

    return HfApi()


def record_anchor(key: OwnershipKey, repo_id: str, commit: str, *, kind: str = "model",
                  token: str | bool | None = None) -> OwnershipKey:
    """The key with an anchor for ``commit`` of ``repo_id``, dated as the server reports it.

    Args:
        key (`OwnershipKey`): The key whose commitment the commit publishes.
        repo_id (`str`): The repo.
        commit (`str`): The commit's sha.
        kind (`str`, *optional*, defaults to `"model"`): ``model`` or ``record``.
        token (`str` or `bool`, *optional*): Hub token.

    Returns:
        A new key with the anchor added.

    Raises:
        HubError: The commit or repo cannot be read.
    """
    api = _api()
    with _hub_errors(repo_id, commit):
        created = api.repo_info(repo_id, token=token).created_at
        date = api.list_repo_commits(repo_id, revision=commit, token=token)[0].created_at
    return key.with_anchor(Anchor(repo_id=repo_id, commit=commit, date=date.isoformat(),
                                  repo_created=(created or date).isoformat(), endpoint=hub_endpoint(),
                                  commitment=key.commitment(), kind=kind))


def anchor_key(key: OwnershipKey, repo_id: str, *, owner: str | None = None, private: bool = False,
               token: str | bool | None = None) -> OwnershipKey:
    """Anchor a key without publishing a model: commit its public claim to ``repo_id`` (created when missing).

    For owners who publish their model elsewhere: the commit dates the key's commitment.
    Anchor after the key is complete — a section added later changes the commitment and
    needs a new anchor.

    Args:
        key (`OwnershipKey`): The key (its commitment is published, nothing else).
        repo_id (`str`): A Hub repo of yours (a model repo; ``owner/anchors`` say).
        owner (`str`, *optional*): Public owner name written into the claim.
        private (`bool`, *optional*, defaults to `False`): Create the repo private (a verifier
            then cannot read the anchor without your token).
        token (`str` or `bool`, *optional*): Hub token.

    Returns:
        A new key with the anchor recorded (save it with ``key.save(path, extend=True)``).

    Raises:
        HubError: The Hub is unreachable or refuses the commit.
    """
    problem = _reachable()
    if problem is not None:
        raise HubError(f"Cannot anchor the key: {problem}.")
    claim = key.public_claim(owner=owner)
    name = f"anchors/{claim['key_commitment'].split(':')[1][:16]}/{CLAIM_FILE}"
    api = _api()
    with _hub_errors(repo_id, None), tempfile.TemporaryDirectory() as tmp:
        api.create_repo(repo_id, private=private, token=token, exist_ok=True)
        path = Path(tmp) / CLAIM_FILE
        path.write_text(json.dumps(claim, indent=2, sort_keys=True))
        info = api.upload_file(path_or_fileobj=str(path), path_in_repo=name, repo_id=repo_id, token=token,
                               commit_message=f"Anchor ownership claim {claim['key_commitment'][:23]}")
    return record_anchor(key, repo_id, info.oid, kind="record", token=token)


def check_anchor(anchor: Anchor, commitment: str, *, token: str | bool | None = None) -> AnchorCheck:
    """Read an anchor back from the Hub: does the commit exist and carry ``commitment``, and when was it?

    Nothing of the key's record is trusted but where to look: the dates come from the
    server, the commitment from the committed files (``ownership_claim.json`` at the repo's
    top or under ``anchors/``).

    Args:
        anchor (`Anchor`): The key's record.
        commitment (`str`): The key's commitment, recomputed from the key.
        token (`str` or `bool`, *optional*): Hub token.

    Returns:
        The :class:`AnchorCheck` (never raises for a missing or foreign commit: it says why).
    """
    def no(reason: str) -> AnchorCheck:
        return AnchorCheck(anchor, False, reason=reason)

    if anchor.commitment != commitment:
        return no("the anchor publishes another commitment than this key's")
    if anchor.endpoint.rstrip("/") != hub_endpoint().rstrip("/"):
        return no(f"anchored on {anchor.endpoint}, not on the Hub this verifier talks to ({hub_endpoint()})")
    problem = "offline mode (HF_HUB_OFFLINE)" if is_offline() else _reachable()
    if problem is not None:
        return no(f"the Hub is unreachable: {problem}")
    from huggingface_hub import hf_hub_download

    api = _api()
    try:
        with _hub_errors(anchor.repo_id, anchor.commit):
            created = api.repo_info(anchor.repo_id, token=token).created_at
            commit = api.list_repo_commits(anchor.repo_id, revision=anchor.commit, token=token)[0]
            files = api.list_repo_files(anchor.repo_id, revision=anchor.commit, token=token)
            claims = [f for f in files if f == CLAIM_FILE or (f.startswith("anchors/") and f.endswith(CLAIM_FILE))]
            found = False
            for name in claims[:50]:
                with open(hf_hub_download(anchor.repo_id, name, revision=anchor.commit, token=token)) as fh:
                    text = fh.read(1 << 16)
                try:
                    found = json.loads(text).get("key_commitment") == commitment
                except (json.JSONDecodeError, AttributeError):
                    found = False
                if found:
                    break
    except HubError as exc:
        return no(str(exc))
    if commit.commit_id != anchor.commit:
        return no(f"commit {anchor.commit[:12]} is not in {anchor.repo_id}")
    if not found:
        return no(f"commit {anchor.commit[:12]} of {anchor.repo_id} does not publish this key's commitment")
    time = max(commit.created_at, created) if created else commit.created_at
    return AnchorCheck(anchor, True, time=time)


def first_appearance(repo_id: str, *, filename: str, sha256: str, how: str = "hub history",
                     token: str | bool | None = None) -> Appearance | None:
    """The first commit of ``repo_id`` whose ``filename`` held exactly the bytes with ``sha256``.

    Args:
        repo_id (`str`): The repo.
        filename (`str`): The weights file's path in the repo.
        sha256 (`str`): SHA-256 of its bytes.
        how (`str`, *optional*): How the repo was found (for the report).
        token (`str` or `bool`, *optional*): Hub token.

    Returns:
        The :class:`Appearance`, or ``None`` when no commit read held those bytes.

    Raises:
        HubError: The repo's history cannot be read.
    """
    api = _api()
    with _hub_errors(repo_id, None):
        commits = api.list_repo_commits(repo_id, token=token)[:MAX_COMMITS]
        for c in reversed(commits):  # oldest first
            infos = api.get_paths_info(repo_id, [filename], revision=c.commit_id, token=token)
            lfs = getattr(infos[0], "lfs", None) if infos else None
            if lfs is not None and getattr(lfs, "sha256", None) == sha256:
                return Appearance(time=c.created_at, repo_id=repo_id, commit=c.commit_id, how=how)
    return None
