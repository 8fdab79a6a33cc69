from datetime import UTC, datetime, timedelta

import pytest
from fake_kube import FakeKube
from specs import make_spec

from llmcanary.api import API_VERSION, KIND
from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.api.status import LLMDeploymentStatus
from llmcanary.kube.errors import ApiConflict
from llmcanary.kube.status_writer import parse_status, status_patch, status_to_wire, write_status
from llmcanary.problems import Problem
from llmcanary.rollout.conditions import condition, set_condition
from llmcanary.rollout.decision import Applied
from llmcanary.rollout.machine import decide
from llmcanary.rollout.observation import Observation, WorkloadObservation
from llmcanary.rollout.render import settle

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_transition_time_kept_while_status_unchanged() -> None:
    conds = set_condition([], "Ready", False, "ReplicasNotReady", "0/2", T0, 1)
    later = set_condition(
        conds, "Ready", False, "ReplicasNotReady", "1/2", T0 + timedelta(minutes=1), 1
    )
    assert later[0].last_transition_time == "2026-11-24T12:00:00Z"
    assert later[0].message == "1/2"
    flipped = set_condition(
        later, "Ready", True, "ReplicasReady", "2/2", T0 + timedelta(minutes=2), 1
    )
    assert flipped[0].last_transition_time == "2026-11-24T12:02:00Z"


def test_no_patch_when_nothing_changed() -> None:
    status = LLMDeploymentStatus(phase="Stable", stable_revision="abc", canary_weight=0)
    wire = status_to_wire(status)
    assert status_patch(wire, status) is None
    # Keys written by others (kopf, another controller) are not ours to compare or remove.
    assert status_patch({**wire, "kopf": {"x": 1}}, status) is None


def test_patch_removes_keys_that_went_away() -> None:
    old = status_to_wire(LLMDeploymentStatus(phase="Stable", canary_revision="def"))
    patch = status_patch(old, LLMDeploymentStatus(phase="Stable"))
    assert patch == {"canaryRevision": None}


def test_parse_status_ignores_foreign_keys() -> None:
    assert parse_status({"phase": "Stable", "kopf": {}}).phase == "Stable"


def steady_status(
    spec: LLMDeploymentSpec,
    generation: int,
    status: LLMDeploymentStatus,
    revision: str,
    stable: WorkloadObservation | None,
    problem: Problem | None,
    now: datetime,
) -> LLMDeploymentStatus:
    observation = Observation(revision, stable)
    return settle(
        decide(spec, generation, status, observation, now), Applied(problem=problem)
    ).status


def ready(n: int, of: int = 2) -> WorkloadObservation:
    return WorkloadObservation(revision="abc", desired=of, ready=n, updated=of)


def test_initializing_until_all_replicas_ready_then_stable() -> None:
    spec = make_spec(replicas=2)
    s1 = steady_status(spec, 1, LLMDeploymentStatus(), "abc", ready(1), None, T0)
    assert s1.phase == "Initializing"
    assert s1.stable_revision == "abc"
    assert s1.canary_weight == 0
    assert condition(s1, "Ready").status == "False"  # type: ignore[union-attr]
    s2 = steady_status(spec, 1, s1, "abc", ready(2), None, T0 + timedelta(seconds=30))
    assert s2.phase == "Stable"
    ready_cond = condition(s2, "Ready")
    assert ready_cond is not None and ready_cond.status == "True"
    assert ready_cond.message == "2/2 Triton replicas of revision abc are ready"
    # Progressing stayed False throughout, so its transition time did not move.
    assert condition(s2, "Progressing") == condition(s1, "Progressing")


def test_a_first_revision_that_cannot_start_says_why_in_status_and_events() -> None:
    spec = make_spec(replicas=1)
    why = "pod p: triton CrashLoopBackOff (exit 1): TypeError: 'NoneType' object"
    crashing = WorkloadObservation("abc", desired=1, ready=0, updated=1, problem=why)
    decision = decide(spec, 1, LLMDeploymentStatus(), Observation("abc", crashing), T0)
    settled = settle(decision, Applied())
    status = settled.status
    assert status.phase == "Initializing"
    assert status.message == f"waiting for 0/1 ready replicas of revision abc: {why}"
    ready_cond = condition(status, "Ready")
    assert ready_cond is not None and ready_cond.status == "False"
    assert ready_cond.message == f"0/1 Triton replicas of revision abc are ready: {why}"
    (event,) = settled.events
    assert (event.type, event.reason, event.message) == (
        "Warning",
        "RevisionNotReady",
        status.message,
    )
    # The same reason on the next pass: no second event, even when that pass's status
    # message was an error of its own (a router that could not be written, say).
    again = settle(decide(spec, 1, status, Observation("abc", crashing), T0), Applied())
    assert again.events == () and again.status.message == status.message
    failing = Applied(problem=Problem("MissingAPI", "no HTTPRoute API in this cluster"))
    errored = settle(decide(spec, 1, status, Observation("abc", crashing), T0), failing).status
    assert errored.message == "no HTTPRoute API in this cluster"
    later = settle(decide(spec, 1, errored, Observation("abc", crashing), T0), failing)
    assert later.events == ()
    # A Deployment that cannot create its pods at all says so instead.
    quota = WorkloadObservation("abc", 1, 0, 0, failure="FailedCreate: exceeded quota: gpus")
    blocked = steady_status(spec, 1, status, "abc", quota, None, T0)
    assert blocked.message == (
        "waiting for 0/1 ready replicas of revision abc: FailedCreate: exceeded quota: gpus"
    )
    # Ready: the reason goes, and the phase is Stable.
    fine = steady_status(spec, 1, blocked, "abc", ready(1, of=1), None, T0)
    assert fine.phase == "Stable" and fine.message is None


def test_same_inputs_same_status() -> None:
    spec = make_spec(replicas=2)
    s1 = steady_status(spec, 3, LLMDeploymentStatus(), "abc", ready(2), None, T0)
    s2 = steady_status(spec, 3, s1, "abc", ready(2), None, T0 + timedelta(hours=1))
    assert status_patch(status_to_wire(s1), s2) is None


def test_problem_is_degraded_with_the_message() -> None:
    spec = make_spec()
    problem = Problem("ChildConflict", "Deployment 'x' already exists ...")
    s = steady_status(spec, 1, LLMDeploymentStatus(), "abc", None, problem, T0)
    degraded = condition(s, "Degraded")
    assert degraded is not None and degraded.status == "True"
    assert degraded.reason == "ChildConflict"
    assert s.message == problem.message


def test_new_revision_starts_a_rollout_beside_the_stable_one() -> None:
    spec = make_spec()
    stable = LLMDeploymentStatus(phase="Stable", stable_revision="abc")
    s = steady_status(spec, 2, stable, "def", ready(2), None, T0)
    assert s.stable_revision == "abc"
    assert s.canary_revision == "def"
    progressing = condition(s, "Progressing")
    assert progressing is not None and progressing.status == "True"
    assert progressing.reason == "Preflight"  # checks run before any traffic moves
    assert s.canary_weight == 0  # no canary pod is Ready yet


def test_the_machines_draft_names_only_status_fields() -> None:
    # The draft is typed separately from the frozen model: a renamed status field must
    # fail here, not vanish from status silently.
    from dataclasses import fields

    from llmcanary.rollout.decision import Draft

    assert {f.name for f in fields(Draft)} <= set(LLMDeploymentStatus.model_fields)


def test_a_status_is_written_only_onto_the_version_it_was_decided_from() -> None:
    kube = FakeKube()
    kube.add(
        {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "t", "namespace": "ml"}}
    )
    read = kube.get(API_VERSION, KIND, "ml", "t")
    assert read is not None
    version = read["metadata"]["resourceVersion"]
    fresh = LLMDeploymentStatus(phase="Stable", message="by B")
    assert write_status(kube, "ml", "t", None, fresh, resource_version=version)
    stale = LLMDeploymentStatus(phase="Progressing", message="by A")
    with pytest.raises(ApiConflict) as refused:
        write_status(kube, "ml", "t", None, stale, resource_version=version)
    assert refused.value.code == 409 and "changed meanwhile" in refused.value.message
    assert kube.objects[(API_VERSION, KIND, "ml", "t")]["status"]["message"] == "by B"
