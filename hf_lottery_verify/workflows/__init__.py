"""Workflows on folders and repos: the steps ``hf-lottery`` runs, built from the library's pieces.

The math lives in the scheme modules (masks, keymask, signature, triggers, alignment); these
functions load, call it, measure, and save — what a command line or an example does.

* :func:`sign_folder` — ``hf-lottery sign``;
* :func:`split_key_folder` — ``hf-lottery split-key`` (Scheme V1);
* :func:`keymask_fidelity`, :func:`retrain_from_rewind` — the Scheme V1 fidelity experiment
  (the paper's Figure 2);
* :func:`run_demo` — ``hf-lottery demo``, the whole job end to end (:mod:`.demo`, report in
  :mod:`.demo_report`).
"""

from __future__ import annotations

from .demo import run_demo  # imports the library's heavy parts only when called
from .fidelity import KeymaskFidelity, keymask_fidelity, retrain_from_rewind
from .keymask import split_key_folder
from .signing import sign_folder

__all__ = ["run_demo", "sign_folder", "split_key_folder", "KeymaskFidelity", "keymask_fidelity", "retrain_from_rewind"]
