"""Analysis, pure: histogram arithmetic, each criterion kind, the presets' PromQL and templates."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from specs import lognormal_histogram, make_spec, measured_arm

from llmcanary.analysis import sequential
from llmcanary.analysis.histogram import Histogram
from llmcanary.analysis.sequential import MIN_BLOCKS
from llmcanary.analysis.types import SIGNALS, ArmReading, LatencyReading, needs
from llmcanary.analysis.verdict import Check, judge
from llmcanary.api.spec import AnalysisSpec, Criterion, LLMDeploymentSpec, QueryTemplates
from llmcanary.api.status import LLMDeploymentStatus
from llmcanary.rollout.checks import judgement
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

BASELINE = measured_arm(100.0, 1000)


def against(
    reference: ArmReading,
    canary: ArmReading,
    spec: LLMDeploymentSpec | None = None,
    *,
    weight: int = 25,
) -> Check:
    """Judge as the operator does at ``weight``% against a fresh baseline (or the stable
    arm, where the spec says so)."""
    spec = spec or make_spec()
    status = LLMDeploymentStatus(canary_weight=weight)
    return judge(spec.canary.analysis, reference, canary, judgement(spec, status, 600.0))


@pytest.mark.parametrize(
    ("canary", "verdict", "failing"),
    [
        (measured_arm(100.0, 1000), "pass", None),
        (measured_arm(100.0, 1000, ttft=160.0), "fail", "ttft p95"),
        (measured_arm(100.0, 1000, tpot=150.0), "fail", "tpot p95"),
        (measured_arm(100.0, 1000, e2eLatency=150.0), "fail", "e2eLatency p95"),
        (measured_arm(100.0, 1000, 50), "fail", "errorRate"),  # 5% errors
        (measured_arm(100.0, 1000, 2), "pass", None),  # 0.2% errors
    ],
)
def test_verdicts_under_the_default_criteria(
    canary: ArmReading, verdict: str, failing: str | None
) -> None:
    check = against(BASELINE, canary)
    assert check.verdict == verdict, check.reason
    assert check.reference == "baseline"
    if failing:
        assert [r.criterion.label for r in check.results if r.verdict == "fail"] == [failing]


def test_each_criterion_reports_both_arms_the_effect_and_its_bounds() -> None:
    check = against(BASELINE, measured_arm(100.0, 1000, ttft=160.0))
    results = {r.criterion.label: r for r in check.results}
    assert list(results) == ["e2eLatency p95", "ttft p95", "tpot p95", "errorRate"]
    ttft = results["ttft p95"]
    assert ttft.canary.value == pytest.approx(160 * math.exp(0.5 * 1.645), rel=0.03)
    assert ttft.reference.value == pytest.approx(100 * math.exp(0.5 * 1.645), rel=0.03)
    assert ttft.effect is not None
    assert ttft.effect.value == pytest.approx(60, abs=4)
    assert ttft.effect.lower < 60 < ttft.effect.upper
    assert ttft.effect.lower > 20, "the limit is outside the bounds: a decided failure"
    assert check.reason.startswith("canary ttft p95 ")
    assert "vs baseline" in check.reason and "limit +20%" in check.reason
    assert results["errorRate"].unit == "%" and ttft.unit == "ms"


def test_a_small_regression_waits_for_evidence_and_says_how_much_more() -> None:
    # +10% on every latency over 300 requests: not enough to call either way.
    canary = measured_arm(110.0, 300)
    check = against(measured_arm(100.0, 300), canary)
    assert (check.verdict, check.waiting) == ("inconclusive", True)
    assert check.needed is not None and check.needed > 0
    assert f"about {check.needed} more requests per arm" in check.reason
    assert "~" in check.reason and "requests/s" in check.reason  # the rate: 300 in 600 s
    # With ten times the evidence the +10% canary is within +20%: a pass.
    assert against(measured_arm(100.0, 3000), measured_arm(110.0, 3000)).verdict == "pass"


def test_too_few_requests_show_the_numbers_but_wait() -> None:
    check = against(BASELINE, measured_arm(500.0, 120))
    assert (check.verdict, check.waiting, check.needed) == ("inconclusive", True, 80)
    assert check.reason.startswith("collecting evidence: canary 120/200 requests")
    assert {r.verdict for r in check.results} == {"inconclusive"}
    assert check.results[0].canary.value is not None and check.results[0].canary.value > 500


def test_missing_series_are_inconclusive_not_waiting() -> None:
    check = against(BASELINE, ArmReading(1000.0, 0.0, {}))
    assert (check.verdict, check.waiting) == ("inconclusive", False)
    assert "no e2eLatency p95 for the canary arm" in check.reason
    gone = against(ArmReading(None, None), BASELINE)
    assert gone.reason == "no request series for the baseline arm"


def test_a_failure_wins_over_an_inconclusive_criterion() -> None:
    canary = measured_arm(100.0, 1000, tpot=200.0)
    canary = ArmReading(
        canary.requests, canary.errors, {k: v for k, v in canary.latency.items() if k != "ttft"}
    )
    check = against(BASELINE, canary)
    assert check.verdict == "fail"
    assert [r.verdict for r in check.results] == ["pass", "inconclusive", "fail", "pass"]


def test_without_a_baseline_unequal_per_pod_load_refuses_a_relative_verdict() -> None:
    spec = make_spec(canary={"analysis": {"baseline": "stable"}})
    # At 25% one canary pod serves 250 requests where each of 3 stable pods serves 250.
    matched = against(measured_arm(100.0, 750, pods=3), measured_arm(100.0, 250), spec)
    assert matched.reference == "stable"
    assert matched.load_ratio == pytest.approx(1.0)
    assert matched.verdict == "pass"
    # At 5% one canary pod serves 50 where 2 stable pods serve 475 each: 0.1x.
    unmatched = against(measured_arm(100.0, 950, pods=2), measured_arm(100.0, 250), spec)
    assert unmatched.load_ratio == pytest.approx(250 / 475)
    assert (unmatched.verdict, unmatched.waiting) == ("inconclusive", False)
    assert "per-pod load differs: the canary's pods serve 0.53x the stable's" in unmatched.reason
    assert "analysis.baseline: fresh" in unmatched.reason
    # Absolute limits do not compare arms: they still decide.
    absolute = make_spec(
        canary={
            "analysis": {
                "baseline": "stable",
                "criteria": [{"metric": "e2eLatency", "maxMilliseconds": 100}],
            }
        }
    )
    slow = against(measured_arm(100.0, 950, pods=2), measured_arm(300.0, 250), absolute)
    assert slow.verdict == "fail"


def test_with_a_fresh_baseline_the_load_ratio_is_reported_not_used_to_refuse() -> None:
    # A slow canary under closed-loop load completes fewer requests than its baseline in
    # the same window, though both get the same share of arrivals.
    check = against(measured_arm(100.0, 1000), measured_arm(300.0, 700))
    assert check.load_ratio == pytest.approx(0.7)
    assert check.verdict == "fail"
    assert "per-pod load differs" not in check.reason


def test_absolute_limits_and_other_quantiles() -> None:
    criteria = [
        {"metric": "ttft", "quantile": 0.99, "maxMilliseconds": 500},
        {"metric": "e2eLatency", "quantile": 0.5, "maxIncreasePercent": 10},
        {"metric": "errorRate", "maxPercent": 5},
    ]
    spec = make_spec(canary={"analysis": {"criteria": criteria}})
    slow = measured_arm(100.0, 2000, 40, ttft=600.0)  # 2% errors: under 5 points
    check = against(measured_arm(100.0, 2000, ttft=600.0), slow, spec)
    assert check.verdict == "fail"
    assert [r.verdict for r in check.results] == ["fail", "pass", "pass"]
    assert "maxMilliseconds 500" in check.reason


def test_at_100_percent_without_a_baseline_only_absolute_limits_judge() -> None:
    spec = make_spec(canary={"analysis": {"baseline": "stable"}})
    idle = ArmReading(0.0, 0.0, {})
    check = against(idle, measured_arm(130.0, 1000), spec, weight=100)
    assert check.verdict == "pass"
    assert "no stable traffic at 100%" in check.reason


# Triton's summary as the triton preset reads it: e2eLatency only, one P95 per block.
SUMMARY_SPEC = make_spec(canary={"analysis": {"metrics": "triton"}})


def summary_arm(blocks: Sequence[float | None], requests: float = 5000.0) -> ArmReading:
    """An arm of a source without histograms: its P95 in each time block."""
    values = tuple(blocks)
    last = next((v for v in reversed(values) if v is not None), None)
    return ArmReading(
        requests=requests,
        errors=0.0,
        latency={
            "e2eLatency": LatencyReading(
                quantiles={0.95: last},
                quantile_blocks={0.95: values},
                method="Triton's summary",
            )
        },
    )


def noisy_blocks(rng: random.Random, median: float, blocks: int, spread: float) -> list[float]:
    """Each block's P95 off the arm's true one by a log-normal factor: what a minute of a
    summary over a few hundred requests reads."""
    return [median * math.exp(rng.gauss(0.0, spread)) for _ in range(blocks)]


def test_a_source_without_histograms_is_judged_block_by_block_not_on_one_number() -> None:
    # The fresh-clone run that rolled back an identical pipeline: the last minute read
    # 330 ms against 239 ms (+38%), the minutes before it were alike.
    minutes = [246.0, 238.0, 252.0, 241.0, 243.0, 330.0]
    baseline = summary_arm([239, 251, 244, 236, 248, 239])
    canary = summary_arm(minutes)
    check = against(baseline, canary, SUMMARY_SPEC)
    assert check.verdict != "fail", check.reason
    e2e = check.results[0]
    assert "6 time blocks of Triton's summary" in e2e.reason
    # What status shows is what was judged: the blocks' geometric means, not the last one.
    assert e2e.canary.value == pytest.approx(math.prod(minutes) ** (1 / len(minutes)))
    # The same +38%, minute after minute, is a regression.
    slow = summary_arm([330, 345, 337, 326, 342, 330])
    assert against(baseline, slow, SUMMARY_SPEC).verdict == "fail"


def test_blocks_pair_at_the_same_instants_so_what_slows_both_arms_cancels() -> None:
    # A minute when the node was busy: both arms twice as slow in block 3.
    baseline = summary_arm([200, 205, 400, 198, 202, 201, 199, 204])
    canary = summary_arm([203, 201, 410, 200, 199, 204, 202, 200])
    assert against(baseline, canary, SUMMARY_SPEC).verdict == "pass"
    # A block one arm has no value in (no request that minute) is left out of both.
    gap = summary_arm([203, None, 410, 200, 199, 204, 202, 200])
    check = against(baseline, gap, SUMMARY_SPEC)
    assert "7 time blocks" in check.results[0].reason
    # Nor does a last minute without requests stop the judgement (the summary reads NaN).
    quiet = summary_arm([203, 201, 410, 200, 199, 204, 202, None])
    quiet_now = ArmReading(
        quiet.requests, 0.0, {"e2eLatency": replace(quiet.latency["e2eLatency"], quantiles={})}
    )
    check = against(baseline, quiet_now, SUMMARY_SPEC)
    assert check.verdict == "pass" and "7 time blocks" in check.results[0].reason


def test_too_few_blocks_wait_and_no_blocks_at_all_is_not_judged() -> None:
    few = summary_arm([200.0] * (MIN_BLOCKS - 1))
    check = against(few, summary_arm([400.0] * (MIN_BLOCKS - 1)), SUMMARY_SPEC)
    assert check.verdict == "inconclusive" and check.waiting
    assert f"{MIN_BLOCKS - 1}/{MIN_BLOCKS} time blocks" in check.reason
    # Before the first block, status shows the arms' latest numbers.
    first_minute = [
        ArmReading(
            5000.0,
            0.0,
            {"e2eLatency": LatencyReading(quantiles={0.95: value}, quantile_blocks={0.95: ()})},
        )
        for value in (200.0, 260.0)
    ]
    check = against(*first_minute, SUMMARY_SPEC)
    assert check.waiting and "0/5 time blocks" in check.reason
    assert (check.results[0].reference.value, check.results[0].canary.value) == (200.0, 260.0)
    # A summary Triton does not publish (or a template answering nothing): no number in
    # any block of a long window is a missing series, not a reason to wait for ever.
    nothing = summary_arm([None] * 8)
    check = against(summary_arm([200.0] * 8), nothing, SUMMARY_SPEC)
    assert check.verdict == "inconclusive" and not check.waiting
    assert "no e2eLatency p95 for the canary arm (no series or no requests)" in check.reason
    # A source that gives one number and no blocks: no interval, so no verdict.
    lone = ArmReading(5000.0, 0.0, {"e2eLatency": LatencyReading(quantiles={0.95: 200.0})})
    alone = ArmReading(5000.0, 0.0, {"e2eLatency": LatencyReading(quantiles={0.95: 400.0})})
    check = against(lone, alone, SUMMARY_SPEC)
    assert check.verdict == "inconclusive" and not check.waiting
    assert "no interval for e2eLatency p95" in check.reason


def test_a_ceiling_on_a_summary_is_judged_on_its_blocks() -> None:
    spec = make_spec(
        canary={
            "analysis": {
                "metrics": "triton",
                "criteria": [{"metric": "e2eLatency", "maxMilliseconds": 300}],
            }
        }
    )
    under = summary_arm([240, 250, 245, 238, 252, 244])
    over = summary_arm([380, 395, 372, 388, 390, 379])
    assert against(under, under, spec).verdict == "pass"
    check = against(under, over, spec)
    assert check.verdict == "fail" and "maxMilliseconds 300" in check.reason


@pytest.mark.parametrize(("truth", "verdicts"), [(1.0, {"pass"}), (1.5, {"fail"})])
def test_summary_blocks_hold_the_error_budget_on_noisy_minutes(
    truth: float, verdicts: set[str]
) -> None:
    """Known truth, many rollouts' worth of checks: each minute's P95 off by 10% (a few
    hundred requests a minute). Identical arms are almost never failed, a canary 50% slower
    almost always is, after 15 minutes of a step (the spec's first step)."""
    rng = random.Random(7)
    outcomes = []
    for _ in range(200):
        baseline = summary_arm(noisy_blocks(rng, 240.0, 15, 0.10))
        canary = summary_arm(noisy_blocks(rng, 240.0 * truth, 15, 0.10))
        outcomes.append(against(baseline, canary, SUMMARY_SPEC).verdict)
    share = sum(o in verdicts for o in outcomes) / len(outcomes)
    assert share >= 0.95, outcomes
    if truth == 1.0:
        assert outcomes.count("fail") <= 2, outcomes  # about alpha, spread over the plan


def test_a_bucket_wider_than_the_allowed_rise_is_said() -> None:
    coarse = hist((1000, 0), (2500, 1000), (INF, 1000))  # vLLM's e2e buckets: 1 s, 2.5 s
    reading = ArmReading(1000.0, 0.0, {"e2eLatency": LatencyReading(pods={"p": coarse})})
    only_e2e = {"criteria": [{"metric": "e2eLatency", "maxIncreasePercent": 20}]}
    check = against(reading, reading, make_spec(canary={"analysis": only_e2e}))
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
        for preset in ("tritonVLLM", "triton", "istio", "traefik")
    }
    assert labels == {
        "tritonVLLM": ["e2eLatency p95", "ttft p95", "tpot p95", "errorRate"],
        "triton": ["e2eLatency p95", "errorRate"],
        "istio": ["e2eLatency p95", "errorRate"],
        "traefik": ["e2eLatency p95", "errorRate"],
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
    # The pods' geometric mean, pods with NaN (no request in Triton's minute) left out.
    assert e2e.promql(queries.values, 0.99) == (
        f'exp(avg(ln(nv_inference_request_summary_us{{quantile="0.99",{ARM},model="tiny-llm"}}'
        " > 0))) / 1000"
    )
    # Each answer covers Triton's last minute whatever the block: blocks are never shorter.
    assert e2e.span_seconds == 60
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
    assert ttft.span_seconds is None  # its blocks read {window} as the block's length
    assert queries.requests == "sum(increase(req[20s]))"
    assert "nv_inference_request_failure" in queries.errors  # the preset's stays
    assert isinstance(queries.latency["tpot"], HistogramQuery)
    with pytest.raises(ValueError, match=r"unknown template variables \['job'\]"):
        AnalysisSpec.model_validate({"queries": {"errors": "up{{job='{job}'}}"}})


@pytest.mark.parametrize(
    "template",
    [
        "sum(increase(req{{arm='{arm:>600000000}'}}[{window}]))",
        "sum(increase(req[{window!r}]))",
        "sum(increase(req{{n='{name!s:^99999}'}}[1m]))",
    ],
)
def test_a_template_cannot_make_the_operator_format_a_huge_string(template: str) -> None:
    # A tenant's template is formatted inside the shared operator: a width of 600,000,000
    # would allocate 600 MB there before any query is sent. Refused before formatting.
    with pytest.raises(ValueError, match="take no format spec or conversion") as refused:
        AnalysisSpec.model_validate({"queries": {"requests": template}})
    assert "write the variable alone" in str(refused.value)
    # An object stored before this check (no model validation) is refused before formatting.
    stored = AnalysisSpec.model_construct(queries=QueryTemplates.model_construct(requests=template))
    with pytest.raises(ValueError, match="take no format spec or conversion"):
        arm_queries(stored, SCOPE)


def blocked_arm(medians: list[float], per_block: int, *, cut: bool = True) -> ArmReading:
    """An arm whose window holds one log-normal block of requests per median, in time
    order; ``cut=False`` reads it as a source that cannot cut its window would."""
    blocks = [lognormal_histogram(median, 0.5, per_block) for median in medians]
    total = Histogram.total(blocks)
    assert total is not None
    return ArmReading(
        requests=total.count,
        errors=0.0,
        latency={
            signal: LatencyReading(pods={"pod-0": total}, blocks=tuple(blocks) if cut else None)
            for signal in SIGNALS
        },
    )


def test_a_canary_slow_in_bursts_is_not_failed_on_its_request_count() -> None:
    # Two of the canary's eight blocks ran at twice the latency (a noisy neighbour's
    # minute, not the revision): counted as independent requests it fails +20%; judged
    # by how the blocks moved it is not decided on this evidence.
    reference = blocked_arm([100.0] * 8, 300)
    canary = blocked_arm([100.0, 100.0, 200.0, 200.0, 100.0, 100.0, 100.0, 100.0], 300)
    naive = against(
        blocked_arm([100.0] * 8, 300, cut=False),
        blocked_arm([100.0, 100.0, 200.0, 200.0, 100.0, 100.0, 100.0, 100.0], 300, cut=False),
    )
    assert naive.verdict == "fail", naive.reason
    check = against(reference, canary)
    assert check.verdict != "fail", check.reason
    assert "requests slow together (variance x" in check.reason


def test_a_steady_regression_still_fails_when_the_window_is_cut_in_time() -> None:
    check = against(blocked_arm([100.0] * 8, 300), blocked_arm([170.0] * 8, 300))
    assert check.verdict == "fail", check.reason


def test_latencies_wait_until_the_window_holds_enough_time_blocks() -> None:
    check = against(blocked_arm([100.0] * 3, 300), blocked_arm([100.0] * 3, 300))
    assert (check.verdict, check.waiting) == ("inconclusive", True)
    assert check.reason.startswith(f"collecting evidence: 3/{MIN_BLOCKS} time blocks")


def test_a_burst_that_slowed_both_arms_cancels_in_their_difference() -> None:
    # The same two bad blocks in both arms (the node, not the revision): judged on
    # their difference, the arms are identical and the check passes; each arm judged
    # alone would have waited on bounds three times as wide.
    burst = [100.0, 100.0, 200.0, 200.0, 100.0, 100.0, 100.0, 100.0]
    check = against(blocked_arm(burst, 300), blocked_arm(burst, 300))
    assert check.verdict == "pass", check.reason
    assert "slow together" not in check.reason
    ttft = blocked_arm(burst, 300).latency["ttft"]
    assert ttft.histogram is not None
    at = ttft.histogram.quantile(0.95)
    assert at is not None
    assert sequential.design_effect(ttft.blocks, at, 0.95) > 3


def test_the_traefik_preset_reads_each_arms_backend_service_at_the_gateway() -> None:
    queries = arm_queries(AnalysisSpec(metrics="traefik"), SCOPE)
    backend = 'service="ns-tiny-canary-http-8000@kubernetesgateway"'
    e2e = queries.latency["e2eLatency"]
    assert isinstance(e2e, HistogramQuery) and e2e.to_ms == 1000
    assert e2e.promql(queries.values) == (
        "sum by (le, pod) (increase(traefik_service_request_duration_seconds_bucket"
        f"{{{backend}}}[20s]))"
    )
    assert queries.requests == (
        f'sum(increase(traefik_service_requests_total{{{backend},code!~"5.."}}[20s]))'
    )
    assert queries.errors == (
        f'sum(increase(traefik_service_requests_total{{{backend},code=~"5.."}}[20s]))'
    )
