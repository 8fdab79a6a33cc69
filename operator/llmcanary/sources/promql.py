"""The PromQL of each metrics preset, and of the user's templates. Pure.

The label contract (what the chart's PodMonitor and the local stack put on every series
scraped from a serving pod): ``namespace``, ``llmdeployment`` (the resource's name),
``revision``, ``track`` (``stable`` or ``canary``, the pod's ``llmcanary.io/track``
label, which the operator keeps current) and ``pod``. Triton's and the vLLM backend's
own series add ``model`` and ``version``.

Latency comes from histograms wherever the server publishes one: the source asks for
each pod's bucket increases over the window (``sum by (le, pod)``), and the pure
analysis adds the pods up and reads the quantile, so an arm's estimate covers all its
requests whatever its pod count. Where only a quantile is published (Triton's summary,
a user's template), it is read at the end of each time block of the window: the blocks'
spread is the estimate's variance. Templates use ``{arm}``, ``{namespace}``, ``{name}``,
``{revision}``, ``{window}``, ``{model}`` and ``{quantile}``; a latency template answers
one number, the arm's quantile in milliseconds; the request and error templates answer
counts over the window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from llmcanary.analysis.types import SIGNALS, Signal
from llmcanary.api.spec import AnalysisSpec, MetricsPreset, check_template
from llmcanary.sources.base import Scope

_ARM = 'namespace="{namespace}",llmdeployment="{name}",track="{arm}"'
_MODEL = _ARM + ',model="{model}"'
# Istio's standard metrics, as the server-side proxy reports them (the model is not a label).
_MESH = _ARM + ',reporter="destination"'

# Triton's request counters: every Triton, whatever its backend.
TRITON_REQUESTS = "sum(increase(nv_inference_request_success{{" + _MODEL + "}}[{window}]))"
TRITON_ERRORS = "sum(increase(nv_inference_request_failure{{" + _MODEL + "}}[{window}]))"
# Triton's summary quantiles are per pod and cannot be added up: the arm's quantile is
# its pods' geometric mean (pods without requests in the window, NaN, left out), so an
# arm's number does not grow with its pod count as the worst pod's would. Each covers
# Triton's own sliding window, SUMMARY_SECONDS. Needs
# tritonserver --metrics-config=summary_latencies=true (the operator's pods set it).
SUMMARY_LATENCY = (
    'exp(avg(ln(nv_inference_request_summary_us{{quantile="{quantile}",'
    + _MODEL
    + "}} > 0))) / 1000"
)
# prometheus-cpp's Summary default, which Triton keeps: quantiles over the last minute.
SUMMARY_SECONDS = 60
MESH_REQUESTS = (
    "sum(increase(istio_requests_total{{" + _MESH + ',response_code!~"5.."}}[{window}]))'
)
MESH_ERRORS = "sum(increase(istio_requests_total{{" + _MESH + ',response_code=~"5.."}}[{window}]))'
# Traefik's Gateway API provider names a backend Service <namespace>-<service>-<port
# name>-<port>@kubernetesgateway in its metrics' service label; each arm is its own
# Service (NAME-<arm>, port http 8000), so the label is the arm. Series come from the
# gateway's pods: no pod label of ours is on them.
_GATEWAY_BACKEND = 'service="{namespace}-{name}-{arm}-http-8000@kubernetesgateway"'
GATEWAY_REQUESTS = (
    "sum(increase(traefik_service_requests_total{{"
    + _GATEWAY_BACKEND
    + ',code!~"5.."}}[{window}]))'
)
GATEWAY_ERRORS = (
    "sum(increase(traefik_service_requests_total{{"
    + _GATEWAY_BACKEND
    + ',code=~"5.."}}[{window}]))'
)
# The InferencePool endpoint picker's per-request series. A picker serves one pool, and
# its series name no pool: the arm is its pods' track label, which the chart's PodMonitor
# (and the local stack) put on them. The EPP (v1.5 handlers/server.go) counts a request in
# request_total once it scheduled it, and in request_error_total every request that
# failed: with error_code ModelServerError when the pod answered other than 200 (those
# are in request_total too), with a canonical code when it failed before a pod was
# chosen (no candidate, bad request: those are not). So the arm's successes are the
# scheduled ones less the model server's errors, and its errors are all of them: a pool
# that refuses every request reads as failing, not as idle.
_PICKER_TOTAL = "sum(increase(inference_objective_request_total{{" + _ARM + "}}[{window}]))"
_PICKER_SERVER_ERRORS = (
    "sum(increase(inference_objective_request_error_total{{"
    + _ARM
    + ',error_code="ModelServerError"}}[{window}]))'
)
PICKER_ERRORS = "sum(increase(inference_objective_request_error_total{{" + _ARM + "}}[{window}]))"
PICKER_REQUESTS = f"{_PICKER_TOTAL} - ({_PICKER_SERVER_ERRORS} or vector(0))"


@dataclass(frozen=True)
class HistogramQuery:
    """A Prometheus histogram, read per pod over the window."""

    metric: str  # the family's name, without _bucket
    selector: str  # a template of the labels (see the module's contract)
    to_ms: float  # what its bounds are multiplied by to be milliseconds

    def promql(self, values: dict[str, str]) -> str:
        selector = self.selector.format(**values)
        window = values["window"]
        return f"sum by (le, pod) (increase({self.metric}_bucket{{{selector}}}[{window}]))"

    def block_promql(self, values: dict[str, str], block: str) -> str:
        """The arm's histogram (pods added up) over one block, for a range query stepping
        by the block: how the latency moved within the window."""
        selector = self.selector.format(**values)
        return f"sum by (le) (increase({self.metric}_bucket{{{selector}}}[{block}]))"


@dataclass(frozen=True)
class QuantileQuery:
    """PromQL that answers one number: the arm's latency at ``{quantile}``, in ms.

    Read over the window, and at the end of each time block of it (a range query) with
    ``{window}`` the block's length: the blocks' spread is the estimate's variance.
    ``span_seconds``: the time each answer covers whatever ``{window}`` says (a
    server-side sliding window, Triton's summary's); no block is shorter, so that no two
    blocks count the same requests."""

    template: str
    method: str  # how status names it
    span_seconds: int | None = None

    def promql(self, values: dict[str, str], quantile: float) -> str:
        check_template(self.template)
        return self.template.format(**{**values, "quantile": f"{quantile:g}"})

    def block_promql(self, values: dict[str, str], quantile: float, block: str) -> str:
        """The same number over one block, for a range query stepping by the block."""
        return self.promql({**values, "window": block}, quantile)


LatencyQuery = HistogramQuery | QuantileQuery


@dataclass(frozen=True)
class Preset:
    requests: str
    errors: str
    latency: dict[Signal, LatencyQuery]


PRESETS: dict[MetricsPreset, Preset] = {
    # The Triton vLLM backend (and tiny-llm, which publishes the same families).
    "tritonVLLM": Preset(
        TRITON_REQUESTS,
        TRITON_ERRORS,
        {
            "e2eLatency": HistogramQuery("vllm:e2e_request_latency_seconds", _MODEL, 1000),
            "ttft": HistogramQuery("vllm:time_to_first_token_seconds", _MODEL, 1000),
            "tpot": HistogramQuery("vllm:time_per_output_token_seconds", _MODEL, 1000),
        },
    ),
    # Triton's own metrics, any backend: end-to-end from the summary, TTFT from the
    # first-response histogram (Triton 2.52+; its default buckets are coarse).
    "triton": Preset(
        TRITON_REQUESTS,
        TRITON_ERRORS,
        {
            "e2eLatency": QuantileQuery(
                SUMMARY_LATENCY, "Triton's summary (its pods' geometric mean)", SUMMARY_SECONDS
            ),
            "ttft": HistogramQuery("nv_inference_first_response_histogram_ms", _MODEL, 1),
        },
    ),
    # What the mesh measured at the serving pod's sidecar.
    "istio": Preset(
        MESH_REQUESTS,
        MESH_ERRORS,
        {"e2eLatency": HistogramQuery("istio_request_duration_milliseconds", _MESH, 1)},
    ),
    # What the Gateway API gateway (Traefik) measured per backend: the whole response,
    # every token streamed, and 5xx it answered itself (a backend that refused the
    # connection), which Triton never counts.
    "traefik": Preset(
        GATEWAY_REQUESTS,
        GATEWAY_ERRORS,
        {
            "e2eLatency": HistogramQuery(
                "traefik_service_request_duration_seconds", _GATEWAY_BACKEND, 1000
            )
        },
    ),
    # What the InferencePool's endpoint picker measured for the requests it scheduled on
    # the arm's pool: end to end always, TTFT and TPOT where its latency plugin records
    # them (otherwise those criteria wait for samples that never come: docs/canary.md).
    "endpointPicker": Preset(
        PICKER_REQUESTS,
        PICKER_ERRORS,
        {
            "e2eLatency": HistogramQuery(
                "inference_objective_request_duration_seconds", _ARM, 1000
            ),
            "ttft": HistogramQuery("inference_objective_request_ttft_seconds", _ARM, 1000),
            "tpot": HistogramQuery("inference_objective_request_tpot_seconds", _ARM, 1000),
        },
    ),
}


@dataclass(frozen=True)
class ArmQueries:
    """Everything one arm's reading needs, rendered."""

    requests: str
    errors: str
    latency: dict[Signal, LatencyQuery]
    values: dict[str, str]  # the template variables, for the latency queries


def promql_duration(window: timedelta) -> str:
    """A Prometheus range (``90s``); whole seconds, at least 1s."""
    return f"{max(1, math.ceil(window.total_seconds()))}s"


def arm_queries(analysis: AnalysisSpec, scope: Scope) -> ArmQueries:
    """The preset's queries for the arm, with the user's templates in their place where
    given. Raises ``ValueError`` for a template with an unknown variable."""
    values = {
        "arm": scope.arm,
        "namespace": scope.namespace,
        "name": scope.name,
        "revision": scope.revision,
        "window": promql_duration(scope.window),
        "model": scope.model,
        "quantile": "",  # filled in per criterion
    }
    preset = PRESETS[analysis.metrics]
    templates = analysis.queries

    def render(template: str | None, default: str) -> str:
        text = template if template is not None else default
        check_template(text)
        return text.format(**values)

    latency: dict[Signal, LatencyQuery] = dict(preset.latency)
    for signal in SIGNALS:
        template = templates.for_metric(signal)
        if template is not None:
            check_template(template)
            latency[signal] = QuantileQuery(template, "your PromQL (analysis.queries)")
    return ArmQueries(
        requests=render(templates.requests, preset.requests),
        errors=render(templates.errors, preset.errors),
        latency=latency,
        values=values,
    )
