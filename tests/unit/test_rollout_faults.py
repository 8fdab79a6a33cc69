"""Faults of the canary's own pods, at the machine's layer (decide() with observations and
an injected clock): a canary that loses its Ready replicas loses its weight at once (R3),
a Deployment that cannot create its pods says why (R5), and a wait for Ready replicas
ends at ``readyDeadline``, a deadline kept in status across restarts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from test_rollout_machine import Sim, drive_on_earned_wakeups, samples, spec_for, stable_sim

from llmcanary.analysis.verdict import Check, unavailable
from llmcanary.api import ANNOTATION_PROMOTE, ANNOTATION_RESUME
from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.api.status import LLMDeploymentStatus
from llmcanary.api.times import parse_time
from llmcanary.kube.status_writer import status_to_wire
from llmcanary.problems import Problem
from llmcanary.reconciler.observe import workload_of
from llmcanary.rollout.machine import decide
from llmcanary.rollout.observation import Observation, WorkloadObservation, deployment_failure
from llmcanary.rollout.revision import revision_of
from llmcanary.rollout.steps import next_wakeup

DEADLINE = timedelta(minutes=45)  # readyDeadline's default
CRASH = "pod tiny-7f-x: triton CrashLoopBackOff: back-off 5m0s restarting failed container"
QUOTA = (
    'FailedCreate: pods "tiny-7f-x" is forbidden: exceeded quota: gpus, requested:'
    " requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=4, limited:"
    " requests.nvidia.com/gpu=4"
)


def at_weight(weight: int, **kwargs: Any) -> Sim:
    """A rollout (4 replicas) that has reached ``weight`` and whose step has begun."""
    sim = stable_sim(**kwargs)
    for _ in range(400):
        sim.tick(5)
        if sim.status.canary_weight == weight and sim.status.step_started_at:
            return sim
    raise AssertionError(f"never reached {weight}%: {sim.status.message}")


def reasons(sim: Sim) -> list[str]:
    return [r for _, r, _ in sim.events]


# --- R3: a canary without Ready capacity for its weight loses it at once ----------------


def test_a_canary_whose_pods_die_at_35_percent_loses_its_weight_at_once() -> None:
    sim = at_weight(35)
    step = sim.status.current_step
    sim.canary_ready_cap, sim.canary_problem = 0, CRASH
    decision = sim.tick(1)
    assert decision.plan.canary_weight == 0
    assert decision.plan.canary_replicas >= 2, "the pods it had are kept, to come back"
    assert sim.status.canary_weight == 0
    assert sim.status.phase == "Progressing" and sim.status.current_step == step
    assert sim.status.step_started_at is None
    warning = [m for t, r, m in sim.events if (t, r) == ("Warning", "CanaryUnavailable")]
    assert warning == [
        f"canary weight 35% -> 0%: 0 of the 2 canary replicas it needs are ready: {CRASH};"
        " the stable revision serves that traffic until they are, for up to readyDeadline 45m"
    ]
    message = sim.status.message or ""
    assert message.startswith(
        f"the canary is at 0% until 2 canary replicas are ready for 35% (0 ready): {CRASH};"
        " rolled back at "
    )
    assert message.endswith("unless ready (readyDeadline 45m)")


def test_fewer_ready_replicas_than_the_weight_needs_is_no_capacity_either() -> None:
    sim = at_weight(35)  # 4 replicas: 35% needs 2 Ready
    sim.canary_ready_cap = 1
    sim.tick(1)
    assert sim.status.canary_weight == 0
    assert "CanaryUnavailable" in reasons(sim)


def test_pods_back_within_the_deadline_get_the_weight_back_and_the_step_goes_on() -> None:
    sim = at_weight(35)
    step = sim.status.current_step
    sim.canary_ready_cap = 0
    sim.tick(1)  # the pass that sees it may still take the check that was due
    checks = sim.checks
    sim.run(seconds=10 * 60, every=30)
    assert set(sim.weights[-20:]) == {0}
    assert sim.checks == checks, "no check of a canary with no traffic"
    sim.canary_ready_cap = None  # the replacement pods have loaded the model
    back = sim.now
    sim.tick(5)
    assert sim.status.phase == "Progressing"
    assert (sim.status.canary_weight, sim.status.current_step) == (35, step)
    assert sim.status.canary_unready_since is None
    assert sim.events[-1][1:] == ("WeightChanged", f"canary weight 35% (step {step})")
    # The step begins again at its weight: a whole interval and a pass after it.
    assert parse_time(str(sim.status.step_started_at)) >= back
    sim.run(seconds=70)
    assert sim.status.canary_weight == 45
    assert "RolledBack" not in sim.phases


def test_a_canary_down_past_the_deadline_is_rolled_back_with_the_reason() -> None:
    sim = at_weight(35)
    sim.canary_ready_cap, sim.canary_problem = 0, CRASH
    sim.tick(1)
    lost = sim.now
    sim.run(seconds=(DEADLINE - timedelta(seconds=30)).total_seconds(), every=60)
    assert sim.status.phase == "Progressing"
    sim.run(seconds=60, every=30)
    assert sim.status.phase == "RolledBack"
    assert sim.now - lost >= DEADLINE
    assert (sim.plans[-1].canary_weight, sim.plans[-1].canary_replicas) == (0, 0)
    entry = sim.status.history[0]
    assert entry.outcome == "RolledBack"
    assert entry.reason == (
        f"the canary had 0 of the 2 Ready canary replicas 35% needs: {CRASH}, for longer"
        " than readyDeadline 45m"
    )
    assert sim.status.message == f"rolled back: {entry.reason}"
    assert "ReadyDeadlineExceeded" in reasons(sim)
    assert sim.status.canary_unready_since is None


def test_a_lost_weight_the_router_did_not_take_is_not_recorded_and_asked_again() -> None:
    sim = at_weight(35)
    sim.canary_ready_cap = 0
    sim.route_error = Problem("RouteRejected", "the HTTPRoute write was refused")
    sim.tick(1)
    assert sim.status.canary_weight == 35, "the router still holds 35%: status says so"
    assert "CanaryUnavailable" not in reasons(sim)
    sim.route_error = None
    decision = sim.tick(1)
    assert decision.plan.canary_weight == 0 and sim.status.canary_weight == 0
    assert reasons(sim).count("CanaryUnavailable") == 1


def test_a_lost_baseline_takes_the_canarys_weight_too() -> None:
    sim = Sim(spec_for("1", analysis={"baseline": "fresh"}))
    sim.tick()
    sim.spec = spec_for("2", analysis={"baseline": "fresh"})
    sim.run(seconds=80)
    assert sim.status.canary_weight == 15
    sim.baseline_ready_cap = 0
    decision = sim.tick(1)
    assert (decision.plan.canary_weight, decision.plan.baseline_weight) == (0, 0)
    assert "canary and baseline replicas" in (sim.status.message or "")


def test_a_held_rollout_loses_the_weight_but_is_not_rolled_back_while_held() -> None:
    sim = at_weight(35)
    sim.spec = sim.spec.model_copy(update={"paused": True})
    sim.tick(1)
    sim.canary_ready_cap = 0
    sim.tick(1)
    assert (sim.status.phase, sim.status.canary_weight) == ("Paused", 0)
    assert sim.status.message == (
        "paused: spec.paused is true; the canary is at 0%: 0 of the 2 canary replicas 35%"
        " needs are ready"
    )
    assert next_wakeup(sim.spec, sim.status, sim.now) == float("inf"), "no timer while held"
    sim.run(seconds=2 * DEADLINE.total_seconds(), every=300)
    assert sim.status.phase == "Paused"
    # Released: the deadline counts from now, and the weight comes back with the pods.
    sim.spec = sim.spec.model_copy(update={"paused": False})
    sim.tick(1)
    assert sim.status.canary_unready_since is not None
    assert parse_time(sim.status.canary_unready_since) >= sim.now - timedelta(seconds=1)
    sim.canary_ready_cap = None
    sim.tick(5)
    assert (sim.status.phase, sim.status.canary_weight) == ("Progressing", 35)


def test_a_rollout_paused_by_inconclusive_checks_still_rolls_a_dead_canary_back() -> None:
    """The audit's PoC 10: Paused at 35% while 35% of the requests fail, forever."""
    state = {"down": False}

    def measure(spec: LLMDeploymentSpec, status: LLMDeploymentStatus) -> Check:
        if state["down"]:
            return unavailable("no canary samples")
        return samples()(spec, status)

    sim = at_weight(35, measure=measure)
    sim.spec = spec_for("2", analysis={"inconclusiveLimit": 2})
    state["down"] = True
    sim.run(seconds=60)
    assert sim.status.phase == "Paused" and sim.status.canary_weight == 35
    sim.canary_ready_cap = 0
    sim.tick(1)
    assert (sim.status.phase, sim.status.canary_weight) == ("Paused", 0)
    wait = next_wakeup(sim.spec, sim.status, sim.now)
    assert wait == DEADLINE.total_seconds(), "the paused rollout wakes at its deadline"
    sim.tick(wait)
    assert sim.status.phase == "RolledBack"
    assert "readyDeadline 45m" in sim.status.history[0].reason


def test_pods_back_while_paused_stop_the_clock_and_the_weight_returns_on_resume() -> None:
    state = {"down": False}

    def measure(spec: LLMDeploymentSpec, status: LLMDeploymentStatus) -> Check:
        return unavailable("no data") if state["down"] else samples()(spec, status)

    sim = at_weight(35, measure=measure)
    sim.spec = spec_for("2", analysis={"inconclusiveLimit": 2})
    state["down"] = True
    sim.run(seconds=60)
    assert sim.status.phase == "Paused"
    sim.canary_ready_cap = 0
    sim.run(seconds=600, every=60)
    sim.canary_ready_cap = None
    sim.tick(5)
    assert (sim.status.phase, sim.status.canary_weight) == ("Paused", 0)
    assert sim.status.canary_unready_since is None
    assert sim.status.message is not None
    assert sim.status.message.endswith("; the canary gets 35% when the rollout goes on")
    state["down"] = False
    sim.annotations[ANNOTATION_RESUME] = "r1"
    sim.tick(1)
    assert (sim.status.phase, sim.status.canary_weight) == ("Progressing", 35)


def test_a_canary_that_loses_pods_while_promoting_loses_its_weight() -> None:
    sim = at_weight(35)
    sim.annotations[ANNOTATION_PROMOTE] = "p1"
    sim.canary_ready_cap = 1  # the promotion's new pods load, and one old one died
    decision = sim.tick(1)
    assert sim.status.phase == "Promoting"
    assert decision.plan.canary_weight == 0
    assert decision.plan.canary_replicas == 4
    assert "CanaryUnavailable" in reasons(sim)


def test_a_promotion_that_never_gets_its_replicas_is_rolled_back_at_the_deadline() -> None:
    sim = at_weight(15)
    sim.canary_ready_cap, sim.canary_failure = 2, QUOTA
    sim.annotations[ANNOTATION_PROMOTE] = "p1"
    sim.tick(1)
    assert sim.status.phase == "Promoting"
    sim.tick(1)  # two pods came up; the quota stops the others
    assert sim.status.message is not None
    assert sim.status.message.startswith(
        f"promoting: 2/4 canary replicas ready; canary cannot start: {QUOTA}; rolled back at"
    )
    wait = next_wakeup(sim.spec, sim.status, sim.now)
    assert wait == DEADLINE.total_seconds() - 1
    sim.tick(wait)
    assert sim.status.phase == "RolledBack"
    assert sim.status.history[0].reason == (
        f"promotion had 2 of 4 Ready canary replicas: canary cannot start: {QUOTA}, for"
        " longer than readyDeadline 45m"
    )


# --- R5: a Deployment that cannot create its pods, and the deadline ---------------------


def test_a_replica_failure_is_in_the_message_at_once_and_rolls_back_at_the_deadline() -> None:
    sim = stable_sim(canary_ready_cap=0)
    sim.canary_failure = QUOTA
    sim.tick(5)  # preflight passed: the canary's pods are asked for, and the clock starts
    started = sim.now
    sim.tick(5)
    message = sim.status.message or ""
    assert message.startswith(
        f"canary cannot start: {QUOTA}; waiting for 1 ready canary replicas before 5%"
        " (0 ready); rolled back at "
    )
    assert f"at {(started + DEADLINE).strftime('%Y-%m-%dT%H:%M:%SZ')} unless" in message
    passes = drive_on_earned_wakeups(sim, seconds=2 * DEADLINE.total_seconds())
    assert passes <= 5, "no busy loop while it waits: one pass at the deadline"
    assert sim.status.phase == "RolledBack"
    assert sim.now - started == DEADLINE
    assert sim.status.history[0].reason == (
        f"the canary had 0 of the 1 Ready canary replicas 5% needs: canary cannot start:"
        f" {QUOTA}, for longer than readyDeadline 45m"
    )
    assert set(sim.weights) == {0}


def test_the_next_steps_replicas_that_cannot_start_are_said_at_once() -> None:
    sim = Sim(spec_for("1"), canary_ready_cap=1, canary_failure=QUOTA)
    sim.tick()
    sim.spec = spec_for("2")
    sim.run(seconds=150)  # 25% needs 1 Ready replica, 35% (the next step) 2
    assert sim.status.canary_weight == 25
    assert sim.status.message == (
        f"at 25% (step 2), waiting for the step interval; canary cannot start: {QUOTA}"
    )


def test_a_shorter_ready_deadline_and_a_canary_that_comes_up_in_time() -> None:
    sim = stable_sim(canary_ready_cap=0)
    sim.spec = spec_for("2", readyDeadline="10m")
    sim.run(seconds=9 * 60, every=60)
    assert sim.status.phase == "Progressing" and "readyDeadline 10m" in (sim.status.message or "")
    sim.canary_ready_cap = None
    sim.run(seconds=10)
    assert sim.status.canary_weight == 5 and sim.status.canary_unready_since is None
    assert "ReadyDeadlineExceeded" not in reasons(sim)


def test_the_deadline_survives_a_restart() -> None:
    """A fresh operator decides from the persisted status: the wait's start is there."""
    sim = stable_sim(canary_ready_cap=0)
    sim.canary_failure = QUOTA
    sim.run(seconds=20 * 60, every=60)
    assert sim.status.phase == "Progressing"
    since = sim.status.canary_unready_since
    assert since is not None
    saved = LLMDeploymentStatus.model_validate(status_to_wire(sim.status))
    revision = revision_of(sim.spec)
    obs = Observation(
        revision,
        WorkloadObservation(saved.stable_revision or "", 4, 4, 4),
        WorkloadObservation(revision, 1, 0, 0, failure=QUOTA),
    )
    deadline = parse_time(since) + DEADLINE
    # Restarted before the deadline: it still ends where it did, and the wakeup says when.
    now = deadline - timedelta(minutes=1)
    before = decide(sim.spec, 1, saved, obs, now)
    assert before.draft.canary_unready_since == since
    assert before.draft.phase == "Progressing"
    assert next_wakeup(sim.spec, saved, now) == 60.0
    # Restarted after it: rolled back at once.
    after = decide(sim.spec, 1, saved, obs, deadline + timedelta(seconds=1))
    assert after.draft.phase == "RolledBack"
    assert after.plan.canary_weight == 0 and after.plan.canary_replicas == 0
    assert QUOTA in (after.draft.message or "")


def test_a_slow_model_load_within_the_deadline_is_not_a_fault() -> None:
    """The normal wait for the first pods (image pull, model load) only counts the clock."""
    sim = stable_sim(canary_ready_cap=0)
    sim.run(seconds=30 * 60, every=60)
    sim.canary_ready_cap = None
    sim.run(seconds=60 * 12)
    assert sim.status.phase == "Stable"
    assert sim.status.history[0].outcome == "Promoted"
    assert not {"CanaryUnavailable", "ReadyDeadlineExceeded"} & set(reasons(sim))


# --- the observation: the Deployment's conditions ---------------------------------------


def deployment(*conditions: dict[str, str], ready: int = 0) -> dict[str, Any]:
    return {
        "spec": {"replicas": 1},
        "status": {"readyReplicas": ready, "conditions": list(conditions)},
    }


def test_deployment_conditions_say_why_no_pod_exists() -> None:
    quota = {
        "type": "ReplicaFailure",
        "status": "True",
        "reason": "FailedCreate",
        "message": QUOTA.removeprefix("FailedCreate: "),
    }
    stalled = {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": 'ReplicaSet "tiny-7f" has timed out progressing.',
    }
    progressing = {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}
    assert deployment_failure(deployment(quota, stalled)) == QUOTA
    assert deployment_failure(deployment(stalled)) == (
        'ProgressDeadlineExceeded: ReplicaSet "tiny-7f" has timed out progressing.'
    )
    assert deployment_failure(deployment(progressing)) is None
    assert deployment_failure(deployment({**quota, "status": "False"})) is None
    assert deployment_failure({"spec": {}}) is None
    observed = workload_of(deployment(quota), "7f")
    assert observed is not None and observed.failure == QUOTA
