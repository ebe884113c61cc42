"""An in-memory, Hub-compatible HTTP server: the tests' Hub, and the demo's.

The real, unpatched ``huggingface_hub`` client (and transformers / timm on top of it) talks to
:class:`LocalHub` through ``HF_ENDPOINT``. The client reads that variable when it is imported, so
``tests/conftest.py`` calls :func:`configure_hub_environment` before anything imports it.

Implemented surface (model repos only: nothing here uses datasets or spaces):

* upload: ``POST /api/repos/create``, ``DELETE /api/repos/delete``, ``PUT /api/models/{repo}/settings``,
  ``POST /api/validate-yaml``, ``POST /api/models/{repo}/preupload/{rev}``, the LFS batch API
  ``POST /{repo}.git/info/lfs/objects/batch`` with the signed ``PUT`` hrefs it returns, and
  ``POST /api/models/{repo}/commit/{rev}`` (NDJSON ``header``/``file``/``lfsFile``/``deletedFile``);
  new branches and tags (``POST .../branch/{name}``, ``.../tag/{rev}``; refs are never deleted);
* download: ``GET /api/models/{repo}[/revision/{rev}]``, ``/tree/{rev}[/{path}]``, ``/paths-info/{rev}``,
  ``/commits/{rev}``, ``/refs`` and ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` with byte ranges;
* errors carry the ``X-Error-Code`` header the client maps to typed errors.

It holds against a hostile client like a real server: tokens are checked against the users it knows
(:meth:`LocalHub.add_user`), every write needs one and stays in its user's namespace, header values
never carry control characters, bodies need a valid ``Content-Length`` under a cap, and a deadline
bounds each whole request. Commits and repos are dated by the server's clock only.

Every commit is an immutable snapshot with a fresh 40-hex id, so old revisions stay downloadable.
"""

from __future__ import annotations

from .environment import configure_hub_environment, reserved_socket
from .server import LocalHub
from .store import DEFAULT_TOKEN, DEFAULT_USER, Blob, Commit, HubError, Repo, git_blob_sha1, is_lfs_path

__all__ = ["Blob", "Commit", "HubError", "LocalHub", "Repo", "DEFAULT_USER", "DEFAULT_TOKEN", "configure_hub_environment",
           "reserved_socket", "git_blob_sha1", "is_lfs_path"]
