"""The PromQL an analysis runs for one arm: built-in queries and user templates.

The label contract (what the chart's PodMonitor and the local stack put on every
series scraped from a Triton pod): ``namespace``, ``llmdeployment`` (the resource's
name), ``revision`` and ``track`` (``stable`` or ``canary``, the pod's
``llmcanary.io/track`` label, which the operator keeps current).

Templates use ``{arm}``, ``{namespace}``, ``{name}``, ``{revision}``, ``{window}``,
``{model}`` and ``{quantile}``; a latency query answers milliseconds, the request and
error queries answer counts over the window.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass
from datetime import timedelta

from llmcanary.analysis.types import Arm, ArmQueries
from llmcanary.api.spec import AnalysisSpec
from llmcanary.api.types import parse_duration

TEMPLATE_VARIABLES = ("arm", "namespace", "name", "revision", "window", "model", "quantile")

_SELECTOR = 'namespace="{namespace}",llmdeployment="{name}",track="{arm}",model="{model}"'

# Triton's summary quantiles are per pod and cannot be averaged: the arm's P95 is
# the worst pod's. Needs tritonserver --metrics-config=summary_latencies=true.
SUMMARY_LATENCY = (
    'max(nv_inference_request_summary_us{{quantile="{quantile}",' + _SELECTOR + "}}) / 1000"
)
# Triton 2.52+ exposes a first-response (time to first token) histogram, which can be
# aggregated across pods before the quantile is taken.
HISTOGRAM_LATENCY = (
    "histogram_quantile({quantile}, sum by (le) "
    "(rate(nv_inference_first_response_histogram_ms_bucket{{" + _SELECTOR + "}}[{window}])))"
)
REQUESTS = "sum(increase(nv_inference_request_success{{" + _SELECTOR + "}}[{window}]))"
ERRORS = "sum(increase(nv_inference_request_failure{{" + _SELECTOR + "}}[{window}]))"


@dataclass(frozen=True)
class QueryContext:
    """What a query may depend on besides the arm."""

    namespace: str
    name: str
    model: str
    revisions: dict[Arm, str]


def promql_duration(window: timedelta) -> str:
    """A Prometheus range (``90s``); whole seconds, at least 1s."""
    return f"{max(1, math.ceil(window.total_seconds()))}s"


def _check_template(text: str) -> None:
    names = {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}
    unknown = sorted(names - set(TEMPLATE_VARIABLES))
    if unknown:
        raise ValueError(
            f"unknown template variables {unknown}; use {', '.join(TEMPLATE_VARIABLES)}"
            " (write literal braces as {{ and }})"
        )


def arm_queries(analysis: AnalysisSpec, context: QueryContext, arm: Arm) -> ArmQueries:
    """The three queries for ``arm``: the user's templates where given, else built-ins."""
    window = promql_duration(parse_duration(analysis.interval))
    values = {
        "arm": arm,
        "namespace": context.namespace,
        "name": context.name,
        "revision": context.revisions.get(arm, ""),
        "window": window,
        "model": context.model,
        "quantile": f"{analysis.latency.quantile:g}",
    }
    builtin_latency = SUMMARY_LATENCY if analysis.metric == "summary" else HISTOGRAM_LATENCY
    templates = analysis.queries

    def render(template: str | None, default: str) -> str:
        text = template if template is not None else default
        _check_template(text)
        return text.format(**values)

    return ArmQueries(
        arm=arm,
        latency=render(templates.latency, builtin_latency),
        requests=render(templates.requests, REQUESTS),
        errors=render(templates.errors, ERRORS),
    )
