"""Prometheus as the metrics source: instant and range queries over our own small HTTP client.

A count query (requests, errors) and a quantile query (Triton's summary, a user's
template) must answer one number or nothing: an empty vector (or NaN, or ±Inf) is a
missing series (``None``, which the verdict treats as "not enough data"); more than one
series is a query error, because an arm is one number and silently picking a series
would compare the wrong things. A quantile query is also read block by block (a range
query, one value per instant; a step without a value is None). A histogram query answers
one series per pod and bucket (``sum by (le, pod)``), and every pod must have the same
buckets. Any failure to get an answer (connection refused, timeout, HTTP error, bad
PromQL) is :class:`MetricsUnavailable` with a one-line message naming the address and
the arm; never a traceback.

Whoever may create an LLMDeployment chooses the address, and the operator makes the
requests from inside the cluster, so (as for the preflight's dependency probes):

- the host must match the operator's allowlist (``LLMCANARY_PROMETHEUS_ALLOWED_HOSTS``,
  fnmatch patterns, default in-cluster service names; an IP literal only when a
  pattern names that very address); anything else is refused before any request;
- the address is a base URL only: no userinfo, query or fragment, a plain path prefix.
  Requests go to exactly ``{scheme}://{host[:port]}{prefix}/api/v1/query`` (and
  ``query_range``), on a socket we open to that host ourselves (no proxy from the
  environment, no connection pool), and messages never show userinfo;
- redirects are not followed (a 3xx is an error);
- each query is bounded by ``timeout_seconds`` in all (name resolution, connect, TLS,
  request, headers and body; a watchdog ends it at the deadline, whatever the server
  trickles) and by :data:`MAX_ANSWER_BYTES`; Prometheus gets the same ``timeout`` for its
  own evaluation. No retries: the analysis loop is the retry (the next interval);
- no server text reaches a message, the status, an event or a log: an HTTP error shows
  its status code and Prometheus' ``errorType`` word, an answer of the wrong shape says
  so, and a query answering several series says how many, not their labels;
- numbers are checked: NaN and ±Inf are missing, a negative count or one above
  :data:`MAX_COUNT`, and a latency above :data:`MAX_LATENCY_MS`, are refused answers.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import re
import socket
import ssl
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlencode

from llmcanary.allowlist import host_allowed, printable
from llmcanary.analysis import sequential
from llmcanary.analysis.histogram import Histogram
from llmcanary.analysis.types import ArmReading, LatencyReading, Signal, needs
from llmcanary.api.spec import AnalysisSpec
from llmcanary.api.types import parse_duration
from llmcanary.sources.base import MetricsUnavailable, QueryErrorReason, Scope
from llmcanary.sources.promql import HistogramQuery, QuantileQuery, arm_queries
from llmcanary.transport import (
    MAX_ANSWER_BYTES,
    Answer,
    Cancelled,
    Endpoint,
    TooLarge,
    bounded_get,
    display_address,
    parse_address,
)

log = logging.getLogger(__name__)

ALLOWLIST_SETTING = "LLMCANARY_PROMETHEUS_ALLOWED_HOSTS"
MAX_COUNT = 1e15  # requests, errors, bucket counts over a window: above is not a count
MAX_LATENCY_MS = 1e9  # about 11.6 days: above is not a latency

_ERROR_TYPE = re.compile(r"^[a-z_]{1,32}$")
# A block of the window that saw no requests (or a scrape missed its +Inf bucket).
_EMPTY = Histogram((math.inf,), (0.0,))
# Histogram.from_buckets' messages that quote nothing from the answer.
_HISTOGRAM_PROBLEMS = ("a histogram needs buckets", "a histogram needs its +Inf bucket")

Kind = Literal["count", "latency"]
_OUT_OF_RANGE = {
    "count": "a count below 0 or above 1e15",  # MAX_COUNT
    "latency": "a latency below 0 or above 1e9 ms",  # MAX_LATENCY_MS
}


def _refusal(host: str, patterns: Sequence[str]) -> str:
    return (
        f"host {printable(host)} is not in the operator's allowlist"
        f" ({ALLOWLIST_SETTING}: {', '.join(patterns) or 'empty'});"
        f" ask the platform team to add it to {ALLOWLIST_SETTING}"
    )


def _error_type(body: bytes) -> str | None:
    """Prometheus' ``errorType`` of an error answer, if it is one plain word."""
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        return None
    kind = answer.get("errorType") if isinstance(answer, dict) else None
    return kind if isinstance(kind, str) and _ERROR_TYPE.match(kind) else None


def _float(raw: Any) -> float:
    """A sample value or label as Prometheus writes it ("1.5", "NaN", "+Inf")."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise TypeError("not a number")
    if isinstance(raw, str) and len(raw) > 64:
        raise ValueError("not a number")
    return float(raw)  # OverflowError for an int beyond float


# --- the reader -----------------------------------------------------------------------


class PrometheusReader:
    """A :class:`~llmcanary.sources.base.MetricSource` reading one Prometheus.

    ``allowed_hosts``: the operator's allowlist (the operator always passes one); None
    checks no host, for a reader built directly (tests) on an address its
    caller chose. Building never fails on the address: a refused one makes every
    :meth:`read` raise :class:`MetricsUnavailable` (reason ``refused``), with no request.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float = 5.0,
        disable_ssl: bool = False,
        allowed_hosts: Sequence[str] | None = None,
    ) -> None:
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        self.url = display_address(url)
        self.timeout_seconds = timeout_seconds
        self._verify = not disable_ssl
        endpoint = parse_address(url)
        if (
            allowed_hosts is not None
            and isinstance(endpoint, Endpoint)
            and not host_allowed(endpoint.host, allowed_hosts)
        ):
            endpoint = _refusal(endpoint.host, list(allowed_hosts))
        self._endpoint: Endpoint | str = endpoint

    def read(self, scope: Scope, analysis: AnalysisSpec) -> ArmReading:
        queries = arm_queries(analysis, scope)
        latency: dict[Signal, LatencyReading] = {}
        for signal, quantiles in needs(analysis.rules).items():
            query = queries.latency.get(signal)
            if query is None:  # admission refuses this; an older stored object may not
                raise MetricsUnavailable(
                    f"the {analysis.metrics} metrics preset does not read {signal}:"
                    f" give its PromQL in spec.canary.analysis.queries.{signal}",
                    "answer",
                )
            where = f"{scope.arm} {signal}"
            if isinstance(query, HistogramQuery):
                latency[signal] = LatencyReading(
                    pods=self._histograms(
                        where, query.promql(queries.values), query.to_ms, scope.end
                    ),
                    blocks=self._blocks(where, query, queries.values, scope, analysis),
                )
            else:
                latency[signal] = LatencyReading(
                    quantiles={
                        q: self._scalar(
                            where, query.promql(queries.values, q), scope.end, "latency"
                        )
                        for q in quantiles
                    },
                    quantile_blocks={
                        q: self._quantile_blocks(where, query, queries.values, q, scope, analysis)
                        for q in quantiles
                    },
                    method=query.method,
                )
        return ArmReading(
            requests=self._scalar(f"{scope.arm} requests", queries.requests, scope.end),
            errors=self._scalar(f"{scope.arm} errors", queries.errors, scope.end),
            latency=latency,
        )

    def _scalar(
        self, what: str, promql: str, at: datetime | None, kind: Kind = "count"
    ) -> float | None:
        where = f"Prometheus at {self.url}, {what} query"
        extra = {"prometheus": self.url, "query": what, "promql": promql}
        result_type, result = self._query(where, promql, extra, at)
        return self._one_value(result_type, result, where, extra, kind)

    def _histograms(
        self, what: str, promql: str, to_ms: float, at: datetime | None
    ) -> dict[str, Histogram]:
        """Each pod's histogram over the window, in milliseconds."""
        where = f"Prometheus at {self.url}, {what} query"
        extra = {"prometheus": self.url, "query": what, "promql": promql}
        result_type, result = self._query(where, promql, extra, at)
        if result_type != "vector":
            raise self._unavailable(f"{where}: unexpected answer shape", extra, "answer")
        buckets: dict[str, list[tuple[float, float]]] = {}
        for item in result:
            metric = item.get("metric") if isinstance(item, dict) else None
            try:
                if not isinstance(metric, dict):
                    raise TypeError("no labels")
                bound = self._bound(metric["le"], to_ms, where, extra)
                value = item["value"]
                if not isinstance(value, list) or len(value) != 2:
                    raise TypeError("not a sample")
                count = _float(value[1])
            except (KeyError, TypeError, ValueError, OverflowError):
                raise self._unavailable(
                    f"{where}: a series without a bucket bound (le) or value", extra, "answer"
                ) from None
            if self._checked(count, "count", where, extra) is not None:
                buckets.setdefault(str(metric.get("pod", "")), []).append((bound, count))
        pods = {pod: self._histogram(pairs, where, extra) for pod, pairs in buckets.items()}
        layouts = {h.bounds for h in pods.values()}
        if len(layouts) > 1:
            raise self._unavailable(
                f"{where}: the arm's pods report different buckets ({len(layouts)} layouts):"
                " a histogram can be added up only over the same buckets",
                extra,
                "answer",
            )
        if not pods:
            log.info("prometheus query: no series", extra=extra)
        return pods

    def _blocks(
        self,
        what: str,
        query: HistogramQuery,
        values: dict[str, str],
        scope: Scope,
        analysis: AnalysisSpec,
    ) -> tuple[Histogram, ...]:
        """The arm's histogram in consecutive blocks of the window (oldest first), by a
        range query whose steps tile the window from its start; none (and no query)
        while the window holds fewer than
        :data:`~llmcanary.analysis.sequential.MIN_BLOCKS` blocks: the verdict waits."""
        window = scope.window.total_seconds()
        block = sequential.block_seconds(window, parse_duration(analysis.interval).total_seconds())
        if window // block < sequential.MIN_BLOCKS:
            return ()
        end = scope.end or datetime.now(UTC)
        first = end - scope.window + timedelta(seconds=block)
        promql = query.block_promql(values, f"{block}s")
        where = f"Prometheus at {self.url}, {what} blocks query"
        extra = {"prometheus": self.url, "query": f"{what} blocks", "promql": promql}
        result_type, result = self._query(where, promql, extra, steps=(first, end, f"{block}s"))
        if result_type != "matrix":
            raise self._unavailable(f"{where}: unexpected answer shape", extra, "answer")
        by_time: dict[float, list[tuple[float, float]]] = {}
        for item in result:
            metric = item.get("metric") if isinstance(item, dict) else None
            try:
                if not isinstance(metric, dict) or not isinstance(item["values"], list):
                    raise TypeError("no labels or values")
                bound = self._bound(metric["le"], query.to_ms, where, extra)
                points = [(_float(t), _float(v)) for t, v in item["values"]]
            except (KeyError, TypeError, ValueError, OverflowError):
                raise self._unavailable(
                    f"{where}: a series without a bucket bound (le) or values", extra, "answer"
                ) from None
            for at, count in points:
                if self._checked(count, "count", where, extra) is not None:
                    by_time.setdefault(at, []).append((bound, count))
        # One block per step of the query, empty where Prometheus had nothing: both arms'
        # blocks are cut at the same instants, and the verdict pairs them by position.
        steps = range(round(first.timestamp()), round(end.timestamp()) + 1, block)
        blocks = []
        for at in steps:
            try:
                blocks.append(Histogram.from_buckets(by_time.get(float(at), [])))
            except ValueError:  # no series, or a block without its +Inf bucket
                blocks.append(_EMPTY)
        return tuple(blocks)

    def _quantile_blocks(
        self,
        what: str,
        query: QuantileQuery,
        values: dict[str, str],
        q: float,
        scope: Scope,
        analysis: AnalysisSpec,
    ) -> tuple[float | None, ...]:
        """The arm's ``q`` quantile at the end of each block of the window (oldest first;
        None where it had no value), by a range query stepping from the window's start;
        none (and no query) while the window holds fewer than
        :data:`~llmcanary.analysis.sequential.MIN_BLOCKS` blocks. A query with a span of
        its own (Triton's summary) is read in blocks of at least that span, so that no
        two answers count the same requests (with ``analysis.interval`` longer than the
        span, each answer covers only the last span of its block)."""
        window = scope.window.total_seconds()
        interval = parse_duration(analysis.interval).total_seconds()
        if query.span_seconds is None:
            block = sequential.block_seconds(window, interval)
        else:
            block = max(math.ceil(interval), query.span_seconds)
        if window // block < sequential.MIN_BLOCKS:
            return ()
        end = scope.end or datetime.now(UTC)
        first = end - scope.window + timedelta(seconds=block)
        promql = query.block_promql(values, q, f"{block}s")
        where = f"Prometheus at {self.url}, {what} blocks query"
        extra = {"prometheus": self.url, "query": f"{what} blocks", "promql": promql}
        result_type, result = self._query(where, promql, extra, steps=(first, end, f"{block}s"))
        if result_type != "matrix":
            raise self._unavailable(f"{where}: unexpected answer shape", extra, "answer")
        # Several series are one arm's only if they never answer at the same instant (the
        # labels of an unaggregated template change when a pod is replaced).
        by_time: dict[float, float | None] = {}
        for item in result:
            try:
                points = item["values"] if isinstance(item, dict) else None
                if not isinstance(points, list):
                    raise TypeError("no values")
                samples = [(_float(t), _float(v)) for t, v in points]
            except (KeyError, TypeError, ValueError, OverflowError):
                raise self._unavailable(
                    f"{where}: a series without values", extra, "answer"
                ) from None
            for at, value in samples:
                if at in by_time:
                    raise self._unavailable(
                        f"{where} returned {len(result)} series at one instant; aggregate it"
                        " to one number per arm",
                        extra,
                        "answer",
                    )
                by_time[at] = self._checked(value, "latency", where, extra)
        steps = range(round(first.timestamp()), round(end.timestamp()) + 1, block)
        return tuple(by_time.get(float(at)) for at in steps)

    def _query(
        self,
        where: str,
        promql: str,
        extra: dict[str, Any],
        at: datetime | None = None,
        *,
        steps: tuple[datetime, datetime, str] | None = None,
    ) -> tuple[str, list[Any]]:
        """An instant query at ``at`` (None: Prometheus' now), or with ``steps``
        (start, end, step) a range query: the answer's result type and its result (a
        scalar as one series without labels)."""
        endpoint = self._endpoint
        if isinstance(endpoint, str):  # refused: nothing is sent
            raise self._unavailable(f"{where}: {endpoint}", extra, "refused")
        started = time.monotonic()
        # Prometheus' own evaluation timeout, so a heavy query ends server-side too.
        params = {"query": promql, "timeout": f"{self.timeout_seconds:g}s"}
        if steps is None:
            path = "query"
            if at is not None:  # both arms, and every query of one, at one instant
                params["time"] = f"{at.timestamp():.3f}"
        else:
            path = "query_range"
            start, end, step = steps
            # Whole seconds: the blocks are matched to the answer's timestamps by them.
            params |= {
                "start": str(round(start.timestamp())),
                "end": str(round(end.timestamp())),
                "step": step,
            }
        target = f"{endpoint.prefix}/api/v1/{path}?{urlencode(params)}"
        answer = self._fetch(endpoint, target, where, extra)
        if 300 <= answer.status < 400:
            raise self._unavailable(
                f"{where}: HTTP {answer.status}, a redirect: redirects are not followed;"
                " give the address Prometheus answers at",
                extra,
                "http",
            )
        if answer.status != 200:
            raise self._unavailable(f"{where}: {_http_error(answer)}", extra, "http")
        try:
            document = json.loads(answer.body)
        except (ValueError, RecursionError):  # not JSON: not a Prometheus API
            raise self._unavailable(
                f"{where}: unexpected answer shape (not JSON: is this Prometheus' API?)",
                extra,
                "answer",
            ) from None
        data = document.get("data") if isinstance(document, dict) else None
        if (
            not isinstance(data, dict)
            or document.get("status") != "success"
            or data.get("resultType") not in ("vector", "matrix", "scalar", "string")
        ):
            raise self._unavailable(f"{where}: unexpected answer shape", extra, "answer")
        result_type: str = data["resultType"]
        result = data.get("result")
        if result_type in ("scalar", "string"):
            result = [{"metric": {}, "value": result}]
        if not isinstance(result, list):
            raise self._unavailable(f"{where}: unexpected answer shape", extra, "answer")
        log.debug(
            "prometheus query answered",
            extra={**extra, "elapsed_ms": round((time.monotonic() - started) * 1000, 1)},
        )
        return result_type, result

    def _fetch(self, endpoint: Endpoint, target: str, where: str, extra: dict[str, Any]) -> Answer:
        """One exchange; every failure as :class:`MetricsUnavailable`, no server text."""
        try:
            return bounded_get(endpoint, target, self.timeout_seconds, self._verify)
        except (Cancelled, TimeoutError):
            raise self._unavailable(
                f"{where}: no answer within {self.timeout_seconds:g}s", extra, "timeout"
            ) from None
        except TooLarge:
            raise self._unavailable(
                f"{where}: the answer is larger than {MAX_ANSWER_BYTES // 2**20} MiB, the"
                " most the operator reads: aggregate the query",
                extra,
                "answer",
            ) from None
        except (http.client.HTTPException, ConnectionError, OSError) as exc:
            reason, detail = _failure(exc)
            prefix = "cannot connect" if reason == "connection" else "unreadable answer"
            raise self._unavailable(f"{where}: {prefix} ({detail})", extra, reason) from None
        except ValueError:  # http.client on a bad chunk size, among others
            raise self._unavailable(
                f"{where}: unreadable answer (not an HTTP answer)", extra, "answer"
            ) from None
        except Exception as exc:  # every failure is an answer, never a traceback
            raise self._unavailable(
                f"{where}: request failed ({type(exc).__name__})", extra
            ) from None

    def _one_value(
        self,
        result_type: str,
        result: list[Any],
        where: str,
        extra: dict[str, Any],
        kind: Kind,
    ) -> float | None:
        if result_type == "matrix":
            raise self._unavailable(
                f"{where}: unexpected answer shape (a range vector? the query must answer"
                " an instant vector or a scalar)",
                extra,
                "answer",
            )
        if not result:
            log.info("prometheus query: no series", extra=extra)
            return None
        if len(result) > 1:
            raise self._unavailable(
                f"{where} returned {len(result)} series; aggregate it to one number per arm"
                " (max for latency quantiles, sum for counts)",
                extra,
                "answer",
            )
        item = result[0]
        try:
            sample = item["value"] if isinstance(item, dict) else None
            if not isinstance(sample, list) or len(sample) != 2:
                raise TypeError("not a sample")
            value = _float(sample[1])
        except (KeyError, TypeError, ValueError, OverflowError):
            raise self._unavailable(f"{where}: unexpected answer shape", extra, "answer") from None
        checked = self._checked(value, kind, where, extra)
        if checked is None:
            log.info("prometheus query: not a number", extra={**extra, "value": str(value)})
            return None
        log.debug("prometheus query: one number", extra={**extra, "value": checked})
        return checked

    def _checked(self, value: float, kind: Kind, where: str, extra: dict[str, Any]) -> float | None:
        """``value``, None if it is NaN or ±Inf (missing); out of range: refused."""
        if math.isnan(value) or math.isinf(value):
            return None
        if value < 0 or value > (MAX_COUNT if kind == "count" else MAX_LATENCY_MS):
            raise self._unavailable(
                f"{where}: the answer holds {_OUT_OF_RANGE[kind]}, which cannot be right",
                extra,
                "answer",
            )
        return value

    def _bound(self, raw: Any, to_ms: float, where: str, extra: dict[str, Any]) -> float:
        """A bucket's upper bound (``le``) in milliseconds: +Inf, or a latency."""
        le = _float(raw)
        if math.isnan(le):
            raise ValueError("not a bound")
        bound = le * to_ms
        if math.isinf(bound) and bound > 0:
            return math.inf
        if self._checked(bound, "latency", where, extra) is None:  # -Inf
            raise ValueError("not a bound")
        return bound

    def _histogram(
        self, pairs: list[tuple[float, float]], where: str, extra: dict[str, Any]
    ) -> Histogram:
        try:
            return Histogram.from_buckets(pairs)
        except ValueError as exc:  # quote none of the answer (the bounds)
            text = str(exc)
            problem = text if text in _HISTOGRAM_PROBLEMS else "duplicate bucket bounds (le)"
            raise self._unavailable(f"{where}: {problem}", extra, "answer") from None

    @staticmethod
    def _unavailable(
        message: str, extra: dict[str, Any], reason: QueryErrorReason = "error"
    ) -> MetricsUnavailable:
        log.warning("prometheus query failed", extra={**extra, "error": message, "reason": reason})
        return MetricsUnavailable(message, reason)


def _http_error(answer: Answer) -> str:
    """``HTTP 400 (bad_data)``: the status code and Prometheus' errorType word, no text."""
    kind = _error_type(answer.body) if answer.body else None
    text = f"HTTP {answer.status}" + (f" ({kind})" if kind else "")
    if kind == "bad_data":
        text += (
            ": Prometheus refused the query (a PromQL parse error or a bad parameter);"
            " try it in Prometheus' own UI"
        )
    return text


def _failure(exc: BaseException) -> tuple[QueryErrorReason, str]:
    """The reason and what went wrong, in words; never server text."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection", "connection refused"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "connection", "the server closed the connection without an answer"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "connection", "connection reset"
    if isinstance(exc, socket.gaierror):
        return "connection", "the host name does not resolve"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "connection", f"TLS certificate not accepted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return "connection", "TLS handshake failed"
    if isinstance(exc, http.client.IncompleteRead):
        return "answer", "the answer ended early"
    if isinstance(exc, http.client.HTTPException):
        return "answer", "not an HTTP answer"
    if isinstance(exc, OSError) and exc.strerror:
        return "connection", exc.strerror.lower()
    return "connection", type(exc).__name__
