"""Analysis, pure: histogram arithmetic, each criterion kind, the presets' PromQL and templates."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from specs import arm
from test_rollout_machine import HEALTHY, spec_for

from llmcanary.analysis.histogram import Histogram
from llmcanary.analysis.types import ArmReading, LatencyReading, needs
from llmcanary.analysis.verdict import judge
from llmcanary.api.spec import AnalysisSpec, Criterion
from llmcanary.sources.base import Scope
from llmcanary.sources.promql import HistogramQuery, QuantileQuery, arm_queries

INF = math.inf


def hist(*pairs: tuple[float, float]) -> Histogram:
    return Histogram.from_buckets(pairs)


# --- histograms ---------------------------------------------------------------------------

# 100 observations: 50 at or under 100 ms, 40 in (100, 200], 10 in (200, 400].
H = hist((100, 50), (200, 90), (400, 100), (INF, 100))


def test_quantiles_interpolate_inside_their_bucket_as_histogram_quantile_does() -> None:
    assert H.quantile(0.5) == 100.0  # rank 50: the top of the first bucket
    assert H.quantile(0.25) == 50.0  # the first bucket starts at 0
    assert H.quantile(0.7) == 150.0  # rank 70: halfway through (100, 200]
    assert H.quantile(0.95) == 300.0  # rank 95: halfway through (200, 400]
    assert H.bucket_of(0.95) == (200, 400)
    assert H.count == 100


def test_a_quantile_in_the_inf_bucket_is_the_highest_finite_bound() -> None:
    tail = hist((100, 10), (200, 20), (INF, 100))
    assert tail.quantile(0.95) == 200.0


def test_an_empty_histogram_has_no_quantile() -> None:
    assert hist((100, 0), (INF, 0)).quantile(0.95) is None


def test_buckets_are_sorted_and_made_monotonic_as_increase_can_break_them() -> None:
    # increase() extrapolates each bucket on its own: 49.9 under a neighbour's 50.
    h = hist((INF, 100), (200, 90), (100, 50.2), (150, 49.9))
    assert h.bounds == (100, 150, 200, INF)
    assert h.cumulative == (50.2, 50.2, 90, 100)
    assert hist((100, -1), (INF, 3)).cumulative == (0, 3)


@pytest.mark.parametrize(
    ("pairs", "message"),
    [((), "needs buckets"), (((100, 1), (200, 2)), r"\+Inf"), (((100, 1), (100, 2)), "duplicate")],
)
def test_malformed_buckets_are_refused(pairs: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Histogram.from_buckets(pairs)


def test_pods_add_up_before_the_quantile_is_taken() -> None:
    # One pod fast and busy, one slow and quiet: the arm's P95 covers all requests,
    # where the worst pod's quantile (a summary's max) would read 400 whatever the mix.
    busy = hist((100, 95), (200, 100), (400, 100), (INF, 100))
    quiet = hist((100, 0), (200, 0), (400, 5), (INF, 5))
    reading = LatencyReading(pods={"a": busy, "b": quiet})
    assert reading.samples == 105
    assert reading.quantile(0.5) == pytest.approx(100 * 52.5 / 95)
    assert reading.quantile(0.95) == pytest.approx(100 + 100 * (99.75 - 95) / 5)
    assert Histogram.total([]) is None


def test_histograms_with_different_buckets_do_not_add() -> None:
    with pytest.raises(ValueError, match="different buckets"):
        H + hist((50, 1), (INF, 1))


# --- criteria ---------------------------------------------------------------------------

TTFT_ALONE = arm(100.0, ttft=130.0)  # end-to-end and TPOT as the stable's


@pytest.mark.parametrize(
    ("stable", "canary", "verdict"),
    [
        (HEALTHY, HEALTHY, "pass"),
        (HEALTHY, arm(119.0), "pass"),
        (HEALTHY, arm(121.0), "fail"),
        (HEALTHY, arm(100.0, 980.0, 20.0), "fail"),  # 2% errors
        (HEALTHY, arm(100.0, 995.0, 5.0), "pass"),
        (HEALTHY, arm(None), "inconclusive"),
        (HEALTHY, arm(100.0, None, None), "inconclusive"),
        (arm(100.0, 50.0, 0.0), HEALTHY, "inconclusive"),
        (HEALTHY, arm(100.0, 1000.0, None), "pass"),
        (HEALTHY, TTFT_ALONE, "fail"),
        (HEALTHY, arm(100.0, tpot=125.0), "fail"),
        (HEALTHY, arm(100.0, e2eLatency=125.0), "fail"),
    ],
)
def test_verdicts_under_the_default_criteria(
    stable: ArmReading, canary: ArmReading, verdict: str
) -> None:
    assert judge(spec_for().canary.analysis, stable, canary).verdict == verdict


def test_each_criterion_has_its_own_result_and_the_failing_one_is_named() -> None:
    check = judge(spec_for().canary.analysis, HEALTHY, TTFT_ALONE)
    results = {r.criterion.label: r for r in check.results}
    assert list(results) == ["e2eLatency p95", "ttft p95", "tpot p95", "errorRate"]
    assert results["ttft p95"].verdict == "fail"
    assert (results["ttft p95"].canary.value, results["ttft p95"].stable.value) == (130, 100)
    assert {r.verdict for k, r in results.items() if k != "ttft p95"} == {"pass"}
    assert check.reason == "canary ttft p95 130 ms > stable 100 ms +20%"
    assert results["errorRate"].unit == "%" and results["ttft p95"].unit == "ms"


def test_absolute_limits_and_other_quantiles() -> None:
    criteria = [
        {"metric": "ttft", "quantile": 0.99, "maxMilliseconds": 500},
        {"metric": "e2eLatency", "quantile": 0.5, "maxIncreasePercent": 10},
        {"metric": "errorRate", "maxPercent": 5},
    ]
    analysis = spec_for(analysis={"criteria": criteria}).canary.analysis
    slow = arm(100.0, 1000.0, 40.0, ttft=600.0)  # 3.8% errors: under 5
    check = judge(analysis, arm(100.0, ttft=600.0), slow)
    assert check.verdict == "fail"
    assert check.reason == "canary ttft p99 600 ms > maxMilliseconds 500"
    assert [r.verdict for r in check.results] == ["fail", "pass", "pass"]


def test_a_failure_wins_over_an_inconclusive_criterion() -> None:
    canary = arm(100.0, ttft=None, tpot=200.0)
    check = judge(spec_for().canary.analysis, HEALTHY, canary)
    assert check.verdict == "fail"
    assert [r.verdict for r in check.results] == ["pass", "inconclusive", "fail", "pass"]
    nothing_failed = judge(spec_for().canary.analysis, HEALTHY, arm(100.0, ttft=None))
    assert nothing_failed.verdict == "inconclusive"
    assert "no ttft p95 for the canary arm" in nothing_failed.reason


def test_too_few_requests_show_the_numbers_but_judge_nothing() -> None:
    check = judge(spec_for().canary.analysis, HEALTHY, arm(500.0, 20.0, 0.0))
    assert check.verdict == "inconclusive"
    assert check.reason == "canary arm served 20 requests, fewer than minSamples 100"
    assert {r.verdict for r in check.results} == {"inconclusive"}
    assert check.results[0].canary.value == 500.0


def test_at_100_percent_the_stable_arm_needs_no_traffic() -> None:
    analysis = spec_for().canary.analysis
    idle_stable = arm(100.0, 0.0, 0.0)  # what is left of its window, no new requests
    assert judge(analysis, idle_stable, HEALTHY).verdict == "inconclusive"
    assert judge(analysis, idle_stable, HEALTHY, stable_share=0).verdict == "pass"
    slower = arm(130.0)
    assert judge(analysis, idle_stable, slower, stable_share=0).verdict == "fail"
    gone = arm(None, None, None)  # no stable series left: absolute limits only
    check = judge(analysis, gone, slower, stable_share=0)
    assert check.verdict == "pass" and "absolute limits only" in check.reason


def test_a_bucket_wider_than_the_allowed_rise_is_said() -> None:
    coarse = hist((1000, 0), (2500, 100), (INF, 100))  # vLLM's e2e buckets: 1 s, 2.5 s
    reading = ArmReading(1000.0, 0.0, {"e2eLatency": LatencyReading(pods={"p": coarse})})
    only_e2e = {"criteria": [{"metric": "e2eLatency", "maxIncreasePercent": 20}]}
    check = judge(spec_for(analysis=only_e2e).canary.analysis, reading, reading)
    assert check.verdict == "pass"
    assert "coarse buckets: the estimate lies in (1000 ms, 2500 ms]" in check.reason


def test_needs_lists_each_signal_with_its_quantiles() -> None:
    rules = [
        Criterion(metric="ttft", quantile=0.99, max_milliseconds=1),
        Criterion(metric="ttft", max_increase_percent=20),
        Criterion(metric="errorRate", max_percent=1),
    ]
    assert needs(rules) == {"ttft": (0.95, 0.99)}


# --- the spec's rules for criteria --------------------------------------------------------


def test_defaults_follow_the_preset() -> None:
    labels = {
        preset: [c.label for c in AnalysisSpec(metrics=preset).rules]  # type: ignore[arg-type]
        for preset in ("tritonVLLM", "triton", "istio")
    }
    assert labels == {
        "tritonVLLM": ["e2eLatency p95", "ttft p95", "tpot p95", "errorRate"],
        "triton": ["e2eLatency p95", "errorRate"],
        "istio": ["e2eLatency p95", "errorRate"],
    }
    assert AnalysisSpec().rules[0].max_increase_percent == 20


@pytest.mark.parametrize(
    ("analysis", "message"),
    [
        (
            {"criteria": [{"metric": "errorRate", "maxPercent": 1, "quantile": 0.9}]},
            "maxPercent only",
        ),
        ({"criteria": [{"metric": "ttft"}]}, "maxIncreasePercent"),
        ({"criteria": [{"metric": "ttft", "maxPercent": 1}]}, "not maxPercent"),
        (
            {"metrics": "istio", "criteria": [{"metric": "tpot", "maxMilliseconds": 5}]},
            "queries.tpot",
        ),
        ({"latency": {"maxIncreasePercent": 20}}, "metric: e2eLatency, quantile: 0.95"),
        ({"errorRate": {"maxPercent": 1}}, "metric: errorRate, maxPercent: 1"),
        ({"metric": "summary"}, "metrics: triton"),
    ],
)
def test_bad_criteria_are_refused_with_how_to_write_them(
    analysis: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        AnalysisSpec.model_validate(analysis)


def test_a_template_lets_a_preset_judge_a_signal_it_lacks() -> None:
    analysis = AnalysisSpec.model_validate(
        {
            "metrics": "istio",
            "criteria": [{"metric": "tpot", "maxMilliseconds": 50}],
            "queries": {"tpot": "my_tpot_ms{{q='{quantile}'}}"},
        }
    )
    assert [c.label for c in analysis.rules] == ["tpot p95"]


# --- PromQL -------------------------------------------------------------------------------

SCOPE = Scope("ns", "tiny", "tiny-llm", "canary", "bbb", timedelta(seconds=20))
ARM = 'namespace="ns",llmdeployment="tiny",track="canary"'


def test_the_vllm_preset_reads_each_pods_buckets_over_the_window() -> None:
    queries = arm_queries(AnalysisSpec(), SCOPE)
    ttft = queries.latency["ttft"]
    assert isinstance(ttft, HistogramQuery) and ttft.to_ms == 1000
    assert ttft.promql(queries.values) == (
        "sum by (le, pod) (increase(vllm:time_to_first_token_seconds_bucket"
        f'{{{ARM},model="tiny-llm"}}[20s]))'
    )
    assert set(queries.latency) == {"e2eLatency", "ttft", "tpot"}
    assert queries.requests == (
        f'sum(increase(nv_inference_request_success{{{ARM},model="tiny-llm"}}[20s]))'
    )


def test_the_triton_preset_keeps_the_summary_and_reads_first_response_buckets() -> None:
    queries = arm_queries(AnalysisSpec(metrics="triton"), SCOPE)
    e2e, ttft = queries.latency["e2eLatency"], queries.latency["ttft"]
    assert isinstance(e2e, QuantileQuery)
    assert e2e.promql(queries.values, 0.99) == (
        f'max(nv_inference_request_summary_us{{quantile="0.99",{ARM},model="tiny-llm"}}) / 1000'
    )
    assert isinstance(ttft, HistogramQuery) and ttft.to_ms == 1
    assert "nv_inference_first_response_histogram_ms_bucket" in ttft.promql(queries.values)


def test_the_istio_preset_reads_the_mesh_and_counts_5xx_as_errors() -> None:
    queries = arm_queries(AnalysisSpec(metrics="istio"), SCOPE)
    mesh = f'{ARM},reporter="destination"'
    e2e = queries.latency["e2eLatency"]
    assert isinstance(e2e, HistogramQuery)
    assert e2e.promql(queries.values) == (
        f"sum by (le, pod) (increase(istio_request_duration_milliseconds_bucket{{{mesh}}}[20s]))"
    )
    assert queries.errors == (
        f'sum(increase(istio_requests_total{{{mesh},response_code=~"5.."}}[20s]))'
    )
    assert 'response_code!~"5.."' in queries.requests


def test_templates_render_every_variable_and_refuse_unknown_ones() -> None:
    analysis = AnalysisSpec.model_validate(
        {
            "queries": {
                "ttft": 'max(t{{ns="{namespace}",n="{name}",r="{revision}",t="{arm}"}})'
                " * {quantile} + {model}",
                "requests": "sum(increase(req[{window}]))",
            }
        }
    )
    queries = arm_queries(analysis, SCOPE)
    ttft = queries.latency["ttft"]
    assert isinstance(ttft, QuantileQuery)
    assert ttft.promql(queries.values, 0.9) == (
        'max(t{ns="ns",n="tiny",r="bbb",t="canary"}) * 0.9 + tiny-llm'
    )
    assert queries.requests == "sum(increase(req[20s]))"
    assert "nv_inference_request_failure" in queries.errors  # the preset's stays
    assert isinstance(queries.latency["tpot"], HistogramQuery)
    bad = AnalysisSpec.model_validate({"queries": {"errors": "up{{job='{job}'}}"}})
    with pytest.raises(ValueError, match=r"unknown template variables \['job'\]"):
        arm_queries(bad, SCOPE)
