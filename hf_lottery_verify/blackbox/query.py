"""The black-box query entry point: :func:`query_labels` checks its arguments and dispatches by kind of suspect."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from .endpoint import MAX_RESPONSE_BYTES, _query_endpoint
from .labels import _LabelMapper
from .local import _query_callable, _query_model
from .result import QueryResult, _Tally

__all__ = ["query_labels"]

logger = logging.getLogger(__name__)


def query_labels(
    suspect: nn.Module | Callable[[torch.Tensor], Any] | str,
    images: torch.Tensor,
    *,
    label2id: Mapping[str, int] | None = None,
    image_mean: float | Sequence[float] | None = None,
    image_std: float | Sequence[float] | None = None,
    batch_size: int = 64,
    timeout: float = 10.0,
    retries: int = 2,
    backoff: float = 0.5,
    budget: int | None = None,
    headers: Mapping[str, str] | None = None,
    max_response_bytes: int = MAX_RESPONSE_BYTES,
    max_consecutive_errors: int | None = 10,
    progress: bool = False,
) -> QueryResult:
    """Ask a suspect for the class of each image (black-box, Scheme V3).

    Args:
        suspect (`nn.Module`, `Callable` or `str`):
            An ``nn.Module`` (``.logits`` of its output, or the logits it returns, are
            arg-maxed); any other callable, called with a ``uint8`` image batch and returning
            one label (int or class name) per image; or an ``http://`` / ``https://`` URL of an
            Inference-API-style image-classification endpoint (one POST per image, as PNG).
        images (`torch.Tensor`): ``uint8`` ``N×C×H×W`` images (e.g. the trigger set's ``T_x``).
        label2id (`Mapping[str, int]`, *optional*):
            Class name → index, for callables and endpoints answering names. ``"LABEL_<i>"``
            and plain integer strings are understood without it; with it, indices must be
            below ``max(label2id.values()) + 1``.
        image_mean (`float` or `Sequence[float]`, *optional*):
            Per-channel mean (fraction of 255) for ``nn.Module`` suspects; defaults to
            ``model.config.image_mean`` (no default: see
            :func:`~hf_lottery_verify.data.resolve_normalization`).
        image_std (`float` or `Sequence[float]`, *optional*):
            Per-channel standard deviation; defaults to ``model.config.image_std``.
        batch_size (`int`, *optional*, defaults to 64):
            Images per forward pass or call (models and callables).
        timeout (`float`, *optional*, defaults to 10.0):
            Hard deadline in seconds for each HTTP request, connection included.
        retries (`int`, *optional*, defaults to 2):
            Extra attempts per image after connection errors, timeouts, HTTP 429 and 5xx.
        backoff (`float`, *optional*, defaults to 0.5):
            Seconds before the first retry, doubled for each further one (a ``Retry-After``
            header is honoured up to ``timeout``).
        budget (`int`, *optional*):
            Maximum number of queries (images for models and callables, HTTP requests with
            retries for endpoints). Querying stops when it is spent; the rest stay ``-1``.
        headers (`Mapping[str, str]`, *optional*):
            Extra HTTP headers, e.g. ``{"Authorization": "Bearer hf_..."}`` for a private endpoint.
        max_response_bytes (`int`, *optional*, defaults to 1 MiB):
            Longest response body read; larger answers count as failed.
        max_consecutive_errors (`int`, *optional*, defaults to 10):
            Stop querying an endpoint after this many images in a row got no HTTP answer (or
            only 429/5xx); the rest stay ``-1``. ``None`` never stops early.
        progress (`bool`, *optional*, defaults to `False`): Show a tqdm progress bar.

    Returns:
        `QueryResult`: labels (``-1`` where missing), counts, first error reasons, timing.

    Raises:
        EndpointError: The endpoint URL is malformed, or its first request got no HTTP answer
            at all after its retries (connection refused, timeout, DNS or TLS failure).
        ValueError: ``images`` is not a ``uint8`` ``N×C×H×W`` tensor, an option is out of
            range, or a model suspect returns something other than ``(N, classes)`` logits.
        TypeError: ``suspect`` is neither a module, a callable nor an http(s) URL.

    Example:
        >>> import torch, hf_lottery_verify as hlv
        >>> from hf_lottery_verify.blackbox import query_labels
        >>> model = hlv.SparseResNetForImageClassification(hlv.SparseResNetConfig(arch="cifar_resnet8"))
        >>> images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
        >>> query_labels(model, images).labels.shape
        torch.Size([4])
    """
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a uint8 N×C×H×W tensor, got {got}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout}.")
    if retries < 0 or backoff < 0:
        raise ValueError(f"retries and backoff must be non-negative, got {retries} and {backoff}.")
    if budget is not None and budget < 0:
        raise ValueError(f"budget must be non-negative, got {budget}.")
    if max_response_bytes < 1:
        raise ValueError(f"max_response_bytes must be positive, got {max_response_bytes}.")
    if max_consecutive_errors is not None and max_consecutive_errors < 1:
        raise ValueError(f"max_consecutive_errors must be at least 1 or None, got {max_consecutive_errors}.")

    kind: Literal["model", "callable", "endpoint"]
    if isinstance(suspect, nn.Module):
        kind = "model"
    elif isinstance(suspect, str):
        if not suspect.lower().startswith(("http://", "https://")):
            raise TypeError(f"A string suspect must be an http:// or https:// endpoint URL, got {suspect!r}. "
                            "Load a folder or Hub repo with hf_lottery_verify.load_model first.")
        kind = "endpoint"
        if images.shape[1] not in (1, 3, 4):
            raise ValueError(f"Only 1-, 3- or 4-channel images can be sent as PNG, got {images.shape[1]} channels.")
    elif callable(suspect):
        kind = "callable"
    else:
        raise TypeError(f"suspect must be an nn.Module, a callable or an endpoint URL, got {type(suspect).__name__}.")

    start = time.perf_counter()
    tally = _Tally(len(images), budget)
    mapper = _LabelMapper(label2id)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(images), desc=f"querying {kind}", unit="img", leave=False, disable=None if progress else True)
    try:
        if kind == "model":
            _query_model(suspect, images, tally, image_mean=image_mean, image_std=image_std,  # type: ignore[arg-type]
                         batch_size=batch_size, bar=bar)
        elif kind == "callable":
            _query_callable(suspect, images, tally, mapper, batch_size=batch_size, bar=bar)  # type: ignore[arg-type]
        else:
            _query_endpoint(suspect, images, tally, mapper, timeout=timeout, retries=retries,  # type: ignore[arg-type]
                            backoff=backoff, headers=headers, max_response_bytes=max_response_bytes,
                            max_consecutive_errors=max_consecutive_errors, bar=bar)
    finally:
        bar.close()
    result = tally.result(kind, start)
    logger.info("Queried %s: %d/%d answered, %d failed, %d skipped, %d queries in %.2f s.", kind,
                result.answered, len(images), result.failed, result.skipped, result.queried, result.seconds)
    return result
