"""Judging a canary against its reference arm, criterion by criterion. Pure.

The reference is the fresh baseline (pods of the stable revision created with the canary,
at its weight and size) or, without one, the stable arm. Both arms' evidence covers the
current step so far (less its warm-up). Each criterion is a sequential test
(:mod:`llmcanary.analysis.sequential`) on an estimate with a variance: from histograms,
the quantile's by Woodruff's method (widened by how the requests moved between time
blocks); from a source with one number per block (Triton's summary, a user's PromQL),
the blocks' own spread (a lone point estimate, which has none, is never judged). Then:

- a check **fails** when a criterion's test shows the canary beyond its limit;
- it **passes** when every criterion's test shows the canary within its limit;
- it is **inconclusive** otherwise. Most often the evidence is still too thin to decide
  either way (``waiting``: the step goes on collecting and status says how many more
  requests each arm needs); otherwise something stops a judgement (a missing series, no
  metrics source, arms at different per-pod load). Inconclusive never counts as a pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from llmcanary.analysis import sequential
from llmcanary.analysis.sequential import Design, Outcome
from llmcanary.analysis.types import ArmReading, LatencyReading, Reference, needs
from llmcanary.api.spec import AnalysisSpec, Criterion

VerdictKind = Literal["pass", "fail", "inconclusive"]
Unit = Literal["ms", "%"]

# Arms judged without a fresh baseline must carry about the same requests per pod: a
# pod's latency follows its load, so a relative verdict across a wider gap would judge
# the load, not the revision (docs/canary.md, "Matched arms").
LOAD_RATIO_BOUND = 1.25


@dataclass(frozen=True)
class Estimate:
    """One arm's number for one criterion, and the observations behind it."""

    value: float | None = None
    samples: int | None = None


@dataclass(frozen=True)
class Effect:
    """How the canary differs from the reference: a percentage change of a latency, or
    percentage points of error rate; with its always-valid confidence bounds."""

    value: float
    lower: float
    upper: float


@dataclass(frozen=True)
class CriterionResult:
    criterion: Criterion
    verdict: VerdictKind
    reason: str
    reference: Estimate = field(default_factory=Estimate)
    canary: Estimate = field(default_factory=Estimate)
    effect: Effect | None = None
    # The evidence is still too thin either way; ``more`` times the requests so far
    # would decide it if the effect stays where it is.
    waiting: bool = False
    more: float | None = None

    @property
    def unit(self) -> Unit:
        return "ms" if self.criterion.is_latency else "%"


@dataclass(frozen=True)
class Check:
    """One analysis: the verdict, why, and each criterion's result."""

    verdict: VerdictKind
    reason: str
    results: tuple[CriterionResult, ...] = ()
    reference: Reference = "stable"
    # The canary's requests per pod over the reference's, over the evidence window.
    load_ratio: float | None = None
    # Inconclusive only for want of requests: the step keeps collecting (not a pause).
    waiting: bool = False
    # Requests each arm still needs, at the effects seen so far (None: unknown).
    needed: int | None = None
    # The canary's requests per second over the evidence window.
    canary_rate: float | None = None


@dataclass(frozen=True)
class Judgement:
    """What a check is judged with: the tests' error budget, and the arms' context."""

    plan: Design
    reference: Reference = "stable"
    # Percentage of traffic the reference arm gets (0: the canary is at 100%).
    reference_share: int = 100
    # Seconds of evidence (the step so far, less warm-up): turns requests into rates.
    window_seconds: float | None = None
    load_bound: float = LOAD_RATIO_BOUND


def unavailable(reason: str) -> Check:
    """An inconclusive check for a metrics source that did not answer."""
    return Check("inconclusive", reason)


def ms(value: float) -> str:
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.2f}%"


def _signed(percent: float, unit: str = "%") -> str:
    return f"{percent:+.0f}{unit}" if abs(percent) >= 10 else f"{percent:+.1f}{unit}"


def _bounds(effect: Effect) -> str:
    """``+22..+41%``: the confidence bounds of a percentage effect."""
    return f"{_signed(effect.lower, '')}..{_signed(effect.upper)}"


def min_samples(analysis: AnalysisSpec) -> int:
    """Requests each arm needs before a check is judged: ``minSamples`` if set, else
    derived from the highest quantile the criteria judge."""
    if analysis.min_samples is not None:
        return analysis.min_samples
    return sequential.min_samples([c.q for c in analysis.rules if c.is_latency])


def judge(
    analysis: AnalysisSpec, reference: ArmReading, canary: ArmReading, context: Judgement
) -> Check:
    """Apply every criterion of ``analysis`` to the canary and its reference arm."""
    name = context.reference
    compared = context.reference_share > 0
    arms = (("canary", canary), (name, reference)) if compared else (("canary", canary),)
    for arm, reading in arms:
        if reading.requests is None:
            return Check("inconclusive", f"no request series for the {arm} arm", reference=name)
    load = _load_ratio(reference, canary) if compared else None
    results = tuple(
        _error_rate(c, reference, canary, context, compared)
        if c.metric == "errorRate"
        else _latency(c, reference, canary, context, compared)
        for c in analysis.rules
    )
    rate = _rate(canary, context.window_seconds)
    floor = min_samples(analysis)
    short = [(arm, r.samples or 0) for arm, r in arms if (r.samples or 0) < floor]
    if short:
        needed = max(floor - served for _, served in short)
        said = ", ".join(f"{arm} {served}/{floor}" for arm, served in short)
        reason = f"collecting evidence: {said} requests{_eta(needed, rate)}"
        held = tuple(replace(r, verdict="inconclusive", reason=reason) for r in results)
        return Check("inconclusive", reason, held, name, load, True, needed, rate)
    blocks = _blocks_seen(analysis, [canary, reference] if compared else [canary])
    if blocks is not None and blocks < sequential.MIN_BLOCKS:
        reason = (
            f"collecting evidence: {blocks}/{sequential.MIN_BLOCKS} time blocks with requests"
            " (how latency moves within the step: the window is cut into"
            f" {sequential.BLOCKS} or more, none shorter than analysis.interval"
            " nor, for Triton's summary, than the 60 s each of its values covers)"
        )
        # A latency with no series at all is not short of blocks: it says so, and counts
        # towards inconclusiveLimit (it would otherwise wait for ever).
        held = tuple(
            replace(r, verdict="inconclusive", reason=reason, waiting=True)
            if r.criterion.is_latency and not _missing(r)
            else r
            for r in results
        )
        if any(_missing(r) for r in results):
            return _overall(held, name, load, canary, rate)
        return Check("inconclusive", reason, held, name, load, True, None, rate)
    # With a fresh baseline the router gives both arms the same share of arrivals by
    # construction; what the per-pod counts show is completions, which a slow canary
    # under closed-loop load trails. The ratio is reported, not used to refuse.
    unmatched = load is not None and not 1 / context.load_bound <= load <= context.load_bound
    if unmatched and name == "stable":
        why = (
            f"per-pod load differs: the canary's pods serve {load:.2f}x the {name}'s"
            f" requests (bound {context.load_bound:g}x), so a relative verdict would judge"
            " the load: use a fresh baseline (analysis.baseline: fresh)"
        )
        # A relative failure too: at unequal load it would judge the load.
        results = tuple(
            replace(r, verdict="inconclusive", reason=why, waiting=False)
            if _relative(r.criterion)
            else r
            for r in results
        )
    return _overall(results, name, load, canary, rate)


def _blocks_seen(analysis: AnalysisSpec, arms: Sequence[ArmReading]) -> int | None:
    """The fewest time blocks with something to judge among the judged latencies'
    readings; None when no reading is cut in time."""
    counts = [
        seen
        for arm in arms
        for signal, quantiles in needs(analysis.rules).items()
        if (reading := arm.latency.get(signal)) is not None
        and (seen := reading.blocks_seen(quantiles)) is not None
    ]
    return min(counts) if counts else None


def _missing(result: CriterionResult) -> bool:
    """A latency the source had nothing for: inconclusive, and not for want of time."""
    return result.criterion.is_latency and result.verdict == "inconclusive" and not result.waiting


def _relative(criterion: Criterion) -> bool:
    return criterion.metric == "errorRate" or criterion.max_increase_percent is not None


def _rate(canary: ArmReading, window: float | None) -> float | None:
    samples = canary.samples
    if not window or window <= 0 or samples is None:
        return None
    return samples / window


def _eta(needed: int, rate: float | None) -> str:
    """``, ~3 min at the canary's 2.1 requests/s``, where the rate is known."""
    if not rate or rate <= 0:
        return ""
    seconds = needed / rate
    when = f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
    return f", ~{when} at the canary's {rate:.2g} requests/s"


def _load_ratio(reference: ArmReading, canary: ArmReading) -> float | None:
    mine, theirs = canary.per_pod_requests, reference.per_pod_requests
    if mine is None or theirs is None or theirs <= 0:
        return None
    return mine / theirs


def _overall(
    results: Sequence[CriterionResult],
    reference: Reference,
    load: float | None,
    canary: ArmReading,
    rate: float | None,
) -> Check:
    def check(
        verdict: VerdictKind,
        chosen: Sequence[CriterionResult],
        *,
        waiting: bool = False,
        needed: int | None = None,
        note: str = "",
    ) -> Check:
        reason = "; ".join(dict.fromkeys(r.reason for r in chosen)) + note
        return Check(verdict, reason, tuple(results), reference, load, waiting, needed, rate)

    failed = [r for r in results if r.verdict == "fail"]
    if failed:
        return check("fail", failed)
    blocked = [r for r in results if r.verdict == "inconclusive" and not r.waiting]
    if blocked:
        return check("inconclusive", blocked)
    waiting = [r for r in results if r.waiting]
    if waiting:
        samples = canary.samples or 0
        factors = [r.more for r in waiting if r.more is not None]
        needed = None
        if factors and all(math.isfinite(f) for f in factors):
            needed = max(0, math.ceil(samples * (max(factors) - 1)))
        note = f" (about {needed} more requests per arm{_eta(needed, rate)})" if needed else ""
        return check("inconclusive", waiting, waiting=True, needed=needed, note=note)
    return check("pass", results)


def _decided(
    criterion: Criterion,
    outcome: Outcome,
    describe: str,
    theirs: Estimate,
    mine: Estimate,
    effect: Effect,
) -> CriterionResult:
    if outcome.decision == "continue":
        more = outcome.more
        return CriterionResult(
            criterion,
            "inconclusive",
            f"{describe}: not yet decided",
            theirs,
            mine,
            effect,
            waiting=True,
            more=more,
        )
    return CriterionResult(criterion, outcome.decision, describe, theirs, mine, effect)


def _latency(
    criterion: Criterion,
    reference: ArmReading,
    canary: ArmReading,
    context: Judgement,
    compared: bool,
) -> CriterionResult:
    assert criterion.metric != "errorRate"
    name = criterion.label
    q = criterion.q
    arm = context.reference
    canary_reading = canary.latency.get(criterion.metric, LatencyReading())
    reference_reading = reference.latency.get(criterion.metric, LatencyReading())
    if canary_reading.quantile_blocks is not None:
        # A source without histograms: its blocks are the evidence, whatever the latest
        # number (a summary's minute without requests reads none).
        return _by_blocks(criterion, canary_reading, reference_reading, context, compared)
    mine = Estimate(canary_reading.quantile(q), canary_reading.samples)
    theirs = Estimate(reference_reading.quantile(q), reference_reading.samples)

    def result(verdict: VerdictKind, reason: str) -> CriterionResult:
        return CriterionResult(criterion, verdict, reason, theirs, mine)

    if mine.value is None:
        return result("inconclusive", f"no {name} for the canary arm (no series or no requests)")
    if compared and theirs.value is None:
        return result("inconclusive", f"no {name} for the {arm} arm (no series or no requests)")

    increase = criterion.max_increase_percent
    ceiling = criterion.max_milliseconds
    coarse = _coarse(canary_reading, q, increase) if increase is not None else None
    alpha = context.plan.confidence_alpha
    own = _log_estimate(canary_reading, q, alpha)  # under the canary's own design effect
    outcomes: list[CriterionResult] = []
    if increase is not None and compared:
        assert theirs.value is not None
        theirs_log = _log_estimate(reference_reading, q, alpha)
        if own is None or theirs_log is None:
            outcomes.append(result("inconclusive", _no_interval(name)))
        else:
            # Blocks cut at the same instants in both arms: what slowed both cancels.
            mine_log, theirs_log = _paired(
                canary_reading, reference_reading, q, (own, theirs_log), alpha
            )
            estimate = sequential.difference(mine_log.estimate, theirs_log.estimate)
            limit, half = _relative_test(increase)
            outcome = sequential.sequential_test(estimate, limit, half, context.plan)
            effect = _percent_effect(outcome)
            describe = _relative_reason(
                name, mine.value, arm, theirs.value, effect, increase
            ) + _clustered(mine_log, theirs_log)
            if coarse:
                describe += f"; {coarse}"
            outcomes.append(_decided(criterion, outcome, describe, theirs, mine, effect))
    if ceiling is not None:
        if own is None:
            outcomes.append(result("inconclusive", _no_interval(name)))
        else:
            over = sequential.Estimate(
                own.estimate.value - math.log(ceiling), own.estimate.variance
            )
            outcome = sequential.sequential_test(
                over, 0.0, sequential.ABSOLUTE_HALF_WIDTH, context.plan
            )
            effect = _percent_effect(outcome)
            describe = _ceiling_reason(name, mine.value, effect, ceiling) + _clustered(own)
            outcomes.append(_decided(criterion, outcome, describe, theirs, mine, effect))
    if not outcomes:
        # A relative criterion with the canary at 100%: nothing left to compare with.
        return result("pass", f"canary {name} {ms(mine.value)}: no {arm} traffic at 100%")
    return _combine(outcomes)


def _relative_test(increase: float) -> tuple[float, float]:
    """A ``maxIncreasePercent`` as the test's limit on the log ratio, and the half width
    of its SPRT (the limit at half and one and a half times the increase)."""
    limit = math.log(1 + increase / 100)
    half = (math.log(1 + 1.5 * increase / 100) - math.log(1 + 0.5 * increase / 100)) / 2
    return limit, half


def _relative_reason(
    name: str, mine: float, arm: str, theirs: float, effect: Effect, increase: float
) -> str:
    return (
        f"canary {name} {ms(mine)} vs {arm} {ms(theirs)}:"
        f" {_signed(effect.value)} ({_bounds(effect)}), limit +{increase:g}%"
    )


def _ceiling_reason(name: str, mine: float, effect: Effect, ceiling: float) -> str:
    return (
        f"canary {name} {ms(mine)} ({ms(ceiling * (1 + effect.lower / 100))}"
        f"..{ms(ceiling * (1 + effect.upper / 100))}), maxMilliseconds {ceiling:g}"
    )


def _by_blocks(
    criterion: Criterion,
    canary: LatencyReading,
    reference: LatencyReading,
    context: Judgement,
    compared: bool,
) -> CriterionResult:
    """Every limit of a latency criterion on a source without histograms."""
    for arm, reading in (("canary", canary), (context.reference, reference)):
        if arm != "canary" and not compared:
            continue
        values = (reading.quantile_blocks or {}).get(criterion.q, ())
        if reading.quantile(criterion.q) is None and all(v is None for v in values):
            return CriterionResult(
                criterion,
                "inconclusive",
                f"no {criterion.label} for the {arm} arm (no series or no requests)",
            )
    increase = criterion.max_increase_percent
    outcomes = []
    if increase is not None and compared:
        outcomes.append(_blockwise(criterion, canary, reference, context, increase))
    if criterion.max_milliseconds is not None:
        outcomes.append(_blockwise(criterion, canary, None, context, None))
    if not outcomes:
        return CriterionResult(
            criterion, "pass", f"canary {criterion.label}: no {context.reference} traffic at 100%"
        )
    return _combine(outcomes)


def _blockwise(
    criterion: Criterion,
    canary: LatencyReading,
    reference: LatencyReading | None,
    context: Judgement,
    increase: float | None,
) -> CriterionResult:
    """A latency limit on a source without histograms, judged on the arm's quantile block
    by block: against the reference arm's in the same blocks (``increase``, the log ratio
    block by block: what slowed both arms at once cancels), or against
    ``maxMilliseconds`` (``reference`` None). One point estimate has no variance, so it
    is never judged alone: a minute's noise would roll back an identical revision."""
    name, q = criterion.label, criterion.q
    arms = (canary,) if reference is None else (canary, reference)
    logs = _block_logs(arms, q)
    if logs is None:
        return CriterionResult(criterion, "inconclusive", _no_interval(name))
    # What status shows: the blocks' geometric means, what is judged; before the first
    # block, the arms' latest numbers.
    mine = Estimate(_geometric_mean([row[0] for row in logs]) if logs else canary.quantile(q))
    theirs = Estimate()
    if reference is not None:
        theirs = Estimate(
            _geometric_mean([row[1] for row in logs]) if logs else reference.quantile(q)
        )
    if increase is not None:
        limit, half = _relative_test(increase)
        floor = sequential.BLOCK_FLOOR * math.sqrt(2)
        estimate = sequential.block_mean(
            [row[0] - row[1] for row in logs], context.plan.confidence_alpha, floor
        )
    else:
        assert criterion.max_milliseconds is not None
        limit, half = 0.0, sequential.ABSOLUTE_HALF_WIDTH
        floor = sequential.BLOCK_FLOOR
        over = math.log(criterion.max_milliseconds)
        estimate = sequential.block_mean(
            [row[0] - over for row in logs], context.plan.confidence_alpha, floor
        )
    if estimate is None:
        both = "" if reference is None else " in both arms"
        return CriterionResult(
            criterion,
            "inconclusive",
            f"collecting evidence: {len(logs)}/{sequential.MIN_BLOCKS} time blocks with a"
            f" {name}{both} ({canary.method})",
            theirs,
            mine,
            waiting=True,
        )
    outcome = sequential.sequential_test(estimate, limit, half, context.plan)
    effect = _percent_effect(outcome)
    assert mine.value is not None
    if increase is not None:
        assert theirs.value is not None
        describe = _relative_reason(
            name, mine.value, context.reference, theirs.value, effect, increase
        )
    else:
        ceiling = criterion.max_milliseconds
        assert ceiling is not None
        describe = _ceiling_reason(name, mine.value, effect, ceiling)
    describe += f"; {len(logs)} time blocks of {canary.method}"
    return _decided(criterion, outcome, describe, theirs, mine, effect)


def _geometric_mean(logs: Sequence[float]) -> float:
    return math.exp(sum(logs) / len(logs))


def _no_interval(name: str) -> str:
    return (
        f"no interval for {name}: the source gives neither a histogram with a usable"
        " quantile nor time blocks"
    )


def _block_logs(readings: Sequence[LatencyReading], q: float) -> list[tuple[float, ...]] | None:
    """The readings' log ``q`` quantiles, block by block, in the blocks where every one
    has a value; None when a reading is not cut in blocks."""
    rows = []
    for reading in readings:
        if reading.quantile_blocks is None:
            return None
        rows.append(reading.quantile_blocks.get(q, ()))
    return [
        tuple(math.log(v) for v in values)
        for values in zip(*rows, strict=False)
        if all(v is not None and v > 0 for v in values)
    ]


def _combine(outcomes: list[CriterionResult]) -> CriterionResult:
    """A criterion with both a relative and an absolute limit: the worse of the two."""
    for verdict, waiting in (("fail", False), ("inconclusive", False), ("inconclusive", True)):
        for r in outcomes:
            if r.verdict == verdict and r.waiting == waiting:
                return r
    first = outcomes[0]
    return replace(first, reason="; ".join(r.reason for r in outcomes))


@dataclass(frozen=True)
class _LogQuantile:
    estimate: sequential.Estimate
    design_effect: float  # its variance over that of independent requests


def _log_estimate(reading: LatencyReading, q: float, alpha: float) -> _LogQuantile | None:
    histogram = reading.histogram
    point = None if histogram is None else histogram.quantile(q)
    if histogram is None or point is None:
        return None
    effect = sequential.design_effect(reading.blocks, point, q, alpha)
    estimate = sequential.log_quantile(histogram, q, effect)
    return None if estimate is None else _LogQuantile(estimate, effect)


def _paired(
    canary: LatencyReading,
    reference: LatencyReading,
    q: float,
    unpaired: tuple[_LogQuantile, _LogQuantile],
    alpha: float,
) -> tuple[_LogQuantile, _LogQuantile]:
    """Both arms' estimates under the design effect of their difference, where their
    blocks pair; else each under its own."""
    mine, theirs = canary.histogram, reference.histogram
    assert mine is not None and theirs is not None
    effect = sequential.paired_design_effect(
        mine, canary.blocks, theirs, reference.blocks, q, alpha
    )
    if effect is None:
        return unpaired
    paired = []
    for histogram in (mine, theirs):
        estimate = sequential.log_quantile(histogram, q, effect)
        assert estimate is not None  # the unpaired estimate exists
        paired.append(_LogQuantile(estimate, effect))
    return paired[0], paired[1]


# A design effect from which a verdict's reason says that requests came in clusters.
_CLUSTERED = 2.0


def _clustered(*estimates: _LogQuantile) -> str:
    """``; requests slow together (variance x3.1)``, where that widened the bounds."""
    worst = max(e.design_effect for e in estimates)
    return f"; requests slow together (variance x{worst:.1f})" if worst >= _CLUSTERED else ""


def _percent_effect(outcome: Outcome) -> Effect:
    def percent(x: float) -> float:
        return (math.exp(min(x, 50.0)) - 1) * 100

    return Effect(percent(outcome.effect), percent(outcome.lower), percent(outcome.upper))


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


def _error_rate(
    criterion: Criterion,
    reference: ArmReading,
    canary: ArmReading,
    context: Judgement,
    compared: bool,
) -> CriterionResult:
    assert criterion.max_percent is not None
    arm = context.reference
    total = canary.samples or 0
    rate = canary.error_rate or 0.0
    mine = Estimate(round(rate * 100, 4), canary.samples)
    theirs = Estimate(
        None if reference.error_rate is None else round(reference.error_rate * 100, 4),
        reference.samples,
    )
    own = sequential.proportion(canary.errors or 0.0, total)
    if compared and reference.samples:
        base = sequential.proportion(reference.errors or 0.0, reference.samples)
        estimate = sequential.difference(own, base)
        against = f"{arm} {_pct(base.value)}"
    else:
        estimate = own
        against = f"no {arm} traffic"
    limit = criterion.max_percent / 100
    outcome = sequential.sequential_test(estimate, limit, limit / 2, context.plan)
    effect = Effect(outcome.effect * 100, outcome.lower * 100, outcome.upper * 100)
    describe = (
        f"canary error rate {_pct(rate)} vs {against}: {effect.value:+.2f} points"
        f" ({effect.lower:+.2f}..{effect.upper:+.2f}), limit +{criterion.max_percent:g}"
    )
    return _decided(criterion, outcome, describe, theirs, mine, effect)
