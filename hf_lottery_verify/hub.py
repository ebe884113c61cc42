"""All Hugging Face Hub I/O of the library (the only module importing ``huggingface_hub``).

Downloads fetch safetensors, JSON and the model card only: pickle weights are never
downloaded, and a repo that holds nothing else is refused before any transfer.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .errors import HubError, PickleRefusedError
from .storage import PICKLE_SUFFIXES

__all__ = ["SAFE_PATTERNS", "download_model_folder", "looks_like_repo_id"]

logger = logging.getLogger(__name__)

SAFE_PATTERNS = ("*.safetensors", "*.json", "README.md")


def looks_like_repo_id(name: str) -> bool:
    """Whether ``name`` reads as a Hub repo id (``owner/name`` or ``name``) and not a local path.

    Args:
        name: A string given as a model source.

    Returns:
        ``True`` when it is not an existing local path and has the shape of a repo id.
    """
    if os.path.exists(name) or name.startswith((".", "/", "~")) or name.count("/") > 1:
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def download_model_folder(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> Path:
    """Download the safe files of a model repo (safetensors, JSON, model card).

    Args:
        repo_id: ``owner/name`` on the Hub (or the server in ``HF_ENDPOINT``).
        revision: Branch, tag or commit; defaults to the main branch.
        cache_dir: Hub cache folder; defaults to huggingface_hub's.
        token: Hub token; defaults to the logged-in one.
        local_files_only: Use the local cache only.

    Returns:
        The local snapshot folder.

    Raises:
        PickleRefusedError: The repo has pickle weights and no safetensors.
        HubError: The repo or revision does not exist, or the network failed.
    """
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        if not local_files_only:
            files = HfApi().list_repo_files(repo_id, revision=revision, token=token)
            if not any(f.endswith(".safetensors") for f in files):
                pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
                if pickles:
                    raise PickleRefusedError(
                        f"Hub repo '{repo_id}' holds only pickle weights ({', '.join(pickles[:3])}); "
                        "hf_lottery_verify never unpickles. Ask the publisher for safetensors weights.",
                        path=repo_id,
                    )
                raise HubError(f"Hub repo '{repo_id}' holds no safetensors weights (files: {files[:10]}).")
        folder = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
            allow_patterns=list(SAFE_PATTERNS),
        )
    except RepositoryNotFoundError as exc:
        raise HubError(f"Hub repo '{repo_id}' not found (or private: pass token=...).") from exc
    except RevisionNotFoundError as exc:
        raise HubError(f"Revision '{revision}' not found in Hub repo '{repo_id}'.") from exc
    except (EntryNotFoundError, LocalEntryNotFoundError) as exc:
        raise HubError(f"Could not get '{repo_id}' from the Hub or the local cache: {exc}") from exc
    except HfHubHTTPError as exc:
        raise HubError(f"Hub request for '{repo_id}' failed: {exc}") from exc
    except (HubError, PickleRefusedError):
        raise
    except Exception as exc:
        # huggingface_hub 2.x raises its HTTP stack's own errors (httpx) for refused or
        # dropped connections; OSError covers disk problems in the cache.
        if isinstance(exc, OSError) or type(exc).__module__.split(".")[0].startswith(("httpx", "httpcore")):
            raise HubError(f"Network or disk failure while fetching '{repo_id}': {exc}. Check the connection "
                           "(or HF_ENDPOINT), or pass local_files_only=True to use the cache.") from exc
        raise
    return Path(folder)
