"""Calibration: how often would the verifier wrongly say ``owned``?

A verdict is only worth its false-claim rate. :func:`calibrate` runs
:func:`~hf_lottery_verify.verify_model` with the owner's key against ``n`` *null models* —
models of the key's architecture that owe nothing to the owner:

* ``init`` — independently initialised, dense;
* ``pruned`` — independently initialised and pruned to the key's per-layer kept counts
  (its density), by magnitude;
* ``trained`` — a cheaply trained ticket of its own (pruned, then a few epochs of masked
  training on the given data; needs ``data``);
* ``signed_other`` — another owner's signed ticket: pruned and signed with a different
  text and secret.

The :class:`CalibrationReport` counts false ``owned`` and ``inconclusive`` verdicts, gives
the false-claim rate with an exact one-sided 95% Clopper–Pearson upper bound (0 of 50
still allows up to 5.8%: the bound, not the count, is what a claim can cite), the
distributions of the V2 p-values and bit agreements and of the V3 p-values, and a check
that the policy's ``alpha`` is corrected for the number of statistical tests performed.

:func:`calibrate_key_file` is the JSON entry point behind ``hf-lottery calibrate``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .architectures import create_resnet
from .atomic import json_safe
from .configs import TrainConfig
from .data import DatasetPair, ImageData, derive_seed
from .errors import DatasetError, UnknownNameError
from .ownership_key import SIGNATURE_SECTION, TRIGGERS_SECTION, KeyLike, OwnershipKey, as_key
from .pruning import top_k_mask

__all__ = ["NULL_KINDS", "NullResult", "CalibrationReport", "calibrate", "calibrate_key_file", "make_null_model",
           "clopper_pearson_upper"]

NULL_KINDS = ("init", "pruned", "trained", "signed_other")
_SHARES = {"init": 3, "pruned": 4, "trained": 1, "signed_other": 2}
_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def clopper_pearson_upper(successes: int, n: int, *, confidence: float = 0.95) -> float:
    """Exact one-sided upper confidence bound of a binomial rate (Clopper–Pearson).

    Args:
        successes (`int`): Observed events (false ``owned`` verdicts).
        n (`int`): Trials (null models).
        confidence (`float`, *optional*, defaults to 0.95): One-sided confidence level.

    Returns:
        The bound (1.0 when ``n`` is 0 or every trial was an event).

    Example:
        >>> round(clopper_pearson_upper(0, 50), 4)
        0.0582
    """
    if n <= 0 or successes >= n:
        return 1.0
    from scipy.stats import beta

    return float(beta.ppf(confidence, successes + 1, n - successes))


NULL_TRAINING = TrainConfig(epochs=2, batch_size=64, lr=0.05, weight_decay=5e-4, schedule="onecycle")
"""How a ``trained`` null model is trained: a short independent run on the owner's kind of data."""

@dataclass
class NullResult:
    """One null model's verification."""

    kind: str
    index: int
    seed: int
    verdict: str
    v2_p_value: float | None = None
    v2_bit_agreement: float | None = None
    v2_text: str | None = None
    v3_p_value: float | None = None
    v3_matches: int | None = None
    v3_alpha: float | None = None
    v3_decisive: bool | None = None
    v2_decisive: bool | None = None
    tests: int = 1


@dataclass
class CalibrationReport:
    """False-claim figures of one key's verifier over null models.

    Attributes:
        n: Null models verified.
        counts: Null models per kind.
        false_owned: ``owned`` verdicts (each one a false claim).
        inconclusive: ``inconclusive`` verdicts.
        false_owned_rate: ``false_owned / n``.
        upper_95: Exact one-sided 95% upper bound of the false-claim rate (Clopper–Pearson).
        by_kind: Per kind: ``n``, ``owned``, ``inconclusive``, ``not_owned``.
        distributions: ``v2_p_value``, ``v2_bit_agreement``, ``v3_p_value`` (when measured):
            ``min``, quantiles ``q05``…``q95``, ``max``, ``count``; overall and per kind.
        thresholds: The alpha check (see :func:`calibrate`).
        policy: The thresholds used.
        key: Public facts of the key (architecture, schemes, density).
        seed: The calibration seed (each null model's own seed is in ``results``).
        notes: What was skipped and why.
        results: Every null model's figures.
        seconds: Wall time.
    """

    n: int
    counts: dict[str, int]
    false_owned: int
    inconclusive: int
    false_owned_rate: float
    upper_95: float
    by_kind: dict[str, dict[str, int]]
    distributions: dict[str, Any]
    thresholds: dict[str, Any]
    policy: dict[str, Any]
    key: dict[str, Any]
    seed: int
    notes: list[str] = field(default_factory=list)
    results: list[NullResult] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (non-finite numbers become strings)."""
        return json_safe(asdict(self))

    def __str__(self) -> str:
        lines = [f"{self.n} null models ({', '.join(f'{k} {v}' for k, v in self.counts.items())}): "
                 f"{self.false_owned} false 'owned', {self.inconclusive} 'inconclusive'; false-claim rate "
                 f"{self.false_owned_rate:.3f} (one-sided 95% upper bound {self.upper_95:.4f})"]
        for name, dist in self.distributions.get("all", {}).items():
            lines.append(f"{name}: min {dist['min']:.3g}, median {dist['q50']:.3g}, max {dist['max']:.3g} "
                         f"({dist['count']} values)")
        t = self.thresholds
        lines.append(f"thresholds: alpha {t.get('alpha'):.3g} / {t.get('tests_performed')} tests -> "
                     f"{'consistent' if t.get('ok') else 'INCONSISTENT'}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# --------------------------------------------------------------------------- null models


def _key_density(key: OwnershipKey) -> tuple[dict[str, int] | None, float | None]:
    """Per-layer kept counts and density of the signed ticket, from the key's signature section."""
    kept = (key.sections.get(SIGNATURE_SECTION) or {}).get("layer_kept")
    if not kept:
        return None, None
    with torch.device("meta"):
        shapes = {n: p.shape for n, p in create_resnet(key.arch).named_parameters()}
    total = sum(math.prod(shapes[n]) for n in kept if n in shapes)
    return {n: int(v) for n, v in kept.items()}, sum(kept.values()) / max(1, total)


def make_null_model(
    key: OwnershipKey,
    kind: str,
    *,
    seed: int,
    num_labels: int = 10,
    in_chans: int = 3,
    data: DatasetPair | ImageData | None = None,
    train: TrainConfig | None = None,
) -> nn.Module:
    """One null model of the key's architecture.

    Args:
        key (`OwnershipKey`): The owner's key (architecture and kept counts).
        kind (`str`): ``init``, ``pruned``, ``trained`` or ``signed_other``.
        seed (`int`): Seed of its initialisation (and pruning, training, signing).
        num_labels (`int`, *optional*, defaults to 10): Classes.
        in_chans (`int`, *optional*, defaults to 3): Input channels.
        data (`DatasetPair` or `ImageData`, *optional*): Training data (``trained``).
        train (`TrainConfig`, *optional*): The recipe of a ``trained`` null model (:data:`NULL_TRAINING` by default).

    Returns:
        The null model (eval mode).

    Raises:
        UnknownNameError: Unknown ``kind``.
        DatasetError: ``trained`` without data.
    """
    from .configuration_sparse_resnet import SparseResNetConfig
    from .modeling_sparse_resnet import SparseResNetForImageClassification

    if kind not in NULL_KINDS:
        raise UnknownNameError("null-model kind", kind, available=NULL_KINDS)
    torch.manual_seed(derive_seed(seed, "null-init"))
    model = SparseResNetForImageClassification(SparseResNetConfig(arch=key.arch, num_labels=num_labels,
                                                                  in_chans=in_chans))
    if kind == "init":
        return model.eval()
    kept, key_density = _key_density(key)
    params = model.timm_parameters()
    if kept and all(n in params and 0 <= k <= params[n].numel() for n, k in kept.items()):
        model.set_masks({n: top_k_mask(params[n].detach().abs().double(), k) for n, k in kept.items()})
    else:
        model.prune_(density=key_density or 0.1)  # the key records no kept counts
    if kind == "trained":
        if data is None:
            raise DatasetError("A 'trained' null model needs data=... (a DatasetPair or ImageData).")
        from .attacks.finetune import masked_finetune

        train = train or NULL_TRAINING
        model = masked_finetune(model, data, epochs=train.epochs, seed=derive_seed(seed, "null-train"), config=train)
    elif kind == "signed_other":
        from .ownership_key import OwnershipKey
        from .signature import embed_signature

        other = OwnershipKey(arch=key.arch, secret=(derive_seed(seed, "null-secret").to_bytes(8, "little") * 4).hex())
        embed_signature(model, f"another owner #{seed % 100000}", key=other, seed=seed)
    return model.eval()


def _split_counts(n: int, kinds: Sequence[str]) -> dict[str, int]:
    """``n`` split over ``kinds`` by the default shares (largest remainders; each kind at least one)."""
    weights = {k: _SHARES[k] for k in kinds}
    total = sum(weights.values())
    raw = {k: n * w / total for k, w in weights.items()}
    counts = {k: int(v) for k, v in raw.items()}
    for k in sorted(kinds, key=lambda k: raw[k] - counts[k], reverse=True)[: n - sum(counts.values())]:
        counts[k] += 1
    for k in kinds:
        if counts[k] == 0 and n >= len(kinds):
            donor = max(counts, key=counts.get)
            counts[donor] -= 1
            counts[k] = 1
    return counts


def _distribution(values: Sequence[float]) -> dict[str, Any] | None:
    vals = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if vals.size == 0:
        return None
    out: dict[str, Any] = {"count": int(vals.size), "min": float(vals.min()), "max": float(vals.max())}
    for q in _QUANTILES:
        out[f"q{round(q * 100):02d}"] = float(np.quantile(vals, q))
    return out


def _distributions(results: Sequence[NullResult]) -> dict[str, Any]:
    def block(rs: Sequence[NullResult]) -> dict[str, Any]:
        d = {f: _distribution([getattr(r, f) for r in rs]) for f in ("v2_p_value", "v2_bit_agreement", "v3_p_value")}
        return {k: v for k, v in d.items() if v is not None}

    out = {"all": block(results)}
    for kind in dict.fromkeys(r.kind for r in results):
        out[kind] = block([r for r in results if r.kind == kind])
    return out


def _threshold_check(results: Sequence[NullResult], policy: Any) -> dict[str, Any]:
    """Is V3's level ``alpha / tests`` for the tests each verification performed, and used consistently?"""
    tests = sorted({r.tests for r in results})
    v3 = [r for r in results if r.v3_p_value is not None]
    level_ok = all(r.v3_alpha is None or math.isclose(r.v3_alpha, policy.alpha / max(1, r.tests), rel_tol=1e-9)
                   for r in v3)
    decisive_ok = all(r.v3_decisive == (r.v3_p_value <= policy.alpha / max(1, r.tests)) for r in v3)
    v2_ok = all(r.v2_decisive in (None, False) or r.v2_text is not None for r in results)
    min_p = min((r.v3_p_value for r in v3), default=None)
    level = policy.alpha / max(tests or [1])
    check: dict[str, Any] = {
        "alpha": policy.alpha, "inconclusive_alpha": policy.inconclusive_alpha, "tests_performed": tests,
        "v3_level": level, "v3_level_is_alpha_over_tests": level_ok, "v3_decisions_follow_level": decisive_ok,
        "v2_owned_only_on_decode": v2_ok, "alpha_below_inconclusive_alpha": policy.alpha <= policy.inconclusive_alpha,
        "v3_nulls": len(v3), "expected_false_owned_v3": len(v3) * level,
        "min_null_v3_p_value": min_p,
        "v3_margin_log10": (math.log10(min_p) - math.log10(level)) if min_p else None,
    }
    check["ok"] = bool(level_ok and decisive_ok and v2_ok and check["alpha_below_inconclusive_alpha"])
    return check


def _result(kind: str, index: int, seed: int, report: Any) -> NullResult:
    r = NullResult(kind=kind, index=index, seed=seed, verdict=report.verdict, tests=int(report.tests))
    v2, v3 = report.signature, report.triggers
    if v2 is not None:
        r.v2_p_value, r.v2_bit_agreement, r.v2_text, r.v2_decisive = v2.p_value, v2.bit_agreement, v2.text, v2.matches
    if v3 is not None:
        r.v3_p_value, r.v3_matches, r.v3_alpha, r.v3_decisive = v3.p_value, v3.matches, v3.alpha, v3.positive
    return r


def calibrate(
    *,
    key: KeyLike,
    n: int = 50,
    kinds: Sequence[str] = NULL_KINDS,
    data: DatasetPair | ImageData | None = None,
    seed: int = 0,
    policy: Any = None,
    counts: Mapping[str, int] | None = None,
    train: TrainConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> CalibrationReport:
    """Verify ``n`` null models with the owner's key and report how often the verdict is wrongly ``owned``.

    Null model ``i`` of a kind uses seed ``derive_seed(seed, kind, i)``. The threshold check
    confirms, on every verification, that Scheme V3 was decided at ``policy.alpha`` divided
    by the number of statistical tests performed (Bonferroni), that V2 made ``owned`` only
    with a decoded text, and reports the margin between the smallest null V3 p-value and
    that level.

    Args:
        key (`OwnershipKey`, `str` or `os.PathLike`): The owner's key (or its path).
        n (`int`, *optional*, defaults to 50): Null models in all, split over ``kinds``
            (init 3 : pruned 4 : trained 1 : signed_other 2).
        kinds (`Sequence[str]`, *optional*): Kinds to use; ``trained`` is skipped (noted)
            without ``data``.
        data (`DatasetPair` or `ImageData`, *optional*): Training data for ``trained``.
        seed (`int`, *optional*, defaults to 0): Calibration seed.
        policy (`VerdictPolicy`, *optional*): The decision thresholds (defaults otherwise).
        counts (`Mapping[str, int]`, *optional*): Null models per kind, overriding ``n``.
        train (`TrainConfig`, *optional*): The recipe of a ``trained`` null model (:data:`NULL_TRAINING` by default).
        progress (`Callable[[str], None]`, *optional*): Receives one line per null model.

    Returns:
        The :class:`CalibrationReport`.

    Raises:
        UnknownNameError: An unknown kind.
        ValueError: ``n`` below 1 and no ``counts``.
        KeyFileError: The key cannot be read.
    """
    from .verify import VerdictPolicy, verify_model

    t0 = time.perf_counter()
    key = as_key(key)
    policy = policy or VerdictPolicy()
    notes: list[str] = []
    for kind in list(kinds) + list(counts or {}):
        if kind not in NULL_KINDS:
            raise UnknownNameError("null-model kind", kind, available=NULL_KINDS)
    if counts is None:
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}.")
        usable = [k for k in kinds if k != "trained" or data is not None]
        if len(usable) < len(kinds):
            notes.append("no data given: 'trained' null models skipped")
        counts = _split_counts(n, usable)
    elif data is None and counts.get("trained"):
        raise DatasetError("counts asks for 'trained' null models but no data=... was given.")
    counts = {k: int(v) for k, v in counts.items() if v}
    triggers = key.sections.get(TRIGGERS_SECTION) or {}
    published = (key.sections.get("reference") or {}).get("published") or {}
    split = (data.train if isinstance(data, DatasetPair) else data) if data is not None else None
    # the null models' classes and input channels: the data's, the published model's, the trigger set's, or 10 and 3
    labels = ((split.num_classes if split is not None else None) or published.get("num_labels")
              or triggers.get("num_classes") or 10)
    chans = ((split.in_chans if split is not None else None) or published.get("in_chans") or triggers.get("channels")
             or 3)
    # how an untrained null reads its inputs: as the owner's published model, else as the data says (any
    # normalisation is as good for a model trained on nothing; 0.5 then)
    stats = next(s for s in ((published.get("image_mean"), published.get("image_std")),
                             (split.mean, split.std) if split is not None else (None, None),
                             ((0.5,) * int(chans), (0.5,) * int(chans))) if s[0] is not None and s[1] is not None)

    results: list[NullResult] = []
    for kind, count in counts.items():
        for i in range(count):
            s = derive_seed(seed, kind, i)
            model = make_null_model(key, kind, seed=s, num_labels=int(labels), in_chans=int(chans), data=data,
                                    train=train)
            if model.config.image_mean is None:
                model.config.image_mean, model.config.image_std = stats
            report = verify_model(model, key=key, policy=policy, require_anchor=False)  # nulls test the evidence
            results.append(_result(kind, i, s, report))
            if progress is not None:
                progress(f"{kind} #{i}: {report.verdict}")
    total = len(results)
    owned = sum(r.verdict == "owned" for r in results)
    by_kind = {k: {"n": sum(r.kind == k for r in results),
                   **{v: sum(r.kind == k and r.verdict == v for r in results)
                      for v in ("owned", "inconclusive", "not_owned")}} for k in counts}
    _kept, density = _key_density(key)
    return CalibrationReport(
        n=total, counts=dict(counts), false_owned=owned, inconclusive=sum(r.verdict == "inconclusive" for r in results),
        false_owned_rate=owned / max(1, total), upper_95=clopper_pearson_upper(owned, total), by_kind=by_kind,
        distributions=_distributions(results), thresholds=_threshold_check(results, policy), policy=vars(policy) | {},
        key={"arch": key.arch, "schemes": key.schemes(), "density": density, "num_labels": int(labels),
             "in_chans": int(chans)},
        seed=seed, notes=notes, results=results, seconds=round(time.perf_counter() - t0, 3))


def calibrate_key_file(
    key_path: str | os.PathLike,
    *,
    n: int = 50,
    kinds: Sequence[str] = NULL_KINDS,
    dataset: str | None = None,
    data_dir: str | os.PathLike | None = None,
    train_limit: int | None = 2000,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``hf-lottery calibrate --key KEY --n 50``: calibrate a key file (default policy), return a JSON-safe dict.

    Args:
        key_path (`str` or `os.PathLike`): The owner's key file.
        n (`int`, *optional*, defaults to 50): Null models.
        kinds (`Sequence[str]`, *optional*): Null-model kinds.
        dataset (`str`, *optional*): Data for ``trained`` null models (a
            :func:`~hf_lottery_verify.data.load_image_dataset` name).
        data_dir (`str` or `os.PathLike`, *optional*): Its files.
        train_limit (`int`, *optional*, defaults to 2000): Training samples used.
        seed (`int`, *optional*, defaults to 0): Calibration seed.
        progress (`Callable[[str], None]`, *optional*): Progress lines.

    Returns:
        :meth:`CalibrationReport.to_dict` plus the key path, without per-model results'
        bulk (they are kept: one small dict per null model).

    Raises:
        KeyFileError: The key cannot be read.
        DatasetError, UnknownNameError: The dataset cannot be loaded.
    """
    from .data import load_image_dataset

    data = None
    if dataset is not None:
        data = load_image_dataset(dataset, data_dir=data_dir, seed=seed, train_limit=train_limit, test_limit=1)
    report = calibrate(key=key_path, n=n, kinds=kinds, data=data, seed=seed, progress=progress)
    return {"key_path": str(key_path), "dataset": dataset, **report.to_dict()}
