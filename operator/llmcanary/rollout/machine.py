"""The canary state machine: ``decide(spec, status, observation, now) -> Decision``. Pure.

Every fact it needs arrives as an argument and every bit of state it keeps goes back
into status, so an operator restarted at any moment decides the same next step: no
step repeated, none skipped, no rollback forgotten.

A rollout, for a spec whose revision differs from the stable one::

    Progressing: weight initialWeight, then +stepWeight per step (capped at maxWeight);
                 a weight is applied only once the canary has enough Ready replicas,
                 a step ends after its interval and a passing check taken during it
    Promoting:   the canary is scaled to full size; once all are Ready it becomes the
                 stable revision (the same pods: no second model load)
    Paused:      spec.paused, the paused annotation, or too many inconclusive checks
    RolledBack:  failureLimit failed checks, or an abort request: weight 0, canary
                 scaled to 0, the revision remembered until the spec changes or a
                 retry is requested
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from llmcanary.analysis.sequential import design
from llmcanary.analysis.verdict import Check, Estimate, Judgement
from llmcanary.api import (
    ANNOTATION_ABORT,
    ANNOTATION_PROMOTE,
    ANNOTATION_RESUME,
    ANNOTATION_RETRY,
)
from llmcanary.api.spec import CanarySpec, LLMDeploymentSpec
from llmcanary.api.status import (
    AnalysisRecord,
    ArmEstimate,
    CriterionRecord,
    DependencyResult,
    HistoryEntry,
    LLMDeploymentStatus,
    Phase,
    PreflightStatus,
)
from llmcanary.api.types import parse_duration
from llmcanary.rollout.workload import Problem, WorkloadObservation
from llmcanary.status import parse_time, set_condition, timestamp

HISTORY_LIMIT = 10
# Phases in which a canary revision is being rolled out.
ACTIVE: frozenset[str] = frozenset({"Preflight", "Progressing", "Paused", "Promoting"})


@dataclass(frozen=True)
class Requests:
    """The request annotations found on the LLMDeployment."""

    values: Mapping[str, str] = field(default_factory=dict)
    paused: bool = False

    def pending(self, annotation: str, handled: Mapping[str, str]) -> str | None:
        """The annotation's value if it asks for something not yet acted on."""
        value = self.values.get(annotation)
        return value if value and handled.get(annotation) != value else None


@dataclass(frozen=True)
class Observation:
    """What the loop saw this tick."""

    revision: str  # of the current spec
    stable: WorkloadObservation | None
    canary: WorkloadObservation | None = None
    check: Check | None = None  # an analysis taken this tick (only when analysis_due)
    requests: Requests = field(default_factory=Requests)
    problem: Problem | None = None
    # How an approximate router's actual split differs from the weight, if it does.
    traffic_note: str | None = None
    # Preflight of the canary revision, run this tick (only when preflight_due).
    preflight: PreflightStatus | None = None
    # The canary pods' own Triton readiness, checked this tick (only when canary_checks_due).
    canary_checks: tuple[DependencyResult, ...] | None = None
    # The fresh baseline's Deployment, where the spec wants one.
    baseline: WorkloadObservation | None = None


@dataclass(frozen=True)
class Plan:
    """The children as they should be; the reconciler applies it in a safe order."""

    stable_revision: str
    canary_revision: str | None  # its Deployment exists (possibly scaled to 0)
    canary_replicas: int
    canary_weight: int
    # A fresh baseline of the stable revision beside the canary: as many replicas, the
    # same weight (0 and 0: none, its Deployment removed).
    baseline_replicas: int = 0
    baseline_weight: int = 0


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    status: LLMDeploymentStatus
    plan: Plan
    events: tuple[Event, ...]
    # The next pass is needed at once, and no watch event may bring it: a rollout that
    # just started needs its preflight, which the next pass observes.
    again: bool = False


def step_weight(spec: LLMDeploymentSpec, step: int) -> int:
    """The canary's weight at ``step`` (0-based): up to ``spec.top_weight``."""
    weights = spec.planned_weights()
    return weights[min(step, len(weights) - 1)]


def replicas_for(replicas: int, weight: int) -> int:
    """Ready canary replicas needed before ``weight`` % may go to the canary."""
    return min(replicas, max(1, math.ceil(replicas * weight / 100)))


def step_interval(canary: CanarySpec, step: int) -> timedelta:
    return parse_duration(canary.initial_step_interval if step == 0 else canary.step_interval)


def pause_source(spec: LLMDeploymentSpec, requests: Requests) -> str | None:
    """Who holds the rollout by hand, if anyone."""
    if spec.paused:
        return "spec.paused is true"
    if requests.paused:
        return "the llmcanary.io/paused annotation is set"
    return None


def preflight_due(status: LLMDeploymentStatus, revision: str) -> bool:
    """Whether this tick should run the canary's preflight checks."""
    return status.phase == "Preflight" and status.canary_revision == revision


def canary_checks_due(spec: LLMDeploymentSpec, status: LLMDeploymentStatus, ready: int) -> bool:
    """Whether the canary's own readiness must be checked: just before its first weight."""
    return (
        status.phase == "Progressing"
        and not status.canary_weight
        and not status.current_step
        and ready >= replicas_for(spec.replicas, spec.canary.initial_weight)
    )


def evidence_start(spec: LLMDeploymentSpec, status: LLMDeploymentStatus) -> datetime | None:
    """Where the current step's evidence begins: its start plus the warm-up. Requests
    before it were served at another weight, or by pods not yet warm."""
    if status.step_started_at is None:
        return None
    return parse_time(status.step_started_at) + parse_duration(spec.canary.analysis.warmup)


def _analysis_reference(status: LLMDeploymentStatus) -> datetime | None:
    """When the current analysis window began: the last check, or the last weight change.

    A window that reaches back before the weight changed would judge the canary on
    traffic it did not get yet.
    """
    moments = [
        parse_time(t)
        for t in (
            status.last_analysis.time if status.last_analysis else None,
            status.step_started_at,
        )
        if t
    ]
    return max(moments) if moments else None


def analysis_due(
    spec: LLMDeploymentSpec, status: LLMDeploymentStatus, requests: Requests, now: datetime
) -> bool:
    """Whether this tick should query the metrics: the canary has had traffic at its
    current weight for a whole interval since the window began, and nothing holds it."""
    if status.phase != "Progressing" or not status.canary_weight or status.pause_reason:
        return False
    if pause_source(spec, requests) is not None:
        return False
    reference = _analysis_reference(status)
    interval = parse_duration(spec.canary.analysis.interval)
    return reference is None or now - reference >= interval


def next_wakeup(spec: LLMDeploymentSpec, status: LLMDeploymentStatus, now: datetime) -> float:
    """Seconds until the rollout needs a pass that no watch event will bring; inf if none.

    A pass is earned by a change or by time. Changes come as watch events: of the object
    (the spec, ``spec.paused``, a request annotation) and of its children (a canary pod
    becoming Ready, a route). So a Paused rollout, a Promoting one, and one waiting for
    Ready canary replicas need no timer. Time is what events cannot report: the next
    analysis and the end of a step while it is ahead; once a step's time is up, a passing
    check is what it waits for, so the next analysis time. What nothing watches is
    polled once per analysis interval: Triton serving the model on Ready canary pods
    before the first weight, and a preflight whose GPU probe Job runs.
    """
    if status.phase not in ("Preflight", "Progressing") or status.pause_reason:
        return math.inf
    interval = parse_duration(spec.canary.analysis.interval)
    if status.phase == "Preflight":
        return interval.total_seconds()
    step = status.current_step or 0
    target = step_weight(spec, step)
    if (status.canary_weight or 0) < target:
        ready = status.canary_ready_replicas or 0
        serving_check = ready >= replicas_for(spec.replicas, target)
        return interval.total_seconds() if serving_check else math.inf
    reference = _analysis_reference(status)
    moments = [reference + interval if reference is not None else now]
    if status.step_started_at is not None:
        step_end = parse_time(status.step_started_at) + step_interval(spec.canary, step)
        if step_end > now:
            moments.append(step_end)
    return max(0.0, (min(moments) - now).total_seconds())


def judgement(
    spec: LLMDeploymentSpec, status: LLMDeploymentStatus, window_seconds: float | None
) -> Judgement:
    """What this step's check is judged with: the error budget spread over the planned
    steps and criteria, the reference arm and its share of the traffic."""
    weight = status.canary_weight or 0
    fresh = spec.baseline == "fresh"
    return Judgement(
        plan=design(len(spec.canary.analysis.rules), len(spec.planned_weights())),
        reference="baseline" if fresh else "stable",
        reference_share=weight if fresh else 100 - weight,
        window_seconds=window_seconds,
    )


def _criteria(check: Check) -> list[CriterionRecord]:
    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 2)

    return [
        CriterionRecord(
            criterion=r.criterion.label,
            unit=r.unit,
            verdict=r.verdict,
            reason=r.reason,
            reference=_estimate(r.reference),
            canary=_estimate(r.canary),
            effect=rounded(r.effect.value) if r.effect else None,
            lower=rounded(r.effect.lower) if r.effect else None,
            upper=rounded(r.effect.upper) if r.effect else None,
        )
        for r in check.results
    ]


def analysis_record(check: Check, now: datetime, since: datetime | None) -> AnalysisRecord:
    """A check as status keeps it: enough to reproduce it from Prometheus."""
    return AnalysisRecord(
        time=timestamp(now),
        verdict=check.verdict,
        reason=check.reason,
        reference=check.reference if check.results else None,
        since=timestamp(since) if since is not None else None,
        load_ratio=None if check.load_ratio is None else round(check.load_ratio, 3),
        waiting=check.waiting or None,
        needed=check.needed,
        criteria=_criteria(check),
    )


def _estimate(estimate: Estimate) -> ArmEstimate:
    value = None if estimate.value is None else round(estimate.value, 4)
    return ArmEstimate(value=value, samples=estimate.samples)


def headline(record: AnalysisRecord | None) -> str | None:
    """``ttft p95 412 / 380 ms``: the check's first failing criterion, else its first,
    canary / reference."""
    if record is None or not record.criteria:
        return None
    chosen = next((c for c in record.criteria if c.verdict == "fail"), record.criteria[0])

    def number(value: float | None) -> str:
        if value is None:
            return "-"
        return f"{value:.0f}" if chosen.unit == "ms" else f"{value:.2f}"

    return (
        f"{chosen.criterion} {number(chosen.canary.value)} / {number(chosen.reference.value)}"
        f" {chosen.unit}"
    )


def decide(
    spec: LLMDeploymentSpec,
    generation: int | None,
    status: LLMDeploymentStatus,
    observation: Observation,
    now: datetime,
) -> Decision:
    return _Tick(spec, generation, status, observation, now).run()


class _Tick:
    """One decision. Mutable while it is being made; only the Decision leaves."""

    def __init__(
        self,
        spec: LLMDeploymentSpec,
        generation: int | None,
        status: LLMDeploymentStatus,
        observation: Observation,
        now: datetime,
    ) -> None:
        self.spec = spec
        self.generation = generation
        self.old = status
        self.obs = observation
        self.now = now
        self.update: dict[str, Any] = {}
        self.events: list[Event] = []
        self.handled = dict(status.handled_requests)
        self.stable_rev = status.stable_revision or observation.revision
        self.stable_obs = observation.stable
        self.plan = Plan(self.stable_rev, None, 0, 0)

    # --- small helpers ------------------------------------------------------------

    def get(self, name: str) -> Any:
        return self.update[name] if name in self.update else getattr(self.old, name)

    def set(self, **values: Any) -> None:
        self.update.update(values)

    def emit(self, type_: str, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def take(self, annotation: str) -> bool:
        """Acknowledge a pending request; True if there was one."""
        value = self.obs.requests.pending(annotation, self.handled)
        if value is None:
            return False
        self.handled[annotation] = value
        return True

    def history(self, outcome: str, reason: str) -> None:
        entry = HistoryEntry(
            revision=self.get("canary_revision") or self.obs.revision,
            outcome=outcome,
            started_at=self.get("rollout_started_at"),
            finished_at=timestamp(self.now),
            reason=reason,
        )
        self.set(history=[entry, *self.get("history")][:HISTORY_LIMIT])

    # --- the decision -------------------------------------------------------------

    def run(self) -> Decision:
        abort = self.take(ANNOTATION_ABORT)
        retry = self.take(ANNOTATION_RETRY)
        resume = self.take(ANNOTATION_RESUME)
        current = self.obs.revision
        active = self.old.canary_revision is not None and self.old.phase in ACTIVE

        if current == self.stable_rev:
            if active:
                self.history("Aborted", f"the spec returned to the stable revision {current}")
                self.emit(
                    "Normal",
                    "RolloutCancelled",
                    f"the spec describes the stable revision {current} again; canary"
                    f" {self.old.canary_revision} stopped",
                )
            self.steady()
        elif current == self.old.rolled_back_revision and not retry:
            phase = "Failed" if self.old.phase == "Failed" else "RolledBack"
            self.set(phase=phase, canary_revision=current, canary_weight=0)
            self.plan = Plan(self.stable_rev, current, 0, 0)
        else:
            if self.old.canary_revision != current or not active:
                self.start(current, superseded=self.old.canary_revision if active else None)
            self.progress(abort=abort, resume=resume)
        return self.finish()

    def steady(self) -> None:
        stable = self.stable_obs
        if stable is not None and stable.all_ready:
            phase: Phase = "Stable"
        elif self.old.phase in (None, "Initializing"):
            phase = "Initializing"
        else:
            phase = "Stable"
        self.set(
            phase=phase,
            canary_revision=None,
            canary_weight=0,
            current_step=None,
            step_started_at=None,
            failed_checks=None,
            inconclusive_checks=None,
            pause_reason=None,
            rollout_started_at=None,
            canary_replicas=None,
        )
        self.plan = Plan(self.stable_rev, None, 0, 0)

    def start(self, revision: str, superseded: str | None) -> None:
        if superseded is not None:
            self.history("Superseded", f"the spec moved on to revision {revision}")
            self.emit(
                "Normal",
                "RolloutSuperseded",
                f"canary {superseded} stopped: the spec moved on to revision {revision}",
            )
        checked = self.old.preflight
        already_passed = checked is not None and checked.revision == revision and checked.passed
        self.set(
            phase="Progressing" if already_passed else "Preflight",
            canary_revision=revision,
            canary_weight=0,
            current_step=0,
            step_started_at=None,
            failed_checks=0,
            inconclusive_checks=0,
            last_analysis=None,
            pause_reason=None,
            rolled_back_revision=None,
            rollout_started_at=timestamp(self.now),
        )
        canary = self.spec.canary
        self.emit(
            "Normal",
            "RolloutStarted",
            f"rolling out revision {revision} beside stable {self.stable_rev}: first"
            f" {canary.initial_weight}%, then +{canary.step_weight}% every"
            f" {canary.step_interval} up to {self.spec.top_weight}%"
            + (
                f", judged against a fresh baseline of {self.stable_rev}"
                if self.spec.baseline == "fresh"
                else f", judged against the stable pods of {self.stable_rev}"
            ),
        )

    def progress(self, *, abort: bool, resume: bool) -> None:
        revision = self.obs.revision
        if abort:
            self.rollback("Aborted", "aborted by a user request", "RolloutAborted")
            return
        if self.get("phase") == "Preflight":
            self.preflight()  # a promote request waits until preflight has passed
            return
        if self.take(ANNOTATION_PROMOTE) and self.get("phase") != "Promoting":
            self.set(phase="Promoting", pause_reason=None)
            self.emit("Normal", "PromotionRequested", f"promoting {revision} on request")
        if resume and self.get("pause_reason"):
            self.set(pause_reason=None, inconclusive_checks=0)
            self.emit("Normal", "Resumed", "rollout resumed on request")

        held_by = pause_source(self.spec, self.obs.requests)
        if self.get("phase") == "Promoting":
            self.promoting(held_by)
            return
        if self.record_check():
            return  # rolled back

        canary = self.spec.canary
        replicas = self.spec.replicas
        weight = self.get("canary_weight") or 0
        step = self.get("current_step") or 0
        target = step_weight(self.spec, step)
        ready = self.ready_pairs()
        pause_reason = self.get("pause_reason")
        if held_by or pause_reason:
            self.set(phase="Paused", message=f"paused: {held_by or pause_reason}")
            self.plan_canary(replicas_for(replicas, target), weight)
            return

        self.set(phase="Progressing")
        if weight < target:
            need = replicas_for(replicas, target)
            if ready >= need and weight == 0 and step == 0 and not self.canary_serves():
                pass  # the canary's pods are Ready but Triton does not serve the model yet
            elif ready >= need:
                self.apply_weight(target, step)
            else:
                self.set(
                    message=f"waiting for {need} ready {self.arms()} replicas before"
                    f" {target}% ({ready} ready){self.canary_problem()}"
                )
            self.plan_canary(need, self.get("canary_weight") or 0)
            return

        started_at = self.get("step_started_at")
        started = parse_time(started_at) if started_at else self.now
        last = self.get("last_analysis")
        passed = last is not None and last.verdict == "pass" and parse_time(last.time) >= started
        done = self.now - started >= step_interval(canary, step)
        if done and passed:
            if target >= self.spec.top_weight:
                self.set(phase="Promoting")
                self.emit(
                    "Normal",
                    "Promoting",
                    f"canary {revision} passed every step; scaling it to {replicas}"
                    " replicas to take over",
                )
                self.promoting(held_by)
                return
            step += 1
            self.set(current_step=step)
            target = step_weight(self.spec, step)
            need = replicas_for(replicas, target)
            if ready >= need:
                self.apply_weight(target, step)
            else:
                self.set(
                    message=f"waiting for {need} ready {self.arms()} replicas before"
                    f" {target}% ({ready} ready){self.canary_problem()}"
                )
            self.plan_canary(need, self.get("canary_weight") or 0)
            return
        waiting = "the step interval" if not done else "a passing check"
        self.set(message=f"at {weight}% (step {step}), waiting for {waiting}")
        # Start the next step's replicas now: a model takes minutes to load.
        upcoming = replicas_for(replicas, step_weight(self.spec, step + 1))
        self.plan_canary(upcoming, weight)

    def preflight(self) -> None:
        revision = self.obs.revision
        result = self.obs.preflight
        if result is None:
            self.set(message="preflight: checking the environment, GPU memory and dependencies")
            self.plan_canary(0, 0)
            return
        self.set(preflight=result)
        if result.passed:
            self.emit("Normal", "PreflightPassed", f"preflight passed for revision {revision}")
            self.set(phase="Progressing", message=None)
            self.plan_canary(replicas_for(self.spec.replicas, self.spec.canary.initial_weight), 0)
            return
        reason = result.reason or "preflight failed"
        self.history("Failed", f"preflight: {reason}")
        self.emit("Warning", "PreflightFailed", f"revision {revision}: {reason}")
        self.set(
            phase="Failed",
            canary_weight=0,
            canary_replicas=0,
            rolled_back_revision=revision,
            message=f"preflight failed: {reason}",
        )
        self.plan = Plan(self.stable_rev, revision, 0, 0)

    def ready_pairs(self) -> int:
        """Ready canary replicas that a weight can be given to: with a fresh baseline,
        only as many as the baseline has Ready too (its share must not meet no pod)."""
        ready = self.obs.canary.ready if self.obs.canary else 0
        if self.spec.baseline == "fresh":
            ready = min(ready, self.obs.baseline.ready if self.obs.baseline else 0)
        return ready

    def arms(self) -> str:
        return "canary and baseline" if self.spec.baseline == "fresh" else "canary"

    def canary_problem(self) -> str:
        """``": <why a canary (or baseline) pod is not Ready>"``, or nothing when no pod
        says."""
        for observed in (self.obs.canary, self.obs.baseline):
            if observed is not None and observed.problem:
                return f": {observed.problem}"
        return ""

    def canary_serves(self) -> bool:
        """Record the canary's own readiness checks; True when every one passed."""
        checks = self.obs.canary_checks
        if checks is None:
            return False
        previous = self.get("preflight") or PreflightStatus(revision=self.obs.revision)
        kept = [d for d in previous.dependencies if not d.name.startswith("canary/")]
        self.set(preflight=previous.model_copy(update={"dependencies": [*kept, *checks]}))
        failing = [c for c in checks if not c.ok]
        if failing:
            first = failing[0]
            self.set(message=f"waiting for the canary to serve: {first.name}: {first.message}")
            return False
        return True

    def apply_weight(self, weight: int, step: int) -> None:
        self.set(canary_weight=weight, step_started_at=timestamp(self.now), message=None)
        self.emit("Normal", "WeightChanged", f"canary weight {weight}% (step {step})")

    def plan_canary(self, replicas: int, weight: int) -> None:
        self.set(canary_replicas=replicas)
        baseline = self.spec.baseline == "fresh" and self.get("phase") != "Promoting"
        self.plan = Plan(
            self.stable_rev,
            self.obs.revision,
            replicas,
            weight,
            baseline_replicas=replicas if baseline else 0,
            baseline_weight=weight if baseline else 0,
        )

    def record_check(self) -> bool:
        """Count a check taken this tick; True if it rolled the canary back."""
        check = self.obs.check
        if check is None:
            return False
        analysis = self.spec.canary.analysis
        since = evidence_start(self.spec, self.old)
        self.set(last_analysis=analysis_record(check, self.now, since))
        if check.verdict == "fail":
            failed = (self.get("failed_checks") or 0) + 1
            self.set(failed_checks=failed)
            if failed >= analysis.failure_limit:
                self.rollback("RolledBack", check.reason, "RolledBack")
                return True
            self.emit(
                "Warning", "CheckFailed", f"{check.reason} ({failed}/{analysis.failure_limit})"
            )
        elif check.waiting:
            # Evidence is coming in; the step goes on collecting it, however long.
            self.set(inconclusive_checks=0)
        elif check.verdict == "inconclusive":
            count = (self.get("inconclusive_checks") or 0) + 1
            self.set(inconclusive_checks=count)
            if count >= analysis.inconclusive_limit and not self.get("pause_reason"):
                reason = (
                    f"{count} inconclusive checks in a row (inconclusiveLimit"
                    f" {analysis.inconclusive_limit}); last: {check.reason}"
                )
                self.set(pause_reason=reason)
                self.emit("Warning", "RolloutPaused", reason)
        else:
            self.set(inconclusive_checks=0)
        return False

    def promoting(self, held_by: str | None) -> None:
        revision = self.obs.revision
        replicas = self.spec.replicas
        weight = self.get("canary_weight") or 0
        ready = self.obs.canary.ready if self.obs.canary else 0
        self.plan_canary(replicas, weight)
        if held_by:
            self.set(message=f"promotion held: {held_by}")
            return
        if ready < replicas:
            self.set(message=f"promoting: {ready}/{replicas} canary replicas ready")
            return
        previous = self.stable_rev
        checks = self.get("last_analysis")
        self.history("Promoted", checks.reason if checks else "promoted on request")
        self.emit(
            "Normal",
            "Promoted",
            f"revision {revision} is stable: its {replicas} pods serve all traffic;"
            f" {previous} scaled down",
        )
        self.stable_rev = revision
        self.stable_obs = self.obs.canary
        self.set(stable_revision=revision, message=None)
        self.steady()
        self.set(phase="Stable")

    def rollback(self, outcome: str, reason: str, event_reason: str) -> None:
        revision = self.obs.revision
        self.history(outcome, reason)
        self.emit("Warning", event_reason, f"revision {revision} rolled back: {reason}")
        self.set(
            phase="RolledBack",
            canary_weight=0,
            canary_replicas=0,
            rolled_back_revision=revision,
            pause_reason=None,
            message=f"rolled back: {reason}",
        )
        self.plan = Plan(self.stable_rev, revision, 0, 0)

    # --- status -------------------------------------------------------------------

    def finish(self) -> Decision:
        spec, obs, now, generation = self.spec, self.obs, self.now, self.generation
        stable = self.stable_obs
        ready = stable.ready if stable else 0
        all_ready = stable is not None and stable.all_ready
        phase = self.get("phase")
        message = obs.problem.message if obs.problem else self.get("message")
        if phase == "Stable" and obs.problem is None:
            message = None

        conditions = set_condition(
            self.old.conditions,
            "Ready",
            all_ready,
            "ReplicasReady" if all_ready else "ReplicasNotReady",
            f"{ready}/{spec.replicas} Triton replicas of revision {self.stable_rev} are ready",
            now,
            generation,
        )
        rolling = phase in ACTIVE
        canary_rev = self.get("canary_revision")
        conditions = set_condition(
            conditions,
            "Progressing",
            rolling,
            phase if rolling else "NoRollout",
            (
                f"revision {canary_rev} at {self.get('canary_weight') or 0}%"
                + (f"; {obs.traffic_note}" if obs.traffic_note else "")
                if rolling
                else f"revision {self.stable_rev} serves all traffic"
            ),
            now,
            generation,
        )
        degraded = obs.problem is not None or phase in ("RolledBack", "Failed")
        if obs.problem is not None:
            reason, why = obs.problem.reason, obs.problem.message
        elif phase in ("RolledBack", "Failed"):
            reason = "RolledBack" if phase == "RolledBack" else "PreflightFailed"
            why = self.get("message") or ""
        else:
            reason, why = "AsExpected", ""
        conditions = set_condition(conditions, "Degraded", degraded, reason, why, now, generation)
        checked = self.get("preflight")
        if phase == "Preflight":
            conditions = set_condition(
                conditions,
                "PreflightPassed",
                False,
                "Running",
                f"checking revision {canary_rev}",
                now,
                generation,
            )
        elif checked is not None and checked.passed is not None:
            conditions = set_condition(
                conditions,
                "PreflightPassed",
                checked.passed,
                "Passed" if checked.passed else "Failed",
                f"revision {checked.revision}: " + (checked.reason or "every check passed"),
                now,
                generation,
            )

        self.set(
            observed_generation=generation,
            stable_revision=self.stable_rev,
            message=message,
            replicas=spec.replicas,
            ready_replicas=ready,
            canary_ready_replicas=(obs.canary.ready if obs.canary and canary_rev else None),
            router=spec.traffic.router,
            headline=headline(self.get("last_analysis")) if canary_rev else None,
            conditions=conditions,
            handled_requests=self.handled,
        )
        status = self.old.model_copy(update=self.update)
        # Entered Preflight this pass, which could not observe it: the next pass runs it.
        again = phase == "Preflight" and not preflight_due(self.old, obs.revision)
        return Decision(status, self.plan, tuple(self.events), again=again)
