"""The package's layering holds: no import from a layer above, no import cycle — every import
statement counts, function-level and ``TYPE_CHECKING`` ones included.

Layers, bottom to top — each module may import from its own layer and the ones below, and the
modules of one layer import each other without cycles:

0. tensor math and plumbing: errors, atomic, codecs, masks, pruning, stats, qr, key sections, symmetry
1. formats and structure: architectures, configs, storage, spaces, liveness, ownership_key, data,
   configuration, cards
2. the paper's schemes on state dicts and tensors: recovery, alignment, signature, keymask,
   triggers, training (never the model class, the Hub or a workflow)
3. Hub I/O: hub, suspect, anchors, localhub, publishing
4. the model class and loading: modeling_sparse_resnet, loading, image_processing
5. workflows: imp, retrain, attacks, blackbox, serve, calibration, verify, workflows
6. the entry points: cli, the package ``__init__``
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

import hf_lottery_verify

PACKAGE = Path(hf_lottery_verify.__file__).parent
LAYERS: dict[str, int] = {
    **dict.fromkeys(["errors", "_version", "atomic", "codecs", "masks", "pruning", "stats", "qr", "key_sections",
                     "symmetry", "_registration"], 0),
    **dict.fromkeys(["architectures", "configs", "storage", "spaces", "liveness", "ownership_key", "data",
                     "configuration_sparse_resnet", "cards"], 1),
    **dict.fromkeys(["recovery", "alignment", "signature", "keymask", "triggers", "training"], 2),
    **dict.fromkeys(["hub", "suspect", "anchors", "localhub", "publishing"], 3),
    **dict.fromkeys(["modeling_sparse_resnet", "loading", "image_processing"], 4),
    **dict.fromkeys(["imp", "retrain", "attacks", "blackbox", "serve", "calibration", "verify", "workflows"], 5),
    **dict.fromkeys(["cli", "__init__"], 6),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__"


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _targets(module: str, node: ast.AST) -> list[str]:
    """The package modules an import statement loads (deepest existing module of each name)."""
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = [] if module == "__init__" else module.split(".")
            if MODULES[module].name != "__init__.py":
                base = base[:-1]
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        elif (node.module or "").startswith("hf_lottery_verify"):
            target = node.module.removeprefix("hf_lottery_verify").lstrip(".")
        else:
            return []
        names = [f"{target}.{a.name}".lstrip(".") for a in node.names]
    elif isinstance(node, ast.Import):
        names = [a.name.removeprefix("hf_lottery_verify.") for a in node.names if a.name.startswith("hf_lottery_verify.")]
    else:
        return []
    out = []
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        out.append(name or "__init__")
    return out


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            for target in _targets(module, node):
                if target != module and not module.startswith(target + "."):  # a package's own __init__
                    graph[module].add(target)
    return graph


def _top(module: str) -> str:
    return module.split(".")[0]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer() -> None:
    tops = {_top(m) for m in MODULES}
    assert tops <= set(LAYERS), f"modules without a layer: {sorted(tops - set(LAYERS))}"


def test_no_module_imports_from_a_layer_above() -> None:
    violations = [f"{m} (layer {LAYERS[_top(m)]}) imports {t} (layer {LAYERS[_top(t)]})"
                  for m, targets in sorted(_graph().items()) for t in sorted(targets)
                  if LAYERS[_top(t)] > LAYERS[_top(m)]]
    assert not violations, "\n".join(violations)


def test_no_import_cycles_between_modules_or_concepts() -> None:
    graph = _graph()
    concepts: dict[str, set[str]] = defaultdict(set)
    for m, targets in graph.items():
        concepts[_top(m)].update(_top(t) for t in targets if _top(t) != _top(m))
    assert not _cycles(graph), f"module cycles: {_cycles(graph)}"
    assert not _cycles(concepts), f"concept cycles: {_cycles(concepts)}"


def test_the_layering_check_sees_function_level_and_type_checking_imports() -> None:
    graph = _graph()
    assert "suspect" in graph["modeling_sparse_resnet"]  # a module-level import
    assert "publishing" in graph["modeling_sparse_resnet"]  # inside push_to_hub
    assert "anchors" in graph["verify.core"] or any(t.startswith("anchors") for t in graph["verify.core"])


@pytest.mark.parametrize("module", ["storage", "masks", "codecs", "pruning", "ownership_key"])
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


@pytest.mark.parametrize("module", ["image_processing", "configuration_sparse_resnet", "modeling_sparse_resnet",
                                    "loading", "architectures", "attacks", "imp", "workflows", "verify",
                                    "training", "keymask"])
def test_each_model_module_imports_first_and_registers(module: str) -> None:
    # imported first, each of these must load on its own (no half-imported cycle) and leave timm and the Auto
    # classes knowing the library's architectures and model type
    code = (f"import hf_lottery_verify.{module}, timm; timm.create_model('cifar_resnet8'); "
            "from transformers import AutoConfig; print(AutoConfig.for_model('sparse_resnet').model_type)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
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
