"""The statistics of a check against answers known in closed form or by construction."""

from __future__ import annotations

import math
import random
from statistics import NormalDist

import pytest
from specs import lognormal_histogram

from llmcanary.analysis import sequential
from llmcanary.analysis.histogram import Histogram
from llmcanary.analysis.sequential import Design, Estimate, design, sequential_test

LIMIT = math.log(1.2)
HALF = (math.log(1.3) - math.log(1.1)) / 2
PLAN = design(criteria=4, planned_steps=6)


def test_the_error_budget_is_spread_over_criteria_and_steps() -> None:
    assert PLAN.alpha == pytest.approx(0.10 / 24)
    assert PLAN.beta == 0.20
    # Wald's boundaries, with half of alpha for the SPRT (the confidence sequence has
    # the other half).
    assert PLAN.fail_at == pytest.approx(math.log(0.8 / (0.10 / 48)))
    assert PLAN.pass_at == pytest.approx(math.log(0.2 / (1 - 0.10 / 48)))
    assert design(0, 0).alpha == 0.10


def test_minimum_samples_give_ten_observations_beyond_the_quantile() -> None:
    assert sequential.min_samples([0.95]) == 200
    assert sequential.min_samples([0.5, 0.99]) == 1000
    assert sequential.min_samples([0.5]) == 100  # never under MIN_REQUESTS
    assert sequential.min_samples([]) == 100


def _asymptotic_se(sigma: float, n: int, q: float = 0.95) -> float:
    """For a log-normal, log Q_q has standard error sqrt(q(1-q)/n) / (phi(z_q) / sigma)."""
    z = NormalDist().inv_cdf(q)
    return math.sqrt(q * (1 - q) / n) / (NormalDist().pdf(z) / sigma)


@pytest.mark.parametrize(("sigma", "n"), [(0.5, 1000), (0.5, 4000), (0.8, 500)])
def test_a_quantiles_standard_error_matches_the_asymptotic_formula(sigma: float, n: int) -> None:
    z = NormalDist().inv_cdf(0.95)
    estimate = sequential.log_quantile(lognormal_histogram(100.0, sigma, n), 0.95)
    assert estimate is not None
    assert estimate.value == pytest.approx(math.log(100 * math.exp(sigma * z)), abs=0.03)
    assert math.sqrt(estimate.variance) == pytest.approx(_asymptotic_se(sigma, n), rel=0.2)


def test_buckets_coarse_for_the_spread_overstate_the_error_never_understate_it() -> None:
    # sigma 0.2 puts the P95's neighbourhood inside one or two 20% buckets: linear
    # interpolation flattens the density, so the error reads larger (slower decisions,
    # not more false ones).
    estimate = sequential.log_quantile(lognormal_histogram(100.0, 0.2, 2000), 0.95)
    assert estimate is not None
    expected = _asymptotic_se(0.2, 2000)
    assert expected <= math.sqrt(estimate.variance) <= 2 * expected


def test_an_empty_histogram_has_no_estimate() -> None:
    assert sequential.log_quantile(Histogram((1.0, math.inf), (0.0, 0.0)), 0.95) is None


def test_proportions_never_claim_certainty_from_no_errors() -> None:
    none = sequential.proportion(0, 1000)
    assert none.value == 0
    assert none.variance > 0
    diff = sequential.difference(sequential.proportion(30, 1000), none)
    assert diff.value == pytest.approx(0.03)
    assert diff.variance == pytest.approx(none.variance + (30.5 / 1001) * (1 - 30.5 / 1001) / 1000)


def test_the_log_likelihood_ratio_is_walds_for_a_normal_estimate() -> None:
    # Between N(limit - h, v) and N(limit + h, v): LLR = 2h (e - limit) / v.
    outcome = sequential_test(Estimate(LIMIT + 0.05, 0.01), LIMIT, HALF, PLAN)
    assert outcome.log_likelihood_ratio == pytest.approx(2 * HALF * 0.05 / 0.01)
    assert outcome.decision == "continue"


def test_the_confidence_sequence_has_the_normal_mixture_radius() -> None:
    v, alpha = 0.004, 0.01
    information, rho = 1 / v, 1 / (2 * HALF) ** 2
    expected = (
        math.sqrt((information + rho) * (math.log(1 + information / rho) + 2 * math.log(1 / alpha)))
        / information
    )
    assert sequential.confidence_radius(v, HALF, alpha) == pytest.approx(expected)
    # Wider than a fixed-sample interval at the same alpha: it holds at every look.
    assert expected > NormalDist().inv_cdf(1 - alpha / 2) * math.sqrt(v)


@pytest.mark.parametrize(
    ("effect", "variance", "decision"),
    [
        (math.log(1.0), 0.002, "pass"),  # identical, ~1000 requests of e2e
        (math.log(1.5), 0.002, "fail"),
        (math.log(6.0), 0.05, "fail"),  # gross: the confidence sequence, from few requests
        (math.log(1.2), 0.002, "continue"),  # on the limit: never decided
    ],
)
def test_decisions_far_from_and_on_the_limit(effect: float, variance: float, decision: str) -> None:
    outcome = sequential_test(Estimate(effect, variance), LIMIT, HALF, PLAN)
    assert outcome.decision == decision
    if decision == "continue":
        assert outcome.more == math.inf
    else:
        assert outcome.more is None


def test_more_is_the_information_the_sprt_needs_at_the_current_effect() -> None:
    v = 0.02
    outcome = sequential_test(Estimate(math.log(1.05), v), LIMIT, HALF, PLAN)
    assert outcome.decision == "continue"
    assert outcome.more is not None
    # With `more` times the requests, the variance is v / more and the LLR reaches the
    # pass boundary exactly.
    at = sequential_test(Estimate(math.log(1.05), v / outcome.more * 0.999), LIMIT, HALF, PLAN)
    assert at.decision == "pass"


def _false_fail_rate(truth: float, looks: int, paths: int, plan: Design) -> float:
    """Random walks of a cumulative estimate (unit variance per request batch): the
    share of paths on which any look fails."""
    rng = random.Random(7)
    failed = 0
    per_look = 0.05  # variance of one batch's log ratio
    for _ in range(paths):
        total = 0.0
        for k in range(1, looks + 1):
            total += rng.gauss(truth, math.sqrt(per_look))
            estimate = Estimate(total / k, per_look / k)
            if sequential_test(estimate, LIMIT, HALF, plan).decision == "fail":
                failed += 1
                break
    return failed / paths


def test_looking_after_every_batch_keeps_false_failures_within_alpha() -> None:
    plan = Design(alpha=0.02, beta=0.2)
    # At half the limit (+10%), however many looks: at most alpha (Ville's inequality).
    assert _false_fail_rate(math.log(1.1), looks=40, paths=1500, plan=plan) <= plan.alpha
    # Identical arms fail far less often still.
    assert _false_fail_rate(0.0, looks=40, paths=1500, plan=plan) <= plan.alpha / 4
    # And a +50% canary is caught nearly always.
    assert _false_fail_rate(math.log(1.5), looks=40, paths=300, plan=plan) >= 0.95


def test_rank_is_the_inverse_of_the_quantile() -> None:
    histogram = lognormal_histogram(100.0, 0.5, 2000)
    for q in (0.1, 0.5, 0.95, 0.99):
        point = histogram.quantile(q)
        assert point is not None
        assert histogram.rank(point) == pytest.approx(q * 2000)
    assert histogram.rank(0.0) == 0.0
    assert histogram.rank(1e9) == 2000


def test_the_window_is_cut_into_blocks_no_shorter_than_the_interval() -> None:
    assert sequential.block_seconds(240, 5) == 240 / sequential.BLOCKS
    assert sequential.block_seconds(20, 5) == 5
    assert sequential.block_seconds(300, 60) == 60
    # Long windows: more blocks, each at least a minute, never more than MAX_BLOCKS.
    assert sequential.block_seconds(600, 5) == 60
    assert sequential.block_seconds(3600, 5) == 3600 / sequential.MAX_BLOCKS


def test_requests_slow_together_count_for_less_than_their_number() -> None:
    # Every block has the same latencies: the share under the P95 does not move, and
    # the variance is that of independent requests (times the few blocks' own doubt).
    steady = [lognormal_histogram(100.0, 0.5, 250) for _ in range(8)]
    total = Histogram.total(steady)
    assert total is not None
    at = total.quantile(0.95)
    assert at is not None
    calm = sequential.design_effect(steady, at, 0.95)
    assert 1.0 <= calm < 1.5
    # Half the blocks 40% slower, half 30% faster, the same count: the share under the
    # window's P95 swings from block to block far beyond binomial chance.
    swinging = [lognormal_histogram(140.0 if i % 2 else 70.0, 0.5, 250) for i in range(8)]
    total = Histogram.total(swinging)
    assert total is not None
    at = total.quantile(0.95)
    assert at is not None
    effect = sequential.design_effect(swinging, at, 0.95)
    assert effect > 5
    plain = sequential.log_quantile(total, 0.95)
    widened = sequential.log_quantile(total, 0.95, effect)
    assert plain is not None and widened is not None
    assert widened.value == plain.value
    assert widened.variance > 3 * plain.variance


def test_fewer_blocks_than_the_minimum_say_nothing_about_clustering() -> None:
    few = [lognormal_histogram(140.0 if i % 2 else 70.0, 0.5, 250) for i in range(4)]
    assert sequential.MIN_BLOCKS > 4
    assert sequential.design_effect(few, 150.0, 0.95) == 1.0
    assert sequential.design_effect(None, 150.0, 0.95) == 1.0


def test_block_means_widen_at_the_tests_own_level_and_batch_long_windows() -> None:
    values = [0.1 * ((-1) ** i) for i in range(8)]
    at_95 = sequential.block_mean(values, 0.05)
    at_plan = sequential.block_mean(values, 0.004)
    assert at_95 is not None and at_plan is not None
    # The same blocks: a test at a stricter level is widened further (t's heavier tail).
    assert at_plan.variance > at_95.variance * 1.1
    assert sequential.block_mean(values[: sequential.MIN_BLOCKS - 1], 0.05) is None
    # 32 one-minute blocks of a slow spell lasting two minutes: judged as 16 batches of two,
    # the spell is one batch's deviation, and the variance is what 16 spells give.
    spells = [0.2 if (i // 2) % 2 else -0.2 for i in range(32)]
    batched = sequential.block_mean(spells, 0.05)
    pairs = sequential.block_mean([0.2 if i % 2 else -0.2 for i in range(16)], 0.05)
    assert batched is not None and pairs is not None
    assert batched.variance == pytest.approx(pairs.variance)
    # Minutes that all read the same are still not known to better than the floor.
    steady = sequential.block_mean([0.0] * 32, 0.05)
    assert steady is not None and steady.variance > 0
