"""How the judge decides on Triton's summary (``metrics: triton``): one number per arm per
minute, against the point-estimate rule it replaced, over simulated rollouts.

Triton's request summary gives each pod's P95 over its last 60 seconds and nothing about
its precision. Until this benchmark's change the verdict compared the two arms' latest
summary values (the **old** rule: fail above the reference x 1.20), so a noisy minute
rolled back an identical revision. The **new** rule is the operator's own
:func:`llmcanary.analysis.verdict.judge` on what the Prometheus source now reads: the
summary at the end of every 60 s block of the step, each arm's blocks paired by instant,
the mean log ratio tested with the blocks' spread as its variance
(:func:`~llmcanary.analysis.sequential.block_mean`).

The requests come from ``bench/judge.py``'s latency model (the same pool: end-to-end
latency = TTFT + (tokens - 1) x TPOT, true P95 about 12 s), Poisson arrivals at the
arm's share of ``--rates``, one pod per arm (the canary and its fresh baseline). A
minute's summary value is the exact P95 of that minute's successful requests (Triton's
CKMS keeps it within 0.1% of rank), None in a minute without one. Left out: several pods
per arm (the geometric mean across pods), scrape lag and Prometheus' lookback, minutes
misaligned with Triton's own, warm-up. Both rules draw from the same latency model (each
rule its own random stream, so not paired request by request) and follow the same step
logic (``rollout/machine.py``, as ``bench/judge.py`` follows
it): a check every minute on the step so far, a failed check rolls back (failureLimit 1),
a step ends once its time is up and the latest check passed, a waiting check lets it run
on, ``inconclusiveLimit`` other inconclusive checks in a row pause the rollout, a step
past ``--step-cap-minutes`` stalls. The error-rate criterion is the same sequential test
in both (the product's rule: e2eLatency P95 +20%, errors +1 point); no warm-up.

Scenarios: identical arms; the canary +10/+20/+30/+50%; identical and +30% arms each
under its own contention (every request of a minute slower or faster together, as on a
busy node, standard deviation 0.15 in log latency, as measured on the local stack), new
each minute; and the same with contention that lasts (an AR(1) of 5 minutes' memory: a
slow spell spans several blocks, so neighbouring minutes look alike).

    .venv/bin/python bench/judge_summary.py          # about 2 minutes of one core
    .venv/bin/python bench/judge_summary.py --markdown /tmp/summary.md --json /tmp/s.json

Not a test: nothing here asserts. Pure Python and numpy.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from judge import (
    CONTENTION,
    ERROR_RATE,
    POOL_SIZE,
    Requests,
    Result,
    Scenario,
    bench_spec,
    emit,
    outcome_table,
    summarise,
    targets,
)

from llmcanary.analysis.sequential import design
from llmcanary.analysis.types import ArmReading, LatencyReading
from llmcanary.analysis.verdict import Check, Judgement, judge, min_samples
from llmcanary.api.spec import AnalysisSpec

Array = np.ndarray[Any, Any]
BLOCK_SECONDS = 60  # Triton's summary window: the operator's blocks for it
OLD_FACTOR = 1.20  # the product's +20%, as the old rule applied it to two numbers
SPELL_SECONDS = 300  # the memory of contention that lasts

SCENARIOS = (
    Scenario("identical", "identical arms"),
    Scenario("plus10", "canary +10%", slower=1.10),
    Scenario("plus20", "canary +20%", slower=1.20),
    Scenario("plus30", "canary +30%", slower=1.30),
    Scenario("plus50", "canary +50%", slower=1.50),
    Scenario("contended", "identical, each arm contended", contention=CONTENTION),
    Scenario("contended30", "canary +30%, each arm contended", slower=1.30, contention=CONTENTION),
    Scenario(
        "spells",
        "identical, contention lasting minutes",
        contention=CONTENTION,
        memory_seconds=SPELL_SECONDS,
    ),
    Scenario(
        "spells30",
        "canary +30%, contention lasting minutes",
        slower=1.30,
        contention=CONTENTION,
        memory_seconds=SPELL_SECONDS,
    ),
)


@dataclass(frozen=True)
class Setup:
    analysis: AnalysisSpec
    weights: tuple[int, ...]
    initial_minutes: int
    step_minutes: int
    cap_minutes: int
    floor: int

    def judgement(self, weight: int, minutes: int) -> Judgement:
        return Judgement(
            plan=design(len(self.analysis.rules), len(self.weights)),
            reference="baseline",
            reference_share=weight,
            window_seconds=minutes * BLOCK_SECONDS,
        )


def make_setup(args: argparse.Namespace) -> Setup:
    spec = bench_spec(
        args.initial_step_minutes, args.step_minutes, {"interval": "1m", "metrics": "triton"}
    )
    analysis = spec.canary.analysis
    rules = analysis.rules
    return Setup(
        analysis.model_copy(update={"criteria": rules}),
        tuple(spec.planned_weights()),
        args.initial_step_minutes,
        args.step_minutes,
        args.step_cap_minutes,
        min_samples(analysis),
    )


class SummaryArm:
    """One arm's minutes: requests, errors and the summary's P95 of each."""

    def __init__(
        self, rng: np.random.Generator, values: Array, rate: float, scenario: Scenario
    ) -> None:
        self.rng, self.values = rng, values
        self.per_minute = rate * BLOCK_SECONDS
        self.sigma = scenario.contention
        # The arm's slowdown is an AR(1) from minute to minute (memory_seconds).
        self.rho = math.exp(-BLOCK_SECONDS / scenario.memory_seconds)
        self.shock = self.sigma * float(rng.standard_normal()) if self.sigma else 0.0
        self.p95: list[float | None] = []
        self.ok = self.errors = 0

    def minute(self) -> None:
        if self.sigma:
            fresh = math.sqrt(1 - self.rho**2) * self.sigma * float(self.rng.standard_normal())
            self.shock = self.rho * self.shock + fresh
        n = int(self.rng.poisson(self.per_minute))
        errors = int(self.rng.binomial(n, ERROR_RATE)) if n else 0
        ok = n - errors
        self.ok, self.errors = self.ok + ok, self.errors + errors
        if ok == 0:
            self.p95.append(None)
            return
        drawn = self.values[self.rng.integers(0, POOL_SIZE, ok)]
        if self.sigma:
            drawn = drawn * math.exp(self.shock)
        self.p95.append(float(np.quantile(drawn, 0.95, method="inverted_cdf")))

    def reading(self, *, blocks: bool) -> ArmReading:
        """What the Prometheus source reads: the latest summary value and, for the new
        rule, every minute's."""
        latest = self.p95[-1] if self.p95 else None
        return ArmReading(
            requests=float(self.ok),
            errors=float(self.errors),
            latency={
                "e2eLatency": LatencyReading(
                    quantiles={0.95: latest},
                    quantile_blocks={0.95: tuple(self.p95)} if blocks else None,
                    method="Triton's summary",
                )
            },
        )


def old_verdict(setup: Setup, weight: int, minutes: int, ref: SummaryArm, can: SummaryArm) -> str:
    """The rule as shipped before: the latest summary values compared, the error rate's
    sequential test as now."""
    if min(ref.ok + ref.errors, can.ok + can.errors) < setup.floor:
        return "waiting"
    errors_only = setup.analysis.model_copy(
        update={"criteria": [c for c in setup.analysis.rules if c.metric == "errorRate"]}
    )
    check = judge(
        errors_only,
        ref.reading(blocks=False),
        can.reading(blocks=False),
        setup.judgement(weight, minutes),
    )
    mine, theirs = can.p95[-1], ref.p95[-1]
    if mine is not None and theirs is not None and mine > theirs * OLD_FACTOR:
        return "fail"
    if check.verdict == "fail":
        return "fail"
    if mine is None or theirs is None:
        return "blocked"
    return "pass" if check.verdict == "pass" else ("waiting" if check.waiting else "blocked")


def new_verdict(setup: Setup, weight: int, minutes: int, ref: SummaryArm, can: SummaryArm) -> str:
    check: Check = judge(
        setup.analysis,
        ref.reading(blocks=True),
        can.reading(blocks=True),
        setup.judgement(weight, minutes),
    )
    if check.verdict == "inconclusive":
        return "waiting" if check.waiting else "blocked"
    return check.verdict


def rollout(
    setup: Setup,
    rng: np.random.Generator,
    pool: tuple[Array, Array],
    scenario: Scenario,
    rate: float,
    rule: str,
) -> Result:
    reference_values, canary_values = pool
    verdict_of = new_verdict if rule == "new" else old_verdict
    elapsed = canary_total = inconclusive = 0
    last = len(setup.weights) - 1
    for step, weight in enumerate(setup.weights):
        share = rate * weight / 100
        ref = SummaryArm(rng, reference_values, share, scenario)
        can = SummaryArm(rng, canary_values, share, scenario)
        length = setup.initial_minutes if step == 0 else setup.step_minutes
        minutes = 0
        while True:
            ref.minute()
            before = can.ok + can.errors
            can.minute()
            canary_total += can.ok + can.errors - before
            minutes += 1
            elapsed += 1
            verdict = verdict_of(setup, weight, minutes, ref, can)
            if verdict == "fail":
                return Result("rolledBack", weight, elapsed, canary_total, "e2e")
            if verdict == "blocked":
                inconclusive += 1
                if inconclusive >= setup.analysis.inconclusive_limit:
                    return Result("stalled", weight, elapsed, canary_total, "paused")
            else:
                inconclusive = 0
            if verdict == "pass" and minutes >= length:
                if step == last:
                    return Result("promoted", weight, elapsed, canary_total)
                break
            if minutes >= setup.cap_minutes:
                return Result("stalled", weight, elapsed, canary_total, "step cap")
    raise AssertionError("unreachable")


def run(args: argparse.Namespace) -> dict[str, Any]:
    setup = make_setup(args)
    requests = Requests(np.random.default_rng([args.seed, 0]))
    reference_values = requests.values(1.0)["e2eLatency"]
    figures: dict[str, Any] = {
        "config": {
            "seed": args.seed,
            "weights": list(setup.weights),
            "initial_step_minutes": setup.initial_minutes,
            "step_minutes": setup.step_minutes,
            "step_cap_minutes": setup.cap_minutes,
            "min_samples": setup.floor,
            "criteria": [c.label for c in setup.analysis.rules],
            "true_p95_ms": float(np.percentile(reference_values, 95)),
            "rollouts": args.rollouts,
        },
        "rates": {},
    }
    started = time.perf_counter()
    for rate in args.rates:
        per_rate: dict[str, Any] = {}
        for s_index, scenario in enumerate(SCENARIOS):
            canary_values = requests.values(scenario.slower)["e2eLatency"]
            for r_index, rule in enumerate(("old", "new")):
                rng = np.random.default_rng([args.seed, round(rate * 1000), s_index + 1, r_index])
                t0 = time.perf_counter()
                results = [
                    rollout(setup, rng, (reference_values, canary_values), scenario, rate, rule)
                    for _ in range(args.rollouts)
                ]
                summary = summarise(results)
                summary["wall_seconds"] = round(time.perf_counter() - t0, 2)
                per_rate.setdefault(scenario.key, {})[rule] = summary
                print(
                    f"  {rate:g} req/s {scenario.key:11} {rule}: {summary['wall_seconds']:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
        figures["rates"][f"{rate:g}"] = per_rate
    figures["wall_seconds"] = round(time.perf_counter() - started, 1)
    return figures


def markdown(figures: dict[str, Any]) -> str:
    c = figures["config"]
    lines = [
        f"Simulated rollouts on Triton's summary: one pod per arm, Poisson arrivals, each"
        f" minute's P95 exact (true P95 {c['true_p95_ms']:,.0f} ms); a check every minute;"
        f" weights {', '.join(map(str, c['weights']))} against a fresh baseline; the first"
        f" step {c['initial_step_minutes']} min, the others {c['step_minutes']} min, a step"
        f" past {c['step_cap_minutes']} min stalls; criteria {', '.join(c['criteria'])};"
        f" {c['min_samples']} requests per arm before a check; {c['rollouts']} rollouts per"
        f" rule and scenario, seed {c['seed']}.",
        "",
        f"- **old**: the latest summary values compared, canary > reference x {OLD_FACTOR:g}"
        " fails.",
        "- **new**: `verdict.judge` on every minute's summary value, paired by minute.",
    ]
    titles = {s.key: s.title for s in SCENARIOS}
    for rate, per_rate in figures["rates"].items():
        lines += ["", f"#### {rate} requests/s", "", *outcome_table(per_rate, titles)]
    lines += ["", targets(figures)]
    lines += ["", f"Simulated in {figures['wall_seconds']:.0f} s."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[10.0, 50.0], help="req/s")
    parser.add_argument("--rollouts", type=int, default=300, help="per rule and scenario")
    parser.add_argument("--initial-step-minutes", type=int, default=15, help="spec default")
    parser.add_argument("--step-minutes", type=int, default=30, help="spec default")
    parser.add_argument("--step-cap-minutes", type=int, default=120)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--markdown", type=Path, help="write the Markdown here too")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    figures = run(args)
    emit(markdown(figures), figures, args)


if __name__ == "__main__":
    main()
