"""Black-box queries (Scheme V3): ask a suspect model for the labels of trigger images.

The owner of a ticket trained with a secret trigger set ``T = (T_x, T_y)`` proves ownership
without seeing the suspect's weights: it sends ``T_x`` to the suspect and compares the answers
with ``T_y`` (Adi et al.; Chen et al., NeurIPS 2021, Table 3). :func:`query_labels` does the
asking for three kinds of suspect:

* ``"model"`` — an ``nn.Module`` in memory (this library's model, whose output has ``.logits``,
  or a bare timm ResNet returning logits): normalise, forward, argmax;
* ``"callable"`` — any function taking the ``uint8`` image batch and returning one label
  (class index or class name) per image;
* ``"endpoint"`` — an ``http(s)://`` URL shaped like the Hugging Face Inference API's
  image-classification task (what :func:`hf_lottery_verify.serve.start_server` serves): one
  POST per image, sent as lossless PNG, answered by ``[{"label": ..., "score": ...}, ...]``.

The suspect is never trusted: every answer is checked for type, size and range, response
bodies are read up to a cap, every request has a hard deadline, and unusable answers become
``-1`` with a short reason instead of exceptions. Only a dead endpoint (no HTTP answer at all to
the first request) raises :class:`EndpointError`.
"""

from __future__ import annotations

import base64
import http.client
import io
import ipaddress
import json
import logging
import math
import re
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import nn

from .data import normalize
from .errors import HfLotteryError

__all__ = [
    "EndpointError",
    "QueryResult",
    "query_labels",
    "encode_png",
    "pil_to_model_input",
    "model_input_spec",
    "resolve_normalization",
    "DEFAULT_IMAGE_MEAN",
    "DEFAULT_IMAGE_STD",
    "MAX_RESPONSE_BYTES",
]

logger = logging.getLogger(__name__)

DEFAULT_IMAGE_MEAN = 0.5
DEFAULT_IMAGE_STD = 0.5
MAX_RESPONSE_BYTES = 1 << 20  # an image-classification answer is a few hundred bytes
_MAX_ERRORS = 10  # reasons kept in QueryResult.errors
_MAX_REASON_CHARS = 200
_MAX_LABEL_CHARS = 256
_MAX_INDEX = 2**31 - 1
_LABEL_RE = re.compile(r"(?:LABEL_)?(\d{1,10})")


class EndpointError(HfLotteryError, OSError):
    """An inference endpoint cannot be queried at all (dead, unreachable or malformed URL).

    Raised only when the very first request gets no HTTP answer after its retries (connection
    refused, timeout, name resolution or TLS failure) or when the URL itself is unusable;
    failures after a first answer are counted in :class:`QueryResult` instead.

    Args:
        message: What went wrong and what to check.
        url: The endpoint URL.
        reason: The short transport-level reason (``"connection refused"``, ...).
    """

    def __init__(self, message: str, *, url: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.reason = reason

    def __str__(self) -> str:
        return str(self.args[0])


# --------------------------------------------------------------------------- result


@dataclass
class QueryResult:
    """The suspect's answers to a batch of images.

    Attributes:
        labels: ``int64`` tensor ``N``: the class index the suspect gave each image, ``-1``
            where the answer is missing (failed or never asked) or could not be mapped.
        queried: Queries actually sent: images passed to a model or callable, HTTP requests
            (retries included) sent to an endpoint.
        failed: Images that were asked but got no usable label.
        errors: Short reasons for the first few failures.
        kind: ``"model"``, ``"callable"`` or ``"endpoint"``.
        seconds: Wall-clock time of the whole query.
        skipped: Images never asked (query budget spent, or the endpoint gave up).
        answers: The raw top label of each image as the suspect gave it (truncated; ``None``
            when there was none), e.g. for matching renamed classes.
    """

    labels: torch.Tensor
    queried: int
    failed: int
    errors: list[str]
    kind: Literal["model", "callable", "endpoint"]
    seconds: float
    skipped: int = 0
    answers: list[str | None] = field(default_factory=list)

    @property
    def answered(self) -> int:
        """Images with a usable label (``labels >= 0``)."""
        return int((self.labels >= 0).sum())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (labels as a list of ints)."""
        return {
            "kind": self.kind,
            "labels": [int(x) for x in self.labels.tolist()],
            "answered": self.answered,
            "queried": self.queried,
            "failed": self.failed,
            "skipped": self.skipped,
            "errors": list(self.errors),
            "answers": list(self.answers),
            "seconds": round(self.seconds, 6),
        }


class _Tally:
    """Mutable bookkeeping shared by the three query paths."""

    def __init__(self, n: int, budget: int | None) -> None:
        self.labels = torch.full((n,), -1, dtype=torch.int64)
        self.answers: list[str | None] = [None] * n
        self.asked = torch.zeros(n, dtype=torch.bool)
        self.queried = 0
        self.budget = budget
        self.errors: list[str] = []
        self.n_errors = 0

    def budget_left(self) -> int | None:
        return None if self.budget is None else max(self.budget - self.queried, 0)

    def error(self, reason: str) -> None:
        self.n_errors += 1
        if len(self.errors) < _MAX_ERRORS:
            self.errors.append(_short(reason))

    def result(self, kind: Literal["model", "callable", "endpoint"], start: float) -> QueryResult:
        failed = int((self.asked & (self.labels < 0)).sum())
        skipped = int((~self.asked).sum())
        if self.n_errors > len(self.errors):
            self.errors.append(f"... {self.n_errors - len(self.errors)} more")
        return QueryResult(labels=self.labels, queried=self.queried, failed=failed, errors=self.errors,
                           kind=kind, seconds=time.perf_counter() - start, skipped=skipped, answers=self.answers)


def _short(text: str, limit: int = _MAX_REASON_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- labels


class _LabelMapper:
    """Maps an untrusted answer (index or class name) to a class index, or says why not."""

    def __init__(self, label2id: Mapping[str, int] | None) -> None:
        self.label2id: dict[str, int] = {}
        for name, idx in (label2id or {}).items():
            if not isinstance(name, str) or isinstance(idx, bool) or not isinstance(idx, (int, np.integer)):
                raise TypeError(f"label2id must map str -> int, got {name!r}: {idx!r}.")
            if not 0 <= int(idx) <= _MAX_INDEX:
                raise ValueError(f"label2id[{name!r}] = {idx} is not a valid class index.")
            self.label2id[name] = int(idx)
        self.num_labels = max(self.label2id.values()) + 1 if self.label2id else None

    def _index(self, idx: int, shown: str) -> tuple[int, str | None]:
        limit = self.num_labels if self.num_labels is not None else _MAX_INDEX + 1
        if 0 <= idx < limit:
            return idx, None
        return -1, f"class index {shown} out of range"

    def map(self, answer: Any) -> tuple[int, str | None]:
        """``(index, None)`` or ``(-1, reason)``."""
        if isinstance(answer, torch.Tensor) and answer.numel() == 1 and not answer.is_floating_point():
            answer = answer.item()
        if isinstance(answer, (bool, np.bool_)):
            return -1, f"not a label: {answer!r}"
        if isinstance(answer, (int, np.integer)):
            return self._index(int(answer), _short(str(int(answer)), 24))
        if isinstance(answer, str):
            if len(answer) > _MAX_LABEL_CHARS:
                return -1, f"label of {len(answer)} characters"
            if answer in self.label2id:
                return self.label2id[answer], None
            m = _LABEL_RE.fullmatch(answer.strip())
            if m:
                return self._index(int(m.group(1)), m.group(1))
            return -1, f"unknown label {_short(repr(answer), 60)}"
        return -1, f"not a label: {type(answer).__name__}"


def _shown(answer: Any) -> str | None:
    if isinstance(answer, torch.Tensor) and answer.numel() == 1:
        answer = answer.item()
    if isinstance(answer, (str, int, np.integer)) and not isinstance(answer, bool):
        return _short(str(answer), 100)
    return None


# --------------------------------------------------------------------------- models


def _config(model: nn.Module) -> Any:
    return getattr(model, "config", None)


def model_input_spec(model: nn.Module) -> tuple[int, int | None]:
    """The input channels and image side a model expects.

    Reads ``model.config.in_chans`` / ``image_size`` (this library's models), else timm's
    ``pretrained_cfg["input_size"]`` for the channels, else the first convolution's
    ``in_channels``.

    Args:
        model (`nn.Module`): The model.

    Returns:
        `tuple[int, int | None]`: ``(in_chans, image_size)``; ``image_size`` is ``None`` when the
        model does not say (convolutional models accept any size).
    """
    cfg = _config(model)
    in_chans = getattr(cfg, "in_chans", None)
    size = getattr(cfg, "image_size", None)
    if in_chans is None:
        inner = getattr(model, "timm_model", model)
        input_size = (getattr(inner, "pretrained_cfg", None) or {}).get("input_size")
        if input_size:
            in_chans = input_size[0]
        else:
            conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
            in_chans = conv.in_channels if conv is not None else 3
    return int(in_chans), (int(size) if size else None)


def resolve_normalization(
    model: nn.Module | None,
    image_mean: float | Sequence[float] | None = None,
    image_std: float | Sequence[float] | None = None,
    *,
    in_chans: int,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel normalisation constants (fractions of 255) for a model's inputs.

    Args:
        model (`nn.Module`, *optional*): Read ``model.config.image_mean`` / ``image_std`` from it
            when the arguments are not given.
        image_mean (`float` or `Sequence[float]`, *optional*):
            Mean per channel (one value is repeated); defaults to the config's, else 0.5.
        image_std (`float` or `Sequence[float]`, *optional*):
            Standard deviation per channel; defaults to the config's, else 0.5.
        in_chans (`int`): Number of input channels.

    Returns:
        `tuple[tuple[float, ...], tuple[float, ...]]`: ``(mean, std)``, ``in_chans`` values each.

    Raises:
        ValueError: Wrong number of values, or a non-positive standard deviation.
    """
    cfg = _config(model) if model is not None else None

    def pick(given: Any, attr: str, default: float) -> tuple[float, ...]:
        value = given if given is not None else getattr(cfg, attr, None)
        if value is None:
            value = default
        values = (float(value),) if isinstance(value, (int, float)) else tuple(float(v) for v in value)
        if len(values) == 1:
            values = values * in_chans
        if len(values) != in_chans:
            raise ValueError(f"{attr} has {len(values)} values for a model with {in_chans} input channels.")
        return values

    mean = pick(image_mean, "image_mean", DEFAULT_IMAGE_MEAN)
    std = pick(image_std, "image_std", DEFAULT_IMAGE_STD)
    if any(not s > 0 for s in std):
        raise ValueError(f"image_std must be positive, got {std}.")
    return mean, std


def _tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """One uint8 ``C×H×W`` image (C = 1, 3 or 4) as a PIL image."""
    c = image.shape[0]
    array = image.detach().cpu().permute(1, 2, 0).contiguous().numpy()
    if c == 1:
        return Image.fromarray(array[:, :, 0], mode="L")
    if c == 3:
        return Image.fromarray(array, mode="RGB")
    if c == 4:
        return Image.fromarray(array, mode="RGBA")
    raise ValueError(f"Images need 1, 3 or 4 channels to be encoded, got {c}.")


def encode_png(image: torch.Tensor) -> bytes:
    """Encode one uint8 ``C×H×W`` image as PNG (lossless, so the suspect sees the exact pixels).

    Args:
        image (`torch.Tensor`): ``uint8`` tensor with 1 (L), 3 (RGB) or 4 (RGBA) channels.

    Returns:
        `bytes`: The PNG file.
    """
    buf = io.BytesIO()
    _tensor_to_pil(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def pil_to_model_input(image: Image.Image, *, in_chans: int, image_size: int | None) -> torch.Tensor:
    """A decoded image as the uint8 ``C×H×W`` tensor a model takes (shared by server and client).

    Converts to ``L`` or ``RGB`` (PIL's conversion), then resizes bilinearly to
    ``image_size × image_size`` only when the size differs.

    Args:
        image (`PIL.Image.Image`): The decoded image, any mode PIL can convert.
        in_chans (`int`): 1 (grayscale) or 3 (RGB).
        image_size (`int`, *optional*): Side to resize to; ``None`` keeps the size.

    Returns:
        `torch.Tensor`: ``uint8`` ``in_chans × H × W``.

    Raises:
        ValueError: ``in_chans`` is neither 1 nor 3.
    """
    if in_chans not in (1, 3):
        raise ValueError(f"Only 1- or 3-channel models can take decoded images, got in_chans={in_chans}.")
    mode = "L" if in_chans == 1 else "RGB"
    if image.mode != mode:
        image = image.convert(mode)
    if image_size is not None and image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


class _ModelRunner:
    """Normalise uint8 batches and return a model's logits (also used by the server)."""

    def __init__(self, model: nn.Module, *, image_mean: Any = None, image_std: Any = None,
                 image_size: int | None = None) -> None:
        self.model = model
        self.in_chans, cfg_size = model_input_spec(model)
        self.image_size = image_size if image_size is not None else cfg_size
        self.mean, self.std = resolve_normalization(model, image_mean, image_std, in_chans=self.in_chans)
        param = next(model.parameters(), None)
        self.device = param.device if param is not None else torch.device("cpu")
        self.dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32

    def adapt(self, images: torch.Tensor) -> torch.Tensor:
        """Convert channels / resize exactly as the server does with a decoded image."""
        _, c, h, w = images.shape
        size_ok = self.image_size is None or (h == w == self.image_size)
        if c == self.in_chans and size_ok:
            return images
        return torch.stack([pil_to_model_input(_tensor_to_pil(x), in_chans=self.in_chans,
                                               image_size=self.image_size) for x in images])

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        x = normalize(self.adapt(images).to(self.device), self.mean, self.std).to(self.dtype)
        out = self.model(x)
        logits = getattr(out, "logits", None)
        if logits is None:
            logits = out[0] if isinstance(out, (tuple, list)) else out
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != len(images):
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"The model returned {shape} for {len(images)} images; expected logits (N, classes).")
        return logits.float().cpu()


# --------------------------------------------------------------------------- query paths


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a uint8 N×C×H×W tensor, got {got}.")


def _batches(n: int, batch_size: int, tally: _Tally) -> Iterator[tuple[int, int]]:
    start = 0
    while start < n:
        left = tally.budget_left()
        size = min(batch_size, n - start) if left is None else min(batch_size, n - start, left)
        if size <= 0:
            return
        yield start, start + size
        start += size


def _query_model(model: nn.Module, images: torch.Tensor, tally: _Tally, *, image_mean: Any, image_std: Any,
                 batch_size: int, bar: Any) -> None:
    runner = _ModelRunner(model, image_mean=image_mean, image_std=image_std)
    was_training = model.training
    model.eval()
    try:
        for lo, hi in _batches(len(images), batch_size, tally):
            tally.queried += hi - lo
            tally.asked[lo:hi] = True
            pred = runner.logits(images[lo:hi]).argmax(dim=1)
            tally.labels[lo:hi] = pred
            for i, p in zip(range(lo, hi), pred.tolist(), strict=True):
                tally.answers[i] = str(p)
            bar.update(hi - lo)
    finally:
        model.train(was_training)


def _query_callable(fn: Callable[[torch.Tensor], Any], images: torch.Tensor, tally: _Tally,
                    mapper: _LabelMapper, *, batch_size: int, bar: Any) -> None:
    for lo, hi in _batches(len(images), batch_size, tally):
        tally.queried += hi - lo
        tally.asked[lo:hi] = True
        bar.update(hi - lo)
        try:
            out = fn(images[lo:hi])
        except Exception as exc:  # the suspect's code: never let it take the verifier down
            tally.error(f"images {lo}-{hi - 1}: the callable raised {type(exc).__name__}: {exc}")
            continue
        if isinstance(out, (torch.Tensor, np.ndarray)):
            if out.ndim != 1:
                tally.error(f"images {lo}-{hi - 1}: expected one label per image, got shape {tuple(out.shape)}")
                continue
            out = out.tolist()
        if isinstance(out, (str, bytes)) or not isinstance(out, Sequence):
            tally.error(f"images {lo}-{hi - 1}: expected a sequence of labels, got {type(out).__name__}")
            continue
        if len(out) != hi - lo:
            tally.error(f"images {lo}-{hi - 1}: {len(out)} labels for {hi - lo} images")
            continue
        for i, answer in zip(range(lo, hi), out, strict=True):
            tally.answers[i] = _shown(answer)
            idx, reason = mapper.map(answer)
            tally.labels[i] = idx
            if reason:
                tally.error(f"image {i}: {reason}")


# --------------------------------------------------------------------------- endpoints


class _TransportError(Exception):
    """No HTTP answer: connection refused, timeout, reset, TLS or name resolution failure."""

    def __init__(self, reason: str, *, refused: bool = False, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.refused = refused
        self.timed_out = timed_out


@dataclass
class _Response:
    status: int
    body: bytes | None  # None when the body was larger than the cap
    retry_after: float | None


def _is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _EndpointClient:
    """One POST per image over ``http.client`` with a hard per-request deadline and a body cap."""

    def __init__(self, url: str, *, timeout: float, headers: Mapping[str, str] | None,
                 max_response_bytes: int) -> None:
        self.url = url
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EndpointError(f"Cannot query {url!r}: expected an http:// or https:// URL with a host.", url=url)
        try:
            port = parts.port
        except ValueError as exc:
            raise EndpointError(f"Cannot query {url!r}: {exc}.", url=url) from exc
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = port or (443 if parts.scheme == "https" else 80)
        self.target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        from . import __version__

        self.headers = {
            "Content-Type": "image/png",
            "Accept": "application/json",
            "User-Agent": f"hf_lottery_verify/{__version__}",
        }
        self.headers.update(headers or {})
        self.proxy = self._proxy()

    def _proxy(self) -> urllib.parse.SplitResult | None:
        """The environment's proxy for this URL (``http_proxy``/``https_proxy``/``no_proxy``)."""
        if _is_loopback_host(self.host):
            return None
        proxy = urllib.request.getproxies().get(self.scheme)
        if not proxy or urllib.request.proxy_bypass(self.host):
            return None
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return parts if parts.hostname else None

    def _connection(self) -> tuple[http.client.HTTPConnection, str, dict[str, str]]:
        headers = dict(self.headers)
        target = self.target
        if self.proxy is None:
            if self.scheme == "https":
                conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout, context=ssl.create_default_context())
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            return conn, target, headers
        proxy_headers = {}
        if self.proxy.username:
            creds = f"{urllib.parse.unquote(self.proxy.username)}:{urllib.parse.unquote(self.proxy.password or '')}"
            proxy_headers["Proxy-Authorization"] = "Basic " + base64.b64encode(creds.encode()).decode()
        proxy_port = self.proxy.port or 8080
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(self.proxy.hostname, proxy_port, timeout=self.timeout,
                                               context=ssl.create_default_context())
            conn.set_tunnel(self.host, self.port, headers=proxy_headers)
        else:
            conn = http.client.HTTPConnection(self.proxy.hostname, proxy_port, timeout=self.timeout)
            host = f"[{self.host}]" if ":" in self.host else self.host
            target = f"http://{host}:{self.port}{self.target}"
            headers.update(proxy_headers)
        return conn, target, headers

    def post(self, body: bytes) -> _Response:
        """Send one request; raises :class:`_TransportError` when no HTTP answer came back in time."""
        conn, target, headers = self._connection()
        expired = threading.Event()
        sockets: list[socket.socket] = []  # the response keeps reading it after conn.sock is cleared

        def abort() -> None:  # hard deadline: a trickling server cannot hold the verifier
            expired.set()
            for sock in sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        timer = threading.Timer(self.timeout, abort)
        timer.daemon = True
        timer.start()
        try:
            conn.connect()
            if conn.sock is not None:
                sockets.append(conn.sock)
            if expired.is_set():
                abort()
            conn.request("POST", target, body=body, headers=headers)
            resp = conn.getresponse()
            retry_after = _retry_after(resp.getheader("Retry-After"))
            length = resp.getheader("Content-Length")
            if length and length.strip().isdigit() and int(length) > self.max_response_bytes:
                return _Response(resp.status, None, retry_after)
            chunks: list[bytes] = []
            size = 0
            while size <= self.max_response_bytes:
                chunk = resp.read(min(65536, self.max_response_bytes + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            if expired.is_set():
                raise _TransportError(f"no answer within {self.timeout:g} s", timed_out=True)
            return _Response(resp.status, None if size > self.max_response_bytes else b"".join(chunks), retry_after)
        except _TransportError:
            raise
        except ConnectionRefusedError as exc:
            raise _TransportError("connection refused", refused=True) from exc
        except socket.gaierror as exc:
            raise _TransportError(f"cannot resolve host {self.host!r}") from exc
        except ssl.SSLError as exc:
            raise _TransportError(f"TLS error: {_short(str(exc), 80)}") from exc
        except TimeoutError as exc:
            raise _TransportError(f"no answer within {self.timeout:g} s", timed_out=True) from exc
        except (http.client.HTTPException, OSError) as exc:
            if expired.is_set():
                raise _TransportError(f"no answer within {self.timeout:g} s", timed_out=True) from exc
            raise _TransportError(f"connection error ({type(exc).__name__}: {_short(str(exc), 80)})") from exc
        finally:
            timer.cancel()
            conn.close()


def _retry_after(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and math.isfinite(seconds) and seconds >= 0 else None


def _top_label(payload: Any) -> tuple[Any, str | None]:
    """The top-scoring label of an Inference-API image-classification answer, or why there is none."""
    if isinstance(payload, dict):
        if "error" in payload and "label" not in payload:
            return None, f"endpoint error: {_short(str(payload['error']), 120)}"
        payload = [payload]
    if not isinstance(payload, list):
        return None, f"expected a JSON list of {{label, score}}, got {type(payload).__name__}"
    if payload and isinstance(payload[0], list):
        payload = payload[0]  # one image per request: the first (only) list of predictions
    if not payload:
        return None, "empty answer"
    best: Any = None
    best_score = -math.inf
    for item in payload:
        if not isinstance(item, dict) or "label" not in item or "score" not in item:
            return None, "expected {label, score} objects"
        label, score = item["label"], item["score"]
        if not isinstance(label, (str, int)) or isinstance(label, bool):
            return None, f"label of type {type(label).__name__}"
        if not isinstance(score, (int, float)) or isinstance(score, bool) or not math.isfinite(score):
            return None, f"score {_short(repr(score), 40)} is not a finite number"
        if best is None or score > best_score:
            best, best_score = label, score
    return best, None


def _parse_answer(body: bytes) -> tuple[Any, str | None]:
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, f"non-JSON answer ({len(body)} bytes)"
    return _top_label(payload)


def _query_endpoint(url: str, images: torch.Tensor, tally: _Tally, mapper: _LabelMapper, *, timeout: float,
                    retries: int, backoff: float, headers: Mapping[str, str] | None, max_response_bytes: int,
                    max_consecutive_errors: int | None, bar: Any) -> None:
    client = _EndpointClient(url, timeout=timeout, headers=headers, max_response_bytes=max_response_bytes)
    any_answer = False
    consecutive = 0
    t0 = time.perf_counter()
    for i in range(len(images)):
        if tally.budget_left() == 0:
            break
        if max_consecutive_errors is not None and consecutive >= max_consecutive_errors:
            tally.error(f"gave up after {consecutive} images in a row got no answer; "
                        f"{len(images) - i} images not asked")
            break
        body = encode_png(images[i])
        tally.asked[i] = True
        response: _Response | None = None
        reason = ""
        refused = timed_out = False
        attempts = 0
        for attempt in range(retries + 1):
            if attempt > 0:
                if tally.budget_left() == 0:
                    reason += " (query budget spent before retrying)"
                    break
                delay = backoff * 2 ** (attempt - 1)
                if response is not None and response.retry_after is not None:
                    delay = max(delay, min(response.retry_after, timeout))
                time.sleep(delay)
            tally.queried += 1
            attempts += 1
            try:
                response = client.post(body)
            except _TransportError as exc:
                response, reason, refused, timed_out = None, exc.reason, exc.refused, exc.timed_out
                continue
            any_answer = True
            if response.status == 429 or 500 <= response.status < 600:
                reason = f"HTTP {response.status}"
                continue
            break
        if response is None and not any_answer:
            what = "connection refused" if refused else reason
            raise EndpointError(
                f"Cannot reach the endpoint {url}: {what} ({attempts} attempt{'s' * (attempts > 1)} in "
                f"{time.perf_counter() - t0:.1f} s). "
                + ("Pass a larger timeout= for a slow endpoint." if timed_out else
                   "Check the URL, that the server is running and that it is reachable from here."),
                url=url, reason=what)
        bar.update(1)
        if response is None or response.status == 429 or 500 <= response.status < 600:
            consecutive += 1
            tally.error(f"image {i}: {reason} after {attempts} attempt{'s' * (attempts > 1)}")
            continue
        consecutive = 0
        if response.body is None:
            tally.error(f"image {i}: answer larger than {max_response_bytes} bytes")
            continue
        if response.status != 200:
            snippet = response.body[:120].decode("utf-8", "replace")
            tally.error(f"image {i}: HTTP {response.status}: {snippet}")
            continue
        answer, why = _parse_answer(response.body)
        if why is not None:
            tally.error(f"image {i}: {why}")
            continue
        tally.answers[i] = _shown(answer)
        idx, why = mapper.map(answer)
        tally.labels[i] = idx
        if why is not None:
            tally.error(f"image {i}: {why}")


# --------------------------------------------------------------------------- public entry point


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


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
            ``model.config.image_mean``, else 0.5.
        image_std (`float` or `Sequence[float]`, *optional*):
            Per-channel standard deviation; defaults to ``model.config.image_std``, else 0.5.
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
    _check_images(images)
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
    bar: Any = _NoBar()
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(images), desc=f"querying {kind}", unit="img", leave=False)
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
