"""The status a pass writes: the decision's draft, corrected by what the reconciler could
apply, with the conditions rendered. Pure."""

from __future__ import annotations

from llmcanary.api.status import ConditionType, LLMDeploymentStatus
from llmcanary.api.times import timestamp
from llmcanary.problems import Problem
from llmcanary.rollout.checks import headline
from llmcanary.rollout.conditions import set_condition
from llmcanary.rollout.decision import (
    SPLIT_LOST,
    WEIGHT_CHANGED,
    WEIGHT_LOST,
    Applied,
    Decision,
    Draft,
    Event,
    Settled,
)
from llmcanary.rollout.observation import WorkloadObservation
from llmcanary.rollout.steps import ACTIVE


def settle(decision: Decision, applied: Applied) -> Settled:
    """What status records and which events are posted, given what was applied.

    A weight the router did not take is not recorded, nor announced; the weight recorded
    before stays. A step's clock starts when the router is seen holding its weight.
    """
    basis = decision.basis
    old, now = basis.status, basis.now
    draft = decision.draft.copy()
    events = decision.events
    if not applied.routed:
        draft.canary_weight = old.canary_weight
        draft.step_started_at = old.step_started_at
        draft.weight_verified = old.weight_verified
        events = tuple(e for e in events if e.reason not in (WEIGHT_CHANGED, WEIGHT_LOST))
    elif draft.canary_revision is not None and draft.canary_weight:
        router = basis.spec.traffic.router
        if applied.verified is not None:
            draft.weight_verified = applied.verified
        if applied.verified is False and draft.step_started_at is not None:
            # Held when the step began, not now (a Gateway refuses the route): what is
            # measured meanwhile is not this split, so the step starts over once it is.
            draft.step_started_at = None
            if draft.phase == "Progressing":
                events += (
                    Event(
                        "Warning",
                        SPLIT_LOST,
                        f"the {router} router no longer holds canary {draft.canary_weight}%"
                        f"{_because(applied.unheld)}: step {draft.current_step or 0} starts over"
                        " when it does",
                    ),
                )
        if draft.step_started_at is None and draft.phase == "Progressing":
            if draft.weight_verified:
                draft.step_started_at = timestamp(now)
            else:
                draft.message = (
                    f"the {router} router does not hold canary {draft.canary_weight}% yet"
                    f"{_because(applied.unheld)}: step {draft.current_step or 0} begins when"
                    " it does"
                )
    else:
        draft.weight_verified = None
    return Settled(render_status(decision, draft, applied), events, applied.problem)


def _because(why: str | None) -> str:
    return f" ({why})" if why else ""


def render_status(decision: Decision, draft: Draft, applied: Applied) -> LLMDeploymentStatus:
    """The whole status: the draft, the replica counts, the headline and the conditions."""
    basis = decision.basis
    spec, obs, now, generation = basis.spec, basis.observation, basis.now, basis.generation
    problem = applied.problem
    stable_rev = draft.stable_revision or obs.revision
    stable = basis.stable
    message = problem.message if problem else draft.message
    if draft.phase == "Stable" and problem is None:
        message = None
    conditions = basis.status.conditions
    for wanted in (
        _ready(spec.replicas, stable, stable_rev),
        _progressing(draft, stable_rev, applied.traffic_note),
        _degraded(draft, problem),
        _preflight_passed(draft),
    ):
        if wanted is not None:
            conditions = set_condition(conditions, *wanted, now, generation)
    canary_rev = draft.canary_revision
    return draft.onto(
        basis.status,
        observed_generation=generation,
        stable_revision=stable_rev,
        message=message,
        replicas=spec.replicas,
        ready_replicas=stable.ready if stable else 0,
        canary_ready_replicas=(obs.canary.ready if obs.canary and canary_rev else None),
        router=spec.traffic.router,
        headline=headline(draft.last_analysis) if canary_rev else None,
        conditions=conditions,
    )


# A condition as set_condition takes it: type, status, reason, message.
Wanted = tuple[ConditionType, bool, str, str]


def _ready(replicas: int, stable: WorkloadObservation | None, revision: str) -> Wanted:
    ready = stable.ready if stable else 0
    all_ready = stable is not None and stable.all_ready
    reason = "ReplicasReady" if all_ready else "ReplicasNotReady"
    message = f"{ready}/{replicas} Triton replicas of revision {revision} are ready"
    why = stable.unready_reason if stable is not None else None
    return "Ready", all_ready, reason, f"{message}: {why}" if why else message


def _progressing(draft: Draft, stable_revision: str, note: str | None) -> Wanted:
    if draft.phase is None or draft.phase not in ACTIVE:
        return "Progressing", False, "NoRollout", f"revision {stable_revision} serves all traffic"
    where = f"revision {draft.canary_revision} at {draft.canary_weight or 0}%"
    return "Progressing", True, draft.phase, where + (f"; {note}" if note else "")


def _degraded(draft: Draft, problem: Problem | None) -> Wanted:
    if problem is not None:
        return "Degraded", True, problem.reason, problem.message
    if draft.phase == "RolledBack":
        return "Degraded", True, "RolledBack", draft.message or ""
    if draft.phase == "Failed":
        return "Degraded", True, "PreflightFailed", draft.message or ""
    return "Degraded", False, "AsExpected", ""


def _preflight_passed(draft: Draft) -> Wanted | None:
    if draft.phase == "Preflight":
        return "PreflightPassed", False, "Running", f"checking revision {draft.canary_revision}"
    checked = draft.preflight
    if checked is None or checked.passed is None:
        return None  # no preflight yet: the condition stays as it was
    reason = "Passed" if checked.passed else "Failed"
    why = checked.reason or "every check passed"
    return "PreflightPassed", checked.passed, reason, f"revision {checked.revision}: {why}"
