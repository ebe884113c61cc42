"""Serve a model over HTTP like the Hugging Face Inference API's image-classification task.

For black-box (Scheme V3) tests and demos: a suspect "deployed" behind an endpoint that
:func:`hf_lottery_verify.blackbox.query_labels` (or ``huggingface_hub.InferenceClient``) can
query. Standard library only, built to hold under load and abuse:

* an ``asyncio`` event loop reads requests, so a waiting or slow client costs a socket, not a
  thread; the listen backlog is the system's maximum, so bursts wait instead of being dropped;
* each request (headers and body) must arrive within a deadline (``request_timeout``), else
  408 and the connection is closed; beyond 1024 open connections, or 256 MiB of request
  bodies held at once, a client gets a quick 503;
* a fixed pool of ``workers`` threads decodes and classifies, so decoding memory is bounded by
  ``workers`` × the largest image allowed; an image's size is read from its header before
  decoding, and more than ``max_pixels`` pixels is refused with 413;
* one request per connection (``Connection: close``).

Routes:

* ``POST /`` and ``POST /models/<anything>`` — the body is an image (PNG, JPEG, ... with any
  ``image/*`` content type) or JSON ``{"inputs": "<base64 image>", "parameters": {"top_k": k}}``;
  the answer is ``[{"label": str, "score": float}, ...]``, best first. Bad input → 400
  ``{"error": ...}``, body or image too large → 413, missing ``Content-Length`` → 411.
* ``GET /`` (and ``GET /models/<anything>``) — a short JSON description for health checks.

Images are preprocessed exactly as :func:`~hf_lottery_verify.blackbox.query_labels` does for
an in-memory model: converted to the model's channels (``L`` or ``RGB``), resized bilinearly
only when the size differs, normalised with the model's mean and standard deviation.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import http.client
import io
import json
import logging
import os
import socket
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any

import torch
from PIL import Image
from torch import nn

from ._version import __version__
from .blackbox.endpoint import _is_loopback_host
from .blackbox.runner import _ModelRunner
from .data import pil_to_model_input
from .errors import ConfigError

__all__ = ["ServerHandle", "start_server", "serve", "DEFAULT_MAX_BODY_BYTES", "DEFAULT_IMAGE_SIZE",
           "DEFAULT_MAX_PIXELS", "DEFAULT_REQUEST_TIMEOUT", "DEFAULT_WORKERS"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_IMAGE_SIZE = 32
DEFAULT_MAX_PIXELS = 4096 * 4096  # larger images are refused from their header (decompression bombs)
DEFAULT_REQUEST_TIMEOUT = 10.0  # seconds a client has to send its whole request
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)
_IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")
_BACKLOG = 65535  # listen() caps it to the system's maximum (net.core.somaxconn)
_MAX_CONNECTIONS = 1024  # open connections beyond this get a quick 503
_MAX_BUFFERED_BYTES = 256 * 1024 * 1024  # request bodies held at once (read, queued, classified)
_MAX_HEAD_BYTES = 64 * 1024  # request line and headers
_MAX_DRAIN_BYTES = 16 * 1024 * 1024  # read and drop this much of a refused body so the answer arrives
_LINGER_S = 2.0  # how long that may take


class _BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, *, linger: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.linger = linger  # read what the client still sends before closing, so it sees the answer


class _Predictor:
    """The model, its labels and preprocessing, behind a lock."""

    def __init__(self, model: nn.Module, *, id2label: Mapping[int | str, str] | None, top_k: int) -> None:
        self.runner = _ModelRunner(model)  # the model's own channels, size and normalisation
        self.runner.image_size = int(self.runner.image_size or DEFAULT_IMAGE_SIZE)  # decoded images get one size
        if self.runner.in_chans not in (1, 3):
            raise ConfigError(f"Only 1- or 3-channel models can be served, this one takes {self.runner.in_chans}.")
        self.model = model.eval()
        self.lock = threading.Lock()
        size = self.runner.image_size  # the label count is what the logits say: ask the model once
        num_labels = self.runner.logits(torch.zeros(1, self.runner.in_chans, size, size, dtype=torch.uint8)).shape[1]
        labels = id2label if id2label is not None else getattr(getattr(model, "config", None), "id2label", None)
        names = {int(k): str(v) for k, v in (labels or {}).items()}
        self.labels = [names.get(i, f"LABEL_{i}") for i in range(num_labels)]
        if top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {top_k}.")
        self.top_k = min(top_k, num_labels)

    def describe(self) -> dict[str, Any]:
        cfg = getattr(self.model, "config", None)
        return {"task": "image-classification", "library": "hf_lottery_verify",
                "model_type": getattr(cfg, "model_type", None) or type(self.model).__name__,
                "arch": getattr(cfg, "arch", None), "num_labels": len(self.labels), "labels": self.labels,
                "in_chans": self.runner.in_chans, "image_size": self.runner.image_size, "top_k": self.top_k,
                "usage": "POST an image (raw bytes, or JSON {\"inputs\": \"<base64>\"}) to / or /models/<name>"}

    def decode(self, data: bytes, max_pixels: int) -> torch.Tensor:
        if not data:
            raise _BadRequest("empty body: send an image")
        try:
            image = Image.open(io.BytesIO(data), formats=_IMAGE_FORMATS)  # reads the header only
            if image.width * image.height <= max_pixels:
                image.load()
                return pil_to_model_input(image, in_chans=self.runner.in_chans, image_size=self.runner.image_size)
        except Exception as exc:  # PIL raises many types on hostile input (DecompressionBombError included)
            raise _BadRequest(f"cannot decode the image ({type(exc).__name__}); send PNG or JPEG bytes") from exc
        raise _BadRequest(f"image of {image.width}×{image.height} pixels is larger than the limit of {max_pixels} "
                          "pixels; send a smaller image", 413)

    def predict(self, image: torch.Tensor, top_k: int) -> list[dict[str, Any]]:
        with self.lock:
            logits = self.runner.logits(image.unsqueeze(0))[0]
        probs = torch.softmax(logits.double(), dim=0)
        k = min(top_k, len(self.labels))
        scores, idx = torch.topk(probs, k)  # sorted, best first
        return [{"label": self.labels[i], "score": float(s)}
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


def _response(status: int, payload: Any) -> bytes:
    data = json.dumps(payload).encode()
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nServer: hf_lottery_verify/{__version__}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n")
    return head.encode("latin-1") + data


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str, Any]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise _BadRequest(f"request line and headers exceed {_MAX_HEAD_BYTES} bytes", 431) from None
    line, _, rest = head.partition(b"\r\n")
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest("malformed request line")
    try:
        headers = http.client.parse_headers(io.BytesIO(rest))
    except http.client.HTTPException as exc:
        raise _BadRequest(f"malformed headers ({exc})") from None
    return parts[0], urllib.parse.urlsplit(parts[1]).path, headers


async def _discard(reader: asyncio.StreamReader, limit: int) -> None:
    while limit > 0 and (chunk := await reader.read(min(65536, limit))):
        limit -= len(chunk)


class ServerHandle:
    """A listening server: its address, and how to stop it (made by :func:`start_server`).

    An event loop reads the requests; a pool of worker threads decodes and classifies them. Use
    it as a context manager, or call :meth:`shutdown`.

    Attributes:
        url: ``http://host:port/``; POST images here (or to ``{url}models/<name>``).
        host: The host it listens on.
        port: The port it listens on (the one picked when ``port=0``).
    """

    def __init__(self, model: nn.Module, *, host: str = "127.0.0.1", port: int = 0, allow_remote: bool = False,
                 id2label: Mapping[int | str, str] | None = None, top_k: int = 5,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS,
                 request_timeout: float = DEFAULT_REQUEST_TIMEOUT, workers: int = DEFAULT_WORKERS) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}.")
        if not _is_loopback_host(host) and not allow_remote:
            raise ConfigError(f"Refusing to serve on non-loopback host {host!r}: the server is meant for tests and "
                              "demos and has no authentication. Pass allow_remote=True (--allow-remote) to do it "
                              "anyway.")
        for name, value in (("max_body_bytes", max_body_bytes), ("max_pixels", max_pixels), ("workers", workers),
                            ("request_timeout", request_timeout)):
            if not value > 0:
                raise ConfigError(f"{name} must be positive, got {value}.")
        if not 0 <= port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535 (0 picks a free one), got {port}.")
        self._predictor = _Predictor(model, id2label=id2label, top_k=top_k)
        self._max_body_bytes, self._max_pixels, self._timeout = max_body_bytes, max_pixels, request_timeout
        bare = host.strip("[]")
        try:
            self._sock = socket.create_server((bare, port), backlog=_BACKLOG,
                                              family=socket.AF_INET6 if ":" in bare else socket.AF_INET)
        except OSError as exc:
            cause = exc.__context__ if isinstance(exc.__context__, OSError) else exc  # the bind error, unwrapped
            raise ConfigError(f"Cannot listen on {host}:{port}: {cause.strerror or cause}. Check the host, and pick "
                              "a port nothing else uses (0 picks a free one).") from None
        self.host, self.port = host, int(self._sock.getsockname()[1])
        self.url = f"http://{f'[{bare}]' if ':' in bare else bare}:{self.port}/"
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix=f"hf_lottery_verify-serve-{self.port}")
        self._open = 0  # connections
        self._buffered = 0  # bytes of request bodies held now
        self._started, self._thread = threading.Event(), None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._closed = False

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        server = await asyncio.start_server(self._connection, sock=self._sock, backlog=_BACKLOG,
                                            limit=_MAX_HEAD_BYTES)
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            server.close()  # asyncio.run cancels the open connections
            self._pool.shutdown(wait=False, cancel_futures=True)

    def shutdown(self, *, timeout: float = 5.0) -> None:
        """Stop serving and close the socket (idempotent).

        Args:
            timeout (`float`, *optional*, defaults to 5.0): Seconds to wait for the server thread.
        """
        if self._closed:
            return
        self._closed = True
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"ServerHandle(url={self.url!r}, running={not self._closed})"

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open += 1
        try:
            try:
                if self._open > _MAX_CONNECTIONS:
                    raise _BadRequest("server busy: too many open connections; retry shortly", 503)
                status, payload, linger = *(await self._handle(reader, writer)), False
            except _BadRequest as exc:
                status, payload, linger = exc.status, {"error": str(exc)}, exc.linger
            except (OSError, EOFError):
                raise
            except Exception:
                logger.exception("Prediction failed")
                status, payload, linger = 500, {"error": "internal error while classifying the image"}, False
            logger.debug("%s -> %d", writer.get_extra_info("peername"), status)
            writer.write(_response(status, payload))
            await asyncio.wait_for(writer.drain(), self._timeout)
            if linger:
                writer.write_eof()
                await asyncio.wait_for(_discard(reader, _MAX_DRAIN_BYTES), _LINGER_S)
        except (OSError, EOFError, asyncio.TimeoutError):
            pass  # the client went away, or lingered too long
        finally:
            self._open -= 1
            writer.close()

    async def _within(self, deadline: float, aw: Any) -> Any:
        try:
            return await asyncio.wait_for(aw, max(0.0, deadline - self._loop.time()))
        except asyncio.TimeoutError:
            raise _BadRequest(f"request not received within {self._timeout:g} s", 408, linger=False) from None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[int, Any]:
        deadline = self._loop.time() + self._timeout
        method, path, headers = await self._within(deadline, _read_head(reader))
        if path != "/" and not (path.startswith("/models/") and len(path) > len("/models/")):
            raise _BadRequest(f"no route {path!r}; use / or /models/<name>", 404)
        if method == "GET":
            return 200, self._predictor.describe()
        if method != "POST":
            raise _BadRequest(f"method {method} not allowed; POST an image", 405)
        length_header = (headers.get("Content-Length") or "").strip()
        if not length_header or "chunked" in headers.get("Transfer-Encoding", "").lower():
            raise _BadRequest("Content-Length required", 411)
        if not (length_header.isascii() and length_header.isdigit()):
            raise _BadRequest("invalid Content-Length")
        length = int(length_header)
        if length > self._max_body_bytes:
            raise _BadRequest(f"body of {length} bytes exceeds the limit of {self._max_body_bytes} bytes", 413,
                              linger=length <= self._max_body_bytes + _MAX_DRAIN_BYTES)
        if self._buffered + length > max(_MAX_BUFFERED_BYTES, self._max_body_bytes):
            raise _BadRequest("server busy: too many large requests in flight; retry shortly", 503)
        if headers.get("Expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._buffered += length
        try:
            body = await self._within(deadline, reader.readexactly(length))
            ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
            return await self._loop.run_in_executor(self._pool, self._classify, body, ctype)
        finally:
            self._buffered -= length

    def _classify(self, body: bytes, ctype: str) -> tuple[int, Any]:
        """Decode and classify one image (on a worker thread)."""
        top_k = self._predictor.top_k
        if ctype == "application/json" or (not ctype.startswith("image/") and body.lstrip()[:1] == b"{"):
            body, top_k = _parse_json_body(body, top_k)
        return 200, self._predictor.predict(self._predictor.decode(body, self._max_pixels), top_k)


def start_server(
    model: nn.Module,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    id2label: Mapping[int | str, str] | None = None,
    top_k: int = 5,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    workers: int = DEFAULT_WORKERS,
    allow_remote: bool = False,
) -> ServerHandle:
    """Serve a model in a background thread, Inference-API style (image classification).

    Images are read as the model reads its inputs: grayscale or RGB, resized to its config's
    ``image_size`` (32 when unset), normalised by its config's training statistics.

    Args:
        model (`nn.Module`):
            This library's model (``.logits`` of its output) or any module returning logits.
            It is switched to eval mode.
        host (`str`, *optional*, defaults to `"127.0.0.1"`):
            Address to listen on; non-loopback addresses need ``allow_remote=True``.
        port (`int`, *optional*, defaults to 0): Port; 0 picks a free one (see ``handle.port``).
        id2label (`Mapping[int, str]`, *optional*):
            Class names; defaults to ``model.config.id2label``, else ``"LABEL_<i>"``.
        top_k (`int`, *optional*, defaults to 5):
            Predictions per answer (at most the number of labels); a JSON request may ask for
            another count with ``"parameters": {"top_k": k}``.
        max_body_bytes (`int`, *optional*, defaults to 10 MiB): Larger requests get HTTP 413.
        max_pixels (`int`, *optional*, defaults to 4096²):
            Larger images get HTTP 413, refused from their header before any decoding.
        request_timeout (`float`, *optional*, defaults to 10.0):
            Seconds a client has to send its whole request (headers and body); slower ones get
            HTTP 408 and are disconnected.
        workers (`int`, *optional*, defaults to ``min(4, os.cpu_count())``):
            Threads that decode and classify; at most this many images are decoded at once,
            the other requests wait for a free one.
        allow_remote (`bool`, *optional*, defaults to `False`):
            Allow a non-loopback ``host``. The server has no authentication: only for tests.

    Returns:
        `ServerHandle`: ``.url``, ``.port``, ``.shutdown()``; usable as a context manager.

    Raises:
        ConfigError: A non-loopback host without ``allow_remote``, an address that cannot be
            listened on (port in use, ...), a model with other than 1 or 3 input channels, or
            bad options.

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
    server = ServerHandle(model, host=host, port=port, allow_remote=allow_remote, id2label=id2label, top_k=top_k,
                          max_body_bytes=max_body_bytes, max_pixels=max_pixels, request_timeout=request_timeout,
                          workers=workers)
    server._thread = threading.Thread(target=asyncio.run, args=(server._run(),), daemon=True,
                                      name=f"hf_lottery_verify-serve-{server.port}")
    server._thread.start()
    if not server._started.wait(60):
        raise RuntimeError(f"The server thread for {server.url} did not start; see the log.")
    logger.info("Serving %s at %s", type(model).__name__, server.url)
    return server


def serve(
    model: nn.Module | str | os.PathLike,
    *,
    port: int = 8000,
    on_ready: Callable[[str], None] | None = None,
    **options: Any,
) -> None:
    """Serve a model in the foreground until interrupted (``hf-lottery serve``).

    Args:
        model (`nn.Module`, `str` or `os.PathLike`):
            The model, or a folder / file / Hub repo id loaded with
            :func:`~hf_lottery_verify.load_model`.
        port (`int`, *optional*, defaults to 8000): Port; 0 picks a free one.
        on_ready (`Callable[[str], None]`, *optional*):
            Called with one line naming the URL once the server listens (the CLI prints it);
            the same line is always logged at INFO level.
        **options: ``host``, ``id2label``, ``top_k``, ``max_body_bytes``, ``max_pixels``,
            ``request_timeout``, ``workers``, ``allow_remote``: as in :func:`start_server`, with
            the same defaults.

    Raises:
        ConfigError: See :func:`start_server`.
    """
    if not isinstance(model, nn.Module):
        from .loading import load_model  # the public loader (any checkpoint layout)

        model = load_model(model)
    server = ServerHandle(model, port=port, **options)
    line = f"Serving {type(model).__name__} at {server.url} (POST an image to classify it; Ctrl-C stops)"
    logger.info(line)
    if on_ready is not None:
        on_ready(line)
    try:
        asyncio.run(server._run())
    except KeyboardInterrupt:
        logger.info("Stopped serving %s", server.url)
