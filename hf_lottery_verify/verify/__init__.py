"""Verification: does a suspect model carry the owner's evidence?

* :func:`verify_model` — any suspect (model, state dict, folder, file, Hub repo id,
  inference endpoint, callable) against an :class:`~hf_lottery_verify.OwnershipKey`;
* :func:`verify_hub_model` — the same for a Hub repo at a revision, with the commit read,
  the claim's priority in the repo's history, offline use of the cache, and a ``quick``
  mode that reads only the public claim;
* :class:`VerificationReport` — one verdict (``owned`` / ``not_owned`` /
  ``inconclusive``), the evidence per scheme, and timings; :class:`VerdictPolicy` — the
  decision rule's thresholds (see :mod:`.report` for the rule).
"""

from __future__ import annotations

from .core import quick_check, verify, verify_hub_model, verify_model
from .report import EXIT_CODES, VerdictPolicy, VerificationReport, decide

__all__ = ["verify", "verify_model", "verify_hub_model", "quick_check", "VerificationReport", "VerdictPolicy", "decide",
           "EXIT_CODES"]
