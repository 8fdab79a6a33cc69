"""One handler per phase of a rollout, and the transitions between them. Pure.

Each handler reads and writes the :class:`~llmcanary.rollout.tick.Tick`'s draft and sets
its plan; :func:`llmcanary.rollout.machine.decide` picks the handler.
"""

from __future__ import annotations

from collections.abc import Callable

from llmcanary.api import ANNOTATION_PROMOTE
from llmcanary.api.status import Outcome, Phase, PreflightStatus
from llmcanary.api.times import parse_time, rfc3339, timestamp
from llmcanary.rollout.checks import analysis_record
from llmcanary.rollout.conditions import condition
from llmcanary.rollout.decision import WEIGHT_CHANGED, WEIGHT_LOST, Plan
from llmcanary.rollout.steps import (
    evidence_start,
    ready_deadline,
    replicas_for,
    step_interval,
    step_weight,
)
from llmcanary.rollout.tick import Tick

# --- no rollout -------------------------------------------------------------------------


def steady(t: Tick) -> None:
    """The stable revision serves everything; no canary."""
    stable = t.stable_obs
    phase: Phase = "Stable"
    d = t.draft
    if (stable is None or not stable.all_ready) and t.old.phase in (None, "Initializing"):
        phase = "Initializing"
        why = stable.unready_reason if stable is not None else None
        if stable is not None and why:
            # A first revision that cannot start says why where users look (status and
            # events), not only in its pods; an event when the reason changes. The last
            # pass's reason is in the Ready condition (status.message may hold an error
            # of that pass instead).
            d.message = (
                f"waiting for {stable.ready}/{stable.desired} ready replicas of revision"
                f" {t.stable_rev}: {why}"
            )
            said = condition(t.old, "Ready")
            if said is None or not said.message.endswith(f": {why}"):
                t.emit("Warning", "RevisionNotReady", d.message)
        elif stable is None and t.obs.config is not None and t.obs.config.waiting:
            # No Deployment before the revision's configuration is made: say what runs.
            d.message = f"revision {t.stable_rev}: {t.obs.config.waiting}"
        else:
            d.message = None
    d.phase = phase
    d.canary_revision = None
    d.canary_weight = 0
    d.current_step = None
    d.step_started_at = None
    d.weight_verified = None
    d.failed_checks = None
    d.inconclusive_checks = None
    d.pause_reason = None
    d.rollout_started_at = None
    d.canary_unready_since = None
    d.canary_replicas = None
    t.plan = Plan(t.stable_rev, None, 0, 0)


def replace_first(t: Tick) -> None:
    """The first revision has no Ready replica and never had all of them: nothing is
    served to protect and there is nothing to compare a canary with, so a new spec
    replaces it at once (as a Deployment would), as the first revision in its place. One
    with some Ready replicas serves: a new spec gets a canary as usual."""
    old, new = t.stable_rev, t.obs.revision
    t.emit(
        "Normal",
        "RevisionReplaced",
        f"revision {old} never became ready; revision {new} replaces it without a canary",
    )
    t.stable_rev = new
    t.stable_obs = t.obs.canary  # the current revision's Deployment, if it exists yet
    t.draft.stable_revision = new
    steady(t)


def cancelled(t: Tick) -> None:
    """The spec describes the stable revision again: a rollout in flight stops."""
    current = t.obs.revision
    t.history("Aborted", f"the spec returned to the stable revision {current}")
    t.emit(
        "Normal",
        "RolloutCancelled",
        f"the spec describes the stable revision {current} again; canary"
        f" {t.old.canary_revision} stopped",
    )
    steady(t)


def stays_rolled_back(t: Tick) -> None:
    """A revision rolled back (or failed) is not tried again until a retry is asked."""
    d = t.draft
    d.phase = "Failed" if t.old.phase == "Failed" else "RolledBack"
    d.canary_revision = t.obs.revision
    d.canary_weight = 0
    t.plan = Plan(t.stable_rev, t.obs.revision, 0, 0)


# --- a rollout begins and ends ----------------------------------------------------------


def start(t: Tick, superseded: str | None) -> None:
    revision = t.obs.revision
    if superseded is not None:
        t.history("Superseded", f"the spec moved on to revision {revision}")
        t.emit(
            "Normal",
            "RolloutSuperseded",
            f"canary {superseded} stopped: the spec moved on to revision {revision}",
        )
    checked = t.old.preflight
    already_passed = checked is not None and checked.revision == revision and checked.passed
    d = t.draft
    d.phase = "Progressing" if already_passed else "Preflight"
    d.canary_revision = revision
    d.canary_weight = 0
    d.current_step = 0
    d.step_started_at = None
    d.weight_verified = None
    d.failed_checks = 0
    d.inconclusive_checks = 0
    d.last_analysis = None
    d.pause_reason = None
    d.rolled_back_revision = None
    d.rollout_started_at = timestamp(t.now)
    d.canary_unready_since = None
    canary = t.spec.canary
    t.emit(
        "Normal",
        "RolloutStarted",
        f"rolling out revision {revision} beside stable {t.stable_rev}: first"
        f" {canary.initial_weight}%, then +{canary.step_weight}% every"
        f" {canary.step_interval} up to {t.spec.top_weight}%"
        + (
            f", judged against a fresh baseline of {t.stable_rev}"
            if t.fresh_baseline
            else f", judged against the stable pods of {t.stable_rev}"
        ),
    )


def rollback(t: Tick, outcome: Outcome, reason: str, event_reason: str) -> None:
    revision = t.obs.revision
    t.history(outcome, reason)
    t.emit("Warning", event_reason, f"revision {revision} rolled back: {reason}")
    d = t.draft
    d.phase = "RolledBack"
    d.canary_weight = 0
    d.canary_replicas = 0
    d.rolled_back_revision = revision
    d.pause_reason = None
    d.canary_unready_since = None
    d.message = f"rolled back: {reason}"
    t.plan = Plan(t.stable_rev, revision, 0, 0)


# --- Preflight --------------------------------------------------------------------------


def preflight(t: Tick) -> None:
    """Wait for the preflight this pass observed; pass to Progressing or fail."""
    revision = t.obs.revision
    result = t.obs.preflight
    d = t.draft
    if result is None:
        config = t.obs.config
        d.message = "preflight: " + (
            config.waiting
            if config is not None and config.waiting
            else "checking the environment, GPU memory and dependencies"
        )
        t.plan_canary(0, 0)
        return
    d.preflight = result
    if result.passed:
        t.emit("Normal", "PreflightPassed", f"preflight passed for revision {revision}")
        d.phase = "Progressing"
        d.message = None
        d.canary_unready_since = timestamp(t.now)  # its pods are asked for now
        t.plan_canary(replicas_for(t.spec.replicas, t.spec.canary.initial_weight), 0)
        return
    reason = result.reason or "preflight failed"
    t.history("Failed", f"preflight: {reason}")
    t.emit("Warning", "PreflightFailed", f"revision {revision}: {reason}")
    d.phase = "Failed"
    d.canary_weight = 0
    d.canary_replicas = 0
    d.rolled_back_revision = revision
    d.message = f"preflight failed: {reason}"
    t.plan = Plan(t.stable_rev, revision, 0, 0)


# --- commands and checks, before Progressing, Paused and Promoting -----------------------


def handle_commands(t: Tick, resume: bool) -> None:
    """Promote and resume act before the phase's handler (abort and retry act earlier)."""
    d = t.draft
    if t.take(ANNOTATION_PROMOTE) and d.phase != "Promoting":
        d.phase = "Promoting"
        d.pause_reason = None
        t.emit("Normal", "PromotionRequested", f"promoting {t.obs.revision} on request")
    if resume and d.pause_reason:
        d.pause_reason = None
        d.inconclusive_checks = 0
        t.emit("Normal", "Resumed", "rollout resumed on request")


def drop_promotion(t: Tick, why: str | None = None) -> None:
    """A promote request with no canary in progress (or made before the rollout now
    starting) is acknowledged and dropped: left pending, it would promote the next
    revision, whatever it is, without a check."""
    value = t.obs.commands.pending(ANNOTATION_PROMOTE, t.draft.handled_requests)
    if t.take(ANNOTATION_PROMOTE):
        t.emit(
            "Warning",
            "PromotionIgnored",
            f"{ANNOTATION_PROMOTE}={value} ignored: "
            + (why or f"no canary is in progress ({t.draft.phase})")
            + "; request it again during the next rollout",
        )


def record_check(t: Tick) -> bool:
    """Count a check taken this pass; True if it rolled the canary back."""
    check = t.obs.check
    if check is None:
        return False
    analysis = t.spec.canary.analysis
    d = t.draft
    d.last_analysis = analysis_record(check, t.now, evidence_start(t.spec, t.old))
    if check.verdict == "fail":
        failed = (d.failed_checks or 0) + 1
        d.failed_checks = failed
        if failed >= analysis.failure_limit:
            rollback(t, "RolledBack", check.reason, "RolledBack")
            return True
        t.emit("Warning", "CheckFailed", f"{check.reason} ({failed}/{analysis.failure_limit})")
    elif check.waiting:
        # Evidence is coming in; the step goes on collecting it, however long.
        d.inconclusive_checks = 0
    elif check.verdict == "inconclusive":
        count = (d.inconclusive_checks or 0) + 1
        d.inconclusive_checks = count
        if count >= analysis.inconclusive_limit and not d.pause_reason:
            reason = (
                f"{count} inconclusive checks in a row (inconclusiveLimit"
                f" {analysis.inconclusive_limit}); last: {check.reason}"
            )
            d.pause_reason = reason
            t.emit("Warning", "RolloutPaused", reason)
    else:
        d.inconclusive_checks = 0
    return False


# --- Paused -----------------------------------------------------------------------------


def paused(t: Tick, held_by: str | None) -> None:
    """Held by hand or by too many inconclusive checks: the weight stays, unless the
    canary lost the Ready replicas it needs (:func:`keep_capacity`); it comes back when the
    rollout goes on. A hold by hand stops the readyDeadline clock (it starts again when
    the hold ends); the operator's own pause does not."""
    d = t.draft
    target = step_weight(t.spec, d.current_step or 0)
    weight = d.canary_weight or 0
    d.phase = "Paused"
    d.message = f"paused: {held_by or d.pause_reason}"
    need, ready = replicas_for(t.spec.replicas, target), t.ready_pairs()
    if ready < need:
        d.message += (
            f"; the canary is at {weight}%: {ready} of the {need} {t.arms()} replicas"
            f" {target}% needs are ready{t.unready_reason()}"
        )
    elif weight < target:
        d.message += f"; the canary gets {target}% when the rollout goes on"
    t.plan_canary(replicas_for(t.spec.replicas, target), weight)
    if held_by:
        d.canary_unready_since = None
    else:
        wait_for_ready(t, ready < need, lambda: _short_of(t, target, need, ready))


# --- Progressing ------------------------------------------------------------------------


def progressing(t: Tick) -> None:
    """Reach the step's weight, wait out the step and a passing check, then step on (or
    promote after the last step)."""
    spec, d = t.spec, t.draft
    d.phase = "Progressing"
    weight = d.canary_weight or 0
    step = d.current_step or 0
    target = step_weight(spec, step)
    need = replicas_for(spec.replicas, target)
    if weight < target:
        first = weight == 0 and step == 0
        # Before the first weight, Ready pods are not enough: Triton must serve the model.
        if not (first and t.ready_pairs() >= need and not canary_serves(t)):
            advance_to(t, target, step)
        # Keep the next step's replicas, started early, if a lost weight is waited for.
        ahead = replicas_for(spec.replicas, step_weight(spec, step + 1))
        t.plan_canary(max(need, min(d.canary_replicas or 0, ahead)), d.canary_weight or 0)
        _wait_for_weight(t, target)
        return
    d.canary_unready_since = None
    if d.step_started_at is None:
        # The router has not been seen holding the weight: the step has not begun
        # (rollout.render.settle starts it, and says so while it waits).
        d.message = None
        t.plan_canary(need, weight)
        return

    started = parse_time(d.step_started_at)
    last = d.last_analysis
    passed = last is not None and last.verdict == "pass" and parse_time(last.time) >= started
    done = t.now - started >= step_interval(spec.canary, step)
    if done and passed:
        if target >= spec.top_weight:
            d.phase = "Promoting"
            t.emit(
                "Normal",
                "Promoting",
                f"canary {t.obs.revision} passed every step; scaling it to {spec.replicas}"
                " replicas to take over",
            )
            promoting(t, held_by=None)
            return
        step += 1
        d.current_step = step
        target = step_weight(spec, step)
        advance_to(t, target, step)
        t.plan_canary(replicas_for(spec.replicas, target), d.canary_weight or 0)
        _wait_for_weight(t, target)
        return
    waiting = "the step interval" if not done else "a passing check"
    d.message = f"at {weight}% (step {step}), waiting for {waiting}"
    failure = t.canary_failure()
    if failure:  # the next step's replicas, started early
        d.message += f"; {failure}"
    # Start the next step's replicas now: a model takes minutes to load.
    t.plan_canary(replicas_for(spec.replicas, step_weight(spec, step + 1)), weight)


def advance_to(t: Tick, target: int, step: int) -> None:
    """Ask for ``target`` % once enough replicas (and baseline replicas) are Ready."""
    need = replicas_for(t.spec.replicas, target)
    ready = t.ready_pairs()
    d = t.draft
    if ready < need:
        if not d.canary_weight and step > 0:  # it had a weight, and lost it
            wait = (
                f"the canary is at 0% until {need} {t.arms()} replicas are ready for"
                f" {target}% ({ready} ready)"
            )
        else:
            wait = f"waiting for {need} ready {t.arms()} replicas before {target}% ({ready} ready)"
        failure = t.canary_failure()
        d.message = f"{failure}; {wait}" if failure else wait + t.canary_problem()
        return
    d.canary_weight = target
    # The step's clock starts once the router holds the weight (rollout.render.settle).
    d.step_started_at = None
    d.weight_verified = None
    d.message = None
    t.emit("Normal", WEIGHT_CHANGED, f"canary weight {target}% (step {step})")


def canary_serves(t: Tick) -> bool:
    """Record the canary's own readiness checks; True when every one passed."""
    checks = t.obs.canary_checks
    d = t.draft
    if checks is None:  # not asked this pass: the next one asks
        d.message = "waiting for the canary to serve its model"
        return False
    previous = d.preflight or PreflightStatus(revision=t.obs.revision)
    kept = [c for c in previous.dependencies if not c.name.startswith("canary/")]
    d.preflight = previous.model_copy(update={"dependencies": [*kept, *checks]})
    failing = [c for c in checks if not c.ok]
    if failing:
        first = failing[0]
        d.message = f"waiting for the canary to serve: {first.name}: {first.message}"
        return False
    return True


# --- Ready capacity and the readyDeadline ------------------------------------------------


def keep_capacity(t: Tick, ready: int) -> None:
    """A canary (with its baseline) that no longer has the Ready replicas its weight needs
    loses the weight at once: the stable pods, at full size all along, take it back. The
    gateway's errors for a canary without endpoints never reach Triton's counters, so no
    check would see them. Its step starts again when the weight comes back
    (:func:`progressing`); until then the readyDeadline runs."""
    d = t.draft
    weight = d.canary_weight or 0
    need = replicas_for(t.spec.replicas, weight)
    if not weight or ready >= need:
        return
    d.canary_weight = 0
    d.step_started_at = None
    d.weight_verified = None
    t.emit(
        "Warning",
        WEIGHT_LOST,
        f"canary weight {weight}% -> 0%: {ready} of the {need} {t.arms()} replicas it needs"
        f" are ready{t.unready_reason()}; the stable revision serves that traffic until"
        f" they are, for up to readyDeadline {t.spec.canary.ready_deadline}",
    )


def wait_for_ready(t: Tick, waiting: bool, why: Callable[[], str]) -> bool:
    """Count a wait for Ready canary replicas against ``readyDeadline``: its clock starts
    when the wait begins and is kept in status (a restart does not reset it), and stops
    when the wait ends. Past the deadline the rollout rolls back with ``why()``; before
    it, the message says when. True if it rolled back."""
    d = t.draft
    if not waiting:
        d.canary_unready_since = None
        return False
    if d.canary_unready_since is None:
        d.canary_unready_since = timestamp(t.now)
    deadline = ready_deadline(t.spec, d.canary_unready_since)
    limit = t.spec.canary.ready_deadline
    if t.now >= deadline:
        reason = f"{why()}, for longer than readyDeadline {limit}"
        rollback(t, "RolledBack", reason, "ReadyDeadlineExceeded")
        return True
    d.message = (
        f"{d.message}; rolled back at {rfc3339(deadline)} unless ready (readyDeadline {limit})"
    )
    return False


def _short_of(t: Tick, target: int, need: int, ready: int) -> str:
    return (
        f"the canary had {ready} of the {need} Ready {t.arms()} replicas {target}% needs"
        + t.unready_reason()
    )


def _wait_for_weight(t: Tick, target: int) -> bool:
    """While Progressing: the canary waits for the Ready replicas (and Triton serving the
    model) that ``target`` needs, or holds it."""
    d = t.draft
    need, ready = replicas_for(t.spec.replicas, target), t.ready_pairs()

    def why() -> str:
        if ready >= need:
            return f"the canary's Ready pods did not serve the model ({d.message})"
        return _short_of(t, target, need, ready)

    return wait_for_ready(t, (d.canary_weight or 0) < target, why)


# --- Promoting --------------------------------------------------------------------------


def promoting(t: Tick, held_by: str | None) -> None:
    """Scale the canary to full size; once all are Ready it is the stable revision."""
    revision, replicas, d = t.obs.revision, t.spec.replicas, t.draft
    ready = t.obs.canary.ready if t.obs.canary else 0
    keep_capacity(t, ready)  # the baseline is gone: the canary's own pods carry it
    t.plan_canary(replicas, d.canary_weight or 0)
    if held_by:
        d.message = f"promotion held: {held_by}"
        d.canary_unready_since = None
        return
    if ready < replicas:
        failure = t.canary_failure()
        d.message = f"promoting: {ready}/{replicas} canary replicas ready" + (
            f"; {failure}" if failure else t.canary_problem()
        )
        wait_for_ready(
            t,
            True,
            lambda: (
                f"promotion had {ready} of {replicas} Ready canary replicas{t.unready_reason()}"
            ),
        )
        return
    d.canary_unready_since = None
    previous = t.stable_rev
    checks = d.last_analysis
    t.history("Promoted", checks.reason if checks else "promoted on request")
    t.emit(
        "Normal",
        "Promoted",
        f"revision {revision} is stable: its {replicas} pods serve all traffic;"
        f" {previous} scaled down",
    )
    t.stable_rev = revision
    t.stable_obs = t.obs.canary
    d.stable_revision = revision
    d.message = None
    steady(t)
    d.phase = "Stable"
