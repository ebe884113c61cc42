"""Register the CIFAR ResNets with timm and ``sparse_resnet`` with transformers — without importing them.

``import hf_lottery_verify`` must stay cheap (the ``hf-lottery`` command answers ``--help``
in well under two seconds; torch, timm and transformers together take several), yet
users rely on ``import hf_lottery_verify`` making ``timm.create_model("cifar_resnet20")``
and ``AutoModelForImageClassification.from_pretrained(folder)`` work. So:

* if timm or transformers is already imported, the registration runs at once;
* otherwise a post-import hook (a meta-path finder that wraps the loader of exactly the
  ``timm`` and ``transformers`` top-level packages) runs it right after either finishes
  importing; it never changes what is imported, only adds a call after it;
* importing any module of this package that needs the registrations (the model classes,
  :func:`~hf_lottery_verify.load_model`, ...) also runs it, because those modules
  register themselves.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
from types import ModuleType

__all__ = ["register", "install_hooks", "suspend_hooks"]

_TRIGGERS = ("timm", "transformers")
_lock = threading.RLock()
_state = {"done": False, "running": False, "suspended": False}


def register() -> None:
    """Import the modules that register the architectures and the Auto classes (idempotent)."""
    with _lock:
        if _state["done"] or _state["running"]:
            return
        _state["running"] = True
        try:
            importlib.import_module("hf_lottery_verify.architectures")
            importlib.import_module("hf_lottery_verify.modeling_sparse_resnet")
            importlib.import_module("hf_lottery_verify.image_processing")
            _state["done"] = True
        finally:
            _state["running"] = False


def suspend_hooks() -> None:
    """Stop the import hooks from registering (the CLI does this: its parser imports transformers
    for ``HfArgumentParser`` only, and commands import what they need themselves)."""
    _state["suspended"] = True


class _AfterImport(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        if not _state["suspended"] and not _ours_initializing():
            register()


def _ours_initializing() -> bool:
    """Whether a module of this package is half-imported (e.g. it imported timm or transformers at its top).

    Registering then could import that module again before its names exist: the hook leaves it
    to the model modules, which call :func:`install_hooks` at their end.
    """
    return any(getattr(getattr(module, "__spec__", None), "_initializing", False)
               for name, module in list(sys.modules.items()) if name.startswith("hf_lottery_verify."))


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path, target=None):  # noqa: ANN001, ANN201 - importlib protocol
        if fullname not in _TRIGGERS or _state["done"]:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _AfterImport(spec.loader)
                return spec
        return None


def install_hooks() -> None:
    """Register now if timm or transformers is loaded, else after the first of them loads."""
    if any(name in sys.modules for name in _TRIGGERS):
        try:
            register()
        except ImportError:  # a module the registration imports is half-imported: it calls this again when complete
            if not _ours_initializing():
                raise
        return
    with _lock:
        if not any(isinstance(f, _Finder) for f in sys.meta_path):
            sys.meta_path.insert(0, _Finder())
