"""Pointing the Hub client at a local Hub: reserve a port and set the environment before huggingface_hub is imported."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile

from .store import DEFAULT_TOKEN

# --------------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------------

_RESERVED: socket.socket | None = None
_CLEARED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ASSETS_CACHE",
                "HUGGINGFACE_ASSETS_CACHE", "HF_XET_CACHE", "HF_TOKEN_PATH", "HUGGINGFACE_HUB_TOKEN",
                "HUGGINGFACE_CO_STAGING")


def configure_hub_environment() -> int:
    """Reserve a loopback port and point the Hub client at it; call before ``huggingface_hub`` is imported.

    Sets ``HF_ENDPOINT``, ``HF_HUB_DISABLE_XET``, ``HF_TOKEN`` (``DEFAULT_TOKEN``: the token of a
    :class:`LocalHub`'s default user ``DEFAULT_USER``), a fresh temporary ``HF_HOME``
    (removed at exit) and ``HF_HUB_DISABLE_TELEMETRY``, and removes variables that would redirect the cache
    or switch the client offline. The port stays reserved (bound, refusing connections) until
    :func:`local_hub` starts the server on it. Returns the port.
    """
    global _RESERVED
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    if _RESERVED is not None:
        _RESERVED.close()
    _RESERVED = sock
    port = sock.getsockname()[1]
    home = tempfile.mkdtemp(prefix="hlv-hf-home-")
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    for name in _CLEARED_ENV:
        os.environ.pop(name, None)
    os.environ.update({"HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_DISABLE_XET": "1",
                       "HF_TOKEN": DEFAULT_TOKEN, "HF_HOME": home, "HF_HUB_DISABLE_TELEMETRY": "1"})
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return port


def reserved_socket(port: int) -> socket.socket | None:
    """The socket :func:`configure_hub_environment` reserved for ``port``, if any (the server adopts it)."""
    return _RESERVED if _RESERVED is not None and _RESERVED.getsockname()[1] == port else None
