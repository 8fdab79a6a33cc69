"""The status a pass writes: the decision's draft, corrected by what the reconciler could
apply, with the conditions rendered. Pure."""

from __future__ import annotations

from llmcanary.api.status import LLMDeploymentStatus
from llmcanary.api.times import timestamp
from llmcanary.rollout.checks import headline
from llmcanary.rollout.conditions import set_condition
from llmcanary.rollout.decision import WEIGHT_CHANGED, Applied, Decision, Draft, Settled
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
        events = tuple(e for e in events if e.reason != WEIGHT_CHANGED)
    elif draft.canary_revision is not None and draft.canary_weight:
        if applied.verified is not None:
            draft.weight_verified = applied.verified
        if draft.step_started_at is None and draft.phase == "Progressing":
            if draft.weight_verified:
                draft.step_started_at = timestamp(now)
            else:
                draft.message = (
                    f"the {basis.spec.traffic.router} router does not hold canary"
                    f" {draft.canary_weight}% yet: step {draft.current_step or 0} begins when"
                    " it does"
                )
    else:
        draft.weight_verified = None
    return Settled(render_status(decision, draft, applied), events, applied.problem)


def render_status(decision: Decision, draft: Draft, applied: Applied) -> LLMDeploymentStatus:
    """The whole status: the draft, the replica counts, the headline and the conditions."""
    basis = decision.basis
    spec, obs, now, generation = basis.spec, basis.observation, basis.now, basis.generation
    stable = basis.stable
    problem = applied.problem
    stable_rev = draft.stable_revision or obs.revision
    ready = stable.ready if stable else 0
    all_ready = stable is not None and stable.all_ready
    phase = draft.phase
    message = problem.message if problem else draft.message
    if phase == "Stable" and problem is None:
        message = None

    conditions = set_condition(
        basis.status.conditions,
        "Ready",
        all_ready,
        "ReplicasReady" if all_ready else "ReplicasNotReady",
        f"{ready}/{spec.replicas} Triton replicas of revision {stable_rev} are ready",
        now,
        generation,
    )
    rolling = phase in ACTIVE
    canary_rev = draft.canary_revision
    note = applied.traffic_note
    conditions = set_condition(
        conditions,
        "Progressing",
        rolling,
        phase if rolling and phase is not None else "NoRollout",
        (
            f"revision {canary_rev} at {draft.canary_weight or 0}%" + (f"; {note}" if note else "")
            if rolling
            else f"revision {stable_rev} serves all traffic"
        ),
        now,
        generation,
    )
    degraded = problem is not None or phase in ("RolledBack", "Failed")
    if problem is not None:
        reason, why = problem.reason, problem.message
    elif phase in ("RolledBack", "Failed"):
        reason = "RolledBack" if phase == "RolledBack" else "PreflightFailed"
        why = draft.message or ""
    else:
        reason, why = "AsExpected", ""
    conditions = set_condition(conditions, "Degraded", degraded, reason, why, now, generation)
    checked = draft.preflight
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

    return draft.onto(
        basis.status,
        observed_generation=generation,
        stable_revision=stable_rev,
        message=message,
        replicas=spec.replicas,
        ready_replicas=ready,
        canary_ready_replicas=(obs.canary.ready if obs.canary and canary_rev else None),
        router=spec.traffic.router,
        headline=headline(draft.last_analysis) if canary_rev else None,
        conditions=conditions,
    )
