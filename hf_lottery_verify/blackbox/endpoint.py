"""Querying an HTTP endpoint shaped like the Inference API's image-classification task: client, retries, budget.

One POST per image, sent as lossless PNG, answered by ``[{"label": ..., "score": ...}, ...]``.
Every request has a hard deadline and a capped body; retries back off exponentially (honouring
``Retry-After``); the environment's proxy settings are used for remote hosts. Only a dead
endpoint (no HTTP answer at all to the first request) raises :class:`EndpointError`.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import math
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .._version import __version__
from ..errors import EndpointError
from .images import encode_png
from .labels import _LabelMapper
from .result import _short, _Tally

MAX_RESPONSE_BYTES = 1 << 20  # an image-classification answer is a few hundred bytes


class _TransportError(Exception):
    """No HTTP answer: connection refused, timeout, reset, TLS or name resolution failure."""


class _Timeout(_TransportError):
    """No HTTP answer before the deadline."""


@dataclass
class _Response:
    status: int
    body: bytes | None  # None when the body was larger than the cap
    retry_after: float | None


def _is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 bracketed or not) is this machine (also the server's check)."""
    try:
        return host.lower() == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
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
        self.headers = {"Content-Type": "image/png", "Accept": "application/json",
                        "User-Agent": f"hf_lottery_verify/{__version__}", **(headers or {})}
        self.proxy = self._proxy()

    def _proxy(self) -> urllib.parse.SplitResult | None:
        """The environment's proxy for this URL (``http_proxy``/``https_proxy``/``no_proxy``)."""
        proxy = urllib.request.getproxies().get(self.scheme)
        if _is_loopback_host(self.host) or not proxy or urllib.request.proxy_bypass(self.host):
            return None
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return parts if parts.hostname else None

    def _connection(self) -> tuple[http.client.HTTPConnection, str, dict[str, str]]:
        """A connection to the endpoint, or to the proxy (CONNECT tunnel for https, absolute target for http)."""
        host, port = (self.host, self.port) if self.proxy is None else (self.proxy.hostname, self.proxy.port or 8080)
        if self.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, timeout=self.timeout, context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
        if self.proxy is None:
            return conn, self.target, self.headers
        proxy_headers = {}
        if self.proxy.username:
            creds = f"{urllib.parse.unquote(self.proxy.username)}:{urllib.parse.unquote(self.proxy.password or '')}"
            proxy_headers["Proxy-Authorization"] = "Basic " + base64.b64encode(creds.encode()).decode()
        if self.scheme == "https":
            conn.set_tunnel(self.host, self.port, headers=proxy_headers)
            return conn, self.target, self.headers
        host = f"[{self.host}]" if ":" in self.host else self.host
        return conn, f"http://{host}:{self.port}{self.target}", {**self.headers, **proxy_headers}

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
            chunks: list[bytes] = []
            size = 0
            while size <= self.max_response_bytes:
                chunk = resp.read(min(65536, self.max_response_bytes + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            if expired.is_set():
                raise _Timeout(f"no answer within {self.timeout:g} s")
            return _Response(resp.status, None if size > self.max_response_bytes else b"".join(chunks), retry_after)
        except ConnectionRefusedError as exc:
            raise _TransportError("connection refused") from exc
        except socket.gaierror as exc:
            raise _TransportError(f"cannot resolve host {self.host!r}") from exc
        except ssl.SSLError as exc:
            raise _TransportError(f"TLS error: {_short(str(exc), 80)}") from exc
        except (http.client.HTTPException, OSError) as exc:
            if expired.is_set() or isinstance(exc, TimeoutError):
                raise _Timeout(f"no answer within {self.timeout:g} s") from exc
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


def _top_label(body: bytes) -> tuple[Any, str | None]:
    """The top-scoring label of an Inference-API image-classification answer, or why there is none."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, f"non-JSON answer ({len(body)} bytes)"
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
        timed_out = False
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
                response, reason, timed_out = None, str(exc), isinstance(exc, _Timeout)
                continue
            any_answer = True
            if response.status == 429 or 500 <= response.status < 600:
                reason = f"HTTP {response.status}"
                continue
            break
        if response is None and not any_answer:
            raise EndpointError(
                f"Cannot reach the endpoint {url}: {reason} ({attempts} attempt{'s' * (attempts > 1)} in "
                f"{time.perf_counter() - t0:.1f} s). "
                + ("Pass a larger timeout= for a slow endpoint." if timed_out else
                   "Check the URL, that the server is running and that it is reachable from here."),
                url=url, reason=reason)
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
        answer, why = _top_label(response.body)
        if why is not None:
            tally.error(f"image {i}: {why}")
            continue
        mapper.record(tally, i, answer)

