"""Prometheus as the metrics source: instant queries through ``prometheus_api_client``.

A count query (requests, errors) and a quantile query (Triton's summary, a user's
template) must answer one number or nothing: an empty vector (or NaN, or ±Inf) is a
missing series (``None``, which the verdict treats as "not enough data"); more than one
series is a query error, because an arm is one number and silently picking a series
would compare the wrong things. A histogram query answers one series per pod and
bucket (``sum by (le, pod)``), and every pod must have the same buckets. Any failure to
get an answer (connection refused, timeout, HTTP error, bad PromQL) is
:class:`MetricsUnavailable` with a one-line message naming the address and the arm;
never a traceback.

Each query is bounded by ``timeout_seconds`` (connect, read, and Prometheus' own
evaluation timeout), with no retries.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from llmcanary.analysis import sequential
from llmcanary.analysis.histogram import Histogram
from llmcanary.analysis.types import ArmReading, LatencyReading, Signal, needs
from llmcanary.api.spec import AnalysisSpec
from llmcanary.api.types import parse_duration
from llmcanary.sources.base import MetricsUnavailable, QueryErrorReason, Scope
from llmcanary.sources.promql import HistogramQuery, arm_queries

log = logging.getLogger(__name__)

_MAX_DETAIL = 300
# A block of the window that saw no requests (or a scrape missed its +Inf bucket).
_EMPTY = Histogram((math.inf,), (0.0,))


class PrometheusReader:
    """A :class:`~llmcanary.sources.base.MetricSource` reading one Prometheus."""

    def __init__(
        self, url: str, *, timeout_seconds: float = 5.0, disable_ssl: bool = False
    ) -> None:
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        self.url = url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        # No retries: a retry loop with backoff would outlast the timeout the caller
        # counts on; the analysis loop itself is the retry (the next interval).
        self._client = PrometheusConnect(
            url=self.url,
            disable_ssl=disable_ssl,
            retry=Retry(total=0, read=False, redirect=False),
            timeout=timeout_seconds,
        )

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
                        q: self._scalar(where, query.promql(queries.values, q), scope.end)
                        for q in quantiles
                    },
                    method=query.method,
                )
        return ArmReading(
            requests=self._scalar(f"{scope.arm} requests", queries.requests, scope.end),
            errors=self._scalar(f"{scope.arm} errors", queries.errors, scope.end),
            latency=latency,
        )

    def _scalar(self, what: str, promql: str, at: datetime | None) -> float | None:
        where = f"Prometheus at {self.url}, {what} query"
        extra = {"prometheus": self.url, "query": what, "promql": promql}
        return self._one_value(self._query(where, promql, extra, at), where, extra)

    def _histograms(
        self, what: str, promql: str, to_ms: float, at: datetime | None
    ) -> dict[str, Histogram]:
        """Each pod's histogram over the window, in milliseconds."""
        where = f"Prometheus at {self.url}, {what} query"
        extra = {"prometheus": self.url, "query": what, "promql": promql}
        result = self._query(where, promql, extra, at)
        if not isinstance(result, list):
            raise self._unavailable(
                f"{where}: unexpected answer {str(result)[:80]!r}", extra, "answer"
            )
        buckets: dict[str, list[tuple[float, float]]] = {}
        for item in result:
            metric = item.get("metric", {}) if isinstance(item, dict) else {}
            try:
                bound = float(metric["le"]) * to_ms
                count = float(item["value"][1])
            except (KeyError, IndexError, TypeError, ValueError):
                raise self._unavailable(
                    f"{where}: a series without a bucket bound (le) or value: {_labels(item)}",
                    extra,
                    "answer",
                ) from None
            if not math.isnan(count):
                buckets.setdefault(str(metric.get("pod", "")), []).append((bound, count))
        try:
            pods = {pod: Histogram.from_buckets(pairs) for pod, pairs in buckets.items()}
        except ValueError as exc:
            raise self._unavailable(f"{where}: {exc}", extra, "answer") from None
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
        result = self._query(where, promql, extra, steps=(first, end, f"{block}s"))
        if not isinstance(result, list):
            raise self._unavailable(
                f"{where}: unexpected answer {str(result)[:80]!r}", extra, "answer"
            )
        by_time: dict[float, list[tuple[float, float]]] = {}
        for item in result:
            metric = item.get("metric", {}) if isinstance(item, dict) else {}
            try:
                bound = float(metric["le"]) * query.to_ms
                points = [(float(t), float(v)) for t, v in item["values"]]
            except (KeyError, TypeError, ValueError):
                raise self._unavailable(
                    f"{where}: a series without a bucket bound (le) or values: {_labels(item)}",
                    extra,
                    "answer",
                ) from None
            for at, count in points:
                if not math.isnan(count):
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

    def _query(
        self,
        where: str,
        promql: str,
        extra: dict[str, Any],
        at: datetime | None = None,
        *,
        steps: tuple[datetime, datetime, str] | None = None,
    ) -> Any:
        """An instant query at ``at`` (None: Prometheus' now), or with ``steps``
        (start, end, step) a range query."""
        started = time.monotonic()
        # Prometheus' own evaluation timeout, so a heavy query ends server-side too.
        params = {"timeout": f"{self.timeout_seconds:g}s"}
        try:
            if steps is None:
                if at is not None:  # both arms, and every query of one, at one instant
                    params["time"] = f"{at.timestamp():.3f}"
                result = self._client.custom_query(
                    promql, params=params, timeout=self.timeout_seconds
                )
            else:
                start, end, step = steps
                result = self._client.custom_query_range(
                    promql, start, end, step, params=params, timeout=self.timeout_seconds
                )
        except requests.Timeout:
            raise self._unavailable(
                f"{where}: no answer within {self.timeout_seconds:g}s", extra, "timeout"
            ) from None
        except requests.ConnectionError as exc:
            raise self._unavailable(
                f"{where}: cannot connect ({_reason(exc)})", extra, "connection"
            ) from None
        except requests.RequestException as exc:
            raise self._unavailable(f"{where}: request failed ({_reason(exc)})", extra) from None
        except PrometheusApiClientException as exc:
            raise self._unavailable(f"{where}: {_http_error(exc)}", extra, "http") from None
        except ValueError as exc:  # the body was not JSON: not a Prometheus API
            raise self._unavailable(
                f"{where}: unreadable answer ({exc})", extra, "answer"
            ) from None
        log.debug(
            "prometheus query answered",
            extra={**extra, "elapsed_ms": round((time.monotonic() - started) * 1000, 1)},
        )
        return result

    def _one_value(self, result: Any, where: str, extra: dict[str, Any]) -> float | None:
        if isinstance(result, dict):  # a scalar or string result: {"resultType":..., ...}
            result = [{"metric": {}, "value": result.get("result")}]
        if not isinstance(result, list):
            raise self._unavailable(
                f"{where}: unexpected answer {str(result)[:80]!r}", extra, "answer"
            )
        if not result:
            log.info("prometheus query: no series", extra=extra)
            return None
        if len(result) > 1:
            labels = ", ".join(_labels(item) for item in result[:3])
            more = f" and {len(result) - 3} more" if len(result) > 3 else ""
            raise self._unavailable(
                f"{where} returned {len(result)} series ({labels}{more}); aggregate it to one"
                " number per arm (max for latency quantiles, sum for counts)",
                extra,
                "answer",
            )
        item = result[0]
        try:
            value = float(item["value"][1]) if "value" in item else float(item[1])
        except (KeyError, IndexError, TypeError, ValueError):
            raise self._unavailable(
                f"{where}: unexpected answer {str(item)[:80]!r} (a range query?)", extra, "answer"
            ) from None
        if math.isnan(value) or math.isinf(value):
            log.info("prometheus query: not a number", extra={**extra, "value": str(value)})
            return None
        log.debug("prometheus query: one number", extra={**extra, "value": value})
        return value

    @staticmethod
    def _unavailable(
        message: str, extra: dict[str, Any], reason: QueryErrorReason = "error"
    ) -> MetricsUnavailable:
        log.warning("prometheus query failed", extra={**extra, "error": message, "reason": reason})
        return MetricsUnavailable(message, reason)


def _labels(item: Any) -> str:
    metric = item.get("metric", {}) if isinstance(item, dict) else {}
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(metric.items()))
    return "{" + inner + "}"


def _reason(exc: Exception) -> str:
    """The innermost cause of a requests error, on one line (``Connection refused``)."""
    text = str(exc)
    for marker in ("] ", "Error("):
        if marker in text:
            text = text.rsplit(marker, 1)[-1]
    return text.strip("()'\" ")[:_MAX_DETAIL] or type(exc).__name__


def _http_error(exc: PrometheusApiClientException) -> str:
    """``HTTP 400: parse error ...`` from the client's ``HTTP Status Code 400 (b'...')``."""
    text = str(exc)
    status = re.search(r"HTTP Status Code (\d+)", text)
    code = f"HTTP {status.group(1)}" if status else "HTTP error"
    detail = ""
    body = re.search(r"\((b'.*'|b\".*\")\)\s*$", text, re.S)
    if body:
        try:
            raw = ast.literal_eval(body.group(1))
        except (ValueError, SyntaxError):
            raw = b""
        if isinstance(raw, bytes):
            detail = raw.decode("utf-8", "replace")
            try:
                answer = json.loads(raw)
            except ValueError:
                answer = None
            if isinstance(answer, dict) and answer.get("error"):
                detail = str(answer["error"])
    detail = " ".join(detail.split())[:_MAX_DETAIL]
    return f"{code}: {detail}" if detail else code
