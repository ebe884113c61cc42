"""The attack registry: every attack a thief may run on a stolen ticket, by name.

An attack is a function ``fn(model, *, seed, [data,] **params) -> model`` that returns a
*new* model and leaves its input untouched. Each is registered with
:func:`register_attack` together with what the attack matrix and the CLI need to know:

* ``kind`` — ``"removal"`` (tries to erase the evidence), ``"structural"`` (moves weights
  around, function-preserving or nearly so) or ``"forgery"`` (the paper's ambiguity
  attacks: manufacture competing evidence);
* ``needs_data`` — the attack trains and cannot run without a training split;
* ``function_preserving`` — the attacked model computes the same function (eval mode);
* a default *strength sweep* (``strength`` names the parameter, ``sweep`` its values) and
  named ``variants`` (fixed parameter sets, e.g. magnitude vs random pruning) that
  ``bench/attack_matrix.py`` runs.

:func:`list_attacks`, :func:`get_attack` and :func:`run_attack` are the entry points; the
names are the values of ``hf-lottery attack NAME``.

Example:
    >>> from hf_lottery_verify.attacks import list_attacks, run_attack   # doctest: +SKIP
    >>> stolen = run_attack("prune", ticket, fraction=0.2, seed=1)       # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from torch import nn

from ..configs import TrainConfig
from ..errors import ConfigError, DatasetError, UnknownNameError
from ._common import _check_seed

__all__ = [
    "ATTACK_TRAINING",
    "AttackKind",
    "AttackSpec",
    "register_attack",
    "list_attacks",
    "get_attack",
    "run_attack",
    "attack_table",
]

AttackKind = Literal["removal", "structural", "forgery"]
_KINDS = ("removal", "structural", "forgery")
_RESERVED = ("model", "seed", "data")


ATTACK_TRAINING = TrainConfig(epochs=1, batch_size=128, lr=0.01, weight_decay=5e-4, schedule="cosine")
"""The thief's default recipe for every attack that trains (an attack's ``train=`` replaces it)."""

@dataclass(frozen=True)
class AttackSpec:
    """One registered attack and what is known about it.

    Attributes:
        name: Registry name (the CLI value).
        fn: ``fn(model, *, seed, [data,] **params) -> model``.
        kind: ``"removal"``, ``"structural"`` or ``"forgery"``.
        needs_data: The attack trains: :func:`run_attack` refuses to run it without data.
        function_preserving: The attacked model computes the same function in eval mode.
        strength: Name of the parameter the default sweep varies (``None``: one setting).
        sweep: Default values of ``strength`` for the attack matrix, weakest first.
        variants: Named fixed parameter sets the matrix runs the sweep with (``{"": {}}``
            when the attack has one form).
        description: One line for listings.
    """

    name: str
    fn: Callable[..., nn.Module]
    kind: AttackKind
    needs_data: bool = False
    function_preserving: bool = False
    strength: str | None = None
    sweep: tuple[Any, ...] = ()
    variants: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: {"": {}})
    description: str = ""

    @property
    def accepts_data(self) -> bool:
        """``fn`` takes a ``data`` keyword (it trains, or can)."""
        return "data" in inspect.signature(self.fn).parameters

    def parameters(self) -> dict[str, dict[str, Any]]:
        """The attack's own keyword parameters (``model``, ``seed`` and ``data`` excluded).

        Returns:
            ``{name: {"default": value or None, "required": bool, "type": str}}`` in
            signature order (JSON-safe: defaults are ``repr``-ed when not plain values).
        """
        out: dict[str, dict[str, Any]] = {}
        for name, p in inspect.signature(self.fn).parameters.items():
            if name in _RESERVED or p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
                continue
            required = p.default is inspect.Parameter.empty
            default = None if required else p.default
            if not isinstance(default, (str, int, float, bool, type(None))):
                default = repr(default)
            annotation = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__",
                                                                                     str(p.annotation))
            out[name] = {"default": default, "required": required, "type": annotation}
        return out

    def settings(self) -> list[tuple[str, dict[str, Any]]]:
        """Every ``(variant, params)`` of the default sweep, variants in order, weakest first.

        Returns:
            A list of ``(variant name, keyword parameters)``; one entry per variant when the
            attack has no strength parameter.
        """
        out = []
        for variant, fixed in self.variants.items():
            if self.strength is None or not self.sweep:
                out.append((variant, dict(fixed)))
            else:
                out.extend((variant, {**fixed, self.strength: value}) for value in self.sweep)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe description (without the function)."""
        return {"name": self.name, "kind": self.kind, "needs_data": self.needs_data,
                "function_preserving": self.function_preserving, "strength": self.strength,
                "sweep": list(self.sweep), "variants": {k: dict(v) for k, v in self.variants.items()},
                "parameters": self.parameters(), "description": self.description}


_ATTACKS: dict[str, AttackSpec] = {}


def register_attack(
    name: str,
    *,
    kind: AttackKind,
    needs_data: bool = False,
    function_preserving: bool = False,
    strength: str | None = None,
    sweep: Sequence[Any] = (),
    variants: Mapping[str, Mapping[str, Any]] | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register an attack under ``name`` (the value of ``hf-lottery attack NAME``).

    Args:
        name (`str`): Registry key.
        kind (`str`): ``"removal"``, ``"structural"`` or ``"forgery"``.
        needs_data (`bool`, *optional*, defaults to `False`): The attack cannot run without
            training data.
        function_preserving (`bool`, *optional*, defaults to `False`): The attacked model
            computes the same function (eval mode).
        strength (`str`, *optional*): The parameter the default sweep varies.
        sweep (`Sequence`, *optional*): Its values for the attack matrix, weakest first.
        variants (`Mapping[str, Mapping[str, Any]]`, *optional*): Named fixed parameter sets.

    Returns:
        A decorator that registers the function (described by its docstring's first line) and
        returns it unchanged.

    Raises:
        ValueError: Unknown ``kind``, a function without a keyword ``seed``, or a
            ``strength`` that is not one of its parameters.

    Example:
        >>> @register_attack("zero_bn", kind="removal")                       # doctest: +SKIP
        ... def zero_bn(model, *, seed=0): ...
    """
    if kind not in _KINDS:
        raise ValueError(f"Unknown attack kind {kind!r}: use one of {_KINDS}.")

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        params = inspect.signature(fn).parameters
        if "seed" not in params:
            raise ValueError(f"Attack '{name}' must take a keyword 'seed' (every random choice is seeded).")
        if strength is not None and strength not in params:
            raise ValueError(f"Attack '{name}': strength parameter {strength!r} is not one of its parameters.")
        if name in _ATTACKS:
            warnings.warn(f"Overwriting the attack '{name}'.", stacklevel=2)
        doc = (fn.__doc__ or "").strip().splitlines()
        _ATTACKS[name] = AttackSpec(
            name=name, fn=fn, kind=kind, needs_data=needs_data, function_preserving=function_preserving,
            strength=strength, sweep=tuple(sweep), variants=dict(variants) if variants else {"": {}},
            description=doc[0] if doc else "")
        return fn

    return decorator


def list_attacks(*, kind: str | None = None) -> list[str]:
    """Names of the registered attacks, sorted.

    Args:
        kind (`str`, *optional*): Only attacks of this kind.

    Returns:
        The names.
    """
    return sorted(n for n, s in _ATTACKS.items() if kind is None or s.kind == kind)


def get_attack(name: str) -> AttackSpec:
    """Look an attack up by name.

    Args:
        name (`str`): A name from :func:`list_attacks`.

    Returns:
        Its :class:`AttackSpec`.

    Raises:
        UnknownNameError: ``name`` is not registered; the message lists the valid names.
    """
    if name not in _ATTACKS:
        raise UnknownNameError("attack", name, available=_ATTACKS)
    return _ATTACKS[name]


def run_attack(name: str, model: nn.Module, *, data: Any = None, seed: int = 0, **params: Any) -> nn.Module:
    """Run a registered attack on ``model`` and return the attacked copy.

    Args:
        name (`str`): A name from :func:`list_attacks`.
        model (`nn.Module`): The stolen ticket (a
            :class:`~hf_lottery_verify.SparseResNetForImageClassification`); never modified.
        data (`DatasetPair` or `ImageData`, *optional*): Training data, for attacks that
            train (required when the attack ``needs_data``; optional fine-tuning for others).
        seed (`int`, *optional*, defaults to 0): Seed of every random choice of the attack.
        **params: The attack's keyword parameters (see ``get_attack(name).parameters()``); a
            ``train`` given as a mapping (``--param 'train={"lr": 0.05}'``) is read as the
            :class:`~hf_lottery_verify.training.TrainConfig` fields that change the default recipe.

    Returns:
        The attacked model (a new object).

    Raises:
        UnknownNameError: Unknown attack, or a parameter the attack does not take.
        ConfigError: A number parameter given something else than a number.
        DatasetError: The attack needs data and none was given.
        TypeError: ``seed`` is not an int, or the attack returned its input.
    """
    spec = get_attack(name)
    _check_seed(seed)
    known = spec.parameters()
    for key, value in params.items():
        if key not in known:
            raise UnknownNameError(f"parameter of attack '{name}'", key, available=known)
        default = known[key]["default"]
        if isinstance(default, (int, float)) and not isinstance(default, bool) and (
                isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"Parameter '{key}' of attack '{name}' takes a number (default {default}), got {value!r}.")
    if spec.needs_data and data is None:
        raise DatasetError(f"Attack '{name}' trains the model and needs data: pass data=... (a DatasetPair or "
                           "ImageData; on the command line --dataset).")
    kwargs = dict(params)
    if isinstance(kwargs.get("train"), Mapping):
        kwargs["train"] = replace(ATTACK_TRAINING, **kwargs["train"])
    if spec.accepts_data:
        kwargs["data"] = data
    out = spec.fn(model, seed=seed, **kwargs)
    if out is model:  # pragma: no cover - guarded by the registry tests
        raise TypeError(f"Attack '{name}' returned its input; attacks must return a new model.")
    return out


def attack_table() -> list[dict[str, Any]]:
    """Every registered attack as a JSON-safe dict (for ``hf-lottery attack list``)."""
    return [_ATTACKS[n].to_dict() for n in list_attacks()]
