"""Judging a canary against the stable arm over the same window, criterion by criterion. Pure.

A check **fails** when the canary is measurably worse on any criterion; it is
**inconclusive** when the numbers cannot say (too little traffic, a missing series,
no metrics source) and nothing failed; inconclusive never counts as a pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from llmcanary.analysis.types import ArmReading, LatencyReading
from llmcanary.api.spec import AnalysisSpec, Criterion

VerdictKind = Literal["pass", "fail", "inconclusive"]
Unit = Literal["ms", "%"]


@dataclass(frozen=True)
class Estimate:
    """One arm's number for one criterion, and the observations behind it."""

    value: float | None = None
    samples: int | None = None


@dataclass(frozen=True)
class CriterionResult:
    criterion: Criterion
    verdict: VerdictKind
    reason: str
    stable: Estimate = field(default_factory=Estimate)
    canary: Estimate = field(default_factory=Estimate)

    @property
    def unit(self) -> Unit:
        return "ms" if self.criterion.is_latency else "%"


@dataclass(frozen=True)
class Check:
    """One analysis: the verdict, why, and each criterion's result."""

    verdict: VerdictKind
    reason: str
    results: tuple[CriterionResult, ...] = ()


def unavailable(reason: str) -> Check:
    """An inconclusive check for a metrics source that did not answer."""
    return Check("inconclusive", reason)


def ms(value: float) -> str:
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.2f}%"


def judge(
    analysis: AnalysisSpec,
    stable: ArmReading,
    canary: ArmReading,
    *,
    stable_share: int = 100,
) -> Check:
    """Apply every criterion of ``analysis`` to the two arms.

    ``stable_share``: the percentage of traffic the stable arm gets now. At 0 (the canary
    at 100%) the stable arm serves nothing by design: its sample count is not required,
    and a relative criterion compares with what the stable arm still shows over the
    window if anything, else the canary is judged on the absolute limits alone.
    """
    results = tuple(
        _error_rate(c, stable, canary)
        if c.metric == "errorRate"
        else _latency(c, stable, canary, stable_share)
        for c in analysis.rules
    )
    too_few = _too_few(analysis, stable, canary, stable_share)
    if too_few is not None:
        # The numbers are shown, but too few requests back them to judge on.
        held = tuple(replace(r, verdict="inconclusive", reason=too_few) for r in results)
        return Check("inconclusive", too_few, held)
    return _overall(results)


def _too_few(
    analysis: AnalysisSpec, stable: ArmReading, canary: ArmReading, stable_share: int
) -> str | None:
    """Why the arms' traffic cannot be judged this window, if it cannot."""
    arms = (("stable", stable), ("canary", canary)) if stable_share > 0 else (("canary", canary),)
    for arm, reading in arms:
        if reading.requests is None:
            return f"no request series for the {arm} arm"
        samples = reading.samples or 0
        if samples < analysis.min_samples:
            return (
                f"{arm} arm served {samples} requests, fewer than minSamples {analysis.min_samples}"
            )
    return None


def _overall(results: Sequence[CriterionResult]) -> Check:
    for verdict in ("fail", "inconclusive"):
        chosen = [r for r in results if r.verdict == verdict]
        if chosen:
            return Check(verdict, "; ".join(r.reason for r in chosen), tuple(results))
    return Check("pass", "; ".join(r.reason for r in results), tuple(results))


def _latency(
    criterion: Criterion, stable: ArmReading, canary: ArmReading, stable_share: int
) -> CriterionResult:
    assert criterion.metric != "errorRate"
    name = criterion.label
    q = criterion.q
    canary_reading = canary.latency.get(criterion.metric, LatencyReading())
    stable_reading = stable.latency.get(criterion.metric, LatencyReading())
    mine = Estimate(canary_reading.quantile(q), canary_reading.samples)
    theirs = Estimate(stable_reading.quantile(q), stable_reading.samples)

    def result(verdict: VerdictKind, reason: str) -> CriterionResult:
        return CriterionResult(criterion, verdict, reason, theirs, mine)

    if mine.value is None:
        return result("inconclusive", f"no {name} for the canary arm (no series or no requests)")
    if theirs.value is None and stable_share > 0:
        return result("inconclusive", f"no {name} for the stable arm (no series or no requests)")

    failures: list[str] = []
    said: list[str] = []
    increase = criterion.max_increase_percent
    if increase is not None and theirs.value is not None:
        limit = theirs.value * (1 + increase / 100)
        comparison = f"stable {ms(theirs.value)} +{increase:g}%"
        if mine.value > limit:
            failures.append(f"canary {name} {ms(mine.value)} > {comparison}")
        else:
            said.append(f"within {comparison}")
        note = _coarse(canary_reading, q, increase)
        if note:
            said.append(note)
    elif increase is not None:
        said.append("no stable traffic at 100%: absolute limits only")
    ceiling = criterion.max_milliseconds
    if ceiling is not None:
        if mine.value > ceiling:
            failures.append(f"canary {name} {ms(mine.value)} > maxMilliseconds {ceiling:g}")
        else:
            said.append(f"under {ceiling:g} ms")
    if failures:
        return result("fail", "; ".join(failures))
    return result("pass", f"canary {name} {ms(mine.value)} {', '.join(said)}")


def _coarse(reading: LatencyReading, q: float, increase: float) -> str | None:
    """A note when the quantile's bucket is wider than the change the criterion must see:
    the interpolated estimate cannot then resolve a rise of ``increase`` percent."""
    histogram = reading.histogram
    bucket = None if histogram is None else histogram.bucket_of(q)
    if bucket is None or bucket[0] <= 0:
        return None
    lower, upper = bucket
    if upper / lower - 1 <= increase / 100:
        return None
    return f"coarse buckets: the estimate lies in ({ms(lower)}, {ms(upper)}]"


def _error_rate(criterion: Criterion, stable: ArmReading, canary: ArmReading) -> CriterionResult:
    assert criterion.max_percent is not None
    rate = canary.error_rate or 0.0
    mine = Estimate(round(rate * 100, 4), canary.samples)
    theirs = Estimate(
        None if stable.error_rate is None else round(stable.error_rate * 100, 4), stable.samples
    )
    if rate > criterion.max_percent / 100:
        reason = f"canary error rate {_pct(rate)} > maxPercent {criterion.max_percent:g}%"
        return CriterionResult(criterion, "fail", reason, theirs, mine)
    return CriterionResult(criterion, "pass", f"canary error rate {_pct(rate)}", theirs, mine)
