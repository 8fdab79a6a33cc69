"""The canary state machine: ``decide(spec, generation, status, observation, now) ->
Decision``. Pure.

Every fact it needs arrives as an argument and every bit of state it keeps goes back
into status, so an operator restarted at any moment decides the same next step: no
step repeated, none skipped, no rollback forgotten.

A rollout, for a spec whose revision differs from the stable one::

    Preflight:   the environment diff, GPU memory fit and dependencies of the revision
    Progressing: weight initialWeight, then +stepWeight per step (up to the top weight);
                 a weight is asked for only once the canary has enough Ready replicas,
                 a step begins when the router holds its weight and ends after its
                 interval and a passing check taken during it
    Promoting:   the canary is scaled to full size; once all are Ready it becomes the
                 stable revision (the same pods: no second model load)
    Paused:      spec.paused, the paused annotation, or too many inconclusive checks
    RolledBack:  failureLimit failed checks, an abort command, or a canary without the
                 Ready replicas it waits for past readyDeadline: weight 0, canary
                 scaled to 0, the revision remembered until the spec changes or a
                 retry is asked for

Progressing, Paused or Promoting, a canary that lacks the Ready replicas its weight needs
loses the weight at once (``phases.keep_capacity``); it gets it back when they are Ready
again within ``readyDeadline`` (``phases.wait_for_ready``), which bounds every wait for
Ready canary replicas.

One pass of the reconciler::

    needs()  ->  observe  ->  decide()  ->  act on decision.plan  ->  settle()  ->  write

:func:`~llmcanary.rollout.steps.needs` says what to observe; :func:`decide` handles the
commands first, then the phase (:mod:`llmcanary.rollout.phases`);
:func:`~llmcanary.rollout.render.settle` renders the status from the decision and what
the reconciler could apply.
"""

from __future__ import annotations

from datetime import datetime

from llmcanary.api import ANNOTATION_ABORT, ANNOTATION_RESUME, ANNOTATION_RETRY
from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.api.status import LLMDeploymentStatus
from llmcanary.rollout import phases
from llmcanary.rollout.decision import Decision
from llmcanary.rollout.observation import Observation
from llmcanary.rollout.steps import ACTIVE, pause_source
from llmcanary.rollout.tick import Tick


def decide(
    spec: LLMDeploymentSpec,
    generation: int | None,
    status: LLMDeploymentStatus,
    observation: Observation,
    now: datetime,
) -> Decision:
    t = Tick(spec, generation, status, observation, now)
    abort = t.take(ANNOTATION_ABORT)
    retry = t.take(ANNOTATION_RETRY)
    resume = t.take(ANNOTATION_RESUME)
    current = observation.revision
    active = status.canary_revision is not None and status.phase in ACTIVE

    never_served = t.stable_obs is None or t.stable_obs.ready == 0
    if current != t.stable_rev and status.phase == "Initializing" and never_served:
        phases.replace_first(t)
        phases.drop_promotion(t)
        return t.decision()
    if current == t.stable_rev:
        if active:
            phases.cancelled(t)
        else:
            phases.steady(t)
        phases.drop_promotion(t)
        return t.decision()
    if current == status.rolled_back_revision and not retry:
        phases.stays_rolled_back(t)
        phases.drop_promotion(t)
        return t.decision()
    if status.canary_revision != current or not active:
        # A promote pending now was made for another revision's rollout (one still in
        # preflight, superseded by this spec): it never carries over to this one.
        phases.drop_promotion(t, f"made before revision {current}'s rollout started")
        phases.start(t, superseded=status.canary_revision if active else None)

    if abort:
        phases.rollback(t, "Aborted", "aborted by a user request", "RolloutAborted")
    elif t.draft.phase == "Preflight":
        phases.preflight(t)  # a promote command waits until preflight has passed
    else:
        phases.handle_commands(t, resume)
        held_by = pause_source(spec, observation.commands)
        if t.draft.phase == "Promoting":
            phases.promoting(t, held_by)
        elif phases.record_check(t):
            pass  # rolled back
        else:
            # A canary without the Ready replicas its weight needs loses it, even held.
            phases.keep_capacity(t, t.ready_pairs())
            if held_by or t.draft.pause_reason:
                phases.paused(t, held_by)
            else:
                phases.progressing(t)
    return t.decision()
