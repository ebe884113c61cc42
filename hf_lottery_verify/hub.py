"""All Hugging Face Hub I/O of the library (the only module that imports ``huggingface_hub``).

* :func:`download_model_folder` fetches the *safe* files of a model repo (safetensors,
  JSON, the model card) at one pinned commit; pickle weights are never downloaded and a
  repo holding nothing else is refused before any transfer. With the server unreachable,
  a repo already in the cache is served from it (the returned location says so), and
  everything else fails within seconds with one :class:`~hf_lottery_verify.errors.HubError`.
* :func:`read_remote_claim` reads the public ownership claim from the weights file's
  header through HTTP range requests, without downloading the weights.

Publishing (folder, push, anchor) sits above, in :mod:`hf_lottery_verify.publishing`.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import (
    CheckpointError,
    HubEntryNotFoundError,
    HubError,
    HubGatedRepoError,
    HubHTTPError,
    HubRepoNotFoundError,
    HubRevisionNotFoundError,
    PickleRefusedError,
)
from .storage import MASKS_NAME, METADATA_KEY, PICKLE_SUFFIXES, WEIGHTS_NAME, name_some

__all__ = [
    "SAFE_PATTERNS",
    "HubLocation",
    "RemoteClaim",
    "looks_like_repo_id",
    "hub_endpoint",
    "is_offline",
    "download_model_folder",
    "read_remote_claim",
]

logger = logging.getLogger(__name__)

SAFE_PATTERNS = ("*.safetensors", "*.json", "README.md", "*.svg")
PROBE_TIMEOUT_S = 3.0
MAX_ODD_NAMES = 100
"""A repo listing more files whose names leave the folder (``../x``) is refused, not filtered."""
"""How long to wait for the Hub to accept a connection before declaring it unreachable."""


@dataclass
class HubLocation:
    """Where a Hub download came from.

    Attributes:
        repo_id: The repo.
        revision: The revision asked for (``None`` = the default branch).
        commit_sha: The commit the files were read at.
        folder: The local snapshot folder.
        files: Repo files of that commit (as listed by the Hub, or found in the cache).
        from_cache: The server was not asked (offline mode or unreachable server).
    """

    repo_id: str
    revision: str | None
    commit_sha: str | None
    folder: Path
    files: list[str] = field(default_factory=list)
    from_cache: bool = False


@dataclass
class RemoteClaim:
    """A public claim read from a repo's weights header without downloading the weights.

    Attributes:
        repo_id: The repo.
        commit_sha: The commit read.
        claim: The claim dict, or ``None`` when the header carries none.
        filename: The file whose header was read.
    """

    repo_id: str
    commit_sha: str | None
    claim: dict[str, Any] | None
    filename: str


# --------------------------------------------------------------------------- small helpers


def looks_like_repo_id(name: str) -> bool:
    """Whether ``name`` reads as a Hub repo id (``owner/name`` or ``name``) and not a local path.

    Args:
        name (`str`): A string given as a model source.

    Returns:
        ``True`` when it is not an existing local path and has the shape of a repo id.
    """
    if (os.path.exists(name) or name.startswith((".", "/", "~")) or name.count("/") > 1
            or name.endswith((".safetensors", ".json") + PICKLE_SUFFIXES)):
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def hub_endpoint() -> str:
    """The Hub endpoint the client talks to (``HF_ENDPOINT``, else huggingface.co)."""
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def is_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set: then only the cache is used."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _reachable(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """``None`` when the endpoint accepts a TCP connection within ``timeout``, else why not.

    One socket connect, no HTTP request and no retries: the Hub client itself retries a
    refused connection with backoff for 30-40 s, which is no way to learn that the server
    is down.
    """
    import socket

    url = urlsplit(hub_endpoint())
    host = url.hostname or "localhost"
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{url.scheme}://{host}:{port} is unreachable ({exc})"


@contextlib.contextmanager
def _hub_errors(repo_id: str, revision: str | None) -> Iterator[None]:
    """Turn the client's exceptions into this library's typed errors with one clear message."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except (HubError, CheckpointError):
        raise
    except GatedRepoError as exc:
        raise HubGatedRepoError(f"Hub repo '{repo_id}' is gated; accept its terms and pass token=...",
                                response=exc.response) from exc
    except RepositoryNotFoundError as exc:
        raise HubRepoNotFoundError(f"Hub repo '{repo_id}' not found (or private: pass token=...).",
                                   response=exc.response) from exc
    except RevisionNotFoundError as exc:
        raise HubRevisionNotFoundError(f"Revision '{revision}' not found in Hub repo '{repo_id}'.",
                                       response=exc.response) from exc
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        raise HubError(f"'{repo_id}' is not in the local Hub cache (offline mode); run once with network access "
                       f"or drop --local-files-only / HF_HUB_OFFLINE. ({exc})") from exc
    except EntryNotFoundError as exc:
        raise HubEntryNotFoundError(f"A file of '{repo_id}' is missing on the Hub: {exc}") from exc
    except HfHubHTTPError as exc:
        raise HubHTTPError(f"Hub request for '{repo_id}' failed: {exc}", response=exc.response) from exc
    except Exception as exc:
        # huggingface_hub 2.x raises its HTTP stack's own errors (httpx2) for refused or
        # dropped connections; OSError covers disk problems in the cache.
        if isinstance(exc, OSError) or type(exc).__module__.split(".")[0].startswith(("httpx", "httpcore")):
            raise HubError(f"Network or disk failure while talking to the Hub about '{repo_id}': {exc}. Check the "
                           "connection (or HF_ENDPOINT), or use the cache (local_files_only=True / "
                           "HF_HUB_OFFLINE=1).") from exc
        raise


def _commit_of_snapshot(folder: Path) -> str | None:
    """The commit sha of a cache snapshot folder (``.../snapshots/<sha>``)."""
    name = Path(folder).name
    return name if len(name) == 40 and all(c in "0123456789abcdef" for c in name) else None


def _is_plain_path(name: str) -> bool:
    """Whether a repo file name is a relative path that stays inside the snapshot folder on every system."""
    return bool(name) and not any(c in name for c in "\\\0:") and not name.startswith("/") and all(
        part not in ("", ".", "..") for part in name.split("/"))


def _refuse_unsafe(repo_id: str, files: list[str]) -> None:
    if any(f.endswith(".safetensors") and not f.endswith(MASKS_NAME) for f in files):
        return
    pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise PickleRefusedError(
            f"Hub repo '{repo_id}' holds only pickle weights ({name_some(pickles)}); hf_lottery_verify never "
            "unpickles. Ask the publisher for safetensors weights.", path=repo_id)
    raise HubError(f"Hub repo '{repo_id}' holds no safetensors weights (files: {name_some(files) or 'none'}).")


# --------------------------------------------------------------------------- downloads


def download_model_folder(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
) -> HubLocation:
    """Download the safe files of a model repo (safetensors, JSON, model card, badge) at one commit.

    The repo's file list is checked first (pickle-only repos are refused before any
    download); the snapshot folder then names the one commit all files were read at. Files
    whose names would leave the snapshot folder (``../x``, absolute paths, backslashes, NUL)
    are skipped with a warning; they are not in the returned ``files``.

    Args:
        repo_id (`str`): ``owner/name`` on the Hub (or the server in ``HF_ENDPOINT``).
        revision (`str`, *optional*): Branch, tag or commit; defaults to the main branch.
        cache_dir (`str` or `os.PathLike`, *optional*): Hub cache folder; defaults to huggingface_hub's.
        token (`str` or `bool`, *optional*): Hub token; defaults to the logged-in one.
        local_files_only (`bool`, *optional*, defaults to `False`): Use the local cache only
            (also implied by ``HF_HUB_OFFLINE=1``).
        force_download (`bool`, *optional*, defaults to `False`): Download again even when cached.

    Returns:
        The :class:`HubLocation` (local folder, commit sha, files).

    Raises:
        PickleRefusedError: The repo has pickle weights and no safetensors.
        HubError: The repo or revision does not exist, the server is unreachable and the
            repo is not cached, or the network failed.
    """
    from huggingface_hub import HfApi, snapshot_download

    offline = local_files_only or is_offline()
    if not offline:
        problem = _reachable()
        if problem is not None:
            try:
                location = download_model_folder(repo_id, revision=revision, cache_dir=cache_dir, token=token,
                                                 local_files_only=True)
            except HubError:
                raise HubError(f"Cannot reach the Hub: {problem}, and '{repo_id}' is not in the local cache. "
                               "Check the connection or HF_ENDPOINT.") from None
            logger.warning("The Hub is unreachable (%s); using the cached snapshot of '%s' at %s.", problem, repo_id,
                           location.commit_sha)
            return location
    with _hub_errors(repo_id, revision):
        if offline:
            folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token,
                                            local_files_only=True, allow_patterns=list(SAFE_PATTERNS)))
            files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
            _refuse_unsafe(repo_id, files)
            return HubLocation(repo_id, revision, _commit_of_snapshot(folder), folder, files, from_cache=True)
        info = HfApi().model_info(repo_id, revision=revision, token=token)
        files = [s.rfilename for s in (info.siblings or [])]
        odd = [f for f in files if not _is_plain_path(f)]
        if len(odd) > MAX_ODD_NAMES:
            raise HubError(f"Hub repo '{repo_id}' lists {len(odd):,} files whose names leave the folder "
                           f"({name_some(odd)}); not downloading from it.")
        if odd:
            logger.warning("Hub repo '%s' lists %d file(s) whose names leave the folder (%s); not downloading them.",
                           repo_id, len(odd), name_some(odd))
            files = [f for f in files if _is_plain_path(f)]
        _refuse_unsafe(repo_id, files)
        # by the revision asked for (not the sha), so that the cache records the branch and a
        # later offline verification of the same revision finds it; the snapshot folder names
        # the commit actually read. The odd names are excluded by patterns, so escaped.
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token,
                                        allow_patterns=list(SAFE_PATTERNS), ignore_patterns=[glob.escape(f) for f in odd],
                                        force_download=force_download))
    return HubLocation(repo_id, revision, _commit_of_snapshot(folder) or info.sha, folder, files)


def _weights_filename(files: list[str]) -> str:
    if WEIGHTS_NAME in files:
        return WEIGHTS_NAME
    candidates = sorted(f for f in files if f.endswith(".safetensors") and not f.endswith(MASKS_NAME))
    if not candidates:
        _refuse_unsafe("", files)
    return candidates[0]


def read_remote_claim(repo_id: str, *, revision: str | None = None, token: str | bool | None = None
                      ) -> RemoteClaim:
    """Read the public claim from a repo's weights header over HTTP range requests.

    Only the safetensors header is transferred (a few kB), never the weights.

    Args:
        repo_id (`str`): The repo.
        revision (`str`, *optional*): Branch, tag or commit.
        token (`str` or `bool`, *optional*): Hub token.

    Returns:
        The :class:`RemoteClaim` (``claim`` is ``None`` when the header carries none or it
        does not parse: a claim is information, never evidence).

    Raises:
        HubError: The repo, revision or weights file is missing, or the server is unreachable.
        PickleRefusedError: The repo holds only pickle weights.
    """
    import json

    from huggingface_hub import HfApi

    problem = None if is_offline() else _reachable()
    if problem is not None or is_offline():
        raise HubError(f"Cannot read the claim of '{repo_id}': {problem or 'offline mode (HF_HUB_OFFLINE)'}; the "
                       "quick check needs the server (a full verification can use the cache).")
    api = HfApi()
    with _hub_errors(repo_id, revision):
        info = api.model_info(repo_id, revision=revision, token=token)
        files = [s.rfilename for s in (info.siblings or [])]
        filename = _weights_filename(files)
        meta = api.parse_safetensors_file_metadata(repo_id, filename, revision=info.sha, token=token)
    claim = None
    with contextlib.suppress(json.JSONDecodeError, TypeError, AttributeError):
        ours = json.loads((meta.metadata or {}).get(METADATA_KEY, "null"))
        claim = ours.get("ownership") if isinstance(ours, dict) and isinstance(ours.get("ownership"), dict) else None
    return RemoteClaim(repo_id=repo_id, commit_sha=info.sha, claim=claim, filename=filename)
