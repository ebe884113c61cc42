"""The commands of ``hf-lottery``, one module per stage of the workflow (importing them registers them)."""

from __future__ import annotations

from . import attacks, demo, hub, publish, schemes, ticket  # noqa: F401

__all__: list[str] = []
