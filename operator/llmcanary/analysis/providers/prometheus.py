"""Prometheus as the metrics source: instant queries through ``prometheus_api_client``.

Every query of an arm must answer one number or nothing: an empty vector (or NaN, or
±Inf) is a missing series (``None``, which the verdict treats as "not enough data");
more than one series is a query error, because an arm is one number and silently
picking a series would compare the wrong things. Any failure to get an answer
(connection refused, timeout, HTTP error, bad PromQL) is :class:`MetricsUnavailable`
with a one-line message naming the address and the arm; never a traceback.

Each query is bounded by ``timeout_seconds`` (connect, read, and Prometheus' own
evaluation timeout), with no retries, so one :meth:`PrometheusProvider.sample` takes
at most three times that.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import re
import time
from typing import Any, Literal

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from llmcanary.analysis.types import (
    ArmQueries,
    ArmSample,
    MetricsUnavailable,
    QueryErrorReason,
)

log = logging.getLogger(__name__)

Field = Literal["latency", "requests", "errors"]
_MAX_DETAIL = 300


class PrometheusProvider:
    """A :class:`~llmcanary.analysis.types.MetricsProvider` reading one Prometheus."""

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

    def sample(self, queries: ArmQueries) -> ArmSample:
        return ArmSample(
            latency_ms=self._scalar(queries, "latency", queries.latency),
            requests=self._scalar(queries, "requests", queries.requests),
            errors=self._scalar(queries, "errors", queries.errors),
        )

    def _scalar(self, queries: ArmQueries, field: Field, promql: str) -> float | None:
        where = f"Prometheus at {self.url}, {queries.arm} {field} query"
        extra: dict[str, Any] = {
            "prometheus": self.url,
            "arm": queries.arm,
            "query_field": field,
            "promql": promql,
        }
        started = time.monotonic()
        try:
            result = self._client.custom_query(
                promql,
                # Prometheus' own evaluation timeout, so a heavy query ends server-side too.
                params={"timeout": f"{self.timeout_seconds:g}s"},
                timeout=self.timeout_seconds,
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
        elapsed_ms = round((time.monotonic() - started) * 1000, 1)

        value = self._one_value(result, where, extra)
        log.debug(
            "prometheus query answered",
            extra={**extra, "value": value, "elapsed_ms": elapsed_ms},
        )
        return value

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
