"""The rollout's schedule: the weight of each step, the replicas it needs, when a step
ends, and what a pass must observe. Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from llmcanary.api.spec import CanarySpec, LLMDeploymentSpec
from llmcanary.api.status import LLMDeploymentStatus, Phase
from llmcanary.api.times import parse_time
from llmcanary.api.types import parse_duration
from llmcanary.rollout.observation import Commands

# Phases in which a canary revision is being rolled out.
ACTIVE: frozenset[Phase] = frozenset({"Preflight", "Progressing", "Paused", "Promoting"})
# How soon a weight that the router does not hold yet is looked at again.
VERIFY_SECONDS = 5.0


def step_weight(spec: LLMDeploymentSpec, step: int) -> int:
    """The canary's weight at ``step`` (0-based): up to ``spec.top_weight``."""
    weights = spec.planned_weights()
    return weights[min(step, len(weights) - 1)]


def replicas_for(replicas: int, weight: int) -> int:
    """Ready canary replicas needed before ``weight`` % may go to the canary."""
    return min(replicas, max(1, math.ceil(replicas * weight / 100)))


def step_interval(canary: CanarySpec, step: int) -> timedelta:
    return parse_duration(canary.initial_step_interval if step == 0 else canary.step_interval)


def ready_deadline(spec: LLMDeploymentSpec, since: str) -> datetime:
    """When a rollout whose canary has lacked the Ready replicas it waits for since
    ``since`` (``status.canaryUnreadySince``, kept in status so that a restart does not
    reset it) fails: ``readyDeadline`` after."""
    return parse_time(since) + parse_duration(spec.canary.ready_deadline)


def asked_weights(spec: LLMDeploymentSpec, status: LLMDeploymentStatus) -> tuple[int, int]:
    """The canary and baseline weights the router was last asked for, as status has them:
    a fresh baseline gets the canary's weight while the rollout progresses or pauses, none
    once it promotes (``Tick.plan_canary`` plans it so)."""
    canary = status.canary_weight or 0
    with_baseline = spec.baseline == "fresh" and status.phase in ("Progressing", "Paused")
    return canary, canary if with_baseline else 0


def pause_source(spec: LLMDeploymentSpec, commands: Commands) -> str | None:
    """Who holds the rollout by hand, if anyone."""
    if spec.paused:
        return "spec.paused is true"
    if commands.paused:
        return "the llmcanary.io/paused annotation is set"
    return None


def evidence_start(spec: LLMDeploymentSpec, status: LLMDeploymentStatus) -> datetime | None:
    """Where the current step's evidence begins: its start plus the warm-up. Requests
    before it were served at another weight, or by pods not yet warm."""
    if status.step_started_at is None:
        return None
    return parse_time(status.step_started_at) + parse_duration(spec.canary.analysis.warmup)


def _window_start(status: LLMDeploymentStatus) -> datetime | None:
    """When the current analysis interval began: the last check, or the step's start.

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


@dataclass(frozen=True)
class Needs:
    """What a pass must observe beyond the workloads, before it decides."""

    analysis: bool = False  # query the metrics and judge the canary
    preflight: bool = False  # run the canary revision's preflight checks
    canary_checks: bool = False  # ask Triton on the canary pods whether it serves the model


def needs(
    spec: LLMDeploymentSpec,
    status: LLMDeploymentStatus,
    revision: str,
    commands: Commands,
    canary_ready: int,
    now: datetime,
) -> Needs:
    """What this pass must observe, from the status it starts from. The reconciler and
    the unit tests' simulator both ask here, so they observe in the same order."""
    return Needs(
        analysis=_analysis_due(spec, status, commands, now),
        preflight=status.phase == "Preflight" and status.canary_revision == revision,
        canary_checks=(
            status.phase == "Progressing"
            and not status.canary_weight
            and not status.current_step
            and canary_ready >= replicas_for(spec.replicas, spec.canary.initial_weight)
        ),
    )


def _analysis_due(
    spec: LLMDeploymentSpec, status: LLMDeploymentStatus, commands: Commands, now: datetime
) -> bool:
    """The canary has had traffic at a weight the router holds for a whole interval since
    the window began, and nothing holds the rollout."""
    if status.phase != "Progressing" or not status.canary_weight or status.pause_reason:
        return False
    if status.step_started_at is None:  # the router has not confirmed the weight yet
        return False
    if pause_source(spec, commands) is not None:
        return False
    start = _window_start(status)
    return start is None or now - start >= parse_duration(spec.canary.analysis.interval)


def next_wakeup(spec: LLMDeploymentSpec, status: LLMDeploymentStatus, now: datetime) -> float:
    """Seconds until the rollout needs a pass that no watch event will bring; inf if none.

    A pass is earned by a change or by time. Changes come as watch events: of the object
    (the spec, ``spec.paused``, a command annotation) and of its children (a canary pod
    becoming Ready, a route). So a Paused rollout, a Promoting one, and one waiting for
    Ready canary replicas need no timer. Time is what events cannot report: the next
    analysis and the end of a step while it is ahead; once a step's time is up, a passing
    check is what it waits for, so the next analysis time. What nothing watches is
    polled: Triton serving the model on Ready canary pods before the first weight and a
    preflight whose GPU probe Job runs (once per analysis interval), and a weight the
    router does not hold yet (every few seconds). A wait for Ready canary replicas, in any
    phase but a hold by hand, has one timer: its ``readyDeadline``.
    """
    wait = _next_pass(spec, status, now)
    since = status.canary_unready_since
    if since is None or status.phase not in ACTIVE:
        return wait
    deadline = ready_deadline(spec, since)
    # The pass at the deadline rolls back and stops the clock; should one not, the next
    # comes a little later rather than at once.
    return min(wait, max(VERIFY_SECONDS, (deadline - now).total_seconds()))


def _next_pass(spec: LLMDeploymentSpec, status: LLMDeploymentStatus, now: datetime) -> float:
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
    if status.step_started_at is None:
        return VERIFY_SECONDS
    start = _window_start(status)
    moments = [start + interval if start is not None else now]
    step_end = parse_time(status.step_started_at) + step_interval(spec.canary, step)
    if step_end > now:
        moments.append(step_end)
    return max(0.0, (min(moments) - now).total_seconds())
