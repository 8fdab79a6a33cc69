"""The canary state machine, ticked with an injected clock: no cluster, no sleeping."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from specs import arm

from llmcanary.analysis.types import ArmReading
from llmcanary.analysis.verdict import Check, judge, unavailable
from llmcanary.api import ANNOTATION_ABORT, ANNOTATION_PROMOTE, ANNOTATION_RESUME, ANNOTATION_RETRY
from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.api.status import DependencyResult, LLMDeploymentStatus, PreflightStatus
from llmcanary.kube.status_writer import status_to_wire
from llmcanary.problems import Problem
from llmcanary.rollout.checks import judgement
from llmcanary.rollout.decision import Applied, Decision, Plan, Settled
from llmcanary.rollout.machine import decide
from llmcanary.rollout.observation import Commands, Observation, WorkloadObservation
from llmcanary.rollout.render import settle
from llmcanary.rollout.revision import revision_of
from llmcanary.rollout.steps import needs, next_wakeup, replicas_for, step_weight

T0 = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
HEALTHY = arm(100.0, 1000.0, 0.0)


def spec_for(version: str = "1", **canary: Any) -> LLMDeploymentSpec:
    analysis = canary.pop("analysis", {})
    return LLMDeploymentSpec.model_validate(
        {
            "model": {"name": "tiny", "repository": "/models", "version": version},
            "replicas": 4,
            "canary": {
                "initialStepInterval": "60s",
                "stepInterval": "60s",
                **canary,
                # Judged against the stable pods unless a test asks for a fresh baseline
                # (which stops the weights at 50%).
                "analysis": {"interval": "20s", "baseline": "stable", **analysis},
            },
        }
    )


def samples(stable: ArmReading = HEALTHY, canary: ArmReading = HEALTHY) -> Callable[..., Check]:
    def measure(spec: LLMDeploymentSpec, status: LLMDeploymentStatus) -> Check:
        return judge(spec.canary.analysis, stable, canary, judgement(spec, status, 60.0))

    return measure


@dataclass
class Sim:
    """A cluster that does what the plan says (pods Ready at once unless told otherwise)."""

    spec: LLMDeploymentSpec
    measure: Callable[[LLMDeploymentSpec, LLMDeploymentStatus], Check] = field(
        default_factory=samples
    )
    now: datetime = T0
    status: LLMDeploymentStatus = field(default_factory=LLMDeploymentStatus)
    canary_ready_cap: int | None = None  # at most this many canary pods become Ready
    annotations: dict[str, str] = field(default_factory=dict)
    paused_annotation: bool = False
    weights: list[int] = field(default_factory=list)
    plans: list[Plan] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    checks: int = 0
    preflight_passes: bool = True
    preflights: int = 0
    canary_serves: bool = True
    canary_problem: str | None = None
    # What the canary Deployment's conditions say (ReplicaFailure, ProgressDeadlineExceeded).
    canary_failure: str | None = None
    canary_pods_created: int = 0
    _canary_replicas: int = 0
    _canary_rev: str | None = None
    baseline_ready_cap: int | None = None  # at most this many baseline pods become Ready
    _baseline_replicas: int = 0
    # The router: whether it reads back the weights asked of it, or fails to be written.
    router_holds: bool = True
    unheld: str | None = None  # why the router does not hold, when it says
    route_error: Problem | None = None
    settled: Settled | None = None  # the last tick's outcome

    def tick(self, seconds: float = 0) -> Decision:
        self.now += timedelta(seconds=seconds)
        revision = revision_of(self.spec)
        stable_rev = self.status.stable_revision or revision
        stable = WorkloadObservation(stable_rev, self.spec.replicas, self.spec.replicas, 4)
        canary = None
        if self._canary_rev is not None:
            ready = self._canary_replicas
            if self.canary_ready_cap is not None:
                ready = min(ready, self.canary_ready_cap)
            problem = self.canary_problem if ready < self._canary_replicas else None
            canary = WorkloadObservation(
                self._canary_rev,
                self._canary_replicas,
                ready,
                ready,
                problem,
                failure=self.canary_failure if ready < self._canary_replicas else None,
            )
        baseline = None
        if canary is not None:
            ready = self._baseline_replicas
            if self.baseline_ready_cap is not None:
                ready = min(ready, self.baseline_ready_cap)
            baseline = WorkloadObservation(
                f"{stable_rev}-baseline", self._baseline_replicas, ready, ready
            )
        commands = Commands(dict(self.annotations), self.paused_annotation)
        # What the reconciler observes, in the order it does: the same needs().
        wanted = needs(
            self.spec, self.status, revision, commands, canary.ready if canary else 0, self.now
        )
        check = None
        if wanted.analysis:
            check = self.measure(self.spec, self.status)
            self.checks += 1
        preflight = None
        if wanted.preflight:
            self.preflights += 1
            preflight = PreflightStatus(
                revision=revision,
                passed=self.preflight_passes,
                reason=None if self.preflight_passes else "GPU memory: needs 151.3 GiB per pod",
            )
        canary_checks = None
        if wanted.canary_checks:
            canary_checks = (
                DependencyResult(
                    name="canary/pod-0/model",
                    ok=self.canary_serves,
                    message="" if self.canary_serves else "HTTP 503, expected 200",
                ),
            )
        decision = decide(
            self.spec,
            1,
            self.status,
            Observation(
                revision,
                stable,
                canary,
                baseline,
                commands,
                check,
                preflight=preflight,
                canary_checks=canary_checks,
            ),
            self.now,
        )
        # The cluster carries the plan out, or the route write fails.
        if self.route_error is not None:
            applied = Applied(routed=False, verified=None, problem=self.route_error)
        else:
            plan = decision.plan
            asked = plan.canary_weight > 0
            held = self.router_holds if asked else None
            applied = Applied(verified=held, unheld=None if held is not False else self.unheld)
        settled = settle(decision, applied)
        # Round-trip through the wire format, as the API server would store it.
        self.status = LLMDeploymentStatus.model_validate(status_to_wire(settled.status))
        plan = decision.plan
        if plan.canary_revision != self._canary_rev:
            self._canary_rev = plan.canary_revision
            self._canary_replicas = 0
        if plan.canary_revision is not None:
            grow = plan.canary_replicas - self._canary_replicas
            self.canary_pods_created += max(0, grow)
            self._canary_replicas = plan.canary_replicas
        if plan.stable_revision != stable_rev:  # promoted: the canary pods are the stable ones
            self._canary_rev, self._canary_replicas = None, 0
        self._baseline_replicas = plan.baseline_replicas
        self.weights.append(plan.canary_weight)
        self.plans.append(plan)
        self.phases.append(self.status.phase or "")
        self.events += [(e.type, e.reason, e.message) for e in settled.events]
        self.settled = settled
        return decision

    def run(self, seconds: float, every: float = 5) -> None:
        for _ in range(int(seconds / every)):
            self.tick(every)

    def distinct_weights(self) -> list[int]:
        out: list[int] = []
        for w in self.weights:
            if not out or out[-1] != w:
                out.append(w)
        return out


def stable_sim(**kwargs: Any) -> Sim:
    sim = Sim(spec_for("1"), **kwargs)
    sim.tick()
    assert sim.status.phase == "Stable"
    sim.spec = spec_for("2", **{k: v for k, v in kwargs.items() if k == "canary"})
    sim.tick()  # the rollout starts with its preflight
    assert sim.status.phase == "Preflight"
    return sim


def test_weights_and_replicas_per_step() -> None:
    spec = spec_for()
    assert [step_weight(spec, s) for s in range(12)] == [
        5,
        15,
        25,
        35,
        45,
        55,
        65,
        75,
        85,
        95,
        100,
        100,
    ]
    # A fresh baseline takes as much as the canary: the matched comparison ends at 50%.
    fresh = spec_for(analysis={"baseline": "fresh"})
    assert fresh.planned_weights() == [5, 15, 25, 35, 45, 50]
    assert spec_for(maxWeight=30, analysis={"baseline": "fresh"}).planned_weights() == [
        5,
        15,
        25,
        30,
    ]
    assert replicas_for(4, 5) == 1
    assert replicas_for(4, 30) == 2
    assert replicas_for(4, 100) == 4
    assert replicas_for(3, 1) == 1


def test_first_revision_is_stable_without_a_canary() -> None:
    sim = Sim(spec_for("1"))
    decision = sim.tick()
    assert sim.status.phase == "Stable"
    assert decision.plan.canary_revision is None
    assert decision.plan.canary_weight == 0
    assert sim.status.stable_revision == revision_of(spec_for("1"))


def test_a_healthy_canary_walks_every_step_and_is_promoted_with_its_own_pods() -> None:
    sim = stable_sim()
    new = revision_of(sim.spec)
    sim.run(seconds=60 * 12)
    assert sim.distinct_weights() == [0, 5, 15, 25, 35, 45, 55, 65, 75, 85, 95, 100, 0]
    assert sim.status.phase == "Stable"
    assert sim.status.stable_revision == new
    assert sim.status.canary_revision is None
    assert sim.status.history[0].outcome == "Promoted"
    # Promotion reused the canary's pods: exactly `replicas` pods were ever started.
    assert sim.canary_pods_created == sim.spec.replicas
    reasons = [r for _, r, _ in sim.events]
    assert reasons.index("Promoting") < reasons.index("Promoted")


def test_a_fresh_baseline_matches_the_canary_at_every_step_and_goes_with_it() -> None:
    sim = Sim(spec_for("1", analysis={"baseline": "fresh"}))
    sim.tick()
    sim.spec = spec_for("2", analysis={"baseline": "fresh"})
    sim.run(seconds=60 * 8)
    assert sim.distinct_weights() == [0, 5, 15, 25, 35, 45, 50, 0]
    assert sim.status.phase == "Stable"
    assert sim.status.history[0].outcome == "Promoted"
    # Same replicas and weight as the canary while it is judged; none when promoting.
    judged = [
        p
        for p, phase in zip(sim.plans, sim.phases, strict=True)
        if p.canary_weight and phase == "Progressing"
    ]
    assert judged and all(
        (p.baseline_replicas, p.baseline_weight) == (p.canary_replicas, p.canary_weight)
        for p in judged
    )
    promoting = [p for p, phase in zip(sim.plans, sim.phases, strict=True) if phase == "Promoting"]
    assert all((p.baseline_replicas, p.baseline_weight) == (0, 0) for p in promoting)
    assert (sim.plans[-1].baseline_replicas, sim.plans[-1].baseline_weight) == (0, 0)
    started = next(m for _, r, m in sim.events if r == "RolloutStarted")
    assert "up to 50%, judged against a fresh baseline of" in started


def test_no_weight_goes_to_a_baseline_that_is_not_ready() -> None:
    sim = Sim(spec_for("1", analysis={"baseline": "fresh"}), baseline_ready_cap=0)
    sim.tick()
    sim.spec = spec_for("2", analysis={"baseline": "fresh"})
    sim.run(seconds=60)
    assert sim.distinct_weights() == [0]
    assert sim.plans[-1].baseline_replicas == 1
    assert sim.status.message == (
        "waiting for 1 ready canary and baseline replicas before 5% (0 ready);"
        " rolled back at 2026-11-24T12:45:10Z unless ready (readyDeadline 45m)"
    )
    sim.baseline_ready_cap = None
    sim.run(seconds=10)
    assert sim.status.canary_weight == 5


def test_a_fresh_baseline_leaves_with_a_rolled_back_canary() -> None:
    sim = Sim(spec_for("1", analysis={"baseline": "fresh"}), measure=samples(canary=arm(200.0)))
    sim.tick()
    sim.spec = spec_for("2", analysis={"baseline": "fresh"})
    sim.run(seconds=60)
    assert sim.status.phase == "RolledBack"
    assert (sim.plans[-1].baseline_replicas, sim.plans[-1].baseline_weight) == (0, 0)
    assert sim.status.last_analysis is not None
    assert sim.status.last_analysis.reference == "baseline"


def test_each_step_lasts_its_interval_and_needs_a_passing_check() -> None:
    sim = stable_sim()
    sim.tick()  # starts the rollout, weight 5 at once (a Ready canary pod is there)
    sim.tick()
    assert sim.status.canary_weight == 5
    sim.run(seconds=55)
    assert sim.status.canary_weight == 5  # initialStepInterval not yet over
    sim.run(seconds=10)
    assert sim.status.canary_weight == 15
    assert sim.status.current_step == 1


def test_a_weight_waits_for_ready_canary_replicas() -> None:
    sim = stable_sim(canary_ready_cap=1)
    sim.run(seconds=60 * 5)
    # 4 replicas: 5%, 15% and 25% need one ready pod, 35% needs two.
    assert sim.distinct_weights() == [0, 5, 15, 25]
    assert sim.status.phase == "Progressing"
    assert "waiting for 2 ready canary replicas before 35% (1 ready)" in (sim.status.message or "")
    sim.canary_ready_cap = None
    sim.run(seconds=10)
    assert sim.status.canary_weight == 35


def test_a_slow_canary_is_rolled_back_at_the_first_failed_check() -> None:
    slow = arm(150.0, 1000.0, 0.0)
    sim = stable_sim(measure=samples(canary=slow))
    sim.run(seconds=60)
    assert sim.status.phase == "RolledBack"
    assert sim.weights[-1] == 0
    assert sim.checks == 1
    assert sim.status.history[0].outcome == "RolledBack"
    warning = [m for t, r, m in sim.events if t == "Warning" and r == "RolledBack"]
    assert warning and "canary e2eLatency p95 150 ms vs stable 100 ms: +50%" in warning[0]
    degraded = next(c for c in sim.status.conditions if c.type == "Degraded")
    assert degraded.status == "True" and degraded.reason == "RolledBack"
    # The revision is remembered: later ticks do not start it again.
    sim.run(seconds=600)
    assert sim.status.phase == "RolledBack"
    assert set(sim.weights[-100:]) == {0}
    assert sim.checks == 1


def test_failure_limit_counts_failed_checks_before_rolling_back() -> None:
    erroring = arm(100.0, 900.0, 100.0)
    sim = stable_sim(measure=samples(canary=erroring))
    sim.spec = spec_for("2", analysis={"failureLimit": 3})
    sim.run(seconds=55)  # the weight at 10s; checks at 30s and 50s
    assert sim.status.phase == "Progressing"
    assert sim.status.failed_checks == 2
    sim.run(seconds=20)
    assert sim.status.phase == "RolledBack"
    assert "canary error rate 10.00% vs stable 0.00%: +10.00 points" in sim.status.history[0].reason


def test_max_milliseconds_fails_even_when_both_arms_are_slow() -> None:
    slow = arm(3000.0, 1000.0, 0.0)
    sim = stable_sim(measure=samples(stable=slow, canary=slow))
    sim.spec = spec_for(
        "2", analysis={"criteria": [{"metric": "e2eLatency", "maxMilliseconds": 2000}]}
    )
    sim.run(seconds=30)
    assert sim.status.phase == "RolledBack"
    assert "maxMilliseconds 2000" in sim.status.history[0].reason


def test_too_few_requests_never_promote_and_the_step_keeps_collecting() -> None:
    quiet = arm(100.0, 20.0, 0.0)
    sim = stable_sim(measure=samples(canary=quiet))
    sim.spec = spec_for("2", analysis={"inconclusiveLimit": 3})
    sim.run(seconds=60 * 10)
    # Waiting for evidence is not a fault: no pause, however many checks it takes.
    assert sim.status.phase == "Progressing"
    assert set(sim.distinct_weights()) == {0, 5}
    assert sim.checks == 29
    assert sim.status.pause_reason is None
    last = sim.status.last_analysis
    assert last is not None
    assert (last.verdict, last.waiting, last.needed) == ("inconclusive", True, 180)
    assert last.reason.startswith("collecting evidence: canary 20/200 requests")
    shown = {c.criterion: c for c in last.criteria}
    assert shown["errorRate"].canary.samples == 20
    assert shown["e2eLatency p95"].canary.value == 100.0
    assert {c.verdict for c in shown.values()} == {"inconclusive"}


def test_prometheus_down_holds_the_weight_then_pauses_and_resume_continues() -> None:
    state = {"down": False}

    def measure(spec: LLMDeploymentSpec, status: LLMDeploymentStatus) -> Check:
        if state["down"]:
            return unavailable("Prometheus at http://prom:9090 did not answer")
        return samples()(spec, status)

    sim = stable_sim(measure=measure)
    sim.run(seconds=130)
    held = sim.status.canary_weight
    assert held == 25
    state["down"] = True
    sim.run(seconds=600)
    assert sim.status.phase == "Paused"
    assert sim.status.canary_weight == held
    assert "did not answer" in (sim.status.pause_reason or "")
    assert "Promoted" not in [h.outcome for h in sim.status.history]
    # Prometheus is back and someone resumes: the rollout goes on from the same step.
    state["down"] = False
    sim.annotations[ANNOTATION_RESUME] = "t1"
    sim.run(seconds=30)
    assert sim.status.phase == "Progressing"
    assert sim.status.canary_weight == 35


def test_flapping_checks_neither_promote_on_inconclusive_nor_pause_while_passes_come() -> None:
    verdicts = iter(["inconclusive", "pass"] * 100)

    def measure(spec: LLMDeploymentSpec, status: LLMDeploymentStatus) -> Check:
        if next(verdicts) == "pass":
            return samples()(spec, status)
        return unavailable("flap")

    sim = stable_sim(measure=measure)
    sim.spec = spec_for("2", analysis={"inconclusiveLimit": 2})
    sim.run(seconds=60 * 20)
    assert "Paused" not in sim.phases
    assert sim.status.phase == "Stable"
    assert sim.distinct_weights()[-2:] == [100, 0]


def test_a_step_ends_only_after_a_pass_taken_during_it() -> None:
    state = {"verdict": "pass"}

    def measure(spec: LLMDeploymentSpec, status: LLMDeploymentStatus) -> Check:
        if state["verdict"] == "pass":
            return samples()(spec, status)
        return unavailable("no data")

    sim = stable_sim(measure=measure)
    sim.spec = spec_for("2", analysis={"inconclusiveLimit": 100})
    sim.run(seconds=75)
    assert sim.status.canary_weight == 15
    state["verdict"] = "inconclusive"
    sim.run(seconds=180)  # three step intervals, no pass: the weight stays
    assert sim.status.canary_weight == 15
    assert sim.status.message == "at 15% (step 1), waiting for a passing check"
    state["verdict"] = "pass"
    sim.run(seconds=25)
    assert sim.status.canary_weight == 25


def test_abort_rolls_back_and_retry_starts_again() -> None:
    sim = stable_sim()
    sim.run(seconds=70)
    assert sim.status.canary_weight == 15
    sim.annotations[ANNOTATION_ABORT] = "a1"
    sim.tick(1)
    assert sim.status.phase == "RolledBack"
    assert sim.weights[-1] == 0
    assert sim.status.history[0].outcome == "Aborted"
    sim.run(seconds=120)
    assert sim.status.phase == "RolledBack"  # the same abort value acts once, and stays
    sim.annotations[ANNOTATION_RETRY] = "r1"
    sim.tick(1)
    assert sim.status.phase == "Progressing"
    assert sim.status.current_step == 0
    assert sim.status.failed_checks == 0


def test_promote_request_skips_the_remaining_steps() -> None:
    sim = stable_sim()
    sim.run(seconds=10)
    assert sim.status.canary_weight == 5
    sim.annotations[ANNOTATION_PROMOTE] = "p1"
    sim.tick(1)
    sim.tick(1)
    assert sim.status.phase == "Stable"
    assert sim.status.stable_revision == revision_of(sim.spec)
    assert sim.canary_pods_created == sim.spec.replicas


def test_a_promote_asked_with_no_canary_is_dropped_not_kept_for_the_next_revision() -> None:
    # Asked while stable (after a rollout ended, or by mistake): left pending it would
    # promote whatever revision came next with zero checks.
    sim = Sim(spec_for("1"))
    sim.tick()
    sim.annotations[ANNOTATION_PROMOTE] = "p1"
    sim.tick()
    assert sim.status.phase == "Stable"
    assert sim.status.handled_requests[ANNOTATION_PROMOTE] == "p1"
    ignored = [m for t, r, m in sim.events if (t, r) == ("Warning", "PromotionIgnored")]
    assert ignored == [
        f"{ANNOTATION_PROMOTE}=p1 ignored: no canary is in progress (Stable);"
        " request it again during the next rollout"
    ]
    sim.spec = spec_for("2")
    sim.run(seconds=70)
    # The new revision walks its steps: still at its first, the old one stable.
    assert sim.status.phase == "Progressing"
    assert sim.status.canary_weight == 5
    assert sim.status.stable_revision == revision_of(spec_for("1"))


def test_spec_paused_holds_the_weight_and_takes_no_checks() -> None:
    sim = stable_sim()
    sim.run(seconds=70)
    checks = sim.checks
    sim.spec = sim.spec.model_copy(update={"paused": True})
    sim.run(seconds=600)
    assert sim.status.phase == "Paused"
    assert sim.status.canary_weight == 15
    assert sim.checks == checks
    assert "spec.paused" in (sim.status.message or "")
    sim.spec = sim.spec.model_copy(update={"paused": False})
    sim.run(seconds=30)
    assert sim.status.phase == "Progressing"


def test_the_paused_annotation_holds_too() -> None:
    sim = stable_sim()
    sim.run(seconds=10)
    sim.paused_annotation = True
    sim.run(seconds=300)
    assert sim.status.phase == "Paused"
    assert sim.status.canary_weight == 5


def test_a_new_revision_supersedes_a_running_canary() -> None:
    sim = stable_sim()
    sim.run(seconds=70)
    first = sim.status.canary_revision
    sim.spec = spec_for("3")
    sim.tick(1)
    assert sim.status.canary_revision == revision_of(spec_for("3"))
    assert sim.status.canary_revision != first
    assert sim.status.current_step == 0
    assert sim.status.history[0].outcome == "Superseded"
    assert sim.status.history[0].revision == first


def test_returning_the_spec_to_stable_cancels_the_canary() -> None:
    sim = stable_sim()
    stable = sim.status.stable_revision
    sim.run(seconds=70)
    sim.spec = spec_for("1")
    decision = sim.tick(1)
    assert sim.status.phase == "Stable"
    assert decision.plan.canary_weight == 0 and decision.plan.canary_revision is None
    assert sim.status.stable_revision == stable
    assert sim.status.history[0].outcome == "Aborted"


def test_every_tick_decides_the_same_from_the_same_status() -> None:
    """A restart re-reads status: deciding twice from it gives the same next state."""
    sim = stable_sim()
    sim.run(seconds=200)
    saved, now = sim.status, sim.now
    revision = revision_of(sim.spec)
    canary = WorkloadObservation(revision, 4, 4, 4)
    stable = WorkloadObservation(saved.stable_revision or "", 4, 4, 4)
    obs = Observation(revision, stable, canary)
    first = decide(sim.spec, 1, saved, obs, now + timedelta(seconds=61))
    second = decide(sim.spec, 1, saved, obs, now + timedelta(seconds=61))
    assert first == second


def test_the_first_check_of_a_step_waits_a_whole_interval_at_the_new_weight() -> None:
    sim = stable_sim()
    sim.tick()
    sim.tick()
    assert sim.status.canary_weight == 5 and sim.checks == 0
    sim.tick(19)
    assert sim.checks == 0
    sim.tick(1)
    assert sim.checks == 1


def test_next_wakeup_follows_the_analysis_interval_and_the_step_end() -> None:
    sim = stable_sim()
    sim.tick()
    sim.tick()
    assert sim.status.phase == "Progressing"
    wait = next_wakeup(sim.spec, sim.status, sim.now)
    assert 0 < wait <= 20
    idle = Sim(spec_for("1"))
    idle.tick()
    assert next_wakeup(idle.spec, idle.status, idle.now) == float("inf")


def test_an_approximate_split_is_stated_in_the_progressing_condition() -> None:
    sim = stable_sim()
    sim.tick()
    sim.tick()
    revision = revision_of(sim.spec)
    note = "the replicas router splits by Ready pods: the canary gets about 20% for a weight of 5%"
    obs = Observation(
        revision,
        WorkloadObservation(sim.status.stable_revision or "", 4, 4, 4),
        WorkloadObservation(revision, 1, 1, 1),
    )
    decision = decide(sim.spec, 1, sim.status, obs, sim.now)
    status = settle(decision, Applied(verified=None, traffic_note=note)).status
    progressing = next(c for c in status.conditions if c.type == "Progressing")
    assert progressing.message == f"revision {revision} at 5%; {note}"


def test_a_failed_preflight_stops_the_rollout_before_any_traffic() -> None:
    sim = Sim(spec_for("1"), preflight_passes=False)
    sim.tick()
    sim.spec = spec_for("2")
    sim.run(seconds=60)
    assert sim.status.phase == "Failed"
    assert set(sim.weights) == {0}
    assert sim.canary_pods_created == 0
    assert sim.preflights == 1  # not re-run for the same revision
    assert sim.status.history[0].outcome == "Failed"
    assert "GPU memory" in (sim.status.message or "")
    conditions = {c.type: c for c in sim.status.conditions}
    assert conditions["PreflightPassed"].status == "False"
    assert conditions["Degraded"].reason == "PreflightFailed"
    assert ("Warning", "PreflightFailed") in [(t, r) for t, r, _ in sim.events]
    # A new revision runs preflight again; it passes now, and the rollout proceeds.
    sim.preflight_passes = True
    sim.spec = spec_for("3")
    sim.run(seconds=20)
    assert sim.preflights == 2
    assert sim.status.phase == "Progressing"
    assert sim.status.canary_weight == 5
    assert next(c for c in sim.status.conditions if c.type == "PreflightPassed").status == "True"


def test_a_retry_after_a_failed_preflight_runs_it_again() -> None:
    sim = Sim(spec_for("1"), preflight_passes=False)
    sim.tick()
    sim.spec = spec_for("2")
    sim.run(seconds=20)
    assert sim.status.phase == "Failed"
    sim.preflight_passes = True
    sim.annotations[ANNOTATION_RETRY] = "r1"
    sim.run(seconds=20)
    assert sim.preflights == 2
    assert sim.status.phase == "Progressing"


def test_a_passed_preflight_is_not_run_again_for_the_same_revision() -> None:
    sim = stable_sim()
    sim.run(seconds=70)
    sim.annotations[ANNOTATION_ABORT] = "a1"
    sim.tick(1)
    sim.annotations[ANNOTATION_RETRY] = "r1"
    sim.run(seconds=20)
    assert sim.preflights == 1
    assert sim.status.canary_weight == 5


def test_the_first_weight_waits_until_the_canary_serves_its_model() -> None:
    sim = stable_sim(canary_serves=False)
    sim.run(seconds=120)
    assert set(sim.weights) == {0}
    assert sim.status.phase == "Progressing"
    assert "canary/pod-0/model: HTTP 503" in (sim.status.message or "")
    assert sim.status.preflight is not None
    assert [d.name for d in sim.status.preflight.dependencies] == ["canary/pod-0/model"]
    sim.canary_serves = True
    sim.tick(5)
    assert sim.status.canary_weight == 5


def test_a_promote_request_waits_for_preflight() -> None:
    sim = Sim(spec_for("1"), preflight_passes=False)
    sim.tick()
    sim.spec = spec_for("2")
    sim.annotations[ANNOTATION_PROMOTE] = "p1"
    sim.run(seconds=30)
    assert sim.status.phase == "Failed"
    assert sim.status.stable_revision == revision_of(spec_for("1"))


def test_a_canary_pod_that_cannot_start_says_why_in_the_status_and_gets_no_traffic() -> None:
    sim = stable_sim(canary_ready_cap=0)
    sim.canary_problem = (
        "pod tiny-llm-abc-1: triton CrashLoopBackOff: back-off 20s restarting failed"
        " container: failed to load 'tiny-llm' version 1"
    )
    sim.run(seconds=120)
    assert sim.distinct_weights() == [0]
    assert sim.status.phase == "Progressing"
    assert sim.status.message == (
        "waiting for 1 ready canary replicas before 5% (0 ready): "
        + sim.canary_problem
        + "; rolled back at 2026-11-24T12:45:05Z unless ready (readyDeadline 45m)"
    )


# --- earned wake-ups: a pass only for a change or for time ----------------------------


def drive_on_earned_wakeups(sim: Sim, seconds: float) -> int:
    """Tick only when a watch event or the machine's own wake-up would bring a pass.

    A plan that changes the children (replicas, weight, revisions) is followed by their
    watch events, so by a pass at once; otherwise the next pass comes at ``next_wakeup``
    (or at once when the decision asks ``again``); an idle rollout ends the drive. Returns
    the number of passes.
    """
    end = sim.now + timedelta(seconds=seconds)
    passes, previous = 0, None
    decision = sim.tick()
    while sim.now < end:
        passes += 1
        assert passes < 500, f"the loop spins: {sim.status.phase}, {sim.status.message}"
        if decision.plan != previous or decision.again:
            previous = decision.plan
            decision = sim.tick(0)
            continue
        wait = next_wakeup(sim.spec, sim.status, sim.now)
        if wait == float("inf"):
            break
        assert wait > 0, f"a pass without a reason in {sim.status.phase}: {sim.status.message}"
        decision = sim.tick(wait)
    return passes


def test_a_rollout_completes_on_earned_wakeups_alone() -> None:
    sim = Sim(spec_for("1"))
    sim.tick()
    sim.spec = spec_for("2")
    passes = drive_on_earned_wakeups(sim, seconds=3600)
    assert sim.status.phase == "Stable"
    assert sim.status.stable_revision == revision_of(sim.spec)
    assert sim.distinct_weights()[1:-1] == [5, 15, 25, 35, 45, 55, 65, 75, 85, 95, 100]
    # One pass per check (every 20 s over 11 steps of 60 s) and a few per weight change.
    assert sim.checks <= 11 * 3 + 2
    assert passes <= sim.checks + 11 * 3 + 10


def test_an_idle_or_held_rollout_needs_no_timer() -> None:
    sim = stable_sim()
    sim.run(seconds=70)
    assert sim.status.phase == "Progressing"
    sim.spec = sim.spec.model_copy(update={"paused": True})
    sim.tick(1)
    assert sim.status.phase == "Paused"
    assert next_wakeup(sim.spec, sim.status, sim.now) == float("inf"), "its own event resumes it"

    quiet = stable_sim(measure=lambda spec, status: unavailable("no data"))
    quiet.spec = spec_for("2", analysis={"inconclusiveLimit": 2})
    quiet.run(seconds=300)
    assert quiet.status.phase == "Paused"
    assert next_wakeup(quiet.spec, quiet.status, quiet.now) == float("inf")


def test_promotion_waits_for_pod_events_not_a_timer() -> None:
    sim = stable_sim()
    sim.run(seconds=10)
    sim.canary_ready_cap = 1  # the new pods load their model for minutes
    sim.annotations[ANNOTATION_PROMOTE] = "p1"
    sim.tick(1)
    assert sim.status.phase == "Promoting"
    # No timer but the one that ends the wait: readyDeadline (45m).
    assert next_wakeup(sim.spec, sim.status, sim.now) == 45 * 60


def test_a_step_whose_time_is_up_waits_for_the_next_check_not_for_nothing() -> None:
    quiet = arm(100.0, 20.0, 0.0)  # never enough to pass
    sim = stable_sim(measure=samples(canary=quiet))
    sim.spec = spec_for("2", analysis={"inconclusiveLimit": 50})
    sim.run(seconds=120, every=5)
    assert sim.status.phase == "Progressing" and sim.status.canary_weight == 5
    started = datetime.fromisoformat(str(sim.status.step_started_at).replace("Z", "+00:00"))
    assert sim.now - started > timedelta(seconds=60), "the step's time is up"
    wait = next_wakeup(sim.spec, sim.status, sim.now)
    assert 0 < wait <= 20, "the next analysis, one interval after the last"


def test_a_rollout_that_enters_preflight_asks_for_the_next_pass_at_once() -> None:
    sim = Sim(spec_for("1"))
    sim.tick()
    sim.spec = spec_for("2")
    decision = sim.tick()
    assert sim.status.phase == "Preflight" and decision.again
    decision = sim.tick()
    assert sim.preflights == 1 and not decision.again


def test_a_weight_the_router_did_not_take_is_neither_recorded_nor_announced() -> None:
    sim = stable_sim()
    sim.tick()  # preflight passed: the canary's pods come up
    sim.route_error = Problem(
        "MissingAPI",
        "the cluster does not serve HTTPRoute (gateway.networking.k8s.io/v1): install the"
        " Gateway API CRDs (standard channel) or choose another spec.traffic.router",
    )
    sim.run(seconds=120)
    assert sim.status.phase == "Progressing"
    assert not sim.status.canary_weight
    assert sim.status.step_started_at is None  # no step's clock runs
    assert sim.status.message is not None and "HTTPRoute" in sim.status.message
    degraded = next(c for c in sim.status.conditions if c.type == "Degraded")
    assert degraded.status == "True" and degraded.reason == "MissingAPI"
    assert not any(reason == "WeightChanged" for _, reason, _ in sim.events)
    assert sim.checks == 0  # nothing to judge: the canary got no traffic

    sim.route_error = None  # the CRDs are installed
    sim.tick(5)
    assert sim.status.canary_weight == 5
    assert sim.status.step_started_at is not None and sim.status.weight_verified is True
    assert sim.events[-1][1:] == ("WeightChanged", "canary weight 5% (step 0)")
    degraded = next(c for c in sim.status.conditions if c.type == "Degraded")
    assert degraded.status == "False"


def test_a_gateway_that_stops_serving_the_route_mid_step_starts_the_step_over() -> None:
    sim = stable_sim()
    sim.tick()
    sim.tick(5)
    assert sim.status.canary_weight == 5 and sim.status.step_started_at is not None
    sim.run(seconds=30)
    checks = sim.checks
    # The canary's Service is deleted: the Gateway says it cannot resolve the route.
    sim.router_holds = False
    sim.unheld = (
        "Gateway gw/local refuses the HTTPRoute: ResolvedRefs=False (BackendNotFound):"
        ' Cannot load HTTPBackendRef ns/tiny-canary: service "tiny-canary" not found'
    )
    sim.tick(5)
    assert sim.status.step_started_at is None and sim.status.weight_verified is False
    assert sim.status.message == (
        f"the gatewayAPI router does not hold canary 5% yet ({sim.unheld}): step 0 begins when"
        " it does"
    )
    assert sim.events[-1][:2] == ("Warning", "TrafficNotHeld")
    assert "no longer holds canary 5% (Gateway gw/local refuses" in sim.events[-1][2]
    sim.run(seconds=300)
    # Nothing judged, no step taken, while the split is not what it says.
    assert sim.checks == checks and sim.status.current_step == 0
    assert sim.status.canary_weight == 5

    sim.router_holds = True
    sim.tick(5)
    assert sim.status.step_started_at is not None
    restarted = sim.now
    sim.run(seconds=65)
    assert sim.status.current_step == 1
    assert sim.now - restarted >= timedelta(seconds=60)  # a whole interval from the restart
    assert sum(1 for e in sim.events if e[1] == "TrafficNotHeld") == 1  # once, when lost


def test_a_steps_clock_starts_only_when_the_router_holds_its_weight() -> None:
    sim = stable_sim(router_holds=False)
    sim.tick()
    sim.tick(5)
    assert sim.status.canary_weight == 5  # asked of the router
    assert sim.status.weight_verified is False
    assert sim.status.step_started_at is None
    assert sim.status.message == (
        "the gatewayAPI router does not hold canary 5% yet: step 0 begins when it does"
    )
    assert next_wakeup(sim.spec, sim.status, sim.now) == 5.0  # polled: no event says
    sim.run(seconds=300)
    assert sim.checks == 0 and sim.status.current_step == 0  # no time counted, nothing judged

    sim.router_holds = True
    sim.tick(5)
    assert sim.status.weight_verified is True
    assert sim.status.step_started_at is not None
    started = sim.now
    sim.run(seconds=65)
    assert sim.status.current_step == 1
    # The step's interval counted from when the weight was held, not when it was asked.
    assert sim.status.step_started_at is not None
    assert sim.now - started >= timedelta(seconds=60)


def test_a_promote_asked_during_preflight_does_not_carry_over_to_a_newer_revision() -> None:
    # Asked for revision 2 while it waits in preflight; the spec then moves on to 3: the
    # request was made for 2, and revision 3 walks every step with its checks.
    sim = Sim(spec_for("1"))
    sim.tick()
    sim.spec = spec_for("2")
    sim.tick(1)
    assert sim.status.phase == "Preflight"
    sim.annotations[ANNOTATION_PROMOTE] = "p1"
    sim.spec = spec_for("3")
    sim.run(seconds=70)
    assert sim.status.phase == "Progressing"
    assert sim.status.canary_weight == 5
    assert sim.status.stable_revision == revision_of(spec_for("1"))
    ignored = [m for t, r, m in sim.events if (t, r) == ("Warning", "PromotionIgnored")]
    assert ignored == [
        f"{ANNOTATION_PROMOTE}=p1 ignored: made before revision {revision_of(spec_for('3'))}'s"
        " rollout started; request it again during the next rollout"
    ]


def test_a_first_revision_that_never_became_ready_is_replaced_without_a_canary() -> None:
    first, fixed = spec_for("1"), spec_for("2")
    old, new = revision_of(first), revision_of(fixed)
    crashing = WorkloadObservation(old, 4, 0, 4, problem="pod p: triton CrashLoopBackOff")
    status = settle(
        decide(first, 1, LLMDeploymentStatus(), Observation(old, crashing), T0), Applied()
    ).status
    assert status.phase == "Initializing" and status.stable_revision == old
    # The fixed spec: nothing served, nothing to protect or compare with.
    decision = decide(fixed, 2, status, Observation(new, crashing, canary=None), T0)
    settled = settle(decision, Applied())
    assert decision.plan == Plan(new, None, 0, 0)
    assert settled.status.phase == "Initializing"
    assert settled.status.stable_revision == new and settled.status.canary_revision is None
    assert [e.reason for e in settled.events] == ["RevisionReplaced"]
    assert settled.status.message is None  # the new revision's pods have not said anything
    # Its pods come up: Stable, and a later spec is a canary as usual.
    up = WorkloadObservation(new, 4, 4, 4)
    stable = settle(decide(fixed, 2, settled.status, Observation(new, up), T0), Applied()).status
    assert stable.phase == "Stable"
    third = spec_for("3")
    later = decide(third, 3, stable, Observation(revision_of(third), up), T0)
    assert later.draft.phase == "Preflight" and later.draft.canary_revision == revision_of(third)


def test_a_first_revision_that_serves_from_some_replicas_gets_a_canary() -> None:
    first, fixed = spec_for("1"), spec_for("2")
    old, new = revision_of(first), revision_of(fixed)
    partly = WorkloadObservation(old, 4, 3, 4, problem="pod p: 0/1 nodes are available")
    status = settle(
        decide(first, 1, LLMDeploymentStatus(), Observation(old, partly), T0), Applied()
    ).status
    assert status.phase == "Initializing"
    decision = decide(fixed, 2, status, Observation(new, partly), T0)
    assert decision.draft.phase == "Preflight" and decision.draft.canary_revision == new
    assert decision.draft.stable_revision == old
