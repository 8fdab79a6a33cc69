"""The statistics of a check: a sequential test per criterion, and its error budget. Pure.

Each criterion asks whether the canary's *effect* (the log ratio of its quantile to the
reference arm's, or the difference of error rates) is above the criterion's *limit*.
Evidence accumulates over a step, so every check sees more requests than the one before,
and the test may look as often as it likes:

- **Wald's sequential probability ratio test** between two hypotheses placed half the
  limit either side of it, e.g. for ``maxIncreasePercent: 20``: the canary is about +10%
  slower (acceptable) or about +30% (a regression). The log-likelihood ratio of the
  effect's estimate fails the check above ``log((1-beta)/alpha)`` and passes it below
  ``log(beta/(1-alpha))``; between the two the step waits for more requests. As the
  estimate sharpens the test converges to "is the effect above the limit".
- **An always-valid confidence sequence** (a normal mixture, Robbins; Howard et al. 2021)
  on the same estimate: it fails a gross regression after few requests, where the SPRT,
  tuned to the limit, would wait, and its bounds are what status shows.

By Ville's inequality both hold at every look, however many, so the false-rollback rate
is bounded *per test*, and :func:`design` spreads a per-rollout budget over the planned
steps and criteria. The estimates are normal approximations (a quantile's standard error
by Woodruff's method from the histogram; a proportion's by its binomial variance): they
need a few observations beyond the quantile, which :func:`min_samples` asks for.

Both bounds are only as honest as the variance, and requests are not independent draws:
on a busy server they are slow together (a batch's prefill, a noisy neighbour's minute).
Woodruff built his interval for such samples (clustered surveys): the variance of the
share of requests at or below the quantile is taken from how that share moves between
time blocks of the window (:func:`design_effect`, batch means; for a comparison,
:func:`paired_design_effect` on the two arms' difference, block by block), never less
than independent requests would give. A pod that is slower than its twin for the whole
window is not a cluster in time: more pods per arm is what averages that out. A source
that publishes only a quantile (Triton's summary, a user's PromQL) has no histogram to
read a standard error from: its quantile is read once per time block, and the blocks'
spread alone is the variance (:func:`block_mean`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

from llmcanary.analysis.histogram import Histogram

Decision = Literal["pass", "fail", "continue"]

# The targets the defaults are derived from (docs/canary.md, "How a check decides").
# A canary at half the limit (+10% under a +20% rule) is promoted in at least 90% of
# rollouts: the per-rollout budget for failing it, spread over steps and criteria.
FALSE_ROLLBACK_AT_HALF_LIMIT = 0.10
# A canary at one and a half times the limit (+30%) passes a given step's test at most
# 20% of the time, so it survives three steps (5%, 15%, 25%) in under 1% of rollouts.
MISSED_PER_STEP = 0.20
# Observations beyond a quantile before its estimate and standard error are used.
TAIL_OBSERVATIONS = 10
# Requests per arm before an error-rate-only check is judged.
MIN_REQUESTS = 100
# Absolute limits (maxMilliseconds) are tested between 10% under and 10% over the limit.
ABSOLUTE_HALF_WIDTH = math.log(1.1)
# The window is cut into this many time blocks for the design effect; a latency is not
# judged on fewer than MIN_BLOCKS of them (a source that cuts none aside). A window long
# enough is cut into up to MAX_BLOCKS blocks of at least LONG_BLOCK_SECONDS: more degrees
# of freedom for the design effect, while a minute's contention stays within one block.
BLOCKS = 8
MIN_BLOCKS = 5
MAX_BLOCKS = 16
LONG_BLOCK_SECONDS = 60
# A block's log quantile from a source without histograms is never taken as known to
# better than 1% (a paired difference of two: sqrt(2)%): a block whose requests all
# took the same time says nothing of the next one's.
BLOCK_FLOOR = 0.01
# Woodruff's interval is taken at this z, and its width divided by 2z, for a standard
# error that a histogram's bucket steps do not make jump.
_WOODRUFF_Z = 1.96


@dataclass(frozen=True)
class Design:
    """The error rates of one criterion's test within one step."""

    alpha: float  # failing a canary at half the limit
    beta: float  # passing a canary at one and a half times the limit

    @property
    def fail_at(self) -> float:
        """The log-likelihood ratio at which the check fails."""
        return math.log((1 - self.beta) / (self.alpha / 2))

    @property
    def pass_at(self) -> float:
        """The log-likelihood ratio at which the check passes (negative)."""
        return math.log(self.beta / (1 - self.alpha / 2))

    @property
    def confidence_alpha(self) -> float:
        """The confidence sequence's share of alpha (the SPRT has the other half)."""
        return self.alpha / 2


def design(criteria: int, planned_steps: int) -> Design:
    """Spread :data:`FALSE_ROLLBACK_AT_HALF_LIMIT` over every test a rollout plans: one
    per criterion per step (Bonferroni: the criteria are correlated, so this is safe)."""
    tests = max(1, criteria) * max(1, planned_steps)
    return Design(alpha=FALSE_ROLLBACK_AT_HALF_LIMIT / tests, beta=MISSED_PER_STEP)


def min_samples(quantiles: list[float]) -> int:
    """Requests per arm before a check is judged: enough for :data:`TAIL_OBSERVATIONS`
    beyond the highest quantile judged (200 for a P95), else :data:`MIN_REQUESTS`."""
    if not quantiles:
        return MIN_REQUESTS
    return max(MIN_REQUESTS, math.ceil(TAIL_OBSERVATIONS / (1 - max(quantiles)) - 1e-9))


@dataclass(frozen=True)
class Estimate:
    """An effect's estimate and its variance (normal approximation)."""

    value: float
    variance: float


def block_seconds(window_seconds: float, interval_seconds: float) -> int:
    """The length of the time blocks a window of evidence is cut into: :data:`BLOCKS` of
    them (up to :data:`MAX_BLOCKS` of at least :data:`LONG_BLOCK_SECONDS` in a long
    window), none shorter than the analysis interval (set at or above the metrics' scrape
    interval, so that every block holds at least one scrape's increase)."""
    blocks = min(MAX_BLOCKS, max(BLOCKS, int(window_seconds // LONG_BLOCK_SECONDS)))
    return max(1, math.ceil(interval_seconds), math.ceil(window_seconds / blocks))


def design_effect(
    blocks: Sequence[Histogram] | None, at: float, q: float, alpha: float = 0.05
) -> float:
    """How many times the variance of independent requests the share of requests at or
    below ``at`` (the ``q`` quantile of the whole window) has, judged by how that share
    moves between consecutive time blocks (Kish's design effect, by batch means).

    1 for requests that arrive independently of each other's latency; more when they
    are slow together. Never below 1 (a few blocks can look steadier than chance), and 1
    when fewer than :data:`MIN_BLOCKS` blocks saw requests: too few to tell.
    """
    seen = [b for b in blocks or () if b.count > 0]
    if len(seen) < MIN_BLOCKS:
        return 1.0
    n = sum(b.count for b in seen)
    between = _between(_residuals(seen, at))
    return max(1.0, between / (q * (1 - q) / n) * _few_blocks(len(seen) - 1, _z(alpha)))


def _residuals(blocks: Sequence[Histogram], at: float) -> list[float]:
    """Each block's contribution to the error of the window's share at or below ``at``:
    the ratio estimator, linearised (the block's count below, less the window's share of
    its requests, over the window's requests)."""
    n = sum(b.count for b in blocks)
    below = [b.rank(at) for b in blocks]
    share = sum(below) / n
    return [(k - share * b.count) / n for k, b in zip(below, blocks, strict=True)]


def _between(residuals: Sequence[float]) -> float:
    """The batch-means variance of a sum of block residuals."""
    return sum(r * r for r in residuals) * len(residuals) / (len(residuals) - 1)


def paired_design_effect(
    canary: Histogram,
    canary_blocks: Sequence[Histogram] | None,
    reference: Histogram,
    reference_blocks: Sequence[Histogram] | None,
    q: float,
    alpha: float = 0.05,
) -> float | None:
    """The design effect of the *difference* of two arms' log ``q`` quantiles, from
    blocks cut at the same instants in both: what slows both arms at once (the node, the
    load) moves both shares together and cancels in the difference, what slows one arm
    alone does not. Each block's residuals are weighted by its arm's slope of the log
    quantile in the share (Bahadur's linearisation, the slope read from Woodruff's
    interval). Never below 1, inflated for the few blocks' doubt as :func:`design_effect`;
    None when the blocks do not pair (not cut, or cut differently) or fewer than
    :data:`MIN_BLOCKS` saw requests in both arms."""
    if canary_blocks is None or reference_blocks is None:
        return None
    if len(canary_blocks) != len(reference_blocks):
        return None
    paired = [
        (c, r) for c, r in zip(canary_blocks, reference_blocks, strict=True) if c.count and r.count
    ]
    if len(paired) < MIN_BLOCKS:
        return None
    terms = []
    independent = 0.0
    for arm, blocks in ((canary, [c for c, _ in paired]), (reference, [r for _, r in paired])):
        point = arm.quantile(q)
        estimate = log_quantile(arm, q)
        if point is None or estimate is None:
            return None
        n = sum(b.count for b in blocks)
        slope = math.sqrt(estimate.variance / (q * (1 - q) / arm.count))
        terms.append([slope * r for r in _residuals(blocks, point)])
        independent += slope * slope * q * (1 - q) / n
    mine, theirs = terms
    between = _between([a - b for a, b in zip(mine, theirs, strict=True)])
    return max(1.0, between / independent * _few_blocks(len(paired) - 1, _z(alpha)))


def _few_blocks(freedom: int, z: float) -> float:
    """A variance estimated from a few blocks is itself uncertain: inflate it so that a
    normal bound at ``z`` (the test's own level) is as wide as Student's t with ``freedom``
    degrees of freedom (Cornish-Fisher's expansion of t in z, within 1% from 5 degrees on
    at 97.5%; it understates t further out in the tail at very few degrees). The
    binomial floor is known, not estimated: only what the blocks add over it is
    inflated."""
    t = z + (z**3 + z) / (4 * freedom) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * freedom**2)
    return (t / z) ** 2


def log_quantile(histogram: Histogram, q: float, effect: float = 1.0) -> Estimate | None:
    """``log`` of the ``q`` quantile (ms) and its variance, by Woodruff's method: the
    quantile's confidence interval is the histogram read at ``q ± z sqrt(D q(1-q)/n)``,
    ``D`` the :func:`design_effect` (1 for independent requests)."""
    n = histogram.count
    point = histogram.quantile(q)
    if point is None or point <= 0 or n <= 0:
        return None
    spread = _WOODRUFF_Z * math.sqrt(effect * q * (1 - q) / n)
    low = histogram.quantile(max(q - spread, 1e-9)) or point
    high = histogram.quantile(min(q + spread, 1 - 1e-9)) or point
    low = max(low, point * 1e-3)
    se = (math.log(max(high, point)) - math.log(min(low, point))) / (2 * _WOODRUFF_Z)
    # A quantile inside one bucket with nothing around it still has some uncertainty:
    # never less than the binomial spread on a bucket-free scale (1% of the value).
    se = max(se, 0.01 * math.sqrt(effect * q * (1 - q) * 100 / n))
    return Estimate(math.log(point), se * se)


def block_mean(
    values: Sequence[float], alpha: float, floor: float = BLOCK_FLOOR
) -> Estimate | None:
    """The mean of one number per time block (a block's log quantile, or the difference
    of two arms' in the same block) and its variance by batch means. For a source that
    gives one number per block and nothing about its precision (Triton's summary, a
    user's PromQL): the blocks are the only replication there is, so all of the variance
    is estimated, and it is widened to Student's t at the test's own level (``alpha``, two
    sided), not at 95%. Past :data:`MAX_BLOCKS` blocks, consecutive ones are averaged into
    that many batches, so that a slow spell longer than a block stays within a batch
    instead of making its neighbours look alike. No block's number is taken as steadier
    than ``floor`` (a standard deviation). None below :data:`MIN_BLOCKS` blocks."""
    k = len(values)
    if k < MIN_BLOCKS:
        return None
    mean = sum(values) / k
    batches = min(k, MAX_BLOCKS)
    edges = [round(i * k / batches) for i in range(batches + 1)]
    means = [sum(values[a:b]) / (b - a) for a, b in itertools.pairwise(edges)]
    # Each batch mean of m blocks is floored at floor / sqrt(m), as m blocks' would be.
    spread = sum((m - mean) ** 2 for m in means) / (batches - 1)
    spread = max(spread, floor * floor * batches / k)
    return Estimate(mean, spread / batches * _few_blocks(batches - 1, _z(alpha)))


def _z(alpha: float) -> float:
    """The normal quantile of a two-sided test at ``alpha``."""
    return NormalDist().inv_cdf(1 - alpha / 2)


def proportion(events: float, total: float) -> Estimate:
    """An error rate and its binomial variance, with half an event added either way
    (Agresti-Coull style) so that no errors does not claim certainty."""
    p = (events + 0.5) / (total + 1)
    return Estimate(events / total if total else 0.0, p * (1 - p) / max(total, 1.0))


def difference(canary: Estimate, reference: Estimate) -> Estimate:
    """The canary's estimate less the reference's, both independent: a difference of error
    rates, or of log quantiles (the log of their ratio)."""
    return Estimate(canary.value - reference.value, canary.variance + reference.variance)


@dataclass(frozen=True)
class Outcome:
    """One sequential test at one look."""

    decision: Decision
    effect: float  # the estimate, on the test's scale
    lower: float  # the always-valid confidence bounds on the effect
    upper: float
    log_likelihood_ratio: float
    # How many times the current evidence the test needs to decide, if the effect
    # stays where it is (None once decided; inf if it sits on the limit).
    more: float | None


def confidence_radius(variance: float, half_width: float, alpha: float) -> float:
    """The normal-mixture confidence sequence's radius at information ``1/variance``,
    mixing over effects of about ``2 * half_width`` (where it is tightest)."""
    if variance <= 0:
        return 0.0
    information = 1 / variance
    rho = 1 / (2 * half_width) ** 2
    width = (information + rho) * (math.log((information + rho) / rho) + 2 * math.log(1 / alpha))
    return math.sqrt(width) / information


def sequential_test(estimate: Estimate, limit: float, half_width: float, plan: Design) -> Outcome:
    """Is the effect above ``limit``? SPRT between ``limit ± half_width``, and a
    confidence sequence at ``plan.confidence_alpha``."""
    e, variance = estimate.value, max(estimate.variance, 1e-12)
    llr = 2 * half_width / variance * (e - limit)
    radius = confidence_radius(variance, half_width, plan.confidence_alpha)
    lower, upper = e - radius, e + radius
    decision: Decision
    if llr >= plan.fail_at or lower > limit:
        decision = "fail"
    elif llr <= plan.pass_at or upper < limit:
        decision = "pass"
    else:
        decision = "continue"
    more = None
    if decision == "continue":
        gap = abs(e - limit)
        target = plan.fail_at if e > limit else -plan.pass_at
        # Information grows with requests: the LLR at the current effect scales with it.
        more = math.inf if gap == 0 else target * variance / (2 * half_width * gap)
    return Outcome(decision, e, lower, upper, llr, more)
