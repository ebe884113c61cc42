"""The inference server (hf_lottery_verify.serve) under load and abuse, and its command line.

Routes, request formats and agreement with in-memory queries are tested with the black-box
client in test_blackbox.py; here: many clients at once, slow clients, oversized input, and
the errors of a server that cannot start.
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator

import pytest
import torch

from hf_lottery_verify.blackbox import encode_png, query_labels
from hf_lottery_verify.cli import main
from hf_lottery_verify.errors import ConfigError
from hf_lottery_verify.serve import start_server

from .helpers import make_model

TIMEOUT = 60  # seconds: a generous bound for answers that should come at once


@pytest.fixture(scope="module")
def model():
    return make_model().eval()


@pytest.fixture(scope="module")
def png() -> bytes:
    return encode_png(torch.randint(0, 256, (3, 32, 32), generator=torch.Generator().manual_seed(0),
                                    dtype=torch.uint8))


@pytest.fixture(scope="module")
def quick(model) -> Iterator:
    """A server with a short request deadline and two workers."""
    with start_server(model, request_timeout=0.5, workers=2) as handle:
        yield handle


def _post(port: int, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request("POST", "/", body, {"Content-Type": "image/png", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _server_threads(port: int) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(f"hf_lottery_verify-serve-{port}")]


def test_200_concurrent_clients_are_all_answered(model, png) -> None:
    with start_server(model, workers=2) as handle:
        barrier = threading.Barrier(200)
        statuses: list[int | str] = []

        def client() -> None:
            barrier.wait()
            try:
                statuses.append(_post(handle.port, png)[0])
            except OSError as exc:
                statuses.append(type(exc).__name__)

        clients = [threading.Thread(target=client) for _ in range(200)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(TIMEOUT * 2)
        assert statuses == [200] * 200
        assert len(_server_threads(handle.port)) == 3  # the event loop and two workers, not one per client


@pytest.mark.parametrize("stage", ["headers", "body"])
def test_slow_client_is_cut_off_at_the_deadline_while_others_are_served(quick, png, stage) -> None:
    slow = socket.create_connection(("127.0.0.1", quick.port), timeout=TIMEOUT)
    with slow:
        if stage == "body":
            slow.sendall(b"POST / HTTP/1.1\r\nContent-Type: image/png\r\nContent-Length: 100\r\n\r\n")
        slow.settimeout(0.1)
        answer, t0 = b"", time.monotonic()
        while not answer and time.monotonic() - t0 < TIMEOUT:
            try:
                slow.sendall(b"x")  # one byte every 0.1 s: each read is quick, the whole request never ends
                answer = slow.recv(4096)
            except TimeoutError:
                assert query_labels(quick.url, torch.zeros(1, 3, 32, 32, dtype=torch.uint8)).answered == 1
            except ConnectionError:
                break
        assert answer.startswith(b"HTTP/1.1 408")
        slow.settimeout(TIMEOUT)
        while slow.recv(4096):  # then the server closes the connection
            pass
    assert _post(quick.port, png)[0] == 200


def test_slow_clients_do_not_take_threads(quick, png) -> None:
    before = len(_server_threads(quick.port))
    assert before >= 1  # the event loop's thread
    sockets = [socket.create_connection(("127.0.0.1", quick.port), timeout=TIMEOUT) for _ in range(50)]
    try:
        for s in sockets:
            s.sendall(b"GET / HTTP/1.1\r\n")
        assert _post(quick.port, png)[0] == 200
        assert len(_server_threads(quick.port)) <= max(before, 3)
    finally:
        for s in sockets:
            s.close()


def _png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header announces width × height pixels, with almost no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_oversized_images_are_refused_from_their_header(model, quick, png) -> None:
    # 8000 × 8000 pixels announced: decoding would allocate 190 MB and then fail on the missing data (400)
    status, answer = _post(quick.port, _png_header_claiming(8000, 8000))
    assert status == 413 and "8000×8000" in answer["error"]
    with start_server(model, max_pixels=32 * 32 - 1) as handle:
        status, answer = _post(handle.port, png)
        assert status == 413 and "limit of 1023 pixels" in answer["error"]


def test_oversized_bodies_are_refused_before_reading(quick) -> None:
    with socket.create_connection(("127.0.0.1", quick.port), timeout=TIMEOUT) as s:
        s.sendall(b"POST / HTTP/1.1\r\nContent-Type: image/png\r\nContent-Length: 1000000000000\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 413")
    with socket.create_connection(("127.0.0.1", quick.port), timeout=TIMEOUT) as s:
        s.sendall(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 431")


def test_bad_options_are_typed_errors(model) -> None:
    with pytest.raises(ConfigError, match="allow_remote"):
        start_server(model, host="0.0.0.0")
    with pytest.raises(ConfigError, match="workers"):
        start_server(model, workers=0)
    with pytest.raises(ConfigError, match="port"):
        start_server(model, port=70000)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        with pytest.raises(ConfigError, match="Cannot listen on 127.0.0.1"):
            start_server(model, port=taken.getsockname()[1])


@pytest.fixture(scope="module")
def model_dir(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("served") / "model"
    model.save_pretrained(path)
    return path


@pytest.mark.parametrize("flags", [["--host", "0.0.0.0"], ["--port", "70000"], ["--top-k", "0"], "taken",
                                   ["--workers", "0"], ["--request-timeout", "0"], ["--max-pixels", "0"],
                                   ["--max-body-bytes", "-1"]])
def test_cli_refuses_with_one_line_and_exit_2(model_dir, capsys, flags) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        if flags == "taken":
            flags = ["--port", str(taken.getsockname()[1])]
        assert main(["serve", str(model_dir), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hf-lottery serve: error: ") and err.count("\n") == 1
    if flags[0] in ("--workers", "--request-timeout", "--max-pixels", "--max-body-bytes"):  # reaches the server
        assert f"{flags[0][2:].replace('-', '_')} must be positive" in err
