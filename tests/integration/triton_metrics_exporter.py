"""Serve Triton's per-model inference metrics, driven by a behaviour file (stdlib only).

A stand-in for one Triton pod's metrics endpoint (``:8002/metrics``), for tests whose
pods are KWOK pods that run nothing::

    python triton_metrics_exporter.py --port 0 --behaviour rev.json --model llm \
        [--version 1] [--port-file PATH]

The behaviour file is re-read on every scrape, so a test changes an arm's latency or
error rate by rewriting it::

    {"rps": 50, "p95_ms": 120, "error_rate": 0.0}

Its fields (only ``rps`` and ``p95_ms`` are usual; every one has a default):

- ``rps`` (0): all requests per second; ``rps * error_rate`` of them fail (Triton's
  failure counter, reason ``BACKEND``), the rest succeed.
- ``p95_ms`` (100): the P95 of the end-to-end request latency.
- ``error_rate`` (0): the failed fraction, 0 to 1.
- ``ttft_p95_ms`` (0.2 x ``p95_ms``): the P95 of the time to first token.
- ``tpot_p95_ms`` (0.8 x ``p95_ms`` / (``output_tokens`` - 1)): the P95 of the time per
  output token; with the defaults, TTFT + (``output_tokens`` - 1) x TPOT = ``p95_ms``.
- ``output_tokens`` (32) and ``prompt_tokens`` (64): tokens per successful request.

Counters advance with wall-clock time since the previous scrape at the behaviour read
now. A missing file means no traffic: counters and histograms stay where they are and
the latency summary is not exposed; with ``rps`` 0 the summary's quantiles are NaN, as
a Triton summary with no observation in its window answers.

The families:

- Triton's own, with Triton 2.51's names and labels (``model``, ``version``; ``reason``
  on failures): ``nv_inference_request_success``, ``nv_inference_request_failure``,
  ``nv_inference_count``, ``nv_inference_exec_count``, the request summary
  ``nv_inference_request_summary_us`` (needs ``--metrics-config
  summary_latencies=true`` on a real server; end-to-end latency, all requests), and
  the first-response histogram ``nv_inference_first_response_histogram_ms`` of Triton
  2.52+ (successful requests; it follows ``p95_ms``, buckets ``BUCKETS_MS``).
- The Triton vLLM backend's, with its names and its two labels (``model``,
  ``version``): the histograms ``vllm:time_to_first_token_seconds`` (``ttft_p95_ms``),
  ``vllm:time_per_output_token_seconds`` (``tpot_p95_ms``) and
  ``vllm:e2e_request_latency_seconds`` (``p95_ms``), in seconds, and the counters
  ``vllm:prompt_tokens_total`` and ``vllm:generation_tokens_total``. Only successful
  requests are observed, as vLLM observes finished requests: one TTFT and one
  end-to-end observation each, and, as vLLM observes every inter-token interval,
  ``output_tokens - 1`` TPOT observations each (none with one output token).

Every latency follows a log-normal distribution with P50 = 0.6 x its P95, from which
the summary's quantiles and the histograms' buckets are computed, so
``histogram_quantile(0.95, ...)`` lands near the configured P95. The vLLM histograms
share one ladder, ``BUCKETS_S``: 0.5 ms to 60 s with neighbours at most 1.2x apart, so
that the interpolated P95 is within ~3% of the configured one for any P95 from 1 ms to
20 s (the floored counts add a little with few requests). Real vLLM buckets are far
coarser (e.g. TPOT 0.01, 0.025, 0.05, 0.075, 0.1, ...), where ``histogram_quantile``
can be off by tens of percent; these are fine on purpose, so that a test can set a
P95 and assert on what the operator reads from Prometheus.

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
# Seconds, for the vLLM histograms: 0.5 ms to 60 s, neighbours at most 1.2x apart, so
# histogram_quantile(0.95, ...) is within ~3% of any P95 from 1 ms to 20 s.
_STEPS = (1, 1.2, 1.4, 1.6, 1.8, 2, 2.4, 2.8, 3.2, 3.6, 4, 4.5, 5, 6, 7, 8, 9)
BUCKETS_S = tuple(
    sorted(
        {
            round(step * 10.0**exponent, 6)
            for exponent in range(-4, 2)
            for step in _STEPS
            if 0.0005 <= round(step * 10.0**exponent, 6) <= 60
        }
    )
)
_Z95 = 1.6448536269514722


class LogNormal:
    """A latency distribution given by its P95 (any unit), with P50 = 0.6 x P95."""

    def __init__(self, p95: float) -> None:
        self.p95 = p95
        self.p50 = 0.6 * p95
        self.sigma = math.log(self.p95 / self.p50) / _Z95

    def cdf(self, x: float) -> float:
        """P(latency <= x)."""
        if x <= 0:
            return 0.0
        z = (math.log(x) - math.log(self.p50)) / self.sigma
        return 0.5 * (1 + math.erf(z / math.sqrt(2)))

    @property
    def mean(self) -> float:
        return self.p50 * math.exp(self.sigma**2 / 2)


class Behaviour:
    def __init__(
        self,
        rps: float,
        p95_ms: float,
        error_rate: float,
        *,
        ttft_p95_ms: float | None = None,
        tpot_p95_ms: float | None = None,
        output_tokens: int = 32,
        prompt_tokens: int = 64,
    ) -> None:
        self.rps = max(0.0, rps)
        self.p95_ms = max(0.001, p95_ms)
        self.error_rate = min(1.0, max(0.0, error_rate))
        self.output_tokens = max(1, output_tokens)
        self.prompt_tokens = max(0, prompt_tokens)
        if ttft_p95_ms is None:
            ttft_p95_ms = 0.2 * self.p95_ms
        if tpot_p95_ms is None:
            tpot_p95_ms = 0.8 * self.p95_ms / max(1, self.output_tokens - 1)
        self.ttft_p95_ms = max(0.001, ttft_p95_ms)
        self.tpot_p95_ms = max(0.001, tpot_p95_ms)
        self.latency = LogNormal(self.p95_ms)  # milliseconds, for Triton's own families
        self.e2e = LogNormal(self.p95_ms / 1000)  # seconds, for vLLM's
        self.ttft = LogNormal(self.ttft_p95_ms / 1000)
        self.tpot = LogNormal(self.tpot_p95_ms / 1000)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Behaviour:
        def optional(key: str) -> float | None:  # absent or null: the default
            value = raw.get(key)
            return None if value is None else float(value)

        output_tokens, prompt_tokens = optional("output_tokens"), optional("prompt_tokens")
        return cls(
            float(raw.get("rps", 0)),
            float(raw.get("p95_ms", 100)),
            float(raw.get("error_rate", 0)),
            ttft_p95_ms=optional("ttft_p95_ms"),
            tpot_p95_ms=optional("tpot_p95_ms"),
            output_tokens=32 if output_tokens is None else int(output_tokens),
            prompt_tokens=64 if prompt_tokens is None else int(prompt_tokens),
        )


class Histogram:
    """Cumulative buckets, count and sum of one histogram series."""

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.help_text = help_text
        self.les = buckets
        self.buckets = [0.0] * len(buckets)
        self.count = 0.0
        self.sum = 0.0

    def observe(self, n: float, distribution: LogNormal) -> None:
        """``n`` observations drawn from ``distribution`` (spread as its CDF has them)."""
        for i, le in enumerate(self.les):
            self.buckets[i] += n * distribution.cdf(le)
        self.count += n
        self.sum += n * distribution.mean

    def lines(self, labels: str, sum_format: str) -> list[str]:
        name = self.name
        lines = [
            f"# HELP {name} {self.help_text}",
            f"# TYPE {name} histogram",
            f"{name}_count{{{labels}}} {math.floor(self.count)}",
            f"{name}_sum{{{labels}}} {self.sum:{sum_format}}",
        ]
        for le, count in zip(self.les, self.buckets, strict=True):
            lines.append(f'{name}_bucket{{{labels},le="{le:g}"}} {math.floor(count)}')
        lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {math.floor(self.count)}')
        return lines


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
        self.first_response = Histogram(
            "nv_inference_first_response_histogram_ms",
            "Duration from request to first response in milliseconds",
            BUCKETS_MS,
        )
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            BUCKETS_S,
        )
        self.tpot = Histogram(
            "vllm:time_per_output_token_seconds",
            "Histogram of time per output token in seconds.",
            BUCKETS_S,
        )
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of end to end request latency in seconds.",
            BUCKETS_S,
        )
        self.prompt_tokens = 0.0
        self.generation_tokens = 0.0

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
            return Behaviour.from_json(raw)
        except (TypeError, ValueError, OverflowError):
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
            self.latency_sum_us += total * behaviour.latency.mean * 1000
            # The histograms observe successful requests (vLLM: finished ones; TPOT once
            # per inter-token interval).
            self.first_response.observe(ok, behaviour.latency)
            self.ttft.observe(ok, behaviour.ttft)
            self.tpot.observe(ok * (behaviour.output_tokens - 1), behaviour.tpot)
            self.e2e.observe(ok, behaviour.e2e)
            self.prompt_tokens += ok * behaviour.prompt_tokens
            self.generation_tokens += ok * behaviour.output_tokens
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

            lines.extend(self.first_response.lines(base, ".0f"))

            family("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.")
            lines.append(f"vllm:prompt_tokens_total{{{base}}} {math.floor(self.prompt_tokens)}")
            family(
                "vllm:generation_tokens_total",
                "counter",
                "Number of generation tokens processed.",
            )
            lines.append(
                f"vllm:generation_tokens_total{{{base}}} {math.floor(self.generation_tokens)}"
            )
            for histogram in (self.ttft, self.tpot, self.e2e):
                lines.extend(histogram.lines(base, ".6f"))
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
