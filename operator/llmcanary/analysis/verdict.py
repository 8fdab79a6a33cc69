"""Judging a canary against the stable arm over the same window. Pure.

A check **fails** when the canary is measurably worse; it is **inconclusive** when
the numbers cannot say (too little traffic, a missing series, no metrics source),
and inconclusive never counts as a pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from llmcanary.analysis.types import ArmSample
from llmcanary.api.spec import AnalysisSpec

VerdictKind = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class Check:
    """One analysis: the verdict, why, and the two arms' numbers (None if not measured)."""

    verdict: VerdictKind
    reason: str
    stable: ArmSample | None = None
    canary: ArmSample | None = None


def unavailable(reason: str) -> Check:
    """An inconclusive check for a metrics source that did not answer."""
    return Check("inconclusive", reason)


def _ms(value: float) -> str:
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.2f}%"


def judge(
    analysis: AnalysisSpec, stable: ArmSample, canary: ArmSample, *, stable_share: int = 100
) -> Check:
    """Compare the arms with the spec's criteria.

    ``stable_share``: the percentage of traffic the stable arm gets now. At 0 (the canary
    at 100%) the stable arm serves nothing by design: its sample count is not required,
    and the canary is compared with the stable's last P95 if Prometheus still has one,
    else judged on its absolute limits (``maxMilliseconds``, the error rate) alone.
    """

    def check(verdict: VerdictKind, reason: str) -> Check:
        return Check(verdict, reason, stable, canary)

    arms = (("stable", stable), ("canary", canary)) if stable_share > 0 else (("canary", canary),)
    for arm, sample in arms:
        if sample.requests is None:
            return check("inconclusive", f"no request series for the {arm} arm")
        samples = sample.samples or 0
        if samples < analysis.min_samples:
            return check(
                "inconclusive",
                f"{arm} arm served {samples} requests, fewer than minSamples"
                f" {analysis.min_samples}",
            )
        if sample.latency_ms is None:
            return check("inconclusive", f"no latency series for the {arm} arm")

    failures: list[str] = []
    assert canary.latency_ms is not None  # checked above, as the stable's when it has traffic
    latency = analysis.latency
    quantile = f"p{latency.quantile * 100:g}"
    if stable.latency_ms is None:
        limit = math.inf
        baseline = "no stable traffic at 100%: absolute limits only"
    else:
        limit = stable.latency_ms * (1 + latency.max_increase_percent / 100)
        baseline = f"within stable {_ms(stable.latency_ms)} +{latency.max_increase_percent:g}%"
    if canary.latency_ms > limit:
        assert stable.latency_ms is not None
        failures.append(
            f"canary {quantile} {_ms(canary.latency_ms)} > stable {_ms(stable.latency_ms)}"
            f" +{latency.max_increase_percent:g}%"
        )
    if latency.max_milliseconds is not None and canary.latency_ms > latency.max_milliseconds:
        failures.append(
            f"canary {quantile} {_ms(canary.latency_ms)} > maxMilliseconds"
            f" {latency.max_milliseconds:g}"
        )
    max_rate = analysis.error_rate.max_percent / 100
    canary_errors = canary.error_rate or 0.0
    if canary_errors > max_rate:
        failures.append(
            f"canary error rate {_pct(canary_errors)} > maxPercent"
            f" {analysis.error_rate.max_percent:g}%"
        )
    if failures:
        return check("fail", "; ".join(failures))
    return check(
        "pass",
        f"canary {quantile} {_ms(canary.latency_ms)} {baseline}, error rate {_pct(canary_errors)}",
    )
