"""Serve Triton's per-model inference metrics, driven by a behaviour file (stdlib only).

A stand-in for one Triton pod's metrics endpoint (``:8002/metrics``), for tests whose
pods are KWOK pods that run nothing::

    python triton_metrics_exporter.py --port 0 --behaviour rev.json --model llm \
        [--version 1] [--port-file PATH]

The behaviour file is re-read on every scrape, so a test changes an arm's latency or
error rate by rewriting it::

    {"rps": 50, "p95_ms": 120, "error_rate": 0.0}

``rps`` is all requests per second; ``rps * error_rate`` of them fail (Triton's
failure counter, reason ``BACKEND``), the rest succeed. Counters advance with wall-clock
time since the previous scrape at the behaviour read now. A missing file means no
traffic: counters stay where they are and the latency summary is not exposed; with
``rps`` 0 the summary's quantiles are NaN, as a Triton summary with no observation in
its window answers.

The names and labels are Triton 2.51's (``model``, ``version``; ``reason`` on failures;
the request summary needs ``--metrics-config summary_latencies=true`` on a real
server) plus the first-response histogram of Triton 2.52+. Latencies follow a
log-normal distribution with P50 = 0.6 x P95, which both the summary's quantiles and
the histogram's buckets are computed from (so ``histogram_quantile(0.95, ...)`` lands
near ``p95_ms``, within the resolution of the buckets).

With ``--port 0`` the server picks a free port; ``--port-file`` receives the port once
the server listens. The process exits when its parent dies.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

QUANTILES = (0.5, 0.9, 0.95, 0.99)
# The summary reports these multiples of P95 (P90 as the log-normal has it).
QUANTILE_FACTORS = {0.5: 0.6, 0.9: 0.89, 0.95: 1.0, 0.99: 1.3}
FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")
# Milliseconds; fine-grained where LLM latencies live so histogram_quantile is close.
BUCKETS_MS = (
    *(1, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150, 175, 200),
    *(225, 250, 275, 300, 350, 400, 450, 500, 600, 700, 800, 900, 1000, 1250, 1500, 1750),
    *(2000, 2500, 3000, 4000, 5000, 7500, 10000, 20000, 60000),
)
_Z95 = 1.6448536269514722


class Behaviour:
    def __init__(self, rps: float, p95_ms: float, error_rate: float) -> None:
        self.rps = max(0.0, rps)
        self.p95_ms = max(0.001, p95_ms)
        self.error_rate = min(1.0, max(0.0, error_rate))

    @property
    def p50_ms(self) -> float:
        return 0.6 * self.p95_ms

    @property
    def sigma(self) -> float:
        return math.log(self.p95_ms / self.p50_ms) / _Z95

    def cdf(self, ms: float) -> float:
        """P(latency <= ms) for the log-normal with this P50 and P95."""
        if ms <= 0:
            return 0.0
        z = (math.log(ms) - math.log(self.p50_ms)) / self.sigma
        return 0.5 * (1 + math.erf(z / math.sqrt(2)))

    @property
    def mean_ms(self) -> float:
        return self.p50_ms * math.exp(self.sigma**2 / 2)


class Model:
    """The counters of one model version, advanced on each scrape."""

    def __init__(self, name: str, version: str, behaviour_file: Path) -> None:
        self.name = name
        self.version = version
        self.behaviour_file = behaviour_file
        self.lock = threading.Lock()
        self.last = time.monotonic()
        self.behaviour: Behaviour | None = None
        self.success = 0.0
        self.failure = 0.0
        self.latency_count = 0.0
        self.latency_sum_us = 0.0
        self.buckets = [0.0] * len(BUCKETS_MS)
        self.histogram_count = 0.0
        self.histogram_sum_ms = 0.0

    def read_behaviour(self) -> Behaviour | None:
        try:
            raw: Any = json.loads(self.behaviour_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return self.behaviour  # half-written or unreadable: keep the last one
        if not isinstance(raw, dict):
            return self.behaviour
        try:
            return Behaviour(
                float(raw.get("rps", 0)),
                float(raw.get("p95_ms", 100)),
                float(raw.get("error_rate", 0)),
            )
        except (TypeError, ValueError):
            return self.behaviour

    def advance(self) -> Behaviour | None:
        with self.lock:
            now = time.monotonic()
            elapsed, self.last = now - self.last, now
            behaviour = self.behaviour = self.read_behaviour()
            if behaviour is None or behaviour.rps == 0:
                return behaviour
            total = behaviour.rps * elapsed
            failed = total * behaviour.error_rate
            ok = total - failed
            self.success += ok
            self.failure += failed
            self.latency_count += total
            self.latency_sum_us += total * behaviour.mean_ms * 1000
            # The first-response histogram observes successful requests.
            for i, le in enumerate(BUCKETS_MS):
                self.buckets[i] += ok * behaviour.cdf(le)
            self.histogram_count += ok
            self.histogram_sum_ms += ok * behaviour.mean_ms
            return behaviour

    def exposition(self) -> str:
        behaviour = self.advance()
        base = f'model="{self.name}",version="{self.version}"'
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")

        with self.lock:
            family(
                "nv_inference_request_success",
                "counter",
                "Number of successful inference requests, all batch sizes",
            )
            lines.append(f"nv_inference_request_success{{{base}}} {math.floor(self.success)}")
            family(
                "nv_inference_request_failure",
                "counter",
                "Number of failed inference requests, all batch sizes",
            )
            for reason in FAILURE_REASONS:
                value = math.floor(self.failure) if reason == "BACKEND" else 0
                lines.append(
                    f'nv_inference_request_failure{{model="{self.name}",reason="{reason}",'
                    f'version="{self.version}"}} {value}'
                )
            family(
                "nv_inference_count",
                "counter",
                "Number of inferences performed (does not include cached requests)",
            )
            lines.append(f"nv_inference_count{{{base}}} {math.floor(self.success)}")
            family(
                "nv_inference_exec_count",
                "counter",
                "Number of model executions performed (does not include cached requests)",
            )
            lines.append(f"nv_inference_exec_count{{{base}}} {math.floor(self.success)}")

            if behaviour is not None:
                family(
                    "nv_inference_request_summary_us",
                    "summary",
                    "Summary of inference request duration in microseconds"
                    " (includes cached requests)",
                )
                lines.append(
                    f"nv_inference_request_summary_us_count{{{base}}} "
                    f"{math.floor(self.latency_count)}"
                )
                lines.append(
                    f"nv_inference_request_summary_us_sum{{{base}}} {self.latency_sum_us:.0f}"
                )
                for q in QUANTILES:
                    quantile = (
                        "NaN"
                        if behaviour.rps == 0
                        else f"{behaviour.p95_ms * QUANTILE_FACTORS[q] * 1000:.0f}"
                    )
                    lines.append(
                        f'nv_inference_request_summary_us{{{base},quantile="{q:g}"}} {quantile}'
                    )

            family(
                "nv_inference_first_response_histogram_ms",
                "histogram",
                "Duration from request to first response in milliseconds",
            )
            name = "nv_inference_first_response_histogram_ms"
            lines.append(f"{name}_count{{{base}}} {math.floor(self.histogram_count)}")
            lines.append(f"{name}_sum{{{base}}} {self.histogram_sum_ms:.0f}")
            for le, count in zip(BUCKETS_MS, self.buckets, strict=True):
                lines.append(f'{name}_bucket{{{base},le="{le:g}"}} {math.floor(count)}')
            lines.append(f'{name}_bucket{{{base},le="+Inf"}} {math.floor(self.histogram_count)}')
        return "\n".join(lines) + "\n"


class Handler(BaseHTTPRequestHandler):
    server: MetricsServer

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/metrics":
            self.send_error(404)
            return
        body = self.server.model.exposition().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: one line per scrape
        pass


class MetricsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], model: Model) -> None:
        super().__init__(address, Handler)
        self.model = model


def watch_parent(server: MetricsServer) -> None:
    parent = os.getppid()
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            server.shutdown()
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--behaviour", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--version", default="1", help="the model version label")
    parser.add_argument("--port-file", type=Path, help="write the port here once listening")
    args = parser.parse_args(argv)

    server = MetricsServer((args.host, args.port), Model(args.model, args.version, args.behaviour))
    port = server.server_address[1]
    if args.port_file is not None:
        tmp = args.port_file.with_name(args.port_file.name + ".tmp")
        tmp.write_text(str(port))
        tmp.replace(args.port_file)
    print(f"serving Triton metrics for {args.model} on {args.host}:{port}", file=sys.stderr)
    threading.Thread(target=watch_parent, args=(server,), daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
