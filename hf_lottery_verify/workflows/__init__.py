"""Workflows on folders and repos: the steps ``hf-lottery`` runs, built from the library's pieces.

The math lives in the scheme modules (masks, keymask, signature, triggers, alignment); these
functions load, call it, measure, and save — what a command line or an example does.

* :func:`sign_folder` — ``hf-lottery sign``;
* :func:`split_key_folder` — ``hf-lottery split-key`` (Scheme V1);
* :func:`keymask_fidelity`, :func:`retrain_from_rewind` — the Scheme V1 fidelity experiment
  (the paper's Figure 2).
"""

from __future__ import annotations

from .fidelity import KeymaskFidelity, keymask_fidelity, retrain_from_rewind
from .keymask import split_key_folder
from .signing import sign_folder

__all__ = ["sign_folder", "split_key_folder", "KeymaskFidelity", "keymask_fidelity", "retrain_from_rewind"]
