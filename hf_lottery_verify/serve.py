"""Serve a model over HTTP like the Hugging Face Inference API's image-classification task.

For black-box (Scheme V3) tests and demos: a suspect "deployed" behind an endpoint that
:func:`hf_lottery_verify.blackbox.query_labels` (or ``huggingface_hub.InferenceClient``) can
query. Standard library only (``http.server``); one thread per request, one forward at a time.

Routes:

* ``POST /`` and ``POST /models/<anything>`` — the body is an image (PNG, JPEG, ... with any
  ``image/*`` content type) or JSON ``{"inputs": "<base64 image>", "parameters": {"top_k": k}}``;
  the answer is ``[{"label": str, "score": float}, ...]``, best first. Bad input → 400
  ``{"error": ...}``, body too large → 413, missing ``Content-Length`` → 411.
* ``GET /`` (and ``GET /models/<anything>``) — a short JSON description for health checks.

Images are preprocessed exactly as :func:`~hf_lottery_verify.blackbox.query_labels` does for
an in-memory model: converted to the model's channels (``L`` or ``RGB``), resized bilinearly
only when the size differs, normalised with the model's mean and standard deviation.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import json
import logging
import os
import socket
import threading
import urllib.parse
import warnings
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch
from PIL import Image
from torch import nn

from .blackbox.images import pil_to_model_input
from .blackbox.runner import _ModelRunner

__all__ = ["ServerHandle", "start_server", "serve", "DEFAULT_MAX_BODY_BYTES", "DEFAULT_IMAGE_SIZE"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_IMAGE_SIZE = 32
_MAX_PIXELS = 4096 * 4096  # decoded images larger than this are refused (decompression bombs)
_IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")
_MAX_DRAIN_BYTES = 16 * 1024 * 1024  # read and drop this much of an oversized body so the 413 arrives
_REQUEST_TIMEOUT = 30.0  # seconds a client may take to send its request


class _BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class _Predictor:
    """The model, its labels and preprocessing, behind a lock."""

    def __init__(self, model: nn.Module, *, id2label: Mapping[int | str, str] | None, image_mean: Any,
                 image_std: Any, image_size: int | None, top_k: int) -> None:
        cfg = getattr(model, "config", None)
        if image_size is None:
            image_size = getattr(cfg, "image_size", None) or DEFAULT_IMAGE_SIZE
        self.runner = _ModelRunner(model, image_mean=image_mean, image_std=image_std, image_size=int(image_size))
        if self.runner.in_chans not in (1, 3):
            raise ValueError(f"Only 1- or 3-channel models can be served, this one takes {self.runner.in_chans}.")
        self.model = model.eval()
        self.lock = threading.Lock()
        num_labels = self._num_labels(model)
        labels = id2label if id2label is not None else getattr(cfg, "id2label", None)
        names = {int(k): str(v) for k, v in (labels or {}).items()}
        self.labels = [names.get(i, f"LABEL_{i}") for i in range(num_labels)]
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}.")
        self.top_k = min(top_k, num_labels)

    def _num_labels(self, model: nn.Module) -> int:
        n = getattr(getattr(model, "config", None), "num_labels", None)
        if n is None:
            n = getattr(getattr(model, "timm_model", model), "num_classes", None)
        if n is None:  # a bare module: ask it once
            size = self.runner.image_size or DEFAULT_IMAGE_SIZE
            probe = torch.zeros(1, self.runner.in_chans, size, size, dtype=torch.uint8)
            n = self.runner.logits(probe).shape[1]
        return int(n)

    def describe(self) -> dict[str, Any]:
        cfg = getattr(self.model, "config", None)
        return {
            "task": "image-classification",
            "library": "hf_lottery_verify",
            "model_type": getattr(cfg, "model_type", None) or type(self.model).__name__,
            "arch": getattr(cfg, "arch", None),
            "num_labels": len(self.labels),
            "labels": self.labels,
            "in_chans": self.runner.in_chans,
            "image_size": self.runner.image_size,
            "top_k": self.top_k,
            "usage": "POST an image (raw bytes, or JSON {\"inputs\": \"<base64>\"}) to / or /models/<name>",
        }

    def decode(self, data: bytes) -> torch.Tensor:
        if not data:
            raise _BadRequest("empty body: send an image")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data), formats=_IMAGE_FORMATS)
                if image.width * image.height > _MAX_PIXELS:
                    raise _BadRequest(f"image of {image.width}×{image.height} pixels is too large", 413)
                image.load()
                return pil_to_model_input(image, in_chans=self.runner.in_chans, image_size=self.runner.image_size)
        except _BadRequest:
            raise
        except Exception as exc:  # PIL raises many types on hostile input
            raise _BadRequest(f"cannot decode the image ({type(exc).__name__}); send PNG or JPEG bytes") from exc

    def predict(self, image: torch.Tensor, top_k: int) -> list[dict[str, Any]]:
        with self.lock:
            logits = self.runner.logits(image.unsqueeze(0))[0]
        probs = torch.softmax(logits.double(), dim=0)
        k = min(top_k, len(self.labels))
        scores, idx = torch.topk(probs, k)  # sorted, best first
        return [{"label": self.labels[i] if i < len(self.labels) else f"LABEL_{i}", "score": float(s)}
                for s, i in zip(scores.tolist(), idx.tolist(), strict=True)]


def _parse_json_body(body: bytes, default_top_k: int) -> tuple[bytes, int]:
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _BadRequest("body is not valid JSON") from exc
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise _BadRequest('expected JSON {"inputs": "<base64-encoded image>"}')
    inputs = payload["inputs"]
    if not isinstance(inputs, str):
        raise _BadRequest('"inputs" must be a base64-encoded image string')
    if inputs.startswith("data:") and "," in inputs:
        inputs = inputs.split(",", 1)[1]  # data URL
    if inputs.startswith(("http://", "https://")):
        raise _BadRequest("image URLs are not fetched; send the image itself, base64-encoded")
    try:
        data = base64.b64decode("".join(inputs.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _BadRequest('"inputs" is not valid base64') from exc
    top_k = default_top_k
    params = payload.get("parameters")
    if params is not None:
        if not isinstance(params, dict):
            raise _BadRequest('"parameters" must be an object')
        if params.get("top_k") is not None:
            top_k = params["top_k"]
            if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
                raise _BadRequest('"parameters.top_k" must be a positive integer')
    return data, top_k


def _make_handler(predictor: _Predictor, *, max_body_bytes: int) -> type[BaseHTTPRequestHandler]:
    from . import __version__

    class Handler(BaseHTTPRequestHandler):
        server_version = f"hf_lottery_verify/{__version__}"
        timeout = _REQUEST_TIMEOUT

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (http.server's name)
            logger.debug("%s %s", self.address_string(), format % args)

        def _send_json(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route_ok(self) -> bool:
            path = urllib.parse.urlsplit(self.path).path
            return path == "/" or (path.startswith("/models/") and len(path) > len("/models/"))

        def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
            if not self._route_ok():
                self._send_json(404, {"error": f"no route {urllib.parse.urlsplit(self.path).path!r}"})
                return
            self._send_json(200, predictor.describe())

        def _read_body(self) -> bytes:
            length_header = self.headers.get("Content-Length")
            if length_header is None:
                raise _BadRequest("Content-Length required", 411)
            if not length_header.strip().isdigit():
                raise _BadRequest("invalid Content-Length")
            length = int(length_header)
            if length > max_body_bytes:
                self._drain(length)
                raise _BadRequest(f"body of {length} bytes exceeds the limit of {max_body_bytes} bytes", 413)
            return self.rfile.read(length)

        def _drain(self, length: int) -> None:
            if length > max_body_bytes + _MAX_DRAIN_BYTES:
                self.close_connection = True
                return
            left = length
            try:
                while left > 0:
                    chunk = self.rfile.read(min(65536, left))
                    if not chunk:
                        break
                    left -= len(chunk)
            except OSError:
                self.close_connection = True

        def do_POST(self) -> None:  # noqa: N802
            try:
                if not self._route_ok():
                    raise _BadRequest(f"no route {urllib.parse.urlsplit(self.path).path!r}; POST to /", 404)
                body = self._read_body()
                ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                top_k = predictor.top_k
                if ctype == "application/json" or (not ctype.startswith("image/") and body.lstrip()[:1] == b"{"):
                    body, top_k = _parse_json_body(body, top_k)
                image = predictor.decode(body)
                result = predictor.predict(image, top_k)
            except _BadRequest as exc:
                self._send_json(exc.status, {"error": str(exc)})
                return
            except Exception:
                logger.exception("Prediction failed")
                self._send_json(500, {"error": "internal error while classifying the image"})
                return
            self._send_json(200, result)

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _build_server(model: nn.Module, *, host: str, port: int, allow_remote: bool, id2label: Any, image_mean: Any,
                  image_std: Any, image_size: int | None, top_k: int, max_body_bytes: int) -> _Server:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}.")
    if not _is_loopback(host) and not allow_remote:
        raise ValueError(f"Refusing to serve on non-loopback host {host!r}: the server is meant for tests and "
                         "demos and has no authentication. Pass allow_remote=True to do it anyway.")
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}.")
    predictor = _Predictor(model, id2label=id2label, image_mean=image_mean, image_std=image_std,
                           image_size=image_size, top_k=top_k)
    bare = host.strip("[]")
    cls = _Server6 if ":" in bare else _Server
    return cls((bare, port), _make_handler(predictor, max_body_bytes=max_body_bytes))


def _url(server: _Server, host: str) -> str:
    bare = host.strip("[]")
    shown = f"[{bare}]" if ":" in bare else bare
    return f"http://{shown}:{server.server_address[1]}/"


class ServerHandle:
    """A running server: its address, and how to stop it.

    Use it as a context manager, or call :meth:`shutdown`.

    Attributes:
        url: ``http://host:port/``; POST images here (or to ``{url}models/<name>``).
        host: The host it listens on.
        port: The port it listens on (the one picked when ``port=0``).
    """

    def __init__(self, server: _Server, thread: threading.Thread, host: str) -> None:
        self._server = server
        self._thread = thread
        self.host = host
        self.port = int(server.server_address[1])
        self.url = _url(server, host)
        self._closed = False

    def shutdown(self, *, timeout: float = 5.0) -> None:
        """Stop serving and close the socket (idempotent).

        Args:
            timeout (`float`, *optional*, defaults to 5.0): Seconds to wait for the server thread.
        """
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"ServerHandle(url={self.url!r}, running={not self._closed})"


def start_server(
    model: nn.Module,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    id2label: Mapping[int | str, str] | None = None,
    image_mean: float | Sequence[float] | None = None,
    image_std: float | Sequence[float] | None = None,
    image_size: int | None = None,
    top_k: int = 5,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    allow_remote: bool = False,
) -> ServerHandle:
    """Serve a model in a background thread, Inference-API style (image classification).

    Args:
        model (`nn.Module`):
            This library's model (``.logits`` of its output) or any module returning logits.
            It is switched to eval mode.
        host (`str`, *optional*, defaults to `"127.0.0.1"`):
            Address to listen on; non-loopback addresses need ``allow_remote=True``.
        port (`int`, *optional*, defaults to 0): Port; 0 picks a free one (see ``handle.port``).
        id2label (`Mapping[int, str]`, *optional*):
            Class names; defaults to ``model.config.id2label``, else ``"LABEL_<i>"``.
        image_mean (`float` or `Sequence[float]`, *optional*):
            Per-channel mean (fraction of 255); defaults to ``model.config.image_mean``, else 0.5.
        image_std (`float` or `Sequence[float]`, *optional*):
            Per-channel standard deviation; defaults to ``model.config.image_std``, else 0.5.
        image_size (`int`, *optional*):
            Side the images are resized to (bilinear, only when different); defaults to
            ``model.config.image_size``, else 32.
        top_k (`int`, *optional*, defaults to 5):
            Predictions per answer (at most the number of labels); a JSON request may ask for
            another count with ``"parameters": {"top_k": k}``.
        max_body_bytes (`int`, *optional*, defaults to 10 MiB): Larger requests get HTTP 413.
        allow_remote (`bool`, *optional*, defaults to `False`):
            Allow a non-loopback ``host``. The server has no authentication: only for tests.

    Returns:
        `ServerHandle`: ``.url``, ``.port``, ``.shutdown()``; usable as a context manager.

    Raises:
        ValueError: A non-loopback host without ``allow_remote``, a model with other than 1 or 3
            input channels, or bad options.
        OSError: The address cannot be bound (port in use, ...).

    Example:
        >>> import torch, hf_lottery_verify as hlv
        >>> from hf_lottery_verify.serve import start_server
        >>> from hf_lottery_verify.blackbox import query_labels
        >>> model = hlv.SparseResNetForImageClassification(hlv.SparseResNetConfig(arch="cifar_resnet8"))
        >>> images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
        >>> with start_server(model) as server:
        ...     result = query_labels(server.url, images)
        >>> result.answered
        2
    """
    server = _build_server(model, host=host, port=port, allow_remote=allow_remote, id2label=id2label,
                           image_mean=image_mean, image_std=image_std, image_size=image_size, top_k=top_k,
                           max_body_bytes=max_body_bytes)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name=f"hf_lottery_verify-serve-{server.server_address[1]}", daemon=True)
    thread.start()
    handle = ServerHandle(server, thread, host)
    logger.info("Serving %s at %s", type(model).__name__, handle.url)
    return handle


def serve(
    model: nn.Module | str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    id2label: Mapping[int | str, str] | None = None,
    image_mean: float | Sequence[float] | None = None,
    image_std: float | Sequence[float] | None = None,
    image_size: int | None = None,
    top_k: int = 5,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    allow_remote: bool = False,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve a model in the foreground until interrupted (``hf-lottery serve``).

    Args:
        model (`nn.Module`, `str` or `os.PathLike`):
            The model, or a folder / file / Hub repo id loaded with
            :func:`~hf_lottery_verify.load_model`.
        host (`str`, *optional*, defaults to `"127.0.0.1"`): See :func:`start_server`.
        port (`int`, *optional*, defaults to 8000): Port; 0 picks a free one.
        id2label, image_mean, image_std, image_size, top_k, max_body_bytes, allow_remote:
            As in :func:`start_server`.
        on_ready (`Callable[[str], None]`, *optional*):
            Called with one line naming the URL once the server listens (the CLI prints it);
            the same line is always logged at INFO level.

    Raises:
        ValueError: See :func:`start_server`.
        OSError: The address cannot be bound.
    """
    if not isinstance(model, nn.Module):
        from . import load_model  # the public loader (any checkpoint layout)

        model = load_model(model)
    server = _build_server(model, host=host, port=port, allow_remote=allow_remote, id2label=id2label,
                           image_mean=image_mean, image_std=image_std, image_size=image_size, top_k=top_k,
                           max_body_bytes=max_body_bytes)
    url = _url(server, host)
    line = f"Serving {type(model).__name__} at {url} (POST an image to classify it; Ctrl-C stops)"
    logger.info(line)
    if on_ready is not None:
        on_ready(line)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        logger.info("Stopped serving %s", url)
    finally:
        server.server_close()
