"""The local Hub's HTTP/1.1 plumbing, as a hostile client meets it.

A deadline bounds each whole request (a slowloris client cannot hold a thread), bodies need a valid
``Content-Length`` under the hub's cap, header values never carry control characters, and an
answer given without reading the body closes the connection after a short lingering drain.
"""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, unquote

from .store import HubError

logger = logging.getLogger(__name__)
_RANGE_RE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.IGNORECASE)
_UNSAFE_HEADER_CHARS = re.compile(r"[^\x20-\x7e]")  # CR, LF, other controls and non-ASCII never reach a header


class _DeadlineReader(io.RawIOBase):
    """A socket's reads, each limited to what is left of the current request's deadline (no slowloris)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.deadline = sock, time.monotonic()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request's deadline passed")
        self.sock.settimeout(left)
        return self.sock.recv_into(buffer)


class _GuardedHandler(BaseHTTPRequestHandler):
    """Reading, answering and logging requests for :class:`LocalHub`; the subclass's ``_answer`` routes them."""

    protocol_version = "HTTP/1.1"
    server: Any  # the LocalHub's ThreadingHTTPServer (server.py builds it around this handler)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        logger.debug("local hub: " + format, *args)

    def setup(self) -> None:
        super().setup()
        self.hub = self.server.hub  # the LocalHub
        self.rfile.close()  # reads go through the deadline instead
        self._reader = _DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        """One request, from its first byte to the last byte of the answer, within ``hub.request_timeout``."""
        self._reader.deadline = time.monotonic() + self.hub.request_timeout
        super().handle_one_request()  # a TimeoutError closes the connection there

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def _dispatch(self) -> None:
        raw_path, _, raw_query = self.path.partition("?")
        self._logged, self._user, self._body = False, None, None
        self._query = dict(parse_qsl(raw_query, keep_blank_values=True))
        self._path = unquote(raw_path)
        try:
            self._answer(raw_path)
            if self._unread_body:
                self._linger()
        except OSError:  # the client went away, or lingered, or timed out: nothing left to answer
            self.close_connection = True
        finally:
            self._log(0, 0)

    def _answer(self, raw_path: str) -> None:
        raise NotImplementedError

    @property
    def _unread_body(self) -> bool:
        return self._body is None and self.command in ("POST", "PUT", "DELETE")

    def _linger(self) -> None:
        """FIN after the answer, then discard what the client still sends (2 s at most), so it reads the answer."""
        self._reader.deadline = min(self._reader.deadline, time.monotonic() + 2)
        self.connection.shutdown(socket.SHUT_WR)
        while self._reader.read(65536):
            pass

    def _log(self, status: int, bytes_sent: int) -> None:
        """Log this request once, before the client can see any answer (so tests never race the log)."""
        if not self._logged:
            self._logged = True
            self.hub._log.append({"method": self.command, "path": self._path, "query": self._query,
                                  "range": self.headers.get("Range"), "status": status, "bytes_sent": bytes_sent,
                                  "user": self._user})

    def _read_body(self, limit: int | None = None) -> bytes:
        """The request body: at most ``limit`` (default ``hub.max_body``) bytes, or 400/411/413."""
        limit = self.hub.max_body if limit is None else min(limit, self.hub.max_body)
        length = self.headers.get("Content-Length")
        if "Transfer-Encoding" in self.headers or (length is None and self.command in ("POST", "PUT")):
            raise HubError(411, "Content-Length required (chunked bodies are not accepted)")
        if length is None:
            return b""
        if not (length.isascii() and length.isdigit()):
            raise HubError(400, f"Invalid Content-Length: {length!r}")
        if int(length) > limit:
            raise HubError(413, f"Request body larger than {limit} bytes")
        data = self.rfile.read(int(length))
        if len(data) < int(length):
            raise ConnectionError("the client closed the connection in the middle of the body")
        return data

    def _send(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, _UNSAFE_HEADER_CHARS.sub("", str(value)))
        if self._unread_body:
            self.send_header("Connection", "close")  # an unread body would be read as the next request
        self.send_header("Content-Length", str(len(body)))
        send_body = self.command != "HEAD" and bool(body)
        self._log(status, len(body) if send_body else 0)
        self.connection.settimeout(max(self._reader.deadline - time.monotonic(), 1.0))  # sendall's total time
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _send_json(self, data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _send_error(self, error: HubError) -> None:
        headers = {"X-Error-Message": error.message, **error.headers}
        if error.code:
            headers["X-Error-Code"] = error.code
        self._send_json({"error": error.message, **error.extra}, error.status, headers)

    def _json(self) -> dict[str, Any]:
        data = json.loads(self._body or b"{}")  # not JSON: a ValueError, which the handler answers with 400
        if not isinstance(data, dict):
            raise HubError(400, "The JSON body must be an object")
        return data

    def _send_range(self, data: bytes, headers: dict[str, str]) -> None:
        requested = self.headers.get("Range")
        match = _RANGE_RE.fullmatch(requested) if requested and self.command == "GET" else None
        if match is None or match.group(1) == match.group(2) == "":
            self._send(200, data, headers)
            return
        size, first, last = len(data), match.group(1), match.group(2)
        start = int(first) if first else max(size - int(last), 0)
        end = min(int(last), size - 1) if first and last else size - 1
        if start >= size or start > end:
            self._send(416, b"", {**headers, "Content-Range": f"bytes */{size}"})
            return
        self._send(206, data[start: end + 1], {**headers, "Content-Range": f"bytes {start}-{end}/{size}"})
