"""Dependency health probes: the host allowlist, and probes against real local servers.

The servers are ``http.server`` in a thread on ``127.0.0.1`` (and ``127.0.0.2``, which
Linux answers on the loopback too) on free ports; no cluster is needed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fake_kube import FakeKube

from llmcanary.allowlist import IPAddress
from llmcanary.api.spec import Dependency
from llmcanary.kube.errors import Forbidden
from llmcanary.preflight.dependencies import (
    address_refusal,
    check_url,
    host_allowed,
    model_ready,
    probe,
    probe_all,
    service_of,
    service_refusal,
)

DEFAULT = ["*.svc", "*.svc.cluster.local"]
LOCAL = ["127.0.0.1"]
SECRET = "sk-live-DO-NOT-STORE-4f9a8c7e2b1d"

# --- the allowlist -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "patterns", "allowed"),
    [
        ("triton.ml.svc", DEFAULT, True),
        ("redis.cache.svc.cluster.local", DEFAULT, True),
        ("a.b.c.svc", DEFAULT, True),  # fnmatch's * spans dots
        ("example.com", DEFAULT, False),
        ("svc", DEFAULT, False),
        ("evil.com.svc.example.com", DEFAULT, False),
        ("kv.ml.svc", ["kv.*.svc"], True),
        ("kv.ml.svc", ["db.*.svc"], False),
        ("anything.at.all", ["*"], True),
        # case
        ("Triton.ML.SVC", DEFAULT, True),
        ("triton.ml.svc", ["*.SVC"], True),
        # trailing dots: one names the same host, nothing more
        ("triton.ml.svc.", DEFAULT, True),
        ("triton.ml.svc", ["*.svc."], True),
        ("triton.ml.svc..", DEFAULT, False),
        ("evil.com.", DEFAULT, False),
        (".", DEFAULT, False),
        ("", DEFAULT, False),
        # not host names at all
        ("evil.com\\.svc", DEFAULT, False),
        ("evil.com%2esvc", DEFAULT, False),
        ("ev il.svc", DEFAULT, False),
        ("trïton.ml.svc", DEFAULT, False),
        ("a..b.svc", DEFAULT, False),
        # IP literals: allowed only when a pattern is that address
        ("10.0.0.1", DEFAULT, False),
        ("10.0.0.1", ["*"], False),
        ("10.0.0.1", ["10.0.0.*"], False),
        ("10.0.0.1", ["10.0.0.1"], True),
        ("10.0.0.1.", ["10.0.0.1"], True),
        ("10.0.0.2", ["10.0.0.1"], False),
        ("169.254.169.254", DEFAULT, False),
        # ... in every spelling a resolver accepts
        ("127.1", ["*"], False),
        ("127.1", ["127.0.0.1"], True),
        ("2130706433", ["*"], False),
        ("0x7f.0.0.1", ["*"], False),
        ("017700000001", ["*"], False),
        # IPv6
        ("::1", DEFAULT, False),
        ("::1", ["*"], False),
        ("::1", ["::1"], True),
        ("[::1]", ["::1"], True),
        ("0:0:0:0:0:0:0:1", ["[::1]"], True),
        ("::ffff:10.0.0.1", ["10.0.0.1"], False),
        ("fd00::1", ["fd00::*"], False),
    ],
)
def test_host_allowed(host: str, patterns: list[str], allowed: bool) -> None:
    assert host_allowed(host, patterns) is allowed


def test_check_url_says_what_to_do() -> None:
    assert check_url("http://triton.ml.svc:8000/v2/health/ready", DEFAULT) is None
    assert check_url("tcp://redis.cache.svc:6379", DEFAULT) is None
    assert check_url("http://10.0.0.1/", DEFAULT) == (
        "host 10.0.0.1 is not in the operator's allowlist"
        " (LLMCANARY_PREFLIGHT_ALLOWED_HOSTS: *.svc, *.svc.cluster.local);"
        " ask the platform team to allow it"
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://svc.ns.svc@evil.com/",
        "http://svc.ns.svc:8000@evil.com/",
        "http://user:pass@evil.com/x.svc",
        "https://evil.com#@x.ns.svc/",
        "http://evil.com?.ns.svc",
        "http://evil.com/.ns.svc",
    ],
)
def test_the_real_host_is_checked(url: str) -> None:
    refusal = check_url(url, DEFAULT)
    assert refusal is not None
    assert refusal.startswith("host evil.com is not in the operator's allowlist")


def test_userinfo_naming_an_allowed_host_is_fine_and_not_the_host() -> None:
    assert check_url("http://evil.com@svc.ns.svc/", DEFAULT) is None


def test_check_url_ipv6_and_bad_urls() -> None:
    assert check_url("http://[::1]:8000/", ["::1"]) is None
    refused = check_url("http://[::1]:8000/", DEFAULT)
    assert refused is not None and refused.startswith("host ::1 is not")
    assert check_url("tcp://redis.cache.svc", DEFAULT) == "a tcp:// URL needs a port"
    assert check_url("ftp://files.ns.svc/", DEFAULT) is not None
    assert check_url("http://x.svc:99999/", DEFAULT) is not None


# --- local servers -------------------------------------------------------------------


class Server:
    """A threaded HTTP server on ``host``:free port whose paths do what the tests need."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.hits: list[str] = []
        self.release = threading.Event()
        self.body_unread = threading.Event()
        self.other: Server | None = None  # where /to-other redirects
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, status: int, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                server.hits.append(self.path)
                path = self.path
                if path == "/ok":
                    self._answer(200)
                elif path == "/unavailable":
                    self._answer(503)
                elif path == "/slow":
                    server.release.wait(5)
                    self._answer(200)
                elif path.startswith("/delay/"):
                    time.sleep(float(path.rsplit("/", 1)[1]))
                    self._answer(200)
                elif path == "/trickle":  # a status line that never ends, a byte at a time
                    with contextlib.suppress(OSError):
                        for byte in b"HTTP/1.1 200 OK ........................................":
                            if server.release.wait(0.05):
                                break
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                elif path == "/to-ok":
                    self._answer(302, {"Location": "/ok"})
                elif path == "/to-other":
                    assert server.other is not None
                    self._answer(302, {"Location": f"{server.other.url}/ok"})
                elif path == "/to-evil":
                    self._answer(301, {"Location": "http://evil.example.com/steal"})
                elif path == "/to-userinfo":
                    self._answer(307, {"Location": f"http://{server.host}@evil.example.com/"})
                elif path == "/to-metadata":
                    self._answer(302, {"Location": "http://169.254.169.254/latest/meta-data/"})
                elif path == "/to-alias":
                    self._answer(302, {"Location": "http://alias.ml.svc/"})
                elif path == "/loop":
                    self._answer(302, {"Location": "/loop"})
                elif path == "/secret":
                    body = (f"token={SECRET}\n" * 2_000_000).encode()  # ~80 MB
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    try:
                        self.wfile.write(body)
                    except OSError:
                        server.body_unread.set()  # the client hung up before reading it
                elif path.startswith("/v2/health/ready"):
                    self._answer(200)
                elif path.startswith("/v2/models/"):
                    self._answer(503 if "not-ready" in path else 200)
                else:
                    self._answer(404)

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.host = host
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.fixture
def other() -> Iterator[Server]:
    s = Server("127.0.0.2")
    yield s
    s.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def dep(url: str, *, timeout_ms: int = 1000, expect: int = 200, name: str = "d") -> Dependency:
    return Dependency(name=name, url=url, timeout_milliseconds=timeout_ms, expect_status=expect)


# --- HTTP ----------------------------------------------------------------------------


def test_ok(server: Server) -> None:
    result = probe(dep(f"{server.url}/ok", name="triton"), LOCAL)
    assert result.ok, result
    assert result.name == "triton"
    assert result.status_code == 200
    assert result.message == "HTTP 200"
    assert result.latency_ms is not None and 0 <= result.latency_ms < 1000
    assert server.hits == ["/ok"]


def test_expected_status_other_than_200(server: Server) -> None:
    result = probe(dep(f"{server.url}/unavailable", expect=503), LOCAL)
    assert result.ok and result.status_code == 503


def test_wrong_status_is_retried_and_reported(server: Server) -> None:
    result = probe(dep(f"{server.url}/unavailable"), LOCAL, retries=2)
    assert not result.ok
    assert result.status_code == 503
    assert result.message == "HTTP 503, expected 200 (2 tries)"
    assert server.hits == ["/unavailable", "/unavailable"]


def test_slow_times_out_within_tries_x_timeout(server: Server) -> None:
    started = time.monotonic()
    result = probe(dep(f"{server.url}/slow", timeout_ms=300), LOCAL, retries=2)
    elapsed = time.monotonic() - started
    assert not result.ok
    assert result.message == "timed out after 300 ms (2 tries)"
    assert result.status_code is None
    assert result.latency_ms is not None and 280 <= result.latency_ms < 600
    assert server.hits == ["/slow", "/slow"]
    assert elapsed < 2 * 0.3 + 1


def test_three_tries(server: Server) -> None:
    started = time.monotonic()
    result = probe(dep(f"{server.url}/slow", timeout_ms=200), LOCAL, retries=3)
    assert result.message == "timed out after 200 ms (3 tries)"
    assert len(server.hits) == 3
    assert time.monotonic() - started < 3 * 0.2 + 1


def test_a_trickling_server_cannot_stretch_a_try(server: Server) -> None:
    # Each byte comes well inside the socket timeout; the try's deadline still holds.
    started = time.monotonic()
    result = probe(dep(f"{server.url}/trickle", timeout_ms=400), LOCAL, retries=2)
    elapsed = time.monotonic() - started
    assert result.message == "timed out after 400 ms (2 tries)"
    assert elapsed < 2 * 0.4 + 1


def test_a_slow_answer_inside_the_timeout_is_ok(server: Server) -> None:
    result = probe(dep(f"{server.url}/delay/0.2", timeout_ms=2000), LOCAL)
    assert result.ok
    assert result.latency_ms is not None and result.latency_ms >= 190


def test_connection_refused() -> None:
    started = time.monotonic()
    result = probe(dep(f"http://127.0.0.1:{closed_port()}/", timeout_ms=500), LOCAL)
    assert not result.ok
    assert result.message == "connection refused (2 tries)"
    assert result.status_code is None
    assert time.monotonic() - started < 2 * 0.5 + 1


def test_one_try_says_no_count() -> None:
    result = probe(dep(f"http://127.0.0.1:{closed_port()}/"), LOCAL, retries=1)
    assert result.message == "connection refused"


def test_disallowed_host_is_never_contacted() -> None:
    result = probe(dep("http://10.0.0.1:8000/"), DEFAULT)
    assert not result.ok
    assert result.latency_ms is None and result.status_code is None
    assert result.message.startswith("host 10.0.0.1 is not in the operator's allowlist")


def test_local_server_refused_without_its_pattern(server: Server) -> None:
    result = probe(dep(f"{server.url}/ok"), DEFAULT)
    assert not result.ok and "127.0.0.1 is not in the operator's allowlist" in result.message
    assert server.hits == []


# --- redirects -----------------------------------------------------------------------


def test_redirect_on_the_same_host_is_followed(server: Server) -> None:
    result = probe(dep(f"{server.url}/to-ok"), LOCAL)
    assert result.ok, result
    assert result.message == "HTTP 200 after 1 redirect"
    assert server.hits == ["/to-ok", "/ok"]


def test_redirect_to_an_allowed_host_is_followed(server: Server, other: Server) -> None:
    server.other = other
    result = probe(dep(f"{server.url}/to-other"), ["127.0.0.1", "127.0.0.2"])
    assert result.ok, result
    assert other.hits == ["/ok"]


def test_redirect_off_the_allowlist_is_refused(server: Server, other: Server) -> None:
    server.other = other
    result = probe(dep(f"{server.url}/to-other"), LOCAL)
    assert not result.ok
    assert result.status_code == 302
    assert result.message.startswith("HTTP 302 redirect to 127.0.0.2 refused: host 127.0.0.2")
    assert "(2 tries)" not in result.message  # a refusal is not retried
    assert other.hits == []
    assert server.hits == ["/to-other"]


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        ("/to-evil", "evil.example.com"),
        ("/to-userinfo", "evil.example.com"),
        ("/to-metadata", "169.254.169.254"),
    ],
)
def test_redirects_to_outside_hosts_are_refused(server: Server, path: str, refused: str) -> None:
    result = probe(dep(f"{server.url}{path}"), LOCAL)
    assert not result.ok
    assert f"redirect to {refused} refused" in result.message
    assert "LLMCANARY_PREFLIGHT_ALLOWED_HOSTS" in result.message


def test_redirect_hops_are_limited(server: Server) -> None:
    result = probe(dep(f"{server.url}/loop"), LOCAL)
    assert not result.ok
    assert result.message == "more than 3 redirects"
    assert server.hits == ["/loop"] * 4


def test_expected_3xx_is_not_followed(server: Server) -> None:
    result = probe(dep(f"{server.url}/to-ok", expect=302), LOCAL)
    assert result.ok and result.status_code == 302
    assert server.hits == ["/to-ok"]


# --- bodies --------------------------------------------------------------------------


def test_a_body_is_never_read_or_stored(server: Server) -> None:
    result = probe(dep(f"{server.url}/secret"), LOCAL)
    assert result.ok
    assert SECRET not in result.model_dump_json()
    assert SECRET not in repr(result)
    # ~80 MB cannot sit in the socket buffers: the server's write fails because the
    # probe hung up after the headers.
    assert server.body_unread.wait(5)


def test_a_non_http_answer_is_not_quoted() -> None:
    # http.client's BadStatusLine quotes what it read; the message must not.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def answer() -> None:
            for _ in range(2):
                conn, _ = listener.accept()
                with conn:
                    conn.recv(4096)
                    conn.sendall(f"{SECRET}\r\n\r\n".encode())

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        result = probe(dep(f"http://127.0.0.1:{port}/"), LOCAL)
        thread.join(5)
    assert not result.ok
    assert result.message == "the answer is not HTTP (2 tries)"
    assert SECRET not in result.model_dump_json()


# --- TCP -----------------------------------------------------------------------------


def test_tcp_ok(server: Server) -> None:
    result = probe(dep(f"tcp://127.0.0.1:{server.port}"), LOCAL)
    assert result.ok and result.message == "connected"
    assert result.status_code is None and result.latency_ms is not None


def test_tcp_refused() -> None:
    result = probe(dep(f"tcp://127.0.0.1:{closed_port()}", timeout_ms=300), LOCAL)
    assert not result.ok and result.message == "connection refused (2 tries)"


def test_tcp_allowlist() -> None:
    result = probe(dep("tcp://10.96.0.1:443"), DEFAULT)
    assert not result.ok and "10.96.0.1 is not in the operator's allowlist" in result.message


# --- many at once --------------------------------------------------------------------


def test_probe_all_is_concurrent_and_keeps_order(server: Server) -> None:
    deps = [dep(f"{server.url}/delay/0.4", name=f"slow-{i}") for i in range(5)]
    deps.insert(2, dep("http://10.0.0.1/", name="refused"))
    deps.append(dep(f"{server.url}/unavailable", name="down"))
    started = time.monotonic()
    results = probe_all(deps, LOCAL, retries=1)
    elapsed = time.monotonic() - started
    assert [r.name for r in results] == [d.name for d in deps]
    assert [r.ok for r in results] == [True, True, False, True, True, True, False]
    assert elapsed < 1.4  # one after the other: 2 s
    assert probe_all([], LOCAL) == []


# --- the canary's own Triton -----------------------------------------------------------


def test_model_ready(server: Server, other: Server) -> None:
    pods = [("llm-canary-0", server.url), ("llm-canary-1", f"{other.url}/")]
    results = model_ready(pods, "tiny-llm", 1.0)
    assert [(r.name, r.ok, r.status_code) for r in results] == [
        ("canary/llm-canary-0/health", True, 200),
        ("canary/llm-canary-0/model", True, 200),
        ("canary/llm-canary-1/health", True, 200),
        ("canary/llm-canary-1/model", True, 200),
    ]
    assert sorted(server.hits) == ["/v2/health/ready", "/v2/models/tiny-llm/ready"]


def test_model_not_ready(server: Server) -> None:
    results = model_ready([("p", server.url)], "not-ready", 1.0)
    assert [(r.ok, r.message) for r in results] == [
        (True, "HTTP 200"),
        (False, "HTTP 503, expected 200"),
    ]


def test_model_ready_unreachable_pod_and_quoted_name(server: Server) -> None:
    results = model_ready(
        [("gone", f"http://127.0.0.1:{closed_port()}"), ("p", server.url)], "a/b c", 0.5
    )
    assert [r.ok for r in results] == [False, False, True, True]
    assert results[0].message == "connection refused"
    assert "/v2/models/a%2Fb%20c/ready" in server.hits


# --- *.svc is a name, not a place: the Service behind it --------------------------------


def service(
    name: str,
    namespace: str = "ml",
    *,
    selector: dict[str, str] | None = None,
    external: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"ports": [{"port": 80}]}
    if selector is not None:
        spec["selector"] = selector
    if external is not None:
        spec = {"type": "ExternalName", "externalName": external}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


@pytest.fixture
def kube() -> FakeKube:
    fake = FakeKube()
    fake.add(service("features", selector={"app": "features"}))
    fake.add(service("alias", external="metadata.google.internal"))
    fake.add(service("handmade"))  # no selector: Endpoints written by hand
    fake.add(service("db", "infra", selector={"app": "db"}))
    return fake


@pytest.mark.parametrize(
    ("host", "found"),
    [
        ("features.ml.svc", ("ml", "features")),
        ("features.ml.svc.cluster.local", ("ml", "features")),
        ("Features.ML.svc.cluster.local.", ("ml", "features")),
        ("features.ml.svc.corp.example", ("ml", "features")),  # another cluster domain
        ("db-0.db.infra.svc.cluster.local", ("infra", "db")),  # a pod of a headless Service
        ("svc.ml.svc", ("ml", "svc")),  # a Service named svc
        ("example.com", None),
        ("10.0.0.1", None),
        ("svcs.ml.example", None),
    ],
)
def test_service_of(host: str, found: tuple[str, str] | None) -> None:
    assert service_of(host) == found


@pytest.mark.parametrize("host", ["features.svc", "a.b.c.d.svc", "svc", "x.svc.cluster.local"])
def test_service_of_a_name_it_cannot_place(host: str) -> None:
    # Shorter names are completed by the operator's own search path (its namespace).
    refused = service_of(host)
    assert isinstance(refused, str)
    assert "does not name a Service as SERVICE.NAMESPACE.svc" in refused


def test_a_service_with_a_selector_may_be_probed(kube: FakeKube) -> None:
    assert service_refusal("features.ml.svc", kube, DEFAULT) is None
    assert service_refusal("features.ml.svc.cluster.local", kube, DEFAULT) is None
    assert service_refusal("db-0.db.infra.svc", kube, DEFAULT) is None  # another namespace


def test_an_external_name_service_is_refused(kube: FakeKube) -> None:
    refused = service_refusal("alias.ml.svc", kube, DEFAULT)
    assert refused is not None
    assert refused.startswith("Service ml/alias is an ExternalName Service")
    assert "metadata.google.internal" not in refused  # what it aliases is not shown


def test_a_service_without_selector_is_refused(kube: FakeKube) -> None:
    refused = service_refusal("handmade.ml.svc", kube, DEFAULT)
    assert refused is not None
    assert refused.startswith("Service ml/handmade has no selector")
    assert "list handmade.ml.svc itself in LLMCANARY_PREFLIGHT_ALLOWED_HOSTS" in refused


def test_a_missing_service_is_refused(kube: FakeKube) -> None:
    assert service_refusal("nothing.ml.svc", kube, DEFAULT) == "Service ml/nothing does not exist"


def test_a_host_listed_by_name_is_the_platform_teams_choice(kube: FakeKube) -> None:
    listed = [*DEFAULT, "handmade.ml.svc", "alias.ml.svc.cluster.local."]
    assert service_refusal("handmade.ml.svc", kube, listed) is None
    assert service_refusal("alias.ml.svc.cluster.local", kube, listed) is None
    # ... by name only: a wildcard is no such choice.
    assert service_refusal("handmade.ml.svc", kube, ["handmade.*.svc"]) is not None


class Denying:
    """An API that refuses to read Services (a namespace the operator does not serve)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        raise self.error

    def list(
        self, api_version: str, kind: str, namespace: str, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        raise self.error


def test_a_service_the_operator_may_not_read_is_refused() -> None:
    refused = service_refusal(
        "db.infra.svc", Denying(Forbidden("get", "Service", "infra")), DEFAULT
    )
    assert refused is not None
    assert refused.startswith("the operator may not read Service infra/db")


def test_other_api_errors_are_raised_so_the_preflight_is_tried_again() -> None:
    with pytest.raises(ConnectionError):
        service_refusal("db.infra.svc", Denying(ConnectionError("api down")), DEFAULT)


# --- where a name resolves -------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("10.96.0.10", None),  # a ClusterIP
        ("10.244.1.7", None),  # a pod
        ("192.168.1.1", None),
        ("2001:db8::1", None),
        ("127.0.0.1", "a loopback address"),
        ("127.3.2.1", "a loopback address"),
        ("::1", "a loopback address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("169.254.169.254", "a cloud metadata address"),
        ("64:ff9b::a9fe:a9fe", "a cloud metadata address"),  # NAT64 of 169.254.169.254
        ("::ffff:169.254.169.254", "a cloud metadata address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("100.100.100.200", "a cloud metadata address"),
        ("169.254.170.2", "a cloud metadata address"),
        ("169.254.1.1", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("fe80::1%2", "a link-local address"),
        ("0.0.0.0", "an unspecified address"),
        ("0.1.2.3", "an unspecified address"),
        ("::", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),
    ],
)
def test_address_refusal(address: str, kind: str | None) -> None:
    assert address_refusal(ipaddress.ip_address(address), DEFAULT) == kind


def test_an_address_listed_literally_is_allowed() -> None:
    assert address_refusal(ipaddress.ip_address("127.0.0.1"), ["127.0.0.1"]) is None
    assert address_refusal(ipaddress.ip_address("127.0.0.1"), ["127.1"]) is None
    assert address_refusal(ipaddress.ip_address("fe80::1%2"), ["fe80::1"]) is None
    assert address_refusal(ipaddress.ip_address("127.0.0.1"), ["127.*"]) is not None


class Resolver:
    """A resolver that answers from a table and remembers what it was asked."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.asked.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [ipaddress.ip_address(a) for a in self.table[host]]


def test_a_service_name_resolving_to_loopback_is_refused_unconnected(
    kube: FakeKube, server: Server
) -> None:
    resolve = Resolver({"features.ml.svc": ["127.0.0.1"]})
    result = probe(
        dep(f"http://features.ml.svc:{server.port}/ok"), DEFAULT, services=kube, resolve=resolve
    )
    assert not result.ok
    assert result.message == (
        "host features.ml.svc resolves to 127.0.0.1, a loopback address, which is not probed"
        " unless LLMCANARY_PREFLIGHT_ALLOWED_HOSTS lists that address"
    )
    assert server.hits == []
    assert resolve.asked == ["features.ml.svc"]  # final: not tried again


def test_one_bad_address_among_good_ones_is_refused(kube: FakeKube) -> None:
    resolve = Resolver({"features.ml.svc": ["10.96.0.10", "169.254.169.254"]})
    result = probe(dep("tcp://features.ml.svc:80"), DEFAULT, services=kube, resolve=resolve)
    assert not result.ok and "169.254.169.254, a cloud metadata address" in result.message


def test_the_probe_connects_to_the_address_it_checked(kube: FakeKube, other: Server) -> None:
    # features.ml.svc resolves nowhere in this test but through the injected resolver:
    # the connection goes to the checked address, the name is not resolved again.
    resolve = Resolver({"features.ml.svc": ["127.0.0.2"]})
    allowed = [*DEFAULT, "127.0.0.2"]
    result = probe(
        dep(f"http://features.ml.svc:{other.port}/ok"), allowed, services=kube, resolve=resolve
    )
    assert result.ok, result.message
    assert other.hits == ["/ok"]
    tcp = probe(dep(f"tcp://features.ml.svc:{other.port}"), allowed, services=kube, resolve=resolve)
    assert tcp.ok and tcp.message == "connected"


def test_the_next_address_is_tried_when_one_refuses(kube: FakeKube, other: Server) -> None:
    port = other.port
    resolve = Resolver({"features.ml.svc": ["127.0.0.3", "127.0.0.2"]})
    allowed = [*DEFAULT, "127.0.0.2", "127.0.0.3"]
    result = probe(
        dep(f"http://features.ml.svc:{port}/ok"), allowed, services=kube, resolve=resolve
    )
    assert result.ok, result.message


def test_a_name_that_does_not_resolve(kube: FakeKube) -> None:
    result = probe(
        dep("http://features.ml.svc/ok", timeout_ms=300),
        DEFAULT,
        services=kube,
        resolve=Resolver({}),
        retries=1,
    )
    assert not result.ok and result.message == "the host name does not resolve"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://alias.ml.svc/", "Service ml/alias is an ExternalName Service"),
        ("tcp://handmade.ml.svc:5432", "Service ml/handmade has no selector"),
        ("http://nothing.ml.svc/", "Service ml/nothing does not exist"),
    ],
)
def test_a_refused_service_is_never_resolved_nor_contacted(
    kube: FakeKube, url: str, message: str
) -> None:
    resolve = Resolver({})
    result = probe(dep(url), DEFAULT, services=kube, resolve=resolve)
    assert not result.ok and result.message.startswith(message)
    assert result.latency_ms is None
    assert resolve.asked == []


def test_a_redirect_to_a_refused_service_is_not_followed(kube: FakeKube, server: Server) -> None:
    result = probe(dep(f"{server.url}/to-alias"), [*LOCAL, *DEFAULT], services=kube)
    assert not result.ok
    assert result.message.startswith(
        "HTTP 302 redirect to alias.ml.svc refused: Service ml/alias is an ExternalName"
    )
    assert server.hits == ["/to-alias"]


def test_probe_all_checks_services(kube: FakeKube, server: Server) -> None:
    results = probe_all(
        [dep(f"{server.url}/ok", name="local"), dep("http://alias.ml.svc/", name="alias")],
        LOCAL + DEFAULT,
        services=kube,
        retries=1,
    )
    assert [(r.name, r.ok) for r in results] == [("local", True), ("alias", False)]


def test_without_services_names_are_not_looked_up(server: Server) -> None:
    # model_ready and direct callers: the allowlist and the address check still hold.
    resolve = Resolver({"alias.ml.svc": ["169.254.169.254"]})
    result = probe(dep("http://alias.ml.svc/"), DEFAULT, resolve=resolve, retries=1)
    assert not result.ok and "a cloud metadata address" in result.message
