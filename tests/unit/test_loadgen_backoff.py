"""The load generator's closed loop backs off after a failure, so that a short gap of the
system under test is counted as a short gap, not as the loop's retry speed."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from llmcanary_dev.loadgen.client import LoadConfig, run_load


class _BadGateway(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(502)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def failing_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BadGateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_failing_stream_waits_before_its_next_request(failing_url: str) -> None:
    config = LoadConfig(url=failing_url, concurrency=4, warmup_s=0.0, duration_s=1.0)
    results, _ = run_load(config)
    assert results and all(r.status == 502 for r in results)
    # One request per stream per 0.1 s at most (plus the one in flight at the end); at
    # once, a local 502 returns in about a millisecond: hundreds per stream.
    assert len(results) <= 4 * (1.0 / config.error_backoff_s + 2), len(results)
