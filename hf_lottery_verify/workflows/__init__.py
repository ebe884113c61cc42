"""Workflows on folders and repos: the steps ``hf-lottery`` runs, built from the library's pieces.

The math lives in the scheme modules (masks, keymask, signature, triggers, alignment); these
functions load, call it, measure, and save — what a command line or an example does.

* :func:`sign_folder` — ``hf-lottery sign``.
"""

from __future__ import annotations

from .signing import sign_folder

__all__ = ["sign_folder"]
