"""hf_lottery_verify: prove ownership of sparse "winning tickets" on the Hugging Face Hub.

Importing the package registers the CIFAR ResNets with timm and the ``sparse_resnet``
model type with transformers' Auto classes.

Main entry points:

* :class:`SparseResNetForImageClassification`, :func:`load_model` — sparse timm ResNets as
  transformers models, masks in safetensors, any ResNet checkpoint layout;
* :func:`find_extreme_ticket` — IMP with late rewinding (Section 4.1);
* :func:`split_key_mask`, :func:`merge_key_mask`, :func:`lock_model`, :func:`load_with_key` —
  Scheme V1 (key masks);
* :func:`embed_signature`, :func:`extract_signature` — Scheme V2 (QR signature in the mask);
* :class:`OwnershipKey` — the owner's private proof material.
"""

from __future__ import annotations

from . import architectures as _architectures  # noqa: F401  (registers timm models)
from ._version import __version__
from .configuration_sparse_resnet import SparseResNetConfig
from .errors import *  # noqa: F403
from .errors import __all__ as _errors_all
from .imp import IMPConfig, find_extreme_ticket
from .keymask import load_with_key, lock_model, merge_key_mask, split_key_mask
from .loading import load_model
from .modeling_sparse_resnet import SparseResNetForImageClassification
from .ownership_key import OwnershipKey
from .signature import SignatureEvidence, embed_signature, extract_signature
from .training import TrainConfig

__all__ = [
    "__version__",
    "SparseResNetConfig",
    "SparseResNetForImageClassification",
    "load_model",
    "IMPConfig",
    "TrainConfig",
    "find_extreme_ticket",
    "split_key_mask",
    "merge_key_mask",
    "lock_model",
    "load_with_key",
    "embed_signature",
    "extract_signature",
    "SignatureEvidence",
    "OwnershipKey",
    *_errors_all,
]
