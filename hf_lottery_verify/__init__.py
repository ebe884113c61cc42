"""hf_lottery_verify: prove ownership of sparse "winning tickets" on the Hugging Face Hub.

Importing the package registers the CIFAR ResNets with timm and the ``sparse_resnet``
model type with transformers' Auto classes (as soon as timm or transformers is imported;
see :mod:`hf_lottery_verify._registration`). Public names load lazily, so ``import
hf_lottery_verify`` and the ``hf-lottery`` command start fast.

One path per job — :func:`sign`, :func:`publish`, :func:`verify` (the model's
``save_pretrained(signature=...)`` and ``push_to_hub(...)`` call them) — over these parts:

* :class:`SparseResNetForImageClassification`, :func:`load_model` — sparse timm ResNets as
  transformers models, masks in safetensors, any ResNet checkpoint layout;
* :func:`find_extreme_ticket` — IMP with late rewinding (Section 4.1);
* :func:`split_key_mask`, :func:`merge_key_mask`, :func:`lock_model`, :func:`load_with_key` —
  Scheme V1 (key masks);
* :func:`sign` (:func:`embed_signature` and the claim), :func:`extract_signature` — Scheme V2
  (QR signature in the mask);
* :func:`make_trigger_set` — Scheme V3 (trigger sets), :func:`retrain` — retraining a signed
  ticket (with triggers);
* :class:`OwnershipKey` — the owner's private proof material;
* :func:`publish` — a Hub commit that anchors the key (or a folder);
* :func:`verify` (also named :func:`verify_model`; :func:`verify_hub_model` for a Hub repo) —
  check a suspect (model, folder, Hub repo, endpoint) against the key; one
  :class:`VerificationReport` with the verdict.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import _registration
from ._version import __version__
from .errors import *  # noqa: F403
from .errors import __all__ as _errors_all

_LAZY: dict[str, str] = {
    "SparseResNetConfig": ".configuration_sparse_resnet",
    "SparseResNetForImageClassification": ".modeling_sparse_resnet",
    "load_model": ".loading",
    "IMPConfig": ".imp",
    "find_extreme_ticket": ".imp",
    "TrainConfig": ".training",
    "split_key_mask": ".keymask",
    "merge_key_mask": ".keymask",
    "lock_model": ".keymask",
    "load_with_key": ".loading",
    "embed_signature": ".signature",
    "extract_signature": ".signature",
    "SignatureEvidence": ".signature",
    "make_trigger_set": ".triggers",
    "TriggerSet": ".triggers",
    "retrain": ".retrain",
    "OwnershipKey": ".ownership_key",
    "read_suspect": ".suspect",
    "sign": ".signature",
    "publish": ".publishing",
    "verify": ".verify",
    "verify_model": ".verify",
    "verify_hub_model": ".verify",
    "VerificationReport": ".verify",
    "VerdictPolicy": ".verify",
    "push_model": ".publishing",
    "publish_folder": ".publishing",
    "run_demo": ".workflows",
}

__all__ = ["__version__", *_LAZY, *_errors_all]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hf_lottery_verify' has no attribute '{name}'")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .configuration_sparse_resnet import SparseResNetConfig
    from .imp import IMPConfig, find_extreme_ticket
    from .keymask import lock_model, merge_key_mask, split_key_mask
    from .loading import load_model, load_with_key
    from .modeling_sparse_resnet import SparseResNetForImageClassification
    from .ownership_key import OwnershipKey
    from .publishing import publish, publish_folder, push_model
    from .retrain import retrain
    from .signature import SignatureEvidence, embed_signature, extract_signature, sign
    from .suspect import read_suspect
    from .training import TrainConfig
    from .triggers import TriggerSet, make_trigger_set
    from .verify import VerdictPolicy, VerificationReport, verify, verify_hub_model, verify_model
    from .workflows import run_demo

_registration.install_hooks()
