"""hf_lottery_verify: prove ownership of sparse "winning tickets" on the Hugging Face Hub.

Importing the package registers the CIFAR ResNets with timm and the ``sparse_resnet``
model type with transformers' Auto classes.
"""

from __future__ import annotations

from . import architectures as _architectures  # noqa: F401  (registers timm models)
from .configuration_sparse_resnet import SparseResNetConfig
from .errors import *  # noqa: F403
from .errors import __all__ as _errors_all
from .modeling_sparse_resnet import SparseResNetForImageClassification, load_model

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "SparseResNetConfig",
    "SparseResNetForImageClassification",
    "load_model",
    *_errors_all,
]
