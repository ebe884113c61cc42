"""The package's layering holds: no module imports (at module level) from a layer above its own.

Layers, bottom to top — each may import from its own layer and the ones below:

0. tensor math and plumbing: errors, atomic, codecs, masks, pruning, stats
1. formats and structure: architectures, configuration, configs, storage, ownership_key, spaces, qr
2. the model: modeling_sparse_resnet
3. I/O: hub, suspect, loading, cards, localhub, recovery, data, image_processing
4. schemes and training: keymask, signature, alignment, triggers, training
5. workflows of one scheme: imp, retrain, attacks, blackbox, serve, calibration
6. the top: verify, workflows, demo, cli

Function-level imports that delegate *up* (``model.push_to_hub`` → ``hub``) are allowed:
they run only when called. What must hold at import time is checked in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import hf_lottery_verify

PACKAGE = Path(hf_lottery_verify.__file__).parent
LAYERS: dict[str, int] = {
    "errors": 0, "_version": 0, "atomic": 0, "codecs": 0, "masks": 0, "pruning": 0, "stats": 0, "_registration": 0,
    "architectures": 1, "configuration_sparse_resnet": 1, "configs": 1, "storage": 1, "ownership_key": 1,
    "spaces": 1, "qr": 1, "key_sections": 1,
    "modeling_sparse_resnet": 2,
    "hub": 3, "suspect": 3, "loading": 3, "cards": 3, "localhub": 3, "recovery": 3, "data": 3, "anchors": 3,
    "image_processing": 3,
    "keymask": 4, "signature": 4, "alignment": 4, "triggers": 4, "training": 4,
    "imp": 5, "retrain": 5, "attacks": 5, "blackbox": 5, "serve": 5, "calibration": 5,
    "verify": 6, "workflows": 6, "demo": 6, "cli": 6, "__init__": 6,
}


def _top(module_path: Path) -> str:
    rel = module_path.relative_to(PACKAGE).with_suffix("")
    return rel.parts[0]


def _module_level_imports(path: Path) -> list[str]:
    """Package-relative targets of the module-level imports of ``path`` (first path component)."""
    tree = ast.parse(path.read_text())
    package_parts = path.relative_to(PACKAGE).parent.parts
    targets = []
    for node in tree.body:
        if isinstance(node, ast.If):  # `if TYPE_CHECKING:` blocks are for type checkers only
            continue
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(package_parts[: len(package_parts) - (node.level - 1)]) if node.level > 1 else list(
                package_parts)
            parts = base + (node.module.split(".") if node.module else [])
            if parts:
                targets.append(parts[0])
            else:
                targets.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hf_lottery_verify."):
            targets.append(node.module.split(".")[1])
    return targets


def test_every_module_has_a_layer() -> None:
    tops = {_top(p) for p in PACKAGE.rglob("*.py")}
    assert tops <= set(LAYERS), f"modules without a layer: {sorted(tops - set(LAYERS))}"


def test_no_module_imports_from_a_layer_above() -> None:
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = LAYERS[_top(path)]
        for target in _module_level_imports(path):
            if target in LAYERS and LAYERS[target] > own:
                violations.append(f"{path.relative_to(PACKAGE)} (layer {own}) imports {target} "
                                  f"(layer {LAYERS[target]})")
    assert not violations, "\n".join(violations)


@pytest.mark.parametrize("module", ["modeling_sparse_resnet", "storage", "masks", "codecs", "pruning"])
def test_low_modules_load_nothing_from_the_schemes(module: str) -> None:
    code = (f"import sys, hf_lottery_verify.{module}; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('hf_lottery_verify.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {m.split(".")[1] for m in out.stdout.split()}
    forbidden = {"signature", "keymask", "training", "hub", "verify", "alignment", "triggers", "imp", "attacks"}
    assert not loaded & forbidden, f"importing {module} loaded {sorted(loaded & forbidden)}"


def test_importing_the_package_is_light() -> None:
    code = "import sys, hf_lottery_verify; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_registration_follows_timm_and_transformers() -> None:
    code = ("import hf_lottery_verify, timm; timm.create_model('cifar_resnet8'); "
            "from transformers import AutoConfig; print(AutoConfig.for_model('sparse_resnet').model_type)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "sparse_resnet"


def test_no_module_is_too_long() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 550}
    assert not long, f"split these modules (one concept each, ~500 lines at most): {long}"


def test_errors_are_defined_in_errors_py_and_still_importable_from_their_old_modules() -> None:
    from hf_lottery_verify import errors
    from hf_lottery_verify.blackbox import EndpointError
    from hf_lottery_verify.cards import CardError, CardTemplateNotFoundError
    from hf_lottery_verify.cards.errors import CardError as CardErrorOld
    from hf_lottery_verify.spaces import InconsistentChannelsError, UnsupportedStructureError

    for cls in (EndpointError, CardError, CardErrorOld, CardTemplateNotFoundError, InconsistentChannelsError,
                UnsupportedStructureError):
        assert cls.__module__ == "hf_lottery_verify.errors" and getattr(errors, cls.__name__) is cls
        assert cls.__name__ in errors.__all__ and issubclass(cls, errors.HfLotteryError)
    # a key that does not fit is not a signature problem: it is raised for V1 and V3 keys too
    assert not issubclass(errors.KeyMismatchError, errors.SignatureError)
    assert issubclass(errors.KeyMismatchError, ValueError)
    for missing in (errors.KeyFileNotFoundError, errors.CheckpointNotFoundError):
        assert issubclass(missing, FileNotFoundError)
