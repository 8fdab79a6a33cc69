"""The Prometheus source against a hostile address (audit S1, S2b/c, S7, B3).

Whoever may create an LLMDeployment chooses ``spec.canary.analysis.prometheus.address``;
these tests aim the reader at a real local HTTP server that misbehaves, and check that
the operator refuses before sending, follows no redirect, reads within its deadline and
byte cap, and copies nothing the server wrote into a message or a log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from llmcanary.analysis.histogram import Histogram
from llmcanary.analysis.sequential import block_seconds
from llmcanary.analysis.types import ArmReading, LatencyReading
from llmcanary.api.spec import AnalysisSpec
from llmcanary.config import OperatorConfig
from llmcanary.sources.base import MetricsUnavailable, Scope
from llmcanary.sources.prometheus import (
    ALLOWLIST_SETTING,
    MAX_ANSWER_BYTES,
    PrometheusReader,
    display_address,
)

MARKER = "INTERNAL-ADMIN-PANEL token-hint=abc123"
SECRET = "s3cret-pw"
SCOPE = Scope("ns", "chat", "llm", "canary", "r2", timedelta(seconds=30))
# A whole-second end, so that a range query's instants are the ones a test writes.
SCOPE_END = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)
# Only the request and error counts: two instant queries, no latency.
COUNTS = AnalysisSpec.model_validate(
    {"interval": "10s", "criteria": [{"metric": "errorRate", "maxPercent": 5}]}
)
# One latency from a template (a scalar query in milliseconds), then the counts.
LATENCY = AnalysisSpec.model_validate(
    {
        "interval": "10s",
        "criteria": [{"metric": "e2eLatency", "maxIncreasePercent": 20}],
        "queries": {"e2eLatency": 'max(x{{arm="{arm}",quantile="{quantile}"}})'},
    }
)
# The default preset (tritonVLLM): histogram queries come first.
HISTOGRAMS = AnalysisSpec.model_validate({"interval": "10s"})

Respond = Callable[[BaseHTTPRequestHandler, threading.Event], None]


class Server:
    """A real HTTP server on 127.0.0.1 that answers every GET with ``respond``."""

    def __init__(self, respond: Respond) -> None:
        self.requests: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.stop = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.requests.append(self.path)
                outer.headers.append(dict(self.headers))
                # OSError: the reader hung up, which is what these tests want.
                with contextlib.suppress(OSError):
                    respond(self, outer.stop)

            def log_message(self, *_: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[Respond], Server]]:
    servers: list[Server] = []

    def start(respond: Respond) -> Server:
        servers.append(Server(respond))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def answer(
    status: int, body: bytes, content_type: str = "application/json", **headers: str
) -> Respond:
    def respond(handler: BaseHTTPRequestHandler, _: threading.Event) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)

    return respond


def vector(*values: Any, labels: dict[str, str] | None = None) -> bytes:
    result = [{"metric": labels or {}, "value": [1700000000.0, v]} for v in values]
    return json.dumps(
        {"status": "success", "data": {"resultType": "vector", "result": result}}
    ).encode()


def failure(
    source: PrometheusReader, analysis: AnalysisSpec = COUNTS
) -> tuple[MetricsUnavailable, float]:
    started = time.monotonic()
    with pytest.raises(MetricsUnavailable) as raised:
        source.read(SCOPE, analysis)
    return raised.value, time.monotonic() - started


def assert_not_logged(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    """Neither the messages nor any field of any log record (extras included)."""
    for record in caplog.records:
        text = record.getMessage() + repr(vars(record))
        for secret in secrets:
            assert secret not in text, f"{secret!r} logged: {text}"


# --- the address ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "{url}/admin/users?x=",
        "{url}/?",
        "{url}#frag",
        "{url}/admin#",
        f"http://admin:{SECRET}@127.0.0.1:{{port}}",
        f"http://{SECRET}@127.0.0.1:{{port}}/",
        "{url}/a/../admin",
        "{url}//other.example/x",
        "{url}/a%2f..%2fadmin",
        "ftp://127.0.0.1:{port}",
        "http://127.0.0.1:99999",
        "http:///api",
    ],
)
def test_an_address_that_is_not_a_plain_base_url_is_refused_before_any_request(
    serve: Callable[[Respond], Server], caplog: pytest.LogCaptureFixture, address: str
) -> None:
    caplog.set_level(logging.DEBUG)
    server = serve(answer(200, vector("1")))
    url = address.format(url=server.url, port=server.port)
    error, _ = failure(PrometheusReader(url, timeout_seconds=1))
    assert error.reason == "refused", error
    assert server.requests == []
    assert SECRET not in str(error)
    assert "\n" not in str(error)
    assert_not_logged(caplog, SECRET)


def test_a_host_off_the_allowlist_is_refused_with_what_to_do_and_no_request(
    serve: Callable[[Respond], Server],
) -> None:
    server = serve(answer(200, vector("1")))
    for url in (server.url, f"http://127.1:{server.port}", f"http://localhost:{server.port}"):
        source = PrometheusReader(url, timeout_seconds=1, allowed_hosts=["*.svc", "127.0.0.2"])
        error, _ = failure(source)
        assert error.reason == "refused"
        assert "not in the operator's allowlist" in str(error)
        assert f"ask the platform team to add it to {ALLOWLIST_SETTING}" in str(error)
        assert ALLOWLIST_SETTING == "LLMCANARY_PROMETHEUS_ALLOWED_HOSTS"
    assert server.requests == []
    # Listed literally, the address is read.
    reading = PrometheusReader(server.url, allowed_hosts=["127.0.0.1"]).read(SCOPE, COUNTS)
    assert (reading.requests, reading.errors) == (1.0, 1.0)
    assert len(server.requests) == 2


def test_the_allowlist_defaults_to_in_cluster_service_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert OperatorConfig().prometheus_allowed_hosts == ["*.svc", "*.svc.cluster.local"]
    monkeypatch.setenv(ALLOWLIST_SETTING, '["127.0.0.1", "prom.example"]')
    assert OperatorConfig().prometheus_allowed_hosts == ["127.0.0.1", "prom.example"]
    # The CRD's default address passes the default allowlist (no request is sent here:
    # the reader only decides; a refusal would say so at read time).
    default = AnalysisSpec().prometheus.address
    source = PrometheusReader(default, allowed_hosts=["*.svc", "*.svc.cluster.local"])
    assert not isinstance(source._endpoint, str)


@pytest.mark.parametrize(
    ("address", "shown"),
    [
        ("http://u:p@prom.svc:9090", "http://prom.svc:9090"),
        ("https://user:pw@prom.svc/prefix/", "https://prom.svc/prefix"),
        ("http://u:pw/x@prom.svc", "http://prom.svc"),
        ("u:pw@prom.svc", "prom.svc"),
        ("http://prom.svc:9090/", "http://prom.svc:9090"),
    ],
)
def test_an_address_is_shown_without_credentials(address: str, shown: str) -> None:
    assert display_address(address) == shown
    assert PrometheusReader(address).url == shown


def test_queries_go_to_the_fixed_api_path_under_the_prefix(
    serve: Callable[[Respond], Server],
) -> None:
    server = serve(answer(200, vector("3")))
    source = PrometheusReader(f"{server.url}/prom/", timeout_seconds=2)
    reading = source.read(SCOPE, COUNTS)
    assert reading.requests == 3.0
    for path in server.requests:
        parts = urlsplit(path)
        assert parts.path == "/prom/api/v1/query"
        params = parse_qs(parts.query)
        assert set(params) == {"query", "timeout"}
        assert params["timeout"] == ["2s"]
    assert server.headers[0]["Host"] == f"127.0.0.1:{server.port}"


# --- what comes back ------------------------------------------------------------------


def test_a_redirect_is_not_followed(serve: Callable[[Respond], Server]) -> None:
    other = serve(answer(200, vector("1")))
    server = serve(answer(302, b"", Location=f"{other.url}/api/v1/query?query=up"))
    error, _ = failure(PrometheusReader(server.url, timeout_seconds=1))
    assert error.reason == "http"
    assert "HTTP 302" in str(error) and "redirects are not followed" in str(error)
    assert len(server.requests) == 1
    assert other.requests == []


@pytest.mark.parametrize(
    ("status", "body", "content_type", "shown"),
    [
        (403, MARKER.encode(), "text/html", "HTTP 403"),
        (403, f"<html><body>{MARKER}</body></html>".encode(), "text/html", "HTTP 403"),
        (
            400,
            json.dumps({"status": "error", "errorType": "bad_data", "error": MARKER}).encode(),
            "application/json",
            "HTTP 400 (bad_data): Prometheus refused the query (a PromQL parse error",
        ),
        (
            422,
            json.dumps({"status": "error", "errorType": MARKER, "error": MARKER}).encode(),
            "application/json",
            "HTTP 422",
        ),
        (
            500,
            json.dumps({"status": "error", "errorType": "x" * 33, "error": "e"}).encode(),
            "application/json",
            "HTTP 500",
        ),
    ],
)
def test_an_error_answer_shows_its_status_never_its_text(
    serve: Callable[[Respond], Server],
    caplog: pytest.LogCaptureFixture,
    status: int,
    body: bytes,
    content_type: str,
    shown: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    server = serve(answer(status, body, content_type))
    error, _ = failure(PrometheusReader(server.url, timeout_seconds=1))
    assert error.reason == "http"
    message = str(error)
    assert shown in message
    assert MARKER not in message and "abc123" not in message and "x" * 33 not in message
    assert message.endswith(shown) or "bad_data" in message
    assert_not_logged(caplog, MARKER, "abc123", "x" * 33)


def trickle(head: bool) -> Respond:
    """One byte every 0.1 s, forever: in the headers, or in a 200's body."""

    def respond(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
        if head:
            handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
            while not stop.is_set():
                handler.wfile.write(b"X")
                handler.wfile.flush()
                time.sleep(0.1)
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.end_headers()
        handler.wfile.write(b'{"status": "success", "data": ')
        while not stop.is_set():
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(0.1)

    return respond


@pytest.mark.parametrize("head", [False, True], ids=["body", "headers"])
def test_a_trickling_answer_ends_at_the_deadline(
    serve: Callable[[Respond], Server], head: bool
) -> None:
    server = serve(trickle(head))
    error, took = failure(PrometheusReader(server.url, timeout_seconds=0.5))
    assert error.reason == "timeout"
    assert "no answer within 0.5s" in str(error)
    assert took < 0.75, f"a 0.5 s timeout took {took:.2f}s"
    assert len(server.requests) == 1  # the reading stops at the first query


def endless(declared: bool) -> Respond:
    """A 200 larger than the cap: declared so (Content-Length), or streamed without end."""

    def respond(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        if declared:
            handler.send_header("Content-Length", str(4 * MAX_ANSWER_BYTES))
        handler.end_headers()
        chunk = b"[" * 65536
        while not stop.is_set():
            handler.wfile.write(chunk)

    return respond


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "streamed"])
def test_an_answer_over_the_byte_cap_is_refused_with_memory_bounded(
    serve: Callable[[Respond], Server], declared: bool
) -> None:
    server = serve(endless(declared))
    tracemalloc.start()
    try:
        error, took = failure(PrometheusReader(server.url, timeout_seconds=10))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.reason == "answer"
    assert f"larger than {MAX_ANSWER_BYTES // 2**20} MiB" in str(error)
    assert MAX_ANSWER_BYTES == 8 * 2**20
    assert peak < 3 * MAX_ANSWER_BYTES, f"peak {peak / 2**20:.1f} MiB"
    assert took < 10


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b"[]",
        b"null",
        f"<html><title>{MARKER}</title></html>".encode(),
        b'{"status": "success"}',  # no data (audit PoC 2: KeyError)
        b'{"status": "success", "data": {}}',
        b'{"status": "error", "data": {"resultType": "vector", "result": []}}',
        json.dumps(
            {"status": "success", "data": {"resultType": "vector", "result": {MARKER: 1}}}
        ).encode(),
        json.dumps({"status": "success", "data": {"resultType": MARKER, "result": []}}).encode(),
        vector([1, {"x": MARKER}]),
        b'{"status": "success", "data": {"resultType": "vector", "result": [{"metric": {},'
        b' "value": [1, {"x": "' + MARKER.encode() + b'"}]}]}}',
        b'{"status": "success", "data": {"resultType": "vector", "result": [{"metric": {},'
        b' "value": [1, "1", "2"]}]}}',
        b'{"status": "success", "data": {"resultType": "vector", "result": ["'
        + MARKER.encode()
        + b'"]}}',
        b'{"status": "success", "data": {"resultType": "vector", "result": [{"metric": {},'
        b' "value": [1, true]}]}}',
        b'{"status": "success", "data": {"resultType": "vector", "result": [{"metric": {},'
        b' "value": [1, ' + b"9" * 400 + b"]}]}}",  # an int beyond float: OverflowError
        b'{"status": "success", "data": {"resultType": "matrix", "result": []}}',
        b"[" * 200_000,  # RecursionError in the JSON decoder
        b"\xff\xfe" + MARKER.encode(),
    ],
)
def test_an_answer_of_the_wrong_shape_is_unavailable_without_its_content(
    serve: Callable[[Respond], Server], caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    server = serve(answer(200, body))
    for analysis in (COUNTS, HISTOGRAMS):
        error, _ = failure(PrometheusReader(server.url, timeout_seconds=2), analysis)
        assert error.reason == "answer", error
        said = ("unexpected answer shape", "a series without a bucket bound (le) or value")
        assert any(s in str(error) for s in said), error
        assert MARKER not in str(error) and "abc123" not in str(error)
    assert_not_logged(caplog, MARKER, "abc123")


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz" + MARKER.encode() + b"\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}",  # then hangs up
        b"SSH-2.0-" + MARKER.encode() + b"\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 200 + b"\r\n",
    ],
    ids=["bad-chunk", "short-body", "not-http", "too-many-headers"],
)
def test_a_broken_http_answer_is_unavailable_without_its_content(
    serve: Callable[[Respond], Server], caplog: pytest.LogCaptureFixture, raw: bytes
) -> None:
    caplog.set_level(logging.DEBUG)

    def respond(handler: BaseHTTPRequestHandler, _: threading.Event) -> None:
        handler.wfile.write(raw)
        handler.wfile.flush()
        handler.close_connection = True

    server = serve(respond)
    error, took = failure(PrometheusReader(server.url, timeout_seconds=2))
    assert error.reason in ("answer", "connection"), error
    assert "unreadable answer" in str(error) or "cannot connect" in str(error), error
    assert MARKER not in str(error)
    assert took < 2
    assert_not_logged(caplog, MARKER)


@pytest.mark.parametrize("value", ["NaN", "+Inf", "-Inf", "nan", "inf"])
def test_nan_and_infinity_are_missing(serve: Callable[[Respond], Server], value: str) -> None:
    server = serve(answer(200, vector(value)))
    reading = PrometheusReader(server.url, timeout_seconds=2).read(SCOPE, COUNTS)
    assert (reading.requests, reading.errors, reading.samples) == (None, None, None)


def test_bare_json_nan_and_infinity_literals_are_missing(
    serve: Callable[[Respond], Server],
) -> None:
    body = vector("0").replace(b'"0"', b"NaN")
    server = serve(answer(200, body))
    reading = PrometheusReader(server.url, timeout_seconds=2).read(SCOPE, COUNTS)
    assert reading.requests is None
    server = serve(answer(200, vector("0").replace(b'"0"', b"Infinity")))
    reading = PrometheusReader(server.url, timeout_seconds=2).read(SCOPE, COUNTS)
    assert reading.requests is None


@pytest.mark.parametrize("value", ["1e308", "1.7e308", "1e16", "-5", "-0.5"])
def test_a_count_out_of_range_is_refused(serve: Callable[[Respond], Server], value: str) -> None:
    server = serve(answer(200, vector(value)))
    error, _ = failure(PrometheusReader(server.url, timeout_seconds=2))
    assert error.reason == "answer"
    assert "a count below 0 or above 1e15" in str(error)
    assert value not in str(error)


@pytest.mark.parametrize("value", ["2e9", "1e308", "-1"])
def test_a_latency_out_of_range_is_refused(serve: Callable[[Respond], Server], value: str) -> None:
    server = serve(answer(200, vector(value)))
    error, _ = failure(PrometheusReader(server.url, timeout_seconds=2), LATENCY)
    assert error.reason == "answer"
    assert "a latency below 0 or above 1e9 ms" in str(error)


def test_in_range_numbers_are_read(serve: Callable[[Respond], Server]) -> None:
    server = serve(answer(200, vector("1e15")))
    reading = PrometheusReader(server.url, timeout_seconds=2).read(SCOPE, COUNTS)
    assert reading.requests == 1e15 and reading.samples == 2 * 10**15
    server = serve(answer(200, vector("250.5")))
    reading = PrometheusReader(server.url, timeout_seconds=2).read(SCOPE, LATENCY)
    assert reading.latency["e2eLatency"].quantile(0.95) == 250.5


def test_several_series_are_counted_not_shown(
    serve: Callable[[Respond], Server], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = json.dumps(
        {
            "status": "success",
            "data": {
                "resultType": "vector",
                "result": [
                    {"metric": {"secret": f"{MARKER}-{i}"}, "value": [1, "1"]} for i in range(5)
                ],
            },
        }
    ).encode()
    server = serve(answer(200, body))
    error, _ = failure(PrometheusReader(server.url, timeout_seconds=2))
    assert error.reason == "answer"
    assert "returned 5 series; aggregate it to one number per arm" in str(error)
    assert MARKER not in str(error) and "secret" not in str(error)
    assert_not_logged(caplog, MARKER)


def buckets(*series: tuple[str, str]) -> bytes:
    result = [{"metric": {"le": le, "pod": "p"}, "value": [1, v]} for le, v in series]
    return json.dumps(
        {"status": "success", "data": {"resultType": "vector", "result": result}}
    ).encode()


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (buckets(("100", "1e308"), ("+Inf", "1e308")), "a count below 0 or above 1e15"),
        (buckets(("100", "-5"), ("+Inf", "1")), "a count below 0 or above 1e15"),
        (buckets(("1e308", "1"), ("+Inf", "2")), "duplicate bucket bounds (le)"),
        (buckets(("1e12", "1"), ("+Inf", "2")), "a latency below 0 or above 1e9 ms"),
        (buckets(("NaN", "1"), ("+Inf", "2")), "a series without a bucket bound (le)"),
        (buckets((MARKER, "1"), ("+Inf", "2")), "a series without a bucket bound (le)"),
        (buckets(("100", "1"), ("100", "2"), ("+Inf", "3")), "duplicate bucket bounds (le)"),
        (buckets(("100", "1")), "a histogram needs its +Inf bucket"),
    ],
)
def test_a_bad_histogram_is_refused_without_its_labels(
    serve: Callable[[Respond], Server], body: bytes, said: str
) -> None:
    server = serve(answer(200, body))
    error, _ = failure(PrometheusReader(server.url, timeout_seconds=2), HISTOGRAMS)
    assert error.reason == "answer"
    assert said in str(error)
    assert MARKER not in str(error) and "1e308" not in str(error)


def test_infinite_histogram_counts_are_missing_not_overflow(
    serve: Callable[[Respond], Server],
) -> None:
    histogram = answer(200, buckets(("100", "+Inf"), ("+Inf", "+Inf")))
    count = answer(200, vector("10"))

    def respond(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
        query = parse_qs(urlsplit(handler.path).query)["query"][0]
        (histogram if "_bucket" in query else count)(handler, stop)

    server = serve(respond)
    reading = PrometheusReader(server.url, timeout_seconds=2).read(SCOPE, HISTOGRAMS)
    assert reading.latency["e2eLatency"].pods == {}
    assert reading.latency["e2eLatency"].samples is None


def test_samples_of_absurd_readings_are_unknown_not_overflow() -> None:
    """B3: 1.7e308 + 1.7e308 is inf, and round(inf) raises OverflowError."""
    assert ArmReading(requests=1.7e308, errors=1.7e308).samples is None
    assert ArmReading(requests=1e20, errors=None).samples is None
    assert ArmReading(requests=float("nan"), errors=None).samples is None
    assert ArmReading(requests=10.4, errors=2.0).samples == 12
    huge = Histogram((100.0, float("inf")), (1.7e308, 1.7e308))
    assert LatencyReading(pods={"a": huge, "b": huge}).samples is None


def test_the_blocks_range_query_is_bounded_and_checked_too(
    serve: Callable[[Respond], Server],
) -> None:
    """A window long enough to cut into blocks: one query_range per histogram signal."""
    valid = answer(200, buckets(("100", "5"), ("+Inf", "10")))
    count = answer(200, vector("10"))
    matrix = {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [{"metric": {"le": "+Inf", MARKER: "x"}, "values": [[1, "1e308"]]}],
        },
    }
    ranges = answer(200, json.dumps(matrix).encode())

    def respond(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
        parts = urlsplit(handler.path)
        query = parse_qs(parts.query)["query"][0]
        if parts.path.endswith("/query_range"):
            ranges(handler, stop)
        else:
            (valid if "_bucket" in query else count)(handler, stop)

    server = serve(respond)
    scope = Scope("ns", "chat", "llm", "canary", "r2", timedelta(minutes=10))
    started = time.monotonic()
    with pytest.raises(MetricsUnavailable) as raised:
        PrometheusReader(server.url, timeout_seconds=2).read(scope, HISTOGRAMS)
    assert time.monotonic() - started < 5
    assert raised.value.reason == "answer"
    assert "blocks query: the answer holds a count below 0 or above 1e15" in str(raised.value)
    assert MARKER not in str(raised.value)
    ranged = [p for p in server.requests if urlsplit(p).path == "/api/v1/query_range"]
    params = parse_qs(urlsplit(ranged[0]).query)
    assert params["start"][0].isdigit() and params["end"][0].isdigit()


def test_a_quantile_template_is_read_per_block_one_value_per_instant(
    serve: Callable[[Respond], Server],
) -> None:
    """A latency template over a window long enough to cut: one query_range with
    ``{window}`` the block's length; series that take turns (a replaced pod's labels)
    make one arm's blocks, two answering at one instant are refused."""
    end = SCOPE_END
    block = block_seconds(600, 10)  # 10 minutes cut into 10 blocks of 60 s
    instants = [end.timestamp() - 600 + block * (i + 1) for i in range(600 // block)]
    templated = AnalysisSpec.model_validate(
        {
            "interval": "10s",
            "criteria": [{"metric": "e2eLatency", "maxIncreasePercent": 20}],
            "queries": {"e2eLatency": 'max(x{{arm="{arm}",q="{quantile}"}}[{window}])'},
        }
    )

    def series(pod: str, points: list[float]) -> dict[str, Any]:
        return {"metric": {"pod": pod}, "values": [[t, "120"] for t in points]}

    def matrix(*result: dict[str, Any]) -> Respond:
        body = {"status": "success", "data": {"resultType": "matrix", "result": list(result)}}
        return answer(200, json.dumps(body).encode())

    def reader(ranges: Respond) -> tuple[Server, PrometheusReader]:
        count = answer(200, vector("1000"))

        def respond(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
            path = urlsplit(handler.path).path
            (ranges if path.endswith("/query_range") else count)(handler, stop)

        server = serve(respond)
        return server, PrometheusReader(server.url, timeout_seconds=2)

    scope = Scope("ns", "chat", "llm", "canary", "r2", timedelta(minutes=10), end=end)
    server, source = reader(matrix(series("a", instants[:5]), series("b", instants[6:])))
    reading = source.read(scope, templated).latency["e2eLatency"]
    assert reading.quantile_blocks == {0.95: (120.0,) * 5 + (None,) + (120.0,) * 4}
    ranged = [p for p in server.requests if urlsplit(p).path == "/api/v1/query_range"]
    params = parse_qs(urlsplit(ranged[0]).query)
    assert params["query"] == [f'max(x{{arm="canary",q="0.95"}}[{block}s])']
    assert params["step"] == [f"{block}s"]

    _, source = reader(matrix(series("a", instants), series("b", instants[:1])))
    with pytest.raises(MetricsUnavailable, match="2 series at one instant"):
        source.read(scope, templated)
