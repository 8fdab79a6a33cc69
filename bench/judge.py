"""How the canary judge decides: the old point-estimate rule against the sequential judge,
on simulated traffic, over thousands of simulated rollouts.

Nothing here runs a cluster: requests are drawn from a latency model of an LLM server,
binned into the tiny-llm histogram ladder (``model_repo/tiny-llm/1/model.py``,
``LATENCY_BUCKETS``) as Prometheus would keep them, and each check reads those buckets.

- **The new rule** is the operator's own code: :func:`llmcanary.analysis.verdict.judge`
  with the reconciler's :class:`~llmcanary.analysis.verdict.Judgement` (the error budget of
  :func:`~llmcanary.analysis.sequential.design` over the spec's criteria and planned
  steps), the canary against a fresh baseline at the same weight, evidence cumulative from
  the start of each step. The step logic follows ``rollout/machine.py``: a check every
  interval; a failed check rolls back (failureLimit 1); a step ends once its interval has
  elapsed *and* the latest check passed; a check inconclusive only for want of requests
  (``waiting``) lets the step run on; ``inconclusiveLimit`` other inconclusive checks in a
  row pause the rollout. Weights: ``spec.planned_weights()`` (5, 15, 25, 35, 45, 50: a
  fresh baseline takes as much as the canary, so the matched comparison ends at 50%).
- **The old rule**, as shipped before (reproduced here, :func:`old_check`): each check
  compares the canary's P95 point estimate with the *stable* arm's (100 - weight % of the
  traffic) over one analysis interval only; fewer than minSamples (200) requests in
  either arm is inconclusive; the canary fails above stable x 1.20 on any latency
  criterion or above 1% errors. Weights 5, 15, ..., 95, 100; same step logic, no
  ``waiting``: every inconclusive check counts towards the pause.

A paused rollout, or a step that runs past ``--step-cap-minutes``, counts as *stalled*
(neither promoted nor rolled back; the operator itself would wait on).

Both rules see the same latency model and the same pool of simulated requests (the arms,
weights and steps differ by design). Scenarios: identical arms; the canary
+10/+20/+30/+50% slower (TTFT and TPOT scaled, so end-to-end too); a tail regression (10%
of the canary's requests 3x slower); answers 30% longer (end to end only: the one
regression only the end-to-end criterion can see, and end-to-end P95 sits where
tiny-llm's buckets are 33-50% wide); identical and +30% arms each under its own
contention (every request of an interval slower or faster together, as on a busy node:
the judge reads both arms' histograms in time blocks, as the operator's source does); and,
for the old rule only, identical arms plus a
*modelled* load bias (the canary, on fewer pods' worth of traffic than the stable arm,
reads slower at P95 as measured on the real stack). The new rule's baseline carries the
canary's load, so that scenario is identical arms for it. Each scenario's true P95 change
is printed beside what the buckets read of it; the issue's targets beside the figures.

Prints Markdown for docs/benchmarks.md; ``--markdown FILE`` and ``--json FILE`` keep them.

    .venv/bin/python bench/judge.py      # 10, 2 and 50 requests/s: about 20 min of one core
    .venv/bin/python bench/judge.py --rates 100 --rollouts 300   # where the old rule judges
    .venv/bin/python bench/judge.py --rates 10 --initial-step-minutes 15 --step-minutes 30 \
        --step-cap-minutes 120 --markdown /tmp/judge.md --json /tmp/judge.json

The steps last 5 minutes by default (the spec's defaults are 15 and 30: longer steps mean
more evidence per step and more checks per rollout, so slower runs). Below 67 requests/s
the old rule never has 200 requests in the canary's 5% window, so it stalls at once.

Not a test: nothing here asserts. Pure Python and numpy; one core.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmcanary.analysis.histogram import Histogram
from llmcanary.analysis.sequential import MIN_BLOCKS, block_seconds, design
from llmcanary.analysis.types import SIGNALS, ArmReading, LatencyReading
from llmcanary.analysis.verdict import Check, Judgement, judge, min_samples
from llmcanary.api.spec import AnalysisSpec, Criterion, LLMDeploymentSpec

Array = np.ndarray[Any, Any]
ROOT = Path(__file__).resolve().parents[1]
MODEL_PY = ROOT / "model_repo" / "tiny-llm" / "1" / "model.py"

# --- the latency model (per request) ---------------------------------------------------
# Output tokens: geometric (a constant chance of the stop token at each step), mean 150.
TOKENS_MEAN = 150
# Time per output token: lognormal per request, median 25 ms.
TPOT_MEDIAN_MS = 25.0
TPOT_SIGMA = 0.25
# Time to first token: lognormal, median 150 ms.
TTFT_MEDIAN_MS = 150.0
TTFT_SIGMA = 0.5
# End to end = TTFT + (tokens - 1) x TPOT (tiny-llm's definition: TPOT is the mean gap
# between the first and the last token, observed once per request).
# Failed requests, the same in every arm and scenario (no latency observed for them).
ERROR_RATE = 0.001
# Requests drawn once per run; each arm samples from them with replacement.
POOL_SIZE = 1 << 17
# Contention (the "contended" scenarios): the spread of an arm's log latency from one
# interval to the next, as measured on the local stack (tiny-llm on 2 shared cores: the
# share of an arm's requests above its P95 moved between 3% and 10% from one 30 s block
# to the next). Shocks are rounded to this step of log latency (a bounded pool cache).
CONTENTION = 0.15
SHOCK_STEP = 0.02

# --- the rollout -----------------------------------------------------------------------
INTERVAL_SECONDS = 60  # analysis.interval (the default, 1m); --interval-seconds
OLD_MIN_SAMPLES = 200  # the old minSamples default
OLD_WEIGHTS = (5, 15, 25, 35, 45, 55, 65, 75, 85, 95, 100)  # old default: up to maxWeight 100
# Canary / stable P95 measured on the real stack with the canary's pods on a smaller share
# of the traffic than the stable arm's (the figures; 45%: 1.22-1.41, the middle).
LOAD_BIAS = ((5, 1.65), (25, 1.46), (45, 1.315), (95, 1.0))

# --- the targets ---------------------------------------------------------------
FALSE_ROLLBACK_MAX = 1.0  # identical arms: rolled back in at most 1% of rollouts
CAUGHT_EARLY_MIN = 95.0  # +30%: rolled back before the canary passes 25%, in >= 95%
PROMOTED_MIN = 90.0  # +10%: promoted in >= 90%
EARLY_WEIGHT = 25


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    slower: float = 1.0  # every canary request's TTFT and TPOT times this
    tail_share: float = 0.0  # this share of the canary's requests ...
    tail_slower: float = 1.0  # ... this many times slower again (TTFT, TPOT, end to end)
    tokens: float = 1.0  # the canary's answers this many times longer (end to end only)
    load_bias: bool = False  # the old rule's modelled load bias (old rule only)
    new_rule: bool = True
    # Each arm's own contention: every request of an interval is exp(s) times slower,
    # s an AR(1) process per arm (this standard deviation, this memory in seconds).
    contention: float = 0.0
    memory_seconds: float = 20.0


SCENARIOS = (
    Scenario("identical", "identical arms"),
    Scenario("plus10", "canary +10%", slower=1.10),
    Scenario("plus20", "canary +20%", slower=1.20),
    Scenario("plus30", "canary +30%", slower=1.30),
    Scenario("plus50", "canary +50%", slower=1.50),
    Scenario("tail", "tail: 10% of requests 3x", tail_share=0.10, tail_slower=3.0),
    Scenario("longer", "answers 30% longer (e2e only)", tokens=1.30),
    Scenario("loadbias", "identical + load bias (modelled)", load_bias=True, new_rule=False),
    Scenario("contended", "identical, each arm contended", contention=CONTENTION),
    Scenario("contended30", "canary +30%, each arm contended", slower=1.30, contention=CONTENTION),
)


def ladder() -> list[float]:
    """tiny-llm's ``LATENCY_BUCKETS`` (seconds), read from its source: model.py imports
    torch and Triton, so only the two assignments that make the ladder are run."""
    tree = ast.parse(MODEL_PY.read_text())
    names = {"_MANTISSAS", "LATENCY_BUCKETS"}
    wanted: list[ast.stmt] = []
    for node in tree.body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        if any(isinstance(t, ast.Name) and t.id in names for t in targets):
            wanted.append(node)
    namespace: dict[str, Any] = {}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), str(MODEL_PY), "exec"), namespace)
    buckets = [float(b) for b in namespace["LATENCY_BUCKETS"]]
    if buckets != sorted(buckets) or len(buckets) < 10:
        raise SystemExit(f"unexpected LATENCY_BUCKETS in {MODEL_PY}: {buckets}")
    return buckets


LADDER_SECONDS = np.array(ladder())
BOUNDS_MS: tuple[float, ...] = (*(round(b * 1000, 6) for b in LADDER_SECONDS), math.inf)
BUCKETS = len(BOUNDS_MS)  # with +Inf
CELLS = len(SIGNALS) * BUCKETS
SIGNAL_LABEL = {"e2eLatency": "e2e", "ttft": "ttft", "tpot": "tpot"}


def load_bias(weight: int) -> float:
    """The modelled canary / stable P95 ratio at ``weight`` (linear between the points)."""
    points = LOAD_BIAS
    if weight <= points[0][0]:
        return points[0][1]
    for (w0, r0), (w1, r1) in itertools.pairwise(points):
        if weight <= w1:
            return r0 + (r1 - r0) * (weight - w0) / (w1 - w0)
    return points[-1][1]


class Requests:
    """The request pool: one draw of the latency model, kept as each request's bucket
    index per signal (offset so that one bincount counts all three signals)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.tokens = rng.geometric(1 / TOKENS_MEAN, POOL_SIZE).astype(float)
        self.tpot = TPOT_MEDIAN_MS * np.exp(TPOT_SIGMA * rng.standard_normal(POOL_SIZE))
        self.ttft = TTFT_MEDIAN_MS * np.exp(TTFT_SIGMA * rng.standard_normal(POOL_SIZE))
        self.uniform = rng.random(POOL_SIZE)  # picks the tail's requests
        self._codes: dict[tuple[float, float, float, float], Array] = {}

    def values(
        self, slower: float, tail_share: float = 0.0, tail_slower: float = 1.0, tokens: float = 1.0
    ) -> dict[str, Array]:
        """Each pool request's latencies (ms) for an arm ``slower`` times slower, with a
        share of its requests ``tail_slower`` times slower again, its answers ``tokens``
        times longer."""
        factor = np.full(POOL_SIZE, slower)
        if tail_share > 0:
            factor[self.uniform < tail_share] *= tail_slower
        ttft = self.ttft * factor
        tpot = self.tpot * factor
        e2e = ttft + (self.tokens * tokens - 1) * tpot
        return {"e2eLatency": e2e, "ttft": ttft, "tpot": tpot}

    def codes(
        self, slower: float, tail_share: float = 0.0, tail_slower: float = 1.0, tokens: float = 1.0
    ) -> Array:
        key = (round(slower, 6), tail_share, tail_slower, tokens)
        if key not in self._codes:
            values = self.values(slower, tail_share, tail_slower, tokens)
            columns = []
            for i, signal in enumerate(SIGNALS):
                # Prometheus counts an observation under every bound >= it.
                index = np.searchsorted(LADDER_SECONDS, values[signal] / 1000, side="left")
                columns.append(index + i * BUCKETS)
            self._codes[key] = np.stack(columns, axis=1).astype(np.int32)
        return self._codes[key]

    def p95_change(self, scenario: Scenario) -> dict[str, tuple[float, float]]:
        """Per signal, the canary's P95 change in percent: true, and as the buckets read it
        with unlimited traffic (the interpolation inside a bucket, PromQL's)."""
        reference = self.values(1.0)
        canary = self.values(
            scenario.slower, scenario.tail_share, scenario.tail_slower, scenario.tokens
        )
        ref_codes = self.codes(1.0)
        can_codes = self.codes(
            scenario.slower, scenario.tail_share, scenario.tail_slower, scenario.tokens
        )
        out = {}
        for i, signal in enumerate(SIGNALS):
            true = np.percentile(canary[signal], 95) / np.percentile(reference[signal], 95)
            read = []
            for codes in (can_codes, ref_codes):
                counts = np.bincount(codes[:, i] - i * BUCKETS, minlength=BUCKETS)
                read.append(
                    Histogram(BOUNDS_MS, tuple(counts.cumsum().astype(float))).quantile(0.95)
                )
            mine, theirs = (math.nan if r is None else r for r in read)
            out[SIGNAL_LABEL[signal]] = (float(100 * (true - 1)), 100 * (mine / theirs - 1))
        return out

    def percentiles(self) -> dict[str, tuple[float, float]]:
        """The model's true P50 / P95 per signal (ms), for the header."""
        out = {}
        for signal, values in self.values(1.0).items():
            p50, p95 = np.percentile(values, [50, 95])
            out[SIGNAL_LABEL[signal]] = (float(p50), float(p95))
        return out


@dataclass
class Chunk:
    """Some intervals of one arm: bucket counts per interval and signal, successes, errors."""

    counts: Array  # (intervals, signals, buckets)
    ok: Array
    errors: Array


def draw(rng: np.random.Generator, codes: Array, per_interval: float, k: int) -> Chunk:
    """``k`` intervals of Poisson arrivals at ``per_interval`` requests each."""
    n = rng.poisson(per_interval, k) if per_interval > 0 else np.zeros(k, dtype=np.int64)
    errors = rng.binomial(n, ERROR_RATE) if per_interval > 0 else n
    ok = n - errors
    total = int(ok.sum())
    if total == 0:
        return Chunk(np.zeros((k, len(SIGNALS), BUCKETS), dtype=np.int64), ok, errors)
    picked = codes[rng.integers(0, POOL_SIZE, total)]
    picked += np.repeat(np.arange(k, dtype=np.int32) * CELLS, ok)[:, None]
    counts = np.bincount(picked.ravel(), minlength=k * CELLS)
    return Chunk(counts.reshape(k, len(SIGNALS), BUCKETS), ok, errors)


class Arm:
    """One arm's traffic over a step, drawn a step's length at a time; under contention
    an interval at a time, each at its own slowdown."""

    def __init__(
        self,
        rng: np.random.Generator,
        codes: Callable[[float], Array],
        rate: float,
        chunk: int,
        interval: int,
        contention: tuple[float, float] = (0.0, 0.0),
    ):
        self.rng, self.codes = rng, codes
        self.per_interval = rate * interval
        self.sigma, memory = contention
        self.chunk = 1 if self.sigma else chunk
        self.rho = math.exp(-interval / memory) if memory > 0 else 0.0
        self.shock = self.sigma * rng.standard_normal() if self.sigma else 0.0
        self.drawn: list[Chunk] = []
        self.served = 0

    def _factor(self) -> float:
        if not self.sigma:
            return 1.0
        self.shock = self.rho * self.shock + math.sqrt(1 - self.rho**2) * self.sigma * float(
            self.rng.standard_normal()
        )
        return math.exp(round(self.shock / SHOCK_STEP) * SHOCK_STEP)

    def interval(self, k: int) -> tuple[Array, int, int]:
        """Interval ``k`` (0-based) of the step: bucket counts, successes, errors."""
        while k >= len(self.drawn) * self.chunk:
            codes = self.codes(self._factor())
            self.drawn.append(draw(self.rng, codes, self.per_interval, self.chunk))
        c = self.drawn[k // self.chunk]
        i = k % self.chunk
        return c.counts[i], int(c.ok[i]), int(c.errors[i])


def histogram(counts: Array) -> Histogram:
    """Bucket counts as the cumulative histogram Prometheus keeps (already sorted)."""
    return Histogram(BOUNDS_MS, tuple(counts.cumsum().astype(float).tolist()))


def blocks(intervals: Sequence[Array], interval: int) -> list[Array]:
    """The step's intervals merged into the time blocks the operator's source reads
    (:func:`~llmcanary.analysis.sequential.block_seconds`): whole blocks from the step's
    start, a last partial one left out, as the range query's steps do."""
    size = math.ceil(block_seconds(len(intervals) * interval, interval) / interval)
    whole = len(intervals) // size
    if whole < MIN_BLOCKS:
        return []
    return [np.sum(intervals[i * size : (i + 1) * size], axis=0) for i in range(whole)]


def reading(counts: Array, ok: int, errors: int, cut: Sequence[Array] = ()) -> ArmReading:
    """An arm as a histogram source reads it: one pod, the buckets' increase, and the
    same in the time blocks ``cut``."""
    cumulative = counts.cumsum(axis=1).astype(float).tolist()
    return ArmReading(
        requests=float(ok),
        errors=float(errors),
        latency={
            signal: LatencyReading(
                # Already sorted and cumulative: from_buckets would return the same.
                pods={"pod-0": Histogram(BOUNDS_MS, tuple(cumulative[i]))},
                blocks=tuple(histogram(block[i]) for block in cut),
            )
            for i, signal in enumerate(SIGNALS)
        },
    )


def old_check(
    rules: Sequence[Criterion],
    stable: tuple[Array, int, int],
    canary: tuple[Array, int, int],
    stable_share: int,
) -> tuple[str, str | None]:
    """The old rule on one interval's window: (verdict, the failing criteria)."""
    arms = (stable, canary) if stable_share > 0 else (canary,)
    if any(ok + errors < OLD_MIN_SAMPLES for _, ok, errors in arms):
        return "inconclusive", None
    failed = []
    for rule in rules:
        if rule.metric == "errorRate":
            _, ok, errors = canary
            if rule.max_percent is not None and errors / (ok + errors) > rule.max_percent / 100:
                failed.append("errors")
            continue
        if rule.max_increase_percent is None or stable_share == 0:
            continue  # at 100% the old rule had only absolute limits left
        i = SIGNALS.index(rule.metric)
        mine = Histogram(BOUNDS_MS, tuple(canary[0][i].cumsum().astype(float).tolist()))
        theirs = Histogram(BOUNDS_MS, tuple(stable[0][i].cumsum().astype(float).tolist()))
        a, b = mine.quantile(rule.q), theirs.quantile(rule.q)
        if a is not None and b is not None and a > b * (1 + rule.max_increase_percent / 100):
            failed.append(SIGNAL_LABEL[rule.metric])
    return ("fail", "+".join(failed)) if failed else ("pass", None)


@dataclass
class Result:
    outcome: str  # rolledBack | promoted | stalled
    weight: int  # the canary's weight when it was decided
    minutes: float
    canary_requests: int
    cause: str | None = None  # failing criteria, or why it stalled


@dataclass
class Tally:
    """What the checks said, over all rollouts of one scenario and rule."""

    checks: int = 0
    judged: int = 0  # judge() called (both arms past minSamples)
    passed: int = 0
    failed: int = 0
    waiting: int = 0
    blocked: int = 0  # inconclusive, not for want of requests
    blocked_reasons: Counter[str] = field(default_factory=Counter)
    seconds_in_judge: float = 0.0


@dataclass(frozen=True)
class Setup:
    spec: LLMDeploymentSpec
    analysis: AnalysisSpec
    rules: tuple[Criterion, ...]
    weights: tuple[int, ...]
    initial_intervals: int
    step_intervals: int
    cap_intervals: int
    inconclusive_limit: int
    floor: int
    interval: int  # seconds

    def length(self, step: int) -> int:
        return self.initial_intervals if step == 0 else self.step_intervals

    def judgement(self, weight: int, intervals: int) -> Judgement:
        # As machine.judgement builds it for a fresh baseline.
        return Judgement(
            plan=design(len(self.rules), len(self.weights)),
            reference="baseline",
            reference_share=weight,
            window_seconds=intervals * self.interval,
        )


def bench_spec(
    initial_minutes: int, step_minutes: int, analysis: dict[str, Any]
) -> LLMDeploymentSpec:
    """The spec the simulated rollouts follow: the product's defaults, a fresh baseline
    (the gatewayAPI router), the given steps and analysis."""
    return LLMDeploymentSpec.model_validate(
        {
            "model": {"name": "tiny-llm", "repository": "pvc://models/repo"},
            "triton": {"maxBatchSize": 8},
            "replicas": 2,
            "resources": {"gpus": 1, "cpu": "8", "memory": "64Gi"},
            "traffic": {"router": "gatewayAPI"},
            "canary": {
                "initialStepInterval": f"{initial_minutes}m",
                "stepInterval": f"{step_minutes}m",
                "analysis": analysis,
            },
        }
    )


def make_setup(args: argparse.Namespace) -> Setup:
    spec = bench_spec(
        args.initial_step_minutes, args.step_minutes, {"interval": f"{args.interval_seconds}s"}
    )
    if spec.baseline != "fresh":
        raise SystemExit(
            f"expected a fresh baseline with the gatewayAPI router, got {spec.baseline}"
        )
    rules = tuple(spec.canary.analysis.rules)
    # The same criteria, given explicitly: judge() then skips rebuilding the defaults.
    analysis = spec.canary.analysis.model_copy(update={"criteria": list(rules)})
    if 60 % args.interval_seconds:
        raise SystemExit("--interval-seconds must divide a minute")
    per_minute = 60 // args.interval_seconds
    initial = args.initial_step_minutes * per_minute
    step = args.step_minutes * per_minute
    cap = max(args.step_cap_minutes * per_minute, initial, step)
    return Setup(
        spec,
        analysis,
        rules,
        tuple(spec.planned_weights()),
        initial,
        step,
        cap,
        analysis.inconclusive_limit,
        min_samples(analysis),
        args.interval_seconds,
    )


def new_rollout(
    setup: Setup,
    rng: np.random.Generator,
    requests: Requests,
    scenario: Scenario,
    rate: float,
    tally: Tally,
) -> Result:
    def canary_codes(factor: float) -> Array:
        return requests.codes(
            scenario.slower * factor, scenario.tail_share, scenario.tail_slower, scenario.tokens
        )

    contention = (scenario.contention, scenario.memory_seconds)
    elapsed = 0
    canary_total = 0
    inconclusive = 0  # machine.py keeps this count across steps
    undecided: str | None = None  # the criteria the last waiting check waited on
    last = len(setup.weights) - 1
    for step, weight in enumerate(setup.weights):
        share = rate * weight / 100
        chunk = setup.length(step)
        reference = Arm(rng, requests.codes, share, chunk, setup.interval, contention)
        canary = Arm(rng, canary_codes, share, chunk, setup.interval, contention)
        ref_counts = np.zeros((len(SIGNALS), BUCKETS), dtype=np.int64)
        can_counts = np.zeros_like(ref_counts)
        ref_intervals: list[Array] = []
        can_intervals: list[Array] = []
        ref_ok = ref_err = can_ok = can_err = 0
        k = 0
        while True:
            counts, ok, errors = reference.interval(k)
            ref_counts += counts
            ref_intervals.append(counts)
            ref_ok, ref_err = ref_ok + ok, ref_err + errors
            counts, ok, errors = canary.interval(k)
            can_counts += counts
            can_intervals.append(counts)
            can_ok, can_err = can_ok + ok, can_err + errors
            canary_total += ok + errors
            k += 1
            elapsed += 1
            tally.checks += 1
            verdict, cause, waiting = _new_check(
                setup,
                tally,
                weight,
                k,
                (ref_counts, ref_ok, ref_err, blocks(ref_intervals, setup.interval)),
                (can_counts, can_ok, can_err, blocks(can_intervals, setup.interval)),
            )
            minutes = elapsed * setup.interval / 60
            if verdict == "fail":
                return Result("rolledBack", weight, minutes, canary_total, cause)
            if waiting:
                undecided = cause
            if verdict == "inconclusive" and not waiting:
                inconclusive += 1
                if inconclusive >= setup.inconclusive_limit:
                    return Result("stalled", weight, minutes, canary_total, f"paused: {cause}")
            else:
                inconclusive = 0
            if verdict == "pass" and k >= setup.length(step):
                if step == last:
                    return Result("promoted", weight, minutes, canary_total)
                break
            if k >= setup.cap_intervals:
                why = f"step cap, waiting on {undecided}" if undecided else "step cap"
                return Result("stalled", weight, minutes, canary_total, why)
    raise AssertionError("unreachable")


def _new_check(
    setup: Setup,
    tally: Tally,
    weight: int,
    intervals: int,
    reference: tuple[Array, int, int, list[Array]],
    canary: tuple[Array, int, int, list[Array]],
) -> tuple[str, str | None, bool]:
    """The operator's check over the step so far: (verdict, cause, waiting)."""
    if min(reference[1] + reference[2], canary[1] + canary[2]) < setup.floor:
        # judge() answers exactly this before looking at anything else (a shortcut).
        tally.waiting += 1
        return "inconclusive", "minSamples", True
    started = time.perf_counter()
    check: Check = judge(
        setup.analysis,
        reading(*reference),
        reading(*canary),
        setup.judgement(weight, intervals),
    )
    tally.seconds_in_judge += time.perf_counter() - started
    tally.judged += 1
    if check.verdict == "fail":
        tally.failed += 1
        failed = [r.criterion for r in check.results if r.verdict == "fail"]
        names = [SIGNAL_LABEL.get(c.metric, "errors") for c in failed]
        return "fail", "+".join(names), False
    if check.verdict == "pass":
        tally.passed += 1
        return "pass", None, False
    if check.waiting:
        tally.waiting += 1
        undecided = [r.criterion for r in check.results if r.waiting]
        return (
            "inconclusive",
            "+".join(SIGNAL_LABEL.get(c.metric, "errors") for c in undecided),
            True,
        )
    tally.blocked += 1
    why = "load ratio" if "per-pod load differs" in check.reason else check.reason[:60]
    tally.blocked_reasons[why] += 1
    return "inconclusive", why, False


def old_rollout(
    setup: Setup,
    rng: np.random.Generator,
    requests: Requests,
    scenario: Scenario,
    rate: float,
    tally: Tally,
) -> Result:
    contention = (scenario.contention, scenario.memory_seconds)
    elapsed = 0
    canary_total = 0
    inconclusive = 0
    last = len(OLD_WEIGHTS) - 1
    for step, weight in enumerate(OLD_WEIGHTS):
        slower = scenario.slower * (load_bias(weight) if scenario.load_bias else 1.0)

        def canary_codes(factor: float, slower: float = slower) -> Array:
            return requests.codes(
                slower * factor, scenario.tail_share, scenario.tail_slower, scenario.tokens
            )

        chunk = setup.length(step)
        stable = Arm(
            rng, requests.codes, rate * (100 - weight) / 100, chunk, setup.interval, contention
        )
        canary = Arm(rng, canary_codes, rate * weight / 100, chunk, setup.interval, contention)
        k = 0
        while True:
            theirs = stable.interval(k)
            mine = canary.interval(k)
            canary_total += mine[1] + mine[2]
            k += 1
            elapsed += 1
            tally.checks += 1
            verdict, cause = old_check(setup.rules, theirs, mine, 100 - weight)
            minutes = elapsed * setup.interval / 60
            if verdict == "fail":
                tally.failed += 1
                return Result("rolledBack", weight, minutes, canary_total, cause)
            if verdict == "inconclusive":
                tally.blocked += 1
                inconclusive += 1
                if inconclusive >= setup.inconclusive_limit:
                    return Result("stalled", weight, minutes, canary_total, "paused: minSamples")
            else:
                tally.passed += 1
                inconclusive = 0
            if verdict == "pass" and k >= setup.length(step):
                if step == last:
                    return Result("promoted", weight, minutes, canary_total)
                break
            if k >= setup.cap_intervals:
                return Result("stalled", weight, minutes, canary_total, "step cap")
    raise AssertionError("unreachable")


def quantile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.quantile(np.asarray(values, dtype=float), q, method="inverted_cdf"))


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """A 95% interval for a proportion (percent)."""
    if n == 0:
        return (math.nan, math.nan)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (100 * max(0.0, centre - half), 100 * min(1.0, centre + half))


def summarise(results: list[Result]) -> dict[str, Any]:
    n = len(results)
    rolled = [r for r in results if r.outcome == "rolledBack"]
    promoted = [r for r in results if r.outcome == "promoted"]
    stalled = [r for r in results if r.outcome == "stalled"]
    early = [r for r in rolled if r.weight <= EARLY_WEIGHT]
    decided = rolled + promoted
    requests = [r.canary_requests for r in decided]
    minutes = [r.minutes for r in decided]

    def pct(k: int) -> float:
        return 100 * k / n if n else math.nan

    return {
        "rollouts": n,
        "rolled_back": len(rolled),
        "rolled_back_pct": pct(len(rolled)),
        "rolled_back_early": len(early),
        "rolled_back_early_pct": pct(len(early)),
        "promoted": len(promoted),
        "promoted_pct": pct(len(promoted)),
        "stalled": len(stalled),
        "stalled_pct": pct(len(stalled)),
        "decision_canary_requests_p50": quantile(requests, 0.5),
        "decision_canary_requests_p90": quantile(requests, 0.9),
        "decision_minutes_p50": quantile(minutes, 0.5),
        "decision_minutes_p90": quantile(minutes, 0.9),
        "all_minutes_p50": quantile([r.minutes for r in results], 0.5),
        "rollback_weights": dict(sorted(Counter(r.weight for r in rolled).items())),
        "rollback_causes": dict(Counter(r.cause for r in rolled).most_common()),
        "stall_weights": dict(sorted(Counter(r.weight for r in stalled).items())),
        "stall_causes": dict(Counter(r.cause for r in stalled).most_common()),
    }


RULES: dict[str, Callable[..., Result]] = {"old": old_rollout, "new": new_rollout}


def run(args: argparse.Namespace) -> dict[str, Any]:
    setup = make_setup(args)
    requests = Requests(np.random.default_rng([args.seed, 0]))
    figures: dict[str, Any] = {
        "config": config(args, setup, requests),
        "rates": {},
    }
    started = time.perf_counter()
    for rate in args.rates:
        per_rate: dict[str, Any] = {}
        for s_index, scenario in enumerate(SCENARIOS):
            if args.scenarios and scenario.key not in args.scenarios:
                continue
            n = args.rollouts if scenario.key == "identical" else args.shifted_rollouts
            for r_index, rule in enumerate(("old", "new")):
                if rule == "new" and not scenario.new_rule:
                    continue
                rng = np.random.default_rng([args.seed, round(rate * 1000), s_index + 1, r_index])
                tally = Tally()
                t0 = time.perf_counter()
                results = [
                    RULES[rule](setup, rng, requests, scenario, rate, tally) for _ in range(n)
                ]
                seconds = time.perf_counter() - t0
                summary = summarise(results)
                summary["checks"] = {
                    **{k: v for k, v in asdict(tally).items() if k != "blocked_reasons"},
                    "blocked_reasons": dict(tally.blocked_reasons),
                }
                summary["wall_seconds"] = round(seconds, 2)
                per_rate.setdefault(scenario.key, {})[rule] = summary
                print(
                    f"  {rate:g} req/s {scenario.key:9} {rule}: {n} rollouts in {seconds:.1f} s"
                    f" ({tally.judged} judged checks, {tally.seconds_in_judge:.1f} s in judge)",
                    file=sys.stderr,
                    flush=True,
                )
        figures["rates"][f"{rate:g}"] = per_rate
    figures["wall_seconds"] = round(time.perf_counter() - started, 1)
    return figures


def config(args: argparse.Namespace, setup: Setup, requests: Requests) -> dict[str, Any]:
    plan = design(len(setup.rules), len(setup.weights))
    return {
        "seed": args.seed,
        "rates": args.rates,
        "rollouts_identical": args.rollouts,
        "rollouts_other": args.shifted_rollouts,
        "interval_seconds": setup.interval,
        "initial_step_minutes": args.initial_step_minutes,
        "step_minutes": args.step_minutes,
        "step_cap_minutes": setup.cap_intervals * setup.interval / 60,
        "new_weights": list(setup.weights),
        "old_weights": list(OLD_WEIGHTS),
        "criteria": [
            c.label
            + (
                f" +{c.max_increase_percent:g}%"
                if c.max_increase_percent
                else f" {c.max_percent:g} points"
            )
            for c in setup.rules
        ],
        "new_min_samples": setup.floor,
        "old_min_samples": OLD_MIN_SAMPLES,
        "inconclusive_limit": setup.inconclusive_limit,
        "failure_limit": setup.analysis.failure_limit,
        "design_alpha": plan.alpha,
        "design_beta": plan.beta,
        "latency_model": {
            "tokens": f"geometric, mean {TOKENS_MEAN}",
            "tpot": f"lognormal, median {TPOT_MEDIAN_MS:g} ms, sigma {TPOT_SIGMA:g}",
            "ttft": f"lognormal, median {TTFT_MEDIAN_MS:g} ms, sigma {TTFT_SIGMA:g}",
            "e2e": "ttft + (tokens - 1) x tpot",
            "error_rate": ERROR_RATE,
            "pool": POOL_SIZE,
            "true_p50_p95_ms": requests.percentiles(),
        },
        "scenarios": {
            sc.key: {"title": sc.title, "p95_change_true_read": requests.p95_change(sc)}
            for sc in SCENARIOS
            if not sc.load_bias
        },
        "buckets": len(LADDER_SECONDS),
        "top_buckets_seconds": [float(b) for b in LADDER_SECONDS if b >= 10],
        "load_bias": [list(p) for p in LOAD_BIAS],
    }


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def markdown(figures: dict[str, Any]) -> str:
    c = figures["config"]
    model = c["latency_model"]
    truth = model["true_p50_p95_ms"]
    lines = [
        "Simulated rollouts; each request drawn from one latency model: output tokens"
        f" {model['tokens']}; TPOT {model['tpot']}; TTFT {model['ttft']};"
        f" end to end {model['e2e']}; {model['error_rate'] * 100:g}% of requests fail in"
        " every arm. True P50 / P95: "
        + ", ".join(f"{k} {v[0]:,.0f} / {v[1]:,.0f} ms" for k, v in truth.items())
        + f". Read through tiny-llm's {c['buckets']} buckets (the highest:"
        f" {', '.join(f'{b:g}' for b in c['top_buckets_seconds'])} s). Poisson arrivals.",
        "",
        f"Checks every {c['interval_seconds']} s; the first step lasts"
        f" {c['initial_step_minutes']} min, the others {c['step_minutes']} min; a step that"
        f" has not ended after {c['step_cap_minutes']:g} min counts as stalled, as does a"
        f" pause ({c['inconclusive_limit']} inconclusive checks in a row). failureLimit"
        f" {c['failure_limit']}. Criteria: {', '.join(c['criteria'])}.",
        "",
        f"- **old**: canary against the stable arm (100 - w %), P95 point estimates over"
        f" each {c['interval_seconds']} s window alone, minSamples {c['old_min_samples']}"
        f" per arm per window; weights {', '.join(map(str, c['old_weights']))}.",
        f"- **new**: `verdict.judge` against a fresh baseline at the canary's weight,"
        f" evidence cumulative over the step, {c['new_min_samples']} requests per arm"
        f" before a check is judged; weights {', '.join(map(str, c['new_weights']))};"
        f" per-test alpha {c['design_alpha']:.2e}, beta {c['design_beta']:g}.",
        "",
        f"{c['rollouts_identical']} rollouts per rule for identical arms,"
        f" {c['rollouts_other']} for each other scenario; seed {c['seed']}.",
    ]
    lines += [
        "",
        "The canary's P95 change per scenario: true / as tiny-llm's buckets read it with"
        " unlimited traffic (PromQL's interpolation inside a bucket):",
        "",
        "| scenario | e2e | ttft | tpot |",
        "| --- | ---: | ---: | ---: |",
    ]
    for sc in c["scenarios"].values():
        cells = " | ".join(
            f"{true:+.1f}% / {read:+.1f}%" for true, read in sc["p95_change_true_read"].values()
        )
        lines.append(f"| {sc['title']} | {cells} |")
    bias = ", ".join(f"{r:g} at {w}%" for w, r in c["load_bias"])
    lines += [
        "",
        f"Load bias (old rule only, modelled): the canary's TTFT and TPOT scaled by the"
        f" canary / stable P95 ratio measured on the real stack ({bias}; linear between,"
        " 1 above 95%).",
    ]
    titles = {s.key: s.title for s in SCENARIOS}
    for rate, per_rate in figures["rates"].items():
        lines += ["", f"### {rate} requests/s", ""]
        lines += outcome_table(per_rate, titles)
        lines += [
            "",
            "| scenario | rule | rollbacks by weight | rollback causes | stalls (weight: count)"
            " | checks judged / blocked |",
            "| --- | --- | --- | --- | --- | ---: |",
        ]
        for key, rules in per_rate.items():
            for rule, s in rules.items():
                weights = ", ".join(f"{w}%: {k}" for w, k in s["rollback_weights"].items())
                causes = ", ".join(f"{c}: {k}" for c, k in s["rollback_causes"].items())
                stalls = ", ".join(f"{w}%: {k}" for w, k in s["stall_weights"].items())
                why = "; ".join(f"{c}: {k}" for c, k in s["stall_causes"].items())
                checks = s["checks"]
                lines.append(
                    f"| {titles[key]} | {rule} | {weights or '-'} | {causes or '-'}"
                    f" | {stalls + (f' ({why})' if why else '') or '-'}"
                    f" | {checks['judged'] if rule == 'new' else checks['checks']}"
                    f" / {checks['blocked']} |"
                )
    lines += ["", "### Targets", "", targets(figures)]
    lines += ["", f"Simulated in {figures['wall_seconds']:.0f} s."]
    return "\n".join(lines)


def outcome_table(per_rate: dict[str, Any], titles: dict[str, str]) -> list[str]:
    """One rate's outcomes, a row per scenario and rule (``summarise``'s figures)."""
    lines = [
        "| scenario | rule | rolled back | ... at <= 25% | promoted | stalled"
        " | canary requests to decision p50 / p90 | minutes to decision p50 / p90 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, rules in per_rate.items():
        for rule, s in rules.items():
            lines.append(
                f"| {titles[key]} | {rule} | {s['rolled_back_pct']:.1f}%"
                f" | {s['rolled_back_early_pct']:.1f}% | {s['promoted_pct']:.1f}%"
                f" | {s['stalled_pct']:.1f}%"
                f" | {_num(s['decision_canary_requests_p50'])}"
                f" / {_num(s['decision_canary_requests_p90'])}"
                f" | {_num(s['decision_minutes_p50'])} / {_num(s['decision_minutes_p90'])} |"
            )
    return lines


def targets(figures: dict[str, Any]) -> str:
    lines = [
        "| rate | rule | target | measured (95% interval) | stalled | |",
        "| ---: | --- | --- | ---: | ---: | --- |",
    ]
    goals = (
        ("identical", "rolled_back", "identical arms rolled back <= 1%", FALSE_ROLLBACK_MAX, -1),
        (
            "plus30",
            "rolled_back_early",
            "+30% rolled back at <= 25% weight >= 95%",
            CAUGHT_EARLY_MIN,
            1,
        ),
        ("plus10", "promoted", "+10% promoted >= 90%", PROMOTED_MIN, 1),
    )
    for rate, per_rate in figures["rates"].items():
        for rule in ("old", "new"):
            for key, metric, text, goal, sign in goals:
                s = per_rate.get(key, {}).get(rule)
                if s is None:
                    continue
                value = s[f"{metric}_pct"]
                low, high = wilson(s[metric], s["rollouts"])
                met = value <= goal if sign < 0 else value >= goal
                gap = abs(value - goal)
                verdict = "met" if met else f"**missed by {gap:.1f} points**"
                if met and s["stalled_pct"] >= 5:
                    verdict += f", but {s['stalled_pct']:.0f}% undecided"
                lines.append(
                    f"| {rate} | {rule} | {text} | {value:.1f}% ({low:.1f}-{high:.1f})"
                    f" | {s['stalled_pct']:.1f}% | {verdict} |"
                )
    return "\n".join(lines)


def emit(text: str, figures: dict[str, Any], args: argparse.Namespace) -> None:
    """Print the Markdown; keep it (``--markdown``) and the figures (``--json``)."""
    print()
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rates", type=float, nargs="+", default=[10.0, 2.0, 50.0], help="requests/s"
    )
    parser.add_argument("--rollouts", type=int, default=1000, help="per rule, identical arms")
    parser.add_argument(
        "--shifted-rollouts", type=int, default=300, help="per rule, every other scenario"
    )
    parser.add_argument("--initial-step-minutes", type=int, default=5, help="spec default: 15")
    parser.add_argument("--step-minutes", type=int, default=5, help="spec default: 30")
    parser.add_argument("--step-cap-minutes", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--interval-seconds", type=int, default=INTERVAL_SECONDS, help="analysis.interval"
    )
    parser.add_argument(
        "--scenarios", nargs="+", choices=[s.key for s in SCENARIOS], help="only these"
    )
    parser.add_argument("--markdown", type=Path, help="write the Markdown here too")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    figures = run(args)
    emit(markdown(figures), figures, args)


if __name__ == "__main__":
    main()
