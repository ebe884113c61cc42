"""The model card (``README.md``) of a pushed ticket: Hub metadata and the body from ``model_cards/sparse_ticket.md.j2``.

:func:`render_model_card` builds a :class:`huggingface_hub.ModelCard`: Hub metadata (library,
tags, datasets, license, pipeline tag, a model-index with accuracy and density), what the
model is, the badge, the public claim, how to verify and load it, its limitations and the
paper's citation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .claim import _claim_rows, sanitize_claim
from .errors import CardError
from .files import BADGE_FILENAME
from .robustness import measured_robustness
from .templates import CARD_TEMPLATE_NAME, _read_asset
from .text import _md, _percent

__all__ = ["CARD_TAGS", "library_name_for", "render_model_card", "card_results"]


# Tags every card carries; "ownership-protected" is added when a claim is published.
CARD_TAGS: tuple[str, ...] = ("image-classification", "timm", "lottery-ticket", "sparse")
# The metadata key of the public claim, written by render_model_card besides the Hub's own fields
# (and ``lottery_ticket``).
CLAIM_METADATA_KEY = "ownership_claim"
TASK_TYPE = "image-classification"
ACCURACY_METRIC = "accuracy"
DENSITY_METRIC = "density"
METRIC_DECIMALS = 6

_ARCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


# --------------------------------------------------------------------------- metadata


def library_name_for(arch: str) -> str:
    """The Hub ``library_name`` of a card for architecture ``arch``.

    The rule: timm's own architectures (``resnet18``, ``resnet50``, ...; a pretrained tag such as
    ``.a1_in1k`` is ignored) get ``"timm"``, because plain timm loads the repo and the Hub then
    offers timm's code snippet. This library's CIFAR variants (names starting with
    ``cifar_resnet``) get ``"hf_lottery_verify"``: timm knows them only after
    ``import hf_lottery_verify``.

    Args:
        arch (`str`):
            The timm architecture name.

    Returns:
        `str`: ``"timm"`` or ``"hf_lottery_verify"``.
    """
    base = arch.split(".", 1)[0].lower()
    return "hf_lottery_verify" if base.startswith("cifar_resnet") else "timm"


def _tags(value: Iterable[str] | str) -> list[str]:
    """The user's ``card_data`` tags, stripped; a lone string is one tag."""
    tags: list[str] = []
    for tag in [value] if isinstance(value, str) else value:
        if not isinstance(tag, str):
            raise CardError(f"card_data['tags'] must hold strings, got {tag!r} ({type(tag).__name__}).",
                            field="card_data['tags']")
        if tag.strip():
            tags.append(tag.strip())
    return tags


def _check_repo_id(value: str, *, field: str) -> None:
    try:
        validate_repo_id(value)
    except HFValidationError as err:
        raise CardError(f"{field}={value!r} is not a valid Hub repo id: {err}", field=field) from err


def _check_fraction(value: Any, *, field: str, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CardError(f"{field} must be a finite number, got {value!r}.", field=field)
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value <= 1):
        hint = " Pass a fraction (0.935), not a percentage (93.5)." if value > 1 else ""
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise CardError(f"{field} must lie in {interval}, got {value!r}.{hint}", field=field)
    return float(value)


def _user_card_data(card_data: Mapping[str, Any] | ModelCardData | None, *, model_name: str) -> dict[str, Any]:
    """The non-empty fields of the user's ``card_data`` (``model-index`` parsed to ``eval_results``)."""
    if card_data is None:
        return {}
    if isinstance(card_data, Mapping):
        fields = dict(card_data)
        if fields.get("eval_results") and not fields.get("model_name"):
            fields["model_name"] = model_name  # ModelCardData insists on one; ours is the repo name
        try:
            card_data = ModelCardData(**fields)
        except (TypeError, ValueError) as err:
            raise CardError(f"card_data is not valid model-card metadata: {err}", field="card_data") from err
    elif not isinstance(card_data, ModelCardData):
        raise CardError(
            f"card_data must be a dict or a huggingface_hub.ModelCardData, got {type(card_data).__name__}.",
            field="card_data",
        )
    user = {k: v for k, v in vars(card_data).items() if v is not None}
    if CLAIM_METADATA_KEY in user:
        raise CardError(
            f"card_data must not set '{CLAIM_METADATA_KEY}': pass the claim as claim=..., which drops the fields "
            "that could locate the signature and renders the rest.",
            field="card_data",
        )
    return user


def _metric_identity(result: EvalResult) -> tuple[Any, ...]:
    return (*result.unique_identifier, result.metric_type)


def _merge_metadata(ours: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """User fields replace ours, except ``tags`` (union) and ``eval_results`` (replaced per metric)."""
    merged = dict(ours)
    for key, value in user.items():
        if key == "tags":
            merged["tags"] = list(dict.fromkeys([*ours.get("tags", []), *_tags(value)]))
        elif key == "eval_results":
            theirs = value if isinstance(value, list) else [value]
            replaced = {_metric_identity(r) for r in theirs}
            merged["eval_results"] = [r for r in ours.get("eval_results", []) if _metric_identity(r) not in replaced]
            merged["eval_results"] += theirs
        else:
            merged[key] = value
    return merged


# --------------------------------------------------------------------------- model card


def render_model_card(
    *,
    repo_id: str,
    arch: str,
    num_labels: int,
    density: float,
    accuracy: float | None = None,
    dataset: str | None = None,
    dataset_name: str | None = None,
    dataset_split: str | None = None,
    claim: Mapping[str, Any] | None = None,
    card_data: Mapping[str, Any] | ModelCardData | None = None,
    remote_code: bool = False,
) -> ModelCard:
    """Render the model card (``README.md``) of a sparse ticket pushed to the Hub.

    Metadata: ``library_name`` from :func:`library_name_for`; ``tags`` = :data:`CARD_TAGS`, plus
    ``"ownership-protected"`` when a claim is given; ``datasets`` when ``dataset`` is known;
    ``license: apache-2.0``; ``pipeline_tag: image-classification``;
    a model-index holding ``accuracy`` (when known) and ``density`` (always) for the dataset
    (``"custom"`` / ``"unspecified dataset"`` when none is known); a ``lottery_ticket`` block
    (architecture, density, schemes) and, with a claim, ``ownership_claim`` (the output of
    :func:`sanitize_claim`, so verifiers can read it without parsing the body). The body's robustness
    section is copied from the measured attack matrix (:func:`~.robustness.measured_robustness`). The
    card shows the badge ``ownership_badge.svg``: write it with :func:`render_badge` (status
    ``"protected"`` with a claim, ``"unverified"`` without) and :func:`save_card_files`.

    Args:
        repo_id (`str`):
            The Hub repo id the card is for (``"alice/r20-ticket"``).
        arch (`str`):
            The timm architecture name (``"resnet18"``, ``"cifar_resnet20"``).
        num_labels (`int`):
            Number of classes.
        density (`float`):
            Fraction of prunable weights kept, in ``(0, 1]`` (``0.01236`` for 1.236%).
        accuracy (`float`, *optional*, defaults to `None`):
            Top-1 test accuracy as a fraction in ``[0, 1]``; left out of the card when `None`.
        dataset (`str`, *optional*, defaults to `None`):
            Hub dataset id the ticket was trained and evaluated on (``"uoft-cs/cifar10"``).
        dataset_name (`str`, *optional*, defaults to `None`):
            Readable dataset name (``"CIFAR-10"``); defaults to ``dataset``. Give it alone for a
            dataset that is not on the Hub.
        dataset_split (`str`, *optional*, defaults to `None`):
            The split ``accuracy`` was measured on (``"test"``).
        claim (`Mapping[str, Any]`, *optional*, defaults to `None`):
            The public ownership claim; see :func:`sanitize_claim` for what is kept.
        card_data (`dict` or `ModelCardData`, *optional*, defaults to `None`):
            Extra or overriding metadata (``license``, ``base_model``, ``tags``, ...). Fields replace
            the generated ones, except ``tags``,
            which are added to the generated tags, and ``eval_results`` (or ``model-index``),
            which replace generated results of the same task, dataset and metric and are
            otherwise appended. It may not set ``ownership_claim``: pass ``claim`` instead.
        remote_code (`bool`, *optional*, defaults to `False`):
            The repo carries the self-contained ``modeling_sparse_resnet.py`` (dense layout): the card
            then shows how transformers loads it without this library (``trust_remote_code=True``).

    Returns:
        `huggingface_hub.ModelCard`: The card; ``str(card)`` is the ``README.md`` text.

    Raises:
        CardError: An argument is out of range or malformed (invalid repo id, architecture name,
            density or accuracy outside ``[0, 1]``, bad ``card_data``).
        CardTemplateNotFoundError: The template is missing from the installation.

    Example:
        >>> card = render_model_card(
        ...     repo_id="alice/r18-ticket", arch="resnet18", num_labels=10, density=0.01236, accuracy=0.936,
        ...     dataset="uoft-cs/cifar10", dataset_name="CIFAR-10",
        ...     claim={"owner": "alice", "created": "2026-11-30T12:00:00+00:00", "key_commitment": "sha256:" + "0" * 64},
        ... )
        >>> card.data.library_name, "ownership-protected" in card.data.tags
        ('timm', True)
    """
    _check_repo_id(repo_id, field="repo_id")
    if not isinstance(arch, str) or not _ARCH_RE.match(arch):
        raise CardError(
            f"arch={arch!r} is not a timm architecture name (e.g. 'resnet18', 'cifar_resnet20').", field="arch"
        )
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
        raise CardError(f"num_labels must be a positive integer, got {num_labels!r}.", field="num_labels")
    density = _check_fraction(density, field="density", allow_zero=False)
    if accuracy is not None:
        accuracy = _check_fraction(accuracy, field="accuracy", allow_zero=True)
    if dataset is not None:
        _check_repo_id(dataset, field="dataset")

    library_name = library_name_for(arch)
    public_claim = sanitize_claim(claim) if claim is not None else None
    model_name = repo_id.split("/")[-1]
    shown_dataset_name = dataset_name or dataset

    eval_common = {
        "task_type": TASK_TYPE,
        "task_name": "Image Classification",
        # model-index needs a dataset for every result; density does not depend on one
        "dataset_type": dataset or "custom",
        "dataset_name": shown_dataset_name or "unspecified dataset",
        "dataset_split": dataset_split,
    }
    metrics = [(ACCURACY_METRIC, "Top-1 accuracy", accuracy)] if accuracy is not None else []
    metrics.append((DENSITY_METRIC, "Density (fraction of prunable weights kept)", density))
    eval_results = [
        EvalResult(**eval_common, metric_type=kind, metric_name=name, metric_value=round(value, METRIC_DECIMALS))
        for kind, name, value in metrics
    ]
    ticket_meta: dict[str, Any] = {"arch": arch, "density": round(density, METRIC_DECIMALS)}
    if public_claim is not None and public_claim.get("schemes"):
        ticket_meta["schemes"] = list(public_claim["schemes"])  # a copy: YAML would write an alias

    ours: dict[str, Any] = {
        "library_name": library_name,
        "license": "apache-2.0",
        "pipeline_tag": TASK_TYPE,
        "tags": [*CARD_TAGS, *(["ownership-protected"] if public_claim is not None else [])],
        "datasets": [dataset] if dataset is not None else None,
        "metrics": [kind for kind, _, _ in metrics],
        "model_name": model_name,
        "eval_results": eval_results,
        "lottery_ticket": ticket_meta,
    }
    if public_claim is not None:
        ours[CLAIM_METADATA_KEY] = public_claim
    user = _user_card_data(card_data, model_name=model_name)
    merged = _merge_metadata({k: v for k, v in ours.items() if v is not None}, user)
    try:
        data = ModelCardData(**merged)
    except (TypeError, ValueError) as err:
        raise CardError(f"The merged card metadata is invalid: {err}", field="card_data") from err

    claim_rows = _claim_rows(public_claim) if public_claim is not None else []
    if shown_dataset_name is None:
        dataset_md = None
    elif dataset is not None:
        dataset_md = f"[{_md(shown_dataset_name)}](https://huggingface.co/datasets/{dataset})"
    else:
        dataset_md = _md(shown_dataset_name)
    ticket = {
        "repo_id": repo_id,
        "title": _md(model_name),
        "arch": arch,
        "arch_origin": "timm" if library_name == "timm" else "hf_lottery_verify CIFAR variant, registered with timm",
        "library_name": library_name,
        "num_labels": num_labels,
        "density_pct": _percent(density),
        "sparsity_pct": _percent(1.0 - density),
        "accuracy_pct": _percent(accuracy) if accuracy is not None else None,
        "split_md": _md(dataset_split) if dataset_split else None,
        "dataset_md": dataset_md,
        "badge_file": BADGE_FILENAME,
        "badge_markdown": _badge_markdown(has_claim=public_claim is not None),
        "has_claim": public_claim is not None,
        "claim_rows": claim_rows,
        "remote_code": remote_code,
        "robustness": measured_robustness(),
    }
    card = ModelCard.from_template(data, template_str=_read_asset(CARD_TEMPLATE_NAME), ticket=ticket)
    card.text = card.text.rstrip("\n") + "\n"  # Jinja2 drops the template's final newline
    return card


def _badge_markdown(*, has_claim: bool) -> str:
    if has_claim:
        alt = "ownership: protected. An ownership claim is published with this model; it is not verified here"
    else:
        alt = "ownership: unverified. No ownership claim is published with this model"
    return f"![{_md(alt)}]({BADGE_FILENAME})"


def card_results(results: Any) -> dict[str, Any]:
    """The keyword arguments of :func:`render_model_card` that state a result: ``accuracy`` (a fraction),
    ``dataset`` (its Hub id when known), ``dataset_name`` and ``dataset_split``.

    Args:
        results (`RetrainResult` or `Mapping[str, Any]`, *optional*): A
            :class:`~hf_lottery_verify.retrain.RetrainResult` (its test accuracy and data), or ``accuracy`` in
            percent (as :func:`~hf_lottery_verify.training.evaluate` gives it), ``dataset`` (a built-in name such
            as ``fashion_mnist``, or a Hub dataset id) and ``split``.

    Returns:
        `dict`: The four keyword arguments (``None`` where unknown).
    """
    from ..data import HUB_IDS

    if hasattr(results, "accuracy_retrained"):
        results = {"accuracy": results.accuracy_retrained, "dataset": results.dataset, "split": "test"}
    results = dict(results or {})
    name, accuracy = results.get("dataset"), results.get("accuracy")
    return {"accuracy": None if accuracy is None else float(accuracy) / 100.0, "dataset_name": name,
            "dataset": HUB_IDS.get(name, name if name and "/" in name and ":" not in name else None),
            "dataset_split": results.get("split")}
