"""pytest fixtures around :class:`hf_lottery_verify.localhub.LocalHub` (the local Hub the tests talk to)."""

from __future__ import annotations

import os
import re
import sys
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from hf_lottery_verify.localhub import (
    DEFAULT_USER,
    LocalHub,
    configure_hub_environment,
    git_blob_sha1,
    reserved_socket,
)


def _check_client_endpoint(hub: LocalHub) -> None:
    """Fail loudly when ``huggingface_hub`` was imported before the environment pointed it at ``hub``."""
    if "huggingface_hub" not in sys.modules:
        return
    from huggingface_hub import constants

    if constants.ENDPOINT != hub.url:
        pytest.fail(f"huggingface_hub was imported with ENDPOINT={constants.ENDPOINT!r}, not the local hub "
                    f"{hub.url!r}: call configure_hub_environment() before anything imports huggingface_hub "
                    "(tests/conftest.py does this first).", pytrace=False)


@pytest.fixture(scope="session")
def local_hub() -> Iterator[LocalHub]:
    """The session's :class:`LocalHub`, listening on the port in ``HF_ENDPOINT`` (one per xdist worker)."""
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT", ""))
    if endpoint.hostname != "127.0.0.1" or endpoint.port is None:
        pytest.fail("HF_ENDPOINT does not point at a loopback port: configure_hub_environment() was not called",
                    pytrace=False)
    sock = reserved_socket(endpoint.port)
    hub = LocalHub(port=endpoint.port, sock=sock).start()
    _check_client_endpoint(hub)
    yield hub
    hub.stop()


@pytest.fixture
def fresh_hub(local_hub: LocalHub) -> Iterator[LocalHub]:
    """The session hub, running, with an empty request log and no pending faults; restarted after the test."""
    local_hub.start()
    local_hub.clear_faults()
    local_hub.clear_log()
    yield local_hub
    local_hub.clear_faults()
    local_hub.start()


def _safe_name(text: str, limit: int = 40) -> str:
    name = re.sub(r"[^A-Za-z0-9_]+", "-", text).strip("-_")[:limit].strip("-_")
    return re.sub(r"-{2,}", "-", name) or "test"


@pytest.fixture
def hub_repo_id(fresh_hub: LocalHub, request: pytest.FixtureRequest) -> str:
    """A unique ``"local-user/<test name>-<random>"`` repo id (not created yet) on the running local hub."""
    return f"{DEFAULT_USER}/{_safe_name(request.node.name)}-{uuid.uuid4().hex[:8]}"



__all__ = ["LocalHub", "configure_hub_environment", "fresh_hub", "git_blob_sha1", "hub_repo_id", "local_hub"]
