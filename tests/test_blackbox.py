"""Black-box queries (hf_lottery_verify.blackbox) against models, callables and HTTP endpoints
served by hf_lottery_verify.serve or by small hostile test servers."""

from __future__ import annotations

import base64
import http.client
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
import torch

import hf_lottery_verify as hlv
from hf_lottery_verify.blackbox import EndpointError, QueryResult, encode_png, query_labels
from hf_lottery_verify.data import normalize
from hf_lottery_verify.serve import start_server

from .helpers import free_port

CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
HTTP_TIMEOUT = 10  # seconds, for the tests' own raw HTTP calls


def _diverse_model(*, in_chans: int = 3, id2label: dict[int, str] | None = None,
                   seed: int = 0) -> hlv.SparseResNetForImageClassification:
    """cifar_resnet8 whose classifier is re-drawn so random images get many different labels."""
    torch.manual_seed(seed)
    kwargs = {"id2label": id2label} if id2label else {"num_labels": 10}
    model = hlv.SparseResNetForImageClassification(
        hlv.SparseResNetConfig(arch="cifar_resnet8", in_chans=in_chans, image_mean=(0.5,) * in_chans,
                               image_std=(0.5,) * in_chans, **kwargs)).eval()
    probe = _images(32, in_chans=in_chans, seed=seed + 1)
    with torch.no_grad():
        tm = model.timm_model
        feats = tm.forward_head(tm.forward_features(normalize(probe, (0.5,) * in_chans, (0.5,) * in_chans)),
                                pre_logits=True)
        tm.fc.weight.normal_(0.0, 10.0, generator=torch.Generator().manual_seed(seed))
        tm.fc.bias.copy_(-tm.fc.weight @ feats.mean(0))
    return model


def _images(n: int, *, in_chans: int = 3, size: int = 32, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 256, (n, in_chans, size, size), generator=g).float()
    return (noise * torch.rand(n, in_chans, 1, 1, generator=g)).to(torch.uint8)


@pytest.fixture(scope="module")
def model() -> hlv.SparseResNetForImageClassification:
    return _diverse_model()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return _images(24)


@pytest.fixture(scope="module")
def served(model) -> Iterator:
    with start_server(model) as handle:
        yield handle


# --------------------------------------------------------------------------- hostile test servers


class _Counter:
    def __init__(self) -> None:
        self.n = 0
        self.paths: list[str] = []
        self.lock = threading.Lock()
        self.release = threading.Event()  # set at teardown so sleeping handlers exit promptly

    def hit(self, path: str) -> int:
        with self.lock:
            self.n += 1
            self.paths.append(path)
            return self.n


Responder = Callable[[int, "_Counter", BaseHTTPRequestHandler], None]


@contextmanager
def custom_server(respond: Responder) -> Iterator[tuple[str, _Counter]]:
    """A server whose POST handler is ``respond(request_number, counter, handler)``."""
    counter = _Counter()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            number = counter.hit(self.path)
            try:
                respond(number, counter, self)
            except OSError:
                pass  # the client gave up (timeouts are what some tests provoke)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", counter
    finally:
        counter.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def _reply(handler: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str = "application/json",
           headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", ctype)
    handler.send_header("Content-Length", str(len(body)))
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.end_headers()
    handler.wfile.write(body)


def _ok(label: str = "LABEL_3") -> bytes:
    return json.dumps([{"label": label, "score": 0.9}, {"label": "LABEL_0", "score": 0.1}]).encode()


def _request(url: str, method: str = "GET", body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, object]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=HTTP_TIMEOUT)
    try:
        conn.request(method, parts.path or "/", body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data)
    finally:
        conn.close()


# --------------------------------------------------------------------------- agreement across suspect kinds


def test_endpoint_model_and_callable_agree(model, images, served) -> None:
    in_memory = query_labels(model, images, batch_size=7)
    assert in_memory.kind == "model"
    assert in_memory.failed == 0 and in_memory.queried == len(images)
    assert len(set(in_memory.labels.tolist())) >= 3, "the test model should give varied labels"

    def wrapper(batch: torch.Tensor) -> list[int]:
        with torch.no_grad():
            return model(normalize(batch, (0.5,) * 3, (0.5,) * 3)).logits.argmax(1).tolist()

    via_callable = query_labels(wrapper, images)
    over_http = query_labels(served.url, images)
    assert via_callable.kind == "callable" and over_http.kind == "endpoint"
    assert torch.equal(via_callable.labels, in_memory.labels)
    assert torch.equal(over_http.labels, in_memory.labels)
    assert over_http.queried == len(images) and over_http.failed == 0 and over_http.skipped == 0
    assert over_http.labels.dtype == torch.int64
    assert over_http.answers[0] == f"LABEL_{int(in_memory.labels[0])}"
    json.dumps(over_http.to_dict())  # JSON-ready

    via_models_path = query_labels(served.url + "models/someone/suspect", images[:4])
    assert torch.equal(via_models_path.labels, in_memory.labels[:4])


def test_model_suspect_keeps_training_mode_and_uses_config_normalisation(images) -> None:
    model = _diverse_model()
    reference = query_labels(model, images, image_mean=0.2, image_std=0.3).labels
    model.config.image_mean = [0.2, 0.2, 0.2]
    model.config.image_std = [0.3, 0.3, 0.3]
    model.train()
    assert torch.equal(query_labels(model, images).labels, reference)
    assert model.training
    with start_server(model) as handle:
        assert torch.equal(query_labels(handle.url, images[:6]).labels, reference[:6])


def test_grayscale_model_converts_rgb_images_like_the_server() -> None:
    model = _diverse_model(in_chans=1)
    rgb = _images(8, size=16)  # 3 channels and 16 px: converted to L and resized to 32 on both sides
    in_memory = query_labels(model, rgb)
    with start_server(model) as handle:
        assert torch.equal(query_labels(handle.url, rgb).labels, in_memory.labels)


def test_json_base64_inputs(model, images, served) -> None:
    expected = int(query_labels(model, images[:1]).labels[0])
    b64 = base64.b64encode(encode_png(images[0])).decode()
    status, answer = _request(served.url, "POST", json.dumps({"inputs": b64}).encode(),
                              {"Content-Type": "application/json"})
    assert status == 200
    assert isinstance(answer, list) and len(answer) == 5
    scores = [item["score"] for item in answer]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    assert answer[0]["label"] == f"LABEL_{expected}"

    # a data URL, a top_k parameter, and no content type at all
    body = json.dumps({"inputs": "data:image/png;base64," + b64, "parameters": {"top_k": 2}}).encode()
    status, answer = _request(served.url + "models/x", "POST", body)
    assert status == 200 and len(answer) == 2 and answer[0]["label"] == f"LABEL_{expected}"

    # raw bytes with an image content type
    status, answer = _request(served.url, "POST", encode_png(images[0]), {"Content-Type": "image/png"})
    assert status == 200 and answer[0]["label"] == f"LABEL_{expected}"


def test_custom_labels_map_through_label2id(images) -> None:
    id2label = dict(enumerate(CLASS_NAMES))
    label2id = {name: i for i, name in enumerate(CLASS_NAMES)}
    model = _diverse_model(id2label=id2label)
    expected = query_labels(model, images).labels
    with start_server(model) as handle:  # labels from model.config.id2label
        named = query_labels(handle.url, images, label2id=label2id)
        assert torch.equal(named.labels, expected)
        assert named.answers[0] == CLASS_NAMES[int(expected[0])]
        # without label2id the class names cannot be mapped: answered by the server, failed for us
        unmapped = query_labels(handle.url, images[:3])
        assert unmapped.failed == 3 and unmapped.answered == 0
        assert (unmapped.labels == -1).all() and "unknown label" in unmapped.errors[0]

    upper = {i: name.upper() for i, name in enumerate(CLASS_NAMES)}
    with start_server(model, id2label=upper, top_k=3) as handle:  # explicit id2label wins
        status, answer = _request(handle.url, "POST", encode_png(images[0]), {"Content-Type": "image/png"})
        assert status == 200 and len(answer) == 3 and answer[0]["label"] == upper[int(expected[0])]
        shouted = query_labels(handle.url, images, label2id={v: k for k, v in upper.items()})
        assert torch.equal(shouted.labels, expected)


def test_callable_answers_are_checked(images) -> None:
    label2id = {"cat": 3, "dog": 5, "truck": 9}
    names = query_labels(lambda batch: ["cat", "dog", "LABEL_7", "8", "emu", 2, True, None][: len(batch)],
                         images[:8], label2id=label2id)
    assert names.labels.tolist() == [3, 5, 7, 8, -1, 2, -1, -1]
    assert names.failed == 3 and names.queried == 8

    def boom(batch: torch.Tensor) -> list[int]:
        raise RuntimeError("suspect crashed")

    crashed = query_labels(boom, images, batch_size=10)
    assert crashed.failed == len(images) and (crashed.labels == -1).all()
    assert "RuntimeError" in crashed.errors[0] and len(crashed.errors) == 3  # one per batch

    short = query_labels(lambda batch: [0], images[:4])
    assert short.failed == 4 and "1 labels for 4 images" in short.errors[0]
    as_tensor = query_labels(lambda batch: torch.arange(len(batch)), images[:4])
    assert as_tensor.labels.tolist() == [0, 1, 2, 3]
    huge = query_labels(lambda batch: [10**30] * len(batch), images[:2])
    assert huge.failed == 2 and "out of range" in huge.errors[0]
    limited = query_labels(lambda batch: [0] * len(batch), images, budget=5, batch_size=4)
    assert limited.queried == 5 and limited.skipped == len(images) - 5
    assert limited.labels[:5].tolist() == [0] * 5 and (limited.labels[5:] == -1).all()


# --------------------------------------------------------------------------- hostile or broken endpoints


def test_dead_endpoint_raises_quickly(images) -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    with pytest.raises(EndpointError, match="connection refused") as info:
        query_labels(url, images)  # default timeout, retries and backoff
    assert url in str(info.value) and info.value.url == url
    assert isinstance(info.value, OSError) and isinstance(info.value, hlv.HfLotteryError)


@pytest.mark.parametrize("url", ["http://", "http://host:notaport/", "ftp://example.com/"])
def test_malformed_urls(url, images) -> None:
    with pytest.raises((EndpointError, TypeError)):
        query_labels(url, images[:1])


def test_non_json_answers_count_as_failed(images) -> None:
    with custom_server(lambda n, c, h: _reply(h, 200, b"<html>hello</html>", "text/html")) as (url, counter):
        result = query_labels(url, images[:5])
    assert result.failed == 5 and result.queried == 5 == counter.n
    assert (result.labels == -1).all() and "non-JSON" in result.errors[0]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (json.dumps([{"label": "banana", "score": 0.9}]).encode(), "unknown label"),
        (json.dumps([{"label": "LABEL_99", "score": 0.9}]).encode(), "out of range"),
        (json.dumps([{"label": "LABEL_99999999999999999999", "score": 1}]).encode(), "unknown label"),
        (json.dumps({"error": "model is loading"}).encode(), "endpoint error"),
        (json.dumps({"label": 3}).encode(), "expected {label, score}"),
        (json.dumps([]).encode(), "empty answer"),
        (json.dumps([1, 2]).encode(), "expected {label, score}"),
        (json.dumps("LABEL_1").encode(), "expected a JSON list"),
        (b'[{"label": "LABEL_1", "score": NaN}]', "not a finite number"),
        (json.dumps([{"label": ["x"], "score": 1}]).encode(), "label of type"),
        (b"[" * 100_000, "non-JSON"),
        (b"\xff\xfe", "non-JSON"),
    ],
)
def test_wrong_answers_count_as_failed(body, reason, images) -> None:
    with custom_server(lambda n, c, h: _reply(h, 200, body)) as (url, _):
        result = query_labels(url, images[:2], label2id={f"LABEL_{i}": i for i in range(10)})
    assert result.failed == 2 and (result.labels == -1).all()
    assert reason in result.errors[0]


def test_answer_shapes_that_are_understood(images) -> None:
    nested = json.dumps([[{"label": "LABEL_1", "score": 0.2}, {"label": "LABEL_4", "score": 0.7}]]).encode()
    with custom_server(lambda n, c, h: _reply(h, 200, nested)) as (url, _):
        assert query_labels(url, images[:2]).labels.tolist() == [4, 4]
    plain = json.dumps([{"label": "6", "score": 1}]).encode()
    with custom_server(lambda n, c, h: _reply(h, 200, plain)) as (url, _):
        assert query_labels(url, images[:2]).labels.tolist() == [6, 6]


def test_huge_answers_are_not_read(images) -> None:
    big = b"[" + b" " * 5000 + _ok()[1:]
    with custom_server(lambda n, c, h: _reply(h, 200, big)) as (url, _):
        result = query_labels(url, images[:2], max_response_bytes=1000)
    assert result.failed == 2 and "larger than 1000 bytes" in result.errors[0]

    def chunked(n: int, c: _Counter, h: BaseHTTPRequestHandler) -> None:  # no Content-Length
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.end_headers()
        h.wfile.write(big)
        h.close_connection = True

    with custom_server(chunked) as (url, _):
        result = query_labels(url, images[:2], max_response_bytes=1000)
    assert result.failed == 2 and "larger than 1000 bytes" in result.errors[0]


def test_slow_endpoint_times_out(images) -> None:
    def slow(n: int, c: _Counter, h: BaseHTTPRequestHandler) -> None:
        c.release.wait(5)
        _reply(h, 200, _ok())

    with custom_server(slow) as (url, counter):
        with pytest.raises(EndpointError, match="no answer within 0.5 s"):
            query_labels(url, images[:3], timeout=0.5, retries=0)
        assert counter.n == 1

    def slow_after_first(n: int, c: _Counter, h: BaseHTTPRequestHandler) -> None:
        if n > 1:
            c.release.wait(5)
        _reply(h, 200, _ok())

    with custom_server(slow_after_first) as (url, counter):
        result = query_labels(url, images[:3], timeout=0.3, retries=0)
    assert result.labels.tolist() == [3, -1, -1]
    assert result.failed == 2 and result.queried == 3 and "no answer within 0.3 s" in result.errors[0]


def test_trickling_endpoint_hits_the_hard_deadline(images) -> None:
    def trickle(n: int, c: _Counter, h: BaseHTTPRequestHandler) -> None:
        if n == 1:
            _reply(h, 200, _ok())
            return
        h.send_response(200)
        h.send_header("Content-Length", "1000")
        h.end_headers()
        for _ in range(50):  # one byte every 0.1 s: each read is quick, the whole is not
            h.wfile.write(b" ")
            h.wfile.flush()
            if c.release.wait(0.1):
                return

    with custom_server(trickle) as (url, _):
        result = query_labels(url, images[:2], timeout=0.5, retries=0)
    assert result.labels.tolist() == [3, -1] and "within 0.5 s" in result.errors[0]


def test_retries_on_5xx_and_gives_up_after_consecutive_errors(images) -> None:
    with custom_server(lambda n, c, h: _reply(h, 503 if n == 1 else 200, _ok())) as (url, counter):
        result = query_labels(url, images[:2], backoff=0.01)
    assert result.labels.tolist() == [3, 3] and result.queried == 3 == counter.n and result.failed == 0

    with custom_server(lambda n, c, h: _reply(h, 500, b'{"error": "down"}')) as (url, counter):
        result = query_labels(url, images, retries=1, backoff=0.01, max_consecutive_errors=3)
    assert counter.n == 6 == result.queried  # 3 images x 2 attempts, then it gives up
    assert result.failed == 3 and result.skipped == len(images) - 3
    assert "HTTP 500 after 2 attempts" in result.errors[0] and "gave up" in result.errors[-1]

    with custom_server(lambda n, c, h: _reply(h, 404, b"not found", "text/plain")) as (url, counter):
        result = query_labels(url, images[:3], backoff=0.01)
    assert counter.n == 3 and result.failed == 3 and "HTTP 404" in result.errors[0]  # 4xx: no retry


def test_budget_caps_requests(images) -> None:
    with custom_server(lambda n, c, h: _reply(h, 200, _ok())) as (url, counter):
        result = query_labels(url, images[:8], budget=3)
    assert counter.n == 3 == result.queried
    assert result.labels.tolist() == [3, 3, 3] + [-1] * 5
    assert result.skipped == 5 and result.failed == 0

    with custom_server(lambda n, c, h: _reply(h, 503, b"{}")) as (url, counter):  # retries count too
        result = query_labels(url, images[:8], budget=4, backoff=0.01)
    assert counter.n == 4 == result.queried
    assert result.failed == 2 and result.skipped == 6

    with custom_server(lambda n, c, h: _reply(h, 200, _ok())) as (url, counter):
        result = query_labels(url, images[:8], budget=0)
    assert counter.n == 0 and result.skipped == 8


def test_environment_proxy_is_used_for_remote_hosts(images, monkeypatch) -> None:
    with custom_server(lambda n, c, h: _reply(h, 200, _ok("LABEL_5"))) as (proxy_url, counter):
        for name in ("no_proxy", "NO_PROXY", "HTTP_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("http_proxy", proxy_url)
        result = query_labels("http://suspect.invalid/models/x?rev=1", images[:2])
    assert result.labels.tolist() == [5, 5]
    assert counter.paths == ["http://suspect.invalid:80/models/x?rev=1"] * 2


def test_authorization_header_is_sent(images) -> None:
    seen: list[str | None] = []

    def record(n: int, c: _Counter, h: BaseHTTPRequestHandler) -> None:
        seen.append(h.headers.get("Authorization"))
        _reply(h, 200, _ok())

    with custom_server(record) as (url, _):
        query_labels(url, images[:1], headers={"Authorization": "Bearer test-token"})
    assert seen == ["Bearer test-token"]


# --------------------------------------------------------------------------- the server itself


def test_health_check_and_routes(model, served) -> None:
    status, info = _request(served.url)
    assert status == 200
    assert info["model_type"] == "sparse_resnet" and info["num_labels"] == 10
    assert info["labels"][:2] == ["LABEL_0", "LABEL_1"] and info["image_size"] == 32
    assert _request(served.url + "models/a/b")[0] == 200
    assert _request(served.url + "nope")[0] == 404
    assert _request(served.url + "nope", "POST", b"x", {"Content-Type": "image/png"})[0] == 404
    assert served.port > 0 and served.url == f"http://127.0.0.1:{served.port}/"


@pytest.mark.parametrize(
    ("body", "ctype", "message"),
    [
        (b"definitely not an image", "image/png", "cannot decode"),
        (b"", "image/png", "empty body"),
        (b"{not json", "application/json", "not valid JSON"),
        (b'{"inputs": "***"}', "application/json", "not valid base64"),
        (b'{"inputs": 3}', "application/json", "base64-encoded image string"),
        (b'{"inputs": "https://example.com/cat.png"}', "application/json", "not fetched"),
        (b'{"image": "abc"}', "application/json", "expected JSON"),
        (b'{"inputs": "aGVsbG8=", "parameters": {"top_k": 0}}', "application/json", "top_k"),
        (json.dumps({"inputs": base64.b64encode(b"hello").decode()}).encode(), "application/json", "cannot decode"),
    ],
)
def test_bad_requests_get_400(body, ctype, message, served) -> None:
    status, answer = _request(served.url, "POST", body, {"Content-Type": ctype})
    assert status == 400 and message in answer["error"]


def test_body_limit_and_missing_length(model, images) -> None:
    png = encode_png(images[0])
    with start_server(model, max_body_bytes=len(png) - 1) as handle:
        status, answer = _request(handle.url, "POST", png, {"Content-Type": "image/png"})
        assert status == 413 and "exceeds the limit" in answer["error"]
        conn = http.client.HTTPConnection("127.0.0.1", handle.port, timeout=HTTP_TIMEOUT)
        try:
            conn.putrequest("POST", "/")
            conn.endheaders()
            resp = conn.getresponse()
            assert resp.status == 411
        finally:
            conn.close()


def test_refuses_non_loopback_hosts(model) -> None:
    with pytest.raises(ValueError, match="allow_remote"):
        start_server(model, host="0.0.0.0")


def test_server_shutdown_is_idempotent_and_frees_the_port(model, images) -> None:
    handle = start_server(model)
    url = handle.url
    assert query_labels(url, images[:1]).answered == 1
    handle.shutdown()
    handle.shutdown()
    with pytest.raises(EndpointError):
        query_labels(url, images[:1], retries=0)


def test_concurrent_requests_are_answered(model, images, served) -> None:
    expected = query_labels(model, images).labels
    results: dict[int, QueryResult] = {}

    def worker(k: int) -> None:
        results[k] = query_labels(served.url, images[k * 6:(k + 1) * 6])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert torch.equal(torch.cat([results[k].labels for k in range(4)]), expected)


def test_invalid_arguments(model, images) -> None:
    with pytest.raises(ValueError, match="uint8"):
        query_labels(model, images.float())
    with pytest.raises(TypeError, match="http"):
        query_labels("some/repo", images)
    with pytest.raises(TypeError):
        query_labels(42, images)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        query_labels(model, images, timeout=0)
    with pytest.raises(ValueError, match="image_mean"):
        query_labels(model, images, image_mean=[0.5, 0.5])


def test_huggingface_hub_inference_client_reads_the_server(model, images, served) -> None:
    from huggingface_hub import InferenceClient

    expected = int(query_labels(model, images[:1]).labels[0])
    client = InferenceClient(timeout=HTTP_TIMEOUT)
    out = client.image_classification(encode_png(images[0]), model=served.url + "models/suspect", top_k=3)
    assert len(out) == 3 and out[0].label == f"LABEL_{expected}"
